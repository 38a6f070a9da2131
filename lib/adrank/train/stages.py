"""The one table of training stages: what a stage trains on the ranks and how the driver runs it.

Contract: :data:`STAGES` maps a stage name to a :class:`Stage`; adding a stage (stage 3,
``joint``) is one entry here plus its build/loss functions and its driver runner. This
module is light and free of pyspark and TensorFlow at import: the rank side reads the
``build``/``loss`` callables (TensorFlow imported inside them) and the driver side
resolves ``driver``, a ``"module:function"`` name, only when it runs the stage.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from adrank import layout

if TYPE_CHECKING:
    import tensorflow as tf

    from adrank.train.checkpoints import RankSettings
    from adrank.train.run import PinnedData

# Dataset roles: which batches feed a step (``settings.files`` is keyed by them).
DETAIL, SEARCH, EXAMPLES = layout.DETAIL, layout.SEARCH, "examples"

Models = dict[str, "tf.keras.Model"]
LossFn = Callable[[Mapping[str, "tf.Tensor"]], "tf.Tensor"]


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
    """

    name: str
    roles: tuple[str, ...]
    steps_field: str
    build: Callable[[RankSettings], Models]
    loss: Callable[[Models], LossFn]
    primary: str
    headline_metrics: tuple[str, ...]
    driver: str

    def steps(self, settings: RankSettings) -> int:
        """The configured number of steps."""
        return int(getattr(settings.train, self.steps_field))

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


STAGES: dict[str, Stage] = {
    stage.name: stage for stage in (
        Stage(layout.PAIRWISE, (DETAIL, SEARCH), "pair_steps", _build_pairwise, _pairwise_loss,
              primary=layout.PAIRWISE, headline_metrics=("pairwise_accuracy", "pairwise_loss"),
              driver="adrank.train.run:train_pairwise"),
        Stage(layout.LR, (EXAMPLES,), "lr_steps", _build_lr, _lr_loss,
              primary=layout.LR, headline_metrics=("auc", "log_loss"),
              driver="adrank.train.run:train_lr"),
    )
}


def stage_spec(stage: str) -> Stage:
    """The :class:`Stage` of a stage name; ValueError naming the known ones."""
    if stage not in STAGES:
        raise ValueError(f"unknown training stage {stage!r}; known: {sorted(STAGES)}")
    return STAGES[stage]


__all__ = ["DETAIL", "EXAMPLES", "SEARCH", "STAGES", "Stage", "stage_spec"]
