"""Which click-log dates a scheduled night builds: the dates that arrived since the last build.

A night (``pipeline`` with no dates, ``build_tables --new-dates``) builds from the first
click-log date that ``training_examples`` does not hold yet to the newest input date, so
its cost follows what arrived, not the history kept. When the table does not exist yet
every date is built (the first night is full). When no date is new, the newest built
date is rebuilt: the night still picks up a changed catalog or snapshot, for one day's
cost, and a rerun gives the same tables.

A correction to a date that is already built (late lines in an old date folder) is not a
new date: rebuild it with ``--date D`` or ``--from D1 --to D2`` (docs/tables.md).

The table's dates come from its file listing (the ``date=`` partition folders of the
live files in the Delta log), never from a scan of its rows.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import unquote

from pyspark.sql import SparkSession

from adrank.core import layout
from adrank.core.config import Config
from adrank.runtime.console import say
from adrank.storage import delta
from adrank.tables.inputs import list_dated_folders

DateRange = tuple[datetime.date, datetime.date]
PARTITION = "date="


@dataclass(frozen=True)
class NightlyDates:
    """The dates a night builds and why, in words for its task line and record."""

    dates: DateRange | None  # None: every input date (no table yet)
    reason: str


def chosen_dates(spark: SparkSession, config: Config, dates: DateRange | None, new_dates: bool) -> DateRange | None:
    """The dates a build covers: ``dates`` if given, tonight's with ``new_dates`` (said in one line), else all."""
    if dates is not None or not new_dates:
        return dates
    tonight = dates_for_tonight(spark, config)
    where = f"{tonight.dates[0]}..{tonight.dates[1]}" if tonight.dates else "every date"
    say(f"build_tables: {where} ({tonight.reason})")
    return tonight.dates


def dates_for_tonight(spark: SparkSession, config: Config) -> NightlyDates:
    """The dates tonight's build covers: from the click-log folder listing and ``training_examples``."""
    listed = list_dated_folders(spark, layout.input_path(config, layout.CLICK_LOG), layout.CLICK_LOG)
    return nightly_dates(listed.dates, table_dates(spark, layout.table_path(config, layout.TRAINING_EXAMPLES)))


def table_dates(spark: SparkSession, path: str) -> tuple[datetime.date, ...] | None:
    """The ``date`` partitions of the latest version of the table at ``path``; None if there is no table."""
    if not delta.path_exists(spark, path) or not delta.path_exists(spark, f"{path.rstrip('/')}/_delta_log"):
        return None
    files = delta.live_files(spark, path, delta.latest_version(spark, path))
    return tuple(sorted({date for f in files if (date := partition_date(f)) is not None}))


def partition_date(uri: str) -> datetime.date | None:
    """The date of a data file's ``date=YYYY-MM-DD`` partition folder (None: not in one)."""
    for part in unquote(uri).split("/"):
        if part.startswith(PARTITION):
            try:
                return datetime.date.fromisoformat(part[len(PARTITION):])
            except ValueError:
                return None
    return None


def nightly_dates(input_dates: Sequence[datetime.date], built: Sequence[datetime.date] | None) -> NightlyDates:
    """The dates a night builds from the click-log input dates and the table's built dates."""
    if built is None:
        return NightlyDates(None, "first night: no table yet, every input date")
    if not input_dates:
        return NightlyDates(None, "no click-log input dates")  # the plan refuses it with its own message
    new = sorted(set(input_dates) - set(built))
    if new:
        return NightlyDates((new[0], max(input_dates)), f"{len(new)} new date(s) since the last build")
    newest = max(built)
    return NightlyDates((newest, newest), "no new date: the newest date is rebuilt")


__all__ = ["NightlyDates", "chosen_dates", "dates_for_tonight", "nightly_dates", "partition_date", "table_dates"]
