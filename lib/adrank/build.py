"""``build_tables``: raw inputs -> ``sku_images``, ``training_examples`` and ``quarantine``.

The order of one run, each table written in one Delta commit carrying the run id and the
input counts:

1. the catalog is decoded and resized, and MERGEd into ``sku_images`` (only changed rows
   are rewritten; Change Data Feed on); broken images are quarantined;
2. the click log and LR feature records of the chosen dates, and all user/SKU snapshots,
   become ``training_examples`` (point-in-time join, hashed ids); those dates' partitions
   are replaced with ``replaceWhere``, so re-running a date gives the same table;
3. every bad row lands in ``quarantine``, replacing what an earlier run of the same
   dates (or whole-source inputs) put there.

Per source, input rows = good rows + quarantined rows is checked after the writes; a
mismatch fails the run with the figures (rows were lost somewhere).
"""

from __future__ import annotations

import datetime
from contextlib import ExitStack
from typing import Any

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from adrank import inputs, tables
from adrank.config import Config
from adrank.features.examples import build_examples_with_quarantine
from adrank.features.images import STATUS_OK, preprocess_images, preprocessing_fingerprint, split_images
from adrank.features.quarantine import quarantine_rows
from adrank.runs import RunReport

DateRange = tuple[datetime.date, datetime.date]
WHOLE_SOURCES = (inputs.CATALOG, inputs.USER_SNAPSHOTS, inputs.SKU_SNAPSHOTS)


class ReconciliationError(RuntimeError):
    """Input rows != good rows + quarantined rows for some source."""


def build_tables(spark: SparkSession, config: Config, report: RunReport, dates: DateRange | None) -> None:
    """Build all feature tables for ``dates`` (inclusive; None = every date in the click log)."""
    dates = dates or _all_dates(spark, config)
    report.figures["dates"] = [str(dates[0]), str(dates[1])]
    with ExitStack() as cached:
        with report.timed("sku_images"):
            catalog_counts, catalog_bad = build_sku_images(spark, config, report, cached)
        with report.timed("training_examples"):
            counts, bad = build_training_examples(spark, config, report, dates, cached)
        with report.timed("quarantine"):
            bad[inputs.CATALOG] = catalog_bad
            quarantined = write_quarantine(spark, config, report.run_id, bad, dates)
    counts[inputs.CATALOG] = catalog_counts
    report.figures["sources"] = reconcile(counts, quarantined)


def _persist(frame: DataFrame, cached: ExitStack) -> DataFrame:
    """Keep ``frame`` in memory (spilling to disk) until ``cached`` closes."""
    frame.persist(StorageLevel.MEMORY_AND_DISK)
    cached.callback(frame.unpersist)
    return frame


def _all_dates(spark: SparkSession, config: Config) -> DateRange:
    dates = inputs.available_dates(spark, config)
    if not dates:
        raise ValueError(f"no date= folders under {inputs.input_path(config, inputs.CLICK_LOG)}")
    return dates[0], dates[-1]


def build_sku_images(
    spark: SparkSession, config: Config, report: RunReport, cached: ExitStack
) -> tuple[dict[str, int], DataFrame]:
    """Decode the catalog and MERGE it into ``sku_images``; return counts and bad rows."""
    catalog = inputs.read_catalog(spark, config)
    cores = spark.sparkContext.defaultParallelism
    spread = cores if catalog.rdd.getNumPartitions() < cores else None
    path = tables.table_path(config, tables.SKU_IMAGES)
    fingerprint = preprocessing_fingerprint(config.features)
    stored = tables.stored_image_keys(spark, path, fingerprint)
    preprocessed = _persist(preprocess_images(catalog, config.features, spread, stored), cached)
    good, bad = split_images(preprocessed)
    stored_image = F.col("image").isNull() & (F.col("status") == STATUS_OK)  # matched, not decoded
    counted = preprocessed.agg(F.count(F.lit(1)).alias("rows"), F.count(F.when(stored_image, 1)).alias("reused"))
    input_rows, reused = counted.first()
    if input_rows == 0:
        raise ValueError(f"the catalog at {inputs.input_path(config, inputs.CATALOG)} is empty: "
                         "refusing to MERGE it (it would delete every SKU)")
    figures = tables.upsert_sku_images(
        spark, good, path, {"run_id": report.run_id, "job": report.job, "catalog_rows": input_rows},
        preprocessing=fingerprint if stored is None else None,  # record it only where it is not recorded yet
    )
    report.figures["sku_images"] = {**figures, "images_decoded": input_rows - reused, "images_reused": reused}
    written = tables.read_delta(spark, path, figures["version"]).count()
    return {"input": input_rows, "good": written}, bad


def build_training_examples(
    spark: SparkSession, config: Config, report: RunReport, dates: DateRange, cached: ExitStack
) -> tuple[dict[str, dict[str, int]], dict[str, DataFrame]]:
    """Build and write the examples of ``dates``; return per-source counts and bad rows."""
    lines = {
        inputs.CLICK_LOG: inputs.read_dated_lines(spark, config, inputs.CLICK_LOG, dates),
        inputs.LR_FEATURES: inputs.read_dated_lines(spark, config, inputs.LR_FEATURES, dates),
        inputs.USER_SNAPSHOTS: inputs.read_undated_lines(spark, config, inputs.USER_SNAPSHOTS),
        inputs.SKU_SNAPSHOTS: inputs.read_undated_lines(spark, config, inputs.SKU_SNAPSHOTS),
    }
    lines = {source: _persist(frame, cached) for source, frame in lines.items()}
    input_counts = {source: frame.count() for source, frame in lines.items()}
    skus = tables.read_delta(spark, tables.table_path(config, tables.SKU_IMAGES))
    examples, bad = build_examples_with_quarantine(
        lines[inputs.CLICK_LOG], lines[inputs.LR_FEATURES], lines[inputs.USER_SNAPSHOTS],
        lines[inputs.SKU_SNAPSHOTS], skus.select("sku_id", "category_id", "updated_at"), config.features,
    )
    path = tables.table_path(config, tables.TRAINING_EXAMPLES)
    tables.write_delta(
        examples, path, mode="overwrite", partition_by=("date",),
        replace_where=_date_predicate("date", dates),
        commit_info={"run_id": report.run_id, "job": report.job, "input_rows": input_counts},
    )
    written = tables.last_commit_metrics(spark, path)
    report.figures["training_examples"] = written
    counts = {source: {"input": n} for source, n in input_counts.items()}
    counts[inputs.CLICK_LOG]["good"] = written["rows_written"]
    return counts, bad


def write_quarantine(
    spark: SparkSession, config: Config, run_id: str, bad: dict[str, DataFrame], dates: DateRange
) -> dict[str, int]:
    """Replace this run's slice of ``quarantine`` in one commit; return rows per source."""
    rows = None
    for source, frame in bad.items():
        shaped = quarantine_rows(frame, source, run_id)
        rows = shaped if rows is None else rows.unionByName(shaped)
    path = tables.table_path(config, tables.QUARANTINE)
    tables.write_delta(
        rows, path, mode="overwrite", partition_by=("source",),
        replace_where=_quarantine_slice(dates), commit_info={"run_id": run_id, "job": "build_tables"},
    )
    written = tables.read_delta(spark, path).where(F.col("run_id") == run_id).groupBy("source").count()
    return {row["source"]: row["count"] for row in written.collect()}


def reconcile(counts: dict[str, dict[str, int]], quarantined: dict[str, int]) -> dict[str, Any]:
    """Per source: input = good + quarantined; raise :class:`ReconciliationError` if not.

    Sources whose good rows are not written one to one (LR records, snapshots) count as good
    every input row that was not quarantined.
    """
    figures = {}
    for source, count in counts.items():
        bad = quarantined.get(source, 0)
        good = count.get("good", count["input"] - bad)
        figures[source] = {"input": count["input"], "good": good, "quarantined": bad}
    broken = {s: f for s, f in figures.items() if f["input"] != f["good"] + f["quarantined"]}
    if broken:
        raise ReconciliationError(f"input rows != good + quarantined for {sorted(broken)}: {broken}")
    return figures


def _date_predicate(column: str, dates: DateRange) -> str:
    return f"{column} >= '{dates[0]}' AND {column} <= '{dates[1]}'"


def _quarantine_slice(dates: DateRange) -> str:
    dated = ", ".join(f"'{s}'" for s in inputs.DATED_SOURCES)
    whole = ", ".join(f"'{s}'" for s in WHOLE_SOURCES)
    return f"(source IN ({dated}) AND {_date_predicate('input_date', dates)}) OR source IN ({whole})"
