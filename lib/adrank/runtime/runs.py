"""Run identity and the run record every job ends with.

A job's run function returns its figures as a typed, frozen result (a :class:`JobResult`:
rows in, rows written, rows quarantined, metrics); :func:`run_job` puts it into the report
(:meth:`RunReport.record`, the one place a result enters the record) and the report, with
the timings, is written as one JSON object to ``<storage.root>/_runs/<job>-<run id>.json`` (the run record), through
:func:`adrank.core.config.to_json` (credential-looking values redacted, NaN written as null). The
console's last line is ``record: <that path>``; with ``--json`` (every job takes it) the same
JSON follows it as one line on stdout, for machines reading the job's output.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import sys
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from pyspark.sql import SparkSession

from adrank.core.config import Config, to_json
from adrank.core.errors import error_type, explain, summary
from adrank.core.layout import runs_path
from adrank.runtime import console
from adrank.runtime.processes import Stopped, signal_name, stop_on_signals, stopped_by
from adrank.runtime.spark import build_spark
from adrank.storage.delta import write_text_file


def new_run_id() -> str:
    """A sortable, unique run id: UTC time plus a short random suffix."""
    now = datetime.datetime.now(datetime.UTC)
    return f"{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"


def current_run_id() -> str:
    """The id ``spark-submit.sh`` made for this run (``ADRANK_RUN_ID``: its log has it too), else a new one."""
    return console.env_run_id() or new_run_id()


class JobResult(Protocol):
    """What a job's run function returns: its figures as fields of a frozen dataclass."""

    def as_json(self) -> dict[str, Any]:
        """The figures under their keys in the run record (JSON-able: the record's shapes)."""
        ...


@dataclass(frozen=True)
class SavedFigures:
    """A result in its JSON form only: the figures an earlier run saved (a skipped task's)."""

    figures: Mapping[str, Any]

    def as_json(self) -> dict[str, Any]:
        """The saved figures, as they were recorded."""
        return dict(self.figures)


@dataclass
class RunReport:
    """Figures gathered during one job run: the results recorded, the run's own status, the timings."""

    job: str
    run_id: str = field(default_factory=current_run_id)
    figures: dict[str, Any] = field(default_factory=dict)
    timings_s: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def timed(self, step: str) -> Iterator[None]:
        """Time a step; its wall seconds land in ``timings_s[step]``."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings_s[step] = round(time.perf_counter() - start, 3)

    def record(self, result: JobResult | None) -> None:
        """Put ``result``'s figures into the report under their record keys (None: a job without figures)."""
        if result is not None:
            self.figures.update(result.as_json())

    def as_dict(self) -> dict[str, Any]:
        """The JSON-able report."""
        return {"job": self.job, "run_id": self.run_id, **self.figures, "timings_s": self.timings_s}


RECORD_PREFIX = "record: "


def publish_report(spark: SparkSession | None, config: Config, report: RunReport, *,
                   json_line: bool = False) -> str:
    """Store the report under ``_runs`` and say ``record: <path>``; return its JSON line.

    ``json_line`` (a job's ``--json``) prints the JSON line too, last, after the record's path.
    """
    line = to_json(report.as_dict(), sort_keys=True)
    path = runs_path(config, report.job, report.run_id)
    write_text_file(spark, path, line + "\n")
    console.announce_log()
    console.say(f"{RECORD_PREFIX}{path}")
    if json_line:
        console.say(line)
    return line


JobBody = Callable[[SparkSession, Config, RunReport], JobResult | None]
EVENTS = logging.getLogger("adrank.events")
EVENT_PREFIX = "adrank-event"


def log_event(report: RunReport, event: str, **fields: Any) -> None:
    """One structured log line (JSON: time, job, run id, event, fields) in the run's log.

    Under ``spark-submit.sh`` it goes to stderr, which is the run's log file; elsewhere to the
    ``adrank.events`` logger at INFO (silent unless the caller configures logging).
    """
    line = to_json({"ts": datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds"),
                    "job": report.job, "run_id": report.run_id, "event": event, **fields}, sort_keys=False)
    if console.active():  # a spark-submit.sh run: stderr is the run's log
        print(f"{EVENT_PREFIX} {line}", file=sys.stderr, flush=True)
    else:  # a test, a notebook, a platform's scheduler: theirs to route (logging)
        EVENTS.info("%s %s", EVENT_PREFIX, line)


def run_job(job: str, config: Config, body: JobBody, *, debug: bool = False, json_line: bool = False) -> int:
    """:func:`_run_job`, in the run's quiet console when ``spark-submit.sh`` launched it.

    There (``ADRANK_LOG_FILE`` set) the driver's output goes to the run's log and the
    console shows adrank's own lines (:mod:`adrank.runtime.console`); elsewhere nothing changes.
    ``json_line`` (the job's ``--json``) ends the output with the run record as one JSON line.
    SIGTERM or SIGHUP raise :class:`~adrank.runtime.processes.Stopped` in the job (its ``finally``
    blocks end what it started, e.g. the Horovod ranks); the job then prints
    ``<job>: error: stopped by SIGTERM ...`` and returns ``128 + signal``, writing no run
    record and not stopping Spark (the JVM is being stopped too): a stop leaves what a
    kill leaves.
    """
    with console.job_console(job), stop_on_signals():
        try:
            return _run_job(job, config, body, debug=debug, json_line=json_line)
        except Stopped as stop:  # SIGTERM/SIGHUP: what the job started is ended on the way out
            with contextlib.suppress(OSError):  # the console's pipe may have gone with the JVM
                print(f"{job}: error: {stop}: tables are as a kill leaves them; run again to resume",
                      file=sys.stderr, flush=True)
            return stop.exit_status


def _run_job(job: str, config: Config, body: JobBody, *, debug: bool = False, json_line: bool = False) -> int:
    """Build the SparkSession, run ``body``, record its result, publish the report, stop Spark; return 0.

    A failing run still publishes its report, with ``status: failed``, ``error`` (the
    :func:`~adrank.core.errors.explain` line, else the error's type and first line) and
    ``error_type``, prints ``<job>: error: <line>`` on stderr and returns 1 (see
    :func:`exit_on_error`; ``debug`` adds the traceback, and re-raises an error
    ``explain`` does not know). A session that already existed (a platform's, or a
    test's) is left running.
    """
    report = RunReport(job)
    session_was_active = SparkSession.getActiveSession() is not None
    try:
        spark = build_spark(config.spark, f"adrank-{job}")
    except Exception as exc:  # e.g. no Java: pyspark's JAVA_GATEWAY_EXITED
        line = explain(exc)
        record_failure(None, config, report, exc, line, json_line=json_line)
        if line is None and debug:
            raise
        return exit_on_error(job, exc, line, debug)
    log_event(report, "job_started", master=spark.sparkContext.master, storage_root=config.storage.root)
    stop_spark = not session_was_active
    try:
        try:
            with report.timed("total"):
                report.record(body(spark, config, report))
        except (Stopped, Exception) as exc:
            if (stop := stopped_by(exc)) is not None:  # no run record, no Spark call: as a kill
                stop_spark = False
                log_event(report, "job_stopped", signal=signal_name(stop.signal_number))
                raise stop from (None if stop is exc else exc)
            line = explain(exc)
            log_event(report, "job_failed", error=line or summary(exc))
            record_failure(spark, config, report, exc, line, json_line=json_line)
            if line is None and debug:
                raise
            return exit_on_error(job, exc, line, debug)
        report.figures["status"] = "succeeded"
        log_event(report, "job_succeeded", seconds=report.timings_s.get("total"))
        publish_report(spark, config, report, json_line=json_line)
    finally:
        if stop_spark:
            spark.stop()
    return 0


def record_failure(spark: SparkSession | None, config: Config, report: RunReport, exc: BaseException,
                   line: str | None, *, json_line: bool = False) -> None:
    """Publish the failed run's report: ``error`` is ``line`` (the explained cause) or the error's summary."""
    report.figures.update(status="failed", error=(line or summary(exc))[:500], error_type=error_type(exc))
    try:
        publish_report(spark, config, report, json_line=json_line)
    except Exception as publish_error:  # noqa: BLE001 - the run's own error is the one to show
        if spark is not None:
            raise
        print(f"{report.job}: could not write the run report without Spark: {summary(publish_error)}",
              file=sys.stderr, flush=True)


def exit_on_error(job: str, exc: BaseException, line: str | None, debug: bool) -> int:
    """Print ``<job>: error: <line>`` on stderr (the traceback before it with ``debug``); return 1."""
    if debug:
        traceback.print_exception(exc, file=sys.stderr)
    text = line or f"{summary(exc)} (run with --debug for the traceback)"
    print(f"{job}: error: {text}", file=sys.stderr, flush=True)
    return 1
