"""The training curve's held-out metric: computed by the ranks at every checkpoint, drawn beside the loss.

Two real tiny stage runs on 2 Horovod ranks go through ``adrank.train.run.train`` (the LR
on inline ``training_examples``; stage 1 on inline examples and PIL-made images), each with
a held-out sample that covers the whole held-out day: the curve's last point must then
equal the metric the driver computes independently on every held-out row (numpy rank AUC
of the registered model, or its pairwise accuracy), one point per checkpoint, in [0, 1],
in TensorBoard too, and in the report's training plot. The sample itself (bounded,
disjoint over the ranks, the same every time) and the plot's "no held-out curve" note are
checked without ranks.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from adrank.runtime.runs import RunReport
from adrank.train import run as training
from conftest import tiny_config
from test_tracking import tensorboard_scalars
from test_training import DAY1, DAY2, write_examples, write_images

pytest.importorskip("horovod.tensorflow")

EVERY = 2
STEPS = 6


def lr_example(day: dt.date, n: int, rng: np.random.Generator) -> tuple:
    """A detail impression whose label follows its first sparse id, 20% flipped."""
    signal = int(rng.integers(0, 8))
    label = int((signal < 4) != (rng.random() < 0.2))
    ts = dt.datetime.combine(day, dt.time(12))
    return (f"{day}-{n}", ts, day, 1, "detail", 1, "", 2 + n % 5, 0, 0, 1, label,
            [100 + signal, 200 + n % 3, 0], 2, False)


def pair_examples(day: dt.date) -> list[tuple]:
    """Per context SKU 1..8: three clicks of ad ``c + 10`` and one unclicked ad ``c + 20``."""
    ts = dt.datetime.combine(day, dt.time(12))
    rows = []
    for context in range(1, 9):
        for n, (ad, label) in enumerate([(context + 10, 1)] * 3 + [(context + 20, 0)]):
            rows.append((f"{day}-{context}-{n}", ts, day, 1, "detail", context, "", ad, ad % 2, context % 2, 1,
                         label, [context, ad, 0], 2, False))
    return rows


@pytest.fixture(scope="module")
def lr_run(spark, tmp_path_factory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("lr_curve")
    config = tiny_config(root, "train.ranks=2", f"train.lr_steps={STEPS}", "train.lr_batch_size=16",
                         f"train.checkpoint_every={EVERY}", "features.max_sparse_ids=3",
                         "train.ftrl_learning_rate=0.5")
    rng = np.random.default_rng(5)
    write_examples(spark, config, [lr_example(day, n, rng) for day in (DAY1, DAY2) for n in range(96)])
    report = RunReport("train")
    training.train(spark, config, report, "lr", None)
    return {"config": config, "report": report, "figures": report.figures["lr"]}


@pytest.fixture(scope="module")
def pairwise_run(spark, tmp_path_factory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("pairwise_curve")
    config = tiny_config(root, "train.ranks=2", "train.pair_steps=4", "train.pair_batch_size=4",
                         f"train.checkpoint_every={EVERY}")
    write_images(spark, config, [sku for context in range(1, 9) for sku in (context, context + 10, context + 20)])
    write_examples(spark, config, pair_examples(DAY1) + pair_examples(DAY2))
    report = RunReport("train")
    training.train(spark, config, report, "pairwise", None)
    return {"config": config, "report": report, "figures": report.figures["pairwise"]}


def assert_one_point_per_checkpoint(curve: dict[str, Any], steps: int, metric: str) -> None:
    checkpoints = [s for s in range(1, steps + 1) if s % EVERY == 0 or s == steps]
    assert curve["metric"] == metric and "skipped" not in curve
    assert [step for step, _ in curve["points"]] == checkpoints
    assert [step for step, _ in curve["losses"]] == checkpoints
    assert all(value is not None and 0.0 <= value <= 1.0 for _, value in curve["points"]), curve


def test_the_lr_curve_has_a_held_out_auc_at_each_checkpoint_and_ends_at_the_registered_models(lr_run):
    figures = lr_run["figures"]
    curve = figures["training"]["holdout_curve"]
    assert_one_point_per_checkpoint(curve, STEPS, "auc")
    # The sample covers the held-out day (96 rows < train.holdout_curve_rows), gathered from both ranks:
    # the last point is the AUC the driver computes on every held-out row of the registered model.
    assert curve["rows"] == figures["holdout_rows"] == figures["metrics"]["rows"] == 96
    assert curve["points"][-1][1] == pytest.approx(figures["metrics"]["auc"], abs=1e-6)
    assert curve["losses"][-1][1] == pytest.approx(figures["metrics"]["log_loss"], rel=1e-5)
    assert len({value for _, value in curve["points"]}) > 1  # the model moves between checkpoints


def test_rank_0_writes_the_held_out_curve_to_tensorboard(lr_run):
    training_figures = lr_run["figures"]["training"]
    scalars = tensorboard_scalars(training_figures["tensorboard_dir"])
    curve = training_figures["holdout_curve"]
    assert [step for step, _ in scalars["holdout/auc"]] == [step for step, _ in curve["points"]]
    assert [value for _, value in scalars["holdout/auc"]] == pytest.approx([v for _, v in curve["points"]], rel=1e-6)
    assert [step for step, _ in scalars["holdout/log_loss"]] == [step for step, _ in curve["losses"]]


def test_the_pairwise_curve_has_a_held_out_accuracy_at_each_checkpoint_and_ends_at_the_registered_models(
        pairwise_run):
    figures = pairwise_run["figures"]
    curve = figures["training"]["holdout_curve"]
    assert_one_point_per_checkpoint(curve, 4, "pairwise_accuracy")
    assert curve["rows"] == figures["metrics"]["pairs"] == sum(figures["holdout_pair_rows"].values())
    assert curve["points"][-1][1] == pytest.approx(figures["metrics"]["pairwise_accuracy"], abs=1e-9)
    assert curve["losses"][-1][1] == pytest.approx(figures["metrics"]["pairwise_loss"], rel=1e-4)


def test_the_report_plot_draws_the_held_out_series_beside_the_loss(lr_run, pairwise_run):
    from adrank.report.plots import stage_curves, training_figure, training_plots

    figures = {"lr": lr_run["figures"], "pairwise": pairwise_run["figures"]}
    for stage in ("lr", "pairwise"):
        figure = training_figure(stage_curves(figures)[stage], stage)
        loss_axes, holdout_axes = figure.axes
        curve = figures[stage]["training"]["holdout_curve"]
        assert loss_axes.lines[0].get_xydata().tolist() == figures[stage]["training"]["losses"]
        drawn = holdout_axes.lines[0].get_xydata()
        assert drawn[:, 0].tolist() == [step for step, _ in curve["points"]]
        assert drawn[:, 1].tolist() == pytest.approx([value for _, value in curve["points"]])
        assert curve["metric"] in holdout_axes.get_ylabel()
    assert set(training_plots(figures)) == {"lr", "pairwise"}


def test_a_stage_without_a_held_out_curve_says_so_in_the_plot():
    from adrank.report.plots import stage_curves, training_figure

    losses = [[2, 0.7], [4, 0.6]]
    figures = {"joint": {"modules": {
        "dot": {"training": {"losses": losses, "holdout_curve": {"metric": "auc", "points": [[2, 0.55], [4, 0.6]]}}},
        "dnn": {"training": {"losses": losses, "holdout_curve": {"metric": "auc",
                                                                "skipped": "train.holdout_curve_rows is 0"}}}}},
        "lr": {"training": {"losses": losses}}}
    curves = stage_curves(figures)
    joint = training_figure(curves["joint"], "joint modules").axes[1]
    assert [line.get_label() for line in joint.lines if not line.get_label().startswith("_")] == ["dot"]
    assert "no held-out curve for\ndnn: train.holdout_curve_rows is 0" in [t.get_text() for t in joint.texts]
    lr = training_figure(curves["lr"], "lr").axes[1]
    assert not lr.lines and [t.get_text() for t in lr.texts] == ["no held-out curve\nlr: not recorded"]


def write_rows(folder: Path, files: int, row_groups: int, rows_per_group: int) -> list[str]:
    """Parquet files of ``training_examples`` columns; ``label`` numbers the rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    paths, first = [], 0
    for index in range(files):
        count = row_groups * rows_per_group
        table = pa.table({"sparse_ids": pa.array([[1, 2, 0]] * count, type=pa.list_(pa.int64())),
                          "num_sparse_ids": pa.array(np.full(count, 2, np.int32)),
                          "label": pa.array(np.arange(first, first + count, dtype=np.int32))})
        paths.append(str(folder / f"part-{index}.parquet"))
        pq.write_table(table, paths[-1], row_group_size=rows_per_group)
        first += count
    return paths


def test_the_held_out_sample_is_bounded_disjoint_and_the_same_every_time(tmp_path):
    from adrank.train.ranks.input import EXAMPLE_COLUMNS, sample_rows

    def sample(files: list[str], size: int, limit: int) -> list[list[int]]:
        parts = [sample_rows(files, rank, size, EXAMPLE_COLUMNS, limit) for rank in range(size)]
        return [[] if part is None else part["label"].numpy().tolist() for part in parts]

    files = write_rows(tmp_path / "many", files=2, row_groups=4, rows_per_group=10)
    parts = sample(files, 2, 25)
    assert [len(p) for p in parts] == [13, 12]
    assert len(set(parts[0]) | set(parts[1])) == 25 and sample(files, 2, 25) == parts
    assert sum(map(len, sample(files, 2, 1000))) == 80  # at most the rows there are
    # One row group, two ranks: both would read the same shard; rank 1 contributes nothing.
    single = write_rows(tmp_path / "one", files=1, row_groups=1, rows_per_group=7)
    assert sample(single, 2, 100) == [list(range(7)), []]
