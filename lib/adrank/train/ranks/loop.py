"""The train loop that runs on every Horovod rank: one function for any stage.

Contract: :func:`train_stage` is what the launcher (:mod:`adrank.train.launch`) ships to
the ranks. It takes a picklable :class:`~adrank.train.ranks.settings.RankSettings` (which
carries its stage's spec) and imports TensorFlow and Horovod inside, so this module is
cheap to import on a driver. Every rank runs exactly ``steps - start`` steps, in the
Horovod order (read it in :func:`train_stage`); only rank 0 logs, writes TensorBoard
summaries (loss, steps/s and learning rates every ``train.log_every`` steps, under
:func:`~adrank.train.ranks.settings.tensorboard_dir`) and checkpoints; a rerun resumes
from rank 0's newest checkpoint. At every checkpoint all ranks score a small fixed
held-out sample (:mod:`adrank.train.ranks.holdout`; rank 0 writes ``holdout/<metric>`` to
TensorBoard). A rank whose step makes no progress for ``train.step_timeout_s`` is ended
by a watchdog (:mod:`adrank.train.ranks.watchdog`); a failing rank leaves a one-line
reason for the launcher (:mod:`adrank.train.ranks.failures`); a rank whose driver is gone
(stopped, killed) exits (:func:`adrank.runtime.processes.exit_when_gone`). The data of
each role comes from a ``dataset_fn`` (:mod:`adrank.train.ranks.data`; by default the
Petastorm files of the settings). :func:`load_trained` restores the newest checkpoint's
models in the driver, after training.

Imports nothing of the driver side of :mod:`adrank.train`.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, cast

from adrank.runtime.processes import exit_when_gone
from adrank.train.ranks.data import agreed_roles, input_dataset, next_batch, role_schedule
from adrank.train.ranks.failures import failure_file, record_failure
from adrank.train.ranks.holdout import HoldoutCurve
from adrank.train.ranks.progress import ProgressWriter, progress_file
from adrank.train.ranks.settings import (
    CHECKPOINT_PREFIX,
    Models,
    RankSettings,
    Stage,
    checkpoint_dir,
    tensorboard_dir,
)
from adrank.train.ranks.state import restore_warm_start, state_digest
from adrank.train.ranks.watchdog import Watchdog

if TYPE_CHECKING:
    import tensorflow as tf

    from adrank.train.ranks.data import DatasetFn
    from adrank.train.ranks.hvd_setup import RankInfo
    from adrank.train.ranks.sparse.plan import Mode
    from adrank.train.ranks.sparse.step import TrainStep

LOGGER_NAME = __name__

StepHook = Callable[[int, int], None]


# --------------------------------------------------------------------------------
# The rank function
# --------------------------------------------------------------------------------


def train_stage(settings: RankSettings, dataset_fn: DatasetFn | None = None,
                on_step: StepHook | None = None) -> dict[str, object]:
    """Trains ``settings.stage`` on this rank; every rank of the job calls it.

    Args:
        settings: From :func:`adrank.train.launch.make_settings`.
        dataset_fn: ``(role, rank, size, settings, start_batch) -> tf.data.Dataset |
            None``; :func:`adrank.train.ranks.data.input_dataset` when omitted.
        on_step: Called as ``on_step(step, rank)`` after each finished step
            (``step`` is 1-based, checkpoint included); for tests and progress hooks.

    Returns:
        JSON-able metrics (every rank returns them; the launcher keeps rank 0's):
        ``stage``, ``start_step``, ``final_step``, ``steps_run``, ``loss`` (rank mean
        of the last logged loss, NaN when no step ran), ``losses`` ([step, rank-mean
        loss] at each log step and the last), ``last_checkpoint_step``,
        ``checkpoint_dir``, ``initial_checksum`` / ``variable_checksums`` (sum of
        |trainable variable| after the initial broadcast / at the end, the latter per
        rank), ``initial_state_digests`` (per rank, :func:`~adrank.train.ranks.state.state_digest`
        of the model and optimizer variables before the first step), ``final_state_digest``
        (rank 0's at the end: what its last checkpoint holds), ``roles``, ``seconds``, ``steps_per_s``, ``data_version``, ``run_id``,
        ``ranks``, ``tensorboard_dir`` (rank 0's summaries), ``holdout_curve``
        (:meth:`adrank.train.ranks.holdout.HoldoutCurve.figures`: the held-out metric at
        each checkpoint of this launch, or why there is none).

    Raises:
        RuntimeError: A role has data on some ranks only, or a dataset runs dry.
    """
    from adrank.train.ranks.hvd_setup import init_horovod

    exit_when_gone()  # a rank ends with its driver, even a SIGKILLed one (adrank.runtime.processes)
    spec = settings.spec
    started = time.perf_counter()
    # 1. Cap TF threads, hvd.init(), pin this rank's GPU by local_rank.
    info = init_horovod(settings.threads_per_rank, settings.threads_per_rank)
    _configure_logging(info.rank)
    watchdog = Watchdog(settings.step_timeout_s, settings.stage, info.rank,
                         failure_file(settings, info.rank))
    run: _RankRun | None = None
    try:
        # 2. Scale the dense learning rate by the number of ranks.
        dense_lr = spec.dense_learning_rate(settings) * info.size
        # 3. Build the models, the train step and the optimizer state (same order on every rank).
        run = _RankRun(spec, settings, info, dense_lr)
        # 4. Rank 0 restores its newest checkpoint; step and state are broadcast from it.
        run.restore_and_broadcast()
        # 4b. Every rank reads its part of the fixed held-out sample (once) when it will train.
        if run.start < run.total:
            run.holdout.read(info.rank, info.size)
        if run.start >= run.total:
            run.log.info("%s: checkpoint at step %d >= %d steps: nothing to train",
                         settings.stage, run.start, run.total)
            return run.metrics(started)
        with contextlib.ExitStack() as stack:
            batches = agreed_roles(spec, settings, dataset_fn or input_dataset, info, run.start, stack)
            run.roles = [r for r in spec.roles if r in batches]
            run.log.info("%s: steps %d -> %d on %d ranks, roles %s, checkpoints in %s", settings.stage,
                         run.start, run.total, info.size, run.roles, run.directory)
            progress = ProgressWriter(progress_file(settings), settings.stage, run.start, run.total) \
                if info.is_chief else None
            for step in range(run.start, run.total):
                role = role_schedule(run.roles, step)
                loss = run.train_step(next_batch(batches[role], role, step, info.rank))
                # 5. After the first step: broadcast variables and optimizer state from rank 0.
                if step == run.start:
                    run.train_step.broadcast_initial_state()
                run.step_var.assign(step + 1)
                # 6. Rank-mean loss logged on rank 0; rank 0 writes the checkpoints.
                run.log_and_checkpoint(step + 1, role, loss)
                watchdog.beat()
                if progress is not None:  # the driver's progress bar
                    progress.update(step + 1, _as_float(loss))
                if on_step is not None:
                    on_step(step + 1, info.rank)
        return run.metrics(started)
    except BaseException as exc:
        record_failure(settings, info.rank, exc)
        raise
    finally:
        watchdog.stop()
        if run is not None:
            run.close_summaries()


class _RankRun:
    """One rank's state for one stage: models, train step, checkpoint, progress."""

    def __init__(self, spec: Stage, settings: RankSettings, info: RankInfo, dense_lr: float) -> None:
        import tensorflow as tf

        from adrank.train.ranks.hvd_setup import rank0_logger
        from adrank.train.ranks.sparse.step import make_train_step

        self.spec, self.settings, self.info = spec, settings, info
        self.stage = settings.stage
        self.log = rank0_logger(LOGGER_NAME)
        tf.keras.utils.set_random_seed(settings.seed)
        if settings.deterministic:
            tf.config.experimental.enable_op_determinism()
        train = settings.train
        self.models = spec.build(settings)
        self.primary = self.models[spec.primary]
        self.train_step: TrainStep = make_train_step(
            spec.loss(self.models), self.primary.dense_variables(),
            self.primary.sparse_variables(), mode=cast("Mode", train.gradient_mode),
            dense_lr=dense_lr, ftrl_lr=train.ftrl_learning_rate, scale_dense_lr_by_size=False)
        # Every rank makes the optimizer state now, in one order: restoring into absent
        # slots would create them on rank 0 only, under other names and in another
        # order, and the broadcasts of that state would never match (a hang, seen).
        self.train_step.create_optimizer_state()
        self.step_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
        self.checkpoint = tf.train.Checkpoint(
            step=self.step_var, dense_optimizer=self.train_step.dense_optimizer,
            sparse_optimizer=self.train_step.sparse_optimizer, **self.models)
        self.directory = checkpoint_dir(settings)
        self.manager: tf.train.CheckpointManager | None = None
        self.total = settings.steps
        self.start = 0
        self.last_saved: int | None = None
        self.losses: list[list[float]] = []
        self.loss = float("nan")
        self.roles: list[str] = []
        self.initial_checksum = 0.0
        self.state: list[tf.Variable] = []
        self.initial_state_digests: list[str] = []
        self.learning_rates = {"dense": dense_lr, "ftrl": train.ftrl_learning_rate}
        self.tensorboard_dir = tensorboard_dir(settings)
        # Only rank 0 writes summaries (Horovod convention 6); the others hold no writer.
        self.summaries = tf.summary.create_file_writer(self.tensorboard_dir) if info.is_chief else None
        self.last_logged = (time.perf_counter(), 0)
        self.holdout = HoldoutCurve(spec.holdout, settings)

    def restore_and_broadcast(self) -> None:
        """Rank 0 restores the newest checkpoint; step and variables go to every rank."""
        import horovod.tensorflow as hvd
        import tensorflow as tf

        from adrank.train.ranks.sparse.collectives import optimizer_variables

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
            elif self.settings.warm_start:  # an incremental run: the parent's weights and optimizer state
                restore_warm_start(self.checkpoint, self.settings.warm_start, self.stage)
                self.log.info("%s: warm start from %s", self.stage, self.settings.warm_start)
        start = hvd.broadcast(tf.constant(restored, tf.int64), 0, name="adrank_start_step")
        self.start = int(start.numpy())
        self.last_logged = (time.perf_counter(), self.start)
        self.step_var.assign(self.start)
        self.last_saved = self.start if self.start else None
        # Model variables (trainable and not) and the restored optimizer state: every
        # rank starts from rank 0's. (Optimizer state is broadcast again after the first
        # step, the Horovod convention; this first copy matters after a restore.)
        model_vars = [v for m in self.models.values() for v in m.variables]
        optimizer_state = [v for o in self.train_step.optimizers for v in optimizer_variables(o)]
        hvd.broadcast_variables(model_vars + optimizer_state, root_rank=0)
        self.initial_checksum = _checksum(self.primary.trainable_variables)
        self.state = model_vars + optimizer_state
        # Every rank's state before its first step (a warm start: the parent's final state, bit for bit).
        self.initial_state_digests = hvd.allgather_object(state_digest(self.state), name="adrank_initial_state")

    def log_and_checkpoint(self, done: int, role: str, loss: tf.Tensor) -> None:
        """Every ``log_every`` steps the rank-mean loss; every ``checkpoint_every`` a checkpoint."""
        import horovod.tensorflow as hvd
        import tensorflow as tf

        log_every = max(self.settings.log_every, 1)
        if done % log_every == 0 or done == self.total:
            mean = hvd.allreduce(tf.cast(loss, tf.float32), op=hvd.Average, name="adrank_loss")
            self.loss = float(mean.numpy())
            self.losses.append([done, self.loss])
            self.log.info("%s step %d/%d (%s): loss %.5f", self.stage, done, self.total, role,
                          self.loss)
            self.write_summaries(done)
        if done % self.settings.train.checkpoint_every == 0 or done == self.total:
            # Every rank: batch-norm moving statistics averaged (they differ per rank), sparse
            # FTRL slots made whole, so the checkpoint reflects every rank's data.
            _average_non_trainable(self.models)
            self.train_step.consolidate_sparse_state()
            if self.manager is not None:
                self.manager.save(checkpoint_number=done)
            self.last_saved = done
            # Every rank: the held-out metric of the model just checkpointed (collectives).
            self.write_holdout(done, self.holdout.evaluate(self.models, done))

    def write_holdout(self, done: int, values: dict[str, float] | None) -> None:
        """Rank 0: the held-out metric and loss at checkpoint ``done`` to the log and TensorBoard."""
        import tensorflow as tf

        if values is None:
            return
        self.log.info("%s step %d: held-out %s", self.stage, done,
                      ", ".join(f"{name} {value:.5f}" for name, value in values.items()) or "undefined")
        if self.summaries is None:
            return
        with self.summaries.as_default(step=done):
            for name, value in values.items():
                tf.summary.scalar(f"holdout/{name}", value)
        self.summaries.flush()

    def write_summaries(self, done: int) -> None:
        """Rank 0: the rank-mean loss, steps/s since the last log and the learning rates at ``done``."""
        import tensorflow as tf

        now, step = time.perf_counter(), done
        (then, before), self.last_logged = self.last_logged, (now, step)
        if self.summaries is None:
            return
        with self.summaries.as_default(step=done):
            tf.summary.scalar("loss", self.loss)
            if now > then and step > before:
                tf.summary.scalar("steps_per_s", (step - before) / (now - then))
            for name, rate in self.learning_rates.items():
                tf.summary.scalar(f"learning_rate/{name}", rate)
        self.summaries.flush()

    def close_summaries(self) -> None:
        """Flushes and closes rank 0's summary writer (no-op on other ranks)."""
        if self.summaries is not None:
            self.summaries.close()
            self.summaries = None

    def metrics(self, started: float) -> dict[str, object]:
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
            "initial_state_digests": list(self.initial_state_digests),
            "final_state_digest": state_digest(self.state),
            "variable_checksums": [float(c) for c in checksums], "roles": self.roles,
            "seconds": round(seconds, 3),
            "steps_per_s": round(steps_run / seconds, 3) if seconds else 0.0,
            "data_version": self.settings.data_version,
            "run_id": self.settings.run_id, "ranks": self.info.size,
            "tensorboard_dir": self.tensorboard_dir, "holdout_curve": self.holdout.figures(),
        }


def _average_non_trainable(models: Models) -> None:
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


def _as_float(value: object) -> float | None:
    """A scalar tensor's value (None if it is not one)."""
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _checksum(variables: Sequence[tf.Variable]) -> float:
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


# --------------------------------------------------------------------------------
# After training: the models of the newest checkpoint, in this process
# --------------------------------------------------------------------------------


def load_trained(settings: RankSettings) -> Models:
    """Builds the stage's model(s) and restores them from its newest checkpoint.

    For evaluation and export in the driver after :func:`train_stage` ran.

    Raises:
        FileNotFoundError: No checkpoint for this stage / data version / config.
    """
    import tensorflow as tf

    spec = settings.spec
    directory = checkpoint_dir(settings)
    path = tf.train.latest_checkpoint(directory)
    if path is None:
        raise FileNotFoundError(f"no checkpoint of stage {settings.stage!r} in {directory}")
    models = spec.build(settings)
    tf.train.Checkpoint(**models).restore(path).expect_partial()
    return models


__all__ = ["StepHook", "load_trained", "train_stage"]
