"""Rank 0's side of the training progress: a small JSON file the driver's bar reads.

Rank 0 (:class:`ProgressWriter`, called after every step) replaces
``<checkpoint dir>/progress.json`` atomically at most every :data:`WRITE_INTERVAL_S`
seconds and at the last step: ``{"stage", "step", "start", "total", "loss", "steps_per_s"}``
(``loss`` is rank 0's loss of that step). The driver's bar
(:func:`adrank.train.progress.progress_bar`) polls it with :func:`read_progress`; the
checkpoint folder is shared by the driver and the ranks for both launchers, so the file
is the channel. No TensorFlow, no pyspark: the ranks and the driver import it.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from typing import Any

from adrank.train.ranks.settings import RankSettings, checkpoint_dir

PROGRESS_FILE = "progress.json"
WRITE_INTERVAL_S = 0.5


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


__all__ = ["PROGRESS_FILE", "WRITE_INTERVAL_S", "ProgressWriter", "progress_file", "read_progress",
           "write_progress"]
