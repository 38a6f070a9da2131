"""A pipeline killed during a task resumes at that task and ends with an uninterrupted run's tables."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from conftest import REPO, TINY_CONF
from tables import PIPELINE_TABLES, assert_same_tables
from test_spark_submit import submit

KILLED_TASK = "train_joint"  # long enough on the tiny config to be killed inside it, Delta writes first


def start_pipeline(root: Path, log: Path) -> subprocess.Popen:
    """``spark-submit.sh pipeline`` on the tiny config, in its own process group."""
    command = [str(REPO / "spark-submit.sh"), "pipeline", "--conf-file", str(TINY_CONF),
               "--set", f"storage.root={root / 'tables'}", "--set", f"inputs.root={root / 'inputs'}",
               "--", "--driver-memory", "768m"]
    return subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)


def kill_during(process: subprocess.Popen, log: Path, task: str, timeout: float = 1500) -> None:
    """Wait for ``task``'s start line, then kill the whole process group (JVM, driver, workers)."""
    deadline = time.time() + timeout
    while f"{task:<15} started" not in log.read_text():
        assert process.poll() is None, f"the pipeline ended before {task} started:\n{log.read_text()[-3000:]}"
        assert time.time() < deadline, f"{task} did not start in {timeout} s"
        time.sleep(0.5)
    time.sleep(3)
    assert process.poll() is None, f"the pipeline ended during {task}: too fast to kill"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=60)


def test_a_killed_pipeline_resumes_at_the_killed_task_with_the_same_tables(tmp_path, local_pipeline_run, spark):
    reference_root, _ = local_pipeline_run
    shutil.copytree(reference_root / "inputs", tmp_path / "inputs")  # the same sample data
    killed = start_pipeline(tmp_path, tmp_path / "killed.log")
    kill_during(killed, tmp_path / "killed.log", KILLED_TASK)
    resumed = submit("pipeline", tmp_path, timeout=1500)
    statuses = {name: entry["status"] for name, entry in resumed["tasks"].items()}
    assert statuses == {"build_tables": "skipped", "train_pairwise": "skipped", "embed_catalog": "skipped",
                        "train_lr": "skipped", "train_joint": "ran", "recommend": "ran"}
    assert resumed["tasks"][KILLED_TASK]["reason"] == "no earlier success"
    assert_same_tables(reference_root / "tables", tmp_path / "tables", PIPELINE_TABLES, spark)
    again = submit("pipeline", tmp_path, timeout=900)
    assert {entry["status"] for entry in again["tasks"].values()} == {"skipped"}
    assert again["joint"]["comparison"] == resumed["joint"]["comparison"]  # figures carried from the run
