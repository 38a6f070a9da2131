"""``impression_ids``: the kept impression ids by date, the state that bounds a build.

An impression's kept copy is its first good copy, on its earliest date (docs/tables.md). A
build of some dates needs, for that rule, only the ids already kept on other dates, not
their raw click log: this small table (``impression_id``, ``date``, partitioned by date)
mirrors ``training_examples.select("impression_id", "date")``. Every build replaces its
dates in it (``replaceWhere``, one commit, after ``training_examples``'s commit), and the
commit records the ``training_examples`` version it mirrors (``userMetadata`` key
:data:`MIRRORS`). When the table is missing or mirrors another version (a run killed
between the two commits, a store built before this table existed), it is rebuilt from
``training_examples`` before it is read, and the run says why.

Two uses, both per impression id (:mod:`adrank.tables.run`): ids kept *before* the
build's first date make the build's copies duplicates; ids kept *after* its last date that
the build's lines hold too are now later copies, so their dates are rebuilt
(:func:`later_dates_holding`).
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from adrank.storage import delta

KEPT_IDS_DDL = "impression_id string, date date"
MIRRORS = "training_examples_version"  # userMetadata key: the training_examples version mirrored


@dataclass(frozen=True)
class KeptIds:
    """The state one build reads.

    Attributes:
        frame: ``impression_id``, ``date`` of every kept impression (empty on a new store).
        rebuilt: Why it was rebuilt from ``training_examples`` before this run read it
            (one line), or None when it was read as stored (or there was nothing yet).
    """

    frame: DataFrame
    rebuilt: str | None


def load_kept_ids(spark: SparkSession, state_path: str, examples_path: str, run_id: str) -> KeptIds:
    """The kept ids mirroring the latest ``training_examples``; rebuilt first if they do not."""
    examples_version = _version_or_none(spark, examples_path)
    stored = _version_or_none(spark, state_path)
    if stored is None and examples_version is None:
        return KeptIds(spark.createDataFrame([], KEPT_IDS_DDL), None)
    mirrored = mirrored_version(spark, state_path) if stored is not None else None
    if stored is not None and mirrored == examples_version:
        return KeptIds(delta.read_delta(spark, state_path, stored), None)
    reason = (f"{state_path} is missing" if stored is None else
              f"{state_path} mirrors training_examples v{mirrored}, the latest is v{examples_version}")
    if examples_version is None:
        source = spark.createDataFrame([], KEPT_IDS_DDL)
    else:
        source = delta.read_delta(spark, examples_path, examples_version).select("impression_id", "date")
    _write(source, state_path, examples_version, run_id, replace_where=None)
    rebuilt = delta.read_delta(spark, state_path, delta.latest_version(spark, state_path))  # pinned: this run writes it
    return KeptIds(rebuilt, f"rebuilt from training_examples: {reason}")


def write_kept_ids(
    spark: SparkSession, state_path: str, examples_path: str, examples_version: int,
    dates: tuple[datetime.date, datetime.date], run_id: str,
) -> None:
    """Replace ``dates`` of the state with those of ``training_examples`` at ``examples_version``."""
    within = f"date >= '{dates[0]}' AND date <= '{dates[1]}'"
    kept = delta.read_delta(spark, examples_path, examples_version).where(within).select("impression_id", "date")
    _write(kept, state_path, examples_version, run_id, replace_where=within)


def mirrored_version(spark: SparkSession, state_path: str) -> int | None:
    """The ``training_examples`` version the state's latest commit records (None: none recorded)."""
    from delta.tables import DeltaTable

    latest = DeltaTable.forPath(spark, state_path).history(1).select("userMetadata").collect()[0]
    try:
        recorded = json.loads(latest.userMetadata or "{}").get(MIRRORS)
    except (ValueError, AttributeError):  # not adrank's JSON: it mirrors nothing known
        return None
    return recorded if isinstance(recorded, int) else None


def earlier_than(kept: DataFrame, day: datetime.date) -> DataFrame:
    """The kept ids of dates before ``day``."""
    return kept.where(F.col("date") < F.lit(day))


def later_dates_holding(good_ids: DataFrame, kept: DataFrame, last_day: datetime.date) -> list[datetime.date]:
    """Dates after ``last_day`` whose kept ids are among ``good_ids``, sorted.

    Args:
        good_ids: ``impression_id`` of the lines a build reads that may be good copies.
        kept: The state.
        last_day: The build's last date.
    """
    later = kept.where(F.col("date") > F.lit(last_day))
    if later.isEmpty():  # the nightly case: nothing after the date built, no join
        return []
    held = later.join(good_ids.select("impression_id").distinct(), "impression_id", "left_semi")
    return sorted(row["date"] for row in held.select("date").distinct().collect())


def _write(
    kept: DataFrame, state_path: str, examples_version: int | None, run_id: str, replace_where: str | None
) -> None:
    delta.write_delta(kept, state_path, mode="overwrite", partition_by=("date",), replace_where=replace_where,
                      commit_info={"run_id": run_id, "job": "build_tables", MIRRORS: examples_version})


def _version_or_none(spark: SparkSession, path: str) -> int | None:
    from delta.tables import DeltaTable

    return delta.latest_version(spark, path) if DeltaTable.isDeltaTable(spark, path) else None
