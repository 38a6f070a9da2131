"""Which dates a ``build_tables`` run may replace, decided before anything is written.

The rules (docs/tables.md), each a one-line :class:`~adrank.core.errors.InputError`:

* every entry of a dated source's folder is a ``date=YYYY-MM-DD`` folder (hidden names,
  ``_SUCCESS`` and ``.crc`` files, aside): a stray file or a badly named folder holds lines
  no build would read, so it is refused, never skipped;
* no date folder lies in the future (after tomorrow, UTC): it would become the held-out
  day and stretch the default range;
* a date's rows are replaced only by a run that read that date's inputs: every day of the
  range needs click-log and LR-feature lines, unless the person says the days are really
  empty (``allow_empty``).

No click-log *history* (dates before the range) is read: ``impression_id`` stays unique
across the whole table through the kept-ids state (:mod:`adrank.tables.state`). An
impression's first good copy is on its earliest date, so when the range's lines hold an id
kept on a *later* date, that later copy must become the duplicate: the range is widened to
the latest such date (:func:`widened`), whose days are then rebuilt from their own lines.
Pure functions of the folder listings and line counts: no Spark here.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass

from adrank.core.errors import InputError
from adrank.core.layout import CLICK_LOG, DATED_SOURCES
from adrank.tables.inputs import DatedFolders, date_folder_name

DateRange = tuple[datetime.date, datetime.date]
FUTURE_GRACE = datetime.timedelta(days=1)
MAX_NAMED = 5


@dataclass(frozen=True)
class BuildPlan:
    """The dates of one build.

    Attributes:
        dates: First and last day replaced (inclusive).
        days: Every calendar day of ``dates``.
        history: Click-log dates before ``dates[0]``: listed, never read (the kept-ids
            state stands for them).
        allow_empty: Days without input lines may be replaced by nothing.
        requested: The days asked for, when the plan was widened past them (None: not widened).
    """

    dates: DateRange
    days: tuple[datetime.date, ...]
    history: tuple[datetime.date, ...]
    allow_empty: bool = False
    requested: DateRange | None = None

    @property
    def added_days(self) -> tuple[datetime.date, ...]:
        """The days a widening added (after the requested range); empty when not widened."""
        return () if self.requested is None else tuple(d for d in self.days if d > self.requested[1])


def widened(plan: BuildPlan, last_day: datetime.date) -> BuildPlan:
    """``plan`` replacing every day up to ``last_day`` too (a later date holding a copy of an
    id the plan's days now keep earlier); ``plan`` itself when ``last_day`` is within it."""
    if last_day <= plan.dates[1]:
        return plan
    dates = (plan.dates[0], last_day)
    return BuildPlan(dates, _days(dates), plan.history, plan.allow_empty, plan.requested or plan.dates)


def plan_build(
    listings: Mapping[str, DatedFolders],
    requested: DateRange | None,
    today: datetime.date,
    allow_empty: bool = False,
) -> BuildPlan:
    """The plan for ``requested`` (None: every click-log date), or an :class:`InputError`.

    Args:
        listings: :func:`~adrank.tables.inputs.list_dated_folders` of each dated source.
        requested: The days asked for, inclusive, or None for the whole click log.
        today: Today's UTC date (a folder after tomorrow is in the future).
        allow_empty: The person said days without lines are really empty.
    """
    _refuse_stray(listings)
    _refuse_future(listings, today)
    clicks = listings[CLICK_LOG]
    if requested is None:
        if not clicks.dates:
            raise InputError(f"no date=YYYY-MM-DD folders under {CLICK_LOG}/ of inputs.root: nothing to build; put the "
                             "click log there (a date=YYYY-MM-DD folder of JSON lines per day) or write sample "
                             "inputs with ./spark-submit.sh generate_data")
        requested = (clicks.dates[0], clicks.dates[-1])
    if requested[1] > today + FUTURE_GRACE:
        raise InputError(f"refusing to build {requested[1]}: it is in the future (today is {today}, UTC)")
    days = _days(requested)
    history = tuple(d for d in clicks.dates if d < requested[0])
    return BuildPlan(requested, days, history, allow_empty)


def check_days_have_lines(plan: BuildPlan, lines_per_day: Mapping[str, Mapping[datetime.date, int]]) -> None:
    """Refuse to replace a day whose dated inputs hold no line (unless ``allow_empty``).

    Args:
        plan: The build's plan.
        lines_per_day: Per dated source, the line count of each day read (missing = 0).
    """
    empty = {
        source: [d for d in plan.days if not lines_per_day.get(source, {}).get(d, 0)]
        for source in DATED_SOURCES
    }
    empty = {source: days for source, days in empty.items() if days}
    if not empty or plan.allow_empty:
        return
    every = sorted({d for days in empty.values() for d in days})
    detail = "; ".join(f"{source}: {_named(days)}" for source, days in empty.items())
    added = [d for d in every if d in plan.added_days]
    why = (f" ({_named(added)} widened the range: they keep copies of impression ids that the dates asked for "
           "hold earlier, so they must be rebuilt from their own lines)" if added else "")
    raise InputError(
        f"no input lines for {_named(every)} ({detail}){why}: refusing to replace those dates with "
        "nothing; restore the inputs, or pass --allow-empty-dates if they are really empty"
    )


def _refuse_stray(listings: Mapping[str, DatedFolders]) -> None:
    stray = [name for listing in listings.values() for name in listing.stray]
    if stray:
        raise InputError(
            f"{len(stray)} input entries outside date=YYYY-MM-DD folders would never be read: "
            f"{_named(stray)}; move their files into a date=YYYY-MM-DD folder or remove them"
        )


def _refuse_future(listings: Mapping[str, DatedFolders], today: datetime.date) -> None:
    future = [
        f"{listing.source}/{date_folder_name(d)}"
        for listing in listings.values() for d in listing.dates if d > today + FUTURE_GRACE
    ]
    if future:
        raise InputError(
            f"date folders in the future (today is {today}, UTC): {_named(future)}; "
            "remove or rename them (they would become the held-out day)"
        )


def _days(dates: DateRange) -> tuple[datetime.date, ...]:
    count = (dates[1] - dates[0]).days + 1
    return tuple(dates[0] + datetime.timedelta(days=i) for i in range(count))


def _named(items: list) -> str:
    """The first few items, comma-separated, with how many more there are."""
    shown = ", ".join(str(item) for item in items[:MAX_NAMED])
    more = len(items) - MAX_NAMED
    return f"{shown} and {more} more" if more > 0 else shown
