"""MLflow tracking of training: one MLflow run per (adrank run id, stage), never failing training.

Contract: :func:`track_stage` logs a registered model's train settings (params), its
held-out metrics (NaN and non-numbers skipped, nested figures flattened as ``a.b``), the
registry path and version, the Delta versions read and the adrank run id (tags) to the
experiment ``tracking.experiment`` at ``tracking.uri`` (empty: the SQLite database
``sqlite:///<storage.local>/mlflow.db``, MLflow's recommended local store, which
``MlflowClient`` and ``mlflow ui --backend-store-uri`` open as they are; its experiment's
artifacts go to ``<storage.local>/_mlartifacts``). A second call for the same (run id, stage), e.g. the
next stage-3 module, logs into the same MLflow run under a ``<name>.`` key prefix. It
returns what the report records: ``{uri, experiment, run_id}``, or ``{error}`` when
tracking failed (a warning line is logged; training goes on), or ``{enabled: false}``.
MLflow is imported inside the function: importing this module costs nothing.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import math
import os
import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from adrank.core import layout
from adrank.core.config import Config, StorageConfig, TrackingConfig, without_uri_user_info

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

LOG = logging.getLogger(__name__)
# The default store: one SQLite file (MLflow's SQLAlchemy store; its file store is in
# maintenance mode and refused by MLflow >= 3.18 unless MLFLOW_ALLOW_FILE_STORE=true).
DEFAULT_DATABASE = "mlflow.db"
DEFAULT_ARTIFACTS_FOLDER = "_mlartifacts"
SQLITE_PREFIX = "sqlite:///"
RUN_ID_TAG = "adrank.run_id"
STAGE_TAG = "adrank.stage"
DATA_VERSION_TAG = "adrank.data_version"


def tracking_uri(tracking: TrackingConfig, storage: StorageConfig) -> str:
    """``tracking.uri``, or ``sqlite:///<storage.local>/mlflow.db`` when it is empty."""
    return tracking.uri or default_tracking_uri(storage)


def default_tracking_uri(storage: StorageConfig) -> str:
    """``sqlite:///<storage.local>/mlflow.db``: an absolute path, so four slashes (``sqlite:////data/mlflow.db``)."""
    return SQLITE_PREFIX + layout.join_path(_local_folder(storage), DEFAULT_DATABASE)


def _local_folder(storage: StorageConfig) -> str:
    """``storage.local`` as a plain absolute path (a ``file:`` root loses its scheme)."""
    local = storage.local
    return "/" + local.removeprefix("file:").lstrip("/") if local.startswith("file:") else local


def track_stage(config: Config, run_id: str, stage: str, params: Mapping[str, Any], metrics: Mapping[str, Any],
                model_path: str, model_version: int, *, data_version: Any = None,
                name: str = "") -> dict[str, Any]:
    """Log one registered model of a stage to MLflow; what the report records (never raises).

    Args:
        config: The job's config (``tracking`` and ``storage.local``).
        run_id: The adrank run id (tag ``adrank.run_id``; with ``stage`` it names the MLflow run).
        stage: The stage (tag ``adrank.stage``).
        params: The stage's train settings (stringified; nested mappings flattened).
        metrics: The held-out metrics (numbers only; NaN, None and text skipped).
        model_path: The registered model's folder (tag ``adrank.model_path``).
        model_version: Its registry version (tag ``adrank.model_version``).
        data_version: The Delta version(s) read (tags ``adrank.data_version[.<table>]``).
        name: A sub-model of the stage (a stage-3 module): prefixes its keys with ``<name>.``.

    Returns:
        ``{"uri", "experiment", "run_id"}``, ``{"error": "<Type>: <first line>"}`` or
        ``{"enabled": False}``.
    """
    if not config.tracking.enabled:
        return {"enabled": False}
    uri = tracking_uri(config.tracking, config.storage)
    try:
        mlflow_run = _log(config.tracking, config.storage, uri, run_id, stage, params, metrics, model_path,
                          model_version, data_version, name)
    except Exception as exc:  # noqa: BLE001 - tracking must never fail training
        line = f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:300]}"
        LOG.warning("adrank tracking: %s %s not logged to MLflow at %s: %s", stage, name or "",
                    without_uri_user_info(uri), without_uri_user_info(line))
        return {"uri": uri, "error": line}
    return {"uri": uri, "experiment": config.tracking.experiment, "run_id": mlflow_run}


def _log(tracking: TrackingConfig, storage: StorageConfig, uri: str, run_id: str, stage: str,
         params: Mapping[str, Any], metrics: Mapping[str, Any], model_path: str, model_version: int,
         data_version: Any, name: str) -> str:
    """Log into the (run id, stage) MLflow run, made if missing; its MLflow run id."""
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    # The default store's experiment keeps its artifacts beside the database (MLflow's own
    # default is ./mlruns under whatever folder the job happened to start in).
    default = uri == default_tracking_uri(storage)
    artifacts = layout.join_path(_local_folder(storage), DEFAULT_ARTIFACTS_FOLDER) if default else None
    with _default_store_lock(_local_folder(storage)) if default else contextlib.nullcontext():
        client = MlflowClient(tracking_uri=uri)  # MLflow makes the database's folder and tables
        mlflow_run = _stage_run(client, tracking.experiment, run_id, stage, data_version, artifacts)
        prefix = f"{name}." if name else ""
        now = int(time.time() * 1000)
        client.log_batch(
            mlflow_run,
            metrics=[Metric(prefix + k, v, now, 0) for k, v in numeric_metrics(metrics).items()],
            params=[Param(prefix + k, v) for k, v in _flat(params)],
            tags=[RunTag(f"adrank.{prefix}model_path", str(model_path)),
                  RunTag(f"adrank.{prefix}model_version", str(model_version))],
        )
        client.set_terminated(mlflow_run)
    return mlflow_run


@contextlib.contextmanager
def _default_store_lock(folder: str) -> Iterator[None]:
    """An exclusive ``flock`` on ``<folder>/mlflow.db.lock`` (``folder``: ``storage.local``) while a job
    writes the default store.

    Two processes that open a new SQLite store at once both run MLflow's schema migrations
    and leave it broken for good (seen: ``table _alembic_tmp_metrics already exists`` in
    both, then every write failing); later writes wait on SQLite's own lock (MLflow sets a
    20 s busy timeout). adrank writes from the driver only, once per registered model.
    """
    os.makedirs(folder, exist_ok=True)
    with open(layout.join_path(folder, DEFAULT_DATABASE + ".lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _stage_run(client: MlflowClient, experiment: str, run_id: str, stage: str, data_version: Any,
               artifacts: str | None) -> str:
    """The MLflow run of (run id, stage) in the experiment: found by its tags, else made.

    ``artifacts``: a new experiment's artifact folder (None: the store's default).
    """
    found = client.get_experiment_by_name(experiment)
    experiment_id = (found.experiment_id if found is not None
                     else client.create_experiment(experiment, artifact_location=artifacts))
    query = f"tags.`{RUN_ID_TAG}` = '{_quoted(run_id)}' and tags.`{STAGE_TAG}` = '{_quoted(stage)}'"
    existing = client.search_runs([experiment_id], query, max_results=1)
    if existing:
        return str(existing[0].info.run_id)
    tags = {RUN_ID_TAG: run_id, STAGE_TAG: stage, **data_version_tags(data_version)}
    return str(client.create_run(experiment_id, tags=tags, run_name=f"{stage}-{run_id}").info.run_id)


def data_version_tags(data_version: Any) -> dict[str, str]:
    """``{"adrank.data_version.<table>": "<v>"}`` per table, or one ``adrank.data_version`` tag."""
    if data_version is None:
        return {}
    if isinstance(data_version, Mapping):
        return {f"{DATA_VERSION_TAG}.{table}": str(v) for table, v in data_version.items()}
    return {DATA_VERSION_TAG: str(data_version)}


def numeric_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The finite numbers of (nested) metrics, keys joined with ``.``; bools, None, NaN, text dropped."""
    return {key: float(value) for key, value in _flat(metrics, keep_raw=True)
            if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)}


def _flat(values: Mapping[str, Any], parent: str = "", keep_raw: bool = False) -> Iterator[tuple[str, Any]]:
    for key, value in values.items():
        full = f"{parent}{key}"
        if isinstance(value, Mapping):
            yield from _flat(value, f"{full}.", keep_raw)
        else:
            yield full, value if keep_raw else ("" if value is None else str(value))[:6000]


def _quoted(text: str) -> str:
    return text.replace("\\", "\\\\").replace("'", "\\'")


__all__ = ["data_version_tags", "default_tracking_uri", "numeric_metrics", "track_stage", "tracking_uri"]
