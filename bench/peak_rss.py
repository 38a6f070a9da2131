"""Run a command and report the peak resident memory of its whole process tree.

``time -v`` reports only the largest single process; adrank's budget (12 GB) is for the
Spark JVM, Python workers and every Horovod rank together, so this samples the sum of
RSS over the command and all its descendants every 0.2 s.

Usage: ``.venv/bin/python bench/peak_rss.py -- ./spark-submit.sh demo``; prints one JSON
line (peak GB, wall seconds, exit status) on stderr after the command's own output.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import psutil


def tree_rss(process: psutil.Process) -> int:
    """Sum of RSS bytes of a process and all its descendants (vanished ones count 0)."""
    total = 0
    for member in [process, *process.children(recursive=True)]:
        try:
            total += member.memory_info().rss
        except psutil.Error:
            continue
    return total


def main(argv: list[str]) -> int:
    """Run ``argv`` (after an optional ``--``), sample its tree RSS, print the peak."""
    command = argv[1:] if argv and argv[0] == "--" else argv
    start = time.perf_counter()
    child = subprocess.Popen(command)
    watched = psutil.Process(child.pid)
    peak = 0
    while child.poll() is None:
        try:
            peak = max(peak, tree_rss(watched))
        except psutil.Error:
            pass
        time.sleep(0.2)
    figures = {
        "peak_rss_gb": round(peak / 2**30, 2),
        "wall_s": round(time.perf_counter() - start, 1),
        "exit_status": child.returncode,
        "command": " ".join(command),
    }
    print(json.dumps(figures), file=sys.stderr)
    return child.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
