"""Stage 1's driver: pairs from the pinned examples, the towers trained on the ranks, evaluated, registered.

Contract: :func:`train_pairwise` (the ``pairwise`` row of
:data:`adrank.train.run.STAGE_DRIVERS`) materialises the training and held-out pairs
(:mod:`adrank.train.pairs`, images joined) into ``stage1_pairs_train`` /
``stage1_pairs_holdout``, refuses a side without pairs (:class:`TrainingDataError`, one
line, nothing trained), trains on the ranks from the live files of the pinned pairs, and
evaluates the newest checkpoint on the held-out pairs (pairwise accuracy and loss) and on
the catalog (precision@10 by category) before registering it. It is retrained every
``train.pairwise_every_days`` days of data, or when forced (:mod:`adrank.train.lineage`).
"""

from __future__ import annotations

from pyspark.sql import functions as F

from adrank.core import layout
from adrank.storage import delta
from adrank.train import batches, store
from adrank.train.evaluate import catalog_precision, evaluate_pairs
from adrank.train.launch import train_on_ranks
from adrank.train.lineage import model_shape
from adrank.train.pairs import stage1_pairs, with_images
from adrank.train.pinned import PinnedData, TrainingDataError
from adrank.train.ranks.loop import load_trained
from adrank.train.ranks.settings import last_checkpoint_path
from adrank.train.registration import register_model
from adrank.train.warm import is_kept, keep, planned

PAIR_TABLES = (layout.PAIRS_TRAIN, layout.PAIRS_HOLDOUT)


def train_pairwise(pinned: PinnedData) -> None:
    """Stage 1: pairs from the pinned examples, 2 ranks, held-out pairwise accuracy, P@10."""
    pinned = planned(pinned, {pinned.stage: model_shape(pinned.config, pinned.stage)})
    if is_kept(pinned):
        return keep(pinned)
    spark, config, figures = pinned.spark, pinned.config, pinned.figures
    images = delta.read_delta(spark, layout.table_path(config, layout.SKU_IMAGES))
    paths = {name: layout.table_path(config, name) for name in PAIR_TABLES}
    pair_versions = {}
    for name, dates in zip(PAIR_TABLES, (pinned.train_dates, pinned.holdout_dates)):
        pairs, figures[f"{name}_dropped_without_image"] = with_images(
            stage1_pairs(pinned.examples.where(F.col("date").isin(dates)), images), images)
        pair_versions[name] = store.materialise_pairs(spark, pairs, paths[name])
    pair_rows = {name: store.rows_per_kind(spark, paths[name]) for name in PAIR_TABLES}
    figures["pair_rows"], figures["holdout_pair_rows"] = pair_rows[layout.PAIRS_TRAIN], pair_rows[layout.PAIRS_HOLDOUT]
    require_pairs(pinned.version, pair_rows, config.train.holdout_days)
    files, holdout_files = (store.pair_files(spark, paths[name], pair_versions[name]) for name in PAIR_TABLES)
    data_version = {layout.TRAINING_EXAMPLES: pinned.version, **pair_versions}
    settings = train_on_ranks(pinned, data_version, files, holdout_files)
    model = load_trained(settings)[layout.PAIRWISE]
    with pinned.report.timed("pairwise_evaluation"):
        holdout = delta.read_delta(spark, paths[layout.PAIRS_HOLDOUT])
        metrics = evaluate_pairs(model, batches.pair_batches(holdout))
        metrics.update(catalog_precision(model.embed_sku, batches.catalog_batches(images)))
    register_model(pinned, data_version, metrics, pairwise_model=model, checkpoint=last_checkpoint_path(settings))


def require_pairs(pinned_version: int, pair_rows: dict[str, dict[str, int]], holdout_days: int) -> None:
    """TrainingDataError when a side of the stage-1 pairs is empty after materialising."""
    for name, side in zip(PAIR_TABLES, ("training", "held-out")):
        if not sum(pair_rows[name].values()):
            raise TrainingDataError(
                f"{name} (from training_examples version {pinned_version}, train.holdout_days={holdout_days}) "
                f"has no pairs: no clicked impression of the {side} dates has a negative and stored "
                "images; nothing was trained or registered")


__all__ = ["PAIR_TABLES", "require_pairs", "train_pairwise"]
