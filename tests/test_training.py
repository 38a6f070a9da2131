"""The train job's driver-side checks: no held-out day or no pairs -> one line, nothing registered.

Every check here happens before any Horovod rank starts; the launcher is replaced by one
that fails the test if it is ever called.
"""

from __future__ import annotations

import datetime as dt
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from adrank.core import layout
from adrank.core.layout import registry_root
from adrank.runtime.runs import RunReport
from adrank.storage import delta
from adrank.tables.examples import EXAMPLES_DDL
from adrank.tables.images import SKU_IMAGES_DDL
from adrank.train import launch
from adrank.train import run as training
from adrank.train.registration import checked_metrics
from adrank.train.registry import versions
from conftest import TINY_CONF, load_job, tiny_config

DAY1, DAY2 = dt.date(2026, 11, 1), dt.date(2026, 11, 2)
LR_HEADLINE = training.STAGE_DRIVERS["lr"].headline_metrics


@pytest.fixture(autouse=True)
def no_ranks(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("Horovod ranks were started")

    monkeypatch.setattr(launch, "launch", refuse)


def example(impression: str, date: dt.date, context_sku: int, ad_sku: int, label: int) -> tuple:
    ts = dt.datetime.combine(date, dt.time(12))
    return (impression, ts, date, 1, "detail", context_sku, "", ad_sku, ad_sku % 2, 1, 1, label,
            [1, 2, 0], 2, False)


def write_examples(spark, config, rows) -> None:
    frame = spark.createDataFrame(rows, EXAMPLES_DDL)
    delta.write_delta(frame, layout.table_path(config, layout.TRAINING_EXAMPLES), partition_by=["date"])


def png(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def write_images(spark, config, skus) -> None:
    rows = [(sku, f"sku {sku}", png(sku), "PNG", 32, 32, 3, str(sku), dt.datetime(2026, 11, 1), sku % 2)
            for sku in skus]
    delta.write_delta(spark.createDataFrame(rows, SKU_IMAGES_DDL), layout.table_path(config, layout.SKU_IMAGES))


def fake_registered_version(config, stage: str) -> Path:
    """A v1 with ``latest`` pointing at it (what a refused run must leave alone); its folder."""
    folder = Path(registry_root(config)) / stage
    (folder / "v1").mkdir(parents=True)
    (folder / "v1" / "metadata.json").write_text("{}\n")
    (folder / "latest").write_text("v1\n")
    return folder


@pytest.mark.parametrize("stage", ["lr", "pairwise"])
def test_one_date_only_is_a_one_line_error_and_registers_nothing(spark, tmp_path, capsys, stage):
    config = tiny_config(tmp_path)
    write_examples(spark, config, [example(f"i{n}", DAY1, 1, 2 + n % 2, n % 2) for n in range(8)])
    folder = fake_registered_version(config, stage)
    status = load_job("train").main(["--conf-file", str(TINY_CONF), "--stage", stage,
                               "--set", f"storage.root={tmp_path / 'tables'}",
                               "--set", f"inputs.root={tmp_path / 'inputs'}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 1
    assert err == ["train: error: training_examples version 0 has 1 date (2026-11-01): training needs at "
                   "least 2, the last train.holdout_days=1 held out for evaluation; build more dates or "
                   "pin another --version; nothing was trained or registered"]
    assert versions(registry_root(config), stage) == [1]
    assert (folder / "latest").read_text() == "v1\n"
    report = json.loads(next((tmp_path / "tables" / "_runs").glob("train-*.json")).read_text())
    assert report["status"] == "failed" and report[stage]["train_dates"] == ["2026-11-01"]
    assert report[stage]["holdout_dates"] == []


def test_a_held_out_day_without_pairs_is_refused_before_training(spark, tmp_path):
    config = tiny_config(tmp_path)
    write_images(spark, config, [1, 2, 3, 4])
    write_examples(spark, config, [example("a", DAY1, 1, 2, 1), example("b", DAY1, 1, 3, 0),
                                   example("c", DAY2, 1, 3, 0), example("d", DAY2, 1, 4, 0)])
    report = RunReport("train")
    with pytest.raises(training.TrainingDataError) as info:
        training.train(spark, config, report, "pairwise", None)
    message = str(info.value)
    assert message.startswith("stage1_pairs_holdout (from training_examples version 0, train.holdout_days=1) "
                              "has no pairs") and "\n" not in message
    assert report.figures["pairwise"]["pair_rows"] == {"detail": 1}
    assert versions(registry_root(config), "pairwise") == []


def test_a_nan_headline_metric_is_refused_and_other_nan_figures_become_null():
    with pytest.raises(training.TrainingDataError, match="lr evaluation .* gives NaN auc"):
        checked_metrics("lr", LR_HEADLINE, {"auc": float("nan"), "log_loss": 0.3, "rows": 5}, 0)
    checked = checked_metrics("lr", LR_HEADLINE, {"auc": 0.6, "log_loss": 0.3, "cold_auc": float("nan")}, 0)
    assert checked == {"auc": 0.6, "log_loss": 0.3, "cold_auc": None}


def test_the_joint_stage_without_sku_embeddings_is_a_one_line_error(spark, tmp_path, capsys):
    config = tiny_config(tmp_path)
    write_examples(spark, config, [example(f"i{n}", day, 1, 2 + n % 2, n % 2) for n in range(8) for day in (DAY1, DAY2)])
    status = load_job("train").main(["--conf-file", str(TINY_CONF), "--stage", "joint", "--interaction", "dot",
                                     "--set", f"storage.root={tmp_path / 'tables'}",
                                     "--set", f"inputs.root={tmp_path / 'inputs'}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 1
    assert len(err) == 1 and "no sku_embeddings table" in err[0] and "embed_catalog" in err[0], err
    assert versions(registry_root(config), "joint") == []


def test_ranking_metrics_split_by_page_and_cold_start():
    from adrank.train.evaluate import ranking_metrics

    labels = np.array([1, 0, 1, 0, 1, 0])
    scores = np.array([0.9, 0.1, 0.2, 0.8, 0.7, 0.6])
    pages = np.array(["detail", "detail", "feed", "feed", "search", "search"], dtype=object)
    cold = np.array([False, False, True, True, False, False])
    metrics = ranking_metrics(labels, scores, cold, pages)
    assert (metrics["detail_auc"], metrics["feed_auc"], metrics["search_auc"]) == (1.0, 0.0, 1.0)
    assert (metrics["detail_rows"], metrics["feed_rows"], metrics["search_rows"], metrics["rows"]) == (2, 2, 2, 6)
    assert metrics["cold_auc"] == 0.0 and metrics["cold_rows"] == 2
    assert metrics["feed_log_loss"] > metrics["detail_log_loss"]
    assert "detail_auc" not in ranking_metrics(labels, scores, cold)


def test_comparison_table_has_a_row_per_model_and_a_dash_for_missing_figures():
    from adrank.train.joint.comparison import comparison_table

    row = {"auc": 0.61, "cold_auc": 0.54, "log_loss": 0.25, "detail_auc": 0.6, "feed_auc": float("nan"),
           "search_auc": 0.7, "rows": 10, "cold_rows": 2}
    lines = comparison_table({"lr": row, "dot": {**row, "auc": 0.7}, "oracle": None}).splitlines()
    assert lines[0].split()[:4] == ["model", "AUC", "cold", "AUC"]
    assert lines[1].split() == ["lr", "0.6100", "0.5400", "0.2500", "0.6000", "-", "0.7000", "10", "2"]
    assert lines[2].split()[1] == "0.7000"
    assert lines[3].split()[0] == "oracle" and set(lines[3].split()[1:]) == {"-"}
