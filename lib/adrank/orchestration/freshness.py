"""Is a task's output current for its inputs? What a finished task leaves behind, and the check.

A task reads and writes resources (:mod:`adrank.orchestration.graph`): the raw input files, Delta tables,
registry stages. Their *state* is cheap to read and changes whenever their content does:
a digest of the input files' paths, sizes and modification times; a table's latest Delta
version; a stage's newest registered version. After a task succeeds, the pipeline saves a
:class:`TaskRecord` (the states it read, the config it ran with, the states it left) under
``<storage.root>/_runs/tasks/<task>.json``. The next run skips the task when all three
are unchanged: nothing new to read, nothing in its config changed, nobody touched what it
wrote. A task that failed or was killed left no new record, so it runs again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from pyspark.sql import SparkSession

from adrank.core import layout
from adrank.core.config import Config, to_json
from adrank.orchestration.graph import INPUTS, Task
from adrank.storage import delta

TASKS_FOLDER = "tasks"
COMMIT_FILE = re.compile(r"\d{20}\.json")  # a Delta commit: <version, 20 digits>.json
ResourceStates = dict[str, Any]


@dataclass(frozen=True)
class TaskRecord:
    """What one successful run of a task saw and left."""

    task: str
    run_id: str
    inputs: ResourceStates
    config: str
    outputs: ResourceStates
    figures: dict[str, Any]
    args: list[str] | None = None  # the selection's job arguments (None: a record older than this field)

    def to_json(self) -> str:
        """The record as one JSON document."""
        return to_json(dataclasses.asdict(self), sort_keys=True)


def record_path(storage_root: str, task: str) -> str:
    """``<storage.root>/_runs/tasks/<task>.json``."""
    return layout.join_path(storage_root, layout.RUNS_FOLDER, TASKS_FOLDER, f"{task}.json")


def read_record(spark: SparkSession, config: Config, task: str) -> TaskRecord | None:
    """The last success's record of ``task``; None if it never succeeded (or the record is unreadable)."""
    text = delta.read_text_file(spark, record_path(config.storage.root, task))
    if not text:
        return None
    try:
        return TaskRecord(**json.loads(text))
    except (TypeError, ValueError):
        return None


def save_record(spark: SparkSession, config: Config, record: TaskRecord) -> None:
    """Replace the task's record (written last, after every output of the task)."""
    delta.write_text_file(spark, record_path(config.storage.root, record.task), record.to_json() + "\n")


def config_digest(config: Config, task: Task) -> str:
    """A digest of the config sections that shape ``task`` and its fixed arguments (the arguments a
    person's selection adds are recorded apart: :attr:`TaskRecord.args`)."""
    shaping = {section: dataclasses.asdict(getattr(config, section)) for section in task.shaped_by}
    text = to_json({"config": shaping, "args": list(task.args)}, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def resource_states(spark: SparkSession, config: Config, resources: tuple[str, ...]) -> ResourceStates:
    """The current state of each resource (None: it does not exist yet)."""
    return {resource: resource_state(spark, config, resource) for resource in resources}


def resource_state(spark: SparkSession, config: Config, resource: str) -> Any:
    """One resource's state: the inputs' digest, a table's version or a stage's newest version."""
    if resource == INPUTS:
        return inputs_digest(spark, config.inputs.root)
    kind, _, name = resource.partition(":")
    if kind == "table":
        return table_version(spark, layout.table_path(config, name))
    if kind == "model":
        from adrank.train.registry import versions

        found = versions(layout.registry_root(config), name)
        return found[-1] if found else None
    raise ValueError(f"unknown resource {resource!r} (inputs, table:<name> or model:<stage>)")


def table_version(spark: SparkSession, path: str) -> int | None:
    """The latest version of the Delta table at ``path`` (None: no table there), from a listing of
    its ``_delta_log`` (the newest commit file), without a Spark job."""
    log = layout.join_path(path, "_delta_log")
    if not urlparse(path).scheme:
        names = os.listdir(log) if os.path.isdir(log) else []
    else:
        log_path, fs = delta.hadoop_path(spark, log)
        names = [status.getPath().getName() for status in fs.listStatus(log_path)] if fs.exists(log_path) else []
    versions = [int(name[:-5]) for name in names if COMMIT_FILE.fullmatch(name)]
    return max(versions) if versions else None


def inputs_digest(spark: SparkSession, root: str) -> dict[str, Any] | None:
    """Files, bytes and a digest of every file's path, size and modification time under ``root``."""
    listing = _local_listing(root) if not urlparse(root).scheme else _hadoop_listing(spark, root)
    if not listing:
        return None
    digest = hashlib.sha256("\n".join(f"{p}\t{s}\t{m}" for p, s, m in sorted(listing)).encode("utf-8"))
    return {"files": len(listing), "bytes": sum(size for _, size, _ in listing), "sha256": digest.hexdigest()[:16]}


def _local_listing(root: str) -> list[tuple[str, int, int]]:
    found = []
    for folder, _, names in os.walk(root):
        for name in names:
            status = os.stat(os.path.join(folder, name))
            found.append((os.path.relpath(os.path.join(folder, name), root), status.st_size, status.st_mtime_ns))
    return found


def _hadoop_listing(spark: SparkSession, root: str) -> list[tuple[str, int, int]]:
    path, fs = delta.hadoop_path(spark, root)
    if not fs.exists(path):
        return []
    files = fs.listFiles(path, True)
    found = []
    while files.hasNext():
        status = files.next()
        found.append((status.getPath().toString(), int(status.getLen()), int(status.getModificationTime())))
    return found


def stale_because(record: TaskRecord | None, inputs: ResourceStates, digest: str,
                  outputs: ResourceStates, args: tuple[str, ...] = ()) -> str | None:
    """Why the task must run (one phrase), or None when its outputs are current.

    ``args``: the job arguments of this run's selection (dates), compared with the record's.
    """
    if record is None:
        return "no earlier success"
    if record.config != digest:
        return "its config changed"
    changed = sorted(name for name in inputs if record.inputs.get(name) != inputs[name])
    if changed:
        return "new " + ", ".join(_short(name) for name in changed)
    if record.args is not None and list(record.args) != list(args):
        return f"asked for {_dates(args)} (last run: {_dates(record.args)})"
    touched = sorted(name for name in outputs if record.outputs.get(name) != outputs[name])
    if touched:
        return ", ".join(_short(name) for name in touched) + " changed since"
    return None


def _dates(args: tuple[str, ...] | list[str]) -> str:
    """A selection's arguments as a person reads them (none: the new dates)."""
    return " ".join(args) or "the new dates"


def describe_states(states: ResourceStates) -> str:
    """``training_examples v3, model pairwise v1``: the states a person reads in a skip line."""
    parts = []
    for name, state in states.items():
        if name == INPUTS:
            parts.append(f"{state['files']} input files" if state else "no input files")
        else:
            kind, _, short = name.partition(":")
            parts.append(f"{'model ' if kind == 'model' else ''}{short} v{state}")
    return ", ".join(parts)


def _short(resource: str) -> str:
    kind, _, name = resource.partition(":")
    return f"model {name}" if kind == "model" else (name or kind)
