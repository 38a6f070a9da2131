"""Tests of the train loop, launcher, registry and evaluation (adrank.train.*).

The distributed tests start real 2-rank Horovod jobs (Gloo, CPU, one TF thread per
rank) through :func:`adrank.train.launch.launch` with ``launcher: horovodrun``, on
tiny models (images 32x32, tower width 8, embedding 16) and a synthetic, seekable
``dataset_fn`` with the batch structures of ``adrank.train.ranks.input``. Each Horovod job
costs some 10-25 s of process start-up and tracing on 2 shared cores, so the jobs
run once per module (fixtures) and the tests check their results:

- pairwise: one step (smoke), then the same settings again (a finished run: no step);
- lr: one step (smoke) with a checkpoint at 1, then 6 steps (resumes from 1);
  6 steps on Parquet files read by Petastorm with rank 1 SIGKILLing itself after
  step 3 (checkpoint at 2), then the same again (resumes from 2), against an
  uninterrupted 6-step run on the same files; a dataset_fn with
  data on rank 0 only (every rank must fail, with the reason in the message);
- lr on real Parquet files through the default input (``adrank.train.ranks.input``).
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("horovod.runner")
pytest.importorskip("horovod.tensorflow")

from adrank.core.config import load_config  # noqa: E402
from adrank.train import evaluate  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
IMAGE = 32
KILL_STEP = 3
LR_STEPS = 6
EVERY = 2
PALETTE = np.array([[200, 30, 30], [30, 200, 30], [30, 30, 200], [200, 200, 30]])
WORDS = ["red shoe", "green hat", "blue bag", "yellow cup"]
ROLE_SEED = {"detail": 1, "search": 2, "examples": 3}


# --------------------------------------------------------------------------------
# Synthetic input with the structures of adrank.train.ranks.input (runs inside the ranks)
# --------------------------------------------------------------------------------


def make_batch(role: str, rank: int, index: int, settings) -> dict[str, np.ndarray]:
    """Batch ``index`` of a role on a rank: a pure function of its arguments."""
    rng = np.random.default_rng([ROLE_SEED[role], rank, index, settings.seed])
    train = settings.train
    if role == "examples":
        size, width = train.lr_batch_size, settings.features.max_sparse_ids
        ids = rng.integers(1, 2 ** settings.features.hash_bits, size=(size, width))
        return {"sparse_ids": ids.astype(np.int64),
                "num_sparse_ids": rng.integers(1, width + 1, size).astype(np.int32),
                "label": (ids[:, 0] % 2).astype(np.float32)}  # learnable from one id
    size, side = train.pair_batch_size, settings.features.image_size
    kind = rng.integers(0, len(PALETTE), size)
    other = (kind + rng.integers(1, len(PALETTE), size)) % len(PALETTE)

    def images(colours: np.ndarray) -> np.ndarray:
        noise = rng.integers(0, 40, (size, side, side, 3))
        return np.clip(colours[:, None, None, :] + noise, 0, 255).astype(np.uint8)

    batch = {"pos_image": images(PALETTE[kind]), "neg_image": images(PALETTE[other])}
    if role == "detail":
        batch["context_image"] = images(PALETTE[kind])
    else:
        batch["query"] = np.array([WORDS[k] for k in kind], dtype=object)
    return batch


def synthetic_dataset(role: str, rank: int, size: int, settings, start_batch: int) -> Any:
    """The test ``dataset_fn``: endless, seekable (starts at ``start_batch``)."""
    import tensorflow as tf

    del size
    first = make_batch(role, rank, 0, settings)
    signature = {key: tf.TensorSpec((None, *value.shape[1:]),
                                    tf.string if value.dtype == object else tf.as_dtype(value.dtype))
                 for key, value in first.items()}

    def generate():
        index = start_batch
        while True:
            yield make_batch(role, rank, index, settings)
            index += 1

    return tf.data.Dataset.from_generator(generate, output_signature=signature)


def examples_on_rank0_only(role: str, rank: int, size: int, settings, start_batch: int) -> Any:
    """A broken ``dataset_fn``: rank 1 has no data (the ranks must agree and fail)."""
    return synthetic_dataset(role, rank, size, settings, start_batch) if rank == 0 else None


def kill_rank_after(step_to_kill: int, rank_to_kill: int = 1):
    """An ``on_step`` hook: the rank SIGKILLs itself after finishing that step."""
    def hook(step: int, rank: int) -> None:
        import os
        import signal

        if step == step_to_kill and rank == rank_to_kill:
            os.kill(os.getpid(), signal.SIGKILL)
    return hook


# --------------------------------------------------------------------------------
# Jobs (once per module)
# --------------------------------------------------------------------------------


def tiny(root: Path, *overrides: str, stage: str = "lr"):
    """The tiny config with a tiny training section, and a stage's settings."""
    from adrank.train.launch import make_settings

    config = load_config(REPO / "conf" / "tiny.yaml", [
        f"storage.root={root / 'tables'}", f"inputs.root={root / 'inputs'}",
        "train.ranks=2", "train.launcher=horovodrun", "train.threads_per_rank=1",
        "train.tower_width=8", "train.embedding_dim=16", f"features.image_size={IMAGE}",
        "train.pair_batch_size=4", "train.lr_batch_size=32", "features.hash_bits=12",
        "features.max_sparse_ids=6", f"train.checkpoint_every={EVERY}", "train.pair_steps=1",
        f"train.lr_steps={LR_STEPS}", "train.dense_learning_rate=0.01", "train.seed=3", "train.log_every=1",
        "train.step_timeout_s=60", "train.deterministic=true", *overrides])
    settings = make_settings(config, stage=stage, data_version=7, checkpoint_root=str(root / "checkpoints"),
                             run_id="test")
    return config, settings


def tiny_on_files(root: Path):
    """:func:`tiny` (lr), reading ``training_examples``-like Parquet files with Petastorm."""
    from adrank.train.launch import make_settings

    config, _ = tiny(root)
    settings = make_settings(config, stage="lr", data_version=7, checkpoint_root=str(root / "checkpoints"),
                             files={"examples": write_example_files(root / "examples")},
                             run_id="test")
    return config, settings


def run(settings, **kwargs) -> dict[str, Any]:
    from adrank.train.launch import launch

    return launch(settings, dataset_fn=synthetic_dataset, **kwargs)


@pytest.fixture(scope="module", autouse=True)
def _pickle_this_module_by_value():
    """The ranks cannot import this test module: ship its functions by value."""
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def pairwise_runs(tmp_path_factory, _pickle_this_module_by_value) -> dict[str, Any]:
    config, settings = tiny(tmp_path_factory.mktemp("pairwise"), stage="pairwise")
    first = run(settings)
    again = run(settings)
    return {"first": first, "again": again, "settings": settings, "config": config}


@pytest.fixture(scope="module")
def lr_runs(tmp_path_factory, _pickle_this_module_by_value) -> dict[str, Any]:
    results: dict[str, Any] = {}
    root = tmp_path_factory.mktemp("lr_extend")
    config, settings = tiny(root, "train.lr_steps=1")
    results["smoke"] = run(settings)
    config, settings = tiny(root)
    results["extended"] = run(settings)
    results["settings"] = settings

    # The kill and its rerun read real Parquet files through Petastorm (the default
    # input), as the train job does.
    from adrank.train.launch import launch

    config, killed = tiny_on_files(tmp_path_factory.mktemp("lr_killed"))
    started = time.perf_counter()
    with pytest.raises(RuntimeError) as failure:
        launch(killed, on_step=kill_rank_after(KILL_STEP))
    results["failure"] = str(failure.value)
    results["failure_seconds"] = time.perf_counter() - started
    results["resumed"] = launch(killed)

    config, straight = tiny_on_files(tmp_path_factory.mktemp("lr_straight"))
    results["uninterrupted"] = launch(straight)

    config, broken = tiny(tmp_path_factory.mktemp("lr_broken"))
    with pytest.raises(RuntimeError) as failure:
        from adrank.train.launch import launch

        launch(broken, dataset_fn=examples_on_rank0_only)
    results["broken"] = str(failure.value)
    return results


def write_example_files(folder: Path, rows: int = 512, width: int = 6) -> list[str]:
    """Two Parquet files of ``training_examples`` columns, 8 row groups each."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    ids = rng.integers(1, 4096, (rows, width))
    table = pa.table({"sparse_ids": pa.array(list(ids), type=pa.list_(pa.int64())),
                      "num_sparse_ids": pa.array(rng.integers(1, width + 1, rows).astype(np.int32)),
                      "label": pa.array((ids[:, 0] % 2).astype(np.int32))})
    folder.mkdir(parents=True, exist_ok=True)
    half = rows // 2
    files = [str(folder / f"part-{i}.parquet") for i in range(2)]
    for i, path in enumerate(files):
        pq.write_table(table.slice(i * half, half), path, row_group_size=half // 8)
    return files


# --------------------------------------------------------------------------------
# Distributed tests
# --------------------------------------------------------------------------------


def assert_smoke(metrics: dict[str, Any], steps: int) -> None:
    """Finite loss, variables moved, every rank holds the same variables."""
    assert metrics["steps_run"] == steps
    assert np.isfinite(metrics["loss"])
    first, second = metrics["variable_checksums"]
    assert first == pytest.approx(second, rel=1e-12)
    assert first != pytest.approx(metrics["initial_checksum"], rel=1e-9)


def test_pairwise_one_step_smoke(pairwise_runs):
    metrics = pairwise_runs["first"]
    assert_smoke(metrics, steps=1)
    assert metrics["roles"] == ["detail", "search"]
    assert metrics["last_checkpoint_step"] == 1 and metrics["data_version"] == 7


def test_pairwise_rerun_of_a_finished_run_trains_nothing(pairwise_runs):
    again = pairwise_runs["again"]
    assert (again["start_step"], again["steps_run"]) == (1, 0)
    assert again["variable_checksums"] == pairwise_runs["first"]["variable_checksums"]


def test_lr_one_step_smoke(lr_runs):
    assert_smoke(lr_runs["smoke"], steps=1)
    assert lr_runs["smoke"]["last_checkpoint_step"] == 1


def test_lr_more_steps_resume_from_the_checkpoint_not_from_zero(lr_runs):
    extended = lr_runs["extended"]
    assert (extended["start_step"], extended["steps_run"]) == (1, LR_STEPS - 1)
    assert extended["initial_checksum"] == pytest.approx(lr_runs["smoke"]["variable_checksums"][0])
    assert extended["checkpoint_dir"] == lr_runs["smoke"]["checkpoint_dir"]


def test_killed_rank_fails_the_launch_with_one_clear_line(lr_runs):
    message = lr_runs["failure"]
    assert "\n" not in message
    assert "training stage 'lr' failed" in message
    assert "rank 1 was killed by signal 9" in message
    assert f"last checkpoint at step {EVERY}" in message
    assert lr_runs["failure_seconds"] < 120


def test_rerun_after_a_kill_resumes_and_matches_an_uninterrupted_run(lr_runs):
    resumed, straight = lr_runs["resumed"], lr_runs["uninterrupted"]
    assert (resumed["start_step"], resumed["steps_run"]) == (EVERY, LR_STEPS - EVERY)
    assert straight["start_step"] == 0
    assert resumed["loss"] == pytest.approx(straight["loss"], abs=0.01)
    # Not bit-exact: the resumed TrainStep re-measures density from its own first
    # step, so one step may take the other (numerically equal) sparse/dense path.
    assert resumed["variable_checksums"][0] == pytest.approx(straight["variable_checksums"][0],
                                                             rel=0.01)
    assert dict(resumed["losses"])[LR_STEPS] == pytest.approx(dict(straight["losses"])[LR_STEPS],
                                                              abs=0.01)


def test_a_role_with_data_on_some_ranks_only_fails_every_rank_clearly(lr_runs):
    message = lr_runs["broken"]
    assert "\n" not in message and "training stage 'lr' failed" in message
    assert "have data on some ranks only" in message and "no checkpoint yet" in message


def test_default_input_reads_petastorm_files_through_adrank_train_input(tmp_path,
                                                                       _pickle_this_module_by_value):
    pytest.importorskip("adrank.train.ranks.input")
    from adrank.train.launch import launch, make_settings

    config, _ = tiny(tmp_path, "train.lr_steps=4", "train.seed=0", "train.log_every=2", "train.deterministic=false")
    settings = make_settings(config, stage="lr", data_version=1, checkpoint_root=str(tmp_path / "checkpoints"),
                             files={"examples": write_example_files(tmp_path / "examples")})
    metrics = launch(settings)  # dataset_fn=None: adrank.train.ranks.input
    assert_smoke(metrics, steps=4)
    assert metrics["roles"] == ["examples"] and metrics["last_checkpoint_step"] == 4


def test_roles_alternate_and_resume_counts_batches_per_role():
    from adrank.train.ranks.data import batches_consumed, role_schedule

    roles = ["detail", "search"]
    assert [role_schedule(roles, s) for s in range(5)] == ["detail", "search"] * 2 + ["detail"]
    assert (batches_consumed(roles, "detail", 5), batches_consumed(roles, "search", 5)) == (3, 2)
    assert batches_consumed(["detail"], "detail", 5) == 5


def test_the_rank_side_and_the_stage_table_import_without_pyspark_or_tensorflow():
    import os
    import subprocess

    code = ("import sys; import adrank.train.ranks.stages, adrank.train.ranks.settings, adrank.train.ranks.loop, "
            "adrank.train.launch; print(sorted(m for m in ('pyspark', 'tensorflow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(REPO / "lib")})
    assert out.stdout.strip() == "[]"


def test_config_change_starts_fresh_but_step_count_does_not(tmp_path):
    import dataclasses

    from adrank.train.ranks.settings import checkpoint_dir
    from adrank.train.ranks.stages import rank_stage

    _, base = tiny(tmp_path)
    _, more_steps = tiny(tmp_path, "train.lr_steps=60", "train.checkpoint_every=5")
    _, other_lr = tiny(tmp_path, "train.dense_learning_rate=0.5")
    assert checkpoint_dir(base) == checkpoint_dir(more_steps)
    assert checkpoint_dir(base) != checkpoint_dir(other_lr)
    assert checkpoint_dir(base) != checkpoint_dir(dataclasses.replace(base, spec=rank_stage("pairwise")))
    other_data = dataclasses.replace(base, data_version=8)
    assert checkpoint_dir(base) != checkpoint_dir(other_data)


# --------------------------------------------------------------------------------
# Registry (in this process, from the jobs' checkpoints)
# --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(pairwise_runs, lr_runs) -> dict[str, Any]:
    from adrank.train.ranks.hvd_setup import cap_tf_threads
    from adrank.train.ranks.loop import load_trained

    cap_tf_threads(1, 1)
    models = load_trained(pairwise_runs["settings"])
    models.update(load_trained(lr_runs["settings"]))
    return models


def test_registry_versions_latest_signatures_and_metadata(tmp_path, trained, pairwise_runs):
    import tensorflow as tf

    from adrank.train.registry import export_model, latest_model, load_model, versions

    root = tmp_path / "models"
    exported = [export_model(root, "pairwise", pairwise_model=trained["pairwise"],
                             linear_model=trained["lr"], image_size=IMAGE, data_version=7 + i,
                             config=dataclasses.asdict(pairwise_runs["settings"].train),
                             metrics=pairwise_runs["first"], run_id=f"run{i}") for i in range(2)]
    assert [v for v, _ in exported] == [1, 2] == versions(root, "pairwise")
    version, path, metadata = latest_model(root, "pairwise")
    assert (version, path) == exported[1]
    assert metadata["data_version"] == 8 and metadata["stage"] == "pairwise"
    assert metadata["run_id"] == "run1" and metadata["version"] == 2
    assert set(metadata["signatures"]) == {"sku_embedding", "query_embedding", "lr_score"}
    assert not [p for p in (root / "pairwise").iterdir() if p.name.startswith(".")]

    loaded = load_model(root, "pairwise")
    images = make_batch("detail", 0, 0, pairwise_runs["settings"])["pos_image"]
    embedding = loaded.signatures["sku_embedding"](image=tf.constant(images))["embedding"]
    np.testing.assert_allclose(embedding.numpy(), trained["pairwise"].embed_sku(images).numpy(),
                               atol=1e-5)
    query = loaded.signatures["query_embedding"](query=tf.constant(["red shoe", "blue bag"]))
    assert query["embedding"].shape == (2, 16)
    score = loaded.signatures["lr_score"](sparse_ids=tf.constant([[1, 2, 0]], tf.int64),
                                          num_sparse_ids=tf.constant([2], tf.int32))
    assert 0.0 < float(score["probability"][0]) < 1.0


def test_registry_lr_only_export_and_missing_stage(tmp_path, trained):
    from adrank.train.registry import export_model, latest_model

    version, _ = export_model(tmp_path, "lr", linear_model=trained["lr"], image_size=IMAGE,
                              data_version=3)
    _, _, metadata = latest_model(tmp_path, "lr")
    assert version == 1 and metadata["signatures"] == ["lr_score"]
    with pytest.raises(FileNotFoundError, match="no model of stage 'joint'"):
        latest_model(tmp_path, "joint")
    with pytest.raises(ValueError, match="local path"):
        export_model("s3a://bucket/models", "lr", linear_model=trained["lr"], image_size=IMAGE,
                     data_version=3)


# --------------------------------------------------------------------------------
# Evaluation: hand-computable cases
# --------------------------------------------------------------------------------


def test_auc_perfect_reversed_tied_and_partial():
    labels = [0, 0, 1, 1]
    assert evaluate.auc(labels, [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert evaluate.auc(labels, [0.9, 0.8, 0.2, 0.1]) == 0.0
    assert evaluate.auc(labels, [0.5, 0.5, 0.5, 0.5]) == 0.5
    # (pos, neg) pairs: 0.8~0.8 = 1/2, 0.8>0.1, 0.3<0.8, 0.3>0.1 -> 2.5 / 4
    assert evaluate.auc([1, 0, 1, 0], [0.8, 0.8, 0.3, 0.1]) == 0.625
    assert np.isnan(evaluate.auc([1, 1], [0.2, 0.3]))


def test_log_loss_and_cold_start_split():
    assert evaluate.log_loss([1, 0], [0.5, 0.5]) == pytest.approx(np.log(2))
    assert evaluate.log_loss([1], [1.0]) == pytest.approx(0.0, abs=1e-6)
    cold = evaluate.cold_start_mask([False, True, False, False], [10, 11, 12, 13], seen_ad_skus=[10, 11, 12])
    assert cold.tolist() == [False, True, False, True]
    metrics = evaluate.lr_metrics([0, 1, 1, 0], [0.2, 0.9, 0.7, 0.6], cold)
    assert metrics["auc"] == 1.0 and metrics["rows"] == 4
    assert metrics["cold_rows"] == 2 and metrics["cold_auc"] == 1.0
    assert metrics["cold_log_loss"] == pytest.approx(-(np.log(0.9) + np.log(0.4)) / 2)


def test_evaluate_lr_over_batches():
    batches = [{"label": np.array([0, 1]), "is_cold_start_ad": np.array([False, True]),
                "ad_sku_id": np.array([1, 2]), "p": np.array([0.1, 0.8])},
               {"label": np.array([1, 0]), "is_cold_start_ad": np.array([False, False]),
                "ad_sku_id": np.array([5, 1]), "p": np.array([0.3, 0.4])}]
    metrics = evaluate.evaluate_lr(lambda b: b["p"], batches, seen_ad_skus=[1, 2])
    assert metrics["rows"] == 4 and metrics["auc"] == 0.75
    assert metrics["cold_rows"] == 2  # flagged row + unseen SKU 5
    assert np.isnan(metrics["cold_auc"])  # both cold rows are clicks


def test_precision_at_k_on_two_clusters():
    vectors = [[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9], [1, 1]]
    categories = [0, 0, 1, 1, -1]  # the last has no category: left out
    assert evaluate.precision_at_k(vectors, categories, k=1) == {
        "precision_at_1": 1.0, "skus": 4, "k": 1}
    assert evaluate.precision_at_k(vectors, categories, k=10)["precision_at_10"] == pytest.approx(1 / 3)
    batches = [{"image": np.array(vectors[:2]), "category_id": np.array([0, 0])},
               {"image": np.array(vectors[2:4]), "category_id": np.array([1, 1])}]
    assert evaluate.catalog_precision(lambda x: x, batches, k=1)["precision_at_1"] == 1.0


def test_pair_metrics_and_holdout_dates():
    def fake_model(batch, training=False):
        return batch["pos"], batch["neg"]

    batches = [{"pos": np.array([0.9, 0.1]), "neg": np.array([0.5, 0.5])},
               {"pos": np.array([0.3]), "neg": np.array([0.3])}]
    metrics = evaluate.evaluate_pairs(fake_model, batches)
    assert metrics["pairwise_accuracy"] == pytest.approx(1 / 3) and metrics["pairs"] == 3
    expected = np.mean(np.log1p(np.exp([-4.0, 4.0, 0.0])))
    assert metrics["pairwise_loss"] == pytest.approx(expected)
    train, held = evaluate.split_holdout_dates(["2026-11-03", "2026-11-01", "2026-11-02", "2026-11-03"], 1)
    assert [str(d) for d in train] == ["2026-11-01", "2026-11-02"] and [str(d) for d in held] == ["2026-11-03"]
    assert evaluate.split_holdout_dates(["2026-11-01"], 2)[1] == []


def test_spark_launcher_runs_the_same_training_function_as_horovodrun(spark, tmp_path):
    """``horovod.spark.run`` on the session's executors (local[2]) trains like horovodrun."""
    def spark_jobs() -> int:
        """Jobs that horovod.spark.run started (its job groups are horovod.spark.run.<n>)."""
        tracker = spark.sparkContext.statusTracker()
        return sum(len(tracker.getJobIdsForGroup(f"horovod.spark.run.{n}")) for n in range(64))

    config, on_spark = tiny(tmp_path / "spark", "train.launcher=spark", "train.lr_steps=2")
    before = spark_jobs()
    from_spark = run(on_spark)
    assert spark_jobs() > before, "the ranks did not run as Spark tasks"
    config, local = tiny(tmp_path / "local", "train.launcher=horovodrun", "train.lr_steps=2")
    from_horovodrun = run(local)
    assert (from_spark["ranks"], from_spark["final_step"]) == (2, 2)
    assert from_spark["variable_checksums"] == pytest.approx(from_horovodrun["variable_checksums"])
