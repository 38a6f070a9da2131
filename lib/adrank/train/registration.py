"""A trained stage's model into the registry and MLflow, once its held-out metrics pass.

Contract: :func:`register_model` checks the metrics (:func:`checked_metrics`: a NaN
headline metric of the stage refuses the model with :class:`TrainingDataError`, other NaN
figures become null), writes them into the report's figures even when refused, exports
the model (:func:`adrank.train.registry.export_model`) and records it in MLflow
(:func:`adrank.runtime.tracking.track_stage`, which never raises).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from adrank.core import layout
from adrank.core.config import TrainConfig, config_as_dict
from adrank.runtime.tracking import track_stage
from adrank.train.pinned import Figures, Metrics, PinnedData, TrainingDataError
from adrank.train.ranks.settings import DataVersion
from adrank.train.registry import export_model

if TYPE_CHECKING:
    from adrank.train.ranks.joint_model import JointModel
    from adrank.train.ranks.models import LinearModel, PairwiseModel


def checked_metrics(stage: str, headline_metrics: Sequence[str], metrics: dict[str, float | int],
                    pinned_version: int) -> Metrics:
    """The metrics to register: a NaN headline metric -> TrainingDataError; other NaN -> None."""
    undefined = [name for name in headline_metrics if _is_nan(metrics.get(name))]
    if undefined:
        raise TrainingDataError(
            f"{stage} evaluation on the held-out dates of training_examples version {pinned_version} gives NaN "
            f"{', '.join(undefined)} ({metrics.get('rows', metrics.get('pairs'))} rows; one class only?); "
            "the model was not registered")
    return {name: None if _is_nan(value) else value for name, value in metrics.items()}


def _is_nan(value: object) -> bool:
    return isinstance(value, float) and value != value


def register_model(pinned: PinnedData, data_version: DataVersion, metrics: dict[str, float | int], *,
                   pairwise_model: PairwiseModel | None = None, linear_model: LinearModel | None = None,
                   joint_model: JointModel | None = None, figures: Figures | None = None,
                   details: Figures | None = None, train_config: TrainConfig | None = None, name: str = "",
                   checkpoint: str = "") -> None:
    """Checks the metrics (into the figures, NaN as null, even when refused), exports the model, tracks it.

    ``figures`` receive ``metrics``, ``model_version`` and ``tracking`` (where the MLflow run
    went, or its error; default: the stage's figures); ``details`` go into the model's
    metadata; ``train_config`` (default ``config.train``, with the steps the run took) is what MLflow records as params
    and ``name`` (a stage-3 module) prefixes its keys there. ``checkpoint`` (the run's last
    checkpoint, weights and optimizer state) is kept in the version for the next
    incremental run, whose lineage (:meth:`adrank.train.lineage.Lineage.metadata`) the
    metadata records.
    """
    config = pinned.config
    figures = pinned.figures if figures is None else figures
    figures["metrics"] = metrics  # in the report (NaN as null) even when refused below
    figures["metrics"] = checked = checked_metrics(pinned.stage, pinned.spec.headline_metrics, metrics,
                                                   pinned.version)
    lineage = pinned.lineage(f"{pinned.stage}_{name}" if name else "")
    training = figures.get("training")
    digest = training.get("final_state_digest") if isinstance(training, dict) else None
    details = {**lineage.metadata(), "state_digest": digest, **(details or {})}
    model_version, model_path = export_model(
        layout.registry_root(config), pinned.stage, image_size=config.features.image_size,
        data_version=data_version, config=config_as_dict(config), metrics=checked,
        run_id=pinned.report.run_id, pairwise_model=pairwise_model, linear_model=linear_model,
        joint_model=joint_model, embedding_dim=config.train.embedding_dim, details=details,
        train_state=checkpoint,
    )
    figures["model_version"] = model_version
    with pinned.report.timed(f"{pinned.stage}{'_' + name if name else ''}_tracking"):
        figures["tracking"] = track_stage(
            config, pinned.report.run_id, pinned.stage,
            config_as_dict(lineage.train_config(train_config or config.train, pinned.spec.rank.steps_field)), checked,
            model_path, model_version, data_version=data_version, name=name)


__all__ = ["checked_metrics", "register_model"]
