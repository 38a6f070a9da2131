"""Shared test fixtures: the adrank.testing plugin's, under the names the tests use.

``spark`` is the plugin's ``adrank_spark`` (one SparkSession with Delta for the whole
session), ``config`` its ``adrank_config`` (tiny, under this test's folder), and
``tiny_config`` its helper: the suite uses the same fixtures users get. The plugin is
loaded here for runs from the source tree; when adrank is installed with its ``pytest11``
entry point (named ``adrank.testing`` too) pytest finds it registered already.

``local_pipeline_run`` is one local run of the whole tiny pipeline through spark-submit.sh,
shared by the session (``submit`` and ``run_tiny_pipeline`` are its helpers;
``start_pipeline`` starts one to stop or kill).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path
from types import ModuleType

import pytest

from adrank.core.config import Config

pytest_plugins = ["adrank.testing", "pytester"]

REPO = Path(__file__).resolve().parents[1]
TINY_CONF = REPO / "conf" / "tiny.yaml"
SPARK_SUBMIT_SH = REPO / "spark-submit.sh"
PIPELINE_STDOUT = "pipeline.stdout"  # the local pipeline run's stdout, beside its tables and inputs

__all__ = ["PIPELINE_STDOUT", "REPO", "SPARK_SUBMIT_SH", "TINY_CONF", "config", "load_job", "local_pipeline_run",
           "job_command", "run_record", "run_tiny_pipeline", "spark", "start_pipeline", "submit", "tiny_config"]


def tiny_config(root: Path, *overrides: str) -> Config:
    """The tiny test config with storage and inputs under ``root`` (:func:`adrank.testing.tiny_config`)."""
    from adrank.testing import tiny_config as plugin_tiny_config  # not before pytest imports the plugin

    return plugin_tiny_config(root, *overrides)


def load_job(name: str) -> ModuleType:
    """``jobs/<name>.py`` as a module (jobs/ is not a package)."""
    spec = importlib.util.spec_from_file_location(f"{name}_job", REPO / "jobs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_record(stdout: str) -> tuple[Path, dict]:
    """The run record a job's output ends with: the path of its last line, ``record: <path>``, and the JSON there."""
    last_line = stdout.strip().splitlines()[-1]
    assert last_line.startswith("record: "), f"the output does not end with the run record's path: {last_line[:300]}"
    path = Path(last_line.removeprefix("record: "))
    return path, json.loads(path.read_text())


def job_command(job: str, root: Path, job_args: tuple[str, ...] = (), submit_options: tuple[str, ...] = ()) -> list[str]:
    """``spark-submit.sh job`` on the tiny config with storage and inputs under ``root``: ``job_args`` go to the
    job, ``submit_options`` to spark-submit (after ``--driver-memory 768m``)."""
    return [str(SPARK_SUBMIT_SH), job, "--conf-file", str(TINY_CONF),
            "--set", f"storage.root={root / 'tables'}", "--set", f"inputs.root={root / 'inputs'}", *job_args,
            "--", "--driver-memory", "768m", *submit_options]


def submit(job: str, root: Path, *submit_options: str, timeout: int = 600, stdout: list | None = None,
           job_args: tuple[str, ...] = ()) -> dict:
    """Run :func:`job_command` and return its run record (the file its last line names); ``stdout`` gets the lines."""
    result = subprocess.run(job_command(job, root, job_args, submit_options), capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    if stdout is not None:
        stdout.extend(result.stdout.splitlines())
    return run_record(result.stdout)[1]


def start_pipeline(root: Path, log: Path) -> subprocess.Popen:
    """``spark-submit.sh pipeline`` (no dates: a scheduled night) under ``root``, in a session (process group) of
    its own, its output into ``log``: for tests that stop or kill it."""
    return subprocess.Popen(job_command("pipeline", root), stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def run_tiny_pipeline(root: Path, *submit_options: str) -> dict:
    """``generate_data`` then ``pipeline`` under ``root`` (the tiny config's seed); the pipeline's run record.

    The pipeline's stdout is kept in ``root / PIPELINE_STDOUT``.
    """
    submit("generate_data", root, *submit_options)
    lines: list[str] = []
    report = submit("pipeline", root, *submit_options, stdout=lines, timeout=1200)  # every stage, on 2 busy cores
    (root / PIPELINE_STDOUT).write_text("\n".join(lines) + "\n")
    return report


@pytest.fixture(scope="session")
def local_pipeline_run(tmp_path_factory) -> tuple[Path, dict]:
    """One run of the whole tiny pipeline on the local master, shared by the test session.

    Returns ``(root, report)``: tables under ``root / "tables"``, inputs under
    ``root / "inputs"``, the run's stdout in ``root / PIPELINE_STDOUT``, and the pipeline's
    run record. Treat it as read-only: other tests compare against it.
    """
    root = tmp_path_factory.mktemp("local_pipeline")
    return root, run_tiny_pipeline(root)


@pytest.fixture(scope="session")
def spark(adrank_spark):
    """The one SparkSession of the test session (local[2], Delta, tiny settings)."""
    return adrank_spark


@pytest.fixture
def config(adrank_config) -> Config:
    """A tiny config whose tables and inputs live in this test's own folder."""
    return adrank_config
