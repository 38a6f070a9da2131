"""The whole tiny pipeline on a Spark standalone cluster: a master and two workers on 127.0.0.1.

Each worker offers one core, so the job's two 1-core executors sit on different workers
and ``train.launcher: auto`` trains every stage through ``horovod.spark.run`` with one
rank per executor. Same inputs and seed as the local run (``local_pipeline_run``, which
trains with horovodrun): every table must hold the same rows. Select with ``-m cluster``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from adrank.core import layout
from conftest import run_tiny_pipeline
from tables import PIPELINE_TABLES, assert_same_tables
from test_spark_submit import free_port, start_daemon

pytestmark = pytest.mark.cluster

WORKERS = 2
WORKER_MEMORY = "1g"
EXECUTOR_MEMORY = "768m"
# The feed's behaviour embedding (x) is a Spark aggregation over a user's earlier clicks: its
# float32 sum runs in partition order, which differs between masters (seen: 2 of 2,620 rows
# differ by 3e-8). Every other table is equal bit for bit, embeddings and scores included (query
# vectors too: the query tower runs on fixed-shape batches, see adrank.context.towers).
TOLERANCE = {layout.JOINT_TRAIN: 1e-6, layout.JOINT_HOLDOUT: 1e-6}


@dataclass(frozen=True)
class Cluster:
    """A running standalone cluster: its master URL and each worker's work dir."""

    master_url: str
    work_dirs: tuple[Path, ...]

    def submit_options(self) -> tuple[str, ...]:
        """spark-submit options: one 1-core executor per worker (the two Horovod ranks)."""
        return ("--master", self.master_url, "--total-executor-cores", str(WORKERS), "--executor-cores", "1",
                "--executor-memory", EXECUTOR_MEMORY)


@pytest.fixture(scope="module")
def two_worker_cluster(tmp_path_factory) -> Iterator[Cluster]:
    """A standalone master and two workers (1 core, 1g each), their dirs in a temporary folder."""
    root = tmp_path_factory.mktemp("standalone")
    port = free_port()
    master_url = f"spark://127.0.0.1:{port}"
    daemons = [start_daemon(
        ["org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port),
         "--webui-port", str(free_port())],
        root / "master.log", "I have been elected leader")]
    work_dirs = tuple(root / f"worker{i}" / "work" for i in range(WORKERS))
    try:
        for work in work_dirs:
            local = work.parent / "local"  # the executors' scratch space (shuffle, blocks)
            local.mkdir(parents=True)
            daemons.append(start_daemon(
                ["org.apache.spark.deploy.worker.Worker", master_url, "--host", "127.0.0.1", "--cores", "1",
                 "--memory", WORKER_MEMORY, "--webui-port", str(free_port()), "--work-dir", str(work)],
                work.parent / "worker.log", "Successfully registered with master",
                env={"SPARK_WORKER_DIR": str(work), "SPARK_LOCAL_DIRS": str(local)}))
        yield Cluster(master_url, work_dirs)
    finally:
        for daemon in reversed(daemons):
            daemon.terminate()
            daemon.wait(timeout=30)


def trainings(report: dict) -> dict[str, dict]:
    """The ``training`` figures of every trained model: stage 1, the LR, each joint module."""
    modules = report["joint"]["modules"]
    return {"pairwise": report["pairwise"]["training"], "lr": report["lr"]["training"],
            **{f"joint_{kind}": module["training"] for kind, module in modules.items()}}


def model_figures(report: dict) -> dict[str, object]:
    """What the models learnt: held-out metrics and final losses, flat (``"lr.auc"``: value)."""
    figures = {
        "pairwise": report["pairwise"]["metrics"], "lr": report["lr"]["metrics"],
        "joint": report["joint"]["comparison"], "recommend": report["recommend"]["metrics"],
        "losses": {name: dict(figures["losses"]) for name, figures in trainings(report).items()},
    }
    return flat(figures)


def flat(value: object, prefix: str = "") -> dict[str, object]:
    """Nested dicts and lists as one dict of leaves by dotted path."""
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in flat(item, f"{prefix}{key}.").items()}
    if isinstance(value, list):
        return {k: v for i, item in enumerate(value) for k, v in flat(item, f"{prefix}{i}.").items()}
    return {prefix.rstrip("."): value}


def test_pipeline_on_two_workers_trains_on_their_executors_and_equals_the_local_run(
        local_pipeline_run, two_worker_cluster, tmp_path, request):
    local_root, local_report = local_pipeline_run
    report = run_tiny_pipeline(tmp_path, *two_worker_cluster.submit_options())

    assert report["status"] == "succeeded"
    ran = {name: (t["launcher"], t["ranks"], t["final_step"]) for name, t in trainings(report).items()}
    assert ran == {name: ("spark", 2, 6) for name in ran} and len(ran) == 5, ran
    assert {t["launcher"] for t in trainings(local_report).values()} == {"horovodrun"}
    # The pipeline's application had an executor on each worker (generate_data's app came first).
    pipeline_app = max(app.name for app in two_worker_cluster.work_dirs[0].glob("app-*"))
    for work in two_worker_cluster.work_dirs:
        executors = list((work / pipeline_app).glob("*/stderr"))
        assert len(executors) == 1, f"{work}: {executors}"
        assert list(executors[0].parent.glob("adrank-lib*.zip"))  # the --py-files the ranks import adrank from

    # The same training: losses and held-out metrics (a Spark mean may differ in its last bits).
    # The joint models learn from the joint tables, equal only within TOLERANCE: a module's
    # weights, and so its figures, may move in float32's last bits (seen: dnn log loss 2.5e-8).
    obtained, expected = model_figures(report), model_figures(local_report)
    assert set(obtained) == set(expected)
    joint = {k for k in expected if k.startswith(("joint.", "losses.joint_"))}
    assert joint and {k: obtained[k] for k in joint} == pytest.approx(
        {k: expected[k] for k in joint}, rel=max(TOLERANCE.values()), abs=1e-12)
    assert {k: v for k, v in obtained.items() if k not in joint} == pytest.approx(
        {k: v for k, v in expected.items() if k not in joint}, rel=1e-9, abs=1e-12)
    spark = request.getfixturevalue("spark")  # only now: no local session beside the cluster's run
    assert_same_tables(local_root / "tables", tmp_path / "tables", PIPELINE_TABLES, spark, tolerance=TOLERANCE)
