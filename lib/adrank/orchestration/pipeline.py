"""The ``pipeline`` and ``demo`` jobs: run the task graph of :mod:`adrank.orchestration.graph`, skipping what is current.

Tasks run in graph order, one at a time, in one SparkSession. Before each task the runner
reads the state of what it reads and writes (:mod:`adrank.orchestration.freshness`); a task whose last
success saw the same inputs, config and outputs is skipped, and its figures from that run
are carried into this run's report. A task that fails ends the run (the tasks after it
do not run); rerunning the pipeline skips what finished and resumes at the failed task.
A stopped run (:class:`adrank.runtime.processes.Stopped`: SIGTERM, or ``spark-submit.sh`` stopped)
says which task it stopped in and writes neither the report nor the summary, and the
next run resumes at that task, as after a failure.
``--from-task T`` runs T and every task downstream of it, ``--only T1,T2`` just those,
both even when current. Each task prints one line as it starts and one as it ends; the
run ends with the HTML report (``<storage.root>/_reports/``) and a summary table.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pyspark.sql import SparkSession

from adrank.core import layout
from adrank.core.config import Config
from adrank.core.errors import explain
from adrank.core.errors import summary as summary_of
from adrank.orchestration import freshness, nights
from adrank.orchestration.graph import DEMO_TASKS, PIPELINE_TASKS, Task, forced_tasks
from adrank.orchestration.selection import Selection
from adrank.runtime.cli import add_date_options, date_range, job_parser, parse_job_args
from adrank.runtime.console import say, summary_table
from adrank.runtime.processes import Stopped, signal_name, stopped_by
from adrank.runtime.runs import JobResult, RunReport, SavedFigures, log_event, new_run_id
from adrank.storage import delta

__all__ = ["HtmlReport", "Selection", "TaskOutcome", "headline", "pipeline_parser", "pipeline_selection", "run_demo", "run_graph",
           "run_pipeline", "run_task"]


@dataclass(frozen=True)
class TaskOutcome:
    """How one task of a run went: its entry of the run record's ``tasks``.

    ``status`` is ``ran``, ``skipped`` (current: ``from_run`` made its outputs), ``failed``,
    ``not selected`` or ``not run`` (after a failure); ``reason`` says why it ran.
    """

    status: str
    reason: str | None = None
    seconds: float | None = None
    outputs: freshness.ResourceStates | None = None
    from_run: str | None = None

    def as_json(self) -> dict[str, Any]:
        """The record's entry: the status and what is known of the rest."""
        fields = {"reason": self.reason, "seconds": self.seconds, "outputs": self.outputs, "from_run": self.from_run}
        return {"status": self.status, **{key: value for key, value in fields.items() if value is not None}}


def pipeline_parser(job: str, description: str) -> argparse.ArgumentParser:
    """The options of ``pipeline`` and ``demo``: the dates, ``--from-task``, ``--only``."""
    parser = job_parser(job, description)
    add_date_options(parser)
    parser.add_argument("--all-dates", action="store_true",
                        help="build every input date (default without dates: the new dates, as a night)")
    parser.add_argument("--from-task", metavar="TASK",
                        help="run TASK and every task downstream of it, even when current")
    parser.add_argument("--only", metavar="TASK[,TASK]", default="",
                        help="run just these tasks (comma-separated), even when current")
    return parser


def pipeline_selection(parser: argparse.ArgumentParser,
                       argv: Sequence[str] | None) -> tuple[argparse.Namespace, Config, Selection]:
    """Parse a pipeline job's arguments: ``(args, config, selection)``."""
    args, config = parse_job_args(parser, argv)
    if args.from_task and args.only:
        parser.error("give --from-task or --only, not both")
    only = tuple(name.strip() for name in args.only.split(",") if name.strip())
    dates = date_range(args, parser)
    if args.all_dates and dates is not None:
        parser.error("give --all-dates or dates, not both")
    return args, config, Selection(dates, args.from_task, only, args.all_dates)


def run_pipeline(spark: SparkSession, config: Config, report: RunReport, selection: Selection | None = None) -> None:
    """The ``pipeline`` job: the graph on the inputs under ``inputs.root``."""
    run_graph(spark, config, report, PIPELINE_TASKS, selection or Selection())


def run_demo(spark: SparkSession, config: Config, report: RunReport, selection: Selection | None = None) -> None:
    """The ``demo`` job: the sample data (unless current), then the pipeline; on fresh storage as two nights
    (:mod:`adrank.orchestration.nights`): all days but the last, then the last as a scheduled night."""
    selection = selection or Selection()
    built = freshness.table_version(spark, layout.table_path(config, layout.TRAINING_EXAMPLES)) is not None
    first = nights.first_night(config, selection, built)
    if first is None or first.dates is None:
        run_graph(spark, config, report, DEMO_TASKS, selection)
        return
    night_1 = RunReport(report.job, new_run_id())  # its own id: tables and records tell the nights apart
    say(f"demo night 1: {first.dates[0]}..{first.dates[1]}, every day but the last (a first, full run)")
    try:
        run_graph(spark, config, night_1, DEMO_TASKS, first)
    except (Stopped, Exception):
        report.figures.update(night_1.figures)  # the record shows where night 1 failed
        raise
    say("demo night 2: the last day arrives; the pipeline runs as a scheduled night")
    try:
        run_graph(spark, config, report, PIPELINE_TASKS, selection)
    finally:
        ran = {"1": nights.night_summary(night_1.as_dict()), "2": nights.night_summary(report.as_dict())}
        report.figures["nights"] = ran
    say(f"the two nights:\n{nights.nights_table(ran)}")


def run_graph(spark: SparkSession, config: Config, report: RunReport, tasks: tuple[Task, ...],
              selection: Selection) -> None:
    """Run (or skip) every task in order, then write the HTML report and print the summary.

    Each task's result (or, skipped, the figures its last success saved) goes into the report
    as it finishes; the report's ``tasks`` says how each went, even when one fails.
    """
    start = time.perf_counter()
    forced = forced_tasks(tasks, selection)
    outcomes: dict[str, TaskOutcome] = {}
    stopped = False
    try:
        for number, task in enumerate(tasks, start=1):
            prefix = f"[{number}/{len(tasks)}] {task.name:<15}"
            if forced is not None and task.name not in forced:
                outcomes[task.name] = TaskOutcome("not selected")
                say(f"{prefix} not selected")
                continue
            run_task(spark, config, report, task, selection, prefix, outcomes, forced=forced is not None)
        report.figures["status"] = "succeeded"  # the report is written before run_job records it
    except (Stopped, Exception) as error:
        if (stop := stopped_by(error)) is not None:
            stopped = True  # a stop leaves what a kill leaves: no report, no summary
            raise stop from (None if stop is error else error)
        report.figures.update(status="failed", error=(explain(error) or summary_of(error))[:500])
        for task in tasks:
            outcomes.setdefault(task.name, TaskOutcome("not run"))
        raise
    finally:
        report.figures["tasks"] = {name: outcome.as_json() for name, outcome in outcomes.items()}
        report.timings_s.setdefault("total", round(time.perf_counter() - start, 3))  # run_job's replaces it
        if not stopped:
            _report_and_summary(spark, config, report, outcomes)


def _report_and_summary(spark: SparkSession, config: Config, report: RunReport,
                        outcomes: Mapping[str, TaskOutcome]) -> None:
    """The run's HTML report (unless an earlier run's still holds: nothing ran), then the summary table."""
    if any(outcome.status in ("ran", "failed") for outcome in outcomes.values()) or not _reuse_report(
            spark, config, report):
        _write_report(spark, config, report)
    say(summary_table(report.as_dict()))


def run_task(spark: SparkSession, config: Config, report: RunReport, task: Task, selection: Selection,
             prefix: str, outcomes: dict[str, TaskOutcome], *, forced: bool) -> TaskOutcome:
    """Run one task unless its outputs are current; its result goes into the report.

    How it went lands in ``outcomes[task.name]`` (a failure's too, before its error is
    raised on) and is returned.
    """
    if task.body is None:
        raise ValueError(f"task {task.name!r} has no body to run")
    digest, args = freshness.config_digest(config, task), task.selection_args(selection)
    inputs = freshness.resource_states(spark, config, task.reads)
    record = freshness.read_record(spark, config, task.name)
    reason = "asked for" if forced else freshness.stale_because(
        record, inputs, digest, freshness.resource_states(spark, config, task.writes), args)
    if reason is None and record is not None:
        report.record(SavedFigures(record.figures))
        log_event(report, "task_skipped", task=task.name, reads=inputs, from_run=record.run_id)
        say(f"{prefix} skipped: current ({freshness.describe_states(inputs) or 'nothing to read'}; "
            f"from run {record.run_id})")
        outcomes[task.name] = TaskOutcome("skipped", "current", from_run=record.run_id)
        return outcomes[task.name]
    log_event(report, "task_started", task=task.name, reason=reason, reads=inputs)
    say(f"{prefix} started ({reason})")
    start = time.perf_counter()
    try:
        with report.timed(f"task_{task.name}"):
            result = task.body(spark, config, report, selection)
    except (Stopped, Exception) as error:
        seconds = round(time.perf_counter() - start, 1)
        if (stop := stopped_by(error)) is not None:
            log_event(report, "task_stopped", task=task.name, seconds=seconds, signal=signal_name(stop.signal_number))
            with contextlib.suppress(OSError):  # the console's pipe may have gone with the JVM
                say(f"{prefix} STOPPED after {seconds:.1f} s ({stop}): the next run resumes here")
            raise stop from (None if stop is error else error)
        log_event(report, "task_failed", task=task.name, seconds=seconds, error=explain(error) or summary_of(error))
        say(f"{prefix} FAILED after {seconds:.1f} s: {(explain(error) or summary_of(error))[:300]}")
        outcomes[task.name] = TaskOutcome("failed", reason, seconds)
        raise
    seconds = round(time.perf_counter() - start, 1)
    report.record(result)
    outputs = freshness.resource_states(spark, config, task.writes)
    freshness.save_record(spark, config, freshness.TaskRecord(task.name, report.run_id, inputs, digest, outputs,
                                                              result.as_json() if result is not None else {},
                                                              list(args)))
    log_event(report, "task_succeeded", task=task.name, seconds=seconds, reads=inputs, writes=outputs)
    said = headline(task, result) if result is not None else ""
    say(f"{prefix} done in {seconds:.1f} s" + (f": {said}" if said else ""))
    outcomes[task.name] = TaskOutcome("ran", reason, seconds, outputs)
    return outcomes[task.name]


def headline(task: Task, result: JobResult) -> str:
    """The key figures of a finished task, in a few words ("" when its result lacks them)."""
    try:
        return task.headline(result)
    except (KeyError, TypeError, ValueError, AttributeError):
        return ""


@dataclass(frozen=True)
class HtmlReport:
    """The run's HTML report: where it is (``reused``: an earlier run's, nothing ran), or why it is not."""

    path: str | None = None
    reused: bool = False
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        """The run record's ``report``."""
        if self.error is not None:
            return {"report": {"error": self.error}}
        return {"report": {"path": self.path, **({"reused": True} if self.reused else {})}}


def _reuse_report(spark: SparkSession, config: Config, report: RunReport) -> bool:
    """A run that ran nothing points at the latest HTML report (it shows the same outputs)."""
    latest = layout.reports_path(config, "latest")
    if not delta.path_exists(spark, latest):
        return False
    report.record(HtmlReport(latest, reused=True))
    return True


def _write_report(spark: SparkSession, config: Config, report: RunReport) -> None:
    """The HTML report of the run so far; a failure to write it is one line, never the run's error."""
    from adrank.report.run import write_report

    try:
        with report.timed("report"):
            path = write_report(spark, config, report.as_dict())
    except Exception as error:  # noqa: BLE001 - the report must never hide the run's own outcome
        failed = HtmlReport(error=f"{type(error).__name__}: {error}".splitlines()[0][:300])
        report.record(failed)
        say(f"pipeline: the HTML report was not written: {failed.error}")
        return
    report.record(HtmlReport(path))
