"""The distributed train step: local gradients, the agreed exchange, the optimizer apply.

Contract: :func:`make_train_step` (after ``hvd.init()``) gives a :class:`TrainStep` for any
model: dense variables go through a fused allreduce and RMSProp, sparse tables
(``tf.IndexedSlices`` gradients) through the path :mod:`~adrank.train.ranks.sparse.plan`
chooses and :mod:`~adrank.train.ranks.sparse.collectives` carries, and FTRL whose sparse
update costs O(touched rows) (:class:`adrank.train.ranks.ftrl.GatherScatterFtrl`; the new
``tf.keras.optimizers.Ftrl`` is O(table) per step and refused). A table sent dense is
applied densely by FTRL, which for a zero-initialised table equals the sparse apply (a
zero gradient leaves a row at FTRL's closed form of its slots).

Modes, with the same API: ``"split"`` (default: the above); ``"sparse_as_dense"`` and
``"horovod_default"``: ``hvd.DistributedGradientTape`` with and without
``sparse_as_dense`` (for comparison, bench/sparse_dense.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from typing import TypeAlias

import horovod.tensorflow as hvd
import tensorflow as tf

from adrank.train.ranks.ftrl import GatherScatterFtrl
from adrank.train.ranks.hvd_setup import rank0_logger
from adrank.train.ranks.sparse import collectives
from adrank.train.ranks.sparse.collectives import Gradient, Optimizer, Rows
from adrank.train.ranks.sparse.plan import (
    MODES,
    PATH_POLICIES,
    SPARSE,
    Dedup,
    Mode,
    PathCostModel,
    PathPlanner,
    PathPolicy,
    Plan,
    SparseTable,
    local_row_counts,
)

LegacyOptimizer: TypeAlias = tf.keras.optimizers.legacy.Optimizer
Counted = tuple[tf.Tensor, list[tf.Tensor], list[tf.Tensor], list[tf.Tensor], tf.Tensor]
LossFn = Callable[..., tf.Tensor]
Batch = Mapping[str, tf.Tensor]

_LOG = rank0_logger(__name__)


class TrainStep:
    """One distributed training step; call it with a batch, get this rank's loss.

    Holds the optimizers and, in ``"split"`` mode, a :class:`PathPlanner`. Each plan
    gets its own traced ``tf.function`` (built once, then cached), so the collectives in
    a graph never depend on data. A step that re-chooses the plan (step 1, then every
    ``replan_every``) runs in two traced halves: the local gradients and their row
    counts, then -- once the ranks have agreed on the plan from those counts -- the
    exchange and apply in that plan. So step 1 already takes the chosen path: a table
    that belongs on the dense path never sees a sparse update (a sparse op puts
    variables in copy-on-read mode, after which every dense update copies the whole
    table: about 15% slower steps at 2^16-2^18 rows in bench/sparse_dense.py).

    Attributes:
        mode: ``"split"``, ``"sparse_as_dense"`` or ``"horovod_default"``.
        dense_optimizer: RMSProp (legacy Keras) for the dense variables.
        sparse_optimizer: FTRL (legacy Keras) for the sparse variables.
        tables: Static facts about the sparse variables.
        planner: The per-table path plan.
        sharded: Whether each rank applies FTRL to the sparse-path rows it owns only.
        steps: Steps run so far.
    """

    def __init__(
        self,
        loss_fn: LossFn,
        dense_vars: Sequence[tf.Variable],
        sparse_vars: Sequence[tf.Variable],
        mode: Mode,
        dense_optimizer: Optimizer,
        sparse_optimizer: LegacyOptimizer,
        path_policy: PathPolicy = "auto",
        replan_every: int = 50,
        cost_model: PathCostModel | None = None,
        shard_sparse_updates: bool = True,
    ) -> None:
        self.loss_fn = loss_fn
        self.dense_vars = list(dense_vars)
        self.sparse_vars = list(sparse_vars)
        self.mode = mode
        self.dense_optimizer = dense_optimizer
        self.sparse_optimizer = sparse_optimizer
        self.tables = [SparseTable.of(v) for v in self.sparse_vars]
        self.planner = PathPlanner(self.tables, path_policy, replan_every, cost_model)
        if mode != "horovod_default" and path_policy != SPARSE:
            _warn_unless_zero(self.sparse_vars)
        self.sharded = shard_sparse_updates and mode == "split" and hvd.size() > 1
        self.steps = 0
        self._functions: dict[tuple[object, ...], Callable[..., tf.Tensor | None]] = {}
        self._measuring: Callable[..., Counted] | None = None

    @property
    def plan(self) -> Plan:
        """Per sparse variable, the path of the next step (``"sparse"``/``"dense"``)."""
        return self.planner.plan

    @property
    def dedup(self) -> Dedup:
        """Per sparse variable, whether a sparse-path table is de-duplicated locally."""
        return self.planner.dedup

    @property
    def variables(self) -> list[tf.Variable]:
        """Dense then sparse variables."""
        return self.dense_vars + self.sparse_vars

    @property
    def optimizers(self) -> list[Optimizer]:
        """Dense then sparse optimizer."""
        return [self.dense_optimizer, self.sparse_optimizer]

    def __call__(self, *batch: Batch) -> tf.Tensor:
        """Runs one step on this rank's batch (every rank must call it together).

        Returns:
            This rank's loss (not averaged over ranks).
        """
        if self.mode == "split" and self.planner.due(self.steps + 1):
            loss = self._measured_step(batch)
        else:
            loss = self._function_for(self.plan, self.dedup)(*batch)
        self.steps += 1
        return loss

    def create_optimizer_state(self) -> None:
        """Creates both optimizers' iteration counters and slots (before any restore)."""
        for optimizer, variables in ((self.dense_optimizer, self.dense_vars),
                                     (self.sparse_optimizer, self.sparse_vars)):
            if hasattr(optimizer, "_create_all_weights"):  # legacy Keras (OptimizerV2)
                optimizer._create_all_weights(variables)
            elif hasattr(optimizer, "build"):  # new Keras optimizers
                optimizer.build(variables)

    def consolidate_sparse_state(self) -> None:
        """Makes every sparse table's FTRL slots whole on every rank (a collective).

        With sharded updates each rank's slots are exact only for the rows it owns.
        O(table): call it before checkpoints and broadcasts, not every step. A no-op
        unless sharded.
        """
        if self.sharded:
            collectives.consolidate_slots(self.sparse_optimizer, self.sparse_vars, self.tables)

    def broadcast_initial_state(self, root_rank: int = 0) -> None:
        """Consolidates the sparse slots, then copies all state from ``root_rank``.

        Call on every rank after the first step (the Horovod convention).
        """
        self.consolidate_sparse_state()
        collectives.broadcast_initial_state(self.variables, self.optimizers, root_rank=root_rank)

    def _function_for(self, plan: Plan, dedup: Dedup) -> Callable[..., tf.Tensor]:
        """The traced step for a plan: batch -> this rank's loss."""
        key = (plan, dedup)
        if key not in self._functions:
            if self.mode == "split":
                def step(*batch: Batch) -> tf.Tensor:
                    loss, dense_grads, slices = self._local_gradients(batch)
                    self._exchange_and_apply(plan, dedup, dense_grads, slices)
                    return loss
            else:
                step = self._tape_step
            self._functions[key] = tf.function(step, reduce_retracing=True)
        return self._functions[key]

    def _measured_step(self, batch: tuple[Batch, ...]) -> tf.Tensor:
        """Local gradients and row counts; agree on the plan; exchange and apply in it."""
        if self._measuring is None:
            self._measuring = tf.function(self._gradients_and_counts, reduce_retracing=True)
        loss, dense_grads, indices, values, counts = self._measuring(*batch)
        if self.planner.replan(counts, self.steps + 1) and self.steps:
            self.consolidate_sparse_state()  # a dense apply reads every row's slots
        slices = [tf.IndexedSlices(v, i, collectives.dense_shape(var))
                  for i, v, var in zip(indices, values, self.sparse_vars)]
        self._apply_function(self.plan, self.dedup)(dense_grads, slices)
        return loss

    def _apply_function(self, plan: Plan, dedup: Dedup) -> Callable[..., None]:
        """The traced second half of a measured step, per plan."""
        key = ("apply", plan, dedup)
        if key not in self._functions:
            self._functions[key] = tf.function(
                lambda dense_grads, slices: self._exchange_and_apply(plan, dedup, dense_grads, slices),
                reduce_retracing=True)
        return self._functions[key]

    def _gradients_and_counts(self, *batch: Batch) -> Counted:
        """(loss, dense grads, per table indices and rows, [2, tables] distinct/raw rows)."""
        loss, dense_grads, slices = self._local_gradients(batch)
        counts = local_row_counts([s.indices for s in slices])
        return (loss, dense_grads, [s.indices for s in slices], [s.values for s in slices], counts)

    def _local_gradients(self, batch: tuple[Batch, ...]
                         ) -> tuple[tf.Tensor, list[tf.Tensor], list[tf.IndexedSlices]]:
        """(loss, dense gradients as tensors, sparse gradients as int32 IndexedSlices)."""
        with tf.GradientTape() as tape:
            loss = self.loss_fn(*batch)
        grads = tape.gradient(loss, self.variables)
        dense = [_dense_or_zeros(g, v) for g, v in zip(grads[: len(self.dense_vars)], self.dense_vars)]
        slices = [collectives.as_indexed_slices(g, v)
                  for g, v in zip(grads[len(self.dense_vars):], self.sparse_vars)]
        return loss, dense, slices

    def _exchange_and_apply(self, plan: Plan, dedup: Dedup, dense_grads: list[tf.Tensor],
                            slices: list[tf.IndexedSlices]) -> None:
        """De-duplicate where agreed, exchange, apply; share owners' rows when sharded."""
        local_rows: list[Rows] = [
            collectives.deduplicate(s.indices, s.values) if path == SPARSE and d else (s.indices, s.values)
            for s, path, d in zip(slices, plan, dedup)]
        dense_avg, table_grads = collectives.exchange(
            plan, dedup, dense_grads, local_rows, self.sparse_vars, self.tables, self.sharded)
        self._apply(dense_avg, table_grads)
        if self.sharded:
            collectives.share_owned_rows(plan, table_grads, self.sparse_vars, self.tables)

    def _tape_step(self, *batch: Batch) -> tf.Tensor:
        """``hvd.DistributedGradientTape`` as it comes (the comparison modes)."""
        with tf.GradientTape() as tape:
            loss = self.loss_fn(*batch)
        tape = hvd.DistributedGradientTape(tape, sparse_as_dense=self.mode == "sparse_as_dense")
        grads = tape.gradient(loss, self.variables)
        self._apply(grads[: len(self.dense_vars)], grads[len(self.dense_vars):])
        return loss

    def _apply(self, dense_grads: Sequence[Gradient | None], sparse_grads: Sequence[Gradient | None]) -> None:
        for optimizer, grads, variables in (
            (self.dense_optimizer, dense_grads, self.dense_vars),
            (self.sparse_optimizer, sparse_grads, self.sparse_vars),
        ):
            pairs = [(g, v) for g, v in zip(grads, variables) if g is not None]
            if not pairs:
                continue
            # Sharded: every IndexedSlices here was de-duplicated by its owner.
            distinct = (self.sharded and optimizer is self.sparse_optimizer
                        and isinstance(optimizer, GatherScatterFtrl))
            with optimizer.indices_are_distinct() if distinct else contextlib.nullcontext():
                optimizer.apply_gradients(pairs)


def _warn_unless_zero(tables: Sequence[tf.Variable]) -> None:
    """Warns about non-zero sparse tables: a dense FTRL apply zeroes their untouched rows."""
    for table in tables:
        if bool(tf.reduce_any(tf.not_equal(table, 0))):
            _LOG.warning("sparse table %s is not zero-initialised: on the dense path FTRL resets "
                         "the rows a step does not touch to 0 (its closed form), as "
                         "sparse_as_dense does; initialise FTRL tables with zeros", table.name)


def _dense_or_zeros(gradient: Gradient | None, variable: tf.Variable) -> tf.Tensor:
    """A dense variable's gradient as a dense tensor (zeros when missing)."""
    if gradient is None:
        return tf.zeros_like(variable)
    return tf.convert_to_tensor(gradient)


def _require_legacy_sparse(optimizer: Optimizer) -> None:
    """Refuses sparse optimizers whose per-step cost grows with the table."""
    if not isinstance(optimizer, tf.keras.optimizers.legacy.Optimizer):
        raise TypeError(
            "the sparse optimizer must be a tf.keras.optimizers.legacy optimizer, got "
            f"{type(optimizer).__name__}: the new Keras optimizers update whole tables "
            "per step (tf.keras.optimizers.Ftrl is O(table), docs/design.md)"
        )


def make_train_step(
    loss_fn: LossFn,
    dense_vars: Sequence[tf.Variable],
    sparse_vars: Sequence[tf.Variable],
    mode: Mode = "split",
    dense_lr: float = 1e-3,
    ftrl_lr: float = 0.05,
    *,
    scale_dense_lr_by_size: bool = True,
    path_policy: PathPolicy = "auto",
    replan_every: int = 50,
    cost_model: PathCostModel | None = None,
    shard_sparse_updates: bool = True,
    rmsprop_kwargs: Mapping[str, object] | None = None,
    ftrl_kwargs: Mapping[str, object] | None = None,
    dense_optimizer: Optimizer | None = None,
    sparse_optimizer: LegacyOptimizer | None = None,
) -> TrainStep:
    """Builds the distributed train step for any model (call after ``hvd.init()``).

    Args:
        loss_fn: Closure ``loss_fn(*batch) -> scalar loss`` over this rank's batch;
            it reads ``dense_vars`` and ``sparse_vars`` (the latter via
            ``tf.gather`` / ``tf.nn.embedding_lookup``).
        dense_vars: Variables with dense gradients: RMSProp, fused allreduce.
        sparse_vars: Tables with ``tf.IndexedSlices`` gradients: FTRL.
        mode: ``"split"``, ``"sparse_as_dense"`` or ``"horovod_default"``.
        dense_lr: RMSProp learning rate.
        ftrl_lr: FTRL learning rate (not scaled: FTRL's per-coordinate rate already
            adapts to the averaged gradient).
        scale_dense_lr_by_size: Multiply ``dense_lr`` by ``hvd.size()`` (the Horovod
            convention; the train loop scales it itself and passes False).
        path_policy: In ``"split"`` mode, ``"auto"`` chooses each table's path
            from measured density; ``"sparse"``/``"dense"`` force one path.
        replan_every: In ``"auto"``, re-measure after step 1 and every this many steps.
        cost_model: The path chooser; calibrated defaults when omitted.
        shard_sparse_updates: In ``"split"`` mode on several ranks, each rank applies
            FTRL to the sparse-path rows it owns and shares the results; ``False``
            applies every row on every rank.
        rmsprop_kwargs: Extra arguments for ``tf.keras.optimizers.legacy.RMSprop``.
        ftrl_kwargs: Extra arguments for the FTRL.
        dense_optimizer: A ready optimizer instead of RMSProp.
        sparse_optimizer: A ready legacy optimizer instead of FTRL.

    Returns:
        The step; call ``step.broadcast_initial_state()`` after its first call, and
        ``step.consolidate_sparse_state()`` (every rank) before saving slots.

    Raises:
        ValueError: On an unknown mode or policy, or before ``hvd.init()``.
        TypeError: If the sparse optimizer is not a legacy Keras optimizer.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if path_policy not in PATH_POLICIES:
        raise ValueError(f"path_policy must be one of {PATH_POLICIES}, got {path_policy!r}")
    if not hvd.is_initialized():
        raise ValueError("call hvd.init() (adrank.train.ranks.hvd_setup.init_horovod) first")
    if replan_every < 1:
        raise ValueError(f"replan_every must be >= 1, got {replan_every}")
    lr = dense_lr * hvd.size() if scale_dense_lr_by_size else dense_lr
    dense_optimizer = dense_optimizer or tf.keras.optimizers.legacy.RMSprop(
        learning_rate=lr, **(rmsprop_kwargs or {}))
    sparse_optimizer = sparse_optimizer or GatherScatterFtrl(
        learning_rate=ftrl_lr, **(ftrl_kwargs or {}))
    _require_legacy_sparse(sparse_optimizer)
    return TrainStep(loss_fn, dense_vars, sparse_vars, mode, dense_optimizer, sparse_optimizer,
                     path_policy=path_policy, replan_every=replan_every, cost_model=cost_model,
                     shard_sparse_updates=shard_sparse_updates)


__all__ = ["TrainStep", "make_train_step"]
