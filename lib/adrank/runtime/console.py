"""What a person running a job reads: adrank's own lines on the console, everything else in the run's log.

``spark-submit.sh`` makes a run id and a log file (``<storage.root>/_runs/<job>-<run id>.log``,
see :func:`adrank.core.layout.log_path`) and exports them as ``ADRANK_RUN_ID`` and
``ADRANK_LOG_FILE``. :func:`adrank.runtime.runs.run_job` then runs the job inside
:func:`job_console`: with ``ADRANK_LOG_FILE`` set, a :func:`quiet_session` sends file
descriptors 1 and 2 of the Python driver to the log, so whatever the driver and its
children write (Horovod ranks, TensorFlow's C++ logs, warnings, libraries' prints) lands
there, while :func:`say` (adrank's lines, the closing ``record: <path>`` and, with
``--json``, the run record's JSON line) and the training bar
(:func:`console_stream`) write to the console kept aside. The job's ``<job>: error:``
lines written on ``sys.stderr``/``sys.stdout`` reach the console too. With ``--verbose``
(``ADRANK_VERBOSE=1``) the driver's output is shown live as well as logged. Without
``ADRANK_LOG_FILE`` (tests, notebooks, plain ``python jobs/x.py``) nothing is redirected
and :func:`say` is ``print``. The JVM's stderr has its own filter,
:mod:`adrank.runtime.console_filter`. :func:`summary_table` is the pipeline's closing table.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
import termios
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

LOG_FILE_ENV = "ADRANK_LOG_FILE"
RUN_ID_ENV = "ADRANK_RUN_ID"
VERBOSE_ENV = "ADRANK_VERBOSE"
# TensorFlow's C++ INFO notices (oneDNN, CPU features) are noise even in the log; warnings stay.
TF_LOG_LEVEL = "1"
DRAIN_TIMEOUT_S = 2.0
# adrank lines still written with print() that belong on the console (the pipeline's report
# path, until adrank.orchestration.pipeline says it with say()); the job's error line is added per job.
PRINTED_CONSOLE_LINES = ("report: ",)
# How a figure that could not be computed (None or NaN: no ground truth, e.g. category precision
# on a catalog without category_id, cold-start AUC without cold-start rows) is shown, everywhere.
NOT_AVAILABLE = "not available"


@dataclass
class _Session:
    """The console kept aside and the log of one quiet run."""

    job: str
    log_path: str
    verbose: bool
    console: TextIO
    log: TextIO
    log_announced: bool = False
    tee: _Tee | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def say(self, line: str) -> None:
        _flush_std_streams()
        text = line.rstrip("\n") + "\n"
        with self.lock:
            if self.tee is not None:  # through the pipe: in order with the driver's own output
                self.tee.write(text.encode("utf-8", "replace"))
                return
            self.log.write(text)
            self.log.flush()
            self.console.write(text)
            self.console.flush()


_SESSION: _Session | None = None


def say(line: str) -> None:
    """One adrank line for the person at the console (and the run's log)."""
    session = _SESSION
    if session is None:
        print(line, flush=True)
    else:
        session.say(line)


GRAPH_JOBS = ("pipeline", "demo")  # their tasks' tables are in the summary at the end


def say_table(job: str, text: str) -> None:
    """A table of figures a job shows the person; inside a pipeline run it goes to the log only."""
    if job in GRAPH_JOBS:
        print(text, flush=True)
    else:
        say(text)


def announce_log() -> None:
    """``log: <path>`` once per quiet run (before the run record's path); nothing outside one."""
    session = _SESSION
    if session is not None and not session.log_announced:
        session.log_announced = True
        session.say(f"log: {session.log_path}")


def console_stream() -> TextIO | None:
    """The console of a quiet run (for progress bars); the terminal's stderr otherwise, None off a TTY."""
    session = _SESSION
    if session is not None:
        return session.console
    return sys.stderr if sys.stderr.isatty() else None


def active() -> bool:
    """True inside a :func:`quiet_session`."""
    return _SESSION is not None


def env_run_id() -> str | None:
    """The run id that ``spark-submit.sh`` made for this run, if it did."""
    return os.environ.get(RUN_ID_ENV) or None


def env_log_file() -> str | None:
    """The log file that ``spark-submit.sh`` made for this run, if it did."""
    return os.environ.get(LOG_FILE_ENV) or None


def job_console(job: str) -> contextlib.AbstractContextManager[None]:
    """:func:`quiet_session` when ``ADRANK_LOG_FILE`` is set (a ``spark-submit.sh`` run), else nothing."""
    log_path = env_log_file()
    if log_path is None or _SESSION is not None:
        return contextlib.nullcontext()
    return quiet_session(job, log_path, os.environ.get(VERBOSE_ENV) == "1")


@contextlib.contextmanager
def quiet_session(job: str, log_path: str, verbose: bool = False) -> Iterator[None]:
    """File descriptors 1 and 2 to ``log_path`` (and, verbose, the console too) for the block.

    :func:`say` and :func:`console_stream` write to a copy of the original fd 1 meanwhile.
    On exit the descriptors are restored and, unless already said, ``log: <path>`` is said.
    """
    global _SESSION
    os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", TF_LOG_LEVEL)
    _flush_std_streams()
    saved = (os.dup(1), os.dup(2))
    console = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8", errors="replace")
    log = open(log_path, "a", buffering=1, encoding="utf-8", errors="replace")  # noqa: SIM115 - closed below
    tee = _Tee(log_path, console.fileno()) if verbose else None
    target = tee.write_end if tee is not None else log.fileno()
    os.dup2(target, 1)
    os.dup2(target, 2)
    session = _Session(job, log_path, verbose, console, log, tee=tee)
    streams = (sys.stdout, sys.stderr)
    for stream in streams:  # the log is read while it grows: a line as soon as it is written
        with contextlib.suppress(Exception):
            stream.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    if not verbose:  # the error line must reach the person: copy it to the console
        shown = (f"{job}: error:", *PRINTED_CONSOLE_LINES)
        sys.stdout = _ErrorLines(sys.stdout, shown, session)  # type: ignore[assignment]
        sys.stderr = _ErrorLines(sys.stderr, shown, session)  # type: ignore[assignment]
    _SESSION = session
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            announce_log()
        _SESSION = None
        sys.stdout, sys.stderr = streams
        _flush_std_streams()
        if tee is not None:
            tee.drain()
        for fd, copy in zip((1, 2), saved):
            os.dup2(copy, fd)
            os.close(copy)
        if tee is not None:
            tee.close()
        console.close()
        log.close()


class _ErrorLines:
    """A text stream that also copies its lines starting with one of ``prefixes`` to the session's console."""

    def __init__(self, stream: TextIO, prefixes: tuple[str, ...], session: _Session) -> None:
        self._stream, self._prefixes, self._session = stream, prefixes, session
        self._pending = ""
        self._skipping = False  # the current line cannot be one of them

    def write(self, text: str) -> int:
        written = self._stream.write(text)
        *lines, rest = text.split("\n")
        for line in lines:
            whole, self._pending = self._pending + line, ""
            if not self._skipping and whole.startswith(self._prefixes):
                self._stream.flush()
                self._session.console.write(whole + "\n")
                self._session.console.flush()
            self._skipping = False
        if not self._skipping:
            self._pending += rest
            if not any(p.startswith(self._pending[:len(p)]) for p in self._prefixes):
                self._pending, self._skipping = "", True
        return written

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class _Tee:
    """--verbose: a pipe whose bytes a thread copies to the log and to the console, in order."""

    def __init__(self, log_path: str, console_fd: int) -> None:
        self.read_end, self.write_end = os.pipe()
        self._log = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._console = os.dup(console_fd)
        self._thread = threading.Thread(target=self._copy, name="adrank-console-tee", daemon=True)
        self._thread.start()

    def write(self, data: bytes) -> None:
        os.write(1, data)

    def _copy(self) -> None:
        while True:
            try:
                data = os.read(self.read_end, 65536)
            except OSError:
                return
            if not data:
                return
            for fd in (self._log, self._console):
                with contextlib.suppress(OSError):
                    os.write(fd, data)

    def drain(self) -> None:
        """Wait (a little) until the thread has read what is in the pipe."""
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while time.monotonic() < deadline and _pending_bytes(self.read_end) > 0:
            time.sleep(0.02)

    def close(self) -> None:
        os.close(self.write_end)  # children still holding it (rare) keep the thread reading
        self._thread.join(timeout=DRAIN_TIMEOUT_S)
        if not self._thread.is_alive():
            for fd in (self.read_end, self._log, self._console):
                with contextlib.suppress(OSError):
                    os.close(fd)


def _pending_bytes(fd: int) -> int:
    buffer = bytearray(4)
    try:
        fcntl.ioctl(fd, termios.FIONREAD, buffer)
    except OSError:
        return 0
    return int.from_bytes(buffer, sys.byteorder)


def _flush_std_streams() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()


# --------------------------------------------------------------------------------
# The pipeline's closing table
# --------------------------------------------------------------------------------

MODEL_ORDER = ("lr", "oracle", "dot", "product", "dnn")
RECOMMEND_ROWS = (("similar-SKU precision@10", "similar_precision_at_10"),
                  ("query recall@10", "query_recall_at_10"),
                  ("user hit rate@10", "user_hit_rate_at_10"),
                  ("user hit rate@10, feed", "user_hit_rate_at_10_feed"))


def summary_table(report: Mapping[str, Any]) -> str:
    """The end of a pipeline run as plain text: sources, tasks, models, recommendations, report.

    ``report`` is the pipeline's JSON record (its ``sources``, ``tasks`` or ``timings_s``,
    ``joint.comparison``, ``lr``/``pairwise`` metrics, ``recommend.metrics``, ``report``);
    a section whose figures are missing is left out, and a metric that is None or NaN
    (it could not be computed: no ground truth) is "not available".
    """
    sections = [_headline(report), _sources(report), _tasks(report), _models(report),
                _stage_metrics(report), _recommendations(report)]
    path = record_value(report, "report", "path")
    if path:
        sections.append(f"report: {path}")
    return "\n\n".join(s for s in sections if s)


def _headline(report: Mapping[str, Any]) -> str:
    seconds = record_value(report, "timings_s", "total")
    took = f" in {_seconds(seconds)}" if isinstance(seconds, int | float) else ""
    status = report.get("status", "?")
    return f"{report.get('job', 'run')} {report.get('run_id', '')}: {status}{took}".replace("  ", " ")


def _sources(report: Mapping[str, Any]) -> str:
    sources = report.get("sources")
    if not isinstance(sources, Mapping) or not sources:
        return ""
    rows = [("source", "rows in", "rows out", "quarantined")]
    for name, figures in sources.items():
        if isinstance(figures, Mapping):
            rows.append((name, _count(figures.get("input")), _count(figures.get("good")),
                         _count(figures.get("quarantined"))))
    return render_rows(rows, numeric_from=1)


def _tasks(report: Mapping[str, Any]) -> str:
    tasks = report.get("tasks")
    if isinstance(tasks, Mapping) and tasks:
        rows = [("task", "status", "seconds")]
        for name, figures in tasks.items():
            figures = figures if isinstance(figures, Mapping) else {}
            rows.append((name, str(figures.get("status", "?")), _number(figures.get("seconds"), 1)))
        return render_rows(rows, numeric_from=2)
    return ""


def _models(report: Mapping[str, Any]) -> str:
    comparison = record_value(report, "joint", "comparison")
    if not isinstance(comparison, Mapping) or not comparison:
        return ""
    joint = report["joint"]
    best = joint.get("best_module")
    names = [n for n in MODEL_ORDER if n in comparison] + [n for n in comparison if n not in MODEL_ORDER]
    rows = [("model", "AUC", "cold AUC", "log loss", "rows", "cold rows")]
    for name in names:
        row = comparison[name] if isinstance(comparison[name], Mapping) else {}
        label = f"{name} (best)" if name == best else name
        rows.append((label, _metric(row.get("auc")), _metric(row.get("cold_auc")), _metric(row.get("log_loss")),
                     _count(row.get("rows")), _count(row.get("cold_rows"))))
    dates = ", ".join(map(str, joint.get("holdout_dates") or []))
    title = f"stage 3, joint model on the held-out dates {dates}" if dates else "stage 3, joint model"
    return f"{title}:\n{render_rows(rows, numeric_from=1)}"


def _stage_metrics(report: Mapping[str, Any]) -> str:
    lines = []
    pairwise = record_value(report, "pairwise", "metrics")
    if isinstance(pairwise, Mapping):
        lines.append(f"stage 1 pairwise CNN: accuracy {_metric(pairwise.get('pairwise_accuracy'))}, "
                     f"loss {_metric(pairwise.get('pairwise_loss'))}, "
                     f"precision@{pairwise.get('k', 10)} {_metric(pairwise.get('precision_at_10'))} "
                     f"({_count(pairwise.get('pairs'))} pairs, {_count(pairwise.get('skus'))} SKUs)")
    lr = record_value(report, "lr", "metrics")
    if isinstance(lr, Mapping):
        lines.append(f"LR baseline: AUC {_metric(lr.get('auc'))}, cold AUC {_metric(lr.get('cold_auc'))}, "
                     f"log loss {_metric(lr.get('log_loss'))} ({_count(lr.get('rows'))} rows)")
    return "\n".join(lines)


def _recommendations(report: Mapping[str, Any]) -> str:
    metrics = record_value(report, "recommend", "metrics")
    if not isinstance(metrics, Mapping):
        return ""
    rows = [("recommendation", "served", "embedding", "popularity")]
    for label, name in RECOMMEND_ROWS:
        if name in metrics:
            rows.append((label, _metric(metrics.get(name)), _metric(metrics.get(f"{name}_embedding", metrics.get(name))),
                         _metric(metrics.get(f"{name}_popularity"))))
    return render_rows(rows, numeric_from=1) if len(rows) > 1 else ""


def render_rows(rows: Sequence[Sequence[str]], numeric_from: int = 1) -> str:
    """Rows as aligned plain-text columns: the first ``numeric_from`` left-aligned, the rest right."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) if i < numeric_from else cell.rjust(w)
                               for i, (cell, w) in enumerate(zip(row, widths))).rstrip()
                     for row in rows)


def record_value(report: Mapping[str, Any], *keys: str) -> Any:
    """The value at ``keys`` in a nested run record (None when a level is missing or not a mapping)."""
    node: Any = report
    for key in keys:
        if not isinstance(node, Mapping):
            return None
        node = node.get(key)
    return node


def _number(value: Any, digits: int = 4) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        return "-"
    return f"{value:.{digits}f}"


def _metric(value: Any) -> str:
    """A metric with 4 decimals; None or NaN (it could not be computed) as "not available"."""
    number = _number(value)
    return NOT_AVAILABLE if number == "-" else number


def _count(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else "-"


def _seconds(value: float) -> str:
    minutes, seconds = divmod(round(value), 60)
    return f"{minutes} min {seconds} s" if minutes else f"{seconds} s"


__all__ = ["LOG_FILE_ENV", "NOT_AVAILABLE", "RUN_ID_ENV", "VERBOSE_ENV", "active", "announce_log", "console_stream",
           "record_value",
           "env_log_file", "env_run_id", "job_console", "quiet_session", "render_rows", "say", "summary_table"]

