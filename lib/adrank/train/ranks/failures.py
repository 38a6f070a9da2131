"""The one-line reason a failed rank leaves for the launcher's message.

Contract: a rank that fails writes ``<ExceptionType>: <first line>`` into
``<checkpoint dir>/failure-rank<r>.txt`` (:func:`record_failure`; the watchdog writes its
own line with :func:`write_failure`); the driver reads them after a failed launch
(:func:`recorded_failures`) and removes an earlier launch's before the next
(:func:`clear_failures`). No pyspark, no TensorFlow: ranks and the driver import it.
"""

from __future__ import annotations

import contextlib
import os
import re

from adrank.train.ranks.settings import RankSettings, checkpoint_dir


def failure_file(settings: RankSettings, rank: int) -> str:
    """Where a rank leaves the one-line reason it failed (read by the launcher)."""
    return os.path.join(checkpoint_dir(settings), f"failure-rank{rank}.txt")


def write_failure(path: str, line: str) -> None:
    """Best effort: one line into a failure file (its folder made if missing)."""
    with contextlib.suppress(OSError):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as out:
            out.write(line + "\n")


def record_failure(settings: RankSettings, rank: int, exc: BaseException) -> None:
    """``<ExceptionType>: <first line>`` into :func:`failure_file`."""
    first = (str(exc).strip().splitlines() or [""])[0][:300]
    write_failure(failure_file(settings, rank), f"{type(exc).__name__}: {first}")


def recorded_failures(settings: RankSettings) -> dict[int, str]:
    """The failure lines ranks left for this stage/data/config, by rank."""
    directory = checkpoint_dir(settings)
    found = {}
    for name in sorted(os.listdir(directory)) if os.path.isdir(directory) else []:
        match = re.fullmatch(r"failure-rank(\d+)\.txt", name)
        if match:
            with open(os.path.join(directory, name)) as text:
                found[int(match.group(1))] = text.read().strip()
    return found


def clear_failures(settings: RankSettings) -> None:
    """Removes the failure lines of an earlier launch."""
    for rank in recorded_failures(settings):
        with contextlib.suppress(OSError):
            os.remove(failure_file(settings, rank))


__all__ = ["clear_failures", "failure_file", "record_failure", "recorded_failures", "write_failure"]
