"""What a rank is handed (:class:`RankSettings`) and where a stage run's files go.

Contract: a :class:`RankSettings` is one frozen, typed, picklable value per stage run; every
rank and the launcher read it by attribute. It holds the rank-side stage spec itself
(:class:`Stage`, the rows of :data:`adrank.train.ranks.stages.RANK_STAGES`), so nothing on the way to the ranks looks the
stage up by name again. The driver makes it from the config
(:func:`adrank.train.launch.make_settings`); the rank's seed, log interval, step
watchdog, determinism and TensorBoard folder are ``train.*`` keys of the config.
Checkpoints of a stage live under ``<checkpoint_root>/<stage>/data-<version>-<config hash>``
(:func:`checkpoint_dir`): a changed training config, seed or data version starts fresh,
while changing only the step count, the launcher, threads, checkpoint frequency or the
operational keys (log interval, watchdog, TensorBoard folder, determinism) resumes.
No pyspark and no TensorFlow here: ranks and the driver import it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from adrank.core import layout
from adrank.core.config import TrainConfig

if TYPE_CHECKING:
    import numpy as np
    import tensorflow as tf

CHECKPOINT_PREFIX = "ckpt"
TENSORBOARD_FOLDER = "tensorboard"
# TrainConfig fields that do not change what is trained: a run that differs only in
# these resumes the same checkpoints (so more steps extend a finished run). The seed is
# hashed on its own (``"seed"``), as it always was.
NOT_IN_CONFIG_HASH = frozenset(
    {"launcher", "checkpoint_every", "registry_folder", "pair_steps", "lr_steps", "joint_steps",
     "threads_per_rank", "holdout_curve_rows", "seed", "log_every", "step_timeout_s", "deterministic",
     "tensorboard_dir", "mode", "window_days", "pairwise_every_days"})
# TrainConfig fields that shape stage 3 only: the other stages' checkpoints ignore them.
JOINT_ONLY = frozenset(
    {"interaction", "finetune_cnn", "joint_batch_size", "joint_dense_learning_rate", "dnn_hidden"})

# A pinned Delta version, or one per table (``{"training_examples": 3, "stage1_pairs_train": 1}``).
DataVersion = int | str | Mapping[str, int]

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
        holdout: How the ranks score the held-out sample at every checkpoint.
        dense_lr_field: ``TrainConfig`` field with the dense (RMSProp) learning rate.
    """

    name: str
    roles: tuple[str, ...]
    steps_field: str
    build: Callable[[RankSettings], Models]
    loss: Callable[[Models], LossFn]
    primary: str
    holdout: HoldoutSpec
    dense_lr_field: str = "dense_learning_rate"

    def steps(self, settings: RankSettings) -> int:
        """The configured number of steps."""
        return int(getattr(settings.train, self.steps_field))

    def dense_learning_rate(self, settings: RankSettings) -> float:
        """The configured dense learning rate (before scaling by the number of ranks)."""
        return float(getattr(settings.train, self.dense_lr_field))


@dataclass(frozen=True)
class FeatureSizes:
    """The feature sizes a rank needs (from ``config.features``)."""

    image_size: int
    hash_bits: int
    max_sparse_ids: int


@dataclass(frozen=True)
class RankSettings:
    """Everything one stage run needs on a rank and in the launcher (frozen, picklable).

    Attributes:
        spec: The rank-side stage spec (:data:`adrank.train.ranks.stages.RANK_STAGES`).
        train: The config's ``train`` section (launcher, ranks, threads, sizes, rates, seed,
            log interval, watchdog, determinism, TensorBoard folder).
        features: Feature sizes.
        data_version: The pinned Delta version(s) the file lists come from.
        checkpoint_root: Folder under which checkpoints go (every rank and the driver
            must see it: on a cluster a shared mount).
        files: Per dataset role (``detail``, ``search``, ``examples``), the Parquet files
            to read (live files of the pinned version).
        holdout_files: Per dataset role, the live files of the held-out side (the
            held-out dates); the ranks score at most ``train.holdout_curve_rows`` of their
            rows at every checkpoint (the training curve's held-out metric). Empty: no
            held-out curve.
        run_id: The job's run id (logged, returned with the metrics).
        init_from: A registered SavedModel whose variables start the towers of a model
            that fine-tunes them (stage 3 with ``train.finetune_cnn``); empty = none.
        warm_start: The checkpoint (path prefix) of a registered version's training state
            (weights and optimizer state) that an incremental run starts from when its own
            checkpoint folder is empty; empty = random weights (docs/training.md).
    """

    spec: Stage
    train: TrainConfig
    features: FeatureSizes
    data_version: DataVersion
    checkpoint_root: str
    files: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    holdout_files: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    run_id: str = ""
    init_from: str = ""
    warm_start: str = ""

    @property
    def stage(self) -> str:
        """The stage name (``--stage``, checkpoint folder)."""
        return self.spec.name

    @property
    def launcher(self) -> str:
        """``train.launcher``: ``auto``, ``horovodrun`` or ``spark``."""
        return self.train.launcher

    @property
    def ranks(self) -> int:
        """``train.ranks``: Horovod processes."""
        return self.train.ranks

    @property
    def threads_per_rank(self) -> int:
        """``train.threads_per_rank``: TensorFlow intra/inter-op threads of each rank."""
        return self.train.threads_per_rank

    @property
    def seed(self) -> int:
        """``train.seed``: seeds Python, numpy and TensorFlow on every rank."""
        return self.train.seed

    @property
    def log_every(self) -> int:
        """``train.log_every``: rank 0 logs the rank-averaged loss every this many steps."""
        return self.train.log_every

    @property
    def step_timeout_s(self) -> float:
        """``train.step_timeout_s``: a rank whose step makes no progress this long exits (0: never)."""
        return self.train.step_timeout_s

    @property
    def deterministic(self) -> bool:
        """``train.deterministic``: turn on ``tf.config.experimental.enable_op_determinism``."""
        return self.train.deterministic

    @property
    def tensorboard_dir(self) -> str:
        """``train.tensorboard_dir``: where rank 0 writes summaries; empty = :func:`tensorboard_dir`'s default."""
        return self.train.tensorboard_dir

    @property
    def steps(self) -> int:
        """The number of steps the stage trains to."""
        return self.spec.steps(self)


def config_hash(settings: RankSettings) -> str:
    """A short hash of what the stage trains: train config (minus step counts and
    operational fields), feature sizes and seed."""
    ignored = NOT_IN_CONFIG_HASH | (frozenset() if settings.stage == layout.JOINT else JOINT_ONLY)
    train = {k: v for k, v in dataclasses.asdict(settings.train).items() if k not in ignored}
    keyed = {"stage": settings.stage, "train": train, "features": dataclasses.asdict(settings.features),
             "seed": settings.seed, "init_from": settings.init_from}
    if settings.warm_start:  # an incremental run never resumes a full run's checkpoints (nor another parent's)
        keyed["warm_start"] = settings.warm_start
    text = json.dumps(keyed, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def checkpoint_dir(settings: RankSettings) -> str:
    """``<checkpoint_root>/<stage>/data-<version>-<config hash>`` (a local path)."""
    version = settings.data_version
    text = version if isinstance(version, (int, str)) else json.dumps(version, sort_keys=True)
    safe = re.sub(r"[^A-Za-z0-9._=-]+", "_", str(text)).strip("_")[:80] or "none"
    return layout.join_path(settings.checkpoint_root, settings.stage,
                            f"data-{safe}-{config_hash(settings)}")


def tensorboard_dir(settings: RankSettings) -> str:
    """``train.tensorboard_dir``, or ``<checkpoint dir>/tensorboard`` when it is empty."""
    return settings.tensorboard_dir or layout.join_path(checkpoint_dir(settings), TENSORBOARD_FOLDER)


def last_checkpoint_step(settings: RankSettings) -> int | None:
    """The step of the newest checkpoint of this stage/data/config, without TensorFlow.

    Reads the ``checkpoint`` index file that ``tf.train.CheckpointManager`` keeps
    (checkpoints are saved as ``ckpt-<step>``). ``None`` when there is none.
    """
    index = os.path.join(checkpoint_dir(settings), "checkpoint")
    try:
        with open(index) as file:
            text = file.read()
    except OSError:
        return None
    match = re.search(r'^model_checkpoint_path:\s*"(?:.*/)?' + CHECKPOINT_PREFIX + r'-(\d+)"',
                      text, re.M)
    return int(match.group(1)) if match else None


def last_checkpoint_path(settings: RankSettings) -> str:
    """The path prefix of the newest checkpoint (``<checkpoint dir>/ckpt-<step>``); empty when none."""
    step = last_checkpoint_step(settings)
    return "" if step is None else os.path.join(checkpoint_dir(settings), f"{CHECKPOINT_PREFIX}-{step}")


__all__ = [
    "CHECKPOINT_PREFIX", "JOINT_ONLY", "NOT_IN_CONFIG_HASH", "TENSORBOARD_FOLDER", "DataVersion", "FeatureSizes",
    "HoldoutSpec", "LossFn", "Models", "RankSettings", "ScoreFn", "Stage", "checkpoint_dir", "config_hash", "last_checkpoint_path",
    "last_checkpoint_step", "tensorboard_dir",
]
