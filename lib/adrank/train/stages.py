"""The one table of training stages: what a stage trains on the ranks and how the driver runs it.

Contract: :data:`STAGES` maps a stage name to a :class:`Stage`; a stage is one entry
here plus its build/loss functions and its driver runner (stage 3, ``joint``, trains one
interaction module per run of the ranks: ``train.interaction`` names it). This
module is light and free of pyspark and TensorFlow at import: the rank side reads the
``build``/``loss`` callables (TensorFlow imported inside them) and the driver side
resolves ``driver``, a ``"module:function"`` name, only when it runs the stage.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from adrank.core import layout

if TYPE_CHECKING:
    import numpy as np
    import tensorflow as tf

    from adrank.train.checkpoints import RankSettings
    from adrank.train.run import PinnedData

# Dataset roles: which batches feed a step (``settings.files`` is keyed by them).
DETAIL, SEARCH, EXAMPLES, JOINT_ROLE = layout.DETAIL, layout.SEARCH, "examples", "joint_examples"

Models = dict[str, "tf.keras.Model"]
LossFn = Callable[[Mapping[str, "tf.Tensor"]], "tf.Tensor"]
# batch -> two score columns [B] each: (sim_pos, sim_neg) or (probability, label)
ScoreFn = Callable[[Mapping[str, "tf.Tensor"]], tuple["tf.Tensor", "tf.Tensor"]]


@dataclass(frozen=True)
class HoldoutSpec:
    """How the ranks compute a stage's held-out metric at every checkpoint (the training curve).

    Attributes:
        metric: The metric drawn beside the loss (a key of ``figures``' result, in [0, 1]).
        loss: The held-out loss next to it (a key of ``figures``' result).
        scores: ``models -> batch -> (first, second)``, two score columns of the batch.
        figures: ``(first, second)`` numpy columns of the whole sample -> ``{metric, loss, ...}``.
    """

    metric: str
    loss: str
    scores: Callable[[Models], ScoreFn]
    figures: Callable[[np.ndarray, np.ndarray], Mapping[str, float | int]]


@dataclass(frozen=True)
class Stage:
    """What distinguishes one training stage.

    Attributes:
        name: The stage name (``--stage``, checkpoint and registry folder).
        roles: Dataset roles, alternated step by step among those that have data.
        steps_field: ``TrainConfig`` field with the number of steps.
        build: ``settings -> {name: model}`` (names become checkpoint keys).
        loss: ``models -> loss_fn(batch) -> scalar``.
        primary: The model whose dense/sparse variables are trained (all of it).
        headline_metrics: Held-out metrics a model is judged by: NaN means it is not registered.
        driver: ``"module:function"`` the driver runs for the stage (takes the
            :class:`adrank.train.run.PinnedData`); imported only then.
        holdout: How the ranks score the held-out sample at every checkpoint.
        dense_lr_field: ``TrainConfig`` field with the dense (RMSProp) learning rate.
    """

    name: str
    roles: tuple[str, ...]
    steps_field: str
    build: Callable[[RankSettings], Models]
    loss: Callable[[Models], LossFn]
    primary: str
    headline_metrics: tuple[str, ...]
    driver: str
    holdout: HoldoutSpec
    dense_lr_field: str = "dense_learning_rate"

    def steps(self, settings: RankSettings) -> int:
        """The configured number of steps."""
        return int(getattr(settings.train, self.steps_field))

    def dense_learning_rate(self, settings: RankSettings) -> float:
        """The configured dense learning rate (before scaling by the number of ranks)."""
        return float(getattr(settings.train, self.dense_lr_field))

    def run_driver(self, pinned: PinnedData) -> None:
        """Runs the stage's driver function (pyspark side) on the pinned data."""
        module, name = self.driver.split(":")
        getattr(importlib.import_module(module), name)(pinned)


def _build_pairwise(settings: RankSettings) -> Models:
    from adrank.train.ranks.models import PairwiseModel, query_tower, sku_tower

    train = settings.train
    tower = sku_tower(train.tower, settings.features.image_size, train.embedding_dim, width=train.tower_width)
    queries = query_tower(train.embedding_dim, width=train.tower_width)
    return {layout.PAIRWISE: PairwiseModel(tower, queries)}


def _pairwise_loss(models: Models) -> LossFn:
    from adrank.train.ranks.models import pairwise_loss

    model = models[layout.PAIRWISE]
    return lambda batch: pairwise_loss(*model(batch, training=True))


def _build_lr(settings: RankSettings) -> Models:
    from adrank.train.ranks.models import LinearModel

    return {layout.LR: LinearModel(settings.features.hash_bits)}


def _lr_loss(models: Models) -> LossFn:
    import tensorflow as tf

    model = models[layout.LR]

    def loss_fn(batch: Mapping[str, tf.Tensor]) -> tf.Tensor:
        labels = tf.cast(batch["label"], tf.float32)
        logits = model(batch, training=True)
        return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels, logits))

    return loss_fn


def _build_joint(settings: RankSettings) -> Models:
    """The joint model of ``train.interaction``; with ``finetune_cnn`` its towers start
    from the registered stage-1 model ``settings.init_from``."""
    from adrank.train.ranks.models import JointModel

    train = settings.train
    towers = _registered_towers(settings) if train.finetune_cnn else (None, None)
    model = JointModel(train.interaction, settings.features.hash_bits, train.embedding_dim,
                       hidden=train.dnn_hidden, sku_tower=towers[0], query_tower=towers[1])
    return {layout.JOINT: model}


def _registered_towers(settings: RankSettings) -> tuple[tf.keras.Model, tf.keras.Model]:
    """Stage-1 towers of this config, holding the variables of the SavedModel ``init_from``."""
    import tensorflow as tf

    from adrank.train.ranks.models import copy_variables

    if not settings.init_from:
        raise ValueError("fine-tuning the towers needs the registered stage-1 model (settings.init_from)")
    pairwise = _build_pairwise(settings)[layout.PAIRWISE]
    copy_variables(tf.saved_model.load(settings.init_from).model_variables, pairwise.variables)
    return pairwise.sku_tower, pairwise.query_tower


def _joint_loss(models: Models) -> LossFn:
    from adrank.train.ranks.models import joint_loss

    model = models[layout.JOINT]
    return lambda batch: joint_loss(model, batch)


def _pairwise_scores(models: Models) -> ScoreFn:
    model = models[layout.PAIRWISE]
    return lambda batch: model(batch, training=False)  # (sim_pos, sim_neg)


def _pair_figures(sim_pos: np.ndarray, sim_neg: np.ndarray) -> Mapping[str, float | int]:
    from adrank.train.evaluate import pair_metrics

    return pair_metrics(sim_pos, sim_neg)


def _click_scores(name: str) -> Callable[[Models], ScoreFn]:
    """Scores of a click model (the LR, the joint model): (probability, label)."""
    def scores(models: Models) -> ScoreFn:
        import tensorflow as tf

        model = models[name]
        return lambda batch: (tf.sigmoid(model(batch, training=False)), batch["label"])

    return scores


def _click_figures(probabilities: np.ndarray, labels: np.ndarray) -> Mapping[str, float | int]:
    from adrank.train.evaluate import auc, log_loss

    return {"auc": auc(labels, probabilities), "log_loss": log_loss(labels, probabilities), "rows": labels.size}


STAGES: dict[str, Stage] = {
    stage.name: stage for stage in (
        Stage(layout.PAIRWISE, (DETAIL, SEARCH), "pair_steps", _build_pairwise, _pairwise_loss,
              primary=layout.PAIRWISE, headline_metrics=("pairwise_accuracy", "pairwise_loss"),
              driver="adrank.train.run:train_pairwise",
              holdout=HoldoutSpec("pairwise_accuracy", "pairwise_loss", _pairwise_scores, _pair_figures)),
        Stage(layout.LR, (EXAMPLES,), "lr_steps", _build_lr, _lr_loss,
              primary=layout.LR, headline_metrics=("auc", "log_loss"),
              driver="adrank.train.run:train_lr",
              holdout=HoldoutSpec("auc", "log_loss", _click_scores(layout.LR), _click_figures)),
        Stage(layout.JOINT, (JOINT_ROLE,), "joint_steps", _build_joint, _joint_loss,
              primary=layout.JOINT, headline_metrics=("auc", "log_loss"),
              driver="adrank.train.joint:train_joint", dense_lr_field="joint_dense_learning_rate",
              holdout=HoldoutSpec("auc", "log_loss", _click_scores(layout.JOINT), _click_figures)),
    )
}


def stage_spec(stage: str) -> Stage:
    """The :class:`Stage` of a stage name; ValueError naming the known ones."""
    if stage not in STAGES:
        raise ValueError(f"unknown training stage {stage!r}; known: {sorted(STAGES)}")
    return STAGES[stage]


__all__ = ["DETAIL", "EXAMPLES", "JOINT_ROLE", "SEARCH", "STAGES", "HoldoutSpec", "Stage", "stage_spec"]
