"""Training progress from rank 0 to the driver's console: a small JSON file and a tqdm bar.

Rank 0 (:class:`ProgressWriter`, called after every step) replaces
``<checkpoint dir>/progress.json`` atomically at most every :data:`WRITE_INTERVAL_S`
seconds and at the last step: ``{"stage", "step", "start", "total", "loss", "steps_per_s"}``
(``loss`` is rank 0's loss of that step). The driver (:func:`progress_bar`, around the
launch) polls it and draws a tqdm bar on the console; the checkpoint folder is shared by
the driver and the ranks for both launchers (horovodrun and ``horovod.spark.run``), so
the file is the channel. No TensorFlow, no pyspark: the ranks and the driver import it.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Iterator
from typing import Any, TextIO

from adrank.train.checkpoints import RankSettings, checkpoint_dir

PROGRESS_FILE = "progress.json"
WRITE_INTERVAL_S = 0.5
POLL_INTERVAL_S = 0.25
# tqdm's refresh: every second on a terminal; in a pipe (a log, a test) rarely.
TTY_MININTERVAL_S = 1.0
PIPE_MININTERVAL_S = 10.0


def progress_file(settings: RankSettings) -> str:
    """``<checkpoint dir>/progress.json`` of the stage run."""
    return os.path.join(checkpoint_dir(settings), PROGRESS_FILE)


def write_progress(path: str, record: dict[str, Any]) -> None:
    """Replace ``path`` with ``record`` as JSON, atomically (readers never see half a file)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    temporary = f"{path}.{os.getpid()}.tmp"
    with open(temporary, "w") as out:
        json.dump(record, out)
    os.replace(temporary, path)


def read_progress(path: str) -> dict[str, Any] | None:
    """The last record written, or None (no file yet, or unreadable)."""
    try:
        with open(path) as source:
            record = json.load(source)
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


class ProgressWriter:
    """Rank 0's side: :meth:`update` after each step; writes at most every ``interval`` s."""

    def __init__(self, path: str, stage: str, start: int, total: int,
                 interval: float = WRITE_INTERVAL_S) -> None:
        self.path, self.stage, self.start, self.total, self.interval = path, stage, start, total, interval
        self._began = time.monotonic()
        self._written = float("-inf")

    def update(self, step: int, loss: float | None) -> None:
        """Record ``step`` (1-based, done) and its loss; best effort (never fails the rank)."""
        now = time.monotonic()
        if step < self.total and now - self._written < self.interval:
            return
        elapsed = now - self._began
        record = {"stage": self.stage, "step": step, "start": self.start, "total": self.total,
                  "loss": loss if loss is not None and loss == loss else None,
                  "steps_per_s": round((step - self.start) / elapsed, 3) if elapsed > 0 else None}
        with contextlib.suppress(OSError):
            write_progress(self.path, record)
        self._written = now


def bar_label(settings: RankSettings) -> str:
    """``pairwise``, ``lr``, ``joint dot``...: the stage, and stage 3's interaction module."""
    return f"{settings.stage} {settings.train.interaction}" if settings.stage == "joint" else settings.stage


@contextlib.contextmanager
def progress_bar(settings: RankSettings, total: int, stream: TextIO | None) -> Iterator[None]:
    """A tqdm bar on ``stream`` fed by rank 0's progress file while the block runs (none if None)."""
    path = progress_file(settings)
    with contextlib.suppress(OSError):
        os.remove(path)  # an earlier launch's record is not this one's progress
    if stream is None:
        yield
        return
    from tqdm import tqdm

    tty = stream.isatty()
    bar = tqdm(total=total, desc=bar_label(settings), unit="step", file=stream, leave=True,
               mininterval=TTY_MININTERVAL_S if tty else PIPE_MININTERVAL_S,
               dynamic_ncols=tty, ncols=None if tty else 80, ascii=None if tty else True)
    stop = threading.Event()
    poller = threading.Thread(target=_poll, args=(bar, path, stop), name="adrank-progress", daemon=True)
    poller.start()
    try:
        yield
    finally:
        stop.set()
        poller.join(timeout=5)
        _show(bar, read_progress(path))
        bar.close()


def _poll(bar: Any, path: str, stop: threading.Event) -> None:
    while not stop.wait(POLL_INTERVAL_S):
        _show(bar, read_progress(path))


def _show(bar: Any, record: dict[str, Any] | None) -> None:
    if not record or not isinstance(record.get("step"), int):
        return
    if record.get("start") and bar.n == 0 and record["start"] > 0:
        bar.set_description_str(f"{bar.desc} (resumed at {record['start']})", refresh=False)
    if isinstance(record.get("loss"), float):
        bar.set_postfix_str(f"loss {record['loss']:.4f}", refresh=False)
    if record["step"] > bar.n:
        bar.update(record["step"] - bar.n)


__all__ = ["PROGRESS_FILE", "ProgressWriter", "bar_label", "progress_bar", "progress_file",
           "read_progress", "write_progress"]
