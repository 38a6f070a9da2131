"""The model registry: versioned SavedModels in a folder, with metadata and a pointer.

Layout (``root`` = ``<storage.local>/<train.registry_folder>``, see
:func:`registry_root`)::

    <root>/<stage>/v1/               SavedModel (saved_model.pb, variables/) + metadata.json
    <root>/<stage>/v2/
    <root>/<stage>/latest            "v2": written last, atomically

:func:`export_model` writes a new version into a hidden temporary folder next to the
versions, then renames it to ``v<N>`` (``N`` = the highest existing version + 1; a
rename onto an existing version fails, so two exporters racing get different
numbers), then replaces ``latest`` (write a temporary file, ``os.replace``). A reader
that follows ``latest`` therefore never sees a half-written model.

The SavedModel's signatures are :func:`adrank.train.ranks.models.export_signatures`:
``sku_embedding`` and ``query_embedding`` (when a pairwise model is given) and
``lr_score`` (when an LR model is given). ``metadata.json`` holds ``stage``,
``version``, ``data_version``, ``config``, ``metrics``, ``created_at`` (UTC ISO-8601),
``run_id``, ``signatures`` and ``image_size``, written with :func:`adrank.config.to_json`
(credential-looking values redacted). A model whose metrics hold NaN (e.g. evaluated on no
rows) is refused.

Local paths only (``/path`` or ``file:///path``): the rename and pointer steps rely
on a POSIX file system. On cluster object storage (s3a://, abfss://, gs://) export to
a local temporary folder and copy it with the Hadoop FileSystem API
(``FileSystem.copyFromLocalFile``), writing ``latest`` last; object stores have no
atomic directory rename, so the pointer file is what makes a version visible there.
"""

from __future__ import annotations

import datetime
import json
import math
import numbers
import os
import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from adrank import versioned
from adrank.config import to_json

LATEST = "latest"
METADATA = "metadata.json"


def registry_root(config: Any) -> str:
    """``<storage.local>/<train.registry_folder>`` of an :class:`adrank.config.Config`.

    ``storage.local`` is ``storage.local_root``, else ``storage.root`` (local).
    """
    return "/".join([config.storage.local.rstrip("/"), config.train.registry_folder.strip("/")])


def _local(root: str | os.PathLike) -> Path:
    return versioned.local_folder(root, "the model registry")


def versions(root: str | os.PathLike, stage: str) -> list[int]:
    """The version numbers of a stage, ascending (``[]`` when none)."""
    return versioned.versions_in(_local(root) / stage)


def export_model(root: str | os.PathLike, stage: str, *, pairwise_model: Any = None,
                 linear_model: Any = None, image_size: int, data_version: Any,
                 config: Mapping[str, Any] | None = None, metrics: Mapping[str, Any] | None = None,
                 run_id: str = "") -> tuple[int, str]:
    """Saves a new version of a stage's model and points ``latest`` at it.

    Args:
        root: The registry folder (local; see the module docstring).
        stage: E.g. ``"pairwise"`` or ``"lr"``.
        pairwise_model: A :class:`~adrank.train.ranks.models.PairwiseModel` (gives
            ``sku_embedding`` and, with a query tower, ``query_embedding``).
        linear_model: A :class:`~adrank.train.ranks.models.LinearModel` (gives ``lr_score``).
        image_size: Side of the ``sku_embedding`` input images.
        data_version: The Delta version(s) the model was trained on.
        config: The training config (JSON-able), stored in the metadata.
        metrics: Training / evaluation figures, stored in the metadata.
        run_id: The training job's run id.

    Returns:
        ``(version, path)`` of the new version.

    Raises:
        ValueError: Neither model given, a non-local root, or a metric that is NaN.
    """
    if pairwise_model is None and linear_model is None:
        raise ValueError("export_model needs a pairwise model, a linear model or both")
    undefined = sorted(name for name, value in (metrics or {}).items() if _undefined(value))
    if undefined:
        raise ValueError(f"refusing to register a {stage} model whose metrics {', '.join(undefined)} "
                         "are NaN (evaluated on no held-out rows?)")
    import tensorflow as tf

    folder = _local(root) / stage
    folder.mkdir(parents=True, exist_ok=True)
    temporary = folder / f".tmp-{uuid.uuid4().hex}"
    signatures = _signatures(pairwise_model, linear_model, image_size)
    try:
        from adrank.train.ranks.models import serving_module

        tf.saved_model.save(serving_module(pairwise_model, linear_model), str(temporary),
                            signatures=signatures)
        metadata = {
            "stage": stage, "data_version": data_version, "config": dict(config or {}),
            "metrics": dict(metrics or {}), "run_id": run_id, "image_size": image_size,
            "signatures": sorted(signatures),
            "created_at": datetime.datetime.now(datetime.UTC).isoformat(),
        }
        version = _publish(folder, temporary, metadata)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    path = folder / f"v{version}"
    versioned.write_atomically(folder / LATEST, f"v{version}\n")
    return version, str(path)


def _undefined(value: Any) -> bool:
    """A metric that is NaN (counts and other figures are fine)."""
    return (isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral)
            and math.isnan(float(value)))


def _signatures(pairwise_model: Any, linear_model: Any, image_size: int) -> dict[str, Any]:
    """export_signatures when there is a pairwise model; else the LR signature alone."""
    import tensorflow as tf

    from adrank.train.ranks.models import export_signatures

    if pairwise_model is not None:
        return export_signatures(pairwise_model, linear_model, image_size)
    return {"lr_score": tf.function(
        lambda sparse_ids, num_sparse_ids: {"probability": tf.sigmoid(linear_model(
            {"sparse_ids": sparse_ids, "num_sparse_ids": num_sparse_ids}, training=False))},
        input_signature=[tf.TensorSpec([None, None], tf.int64, "sparse_ids"),
                         tf.TensorSpec([None], tf.int32, "num_sparse_ids")])}


def _publish(folder: Path, temporary: Path, metadata: dict[str, Any]) -> int:
    """Renames ``temporary`` to the next free ``v<N>`` (retrying on a race); returns N."""
    def write_metadata(version: int) -> None:
        metadata["version"] = version
        (temporary / METADATA).write_text(to_json(metadata, indent=2, sort_keys=True) + "\n")

    return versioned.claim_next_version(folder, temporary, write_metadata)


def latest_model(root: str | os.PathLike, stage: str) -> tuple[int, str, dict[str, Any]]:
    """The version ``latest`` points at: ``(version, path, metadata)``.

    Raises:
        FileNotFoundError: The stage has no exported version.
    """
    folder = _local(root) / stage
    try:
        version = versioned.read_pointer(folder / LATEST)
    except FileNotFoundError:
        raise FileNotFoundError(f"no model of stage {stage!r} in {folder}") from None
    path = folder / f"v{version}"
    metadata = json.loads((path / METADATA).read_text())
    return version, str(path), metadata


def load_model(root: str | os.PathLike, stage: str, version: int | None = None) -> Any:
    """``tf.saved_model.load`` of a version (``latest`` when None); use ``.signatures``."""
    import tensorflow as tf

    if version is None:
        _, path, _ = latest_model(root, stage)
    else:
        path = str(_local(root) / stage / f"v{version}")
    return tf.saved_model.load(path)


__all__ = ["LATEST", "METADATA", "export_model", "latest_model", "load_model", "registry_root",
           "versions"]
