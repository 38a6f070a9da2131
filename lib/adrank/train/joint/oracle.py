"""The ceiling of stage 3's evaluation: the sample generator's true click probability as a model.

Contract: :func:`oracle_metrics` scores the held-out rows of ``training_examples`` with the
planted probability of ``<inputs.root>/_oracle/click_probability`` (written by
``generate_data`` beside ``_manifest.json``; :func:`adrank.core.layout.oracle_path`) and returns
the same figures as every model (:func:`adrank.train.evaluate.ranking_metrics`), plus how
many held-out rows had a probability. Real inputs have no such file: then None. The
pipeline never reads this file as an input; only this evaluation does.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from pyspark.sql import DataFrame, SparkSession

from adrank.storage import delta
from adrank.train.evaluate import cold_start_mask, ranking_metrics


def oracle_metrics(spark: SparkSession, oracle_path: str, holdout: DataFrame,
                   seen_ad_skus: Iterable[int]) -> dict[str, float | int] | None:
    """Metrics of the true click probability at ``oracle_path`` on ``holdout`` (``training_examples`` rows).

    Cold start is the models' rule (:func:`adrank.train.evaluate.cold_start_mask` with the
    ad SKUs seen in training).

    The joined columns (a float, a label, a flag and a page name per row) are collected to
    the driver: a held-out day, the size of what evaluation already streams.
    """
    hadoop, filesystem = delta.hadoop_path(spark, oracle_path)
    if not filesystem.exists(hadoop):
        return None
    truth = spark.read.parquet(oracle_path).select("impression_id", "click_probability")
    rows = (holdout.select("impression_id", "label", "is_cold_start_ad", "ad_sku_id", "page")
            .join(truth, "impression_id", "left").collect())
    matched = [r for r in rows if r.click_probability is not None]
    metrics = ranking_metrics(
        np.array([r.label for r in matched], np.float32), np.array([r.click_probability for r in matched]),
        cold_start_mask(np.array([bool(r.is_cold_start_ad) for r in matched], bool),
                        np.array([r.ad_sku_id for r in matched], np.int64), seen_ad_skus),
        np.array([r.page for r in matched], object))
    return {**metrics, "matched_rows": len(matched), "holdout_rows": len(rows)}


__all__ = ["oracle_metrics"]
