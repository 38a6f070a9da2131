"""A stopped job ends every process it started, and the next run resumes.

The first tests check :mod:`adrank.runtime.processes` on small real process trees (seconds). The
``signals`` test runs ``spark-submit.sh pipeline`` on the tiny sample data: once both
Horovod ranks of stage-1 training run, the script gets SIGTERM; every process of its tree,
read before the signal (the JVM, the Python driver, Spark's Python workers, Horovod's
launchers and ranks), must be gone within :data:`STOP_DEADLINE_S` and the exit status be
128 + the signal. The next run must skip the built tables and start the stopped task again
(stopped in turn with SIGINT, as Ctrl-C does), and the run after it must finish that task.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from adrank.runtime import processes
from conftest import start_pipeline

STOP_DEADLINE_S = 30
START_TIMEOUT_S = 600  # the JVM, build_tables and the ranks' start, on 2 busy cores
RANK_MODULE = "horovod.runner.run_task"
TRAIN_TASK = "train_pairwise"


# A tree like a stopped job's: under the root (spark-submit.sh), a parent that SIGTERM ends
# (the JVM) whose child runs in a session of its own (a Horovod rank) and ignores SIGTERM, so
# it is orphaned (re-parented to init) when its parent dies; and a child that ignores SIGTERM
# (the blocked driver). Only SIGKILL ends those two.
STUBBORN_TREE = """
import signal, subprocess, sys, time
role = sys.argv[1]
if role in ("orphan", "stubborn"):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
children = {"root": ["parent", "stubborn"], "parent": ["orphan"]}.get(role, [])
for name in children:
    subprocess.Popen([sys.executable, __file__, name], start_new_session=name == "orphan")
open(f"{__file__}.{role}.ready", "w").close()
time.sleep(600)
"""


def run_script(folder: Path, source: str, *args: str, **popen: object) -> subprocess.Popen:
    """``python <folder>/script.py args``: ``source`` written there (its processes start that file again)."""
    script = folder / "script.py"
    script.write_text(source)
    return subprocess.Popen([sys.executable, str(script), *args], **popen)


def stubborn_tree(folder: Path) -> tuple[subprocess.Popen, list[psutil.Process]]:
    """The root process and its three descendants, once all run."""
    root = run_script(folder, STUBBORN_TREE, "root")
    deadline = time.time() + 30
    while len(list(folder.glob("script.py.*.ready"))) < 4:  # each one's handler set, children started
        assert time.time() < deadline, describe(psutil.Process(root.pid).children(recursive=True))
        time.sleep(0.1)
    return root, psutil.Process(root.pid).children(recursive=True)


def test_stop_tree_kills_what_ignores_sigterm_and_follows_orphans(tmp_path):
    root, tree = stubborn_tree(tmp_path)
    try:
        ignoring = {p.pid for p in tree if p.cmdline()[-1] in ("orphan", "stubborn")}
        started = time.monotonic()
        killed = processes.stop_tree(root.pid, grace_s=2.0)
        assert not wait_until_gone(tree, started), describe(tree)
        assert set(killed) == ignoring  # SIGTERM ended the parent; the orphan was still followed
        assert time.monotonic() - started < 10
        assert root.poll() is None  # the root's descendants, never the root itself
    finally:
        root.kill()
        root.wait()


DRIVER_WITH_RANK = """
import os, subprocess, sys, time
if sys.argv[1:] == ["driver"]:
    env = {**os.environ, "ADRANK_DRIVER_PID": str(os.getpid())}
    subprocess.Popen([sys.executable, __file__, "rank"], env=env, start_new_session=True)
    print("ready", flush=True)
    time.sleep(600)
else:
    from adrank.runtime.processes import exit_when_gone
    exit_when_gone(poll_s=0.1)
    time.sleep(600)
"""


def test_a_rank_exits_when_its_driver_is_killed(tmp_path):
    driver = run_script(tmp_path, DRIVER_WITH_RANK, "driver", stdout=subprocess.PIPE, text=True)
    rank: list[psutil.Process] = []
    try:
        assert driver.stdout is not None and driver.stdout.readline() == "ready\n"
        rank = psutil.Process(driver.pid).children()
        assert len(rank) == 1
        time.sleep(1)  # the rank's watch thread started
        driver.kill()  # SIGKILL: the driver cleans up nothing
        driver.wait(timeout=10)
        assert not wait_until_gone(rank, time.monotonic() - STOP_DEADLINE_S + 5)  # gone within 5 s
    finally:
        for p in alive(rank):
            p.kill()


def is_rank(process: psutil.Process) -> bool:
    """A Horovod rank: the Python process running horovod's task module (not the shell around it)."""
    try:
        command = process.cmdline()
    except psutil.Error:
        return False
    return RANK_MODULE in command and "python" in Path(command[0]).name


def is_driver(process: psutil.Process) -> bool:
    """The job's Python driver: the process running ``jobs/pipeline.py``."""
    try:
        command = process.cmdline()
    except psutil.Error:
        return False
    return "python" in Path(command[0]).name and any(arg.endswith("jobs/pipeline.py") for arg in command)


def tree_when_ranks_train(process: subprocess.Popen, log: Path, ranks: int = 2) -> list[psutil.Process]:
    """Wait until ``ranks`` Horovod ranks run under ``process``; return its whole tree then."""
    deadline = time.time() + START_TIMEOUT_S
    while time.time() < deadline:
        assert process.poll() is None, f"the pipeline ended before its ranks started:\n{log.read_text()[-3000:]}"
        tree = psutil.Process(process.pid).children(recursive=True)
        if sum(is_rank(p) for p in tree) >= ranks and f"{TRAIN_TASK:<15} started" in log.read_text():
            time.sleep(2)  # the ranks past their imports, into the rendezvous and training
            return psutil.Process(process.pid).children(recursive=True)
        time.sleep(0.5)
    raise AssertionError(f"no {ranks} ranks in {START_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")


def alive(processes: list[psutil.Process]) -> list[psutil.Process]:
    """Those still running (a zombie has ended; psutil's identity check survives pid reuse)."""
    def running(p: psutil.Process) -> bool:
        try:
            return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False
    return [p for p in processes if running(p)]


def wait_until_gone(processes: list[psutil.Process], since: float) -> list[psutil.Process]:
    """Poll until every process has ended or :data:`STOP_DEADLINE_S` after ``since``; the survivors."""
    while alive(processes) and time.monotonic() - since < STOP_DEADLINE_S:
        time.sleep(0.25)
    return alive(processes)


def describe(processes: list[psutil.Process]) -> str:
    lines = []
    for p in processes:
        try:
            lines.append(f"{p.pid} (parent {p.ppid()}): {' '.join(p.cmdline())[:160]}")
        except psutil.Error:
            pass
    return "\n".join(lines)


def kill_all(process: subprocess.Popen, tree: list[psutil.Process]) -> None:
    """Clean up after a failed assertion: SIGKILL whatever of the run still lives."""
    for p in alive(tree):
        p.kill()
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


def run_id(console_log: Path) -> str:
    """The run id of a spark-submit.sh run, from the log path its console shows."""
    match = re.search(r"_runs/pipeline-(\S+)\.log", console_log.read_text())
    assert match, console_log.read_text()[-3000:]
    return match.group(1)


def stop_and_check(root: Path, log: Path, stop_signal: int) -> None:
    """Start the pipeline, signal spark-submit.sh while the ranks train, check the whole tree ends."""
    process = start_pipeline(root, log)
    tree: list[psutil.Process] = []
    try:
        tree = tree_when_ranks_train(process, log)
        ranks = [p for p in tree if is_rank(p)]
        assert any(is_driver(p) for p in tree), describe(tree)
        sent = time.monotonic()
        os.kill(process.pid, stop_signal)
        process.wait(timeout=STOP_DEADLINE_S + 30)
        survivors = wait_until_gone(tree, sent)
        assert not survivors, (f"{len(survivors)} of {len(tree)} processes ({len(ranks)} ranks) still run "
                               f"{STOP_DEADLINE_S} s after {signal.Signals(stop_signal).name}:\n"
                               f"{describe(survivors)}")
        assert process.returncode == 128 + stop_signal, (process.returncode, log.read_text()[-3000:])
        assert f"pipeline stopped ({signal.Signals(stop_signal).name})" in log.read_text()
        run_log = next((root / "tables" / "_runs").glob(f"pipeline-*{run_id(log)}.log")).read_text()
        assert f'"event": "task_stopped", "task": "{TRAIN_TASK}"' in run_log, run_log[-3000:]
        assert '"event": "job_failed"' not in run_log  # a stop, not a failure: no failed run record
    finally:
        kill_all(process, tree)


@pytest.fixture
def tiny_inputs(adrank_sample_data) -> Path:
    """The folder holding the tiny sample inputs (``inputs/``) and, once run, the tables (``tables/``)."""
    return Path(adrank_sample_data.inputs.root).parent


def resumed_at_the_stopped_task(log: Path) -> None:
    """The run's log shows the built tables skipped and the stopped training task run again."""
    text = log.read_text()
    assert f"{'build_tables':<15} skipped: current" in text, text[-3000:]
    assert f"{TRAIN_TASK:<15} started (no earlier success)" in text, text[-3000:]


@pytest.mark.signals
def test_a_stopped_pipeline_leaves_no_process_and_the_next_run_resumes(tiny_inputs):
    # 1. SIGTERM while the ranks train: every process ends, exit status 143.
    stop_and_check(tiny_inputs, tiny_inputs / "terminated.log", signal.SIGTERM)
    # 2. The next run resumes at the stopped task; SIGINT (Ctrl-C) while its ranks train: the same.
    stop_and_check(tiny_inputs, tiny_inputs / "interrupted.log", signal.SIGINT)
    resumed_at_the_stopped_task(tiny_inputs / "interrupted.log")
    # 3. The run after that resumes there again, and the task now finishes.
    log = tiny_inputs / "rerun.log"
    rerun = start_pipeline(tiny_inputs, log)
    tree: list[psutil.Process] = []
    try:
        deadline = time.time() + START_TIMEOUT_S
        while f"{TRAIN_TASK:<15} done" not in log.read_text():
            assert rerun.poll() is None, f"the rerun ended:\n{log.read_text()[-3000:]}"
            assert time.time() < deadline, f"{TRAIN_TASK} did not finish:\n{log.read_text()[-3000:]}"
            time.sleep(0.5)
        resumed_at_the_stopped_task(log)
        tree = psutil.Process(rerun.pid).children(recursive=True)
        sent = time.monotonic()
        rerun.send_signal(signal.SIGTERM)  # the rest of the pipeline is not this test's
        rerun.wait(timeout=STOP_DEADLINE_S + 30)
        assert not wait_until_gone(tree, sent), describe(tree)
        assert rerun.returncode == 128 + signal.SIGTERM
    finally:
        kill_all(rerun, tree)
