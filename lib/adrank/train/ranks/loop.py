"""The train loop that runs on every Horovod rank: one function per job, any stage.

:func:`train_stage` is what the launcher (:mod:`adrank.train.launch`) ships to the
ranks. It takes plain, picklable arguments (``settings``: a dict made by
:func:`make_settings`) and imports TensorFlow and Horovod inside, so this module is
cheap to import on a Spark driver (DESIGN.md conventions #5-#7).

On every rank, in the Horovod order: cap threads + ``hvd.init()`` + pin the local GPU
(:func:`adrank.train.ranks.hvd_setup.init_horovod`); seed; build the stage's model(s) and
the train step (:func:`adrank.train.ranks.gradients.make_train_step`, dense LR scaled by
``hvd.size()``) and create the optimizer state; rank 0 restores the newest checkpoint
if there is one; the start step, every model variable and the optimizer state are
broadcast from rank 0 (so a resumed step 1 computes its gradients from the restored
weights on every rank); then exactly ``steps - start`` steps run on every rank (no
rank may leave early: a rank whose data runs dry fails loudly and the launcher stops
the others); after the first step the variables and optimizer state are broadcast
again (:func:`broadcast_initial_state`, the Horovod convention); only rank 0 logs and
checkpoints.

Stages are a small table (:data:`STAGES`): how to build the models, which dataset
*roles* feed the stage (alternated step by step: ``pairwise`` alternates ``detail``
and ``search`` triplet batches), the loss, and which config fields hold the step
count and batch size. Stage 3 (``joint``) is one more entry.

Data comes from a ``dataset_fn(role, rank, size, settings, start_batch)`` returning a
``tf.data.Dataset`` of dict batches (or a context manager yielding one, entered for the
length of training), or ``None`` when the role has no data; its default
(:func:`input_dataset`) reads the Petastorm files listed in ``settings["files"][role]``
through :mod:`adrank.train.ranks.input`. ``start_batch`` is how
many batches of that role the checkpointed run already consumed: a seekable source
(the tests' synthetic one) starts there and a resumed run sees exactly the batches an
uninterrupted run would have; the Petastorm reader cannot seek, so after a resume it
starts a fresh pass over its shard (statistically equivalent, not bit-identical).

Checkpoints (rank 0): ``tf.train.Checkpoint`` of the model(s), both optimizers and a
step counter, under ``<checkpoint_root>/<stage>/<data version>-<config hash>``
(:func:`checkpoint_dir`): a changed training config or data version starts fresh,
while changing only the step count (or the launcher, or checkpoint frequency) resumes.
A checkpoint is written every ``checkpoint_every`` steps and after the last step.
Before each checkpoint the ranks average their batch-norm moving statistics (they
differ per rank because each rank normalises its own batches; training itself uses
batch statistics, so this only affects inference), so the checkpoint reflects every
rank's data.

A per-rank watchdog (``settings["step_timeout_s"]``) ends a rank whose step makes no
progress for that long (e.g. a collective waiting for a peer that hangs without
dying); the launcher then stops the rest. A peer that *dies* is handled by the
launcher itself (Gloo's runner terminates the others). A rank that fails leaves a
one-line reason in ``<checkpoint dir>/failure-rank<r>.txt`` for the launcher's message.

The checkpoint root must be a path every rank's host and the driver can read: on one
machine any local folder; with ``launcher: spark`` on a cluster a shared mount
(NFS, a FUSE-mounted bucket), or rank 0's checkpoints are invisible to the next run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

LOGGER_NAME = __name__
DETAIL, SEARCH, EXAMPLES = "detail", "search", "examples"
CHECKPOINT_PREFIX = "ckpt"
# TrainConfig fields that do not change what is trained: a run that differs only in
# these resumes the same checkpoints (so more steps extend a finished run).
NOT_IN_CONFIG_HASH = frozenset(
    {"launcher", "checkpoint_every", "registry_folder", "pair_steps", "lr_steps", "threads_per_rank"})
DEFAULT_LOG_EVERY = 10
DEFAULT_STEP_TIMEOUT_S = 900.0
# The first step traces the step function(s) and may build big towers: it gets longer.
FIRST_STEP_TIMEOUT_FACTOR = 4.0

DatasetFn = Callable[[str, int, int, Mapping[str, Any], int], Any]
StepHook = Callable[[int, int], None]


# --------------------------------------------------------------------------------
# Settings: the plain dict shipped to every rank
# --------------------------------------------------------------------------------


def make_settings(
    config: Any,
    *,
    data_version: Any,
    files: Mapping[str, Sequence[str]] | None = None,
    checkpoint_root: str,
    run_id: str = "",
    seed: int = 0,
    log_every: int = DEFAULT_LOG_EVERY,
    step_timeout_s: float = DEFAULT_STEP_TIMEOUT_S,
    deterministic: bool = False,
) -> dict[str, Any]:
    """The picklable settings of one training job (plain dicts, lists, strs, numbers).

    Args:
        config: The :class:`adrank.config.Config` (its ``train`` and ``features``
            sections are copied).
        data_version: The pinned Delta version(s) the file lists come from: an int or
            any JSON-able value (e.g. ``{"training_examples": 3, "sku_images": 5}``).
        files: Per dataset role (``"detail"``, ``"search"``, ``"examples"``), the
            Petastorm/Parquet files to read (live files of the pinned version).
        checkpoint_root: Folder under which checkpoints go (local path; see
            :func:`checkpoint_dir`).
        run_id: The job's run id (logged, returned with the metrics).
        seed: Seeds Python, numpy and TensorFlow on every rank.
        log_every: Rank 0 logs the rank-averaged loss every this many steps.
        step_timeout_s: Watchdog: a rank whose step makes no progress this long
            exits (0 disables).
        deterministic: Turn on ``tf.config.experimental.enable_op_determinism``.
    """
    features = config.features
    return {
        "train": _plain(dataclasses.asdict(config.train)),
        "features": {"image_size": features.image_size, "hash_bits": features.hash_bits,
                     "max_sparse_ids": features.max_sparse_ids},
        "data_version": _plain(data_version),
        "files": {role: [str(f) for f in paths] for role, paths in (files or {}).items()},
        "checkpoint_root": str(checkpoint_root),
        "run_id": run_id,
        "seed": int(seed),
        "log_every": int(log_every),
        "step_timeout_s": float(step_timeout_s),
        "deterministic": bool(deterministic),
    }


def _plain(value: Any) -> Any:
    """Mappings (also read-only proxies) -> dict, tuples -> list, recursively."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def config_hash(stage: str, settings: Mapping[str, Any]) -> str:
    """A short hash of what the stage trains: train config (minus step counts and
    operational fields), feature sizes and seed."""
    train = {k: v for k, v in settings["train"].items() if k not in NOT_IN_CONFIG_HASH}
    keyed = {"stage": stage, "train": train, "features": settings["features"],
             "seed": settings.get("seed", 0)}
    text = json.dumps(keyed, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def checkpoint_dir(stage: str, settings: Mapping[str, Any]) -> str:
    """``<checkpoint_root>/<stage>/data-<version>-<config hash>`` (a local path).

    TensorFlow checkpoints also write to ``gs://`` and, with tensorflow-io, ``s3://``,
    but the :func:`last_checkpoint_step` reader here reads local files only.
    """
    version = settings["data_version"]
    text = version if isinstance(version, (int, str)) else json.dumps(version, sort_keys=True)
    safe = re.sub(r"[^A-Za-z0-9._=-]+", "_", str(text)).strip("_")[:80] or "none"
    root = settings["checkpoint_root"].rstrip("/")
    return f"{root}/{stage}/data-{safe}-{config_hash(stage, settings)}"


def last_checkpoint_step(stage: str, settings: Mapping[str, Any]) -> int | None:
    """The step of the newest checkpoint of this stage/data/config, without TensorFlow.

    Reads the ``checkpoint`` index file that ``tf.train.CheckpointManager`` keeps
    (checkpoints are saved as ``ckpt-<step>``). ``None`` when there is none.
    """
    index = os.path.join(checkpoint_dir(stage, settings), "checkpoint")
    try:
        text = open(index).read()
    except OSError:
        return None
    match = re.search(r'^model_checkpoint_path:\s*"(?:.*/)?' + CHECKPOINT_PREFIX + r'-(\d+)"',
                      text, re.M)
    return int(match.group(1)) if match else None


# --------------------------------------------------------------------------------
# Stages
# --------------------------------------------------------------------------------


@dataclass(frozen=True)
class StageSpec:
    """What distinguishes one training stage.

    Attributes:
        roles: Dataset roles, alternated step by step among those that have data.
        steps_field: TrainConfig field with the number of steps.
        build: ``settings -> {name: model}`` (names become checkpoint keys).
        loss: ``models -> loss_fn(batch) -> scalar``.
        primary: The model whose dense/sparse variables are trained (all of it).
    """

    roles: tuple[str, ...]
    steps_field: str
    build: Callable[[Mapping[str, Any]], dict[str, Any]]
    loss: Callable[[dict[str, Any]], Callable[[Any], Any]]
    primary: str


def _build_pairwise(settings: Mapping[str, Any]) -> dict[str, Any]:
    from adrank.train.ranks.models import PairwiseModel, query_tower, sku_tower

    train, image_size = settings["train"], settings["features"]["image_size"]
    tower = sku_tower(train["tower"], image_size, train["embedding_dim"], width=train["tower_width"])
    queries = query_tower(train["embedding_dim"], width=train["tower_width"])
    return {"pairwise": PairwiseModel(tower, queries)}


def _pairwise_loss(models: dict[str, Any]) -> Callable[[Any], Any]:
    from adrank.train.ranks.models import pairwise_loss

    model = models["pairwise"]
    return lambda batch: pairwise_loss(*model(batch, training=True))


def _build_lr(settings: Mapping[str, Any]) -> dict[str, Any]:
    from adrank.train.ranks.models import LinearModel

    return {"lr": LinearModel(settings["features"]["hash_bits"])}


def _lr_loss(models: dict[str, Any]) -> Callable[[Any], Any]:
    import tensorflow as tf

    model = models["lr"]

    def loss_fn(batch: Mapping[str, Any]) -> Any:
        labels = tf.cast(batch["label"], tf.float32)
        logits = model(batch, training=True)
        return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels, logits))

    return loss_fn


STAGES: dict[str, StageSpec] = {
    "pairwise": StageSpec((DETAIL, SEARCH), "pair_steps", _build_pairwise, _pairwise_loss, "pairwise"),
    "lr": StageSpec((EXAMPLES,), "lr_steps", _build_lr, _lr_loss, "lr"),
}


def stage_spec(stage: str) -> StageSpec:
    """The :class:`StageSpec` of a stage name; ValueError naming the known ones."""
    if stage not in STAGES:
        raise ValueError(f"unknown training stage {stage!r}; known: {sorted(STAGES)}")
    return STAGES[stage]


def stage_steps(stage: str, settings: Mapping[str, Any]) -> int:
    """The configured number of steps of a stage."""
    return int(settings["train"][stage_spec(stage).steps_field])


# --------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------


def input_dataset(role: str, rank: int, size: int, settings: Mapping[str, Any],
                  start_batch: int) -> Any:
    """The default ``dataset_fn``: the Petastorm files of a role, or None without files.

    Returns the context manager of :func:`adrank.train.ranks.input.pair_dataset` /
    :func:`~adrank.train.ranks.input.example_dataset` (endless: ``num_epochs=None``); the
    loop enters it, so the reader stops when training ends. A Petastorm reader cannot
    seek: after a resume it starts a fresh pass over its shard, shuffled with a seed
    offset by ``start_batch`` so it does not replay the first run's order.
    """
    files = list(settings.get("files", {}).get(role) or [])
    if not files:
        return None
    from adrank.train.ranks import input as train_input

    train, features = settings["train"], settings["features"]
    seed = int(settings.get("seed", 0)) + start_batch
    if role in (DETAIL, SEARCH):
        return train_input.pair_dataset(files, rank, size, train["pair_batch_size"],
                                        features["image_size"], role, seed=seed)
    if role == EXAMPLES:
        return train_input.example_dataset(files, rank, size, train["lr_batch_size"],
                                           features["max_sparse_ids"], seed=seed)
    raise ValueError(f"no default dataset for role {role!r}")


def role_schedule(roles: Sequence[str], step: int) -> str:
    """The role of global step ``step`` (0-based): roles alternate round-robin."""
    return roles[step % len(roles)]


def batches_consumed(roles: Sequence[str], role: str, steps: int) -> int:
    """How many batches of ``role`` the first ``steps`` steps consumed."""
    return sum(1 for s in range(steps) if role_schedule(roles, s) == role)


# --------------------------------------------------------------------------------
# The rank function
# --------------------------------------------------------------------------------


def train_stage(stage: str, settings: Mapping[str, Any], dataset_fn: DatasetFn | None = None,
                on_step: StepHook | None = None) -> dict[str, Any]:
    """Trains one stage on this rank; every rank of the job calls it.

    Args:
        stage: A key of :data:`STAGES` (``"pairwise"``, ``"lr"``).
        settings: From :func:`make_settings` (plain, picklable).
        dataset_fn: ``(role, rank, size, settings, start_batch) -> tf.data.Dataset |
            None`` of dict batches; :func:`input_dataset` when omitted.
        on_step: Called as ``on_step(step, rank)`` after each finished step
            (``step`` is 1-based, checkpoint included); for tests and progress hooks.

    Returns:
        JSON-able metrics (every rank returns them; the launcher keeps rank 0's):
        ``stage``, ``start_step``, ``final_step``, ``steps_run``, ``loss`` (rank mean
        of the last step's loss, NaN when no step ran), ``losses`` ([step, rank-mean
        loss] at each log step and the last), ``last_checkpoint_step``,
        ``checkpoint_dir``, ``initial_checksum`` / ``variable_checksums`` (sum of
        |trainable variable| after the initial broadcast / at the end, the latter per
        rank), ``roles``, ``seconds``, ``steps_per_s``, ``data_version``, ``run_id``,
        ``ranks``.

    Raises:
        ValueError: Unknown stage. RuntimeError: a role has data on some ranks only,
        or a dataset runs dry.
    """
    spec = stage_spec(stage)
    started = time.perf_counter()
    from adrank.train.ranks.hvd_setup import init_horovod

    threads = int(settings["train"].get("threads_per_rank", 1))
    info = init_horovod(threads, threads)
    _configure_logging(info.rank)
    watchdog = _Watchdog(float(settings.get("step_timeout_s", 0)), stage, info.rank,
                         failure_file(stage, settings, info.rank))
    try:
        run = _RankRun(spec, stage, settings, info)
        run.restore_or_start()
        run.train(dataset_fn or input_dataset, on_step, watchdog)
        return run.metrics(started)
    except BaseException as exc:
        _record_failure(stage, settings, info.rank, exc)
        raise
    finally:
        watchdog.stop()


def failure_file(stage: str, settings: Mapping[str, Any], rank: int) -> str:
    """Where a rank leaves the one-line reason it failed (read by the launcher)."""
    return os.path.join(checkpoint_dir(stage, settings), f"failure-rank{rank}.txt")


def _record_failure(stage: str, settings: Mapping[str, Any], rank: int, exc: BaseException) -> None:
    """Best effort: ``<ExceptionType>: <first line>`` into :func:`failure_file`."""
    first = (str(exc).strip().splitlines() or [""])[0][:300]
    try:
        path = failure_file(stage, settings, rank)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as out:
            out.write(f"{type(exc).__name__}: {first}\n")
    except OSError:
        pass


def recorded_failures(stage: str, settings: Mapping[str, Any]) -> dict[int, str]:
    """The failure lines ranks left for this stage/data/config, by rank."""
    directory = checkpoint_dir(stage, settings)
    found = {}
    for name in sorted(os.listdir(directory)) if os.path.isdir(directory) else []:
        match = re.fullmatch(r"failure-rank(\d+)\.txt", name)
        if match:
            with open(os.path.join(directory, name)) as text:
                found[int(match.group(1))] = text.read().strip()
    return found


def clear_failures(stage: str, settings: Mapping[str, Any]) -> None:
    """Removes the failure lines of an earlier launch."""
    for rank in recorded_failures(stage, settings):
        with contextlib.suppress(OSError):
            os.remove(failure_file(stage, settings, rank))


class _RankRun:
    """One rank's state for one stage: models, train step, checkpoint, progress."""

    def __init__(self, spec: StageSpec, stage: str, settings: Mapping[str, Any], info: Any) -> None:
        import tensorflow as tf

        from adrank.train.ranks.gradients import make_train_step
        from adrank.train.ranks.hvd_setup import rank0_logger

        self.spec, self.stage, self.settings, self.info = spec, stage, settings, info
        self.log = rank0_logger(LOGGER_NAME)
        tf.keras.utils.set_random_seed(int(settings.get("seed", 0)))
        if settings.get("deterministic"):
            tf.config.experimental.enable_op_determinism()
        train = settings["train"]
        self.models = spec.build(settings)
        self.primary = self.models[spec.primary]
        self.train_step = make_train_step(
            spec.loss(self.models), self.primary.dense_variables(),
            self.primary.sparse_variables(), mode=train["gradient_mode"],
            dense_lr=train["dense_learning_rate"], ftrl_lr=train["ftrl_learning_rate"])
        # Every rank makes the optimizer state now, in one order: restoring into absent
        # slots would create them on rank 0 only, under other names and in another
        # order, and the broadcasts of that state would never match (a hang, seen).
        _create_optimizer_state(self.train_step)
        self.step_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
        self.checkpoint = tf.train.Checkpoint(
            step=self.step_var, dense_optimizer=self.train_step.dense_optimizer,
            sparse_optimizer=self.train_step.sparse_optimizer, **self.models)
        self.directory = checkpoint_dir(stage, settings)
        self.manager = None
        self.total = stage_steps(stage, settings)
        self.start = 0
        self.last_saved: int | None = None
        self.losses: list[list[float]] = []
        self.loss = float("nan")
        self.roles: list[str] = []
        self.initial_checksum = 0.0

    def restore_or_start(self) -> None:
        """Rank 0 restores the newest checkpoint; step and variables go to every rank."""
        import horovod.tensorflow as hvd
        import tensorflow as tf

        restored = 0
        if self.info.is_chief:
            self.manager = tf.train.CheckpointManager(
                self.checkpoint, self.directory, max_to_keep=3, checkpoint_name=CHECKPOINT_PREFIX)
            if self.manager.latest_checkpoint:
                try:
                    self.checkpoint.restore(self.manager.latest_checkpoint).assert_existing_objects_matched()
                except (AssertionError, ValueError) as exc:
                    raise RuntimeError(
                        f"checkpoint {self.manager.latest_checkpoint} does not fit the {self.stage} "
                        f"model (code changed?): move it away to start fresh ({exc})") from exc
                restored = int(self.step_var.numpy())
                self.log.info("%s: restored %s (step %d)", self.stage,
                              self.manager.latest_checkpoint, restored)
        start = hvd.broadcast(tf.constant(restored, tf.int64), 0, name="adrank_start_step")
        self.start = int(start.numpy())
        self.step_var.assign(self.start)
        self.last_saved = self.start if self.start else None
        # Model variables (trainable and not) and the restored optimizer state: every
        # rank starts from rank 0's. (Optimizer state is broadcast again after the first
        # step, the Horovod convention; this first copy matters after a restore.)
        model_vars = [v for m in self.models.values() for v in m.variables]
        hvd.broadcast_variables(model_vars + self._optimizer_state(), root_rank=0)
        self.initial_checksum = _checksum(self.primary.trainable_variables)

    def _optimizer_state(self) -> list[Any]:
        from adrank.train.ranks.gradients import optimizer_variables

        return [v for o in self.train_step.optimizers for v in optimizer_variables(o)]

    def train(self, dataset_fn: DatasetFn, on_step: StepHook | None, watchdog: _Watchdog) -> None:
        """Runs steps ``start .. total-1``; the same number on every rank."""
        if self.start >= self.total:
            self.log.info("%s: checkpoint at step %d >= %d steps: nothing to train",
                          self.stage, self.start, self.total)
            return
        with contextlib.ExitStack() as stack:
            datasets = _agreed_roles(self.spec, self.settings, dataset_fn, self.info, self.start, stack)
            self.roles = [r for r in self.spec.roles if r in datasets]
            self.log.info("%s: steps %d -> %d on %d ranks, roles %s, checkpoints in %s", self.stage,
                          self.start, self.total, self.info.size, self.roles, self.directory)
            self._steps(datasets, on_step, watchdog)

    def _steps(self, datasets: dict[str, Any], on_step: StepHook | None, watchdog: _Watchdog) -> None:
        for step in range(self.start, self.total):
            role = role_schedule(self.roles, step)
            loss = self.train_step(_next_batch(datasets[role], role, step, self.info.rank))
            if step == self.start:
                self.train_step.broadcast_initial_state()
            self.step_var.assign(step + 1)
            self._log_and_checkpoint(step + 1, role, loss)
            watchdog.beat()
            if on_step is not None:
                on_step(step + 1, self.info.rank)

    def _log_and_checkpoint(self, done: int, role: str, loss: Any) -> None:
        import horovod.tensorflow as hvd
        import tensorflow as tf

        log_every = max(int(self.settings.get("log_every", DEFAULT_LOG_EVERY)), 1)
        if done % log_every == 0 or done == self.total:
            mean = hvd.allreduce(tf.cast(loss, tf.float32), op=hvd.Average, name="adrank_loss")
            self.loss = float(mean.numpy())
            self.losses.append([done, self.loss])
            self.log.info("%s step %d/%d (%s): loss %.5f", self.stage, done, self.total, role,
                          self.loss)
        if done % int(self.settings["train"]["checkpoint_every"]) == 0 or done == self.total:
            _average_non_trainable(self.models)
            self.train_step.consolidate_sparse_state()
            if self.manager is not None:
                self.manager.save(checkpoint_number=done)
            self.last_saved = done

    def metrics(self, started: float) -> dict[str, Any]:
        """The JSON-able metrics (see :func:`train_stage`); a collective: all ranks."""
        import horovod.tensorflow as hvd

        checksums = hvd.allgather_object(_checksum(self.primary.trainable_variables),
                                         name="adrank_checksums")
        seconds = time.perf_counter() - started
        steps_run = max(self.total - self.start, 0)
        return {
            "stage": self.stage, "start_step": self.start, "final_step": max(self.total, self.start),
            "steps_run": steps_run, "loss": self.loss, "losses": self.losses,
            "last_checkpoint_step": self.last_saved, "checkpoint_dir": self.directory,
            "initial_checksum": self.initial_checksum,
            "variable_checksums": [float(c) for c in checksums], "roles": self.roles,
            "seconds": round(seconds, 3),
            "steps_per_s": round(steps_run / seconds, 3) if seconds else 0.0,
            "data_version": self.settings.get("data_version"),
            "run_id": self.settings.get("run_id", ""), "ranks": self.info.size,
        }


def _create_optimizer_state(train_step: Any) -> None:
    """Creates both optimizers' iteration counters and slots for their variables."""
    for optimizer, variables in ((train_step.dense_optimizer, train_step.dense_vars),
                                 (train_step.sparse_optimizer, train_step.sparse_vars)):
        if hasattr(optimizer, "_create_all_weights"):  # legacy Keras (OptimizerV2)
            optimizer._create_all_weights(variables)
        elif hasattr(optimizer, "build"):  # new Keras optimizers
            optimizer.build(variables)



def _agreed_roles(spec: StageSpec, settings: Mapping[str, Any], dataset_fn: DatasetFn,
                  info: Any, start: int, stack: contextlib.ExitStack) -> dict[str, Any]:
    """Batch iterators per role, for the roles that have data on every rank.

    All ranks must follow one schedule: a role with data on some ranks only is an
    error on every rank (an allreduce of the presence flags decides, so they agree).
    ``dataset_fn`` may return a ``tf.data.Dataset`` or a context manager yielding one
    (entered on ``stack`` only once the roles are settled, so nothing is opened twice).
    """
    import horovod.tensorflow as hvd
    import tensorflow as tf

    datasets: dict[str, Any] = {}
    for role in spec.roles:
        consumed = batches_consumed(spec.roles, role, start)
        datasets[role] = dataset_fn(role, info.rank, info.size, settings, consumed)
    present = tf.constant([1 if datasets[r] is not None else 0 for r in spec.roles], tf.int32)
    counts = hvd.allreduce(present, op=hvd.Sum, name="adrank_roles").numpy().tolist()
    partial = [r for r, n in zip(spec.roles, counts) if 0 < n < info.size]
    if partial:
        raise RuntimeError(f"dataset roles {partial} have data on some ranks only")
    have = [r for r, n in zip(spec.roles, counts) if n == info.size]
    if not have:
        raise RuntimeError(f"no data for any of the roles {list(spec.roles)}")
    # The schedule alternates among the roles present: after a resume, their
    # consumption differs from the all-roles guess, so those datasets are remade.
    for role in have:
        consumed = batches_consumed(have, role, start)
        if consumed != batches_consumed(spec.roles, role, start):
            datasets[role] = dataset_fn(role, info.rank, info.size, settings, consumed)
    opened = {r: stack.enter_context(datasets[r]) if hasattr(datasets[r], "__enter__") else datasets[r]
              for r in have}
    return {r: iter(opened[r].repeat().prefetch(1)) for r in have}


def _next_batch(iterator: Any, role: str, step: int, rank: int) -> Any:
    try:
        return next(iterator)
    except StopIteration:
        raise RuntimeError(f"rank {rank}: dataset '{role}' yielded no batch at step {step} "
                           "(an empty shard?)") from None


def _average_non_trainable(models: Mapping[str, Any]) -> None:
    """Averages non-trainable float variables (batch-norm moving stats) over ranks."""
    import horovod.tensorflow as hvd

    variables = [v for m in models.values() for v in m.non_trainable_variables
                 if v.dtype.is_floating]
    if not variables or hvd.size() == 1:
        return
    averaged = hvd.grouped_allreduce([v.value() for v in variables], op=hvd.Average,
                                     name="adrank_bn_stats")
    for variable, value in zip(variables, averaged):
        variable.assign(value)


def _checksum(variables: Sequence[Any]) -> float:
    """Sum of |value| over variables, in float64 (a cheap fingerprint)."""
    import numpy as np

    return float(sum(np.abs(v.numpy().astype(np.float64)).sum() for v in variables))


def _configure_logging(rank: int) -> None:
    """INFO to stderr on rank 0 when nothing is configured yet."""
    import logging

    logger = logging.getLogger(LOGGER_NAME)
    if rank == 0 and not logging.getLogger().handlers and not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


class _Watchdog:
    """Ends this rank when no step finishes within the timeout (0 disables)."""

    def __init__(self, timeout_s: float, stage: str, rank: int, failure_path: str) -> None:
        self.timeout_s = timeout_s
        self.stage, self.rank, self.failure_path = stage, rank, failure_path
        self._last = time.monotonic()
        self._first = True
        self._stop = threading.Event()
        if timeout_s > 0:
            threading.Thread(target=self._watch, daemon=True, name="adrank-watchdog").start()

    def beat(self) -> None:
        self._last = time.monotonic()
        self._first = False

    def stop(self) -> None:
        self._stop.set()

    def _watch(self) -> None:
        while not self._stop.wait(min(5.0, self.timeout_s / 4)):
            limit = self.timeout_s * (FIRST_STEP_TIMEOUT_FACTOR if self._first else 1.0)
            if time.monotonic() - self._last > limit:
                line = f"watchdog: no step finished in {limit:.0f} s (a hung peer or collective?)"
                print(f"adrank stage {self.stage} rank {self.rank} {line}; exiting",
                      file=sys.stderr, flush=True)
                with contextlib.suppress(OSError):
                    os.makedirs(os.path.dirname(self.failure_path), exist_ok=True)
                    with open(self.failure_path, "w") as out:
                        out.write(line + "\n")
                os._exit(75)


# --------------------------------------------------------------------------------
# After training: the models of the newest checkpoint, in this process
# --------------------------------------------------------------------------------


def load_trained(stage: str, settings: Mapping[str, Any]) -> dict[str, Any]:
    """Builds the stage's model(s) and restores them from its newest checkpoint.

    For evaluation and export in the driver after :func:`train_stage` ran.

    Raises:
        FileNotFoundError: No checkpoint for this stage / data version / config.
    """
    import tensorflow as tf

    spec = stage_spec(stage)
    directory = checkpoint_dir(stage, settings)
    path = tf.train.latest_checkpoint(directory)
    if path is None:
        raise FileNotFoundError(f"no checkpoint of stage {stage!r} in {directory}")
    models = spec.build(settings)
    tf.train.Checkpoint(**models).restore(path).expect_partial()
    return models


__all__ = [
    "STAGES", "StageSpec", "batches_consumed", "checkpoint_dir", "clear_failures", "config_hash",
    "failure_file", "input_dataset", "last_checkpoint_step", "recorded_failures", "load_trained", "make_settings", "role_schedule", "stage_spec",
    "stage_steps", "train_stage",
]
