"""The LR baseline's driver: hashed ids of the pinned examples trained on the ranks, evaluated, registered.

Contract: :func:`train_lr` (the ``lr`` row of :data:`adrank.train.run.STAGE_DRIVERS`)
trains on the live files of the pinned ``training_examples`` dates, then evaluates the
newest checkpoint on the held-out dates: AUC and log loss overall, on cold-start ads (rows
flagged, or an ad SKU unseen in training) and per page, before registering it. An
incremental run trains on the dates its parent has not seen (:mod:`adrank.train.warm`).
TensorFlow is imported inside the function.
"""

from __future__ import annotations

from pyspark.sql import functions as F

from adrank.core import layout
from adrank.storage import delta
from adrank.train import batches
from adrank.train.evaluate import evaluate_ranking
from adrank.train.launch import train_on_ranks
from adrank.train.lineage import model_shape
from adrank.train.pinned import PinnedData
from adrank.train.ranks.loop import load_trained
from adrank.train.ranks.settings import last_checkpoint_path
from adrank.train.registration import register_model
from adrank.train.warm import is_kept, keep, planned


def train_lr(pinned: PinnedData) -> None:
    """The LR baseline over hashed ids; AUC and log loss overall and on cold-start ads."""
    import tensorflow as tf

    pinned = planned(pinned, {pinned.stage: model_shape(pinned.config, pinned.stage)})
    if is_kept(pinned):
        return keep(pinned)
    spark, examples = pinned.spark, pinned.examples
    path = layout.table_path(pinned.config, layout.TRAINING_EXAMPLES)
    files, holdout_files = ([f for d in dates for f in delta.live_files(spark, path, pinned.version, {"date": str(d)})]
                            for dates in (pinned.train_dates, pinned.holdout_dates))
    settings = train_on_ranks(pinned, pinned.version, {"examples": files}, {"examples": holdout_files})
    model = load_trained(settings)[layout.LR]
    with pinned.report.timed("lr_evaluation"):
        trained = examples.where(F.col("date").isin(pinned.seen_dates))
        seen = [r.ad_sku_id for r in trained.select("ad_sku_id").distinct().collect()]
        holdout = examples.where(F.col("date").isin(pinned.holdout_dates))
        metrics = evaluate_ranking(lambda b: tf.sigmoid(model(b, training=False)),
                                   batches.example_batches(holdout), seen)
    register_model(pinned, {layout.TRAINING_EXAMPLES: pinned.version}, metrics, linear_model=model,
                   checkpoint=last_checkpoint_path(settings))


__all__ = ["train_lr"]
