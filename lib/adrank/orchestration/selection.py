"""What a person asks of the task graph: the dates to build and the part of the graph to force.

With no dates, a run builds the new dates (a scheduled night: ``build_tables --new-dates``,
:mod:`adrank.tables.nightly`); ``--all-dates`` rebuilds every date.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

DateRange = tuple[datetime.date, datetime.date]


@dataclass(frozen=True)
class Selection:
    """What a person asked for: the dates to build and the part of the graph to force."""

    dates: DateRange | None = None
    from_task: str | None = None
    only: tuple[str, ...] = ()
    all_dates: bool = False  # no dates given: every date (True) or the new ones, as a night does (False)

    @property
    def new_dates(self) -> bool:
        """Whether the build covers the new dates only (no dates given, not ``--all-dates``)."""
        return self.dates is None and not self.all_dates

    def date_args(self) -> tuple[str, ...]:
        """The dates as job arguments beside ``--new-dates`` (``--from D --to D``, ``--all-dates``; none: new dates)."""
        if self.dates:
            return ("--from", str(self.dates[0]), "--to", str(self.dates[1]))
        return ("--all-dates",) if self.all_dates else ()


def no_selection_args(selection: Selection) -> tuple[str, ...]:
    """No arguments: a task whatever the selection (its dates are for ``build_tables``)."""
    return ()
