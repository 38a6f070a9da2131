"""The ``train`` job's driver side: pin data, hand file lists to Horovod ranks, evaluate, register.

For a stage (``pairwise`` = stage 1, ``lr`` = the LR baseline):

1. pin one Delta version of ``training_examples`` (latest, or ``--version``) and split its
   dates into training dates and the held-out last ``train.holdout_days``;
2. ``pairwise``: build the stage-1 pairs of each split from that version and
   ``sku_images``, materialise them as Delta tables and pin those versions too;
   ``lr``: use the examples table's own live files of the training dates;
3. give the ranks (``adrank.train.launch``: horovodrun locally, ``horovod.spark.run`` on
   a cluster) the live file lists of the pinned versions; rank 0 checkpoints, a rerun
   resumes from the latest checkpoint;
4. evaluate on the held-out dates in the driver and export a versioned SavedModel with
   the metrics and data versions into the model registry.

Nothing is trained, evaluated or registered without data on both sides: a pinned version
with no held-out date (a single date), no training or held-out rows, or (stage 1) no
pairs on either side raises :class:`TrainingDataError` (one line) before any rank starts,
and so does a headline metric that comes out NaN (e.g. a held-out day with one class).
Other figures that are undefined (cold-start AUC without cold rows) are stored as null.

TensorFlow is imported inside functions: the Spark side stays importable without it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from adrank import delta, layout
from adrank.config import Config
from adrank.errors import InputError
from adrank.runs import RunReport

STAGES = ("pairwise", "lr")
PAIRS_TRAIN = "stage1_pairs_train"
PAIRS_HOLDOUT = "stage1_pairs_holdout"
EVAL_BATCH = 256
# The metrics a model is judged by: NaN (no rows, one class) means it cannot be registered.
HEADLINE_METRICS = {"pairwise": ("pairwise_accuracy", "pairwise_loss"), "lr": ("auc", "log_loss")}


class TrainingDataError(InputError):
    """The pinned data cannot train and evaluate a model (one-line message); nothing registered."""


def train(spark: SparkSession, config: Config, report: RunReport, stage: str, version: int | None) -> None:
    """Train, evaluate and register one stage on a pinned version of ``training_examples``.

    Raises:
        TrainingDataError: No held-out date, no rows or pairs on a side, or a NaN headline metric.
    """
    from adrank.train.evaluate import split_holdout_dates

    examples_path = layout.table_path(config, layout.TRAINING_EXAMPLES)
    pinned = delta.pin_version(spark, examples_path, version)
    examples = delta.read_delta(spark, examples_path, pinned)
    rows_per_date = {r.date: r["count"] for r in examples.groupBy("date").count().collect()}
    train_dates, holdout_dates = split_holdout_dates(list(rows_per_date), config.train.holdout_days)
    split = {"train_dates": [str(d) for d in train_dates], "holdout_dates": [str(d) for d in holdout_dates]}
    figures = report.figures.setdefault(stage, {})
    figures.update({"training_examples_version": pinned, **split})
    figures["train_rows"] = sum(rows_per_date[d] for d in train_dates)
    figures["holdout_rows"] = sum(rows_per_date[d] for d in holdout_dates)
    _require_both_sides(config, pinned, sorted(rows_per_date), figures["train_rows"], figures["holdout_rows"])
    with report.timed(f"{stage}_total"):
        STAGE_RUNNERS[stage](spark, config, report, examples, pinned, train_dates, holdout_dates, figures)


def _require_both_sides(config: Config, pinned: int, dates: list, train_rows: int, holdout_rows: int) -> None:
    """TrainingDataError unless the pinned examples have a training and a held-out side."""
    where = (f"training_examples version {pinned} has {len(dates)} date{'' if len(dates) == 1 else 's'} "
             f"({', '.join(str(d) for d in dates) or 'no rows'})")
    holdout = f"train.holdout_days={config.train.holdout_days}"
    if len(dates) < 2:
        raise TrainingDataError(
            f"{where}: training needs at least 2, the last {holdout} held out for evaluation; "
            "build more dates or pin another --version; nothing was trained or registered")
    for side, rows in (("training", train_rows), ("held-out", holdout_rows)):
        if rows == 0:
            raise TrainingDataError(f"{where} but no {side} rows ({holdout}); nothing was trained or registered")


def _require_pairs(pinned: int, pair_rows: dict[str, dict[str, int]], holdout_days: int) -> None:
    """TrainingDataError when a side of the stage-1 pairs is empty after materialising."""
    for name, side in ((PAIRS_TRAIN, "training"), (PAIRS_HOLDOUT, "held-out")):
        if not sum(pair_rows[name].values()):
            raise TrainingDataError(
                f"{name} (from training_examples version {pinned}, train.holdout_days={holdout_days}) "
                f"has no pairs: no clicked impression of the {side} dates has a negative and stored "
                "images; nothing was trained or registered")


def _checked_metrics(stage: str, metrics: dict, pinned: int) -> dict:
    """The metrics to register: NaN headline metric -> TrainingDataError; other NaN -> None."""
    undefined = [name for name in HEADLINE_METRICS[stage] if _is_nan(metrics.get(name))]
    if undefined:
        raise TrainingDataError(
            f"{stage} evaluation on the held-out dates of training_examples version {pinned} gives NaN "
            f"{', '.join(undefined)} ({metrics.get('rows', metrics.get('pairs'))} rows; one class only?); "
            "the model was not registered")
    return {name: None if _is_nan(value) else value for name, value in metrics.items()}


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and value != value


def _launch(config: Config, report: RunReport, stage: str, data_version: Any, files: dict) -> dict:
    from adrank.train.launch import launch
    from adrank.train.ranks.loop import make_settings

    settings = make_settings(
        config, data_version=data_version, files=files, run_id=report.run_id,
        checkpoint_root=layout.join_path(config.storage.local, "_checkpoints"),
    )
    with report.timed(f"{stage}_training"):
        result = launch(stage, settings, config)
    report.figures[stage]["training"] = {
        k: result[k] for k in ("start_step", "final_step", "steps_run", "seconds", "steps_per_s", "loss", "ranks")
        if k in result
    }
    return settings


def train_pairwise(
    spark: SparkSession, config: Config, report: RunReport, examples: DataFrame, pinned: int,
    train_dates: list, holdout_dates: list, figures: dict,
) -> None:
    """Stage 1: pairs from the pinned examples, 2 ranks, held-out pairwise accuracy, P@10."""
    from adrank.layout import registry_root
    from adrank.train.evaluate import catalog_precision, evaluate_pairs
    from adrank.train.ranks.loop import load_trained
    from adrank.train.registry import export_model

    images = delta.read_delta(spark, layout.table_path(config, layout.SKU_IMAGES))
    pair_versions = {}
    for name, dates in ((PAIRS_TRAIN, train_dates), (PAIRS_HOLDOUT, holdout_dates)):
        pair_versions[name], figures[f"{name}_dropped_without_image"] = _materialise_pairs(
            spark, config, examples.where(F.col("date").isin(dates)), images, name)
    figures["pair_rows"] = _rows_per_kind(spark, config, PAIRS_TRAIN)
    figures["holdout_pair_rows"] = _rows_per_kind(spark, config, PAIRS_HOLDOUT)
    _require_pairs(pinned, {PAIRS_TRAIN: figures["pair_rows"], PAIRS_HOLDOUT: figures["holdout_pair_rows"]},
                   config.train.holdout_days)
    files = _pair_files(spark, config, PAIRS_TRAIN, pair_versions[PAIRS_TRAIN])
    data_version = {"training_examples": pinned, **pair_versions}
    settings = _launch(config, report, "pairwise", data_version, files)
    model = load_trained("pairwise", settings)["pairwise"]
    with report.timed("pairwise_evaluation"):
        holdout = delta.read_delta(spark, layout.table_path(config, PAIRS_HOLDOUT))
        metrics = evaluate_pairs(model, _pair_batches(holdout, config.features.image_size))
        metrics.update(catalog_precision(model.embed_sku, _catalog_batches(images)))
    figures["metrics"] = metrics  # in the report (NaN as null) even when refused below
    figures["metrics"] = metrics = _checked_metrics("pairwise", metrics, pinned)
    figures["model_version"], _ = export_model(
        registry_root(config), "pairwise", pairwise_model=model, image_size=config.features.image_size,
        data_version=data_version, config=_plain_config(config), metrics=metrics, run_id=report.run_id,
    )


def train_lr(
    spark: SparkSession, config: Config, report: RunReport, examples: DataFrame, pinned: int,
    train_dates: list, holdout_dates: list, figures: dict,
) -> None:
    """The LR baseline over hashed ids; AUC and log loss overall and on cold-start ads."""
    import tensorflow as tf

    from adrank.layout import registry_root
    from adrank.train.evaluate import evaluate_lr
    from adrank.train.ranks.loop import load_trained
    from adrank.train.registry import export_model

    path = layout.table_path(config, layout.TRAINING_EXAMPLES)
    files = [f for d in train_dates for f in delta.live_files(spark, path, pinned, {"date": str(d)})]
    settings = _launch(config, report, "lr", pinned, {"examples": files})
    model = load_trained("lr", settings)["lr"]
    with report.timed("lr_evaluation"):
        trained = examples.where(F.col("date").isin(train_dates))
        seen = [r.ad_sku_id for r in trained.select("ad_sku_id").distinct().collect()]
        holdout = examples.where(F.col("date").isin(holdout_dates))
        metrics = evaluate_lr(lambda b: tf.sigmoid(model(b, training=False)), _example_batches(holdout), seen)
    figures["metrics"] = metrics  # in the report (NaN as null) even when refused below
    figures["metrics"] = metrics = _checked_metrics("lr", metrics, pinned)
    figures["model_version"], _ = export_model(
        registry_root(config), "lr", linear_model=model, image_size=config.features.image_size,
        data_version={"training_examples": pinned}, config=_plain_config(config), metrics=metrics,
        run_id=report.run_id,
    )


STAGE_RUNNERS = {"pairwise": train_pairwise, "lr": train_lr}


def _materialise_pairs(
    spark: SparkSession, config: Config, examples: DataFrame, images: DataFrame, name: str
) -> tuple[int, int]:
    from adrank.train.pairs import stage1_pairs, with_images

    pairs, dropped = with_images(stage1_pairs(examples, images), images)
    version = delta.materialise_pairs(spark, pairs, layout.table_path(config, name))
    return version, dropped


def _pair_files(spark: SparkSession, config: Config, name: str, version: int) -> dict[str, list[str]]:
    path = layout.table_path(config, name)
    files = {kind: delta.live_files(spark, path, version, {delta.PAIRS_PARTITION: kind})
             for kind in ("detail", "search")}
    return {kind: listed for kind, listed in files.items() if listed}


def _rows_per_kind(spark: SparkSession, config: Config, name: str) -> dict[str, int]:
    """Rows of each kind in a pairs table, in one aggregation."""
    counts = delta.read_delta(spark, layout.table_path(config, name)).groupBy(delta.PAIRS_PARTITION).count()
    return {row[delta.PAIRS_PARTITION]: row["count"] for row in counts.collect()}


def _decode(images: Any) -> np.ndarray:
    import io

    from PIL import Image

    return np.stack([np.asarray(Image.open(io.BytesIO(data)).convert("RGB")) for data in images])


def _row_chunks(frame: DataFrame, size: int = EVAL_BATCH) -> Iterator[Any]:
    """The rows of ``frame`` as lists of dicts, streamed to the driver (memory per chunk)."""
    rows = []
    for row in frame.toLocalIterator():
        rows.append(row.asDict())
        if len(rows) == size:
            yield rows
            rows = []
    if rows:
        yield rows


def _pair_batches(holdout: DataFrame, image_size: int) -> Iterator[dict]:
    for kind in ("detail", "search"):
        frame = holdout.where(F.col("kind") == kind)
        for rows in _row_chunks(frame):
            batch = {"pos_image": _decode([r["pos_image"] for r in rows]),
                     "neg_image": _decode([r["neg_image"] for r in rows])}
            if kind == "detail":
                batch["context_image"] = _decode([r["context_image"] for r in rows])
            else:
                batch["query"] = np.array([r["query"] for r in rows], dtype=object)
            yield batch


def _catalog_batches(images: DataFrame) -> Iterator[dict]:
    frame = images.select("image", F.coalesce("category_id", F.lit(-1)).alias("category_id"))
    for rows in _row_chunks(frame):
        yield {"image": _decode([r["image"] for r in rows]),
               "category_id": np.array([r["category_id"] for r in rows])}


def _example_batches(holdout: DataFrame) -> Iterator[dict]:
    frame = holdout.select("sparse_ids", "num_sparse_ids", "label", "is_cold_start_ad", "ad_sku_id")
    for rows in _row_chunks(frame, 4096):
        yield {
            "sparse_ids": np.array([r["sparse_ids"] for r in rows], dtype=np.int64),
            "num_sparse_ids": np.array([r["num_sparse_ids"] for r in rows], dtype=np.int32),
            "label": np.array([r["label"] for r in rows], dtype=np.float32),
            "is_cold_start_ad": np.array([r["is_cold_start_ad"] for r in rows], dtype=bool),
            "ad_sku_id": np.array([r["ad_sku_id"] for r in rows], dtype=np.int64),
        }


def _plain_config(config: Config) -> dict:
    from adrank.config import config_as_dict

    return config_as_dict(config)
