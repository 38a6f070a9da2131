"""A stopped job ends every process it started: the JVM, the Python driver and the Horovod ranks.

Four guards, one per level, so that no process outlives a stop (SIGTERM, SIGINT, SIGHUP)
or the death of the process that started it:

* ``spark-submit.sh`` traps SIGTERM, SIGINT and SIGHUP and runs ``python -m
  adrank.runtime.processes stop <its pid>`` (:func:`stop_tree`): every descendant (the JVM, the
  driver, Spark's Python workers, Horovod's launchers and ranks, which run in sessions of
  their own and so never see a signal sent to the script's process group) gets SIGTERM;
  whatever still runs after :data:`STOP_GRACE_S` gets SIGKILL. The tree is read again
  while waiting, and a process seen once is followed even after it was re-parented to
  init, so a rank whose launcher died first is still ended.
* the driver (:func:`stop_on_signals`, in :func:`adrank.runtime.runs.run_job`) turns SIGTERM
  into :class:`Stopped`, an exception no ``except Exception`` swallows, so ``finally``
  blocks run and the job exits with ``128 + signal`` instead of dying mid-cleanup or,
  blocked in a library, not at all. An error raised while it unwinds (the JVM, stopped at
  the same time, breaks the driver's pipes) is still taken for the stop (:func:`stopped_by`).
* the launcher (:func:`ended_with_block`, around ``horovod.runner.run``) ends the processes
  it started when the launch ends by an exception (a stop, a failed rank).
* a rank (:func:`exit_when_gone`) polls the driver that launched it (``ADRANK_DRIVER_PID``)
  and exits when the driver is gone, even when it was SIGKILLed and could clean up
  nothing.

A stop leaves the tables as a kill does (each Delta commit is atomic; a versioned folder
is published by one rename), and the next run resumes as after any failure.
Stdlib and psutil only: the ranks import it, and the script's trap runs it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from types import FrameType

import psutil

STOP_GRACE_S = 15.0  # SIGTERM, then SIGKILL: the whole stop stays well under 30 s
KILL_WAIT_S = 5.0
POLL_S = 0.2
DRIVER_PID_ENV = "ADRANK_DRIVER_PID"
DRIVER_HOST_ENV = "ADRANK_DRIVER_HOST"
DRIVER_POLL_S = 1.0
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class Stopped(BaseException):  # noqa: N818 - named for what happened, like KeyboardInterrupt
    """The job was asked to stop by a signal; ``exit_status`` is ``128 + signal``."""

    def __init__(self, signal_number: int) -> None:
        self.signal_number = signal_number
        self.exit_status = 128 + signal_number
        super().__init__(f"stopped by {signal_name(signal_number)}")


def signal_name(signal_number: int) -> str:
    """``SIGTERM`` for 15; the number itself for a signal Python does not name."""
    try:
        return signal.Signals(signal_number).name
    except ValueError:
        return str(signal_number)


def descendants(pid: int) -> list[psutil.Process]:
    """The live descendants of ``pid`` (children, grandchildren, ...); none if it is gone."""
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def is_alive(process: psutil.Process) -> bool:
    """Running and not a zombie (a dead child its parent has not reaped yet is gone)."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def send(process: psutil.Process, signal_number: int) -> None:
    """Signal ``process`` if it is still the process it was (psutil checks its start time)."""
    with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
        process.send_signal(signal_number)


def end_processes(found: Sequence[psutil.Process] | None = None, *, tree_of: int | None = None,
                  exclude: frozenset[int] = frozenset(), signal_number: int = signal.SIGTERM,
                  grace_s: float = STOP_GRACE_S) -> list[int]:
    """Send ``signal_number`` to ``found`` and to ``tree_of``'s descendants; SIGKILL what outlives ``grace_s``.

    ``tree_of``'s descendants are read again while waiting (a dying process may start
    another), each new one signalled too; a process is followed by identity, so one
    re-parented to init after its parent died is still waited for and killed.

    Returns:
        The pids that had to be killed with SIGKILL.
    """
    seen: dict[int, psutil.Process] = {}

    def gather() -> None:
        fresh = [*(found or []), *(descendants(tree_of) if tree_of is not None else [])]
        for process in fresh:
            if process.pid not in seen and process.pid not in exclude:
                seen[process.pid] = process
                send(process, signal_number)

    deadline = time.monotonic() + grace_s
    gather()
    while any(is_alive(p) for p in seen.values()) and time.monotonic() < deadline:
        time.sleep(POLL_S)
        gather()
    survivors = [p for p in seen.values() if is_alive(p)]
    for process in survivors:
        send(process, signal.SIGKILL)
    deadline = time.monotonic() + KILL_WAIT_S
    while any(is_alive(p) for p in survivors) and time.monotonic() < deadline:
        time.sleep(POLL_S / 4)
    return [p.pid for p in survivors]


def stop_tree(root: int, signal_number: int = signal.SIGTERM, grace_s: float = STOP_GRACE_S) -> list[int]:
    """Stop every descendant of ``root`` (not ``root``, not this process): see :func:`end_processes`."""
    return end_processes(tree_of=root, exclude=frozenset({os.getpid()}), signal_number=signal_number,
                         grace_s=grace_s)


@contextlib.contextmanager
def ended_with_block(grace_s: float = 5.0) -> Iterator[None]:
    """The processes this one starts inside the block are ended (with their trees) if the block raises.

    Around a launcher whose children outlive an exception in the caller (Horovod's
    middlemen and their ranks run in sessions of their own).
    """
    before = {p.pid for p in descendants(os.getpid())}
    try:
        yield
    except BaseException:
        started = [p for p in descendants(os.getpid()) if p.pid not in before]
        end_processes(started, signal_number=signal.SIGTERM, grace_s=grace_s)
        raise


_received: list[int] = []  # the stop signals this process received while stop_on_signals was on


def _raise_stopped(signal_number: int, frame: FrameType | None) -> None:
    _received.append(signal_number)
    for number in STOP_SIGNALS:  # once: a second signal must not cut the cleanup short
        signal.signal(number, signal.SIG_IGN)
    raise Stopped(signal_number)


def stopped_by(error: BaseException) -> Stopped | None:
    """``error`` as a stop: itself if it is one, a new :class:`Stopped` if a stop signal came
    (an error raised while the stop unwound, e.g. a write to the stopped JVM's pipe, replaced
    it), else None."""
    if isinstance(error, Stopped):
        return error
    return Stopped(_received[0]) if _received else None


@contextlib.contextmanager
def stop_on_signals(signals: Sequence[int] = STOP_SIGNALS) -> Iterator[None]:
    """Inside the block, ``signals`` raise :class:`Stopped` in the main thread (elsewhere: nothing changes).

    Python's default for SIGTERM is to die on the spot, without ``finally`` blocks, and a
    handler a library installed may not end the process at all; :class:`Stopped` unwinds
    the job like an error, so what it started is ended on the way out.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {number: signal.signal(number, _raise_stopped) for number in signals}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        _received.clear()


def driver_environment() -> dict[str, str]:
    """What a launcher adds to its ranks' environment for :func:`exit_when_gone`: this process's pid and host."""
    return {DRIVER_PID_ENV: str(os.getpid()), DRIVER_HOST_ENV: socket.gethostname()}


def exit_when_gone(environ: dict[str, str] | os._Environ[str] | None = None,
                   poll_s: float = DRIVER_POLL_S) -> threading.Thread | None:
    """In a rank: a daemon thread that ends this process when the driver (``ADRANK_DRIVER_PID``) is gone.

    Returns the thread, or None when no driver pid was given (ranks on Spark executors,
    whose lifetime Spark manages), the driver runs on another host (``ADRANK_DRIVER_HOST``),
    or the driver is already gone (then this exits now).
    """
    environ = environ if environ is not None else os.environ
    pid = environ.get(DRIVER_PID_ENV, "")
    if not pid.isdigit() or environ.get(DRIVER_HOST_ENV, socket.gethostname()) != socket.gethostname():
        return None
    try:
        driver = psutil.Process(int(pid))
    except psutil.NoSuchProcess:
        _exit_orphaned(pid)
        return None

    def watch() -> None:
        while is_alive(driver):
            time.sleep(poll_s)
        _exit_orphaned(pid)

    thread = threading.Thread(target=watch, daemon=True, name="adrank-driver-watch")
    thread.start()
    return thread


def _exit_orphaned(pid: str) -> None:
    print(f"rank {os.getpid()}: the driver (pid {pid}) is gone: exiting", file=sys.stderr, flush=True)
    os._exit(128 + signal.SIGTERM)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m adrank.runtime.processes stop PID [--grace S]``: what spark-submit.sh's trap runs (SIGTERM, then SIGKILL)."""
    parser = argparse.ArgumentParser(prog="adrank.runtime.processes", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["stop"])
    parser.add_argument("pid", type=int, help="the process whose descendants to stop (not itself)")
    parser.add_argument("--grace", type=float, default=STOP_GRACE_S,
                        help="seconds before SIGKILL (default: %(default)s)")
    args = parser.parse_args(argv)
    for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # a second Ctrl-C must not cut the stop short
        signal.signal(number, signal.SIG_IGN)
    killed = stop_tree(args.pid, signal.SIGTERM, args.grace)
    if killed:
        print(f"adrank.runtime.processes: {len(killed)} process(es) did not stop in {args.grace:.0f} s: killed",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
