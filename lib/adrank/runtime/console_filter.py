"""The filter between the Spark JVM's stderr and the terminal: the log gets the lines, the person the bar.

``spark-submit.sh`` runs the JVM with ``2> >(python -u -m adrank.runtime.console_filter LOG --job JOB)``.
Everything the JVM writes on stderr (log4j lines, JVM notices, the stderr of local Python
workers: PIL and Petastorm warnings) is appended to ``LOG``. The terminal's stderr gets
only Spark's console progress bar (``\\r[Stage N:==>  (a + b) / c]\\r``, cleared with
``\\r`` + spaces + ``\\r``; kept out of the log) and the lines a person must see: the
job's ``<job>: error: ...`` line and spark-submit's own ``Error: ...`` lines. With
``--verbose`` every line reaches the terminal too.

Stdlib only (it starts before, and outlives, the job); it ignores SIGINT and SIGTERM so
that a stopped JVM's last lines (and the job's ``stopped`` line) still reach the log and
the console, and ends at end of input (``spark-submit.sh``'s stop kills it if that never
comes).
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
from collections.abc import Callable, Sequence
from typing import BinaryIO

# A progress bar update: \r, the stages' bars (or the blanks that clear them), \r.
PROGRESS = re.compile(rb"\r(\[Stage [^\r\n]*\]| *)\r")
# What a partial progress segment can look like while its closing \r is still to come.
PROGRESS_PREFIX = re.compile(rb"\r(\[(S(t(a(g(e( [^\r\n]*)?)?)?)?)?)?| *)\Z")
ALWAYS_SHOWN = (b"Error: ", b'Exception in thread "main"')
READ_SIZE = 65536


class ConsoleFilter:
    """Splits a byte stream into progress-bar updates and lines; routes each (see the module doc)."""

    def __init__(self, log: BinaryIO, terminal: Callable[[bytes], object], job: str = "",
                 verbose: bool = False) -> None:
        self.log, self.terminal, self.verbose = log, terminal, verbose
        self.shown = ALWAYS_SHOWN + ((f"{job}: error:".encode(),) if job else ())
        self.buffer = b""
        self.bar_up = False  # a bar is on the terminal's current line

    def feed(self, data: bytes) -> None:
        """Route every complete segment of ``data`` (plus what was left from before)."""
        self.buffer += data
        while self.buffer:
            taken = self._take(final=False)
            if not taken:
                break
        self.log.flush()

    def close(self) -> None:
        """End of input: the rest (a last line without newline) goes out as a line."""
        while self.buffer and self._take(final=True):
            pass
        if self.bar_up:
            self.terminal(b"\n")
            self.bar_up = False
        self.log.flush()

    def _take(self, final: bool) -> bool:
        buffer = self.buffer
        if buffer.startswith(b"\r"):
            match = PROGRESS.match(buffer)
            if match:
                self.buffer = buffer[match.end():]
                self._progress(match.group(0), cleared=not match.group(1).strip())
                return True
            if not final and PROGRESS_PREFIX.match(buffer):
                return False  # maybe a bar whose end has not arrived yet
        end = buffer.find(b"\n")
        if end < 0:
            if not final:
                return False
            end = len(buffer) - 1
        line, self.buffer = buffer[:end + 1], buffer[end + 1:]
        self._line(line if line.endswith(b"\n") else line + b"\n")
        return True

    def _progress(self, segment: bytes, cleared: bool) -> None:
        if cleared and not self.bar_up:
            return
        self.terminal(segment)
        self.bar_up = not cleared

    def _line(self, line: bytes) -> None:
        self.log.write(line)
        text = line.lstrip(b"\r")
        if self.verbose or text.startswith(self.shown):
            if self.bar_up:  # clear the bar first: the line would land on top of it
                self.terminal(b"\r" + b" " * 100 + b"\r")
                self.bar_up = False
            self.terminal(text)


def run(source: int, log_path: str, job: str, verbose: bool, target: int) -> None:
    """Filter the file descriptor ``source`` into ``log_path`` and ``target`` until end of input."""

    def terminal(data: bytes) -> None:
        try:
            os.write(target, data)
        except OSError:
            pass  # the terminal went away: the log still gets everything

    with open(log_path, "ab") as log:
        filtered = ConsoleFilter(log, terminal, job, verbose)
        while True:
            try:
                data = os.read(source, READ_SIZE)
            except InterruptedError:
                continue
            if not data:
                break
            filtered.feed(data)
        filtered.close()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m adrank.runtime.console_filter LOG [--job JOB] [--verbose]``: stdin to LOG and stderr."""
    parser = argparse.ArgumentParser(prog="adrank.runtime.console_filter", description=__doc__.splitlines()[0])
    parser.add_argument("log", help="the run's log file (appended to)")
    parser.add_argument("--job", default="", help="pass this job's '<job>: error:' lines")
    parser.add_argument("--verbose", action="store_true", help="pass every line")
    args = parser.parse_args(argv)
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, signal.SIG_IGN)
    run(sys.stdin.fileno(), args.log, args.job, args.verbose, sys.stderr.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main())
