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
import datetime
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pyspark.sql import SparkSession

from adrank.core import layout
from adrank.core.config import Config
from adrank.core.errors import InputError, explain
from adrank.core.errors import summary as summary_of
from adrank.orchestration import freshness
from adrank.orchestration.graph import DEMO_TASKS, PIPELINE_TASKS, Task, downstream_of, task_names
from adrank.runtime.cli import add_date_options, date_range, job_parser, parse_job_args
from adrank.runtime.console import NOT_AVAILABLE, say, summary_table
from adrank.runtime.processes import Stopped, signal_name, stopped_by
from adrank.runtime.runs import RunReport, log_event
from adrank.storage import delta

DateRange = tuple[datetime.date, datetime.date]


@dataclass(frozen=True)
class Selection:
    """What a person asked for: the dates to build and the part of the graph to force."""

    dates: DateRange | None = None
    from_task: str | None = None
    only: tuple[str, ...] = ()

    def forced(self, tasks: tuple[Task, ...]) -> tuple[str, ...] | None:
        """The tasks to run even when current (None: the whole graph, each only when stale)."""
        names = task_names(tasks)
        for name in (*self.only, *([self.from_task] if self.from_task else [])):
            if name not in names:
                raise InputError(f"no task {name!r} in the pipeline; the tasks are: {', '.join(names)}")
        if self.only:
            return tuple(name for name in names if name in self.only)
        if self.from_task:
            return downstream_of(tasks, self.from_task)
        return None

    def build_args(self) -> tuple[str, ...]:
        """The ``build_tables`` arguments for the dates (what its config digest includes)."""
        return ("--from", str(self.dates[0]), "--to", str(self.dates[1])) if self.dates else ()


def pipeline_parser(job: str, description: str) -> argparse.ArgumentParser:
    """The options of ``pipeline`` and ``demo``: the dates, ``--from-task``, ``--only``."""
    parser = job_parser(job, description)
    add_date_options(parser)
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
    return args, config, Selection(date_range(args, parser), args.from_task, only)


TaskBody = Callable[[SparkSession, Config, RunReport, Selection], None]


def _generate_data(spark: SparkSession, config: Config, report: RunReport, selection: Selection) -> None:
    from adrank.sample.run import generate_data

    generate_data(spark, config, report)


def _build_tables(spark: SparkSession, config: Config, report: RunReport, selection: Selection) -> None:
    from adrank.tables.run import build_tables

    build_tables(spark, config, report, selection.dates)


def _train(stage: str) -> TaskBody:
    def train_stage(spark: SparkSession, config: Config, report: RunReport, selection: Selection) -> None:
        from adrank.train.run import train

        train(spark, config, report, stage, None)

    return train_stage


def _embed_catalog(spark: SparkSession, config: Config, report: RunReport, selection: Selection) -> None:
    from adrank.embed.run import embed_catalog

    embed_catalog(spark, config, report)


def _recommend(spark: SparkSession, config: Config, report: RunReport, selection: Selection) -> None:
    from adrank.recommend.run import recommend

    recommend(spark, config, report)


BODIES: dict[str, TaskBody] = {
    "generate_data": _generate_data,
    "build_tables": _build_tables,
    "train_pairwise": _train("pairwise"),
    "embed_catalog": _embed_catalog,
    "train_lr": _train("lr"),
    "train_joint": _train("joint"),
    "recommend": _recommend,
}


def run_pipeline(spark: SparkSession, config: Config, report: RunReport, selection: Selection | None = None) -> None:
    """The ``pipeline`` job: the graph on the inputs under ``inputs.root``."""
    run_graph(spark, config, report, PIPELINE_TASKS, selection or Selection())


def run_demo(spark: SparkSession, config: Config, report: RunReport, selection: Selection | None = None) -> None:
    """The ``demo`` job: the sample data (unless current), then the pipeline."""
    run_graph(spark, config, report, DEMO_TASKS, selection or Selection())


def run_graph(spark: SparkSession, config: Config, report: RunReport, tasks: tuple[Task, ...],
              selection: Selection, bodies: Mapping[str, TaskBody] = BODIES) -> None:
    """Run (or skip) every task in order, then write the HTML report and print the summary.

    ``bodies`` maps each task's name to the function that does its work.
    """
    start = time.perf_counter()
    forced = selection.forced(tasks)
    states: dict[str, dict[str, Any]] = report.figures.setdefault("tasks", {})
    stopped = False
    try:
        for number, task in enumerate(tasks, start=1):
            prefix = f"[{number}/{len(tasks)}] {task.name:<15}"
            if forced is not None and task.name not in forced:
                states[task.name] = {"status": "not selected"}
                say(f"{prefix} not selected")
                continue
            states[task.name] = run_task(spark, config, report, task, bodies[task.name], selection, prefix,
                                         forced=forced is not None)
        report.figures["status"] = "succeeded"  # the report is written before run_job records it
    except (Stopped, Exception) as error:
        if (stop := stopped_by(error)) is not None:
            stopped = True  # a stop leaves what a kill leaves: no report, no summary
            raise stop from (None if stop is error else error)
        report.figures.update(status="failed", error=(explain(error) or summary_of(error))[:500])
        for task in tasks:
            states.setdefault(task.name, {"status": "not run"})
        raise
    finally:
        report.timings_s.setdefault("total", round(time.perf_counter() - start, 3))  # run_job's replaces it
        if not stopped:
            _report_and_summary(spark, config, report, states)


def _report_and_summary(spark: SparkSession, config: Config, report: RunReport,
                        states: Mapping[str, Mapping[str, Any]]) -> None:
    """The run's HTML report (unless an earlier run's still holds: nothing ran), then the summary table."""
    if any(entry.get("status") in ("ran", "failed") for entry in states.values()) or not _reuse_report(
            spark, config, report):
        _write_report(spark, config, report)
    say(summary_table(report.as_dict()))


def run_task(spark: SparkSession, config: Config, report: RunReport, task: Task, body: TaskBody,
             selection: Selection, prefix: str, *, forced: bool) -> dict[str, Any]:
    """Run one task unless its outputs are current; return its entry of ``figures["tasks"]``."""
    args = selection.build_args() if task.name == "build_tables" else ()
    digest = freshness.config_digest(config, task, args)
    inputs = freshness.resource_states(spark, config, task.reads)
    record = freshness.read_record(spark, config, task.name)
    reason = "asked for" if forced else freshness.stale_because(
        record, inputs, digest, freshness.resource_states(spark, config, task.writes))
    if reason is None and record is not None:
        for key, value in record.figures.items():
            report.figures.setdefault(key, value)
        log_event(report, "task_skipped", task=task.name, reads=inputs, from_run=record.run_id)
        say(f"{prefix} skipped: current ({freshness.describe_states(inputs) or 'nothing to read'}; "
            f"from run {record.run_id})")
        return {"status": "skipped", "reason": "current", "from_run": record.run_id}
    log_event(report, "task_started", task=task.name, reason=reason, reads=inputs)
    say(f"{prefix} started ({reason})")
    before = dict(report.figures)
    start = time.perf_counter()
    try:
        with report.timed(f"task_{task.name}"):
            body(spark, config, report, selection)
    except (Stopped, Exception) as error:
        seconds = round(time.perf_counter() - start, 1)
        if (stop := stopped_by(error)) is not None:
            log_event(report, "task_stopped", task=task.name, seconds=seconds, signal=signal_name(stop.signal_number))
            with contextlib.suppress(OSError):  # the console's pipe may have gone with the JVM
                say(f"{prefix} STOPPED after {seconds:.1f} s ({stop}): the next run resumes here")
            raise stop from (None if stop is error else error)
        report.figures["tasks"][task.name] = {"status": "failed", "seconds": seconds, "reason": reason}
        log_event(report, "task_failed", task=task.name, seconds=seconds, error=explain(error) or summary_of(error))
        say(f"{prefix} FAILED after {seconds:.1f} s: {(explain(error) or summary_of(error))[:300]}")
        raise
    seconds = round(time.perf_counter() - start, 1)
    figures = {key: value for key, value in report.figures.items()
               if key not in ("tasks", "status") and (key not in before or before[key] is not value)}
    outputs = freshness.resource_states(spark, config, task.writes)
    freshness.save_record(spark, config, freshness.TaskRecord(task.name, report.run_id, inputs, digest,
                                                              outputs, figures))
    log_event(report, "task_succeeded", task=task.name, seconds=seconds, reads=inputs, writes=outputs)
    say(f"{prefix} done in {seconds:.1f} s" + (f": {headline(task.name, report.figures)}" if figures else ""))
    return {"status": "ran", "reason": reason, "seconds": seconds, "outputs": outputs}


def headline(task: str, figures: dict[str, Any]) -> str:
    """The key figures of a finished task, in a few words."""
    try:
        return HEADLINES[task](figures)
    except (KeyError, TypeError, ValueError):
        return ""


def _rows(figures: dict[str, Any]) -> str:
    sources = figures["sources"]
    total = {kind: sum(row[kind] for row in sources.values()) for kind in ("input", "good", "quarantined")}
    return f"{total['input']} rows in, {total['good']} good, {total['quarantined']} quarantined"


def _figure(value: Any, digits: int) -> str:
    """A metric, or "not available" when it could not be computed (None, NaN)."""
    number = float(value) if isinstance(value, int | float) and not isinstance(value, bool) else math.nan
    return NOT_AVAILABLE if math.isnan(number) else f"{number:.{digits}f}"


def _comparison(figures: dict[str, Any]) -> str:
    joint = figures["joint"]
    best, lr = joint["comparison"][joint["best_module"]], joint["comparison"]["lr"]
    return (f"best {joint['best_module']}: AUC {_figure(best['auc'], 4)} (LR {_figure(lr['auc'], 4)}), "
            f"cold start {_figure(best.get('cold_auc'), 4)} (LR {_figure(lr.get('cold_auc'), 4)})")


def _recommendations(figures: dict[str, Any]) -> str:
    found = figures["recommend"]["metrics"]
    return (f"similar P@10 {_figure(found.get('similar_precision_at_10'), 3)}, query recall@10 "
            f"{_figure(found.get('query_recall_at_10'), 3)}, user hit@10 {_figure(found.get('user_hit_rate_at_10'), 3)}")


HEADLINES: dict[str, Callable[[dict[str, Any]], str]] = {
    "generate_data": lambda f: f"{f['generate_data']['good_rows']['click_log']} impressions, "
                               f"{f['generate_data']['good_rows']['catalog']} SKUs",
    "build_tables": _rows,
    "train_pairwise": lambda f: f"model v{f['pairwise']['model_version']}, pairwise accuracy "
                                f"{f['pairwise']['metrics']['pairwise_accuracy']:.4f}",
    "embed_catalog": lambda f: f"{f['embed_catalog']['skus_embedded']} of {f['embed_catalog']['skus_total']} "
                               f"SKUs embedded ({f['embed_catalog']['mode']})",
    "train_lr": lambda f: f"model v{f['lr']['model_version']}, AUC {f['lr']['metrics']['auc']:.4f}",
    "train_joint": _comparison,
    "recommend": _recommendations,
}


def _reuse_report(spark: SparkSession, config: Config, report: RunReport) -> bool:
    """A run that ran nothing points at the latest HTML report (it shows the same outputs)."""
    latest = layout.reports_path(config, "latest")
    if not delta.path_exists(spark, latest):
        return False
    report.figures["report"] = {"path": latest, "reused": True}
    return True


def _write_report(spark: SparkSession, config: Config, report: RunReport) -> None:
    """The HTML report of the run so far; a failure to write it is one line, never the run's error."""
    from adrank.report.run import write_report

    try:
        with report.timed("report"):
            path = write_report(spark, config, report.as_dict())
    except Exception as error:  # noqa: BLE001 - the report must never hide the run's own outcome
        report.figures["report"] = {"error": f"{type(error).__name__}: {error}".splitlines()[0][:300]}
        say(f"pipeline: the HTML report was not written: {report.figures['report']['error']}")
        return
    report.figures["report"] = {"path": path}
