"""A scheduled night killed with SIGKILL resumes at the killed task and ends as an uninterrupted night ends.

Night 1 (full) runs ``pipeline --from --to`` on every sample day but the last. Its storage is
then copied twice. On one copy night 2 runs as cron runs it (``pipeline`` with no dates: the
last day is new, so the build is bounded and the training stages warm-start). On the other
night 2 is killed with SIGKILL (the whole process group: JVM, driver, Spark's workers; the
Horovod ranks exit with their driver) inside ``train_joint``'s incremental run, and the same
command runs again. The rerun skips what finished, runs the killed task and what follows it,
and both copies end with the same tables (every row) and the same registry (versions,
lineage, training-state digests, metrics).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from adrank.core import layout
from conftest import start_pipeline, submit, tiny_config
from tables import PIPELINE_TABLES, assert_same_tables

KILLED_TASK = "train_joint"  # long enough on the tiny config to be killed inside it
NIGHT_TABLES = (*PIPELINE_TABLES, layout.IMPRESSION_IDS)
VOLATILE_METADATA = ("run_id", "created_at")  # when and by which run a version was registered


def kill_during(process: subprocess.Popen, log: Path, task: str, timeout: float = 1500) -> None:
    """Wait for ``task``'s start line, then SIGKILL the whole process group (JVM, driver, workers)."""
    deadline = time.time() + timeout
    while f"{task:<15} started" not in log.read_text():
        assert process.poll() is None, f"the pipeline ended before {task} started:\n{log.read_text()[-3000:]}"
        assert time.time() < deadline, f"{task} did not start in {timeout} s"
        time.sleep(0.5)
    time.sleep(3)
    assert process.poll() is None, f"the pipeline ended during {task}: too fast to kill"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=60)


def registry_of(root: Path) -> dict[str, dict[int, dict]]:
    """Every registered version's metadata under ``root``'s registry (stage -> version -> metadata), the
    storage root written as ``<root>`` and the run's id and time left out."""
    registry = Path(layout.registry_root(tiny_config(root)))
    found: dict[str, dict[int, dict]] = {}
    for metadata_file in sorted(registry.glob("*/v*/metadata.json")):  # joint, lr, pairwise
        text = metadata_file.read_text().replace(str(root), "<root>")
        metadata = {k: v for k, v in json.loads(text).items() if k not in VOLATILE_METADATA}
        found.setdefault(metadata_file.parts[-3], {})[int(metadata_file.parts[-2][1:])] = metadata
    return found


def test_a_night_killed_during_incremental_training_resumes_to_the_uninterrupted_nights_tables_and_registry(
        tmp_path, local_pipeline_run, spark):
    sample = tiny_config(tmp_path).sample
    first = dt.date.fromisoformat(sample.start_date)
    last_of_night_1 = first + dt.timedelta(days=sample.num_days - 2)
    night_1 = tmp_path / "night_1"
    shutil.copytree(local_pipeline_run[0] / "inputs", night_1 / "inputs")  # the same sample data
    submit("pipeline", night_1, timeout=1500, job_args=("--from", str(first), "--to", str(last_of_night_1)))
    uninterrupted, killed = tmp_path / "uninterrupted", tmp_path / "killed"
    for copy in (uninterrupted, killed):
        shutil.copytree(night_1, copy)

    expected = submit("pipeline", uninterrupted, timeout=1500)
    assert expected["tasks"][KILLED_TASK]["status"] == "ran"
    assert expected["joint"]["mode"] == "incremental", expected["joint"].get("mode_reason")

    process = start_pipeline(killed, killed / "killed.log")
    kill_during(process, killed / "killed.log", KILLED_TASK)
    resumed = submit("pipeline", killed, timeout=1500)

    statuses = {name: entry["status"] for name, entry in resumed["tasks"].items()}
    assert statuses == {"build_tables": "skipped", "train_pairwise": "skipped", "embed_catalog": "skipped",
                        "train_lr": "skipped", "train_joint": "ran", "recommend": "ran"}
    # night 1's success is the last one on record: the killed run saved none, so the rerun runs the task for
    # the reason the uninterrupted night did (its new inputs)
    assert resumed["tasks"][KILLED_TASK]["reason"] == expected["tasks"][KILLED_TASK]["reason"]
    assert resumed["tasks"][KILLED_TASK]["reason"].startswith("new ")
    assert resumed["joint"]["mode"] == "incremental", resumed["joint"].get("mode_reason")
    assert_same_tables(uninterrupted / "tables", killed / "tables", NIGHT_TABLES, spark)
    registry, expected_registry = registry_of(killed), registry_of(uninterrupted)
    assert set(registry) == set(expected_registry) and registry["joint"]
    for stage, versions in expected_registry.items():
        assert sorted(registry[stage]) == sorted(versions), stage  # no version left by the killed run
        for version, metadata in versions.items():
            assert registry[stage][version] == metadata, (stage, version)
