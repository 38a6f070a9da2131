"""A rank's step watchdog: the rank exits when no step finishes within the timeout.

Contract: :class:`Watchdog` starts a daemon thread (none when the timeout is 0); the loop
calls :meth:`Watchdog.beat` after every step. The first step gets
:data:`FIRST_STEP_TIMEOUT_FACTOR` times longer (it traces the step functions and may build
big towers). On a timeout the rank writes a one-line reason for the launcher
(:func:`adrank.train.ranks.failures.write_failure`) and exits with status 75: a hung peer
or collective ends the job instead of hanging it.
"""

from __future__ import annotations

import os
import sys
import threading
import time

from adrank.train.ranks.failures import write_failure

# The first step traces the step function(s) and may build big towers: it gets longer.
FIRST_STEP_TIMEOUT_FACTOR = 4.0
EXIT_STATUS = 75


class Watchdog:
    """Ends this rank when no step finishes within the timeout (0 disables)."""

    def __init__(self, timeout_s: float, stage: str, rank: int, failure_path: str) -> None:
        self.timeout_s = timeout_s
        self.stage, self.rank, self.failure_path = stage, rank, failure_path
        self._last = time.monotonic()
        self._first = True
        self._stop = threading.Event()
        if timeout_s > 0:
            threading.Thread(target=self._watch, daemon=True, name="adrank-watchdog").start()

    def beat(self) -> None:
        self._last = time.monotonic()
        self._first = False

    def stop(self) -> None:
        self._stop.set()

    def _watch(self) -> None:
        while not self._stop.wait(min(5.0, self.timeout_s / 4)):
            limit = self.timeout_s * (FIRST_STEP_TIMEOUT_FACTOR if self._first else 1.0)
            if time.monotonic() - self._last > limit:
                line = f"watchdog: no step finished in {limit:.0f} s (a hung peer or collective?)"
                print(f"adrank stage {self.stage} rank {self.rank} {line}; exiting",
                      file=sys.stderr, flush=True)
                write_failure(self.failure_path, line)
                os._exit(EXIT_STATUS)


__all__ = ["EXIT_STATUS", "FIRST_STEP_TIMEOUT_FACTOR", "Watchdog"]
