"""The scheduled jobs mirror the task graph: ``databricks.yml`` and ``conf/databricks_job.json``.

Both are read with the Databricks SDK's ``JobSettings.from_dict`` (the Jobs API 2.1 shape,
which a bundle's job resource shares once its ``${...}`` references are resolved) and
checked against :data:`adrank.orchestration.graph.PIPELINE_TASKS` by one function, :func:`job_problems`,
which returns what is wrong (nothing, for a job that mirrors the graph). No Spark.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from databricks.sdk.service.jobs import JobSettings, PauseStatus

from adrank.core.config import load_config
from adrank.orchestration.graph import GPU, PIPELINE_TASKS, Task, edges, task_names

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "databricks.yml"
JOB_JSON = REPO / "conf" / "databricks_job.json"
CONF_FILE = "conf/cluster.yaml"
# The bundle's own substitutions, as `databricks bundle validate` would fill them in (dev).
BUNDLE_FIELDS = {
    "workspace.file_path": "/Workspace/Users/someone@example.com/.bundle/adrank/dev/files",
    "bundle.name": "adrank",
    "bundle.target": "dev",
}
GPU_NODE_FAMILIES = ("g4dn.", "g5.", "g6.", "g6e.", "p3.", "p4d.", "p5.", "Standard_NC", "a2-", "g2-")
REFERENCE = re.compile(r"\$\{([A-Za-z0-9_.\-]+)\}")


# --- reading the two definitions -------------------------------------------------------

def resolve(value: Any, fields: dict[str, Any]) -> Any:
    """``value`` with every ``${name}`` replaced from ``fields`` (a whole-string one keeps its type)."""
    if isinstance(value, dict):
        return {key: resolve(item, fields) for key, item in value.items()}
    if isinstance(value, list):
        return [resolve(item, fields) for item in value]
    if not isinstance(value, str):
        return value
    whole = REFERENCE.fullmatch(value)
    if whole:
        return fields[whole.group(1)]
    return REFERENCE.sub(lambda match: str(fields[match.group(1)]), value)


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``override`` merged in, mapping by mapping (a target's overrides)."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def bundle() -> dict[str, Any]:
    return yaml.safe_load(BUNDLE.read_text(encoding="utf-8"))


def bundle_job(target: str | None = None) -> dict[str, Any]:
    """The bundle's ``adrank_pipeline`` resource (merged with ``target``'s), references resolved."""
    document = bundle()
    resources = document["resources"]
    if target is not None:
        resources = merge(resources, document["targets"][target].get("resources", {}))
    fields = {f"var.{name}": spec["default"] for name, spec in document["variables"].items()}
    return resolve(resources["jobs"]["adrank_pipeline"], {**BUNDLE_FIELDS, **fields})


def json_job() -> dict[str, Any]:
    return json.loads(JOB_JSON.read_text(encoding="utf-8"))


# --- the check -------------------------------------------------------------------------

def is_quartz_cron(expression: str) -> bool:
    """Six or seven quartz fields, seconds/minutes/hours in range, one of day-of-month/week '?'."""
    fields = expression.split()
    if len(fields) not in (6, 7) or "?" not in (fields[3], fields[5]) or fields[3] == fields[5]:
        return False
    if not all(re.fullmatch(r"[0-9A-Z*?/,#LW\-]+", field) for field in fields):
        return False
    limits = (59, 59, 23)
    for field, limit in zip(fields[:3], limits):
        numbers = [int(n) for n in re.findall(r"\d+", field)]
        if any(n > limit for n in numbers):
            return False
    return True


def _task_problems(job_task: Any, task: Task, clusters: dict[str, Any]) -> list[str]:
    """What is wrong with one scheduled task against the graph's ``task``."""
    key, found = task.name, []
    python = job_task.spark_python_task
    if python is None:
        return [f"{key}: not a spark_python_task"]
    if not python.python_file.endswith(f"jobs/{task.job}.py") or not (REPO / "jobs" / f"{task.job}.py").is_file():
        found.append(f"{key}: runs {python.python_file}, not jobs/{task.job}.py")
    params = list(python.parameters or [])
    if task.args and not any(params[i:i + len(task.args)] == list(task.args) for i in range(len(params))):
        found.append(f"{key}: parameters {params} lack {list(task.args)}")
    conf_file = params[params.index("--conf-file") + 1] if "--conf-file" in params[:-1] else ""
    if not conf_file.endswith(CONF_FILE):
        found.append(f"{key}: parameters {params} lack --conf-file .../{CONF_FILE}")
    cluster = clusters.get(job_task.job_cluster_key)
    if cluster is None:
        found.append(f"{key}: job cluster {job_task.job_cluster_key!r} is not defined")
    elif is_gpu_cluster(cluster) != (task.compute == GPU):
        found.append(f"{key}: a {task.compute} task on job cluster {job_task.job_cluster_key!r}")
    if not job_task.max_retries or not job_task.min_retry_interval_millis:
        found.append(f"{key}: no retries (max_retries, min_retry_interval_millis)")
    if not job_task.timeout_seconds:
        found.append(f"{key}: no timeout_seconds")
    if not any((library.whl or "").endswith(".whl") for library in job_task.libraries or []):
        found.append(f"{key}: the adrank wheel is not attached")
    return found


def is_gpu_cluster(cluster: Any) -> bool:
    """A GPU ML runtime on a GPU node type."""
    return "-gpu-ml-" in (cluster.spark_version or "") and (cluster.node_type_id or "").startswith(GPU_NODE_FAMILIES)


def job_problems(job: dict[str, Any], tasks: tuple[Task, ...] = PIPELINE_TASKS) -> list[str]:
    """What keeps the job definition ``job`` (API shape) from mirroring ``tasks``; empty if nothing."""
    settings = JobSettings.from_dict(job)
    job_tasks = settings.tasks or []
    found = []
    if settings.as_dict() != job:  # from_dict drops a key it does not know (a typo, a wrong level)
        found.append("fields the Jobs API does not know (JobSettings.from_dict(job).as_dict() != job)")
    keys = tuple(job_task.task_key for job_task in job_tasks)
    if keys != task_names(tasks):
        found.append(f"task keys {keys} != {task_names(tasks)}")
    scheduled = {(dep.task_key, t.task_key) for t in job_tasks for dep in t.depends_on or []}
    if scheduled != edges(tasks):
        found.append(f"depends_on edges differ: extra {sorted(scheduled - edges(tasks))}, "
                     f"missing {sorted(edges(tasks) - scheduled)}")
    clusters = {c.job_cluster_key: c.new_cluster for c in settings.job_clusters or []}
    by_name = {task.name: task for task in tasks}
    for job_task in job_tasks:
        if job_task.task_key in by_name:
            found += _task_problems(job_task, by_name[job_task.task_key], clusters)
    if settings.schedule is None or not is_quartz_cron(settings.schedule.quartz_cron_expression):
        found.append("no valid quartz_cron_expression schedule")
    elif not settings.schedule.timezone_id:
        found.append("the schedule has no timezone_id")
    longest_task = max((t.timeout_seconds or 0 for t in job_tasks), default=0)
    if not settings.timeout_seconds or settings.timeout_seconds < longest_task:
        found.append(f"job timeout_seconds {settings.timeout_seconds} missing or below a task's {longest_task}")
    if settings.email_notifications is None or not settings.email_notifications.on_failure:
        found.append("no email_notifications.on_failure")
    return found


# --- the tests -------------------------------------------------------------------------

@pytest.mark.parametrize("load", [bundle_job, json_job], ids=["databricks.yml", "databricks_job.json"])
def test_the_scheduled_job_mirrors_the_task_graph(load):
    assert job_problems(load()) == []


def test_the_bundle_builds_and_attaches_the_project_wheel():
    document = bundle()
    assert document["bundle"]["name"] == "adrank"
    artifact = document["artifacts"]["adrank_wheel"]
    assert artifact["type"] == "whl"
    assert "bdist_wheel" in artifact["build"] or "pip wheel" in artifact["build"]
    assert (REPO / artifact.get("path", ".") / "setup.py").is_file()
    wheels = {library["whl"] for t in bundle_job()["tasks"] for library in t["libraries"]}
    assert wheels == {"./dist/*.whl"}  # where bdist_wheel writes it, relative to the bundle root


def test_the_bundle_targets_dev_by_default_and_runs_on_schedule_only_in_prod():
    targets = bundle()["targets"]
    assert targets["dev"] == {**targets["dev"], "mode": "development", "default": True}
    assert targets["prod"]["mode"] == "production"
    assert JobSettings.from_dict(bundle_job("prod")).schedule.pause_status == PauseStatus.UNPAUSED
    assert JobSettings.from_dict(bundle_job()).schedule.pause_status == PauseStatus.PAUSED
    assert JobSettings.from_dict(json_job()).schedule.pause_status == PauseStatus.UNPAUSED


def test_the_bundle_and_the_json_are_the_same_job():
    """Apart from where the files live, the two definitions agree field by field."""
    def shape(job: dict[str, Any]) -> dict[str, Any]:
        job = copy.deepcopy(job)
        job.pop("format", None)
        job["schedule"].pop("pause_status")
        for task in job["tasks"]:
            python = task["spark_python_task"]
            python.pop("source", None)
            python["python_file"] = python["python_file"].rsplit("jobs/", 1)[1]
            python["parameters"] = [p.rsplit("/conf/", 1)[-1] for p in python["parameters"]]
            task["libraries"] = ["whl" for _ in task["libraries"]]
        return job

    assert shape(json_job()) == shape(bundle_job())


def test_the_tasks_config_file_is_a_valid_config():
    config = load_config(REPO / CONF_FILE, [])
    assert config.storage.local_root  # the registry and snapshots need a shared local path


def test_a_misspelt_field_is_caught():
    job = json_job()
    job["tasks"][0]["max_retry"] = job["tasks"][0].pop("max_retries")
    assert job_problems(job) == [
        "fields the Jobs API does not know (JobSettings.from_dict(job).as_dict() != job)",
        "build_tables: no retries (max_retries, min_retry_interval_millis)",
    ]


def test_the_json_uses_workspace_paths():
    for task in json_job()["tasks"]:
        assert task["spark_python_task"]["python_file"].startswith("/Workspace/Shared/adrank/jobs/")
        assert task["spark_python_task"]["source"] == "WORKSPACE"
        assert [lib["whl"] for lib in task["libraries"]] == ["/Workspace/Shared/adrank/dist/adrank-0.1.0-py3-none-any.whl"]


def _task(job: dict[str, Any], task_key: str) -> dict[str, Any]:
    return next(t for t in job["tasks"] if t["task_key"] == task_key)


def _drop_a_dependency(job: dict[str, Any]) -> None:
    _task(job, "train_joint")["depends_on"].pop(0)


def _train_on_cpu(job: dict[str, Any]) -> None:
    _task(job, "train_pairwise")["job_cluster_key"] = "adrank_cpu"


def _lose_the_stage(job: dict[str, Any]) -> None:
    _task(job, "train_lr")["spark_python_task"]["parameters"] = ["--conf-file", "/x/conf/cluster.yaml"]


def _no_retries(job: dict[str, Any]) -> None:
    del _task(job, "build_tables")["max_retries"]


def _no_wheel(job: dict[str, Any]) -> None:
    del _task(job, "recommend")["libraries"]


@pytest.mark.parametrize("drift, problem", [
    (_drop_a_dependency, "depends_on edges differ: extra [], missing [('embed_catalog', 'train_joint')]"),
    (_train_on_cpu, "train_pairwise: a gpu task on job cluster 'adrank_cpu'"),
    (_lose_the_stage, "train_lr: parameters ['--conf-file', '/x/conf/cluster.yaml'] lack ['--stage', 'lr']"),
    (_no_retries, "build_tables: no retries (max_retries, min_retry_interval_millis)"),
    (_no_wheel, "recommend: the adrank wheel is not attached"),
])
def test_a_drifted_definition_is_caught(drift, problem):
    for load in (json_job, bundle_job):
        job = load()
        drift(job)
        assert job_problems(job) == [problem]


@pytest.mark.parametrize("expression, valid", [
    ("0 0 2 * * ?", True), ("0 30 1 ? * MON-FRI", True), ("0 0 2 * * ? 2027", True),
    ("0 2 * * *", False), ("0 0 25 * * ?", False), ("0 0 2 * * *", False), ("0 0 2 ? * ?", False),
])
def test_quartz_cron_check(expression, valid):
    assert is_quartz_cron(expression) is valid
