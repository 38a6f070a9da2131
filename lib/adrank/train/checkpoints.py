"""What a training job hands its ranks (:class:`RankSettings`) and where its files go.

Contract: :func:`make_settings` turns the config into one frozen, typed, picklable
:class:`RankSettings` per stage run; every rank and the launcher read it by attribute.
Checkpoints of a stage live under ``<checkpoint_root>/<stage>/data-<version>-<config hash>``
(:func:`checkpoint_dir`): a changed training config, seed or data version starts fresh,
while changing only the step count, the launcher, threads or checkpoint frequency resumes.
A rank that fails leaves a one-line reason in ``failure-rank<r>.txt`` there, for the
launcher's message. No pyspark and no TensorFlow here: ranks and the driver import it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from adrank.core import layout
from adrank.core.config import TrainConfig

if TYPE_CHECKING:
    from adrank.core.config import Config

CHECKPOINT_PREFIX = "ckpt"
TENSORBOARD_FOLDER = "tensorboard"
# TrainConfig fields that do not change what is trained: a run that differs only in
# these resumes the same checkpoints (so more steps extend a finished run).
NOT_IN_CONFIG_HASH = frozenset(
    {"launcher", "checkpoint_every", "registry_folder", "pair_steps", "lr_steps", "joint_steps",
     "threads_per_rank", "holdout_curve_rows"})
# TrainConfig fields that shape stage 3 only: the other stages' checkpoints ignore them.
JOINT_ONLY = frozenset(
    {"interaction", "finetune_cnn", "joint_batch_size", "joint_dense_learning_rate", "dnn_hidden"})
DEFAULT_LOG_EVERY = 10
DEFAULT_STEP_TIMEOUT_S = 900.0

# A pinned Delta version, or one per table (``{"training_examples": 3, "stage1_pairs_train": 1}``).
DataVersion = int | str | Mapping[str, int]


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
        stage: A key of :data:`adrank.train.stages.STAGES`.
        train: The config's ``train`` section (launcher, ranks, threads, sizes, rates).
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
        seed: Seeds Python, numpy and TensorFlow on every rank.
        log_every: Rank 0 logs the rank-averaged loss every this many steps.
        step_timeout_s: Watchdog: a rank whose step makes no progress this long exits
            (0 disables).
        deterministic: Turn on ``tf.config.experimental.enable_op_determinism``.
        init_from: A registered SavedModel whose variables start the towers of a model
            that fine-tunes them (stage 3 with ``train.finetune_cnn``); empty = none.
        tensorboard_dir: Where rank 0 writes TensorBoard summaries (loss, steps/s, learning
            rates every ``log_every`` steps); empty = ``<checkpoint dir>/tensorboard``
            (:func:`tensorboard_dir`).
    """

    stage: str
    train: TrainConfig
    features: FeatureSizes
    data_version: DataVersion
    checkpoint_root: str
    files: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    holdout_files: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    run_id: str = ""
    seed: int = 0
    log_every: int = DEFAULT_LOG_EVERY
    step_timeout_s: float = DEFAULT_STEP_TIMEOUT_S
    deterministic: bool = False
    init_from: str = ""
    tensorboard_dir: str = ""

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


def make_settings(
    config: Config,
    *,
    stage: str,
    data_version: DataVersion,
    files: Mapping[str, Sequence[str]] | None = None,
    holdout_files: Mapping[str, Sequence[str]] | None = None,
    checkpoint_root: str | None = None,
    run_id: str = "",
    seed: int = 0,
    log_every: int = DEFAULT_LOG_EVERY,
    step_timeout_s: float = DEFAULT_STEP_TIMEOUT_S,
    deterministic: bool = False,
    train: TrainConfig | None = None,
    init_from: str = "",
    tensorboard_dir: str = "",
) -> RankSettings:
    """The settings of one stage run; ``checkpoint_root`` defaults to ``layout.checkpoint_root``.

    ``train`` replaces ``config.train`` (stage 3 trains one settings per interaction module).

    Raises:
        ValueError: Unknown stage.
    """
    from adrank.train.stages import stage_spec

    stage_spec(stage)
    features = config.features
    return RankSettings(
        stage=stage, train=train if train is not None else config.train,
        features=FeatureSizes(features.image_size, features.hash_bits, features.max_sparse_ids),
        data_version=_plain(data_version),
        checkpoint_root=str(checkpoint_root if checkpoint_root is not None else layout.checkpoint_root(config)),
        files=_file_lists(files), holdout_files=_file_lists(holdout_files),
        run_id=run_id, seed=int(seed), log_every=int(log_every),
        step_timeout_s=float(step_timeout_s), deterministic=bool(deterministic), init_from=str(init_from),
        tensorboard_dir=str(tensorboard_dir),
    )


def _file_lists(files: Mapping[str, Sequence[str]] | None) -> dict[str, tuple[str, ...]]:
    """Per role, the files as a tuple of strings (picklable, frozen)."""
    return {role: tuple(str(f) for f in paths) for role, paths in (files or {}).items()}


def _plain(value: DataVersion) -> DataVersion:
    """A mapping (also a read-only proxy) -> a plain dict."""
    return {str(k): v for k, v in value.items()} if isinstance(value, Mapping) else value


def config_hash(settings: RankSettings) -> str:
    """A short hash of what the stage trains: train config (minus step counts and
    operational fields), feature sizes and seed."""
    ignored = NOT_IN_CONFIG_HASH | (frozenset() if settings.stage == layout.JOINT else JOINT_ONLY)
    train = {k: v for k, v in dataclasses.asdict(settings.train).items() if k not in ignored}
    keyed = {"stage": settings.stage, "train": train, "features": dataclasses.asdict(settings.features),
             "seed": settings.seed, "init_from": settings.init_from}
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
    """``settings.tensorboard_dir``, or ``<checkpoint dir>/tensorboard`` when it is empty."""
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


def failure_file(settings: RankSettings, rank: int) -> str:
    """Where a rank leaves the one-line reason it failed (read by the launcher)."""
    return os.path.join(checkpoint_dir(settings), f"failure-rank{rank}.txt")


def write_failure(path: str, line: str) -> None:
    """Best effort: one line into a failure file (its folder made if missing)."""
    with contextlib.suppress(OSError):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as out:
            out.write(line + "\n")


def record_failure(settings: RankSettings, rank: int, exc: BaseException) -> None:
    """``<ExceptionType>: <first line>`` into :func:`failure_file`."""
    first = (str(exc).strip().splitlines() or [""])[0][:300]
    write_failure(failure_file(settings, rank), f"{type(exc).__name__}: {first}")


def recorded_failures(settings: RankSettings) -> dict[int, str]:
    """The failure lines ranks left for this stage/data/config, by rank."""
    directory = checkpoint_dir(settings)
    found = {}
    for name in sorted(os.listdir(directory)) if os.path.isdir(directory) else []:
        match = re.fullmatch(r"failure-rank(\d+)\.txt", name)
        if match:
            with open(os.path.join(directory, name)) as text:
                found[int(match.group(1))] = text.read().strip()
    return found


def clear_failures(settings: RankSettings) -> None:
    """Removes the failure lines of an earlier launch."""
    for rank in recorded_failures(settings):
        with contextlib.suppress(OSError):
            os.remove(failure_file(settings, rank))


__all__ = [
    "CHECKPOINT_PREFIX", "DataVersion", "FeatureSizes", "RankSettings", "checkpoint_dir",
    "clear_failures", "config_hash", "failure_file", "last_checkpoint_step", "make_settings",
    "record_failure", "recorded_failures", "tensorboard_dir", "write_failure",
]
