"""The rank-side stage table: what each training stage trains on the Horovod ranks.

Contract: :data:`RANK_STAGES` maps a stage name to a
:class:`~adrank.train.ranks.settings.Stage`: its dataset roles,
step and learning-rate keys, build/loss functions and how the ranks score the held-out
sample (stage 3, ``joint``, trains one interaction module per run of the ranks:
``train.interaction`` names it). The driver's table
(:data:`adrank.train.run.STAGE_DRIVERS`) holds these specs next to its own functions; a
:class:`~adrank.train.ranks.settings.RankSettings` carries its stage's spec to the ranks.
This module is light and free of pyspark and TensorFlow at import (TensorFlow is
imported inside the build/loss functions) and imports nothing of the driver side.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from adrank.core import layout
from adrank.train.ranks.settings import HoldoutSpec, LossFn, Models, RankSettings, ScoreFn, Stage

if TYPE_CHECKING:
    import numpy as np
    import tensorflow as tf

# Dataset roles: which batches feed a step (``settings.files`` is keyed by them).
DETAIL, SEARCH, EXAMPLES, JOINT_ROLE = layout.DETAIL, layout.SEARCH, "examples", "joint_examples"

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
    from adrank.train.ranks.joint_model import JointModel

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
    from adrank.train.ranks.joint_model import joint_loss

    model = models[layout.JOINT]
    return lambda batch: joint_loss(model, batch)


def _pairwise_scores(models: Models) -> ScoreFn:
    model = models[layout.PAIRWISE]
    return lambda batch: model(batch, training=False)  # (sim_pos, sim_neg)


def _pair_figures(sim_pos: np.ndarray, sim_neg: np.ndarray) -> Mapping[str, float | int]:
    from adrank.train.ranks.metrics import pair_metrics

    return pair_metrics(sim_pos, sim_neg)


def _click_scores(model: tf.keras.Model) -> ScoreFn:
    """Scores of a click model (the LR, the joint model): (probability, label)."""
    import tensorflow as tf

    return lambda batch: (tf.sigmoid(model(batch, training=False)), batch["label"])


def _lr_scores(models: Models) -> ScoreFn:
    return _click_scores(models[layout.LR])


def _joint_scores(models: Models) -> ScoreFn:
    return _click_scores(models[layout.JOINT])


def _click_figures(probabilities: np.ndarray, labels: np.ndarray) -> Mapping[str, float | int]:
    from adrank.train.ranks.metrics import auc, log_loss

    return {"auc": auc(labels, probabilities), "log_loss": log_loss(labels, probabilities), "rows": labels.size}


RANK_STAGES: dict[str, Stage] = {
    stage.name: stage for stage in (
        Stage(layout.PAIRWISE, (DETAIL, SEARCH), "pair_steps", _build_pairwise, _pairwise_loss,
              primary=layout.PAIRWISE,
              holdout=HoldoutSpec("pairwise_accuracy", "pairwise_loss", _pairwise_scores, _pair_figures)),
        Stage(layout.LR, (EXAMPLES,), "lr_steps", _build_lr, _lr_loss,
              primary=layout.LR,
              holdout=HoldoutSpec("auc", "log_loss", _lr_scores, _click_figures)),
        Stage(layout.JOINT, (JOINT_ROLE,), "joint_steps", _build_joint, _joint_loss,
              primary=layout.JOINT, dense_lr_field="joint_dense_learning_rate",
              holdout=HoldoutSpec("auc", "log_loss", _joint_scores, _click_figures)),
    )
}


def rank_stage(stage: str) -> Stage:
    """The :class:`Stage` of a stage name; ValueError naming the known ones."""
    if stage not in RANK_STAGES:
        raise ValueError(f"unknown training stage {stage!r}; known: {sorted(RANK_STAGES)}")
    return RANK_STAGES[stage]


__all__ = ["DETAIL", "EXAMPLES", "JOINT_ROLE", "SEARCH", "RANK_STAGES", "rank_stage"]
