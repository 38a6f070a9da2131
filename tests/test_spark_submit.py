"""spark-submit.sh end to end: local master, and a real standalone master + worker on 127.0.0.1."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import PIPELINE_STDOUT, SPARK_SUBMIT_SH, TINY_CONF, submit


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_demo_pipeline_on_local_master_ends_with_the_summary_and_the_record_path(local_pipeline_run):
    root, report = local_pipeline_run
    submitted_stdout = (root / PIPELINE_STDOUT).read_text().splitlines()
    generated = json.loads((root / "inputs" / "_manifest.json").read_text())  # generate_data ran first
    assert report["job"] == "pipeline"
    assert generated["good_rows"]["click_log"] > 0
    assert "not_built" not in report
    assert 0.0 <= report["pairwise"]["metrics"]["pairwise_accuracy"] <= 1.0
    assert report["pairwise"]["training"]["final_step"] == 6
    assert 0.0 <= report["lr"]["metrics"]["auc"] <= 1.0
    assert (root / "tables" / "models" / "pairwise" / "v1" / "saved_model.pb").is_file()
    embedded = report["embed_catalog"]
    assert (embedded["mode"], embedded["model_version"]) == ("full", report["pairwise"]["model_version"])
    assert embedded["skus_embedded"] == embedded["skus_total"] == report["sku_images"]["rows_inserted"] > 0
    assert embedded["serving_snapshot"]["rows"] == embedded["skus_total"]
    assert (root / "tables" / "serving" / "sku_embeddings" / "CURRENT").is_file()
    assert report["sources"]["click_log"]["good"] == generated["good_rows"]["click_log"]
    joint = report["joint"]
    assert set(joint["comparison"]) == {"lr", "oracle", "dot", "product", "dnn"}
    for name, row in joint["comparison"].items():
        assert row["rows"] == joint["holdout_rows"], name  # the same held-out rows for every model
        assert sum(row[f"{page}_rows"] for page in ("detail", "feed", "search")) == row["rows"]
    assert joint["comparison"]["oracle"]["auc"] > 0.5
    # Frozen mode reads sku_embeddings at the version embed_catalog left and never writes it.
    log = root / "tables" / "sku_embeddings" / "_delta_log"
    newest = max(int(p.stem) for p in log.glob("*.json"))
    assert joint["sku_embeddings_version"] == embedded["sku_embeddings_version"] == newest
    assert sorted(m["model_version"] for m in joint["modules"].values()) == [1, 2, 3]
    assert "score" in json.loads((root / "tables" / "models" / "joint" / "v3" / "metadata.json")
                                 .read_text())["signatures"]
    assert "cold AUC" in "\n".join(submitted_stdout)
    stored = root / "tables" / "_runs" / f"pipeline-{report['run_id']}.json"
    assert json.loads(stored.read_text()) == report
    # A person reads the summary: no JSON line on the console (--json asks for it), the record's path last.
    assert submitted_stdout[-1] == f"record: {stored}" and not any(line.startswith("{") for line in submitted_stdout)
    assert (root / "inputs" / "catalog").is_dir()
    check_recommendations(report, root, embedded)
    path = Path(report["report"]["path"])  # the run's HTML report, and latest.html the same page
    assert path == root / "tables" / "_reports" / f"{report['run_id']}.html"
    assert (path.parent / "latest.html").read_text() == path.read_text()
    assert ">succeeded</span>" in path.read_text()  # the run's status, though written before the run record
    assert f"report: {path}" in submitted_stdout and "user hit rate@10" in "\n".join(submitted_stdout)


def check_recommendations(report: dict, root: Path, embedded: dict) -> None:
    """The pipeline ends with recommend: three tables from the snapshot it read, metrics against popularity."""
    from deltalake import DeltaTable

    recommend = report["recommend"]
    assert recommend["versions"]["sku_embeddings"] == embedded["sku_embeddings_version"]
    assert recommend["versions"]["serving_snapshot"] == embedded["serving_snapshot"]["snapshot_version"]
    search = recommend["search"]  # tiny.yaml sets recommend.exact_max_skus below the catalog: the IVF path
    assert search["method"] == "ivf" and search["ivf"]["rows"] == embedded["skus_total"]
    assert search["ivf"]["nprobe"] == search["ivf"]["lists"]  # every list probed: as good as exact
    assert search["ivf"]["recall_at_10"] >= 0.98 and search["ivf"]["recall_sample"] > 0  # float rounding only
    assert not any((root / "tables" / "_index" / "recommend").glob("*"))  # the run's index is removed
    similar = DeltaTable(str(root / "tables" / "similar_skus")).to_pandas()
    assert len(similar) == recommend["tables"]["similar_skus"]["rows"] == embedded["skus_total"]
    assert all(sku not in [n["sku_id"] for n in neighbours] and len(neighbours) == 10
               for sku, neighbours in zip(similar["sku_id"], similar["neighbours"]))
    for table in ("similar_skus", "user_recommendations", "query_recommendations"):
        history = DeltaTable(str(root / "tables" / table)).history(1)[0]
        record = json.loads(history["userMetadata"])
        assert (record["run_id"], record["sku_embeddings_version"]) == (report["run_id"], embedded["sku_embeddings_version"])
    metrics = recommend["metrics"]
    for name in ("similar_precision_at_10", "query_recall_at_10", "user_hit_rate_at_10"):
        assert 0.0 <= metrics[name] <= 1.0 and 0.0 <= metrics[f"{name}_popularity"] <= 1.0, name
    assert metrics["query_searches"] > 0 and metrics["users_evaluated"] > 0
    # An ad-hoc query from the serving snapshot, in process (no Spark): the same answer as the table.
    query = DeltaTable(str(root / "tables" / "query_recommendations")).to_pandas().iloc[0]
    answered = subprocess.run(
        [str(SPARK_SUBMIT_SH), "recommend", "--conf-file", str(TINY_CONF), "--set", f"storage.root={root / 'tables'}",
         "--set", f"inputs.root={root / 'inputs'}", "--query", query["query"], "-k", "3"],
        capture_output=True, text=True, timeout=300)
    assert answered.returncode == 0, answered.stderr[-2000:]
    skus = json.loads(answered.stdout.strip().splitlines()[-1])["skus"]
    from adrank.context.towers import embed_query_texts
    from adrank.embed.serving import load_serving_snapshot

    snapshot = load_serving_snapshot(root / "tables" / "serving" / "sku_embeddings")
    model = root / "tables" / "models" / "pairwise" / f"v{recommend['versions']['embedding_model']}"
    vector = embed_query_texts(str(model), [query["query"]])[0]
    units = snapshot.embeddings / np.linalg.norm(snapshot.embeddings, axis=1, keepdims=True)
    cosines = units @ (vector / np.linalg.norm(vector))
    best = np.argsort(-cosines)[:3]  # the exact top 3 by cosine, computed here from the snapshot
    assert [s["score"] for s in skus] == pytest.approx(cosines[best].tolist(), abs=1e-4)
    assert {s["sku_id"] for s in skus} <= set(snapshot.sku_ids.tolist())


def spark_class() -> str:
    import pyspark

    return str(Path(pyspark.__file__).parent / "bin" / "spark-class")


def start_daemon(args: list[str], log: Path, ready_text: str, timeout: float = 90,
                 env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start a Spark daemon class and wait until its log shows ``ready_text`` (``env``: extra variables)."""
    env = {**os.environ, "SPARK_DAEMON_MEMORY": "256m", "SPARK_LOCAL_IP": "127.0.0.1", **(env or {})}
    process = subprocess.Popen([spark_class(), *args], stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)
    deadline = time.time() + timeout
    while time.time() < deadline:
        if ready_text in log.read_text():
            return process
        if process.poll() is not None:
            break
        time.sleep(0.5)
    process.kill()
    raise AssertionError(f"{args[0]} did not start: {log.read_text()[-2000:]}")


@pytest.fixture
def standalone_cluster(tmp_path):
    """A Spark standalone master and one worker (1 core, 1g) on 127.0.0.1."""
    port = free_port()
    master_url = f"spark://127.0.0.1:{port}"
    master = start_daemon(
        ["org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port),
         "--webui-port", str(free_port())],
        tmp_path / "master.log", "I have been elected leader",
    )
    worker = None
    try:
        worker = start_daemon(
            ["org.apache.spark.deploy.worker.Worker", master_url, "--host", "127.0.0.1",
             "--cores", "1", "--memory", "1g", "--webui-port", str(free_port()),
             "--work-dir", str(tmp_path / "work")],
            tmp_path / "worker.log", "Successfully registered with master",
        )
        yield master_url
    finally:
        for process in (worker, master):
            if process is not None:
                process.terminate()
                process.wait(timeout=30)


def test_job_runs_on_standalone_cluster(tmp_path, standalone_cluster):
    report = submit(
        "generate_data", tmp_path / "out", "--master", standalone_cluster,
        "--executor-memory", "512m", "--total-executor-cores", "1",
    )
    assert report["job"] == "generate_data"
    assert report["generate_data"]["good_rows"]["catalog"] > 0
    apps = list((tmp_path / "work").glob("app-*"))
    assert apps, "no executor ran on the standalone worker"
