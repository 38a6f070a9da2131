"""Stage 3 on real Horovod ranks: each interaction module learns from embeddings, resume, fine-tuning.

The jobs run 2 ranks (Gloo, CPU, one TF thread each) through
:func:`adrank.train.launch.launch` on a synthetic, seekable ``dataset_fn`` with the batch
structure of :func:`adrank.train.ranks.input.joint_dataset`. In the synthetic data the
label depends on the embeddings only (the cosine of x and y) and the hashed ids are
noise, so a model that beats a constant predictor has learned through its interaction
module. The whole-pipeline run (Spark tables, Petastorm, the registry, the comparison
table) is in ``tests/test_spark_submit.py``.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("horovod.runner")
pytest.importorskip("horovod.tensorflow")

from adrank.core import layout  # noqa: E402
from adrank.core.config import load_config  # noqa: E402
from adrank.train import evaluate  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DIM, IMAGE, BATCH, STEPS = 8, 32, 64, 40
KILL_STEP, EVERY = 3, 2


# --------------------------------------------------------------------------------
# Synthetic joint batches (run inside the ranks)
# --------------------------------------------------------------------------------


def joint_batch(rank: int, index: int, settings, size: int = BATCH) -> dict[str, np.ndarray]:
    """Half the rows have y close to x; the click depends on cos(x, y) only."""
    rng = np.random.default_rng([rank, index, settings.seed])
    dim, width = settings.train.embedding_dim, settings.features.max_sparse_ids
    x = rng.normal(size=(size, dim))
    similar = rng.random(size) < 0.5
    y = np.where(similar[:, None], x + 0.3 * rng.normal(size=(size, dim)), rng.normal(size=(size, dim)))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    y /= np.linalg.norm(y, axis=1, keepdims=True)
    cosine = (x * y).sum(1)
    label = (rng.random(size) < 1 / (1 + np.exp(-(6 * cosine - 2)))).astype(np.float32)
    batch = {
        "sparse_ids": rng.integers(1, 2 ** settings.features.hash_bits, (size, width)).astype(np.int64),
        "num_sparse_ids": np.full(size, width, np.int32), "label": label,
        "page": rng.integers(0, 3, size).astype(np.int32),
        "x": x.astype(np.float32), "y": y.astype(np.float32),
        "x_present": np.ones(size, np.float32), "y_present": np.ones(size, np.float32),
    }
    if settings.train.finetune_cnn:
        colours = rng.integers(0, 256, (size, 1, 1, 3))
        noise = rng.integers(0, 30, (size, IMAGE, IMAGE, 3))
        batch["ad_image"] = np.clip(colours + noise, 0, 255).astype(np.uint8)
        batch["context_image"] = np.clip(colours[::-1] + noise, 0, 255).astype(np.uint8)
        batch["query"] = np.array([f"query {i % 7}" for i in range(size)], dtype=object)
    return batch


def joint_dataset(role: str, rank: int, size: int, settings, start_batch: int) -> Any:
    """The test ``dataset_fn``: endless, seekable."""
    import tensorflow as tf

    del role, size
    first = joint_batch(rank, 0, settings)
    signature = {key: tf.TensorSpec((None, *value.shape[1:]),
                                    tf.string if value.dtype == object else tf.as_dtype(value.dtype))
                 for key, value in first.items()}

    def generate():
        index = start_batch
        while True:
            yield joint_batch(rank, index, settings)
            index += 1

    return tf.data.Dataset.from_generator(generate, output_signature=signature)


def kill_rank_after(step_to_kill: int, rank_to_kill: int = 1):
    def hook(step: int, rank: int) -> None:
        import os
        import signal

        if step == step_to_kill and rank == rank_to_kill:
            os.kill(os.getpid(), signal.SIGKILL)
    return hook


# --------------------------------------------------------------------------------
# Jobs (once per module)
# --------------------------------------------------------------------------------


def joint_settings(root: Path, kind: str, *overrides: str, init_from: str = ""):
    from adrank.train.launch import make_settings

    config = load_config(REPO / "conf" / "tiny.yaml", [
        f"storage.root={root / 'tables'}", f"inputs.root={root / 'inputs'}",
        "train.ranks=2", "train.launcher=horovodrun", "train.tower_width=8",
        f"train.embedding_dim={DIM}", f"features.image_size={IMAGE}", "features.hash_bits=12",
        "features.max_sparse_ids=4", f"train.checkpoint_every={EVERY}", f"train.joint_steps={STEPS}",
        f"train.joint_batch_size={BATCH}", "train.joint_dense_learning_rate=0.02", "train.dnn_hidden=16",
        "train.seed=3", "train.log_every=5", "train.step_timeout_s=120", *overrides])
    train = dataclasses.replace(config.train, interaction=kind)
    return config, make_settings(config, stage=layout.JOINT, data_version=5, train=train,
                                 checkpoint_root=str(root / "checkpoints"), run_id="test", init_from=init_from)


@pytest.fixture(scope="module", autouse=True)
def _pickle_this_module_by_value():
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def held_out_metrics(settings) -> dict[str, float]:
    """AUC and log loss of the trained model and of the constant (base-rate) predictor."""
    import tensorflow as tf

    from adrank.train.ranks.loop import load_trained

    model = load_trained(settings)[layout.JOINT]
    batch = joint_batch(rank=99, index=0, settings=settings, size=2000)
    inputs = {k: v for k, v in batch.items() if k != "label"}
    probabilities = tf.sigmoid(model(inputs, training=False)).numpy()
    base = np.full(batch["label"].shape, batch["label"].mean())
    return {"auc": evaluate.auc(batch["label"], probabilities),
            "log_loss": evaluate.log_loss(batch["label"], probabilities),
            "constant_log_loss": evaluate.log_loss(batch["label"], base)}


@pytest.fixture(scope="module")
def module_runs(tmp_path_factory, _pickle_this_module_by_value) -> dict[str, Any]:
    from adrank.train.launch import launch

    runs = {}
    for kind in ("dot", "product", "dnn"):
        _, settings = joint_settings(tmp_path_factory.mktemp(kind), kind)
        result = launch(settings, dataset_fn=joint_dataset)
        runs[kind] = {"result": result, **held_out_metrics(settings)}
    return runs


@pytest.mark.parametrize("kind", ["dot", "product", "dnn"])
def test_each_interaction_module_learns_from_the_embeddings_and_beats_a_constant(module_runs, kind):
    run = module_runs[kind]
    assert run["result"]["final_step"] == STEPS and run["result"]["ranks"] == 2
    assert run["auc"] > 0.75, run
    assert run["log_loss"] < run["constant_log_loss"] - 0.03, run


def test_a_killed_rank_ends_the_run_and_the_rerun_resumes_from_the_checkpoint(tmp_path):
    from adrank.train.launch import launch

    _, settings = joint_settings(tmp_path, "product", "train.joint_steps=6")
    with pytest.raises(RuntimeError) as failure:
        launch(settings, dataset_fn=joint_dataset, on_step=kill_rank_after(KILL_STEP))
    assert "joint" in str(failure.value)
    resumed = launch(settings, dataset_fn=joint_dataset)
    assert (resumed["start_step"], resumed["final_step"]) == (2, 6)


def test_finetune_cnn_starts_from_the_registered_towers_and_changes_them(tmp_path):
    import tensorflow as tf

    from adrank.train.launch import launch
    from adrank.train.ranks.loop import load_trained
    from adrank.train.ranks.stages import rank_stage
    from adrank.train.registry import export_model

    config, plain = joint_settings(tmp_path, "dot", "train.finetune_cnn=true", "train.joint_steps=3",
                                   "train.joint_batch_size=8")
    pairwise = rank_stage(layout.PAIRWISE).build(dataclasses.replace(plain, spec=rank_stage(layout.PAIRWISE)))[layout.PAIRWISE]
    _, path = export_model(tmp_path / "registry", layout.PAIRWISE, pairwise_model=pairwise, image_size=IMAGE,
                           data_version=1)
    _, settings = joint_settings(tmp_path, "dot", "train.finetune_cnn=true", "train.joint_steps=3",
                                 "train.joint_batch_size=8", init_from=path)
    registered = [v.numpy() for v in tf.saved_model.load(path).model_variables]

    untrained = rank_stage(layout.JOINT).build(settings)[layout.JOINT]
    towers = untrained.sku_tower.variables + untrained.query_tower.variables
    assert all(np.array_equal(a, b.numpy()) for a, b in zip(registered, towers))

    result = launch(settings, dataset_fn=joint_dataset)
    assert result["final_step"] == 3
    trained = load_trained(settings)[layout.JOINT]
    tower = trained.sku_tower.trainable_variables
    before = [registered[i] for i, v in enumerate(untrained.sku_tower.variables) if v.trainable]
    assert len(before) == len(tower)
    assert any(not np.allclose(a, b.numpy()) for a, b in zip(before, tower))


def test_the_model_routes_only_the_lr_table_to_the_sparse_path():
    from adrank.train.ranks.joint_model import JointModel

    for kind in ("dot", "product", "dnn"):
        model = JointModel(kind, hash_bits=8, embedding_dim=DIM, hidden=4)
        batch = {"sparse_ids": np.array([[1, 2]], np.int64), "num_sparse_ids": np.array([2], np.int32),
                 "page": np.array([1], np.int32), "x": np.ones((1, DIM), np.float32),
                 "y": np.ones((1, DIM), np.float32), "x_present": np.zeros(1, np.float32),
                 "y_present": np.ones(1, np.float32)}
        assert model(batch).shape == (1,)
        assert [v.name for v in model.sparse_variables()] == ["lr_weights:0"]
        dense = {v.name for v in model.dense_variables()}
        assert "no_context:0" in dense and "lr_weights:0" not in dense


def write_joint_holdout(path: Path, settings, rows: int) -> dict[str, np.ndarray]:
    """Held-out joint rows (the synthetic distribution) as a Parquet file of 3 row groups; the rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    batch = joint_batch(rank=98, index=0, settings=settings, size=rows)
    columns = {name: pa.array(list(value), type=pa.list_(pa.float32() if value.dtype == np.float32 else pa.int64()))
               if value.ndim == 2 else pa.array(value) for name, value in batch.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path, row_group_size=rows // 3 + 1)
    return batch


def test_the_joint_curve_has_a_held_out_auc_at_each_checkpoint_ending_at_the_final_models(tmp_path):
    import tensorflow as tf

    from adrank.train.launch import launch
    from adrank.train.ranks.loop import load_trained

    _, settings = joint_settings(tmp_path, "dot", "train.joint_steps=6")
    rows = write_joint_holdout(tmp_path / "holdout" / "part-0.parquet", settings, 300)
    settings = dataclasses.replace(settings, holdout_files={"joint_examples": (str(tmp_path / "holdout" /
                                                                                   "part-0.parquet"),)})
    curve = launch(settings, dataset_fn=joint_dataset)["holdout_curve"]
    assert curve["metric"] == "auc" and curve["rows"] == 300  # 2 ranks, the whole file (< 1024 rows)
    assert [step for step, _ in curve["points"]] == [2, 4, 6]
    assert all(0.0 <= value <= 1.0 for _, value in curve["points"])
    model = load_trained(settings)[layout.JOINT]
    probabilities = tf.sigmoid(model({k: v for k, v in rows.items() if k != "label"}, training=False)).numpy()
    assert curve["points"][-1][1] == pytest.approx(evaluate.auc(rows["label"], probabilities), abs=1e-6)
    assert curve["losses"][-1][1] == pytest.approx(evaluate.log_loss(rows["label"], probabilities), rel=1e-5)
