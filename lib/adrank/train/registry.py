"""The model registry: versioned SavedModels in a folder, with metadata and a pointer.

Layout (``root`` = :func:`adrank.core.layout.registry_root`)::

    <root>/<stage>/v1/               SavedModel (saved_model.pb, variables/) + metadata.json
    <root>/<stage>/v2/
    <root>/<stage>/latest            "v2": moved forward only, after v2 is complete

:func:`export_model` publishes with :func:`adrank.storage.versioned.publish` (temporary folder,
atomic claim of ``v<N>``, then ``latest`` moved forward; every version is kept), so a
reader that follows ``latest`` never sees a half-written model. The signatures are
:func:`adrank.train.ranks.serving.export_signatures` (``sku_embedding``, ``query_embedding``,
``lr_score``), or for stage 3 :func:`~adrank.train.ranks.joint_model.joint_signatures` (``score``);
``metadata.json`` holds ``stage``, ``version``, ``data_version``, ``config``,
``metrics``, ``created_at`` (UTC ISO-8601), ``run_id``, ``signatures``, ``image_size``,
``train_state`` (the kept checkpoint under ``train_state/``, for a warm start) and the
lineage (``mode``, ``parent_version``, ``dates_trained``: :mod:`adrank.train.lineage`),
dumped with :func:`adrank.core.config.to_json` (credentials redacted, NaN as null). A model
whose metrics hold NaN is refused. Local paths only (see :mod:`adrank.storage.versioned`); TensorFlow
is imported inside the functions that need it.
"""

from __future__ import annotations

import datetime
import json
import math
import numbers
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adrank.core.config import to_json
from adrank.storage import versioned

if TYPE_CHECKING:
    import tensorflow as tf

    from adrank.train.ranks.joint_model import JointModel
    from adrank.train.ranks.models import LinearModel, PairwiseModel
    from adrank.train.ranks.settings import DataVersion

LATEST = "latest"
TRAIN_STATE = "train_state"  # a version's kept checkpoint: weights and optimizer state
METADATA = "metadata.json"
MODELS = versioned.Scheme(pointer=LATEST, manifest=METADATA, version_key="version",
                          dumps=lambda metadata: to_json(metadata, indent=2, sort_keys=True), lock=None)
"""The versioned-folder scheme of one stage's models: every version kept, no lock file (a
stage folder holds only its versions and ``latest``)."""


def _local(root: str | os.PathLike[str]) -> Path:
    return versioned.local_folder(root, "the model registry")


def versions(root: str | os.PathLike[str], stage: str) -> list[int]:
    """The version numbers of a stage, ascending (``[]`` when none)."""
    return versioned.versions_in(_local(root) / stage)


def export_model(root: str | os.PathLike[str], stage: str, *, pairwise_model: PairwiseModel | None = None,
                 linear_model: LinearModel | None = None, joint_model: JointModel | None = None,
                 image_size: int, data_version: DataVersion, embedding_dim: int = 0,
                 config: Mapping[str, Any] | None = None, metrics: Mapping[str, Any] | None = None,
                 run_id: str = "", details: Mapping[str, Any] | None = None,
                 train_state: str = "") -> tuple[int, str]:
    """Saves a new version of a stage's model and points ``latest`` at it.

    Args:
        root: The registry folder (local; see the module docstring).
        stage: E.g. ``"pairwise"`` or ``"lr"``.
        pairwise_model: A :class:`~adrank.train.ranks.models.PairwiseModel` (gives
            ``sku_embedding`` and, with a query tower, ``query_embedding``).
        linear_model: A :class:`~adrank.train.ranks.models.LinearModel` (gives ``lr_score``).
        joint_model: A :class:`~adrank.train.ranks.joint_model.JointModel` (gives ``score`` and,
            fine-tuned, its towers' ``sku_embedding`` / ``query_embedding``).
        image_size: Side of the ``sku_embedding`` input images.
        data_version: The Delta version(s) the model was trained on.
        config: The training config (JSON-able), stored in the metadata.
        metrics: Training / evaluation figures, stored in the metadata.
        run_id: The training job's run id.
        embedding_dim: D, the width of the joint model's ``score`` inputs ``x`` / ``y``.
        details: More metadata (stage 3: the interaction, the embedding model version, the
            comparison with the LR and the oracle).
        train_state: A checkpoint's path prefix (weights and optimizer state): copied into
            ``train_state/`` of the version, its relative prefix in the metadata
            (``train_state``), for the next incremental run to start from.

    Returns:
        ``(version, path)`` of the new version.

    Raises:
        ValueError: Neither model given, a non-local root, or a metric that is NaN.
    """
    if pairwise_model is None and linear_model is None and joint_model is None:
        raise ValueError("export_model needs a pairwise, linear or joint model")
    undefined = sorted(name for name, value in (metrics or {}).items() if _undefined(value))
    if undefined:
        raise ValueError(f"refusing to register a {stage} model whose metrics {', '.join(undefined)} "
                         "are NaN (evaluated on no held-out rows?)")
    import tensorflow as tf

    folder = _local(root) / stage
    if joint_model is not None:
        from adrank.train.ranks.joint_model import joint_signatures

        signatures = joint_signatures(joint_model, embedding_dim, image_size)
    else:
        signatures = _signatures(pairwise_model, linear_model, image_size)

    def save(temporary: Path) -> dict[str, Any]:
        from adrank.train.ranks.serving import serving_module

        tf.saved_model.save(serving_module(pairwise_model, linear_model, joint_model), str(temporary),
                            signatures=signatures)
        kept_state = _keep_train_state(train_state, temporary)
        return {
            "train_state": kept_state,
            "stage": stage, "data_version": data_version, "config": dict(config or {}),
            "metrics": dict(metrics or {}), "run_id": run_id, "image_size": image_size,
            "signatures": sorted(signatures),
            "created_at": datetime.datetime.now(datetime.UTC).isoformat(), **dict(details or {}),
        }

    version = versioned.publish(folder, MODELS, save, keep=None)
    return version, str(folder / f"v{version}")


def _keep_train_state(prefix: str, folder: Path) -> str:
    """Copies the checkpoint ``prefix`` (``.index``, ``.data-*``) into ``folder/train_state``;
    its prefix relative to ``folder`` (empty when there is none to keep)."""
    files = sorted(Path(prefix).parent.glob(Path(prefix).name + ".*")) if prefix else []
    if not files:
        return ""
    (folder / TRAIN_STATE).mkdir()
    for file in files:
        shutil.copy2(file, folder / TRAIN_STATE / file.name)
    return f"{TRAIN_STATE}/{Path(prefix).name}"


def _undefined(value: Any) -> bool:
    """A metric that is NaN (counts and other figures are fine)."""
    return (isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral)
            and math.isnan(float(value)))


def _signatures(pairwise_model: PairwiseModel | None, linear_model: LinearModel | None,
                image_size: int) -> dict[str, tf.types.experimental.GenericFunction]:
    """export_signatures when there is a pairwise model; else the LR signature alone."""
    import tensorflow as tf

    from adrank.train.ranks.serving import export_signatures

    if pairwise_model is not None:
        return export_signatures(pairwise_model, linear_model, image_size)
    model = linear_model
    if model is None:
        raise ValueError("export_model needs a pairwise model, a linear model or both")
    return {"lr_score": tf.function(
        lambda sparse_ids, num_sparse_ids: {"probability": tf.sigmoid(model(
            {"sparse_ids": sparse_ids, "num_sparse_ids": num_sparse_ids}, training=False))},
        input_signature=[tf.TensorSpec([None, None], tf.int64, "sparse_ids"),
                         tf.TensorSpec([None], tf.int32, "num_sparse_ids")])}


def latest_model(root: str | os.PathLike[str], stage: str) -> tuple[int, str, dict[str, Any]]:
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


def version_path(root: str | os.PathLike[str], stage: str, version: int) -> tuple[str, dict[str, Any]]:
    """``(path, metadata)`` of one version of a stage.

    Raises:
        FileNotFoundError: No such version.
    """
    path = _local(root) / stage / f"v{version}"
    try:
        return str(path), json.loads((path / METADATA).read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"no version {version} of stage {stage!r} at {path}") from None


def load_model(root: str | os.PathLike[str], stage: str, version: int | None = None) -> Any:
    """``tf.saved_model.load`` of a version (``latest`` when None); use ``.signatures``."""
    import tensorflow as tf

    if version is None:
        _, path, _ = latest_model(root, stage)
    else:
        path = str(_local(root) / stage / f"v{version}")
    return tf.saved_model.load(path)


__all__ = ["LATEST", "METADATA", "MODELS", "export_model", "latest_model", "load_model", "version_path",
           "versions"]
