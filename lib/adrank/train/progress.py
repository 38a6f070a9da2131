"""Training progress on the driver's console: a tqdm bar fed by rank 0's progress file.

Rank 0 writes ``<checkpoint dir>/progress.json`` (:mod:`adrank.train.ranks.progress`); the
driver (:func:`progress_bar`, around the launch) polls it and draws a tqdm bar on the
console; the checkpoint folder is shared by the driver and the ranks for both launchers
(horovodrun and ``horovod.spark.run``), so the file is the channel. No TensorFlow, no
pyspark.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from typing import Any, TextIO

from adrank.train.ranks.progress import progress_file, read_progress
from adrank.train.ranks.settings import RankSettings

POLL_INTERVAL_S = 0.25
# tqdm's refresh: every second on a terminal; in a pipe (a log, a test) rarely.
TTY_MININTERVAL_S = 1.0
PIPE_MININTERVAL_S = 10.0


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


__all__ = ["bar_label", "progress_bar"]
