"""What a person asks of the task graph: the dates to build and the part of the graph to force."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import TYPE_CHECKING

from adrank.core.errors import InputError

if TYPE_CHECKING:
    from adrank.orchestration.graph import Task

DateRange = tuple[datetime.date, datetime.date]


@dataclass(frozen=True)
class Selection:
    """What a person asked for: the dates to build and the part of the graph to force."""

    dates: DateRange | None = None
    from_task: str | None = None
    only: tuple[str, ...] = ()

    def forced(self, tasks: tuple[Task, ...]) -> tuple[str, ...] | None:
        """The tasks to run even when current (None: the whole graph, each only when stale)."""
        from adrank.orchestration.graph import downstream_of, task_names

        names = task_names(tasks)
        for name in (*self.only, *([self.from_task] if self.from_task else [])):
            if name not in names:
                raise InputError(f"no task {name!r} in the pipeline; the tasks are: {', '.join(names)}")
        if self.only:
            return tuple(name for name in names if name in self.only)
        if self.from_task:
            return downstream_of(tasks, self.from_task)
        return None

    def date_args(self) -> tuple[str, ...]:
        """The dates as job arguments (``--from D --to D``; none: every date)."""
        return ("--from", str(self.dates[0]), "--to", str(self.dates[1])) if self.dates else ()


def no_selection_args(selection: Selection) -> tuple[str, ...]:
    """No arguments: a task whatever the selection (its dates are for ``build_tables``)."""
    return ()
