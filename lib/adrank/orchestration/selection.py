"""What a person asks of the task graph: the dates to build and the part of the graph to force."""

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

    def date_args(self) -> tuple[str, ...]:
        """The dates as job arguments (``--from D --to D``; none: every date)."""
        return ("--from", str(self.dates[0]), "--to", str(self.dates[1])) if self.dates else ()


def no_selection_args(selection: Selection) -> tuple[str, ...]:
    """No arguments: a task whatever the selection (its dates are for ``build_tables``)."""
    return ()
