"""``build_tables``: raw inputs -> ``sku_images``, ``training_examples`` and ``quarantine``.

Before anything is read, the plan (:mod:`adrank.tables.plan`) refuses stray and future
input folders; before anything is written, days to replace without input lines are
refused. The order of one run, each table written in one Delta commit carrying the run id and the
input counts:

1. the catalog is decoded and resized, and MERGEd into ``sku_images`` (only changed rows
   are rewritten; Change Data Feed on); broken images are quarantined;
2. the click log and LR feature records of the chosen dates, and all user/SKU snapshots,
   become ``training_examples`` (point-in-time join, hashed ids); those dates' partitions
   are replaced with ``replaceWhere``, so re-running a date gives the same table. No
   other date's click log is read: the kept-ids state (``impression_ids``,
   :mod:`adrank.tables.state`) keeps an ``impression_id`` unique across the whole table
   whatever dates a run covers; when the dates' lines hold ids kept on a later date, the
   range is widened to rebuild that date (:func:`~adrank.tables.plan.widened`);
3. ``impression_ids`` replaces the same dates, recording the ``training_examples``
   version it mirrors;
4. every bad row lands in ``quarantine``, replacing what an earlier run of the same
   dates (or whole-source inputs) put there.

Per source, input rows = good rows + quarantined rows is checked after the writes; a
mismatch fails the run with the figures (rows were lost somewhere).
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
from collections.abc import Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from adrank.core import layout
from adrank.core.config import Config, FeaturesConfig
from adrank.core.errors import InputError
from adrank.runtime.runs import RunReport, log_event
from adrank.storage import delta
from adrank.tables import inputs, store
from adrank.tables.clicklog import parse_click_log
from adrank.tables.examples import build_examples_with_quarantine
from adrank.tables.images import STATUS_OK, preprocess_images, preprocessing_fingerprint, split_images
from adrank.tables.nightly import chosen_dates
from adrank.tables.plan import BuildPlan, DateRange, check_days_have_lines, plan_build, widened
from adrank.tables.quarantine import quarantine_rows
from adrank.tables.state import KeptIds, earlier_than, later_dates_holding, load_kept_ids, write_kept_ids

WHOLE_SOURCES = (layout.CATALOG, layout.USER_SNAPSHOTS, layout.SKU_SNAPSHOTS)


class ReconciliationError(RuntimeError):
    """Input rows != good rows + quarantined rows for some source."""


@dataclass(frozen=True)
class SourceRows:
    """One source's rows: every input row is good or quarantined."""

    input: int
    good: int
    quarantined: int


@dataclass(frozen=True)
class BuiltTables:
    """What a ``build_tables`` run read and wrote: its dates, each table's commit figures, each source's rows.

    ``dates`` are the dates replaced: those asked for (``requested``), widened when their
    lines hold impression ids kept on a later date (that date is rebuilt so its copy
    becomes the duplicate). ``click_log_dates_read`` counts the click-log date folders
    read (the dates replaced only: no history); ``state_rows_read`` the kept-id rows of
    the other dates that keep ``impression_id`` unique; ``state_rebuilt`` says why that
    state was rebuilt from ``training_examples`` first (None: it was not).
    ``sku_images`` holds the MERGE's figures (version, rows inserted, updated, deleted,
    images decoded and reused), ``training_examples`` the write's (version, rows written).
    """

    dates: tuple[str, str]
    requested: tuple[str, str]
    click_log_dates_read: int
    state_rows_read: int
    state_rebuilt: str | None
    sku_images: Mapping[str, int]
    training_examples: Mapping[str, int]
    sources: Mapping[str, SourceRows]

    def as_json(self) -> dict[str, Any]:
        """The run record: every field, ``sources`` as plain mappings."""
        return {"dates": list(self.dates), "requested": list(self.requested),
                "click_log_dates_read": self.click_log_dates_read, "state_rows_read": self.state_rows_read,
                "state_rebuilt": self.state_rebuilt, "sku_images": dict(self.sku_images),
                "training_examples": dict(self.training_examples),
                "sources": {name: dataclasses.asdict(rows) for name, rows in self.sources.items()}}


def build_tables(
    spark: SparkSession,
    config: Config,
    report: RunReport,
    dates: DateRange | None,
    allow_empty_dates: bool = False,
    today: datetime.date | None = None,
    new_dates: bool = False,
) -> BuiltTables:
    """Build all feature tables for ``dates`` (inclusive; None = every date in the click log,
    or with ``new_dates`` the dates a night builds: :mod:`adrank.tables.nightly`).

    Nothing is written unless the plan holds (:mod:`adrank.tables.plan`): no stray or future
    input folder, and lines on every day replaced unless ``allow_empty_dates``.

    Args:
        spark: The session.
        config: The run's config.
        report: The run report (its run id, the step timings).
        dates: First and last day to replace, or None for every click-log date.
        allow_empty_dates: Days without input lines may be replaced by nothing.
        today: Today's UTC date (tests pin it; default: now).
        new_dates: With no ``dates``: the dates ``training_examples`` lacks (all on the first night).

    Returns:
        What the run wrote, each source reconciled.
    """
    today = today or datetime.datetime.now(datetime.UTC).date()
    dates = chosen_dates(spark, config, dates, new_dates)
    folders = {source: layout.input_path(config, source) for source in (*layout.DATED_SOURCES, *WHOLE_SOURCES)}
    listings = {source: inputs.list_dated_folders(spark, folders[source], source) for source in layout.DATED_SOURCES}
    requested = plan_build(listings, dates, today, allow_empty_dates)
    tables = ExampleTables(*(layout.table_path(config, t) for t in (layout.SKU_IMAGES, layout.TRAINING_EXAMPLES,
                                                                      layout.IMPRESSION_IDS)))
    with ExitStack() as cached:
        lines, input_counts = read_checked_lines(spark, folders, requested, cached)
        with report.timed("impression_ids"):
            kept = load_kept_ids(spark, tables.impression_ids, tables.training_examples, report.run_id)
            if kept.rebuilt:
                log_event(report, "impression_ids_rebuilt", reason=kept.rebuilt)
            plan, checked_through = requested, None
            while (wider := widened_for_later_copies(plan, lines[layout.CLICK_LOG], kept, checked_through)) != plan:
                checked_through, plan = plan.dates[1], wider
                lines, input_counts = read_checked_lines(spark, folders, plan, cached)
        if plan != requested:
            log_event(report, "dates_widened", requested=[str(d) for d in requested.dates],
                      dates=[str(d) for d in plan.dates])
        with report.timed("sku_images"):
            images = build_sku_images(spark, config.features, folders[layout.CATALOG], tables.sku_images, report,
                                      cached)
        with report.timed("training_examples"):
            examples = build_training_examples(spark, config.features, tables, report, plan, lines, input_counts,
                                               kept)
        with report.timed("quarantine"):
            bad = {**examples.bad, layout.CATALOG: images.bad}
            quarantined = write_quarantine(
                spark, layout.table_path(config, layout.QUARANTINE), report.run_id, bad, plan.dates)
    counts = {**examples.counts, layout.CATALOG: images.counts}
    read = set(listings[layout.CLICK_LOG].dates) & set(plan.days)
    return BuiltTables(_iso(plan.dates), _iso(requested.dates), len(read), examples.state_rows_read, kept.rebuilt,
                       images.figures, examples.figures, reconcile(counts, quarantined))


def widened_for_later_copies(
    plan: BuildPlan, click_lines: DataFrame, kept: KeptIds, checked_through: datetime.date | None = None
) -> BuildPlan:
    """``plan``, widened to the latest later date that keeps an id the plan's lines hold.

    Such a date's copy was kept while the plan's dates were not built; now the plan's
    earlier copy wins, so that date is rebuilt from its own lines. Every line that parses
    counts (whatever its SKU): a widening too many rebuilds a date as it was, one too few
    would leave a duplicate. The days a widening adds may hold ids kept on a still later
    date (a day in between that was never built), so the caller widens again, checking
    only the lines after ``checked_through`` (the earlier ones were checked), until the
    plan stays as it is.
    """
    lines = click_lines if checked_through is None else click_lines.where(F.col("input_date") > F.lit(checked_through))
    parsed = parse_click_log(lines).where(F.col("reason").isNull())
    later = later_dates_holding(parsed, kept.frame, plan.dates[1])
    return widened(plan, later[-1]) if later else plan


def _iso(dates: DateRange) -> tuple[str, str]:
    return str(dates[0]), str(dates[1])


@dataclass(frozen=True)
class ImagesBuilt:
    """The ``sku_images`` MERGE: its figures, the catalog's counts (``input``, ``good``) and its bad rows."""

    figures: dict[str, int]
    counts: dict[str, int]
    bad: DataFrame


@dataclass(frozen=True)
class ExamplesBuilt:
    """The ``training_examples`` write: its figures, per-source counts (``input``, click log ``good``), bad rows."""

    figures: dict[str, int]
    counts: dict[str, dict[str, int]]
    bad: dict[str, DataFrame]
    state_rows_read: int


def _persist(frame: DataFrame, cached: ExitStack) -> DataFrame:
    """Keep ``frame`` in memory (spilling to disk) until ``cached`` closes."""
    frame.persist(StorageLevel.MEMORY_AND_DISK)
    cached.callback(frame.unpersist)
    return frame


def read_checked_lines(
    spark: SparkSession, folders: Mapping[str, str], plan: BuildPlan, cached: ExitStack
) -> tuple[dict[str, DataFrame], dict[str, int]]:
    """The raw lines a build reads (persisted) and the input count of each source.

    ``folders`` maps each source (``layout.DATED_SOURCES`` and the snapshots) to its folder.

    The click log is read for the plan's days only (the kept-ids state stands for other
    dates); the input counts cover the plan's days. Raises :class:`~adrank.core.errors.InputError` before
    any write when a day to replace has no lines (see :func:`check_days_have_lines`).
    """
    lines = {
        layout.CLICK_LOG: inputs.read_dated_lines(spark, folders[layout.CLICK_LOG], plan.days),
        layout.LR_FEATURES: inputs.read_dated_lines(spark, folders[layout.LR_FEATURES], plan.days),
        layout.USER_SNAPSHOTS: inputs.read_undated_lines(spark, folders[layout.USER_SNAPSHOTS]),
        layout.SKU_SNAPSHOTS: inputs.read_undated_lines(spark, folders[layout.SKU_SNAPSHOTS]),
    }
    lines = {source: _persist(frame, cached) for source, frame in lines.items()}
    per_day = {source: _lines_per_day(lines[source], plan) for source in layout.DATED_SOURCES}
    check_days_have_lines(plan, per_day)
    counts = {source: sum(days.values()) for source, days in per_day.items()}
    for source in (layout.USER_SNAPSHOTS, layout.SKU_SNAPSHOTS):
        counts[source] = lines[source].count()
    return lines, counts


def _lines_per_day(lines: DataFrame, plan: BuildPlan) -> dict[datetime.date, int]:
    """Line count of each of the plan's days in ``lines`` (days without lines absent)."""
    on_plan = lines.where(F.col("input_date").between(F.lit(plan.dates[0]), F.lit(plan.dates[1])))
    return {row["input_date"]: row["count"] for row in on_plan.groupBy("input_date").count().collect()}


def build_sku_images(
    spark: SparkSession, features: FeaturesConfig, catalog_folder: str, path: str, report: RunReport,
    cached: ExitStack,
) -> ImagesBuilt:
    """Decode the catalog in ``catalog_folder`` and MERGE it into ``sku_images`` at ``path``;
    its figures, counts and bad rows."""
    catalog = inputs.read_catalog(spark, catalog_folder, features.max_image_bytes)
    cores = spark.sparkContext.defaultParallelism
    spread = cores if catalog.rdd.getNumPartitions() < cores else None
    fingerprint = preprocessing_fingerprint(features)
    stored = store.stored_image_keys(spark, path, fingerprint)
    preprocessed = _persist(preprocess_images(catalog, features, spread, stored), cached)
    good, bad = split_images(preprocessed)
    stored_image = F.col("image").isNull() & (F.col("status") == STATUS_OK)  # matched, not decoded
    counted = preprocessed.agg(F.count(F.lit(1)).alias("rows"), F.count(F.when(stored_image, 1)).alias("reused"))
    input_rows, reused = counted.collect()[0]
    if input_rows == 0:
        raise InputError(f"the catalog at {catalog_folder} is empty: "
                         "refusing to MERGE it (it would delete every SKU); put the catalog there")
    figures = store.upsert_sku_images(
        spark, good, path, {"run_id": report.run_id, "job": report.job, "catalog_rows": input_rows},
        preprocessing=fingerprint if stored is None else None,  # record it only where it is not recorded yet
    )
    # Not the MERGE's operationMetrics: they count the rows it touched (inserted, updated,
    # deleted, copied), not the rows of files it left alone. A count of a whole version is
    # answered from the Delta log's per-file statistics, without reading a data file.
    written = delta.read_delta(spark, path, figures["version"]).count()  # plan: a LocalTableScan
    return ImagesBuilt({**figures, "images_decoded": input_rows - reused, "images_reused": reused},
                       {"input": input_rows, "good": written}, bad)


@dataclass(frozen=True)
class ExampleTables:
    """The tables a build reads and writes: paths of ``sku_images``, ``training_examples`` and
    the kept-ids state ``impression_ids``."""

    sku_images: str
    training_examples: str
    impression_ids: str


def build_training_examples(
    spark: SparkSession,
    features: FeaturesConfig,
    tables: ExampleTables,
    report: RunReport,
    plan: BuildPlan,
    lines: dict[str, DataFrame],
    input_counts: dict[str, int],
    kept: KeptIds,
) -> ExamplesBuilt:
    """Build and write the examples of the plan's days, then the kept ids of those days;
    its figures, per-source counts, bad rows and the state rows read."""
    skus = delta.read_delta(spark, tables.sku_images)
    kept_before = earlier_than(kept.frame, plan.dates[0])
    examples, bad = build_examples_with_quarantine(
        lines[layout.CLICK_LOG], lines[layout.LR_FEATURES], lines[layout.USER_SNAPSHOTS],
        lines[layout.SKU_SNAPSHOTS], skus.select("sku_id", "category_id", "updated_at"), features,
        plan.dates, kept_before,
    )
    path = tables.training_examples
    delta.write_delta(
        examples, path, mode="overwrite", partition_by=("date",),
        replace_where=_date_predicate("date", plan.dates),
        commit_info={"run_id": report.run_id, "job": report.job, "input_rows": input_counts},
    )
    written = delta.last_commit_metrics(spark, path)
    write_kept_ids(spark, tables.impression_ids, path, written["version"], plan.dates, report.run_id)
    counts = {source: {"input": n} for source, n in input_counts.items()}
    counts[layout.CLICK_LOG]["good"] = written["rows_written"]
    state_rows = kept.frame.where(~F.col("date").between(F.lit(plan.dates[0]), F.lit(plan.dates[1]))).count()
    return ExamplesBuilt(written, counts, bad, state_rows)


def write_quarantine(
    spark: SparkSession, path: str, run_id: str, bad: dict[str, DataFrame], dates: DateRange
) -> dict[str, int]:
    """Replace this run's slice of ``quarantine`` (the table at ``path``) in one commit; return rows per source."""
    shaped = [quarantine_rows(frame, source, run_id) for source, frame in bad.items()]
    rows = functools.reduce(DataFrame.unionByName, shaped)
    delta.write_delta(
        rows, path, mode="overwrite", partition_by=("source",),
        replace_where=_quarantine_slice(dates), commit_info={"run_id": run_id, "job": "build_tables"},
    )
    written = delta.read_delta(spark, path).where(F.col("run_id") == run_id).groupBy("source").count()
    return {row["source"]: row["count"] for row in written.collect()}


def reconcile(counts: dict[str, dict[str, int]], quarantined: dict[str, int]) -> dict[str, SourceRows]:
    """Per source: input = good + quarantined; raise :class:`ReconciliationError` if not.

    Sources whose good rows are not written one to one (LR records, snapshots) count as good
    every input row that was not quarantined.
    """
    rows = {}
    for source, count in counts.items():
        bad = quarantined.get(source, 0)
        rows[source] = SourceRows(count["input"], count.get("good", count["input"] - bad), bad)
    broken = {s: dataclasses.asdict(r) for s, r in rows.items() if r.input != r.good + r.quarantined}
    if broken:
        raise ReconciliationError(f"input rows != good + quarantined for {sorted(broken)}: {broken}")
    return rows


def _date_predicate(column: str, dates: DateRange) -> str:
    return f"{column} >= '{dates[0]}' AND {column} <= '{dates[1]}'"


def _quarantine_slice(dates: DateRange) -> str:
    dated = ", ".join(f"'{s}'" for s in layout.DATED_SOURCES)
    whole = ", ".join(f"'{s}'" for s in WHOLE_SOURCES)
    return f"(source IN ({dated}) AND {_date_predicate('input_date', dates)}) OR source IN ({whole})"
