"""The demo's two nights: the first days as night 1 (a full first run), the last day as night 2.

The sample data spans ``sample.num_days`` days. On fresh storage the demo builds all but the
last day as night 1 (every task runs: no model exists yet), then runs the graph again as a
scheduled night does (no dates: the new date is built, the models warm-start) as night 2.
The run record's ``nights`` holds each night's tasks, time and headline figures, and
:func:`nights_table` prints them side by side. On storage that already holds tables, or when
the person chose dates or tasks, the demo is one run of the graph, as before.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from adrank.core.config import Config
from adrank.orchestration.selection import Selection
from adrank.runtime.console import record_value, render_rows

MIN_FIRST_NIGHT_DAYS = 2  # a training day and a held-out day

# (label, path in a run record) of the figures shown per night
NIGHT_FIGURES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("dates built", ("dates",)),
    ("LR AUC", ("lr", "metrics", "auc")),
    ("LR cold AUC", ("lr", "metrics", "cold_auc")),
    ("best joint AUC", ("joint", "best", "auc")),
    ("best joint cold AUC", ("joint", "best", "cold_auc")),
    ("stage 1 accuracy", ("pairwise", "metrics", "pairwise_accuracy")),
    ("similar P@10", ("recommend", "metrics", "similar_precision_at_10")),
    ("query recall@10", ("recommend", "metrics", "query_recall_at_10")),
    ("user hit@10", ("recommend", "metrics", "user_hit_rate_at_10")),
)


def first_night(config: Config, selection: Selection, built: bool) -> Selection | None:
    """Night 1's selection (every sample day but the last), or None when the demo is one run.

    ``built``: ``training_examples`` exists already (the demo then runs once, as a rerun does).
    """
    days = config.sample.num_days
    if built or selection != Selection() or days - 1 < MIN_FIRST_NIGHT_DAYS:
        return None
    start = dt.date.fromisoformat(config.sample.start_date)
    return Selection(dates=(start, start + dt.timedelta(days=days - 2)))


def best_joint(record: Mapping[str, Any]) -> dict[str, Any]:
    """The held-out figures of the best joint module in a run record's ``joint`` ({} when none)."""
    best = record_value(record, "joint", "comparison", str(record_value(record, "joint", "best_module")))
    return dict(best) if isinstance(best, Mapping) else {}


def night_summary(record: Mapping[str, Any]) -> dict[str, Any]:
    """One night of the run record's ``nights``: its run id, status, tasks, total seconds, figures."""
    with_best = {**record, "joint": {"best": best_joint(record)}}
    figures = {label: record_value(with_best, *path) for label, path in NIGHT_FIGURES}
    return {"run_id": record.get("run_id"), "status": record.get("status"),
            "seconds": record_value(record, "timings_s", "total"), "tasks": dict(record.get("tasks") or {}),
            "figures": {label: value for label, value in figures.items() if value is not None}}


def nights_table(nights: Mapping[str, Mapping[str, Any]]) -> str:
    """Each task's time per night (and how it ran), then the headline figures per night."""
    names = list(nights)
    tasks: list[str] = []
    for night in nights.values():
        tasks += [t for t in night.get("tasks", {}) if t not in tasks]
    rows = [("task", *(f"night {n}" for n in names))]
    rows += [(task, *(_task_cell(nights[n].get("tasks", {}).get(task)) for n in names)) for task in tasks]
    rows.append(("total", *(_seconds(nights[n].get("seconds")) for n in names)))
    for label, _ in NIGHT_FIGURES:
        values = [nights[n].get("figures", {}).get(label) for n in names]
        if any(v is not None for v in values):
            rows.append((label, *(_figure(v) for v in values)))
    return render_rows(rows, numeric_from=1)


def _task_cell(outcome: Mapping[str, Any] | None) -> str:
    if not outcome:
        return "-"
    status = str(outcome.get("status", "?"))
    return f"{_seconds(outcome['seconds'])} {status}" if outcome.get("seconds") is not None else status


def _seconds(value: Any) -> str:
    return f"{value:.1f} s" if isinstance(value, int | float) else "-"


def _figure(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, list | tuple):
        return "..".join(map(str, value)) if len(set(value)) > 1 else str(value[0])
    return str(value)


__all__ = ["best_joint", "first_night", "night_summary", "nights_table"]
