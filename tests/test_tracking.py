"""Observability of training: MLflow runs per (run id, stage) and rank 0's TensorBoard summaries.

One real tiny LR run (1 Horovod rank, 4 steps, inline examples) goes through
``adrank.train.run.train``; its MLflow run and its event file are read back with MLflow's
client and TensorFlow's summary iterator. The rest calls :func:`adrank.runtime.tracking.track_stage`
directly (no training).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from adrank.core.config import ConfigError
from adrank.runtime.runs import RunReport
from adrank.runtime.tracking import track_stage, tracking_uri
from adrank.train import run as training
from conftest import REPO, tiny_config
from test_training import DAY1, DAY2, example, write_examples

mlflow = pytest.importorskip("mlflow")
pytest.importorskip("horovod.tensorflow")


def client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def finite_numbers(values: dict, parent: str = "") -> dict[str, float]:
    found: dict[str, float] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            found.update(finite_numbers(value, f"{parent}{key}."))
        elif isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            found[f"{parent}{key}"] = float(value)
    return found


def tensorboard_scalars(folder: str) -> dict[str, list[tuple[int, float]]]:
    """``tag -> [(step, value)]`` of every event file in a folder."""
    import tensorflow as tf

    scalars: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(Path(folder).glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                number = float(tf.make_ndarray(value.tensor)) if value.HasField("tensor") else value.simple_value
                scalars.setdefault(value.tag, []).append((event.step, number))
    return scalars


def test_a_tiny_lr_run_is_tracked_in_mlflow_and_tensorboard(spark, tmp_path):
    config = tiny_config(tmp_path, "train.ranks=1", "train.lr_steps=4", "train.lr_batch_size=32",
                         "features.max_sparse_ids=3")
    write_examples(spark, config, [example(f"{day}-{n}", day, 1, 2 + n % 5, int(n % 3 == 0))
                                   for day in (DAY1, DAY2) for n in range(48)])
    report = RunReport("train")
    training.train(spark, config, report, "lr", None)
    figures = report.figures["lr"]

    tracking = figures["tracking"]
    assert tracking["uri"] == f"sqlite:///{tmp_path / 'tables'}/mlflow.db" and tracking["experiment"] == "adrank"
    assert tracking_uri(config.tracking, config.storage) == tracking["uri"]
    run = client(tracking["uri"]).get_run(tracking["run_id"])
    tags, metrics, params = run.data.tags, run.data.metrics, run.data.params
    assert (tags["adrank.run_id"], tags["adrank.stage"]) == (report.run_id, "lr")
    assert tags["adrank.data_version.training_examples"] == "0"
    assert (tags["adrank.model_version"], figures["model_version"]) == ("1", 1)
    assert Path(tags["adrank.model_path"]).name == "v1" and Path(tags["adrank.model_path"], "metadata.json").is_file()
    assert metrics == pytest.approx(finite_numbers(figures["metrics"]))
    assert metrics["auc"] == pytest.approx(figures["metrics"]["auc"]) and "log_loss" in metrics
    assert any(v is None for v in finite_numbers_or_none(figures["metrics"]).values())  # NaN ones: not logged
    assert (params["lr_steps"], params["ranks"], params["lr_batch_size"]) == ("4", "1", "32")
    assert run.info.experiment_id == client(tracking["uri"]).get_experiment_by_name("adrank").experiment_id

    training_figures = figures["training"]
    folder = training_figures["tensorboard_dir"]
    assert folder.endswith("/tensorboard") and folder.startswith(str(tmp_path / "tables" / "_checkpoints" / "lr"))
    scalars = tensorboard_scalars(folder)
    assert [step for step, _ in scalars["loss"]] == [4]
    assert scalars["loss"][0][1] == pytest.approx(training_figures["loss"], rel=1e-5)
    assert scalars["steps_per_s"][0][1] > 0
    assert scalars["learning_rate/ftrl"][0][1] == pytest.approx(config.train.ftrl_learning_rate)

    # A person opens the default store as MLflow documents it: a fresh process, no adrank, no variable.
    opened = opened_in_a_fresh_process(tracking_uri(config.tracking, config.storage), report.run_id)
    assert opened["run_id"] == tracking["run_id"] and opened["stage"] == "lr"
    assert opened["metrics"] == pytest.approx(metrics) and opened["params"] == params
    assert opened["artifact_location"] == str(tmp_path / "tables" / "_mlartifacts")  # beside the database


OPEN_STORE = """
import json, os, sys
assert not any(name.startswith("MLFLOW_") for name in os.environ), "a variable would hide the store's refusal"
from mlflow.tracking import MlflowClient
client = MlflowClient(tracking_uri=sys.argv[1])
experiment = client.get_experiment_by_name("adrank")
(run,) = client.search_runs([experiment.experiment_id], f"tags.`adrank.run_id` = '{sys.argv[2]}'")
print(json.dumps({"run_id": run.info.run_id, "stage": run.data.tags["adrank.stage"], "metrics": run.data.metrics,
                  "params": run.data.params, "artifact_location": experiment.artifact_location}))
"""


def opened_in_a_fresh_process(uri: str, run_id: str) -> dict:
    """The adrank run ``run_id`` as plain MLflow finds it at ``uri``, from a new Python process."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("MLFLOW_")}
    done = subprocess.run([sys.executable, "-c", OPEN_STORE, uri, run_id], capture_output=True, text=True,
                          timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def finite_numbers_or_none(values: dict, parent: str = "") -> dict[str, float | None]:
    found: dict[str, float | None] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            found.update(finite_numbers_or_none(value, f"{parent}{key}."))
        elif value is None or isinstance(value, float):
            found[f"{parent}{key}"] = value
    return found


def test_modules_of_one_stage_share_its_mlflow_run_under_their_prefix(tmp_path):
    config = tiny_config(tmp_path)
    dot = track_stage(config, "r1", "joint", {"interaction": "dot", "sizes": {"width": 8}},
                      {"auc": 0.6, "rows": 10, "cold": {"auc": float("nan"), "rows": 0}, "note": "x", "ok": True},
                      "/models/joint/v1", 1, data_version={"training_examples": 3, "sku_embeddings": 2}, name="dot")
    product = track_stage(config, "r1", "joint", {"interaction": "product"}, {"auc": 0.7, "log_loss": None},
                          "/models/joint/v2", 2, data_version={"training_examples": 3}, name="product")
    lr = track_stage(config, "r1", "lr", {"lr_steps": 6}, {"auc": 0.5}, "/models/lr/v1", 1, data_version=3)
    assert dot["run_id"] == product["run_id"] != lr["run_id"]
    joint = client(dot["uri"]).get_run(dot["run_id"]).data
    assert joint.metrics == {"dot.auc": 0.6, "dot.rows": 10.0, "dot.cold.rows": 0.0, "product.auc": 0.7}
    assert joint.params == {"dot.interaction": "dot", "dot.sizes.width": "8", "product.interaction": "product"}
    assert {k: v for k, v in joint.tags.items() if k.startswith("adrank.")} == {
        "adrank.run_id": "r1", "adrank.stage": "joint", "adrank.data_version.training_examples": "3",
        "adrank.data_version.sku_embeddings": "2", "adrank.dot.model_path": "/models/joint/v1",
        "adrank.dot.model_version": "1", "adrank.product.model_path": "/models/joint/v2",
        "adrank.product.model_version": "2"}
    assert client(lr["uri"]).get_run(lr["run_id"]).data.tags["adrank.data_version"] == "3"


def test_a_tracking_failure_is_a_warning_line_and_a_figure_never_an_error(tmp_path, caplog):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("x")
    config = tiny_config(tmp_path, f"tracking.uri=file:{blocker}/mlruns")
    result = track_stage(config, "r1", "lr", {"a": 1}, {"auc": 0.5}, "/m/v1", 1)
    assert result["uri"] == f"file:{blocker}/mlruns" and result["error"].split(":")[0].isidentifier()
    assert "run_id" not in result
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "lr" in warnings[0] and "not logged to MLflow" in warnings[0]


def test_tracking_disabled_logs_nothing(tmp_path):
    config = tiny_config(tmp_path, "tracking.enabled=false")
    assert track_stage(config, "r1", "lr", {}, {"auc": 0.5}, "/m/v1", 1) == {"enabled": False}
    assert not (tmp_path / "tables" / "mlflow.db").exists()


def test_a_configured_tracking_uri_wins_over_the_default_store(tmp_path):
    elsewhere = tmp_path / "elsewhere" / "runs.db"
    config = tiny_config(tmp_path, f"tracking.uri=sqlite:///{elsewhere}")
    logged = track_stage(config, "r1", "lr", {"a": 1}, {"auc": 0.5}, "/m/v1", 1)
    expected = f"sqlite:///{elsewhere}"
    assert logged["uri"] == tracking_uri(config.tracking, config.storage) == expected and "error" not in logged
    assert elsewhere.is_file() and not (tmp_path / "tables" / "mlflow.db").exists()
    assert client(logged["uri"]).get_run(logged["run_id"]).data.metrics == {"auc": 0.5}


TWO_WRITERS = """
import sys
from pathlib import Path
from adrank.testing import tiny_config
from adrank.runtime.tracking import track_stage
config = tiny_config(Path(sys.argv[1]))
results = [track_stage(config, f"{sys.argv[2]}-{n}", "lr", {"n": n}, {"auc": 0.5}, "/m/v1", 1) for n in range(3)]
print([result.get("error") for result in results])
"""


def test_two_jobs_opening_a_new_default_store_at_once_both_log_their_runs(tmp_path):
    """Two processes creating the SQLite store at once would both run MLflow's migrations and break it."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "lib"), os.environ.get("PYTHONPATH", "")])}
    writers = [subprocess.Popen([sys.executable, "-c", TWO_WRITERS, str(tmp_path), name], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env) for name in ("a", "b")]
    outputs = [writer.communicate(timeout=600) for writer in writers]
    for writer, (out, err) in zip(writers, outputs):
        assert writer.returncode == 0, err[-3000:]
        assert out.strip().splitlines()[-1] == "[None, None, None]", err[-3000:]
    config = tiny_config(tmp_path)
    uri = tracking_uri(config.tracking, config.storage)
    experiment = client(uri).get_experiment_by_name("adrank")
    logged = client(uri).search_runs([experiment.experiment_id], max_results=10)
    assert sorted(run.data.tags["adrank.run_id"] for run in logged) == ["a-0", "a-1", "a-2", "b-0", "b-1", "b-2"]


@pytest.mark.parametrize(("uri", "message"), [
    ("mlruns", "must be empty (a local file store), 'databricks', an absolute path or a URI with a scheme"),
    ("https://me:s3cret@mlflow.example.com", "carries user-info"),
    ("http://host/a b", "must not contain spaces"),
])
def test_a_bad_tracking_uri_is_a_config_error_naming_the_key(tmp_path, uri, message):
    with pytest.raises(ConfigError, match="tracking.uri") as info:
        tiny_config(tmp_path, f"tracking.uri={uri}")
    assert message in str(info.value) and "s3cret" not in str(info.value)


def test_good_tracking_uris_and_the_default_experiment(tmp_path):
    for uri in ("", "databricks", "http://mlflow:5000", "sqlite:///x.db", "/abs/mlruns", "file:/x"):
        assert tiny_config(tmp_path, f"tracking.uri={uri}").tracking.uri == uri
    assert tiny_config(tmp_path).tracking.experiment == "adrank"
    with pytest.raises(ConfigError, match="tracking.experiment"):
        tiny_config(tmp_path, "tracking.experiment=' '")
