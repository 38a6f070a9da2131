"""The two gradient paths of adrank training, behind one train-step API (TF2, Horovod).

Dense gradients (CNN and tower weights, the LR bias) are averaged with one fused
``hvd.grouped_allreduce`` and applied with RMSProp. Sparse gradients
(``tf.IndexedSlices`` from tables read with ``tf.gather`` / ``tf.nn.embedding_lookup``)
are de-duplicated on each rank when that pays (``tf.unique`` +
``tf.math.unsorted_segment_sum``), sent as (index, row) pairs packed into one int32
tensor to the rank that owns each row, de-duplicated there, divided by the number of
ranks and applied with FTRL whose sparse update costs O(touched rows); the owners'
updated rows then go to every rank (details below). The new
``tf.keras.optimizers.Ftrl`` is O(table) per step and is refused here (DESIGN.md,
"Measured pitfalls").

Which path a sparse table takes is chosen per table from its measured density, and
every rank takes the same choice: every ``replan_every`` steps the ranks allreduce
(sum) the number of distinct rows each touched, and a cost model compares the
sparse path (bytes ~ touched rows of all ranks x (row size + 1)) with the
allreduce path (bytes ~ table rows x row size). The sum is an exact integer that is
identical on every rank, so the choice -- and the collectives it implies -- cannot
differ between ranks. The same allreduce also sums the raw (repeated) row count: a
sparse-path table whose distinct/raw ratio over all ranks exceeds
``PathCostModel.dedup_max_unique_ratio`` (uniform ids into a large table) skips the
local de-duplication and sends its raw (index, row) pairs: there ``tf.unique`` would
remove almost nothing, and the receiving side de-duplicates anyway. The path is a
trace-time constant: each plan has its own traced ``tf.function``, so the
collectives in a graph never depend on data.

Sparse-path tables are updated by their owners (``shard_sparse_updates``, the
default): row ``i`` belongs to rank ``i % size``. One ``hvd.alltoall`` sends each
(index, row) pair to its owner, which de-duplicates and applies FTRL to them (so
each rank does 1/size of the FTRL work instead of all of it), and one grouped
allgather hands the updated rows to every rank, which scatters them into its copy
of the table. Without sharding (one rank, or ``shard_sparse_updates=False``) every
rank allgathers every rank's rows (packed into one int32 tensor when de-duplicated,
as two tensors when raw) and applies all of them. The tables stay
identical on every rank; the FTRL slots are exact only on each row's owner until
:meth:`TrainStep.consolidate_sparse_state` (one masked allreduce per slot, O(table))
makes them whole on every rank -- which :meth:`TrainStep.broadcast_initial_state`,
the training loop before each checkpoint, and a re-plan that sends a table dense do.
At 2^22 rows with uniform ids the FTRL apply is most of a sparse step
(bench/sparse_dense.py), so halving it is most of the gain; the extra allgather
carries only the distinct updated rows.

The FTRL is :class:`adrank.train.ranks.ftrl.GatherScatterFtrl`: the legacy Keras FTRL
with a vectorised gather -> math -> scatter sparse update in place of TensorFlow's
row-at-a-time kernel, still O(touched rows).

A table sent dense is applied densely by FTRL: after a dense allreduce every row has
a gradient (zero for untouched rows), and per row the dense FTRL kernel is some
20-40x cheaper than the sparse one (bench/sparse_dense.py, "ftrl_apply"), so at the
densities where the dense path wins a dense apply also beats a sparse apply of the
touched rows. For a row whose weight equals FTRL's closed form of its slots (a
zero-initialised table, or any row FTRL has updated once) a zero gradient changes
nothing, so this equals the sparse apply; a never-updated row of a randomly
initialised table is set to zero by it, as with ``sparse_as_dense``.

Modes, with the same API (:func:`make_train_step`):

- ``"split"`` (default): the above.
- ``"sparse_as_dense"``: every gradient densified and allreduced, as
  ``hvd.DistributedGradientTape(sparse_as_dense=True)``.
- ``"horovod_default"``: ``hvd.DistributedGradientTape`` as it comes: IndexedSlices
  are allgathered without de-duplication.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import horovod.tensorflow as hvd
import numpy as np
import tensorflow as tf

from adrank.train.ranks.ftrl import GatherScatterFtrl
from adrank.train.ranks.hvd_setup import rank0_logger

Mode = Literal["split", "sparse_as_dense", "horovod_default"]
MODES: tuple[str, ...] = ("split", "sparse_as_dense", "horovod_default")
PathPolicy = Literal["auto", "sparse", "dense"]
PATH_POLICIES: tuple[str, ...] = ("auto", "sparse", "dense")
SPARSE = "sparse"
DENSE = "dense"
Plan = tuple[str, ...]

LegacyOptimizer = tf.keras.optimizers.legacy.Optimizer

_LOG = rank0_logger(__name__)

# Cost of one gathered-and-applied sparse element relative to one allreduced-and-
# applied dense element: bench/sparse_dense.py ("implied_sparse_element_cost") fitted
# 4.04 on 2 ranks / 2 cores (Gloo over loopback) with the owner-sharded gather/scatter
# FTRL (it was 5.3-7.1 with every rank running TensorFlow's FTRL kernel on every row).
# Across a network the allreduce costs more per element and the constant is smaller:
# re-run the bench.
DEFAULT_SPARSE_ELEMENT_COST = 4.0


@dataclass(frozen=True)
class SparseTable:
    """Static facts about one sparse variable.

    Attributes:
        name: The variable's name (for logs).
        rows: Number of rows (first dimension).
        row_shape: Shape of one row.
    """

    name: str
    rows: int
    row_shape: tuple[int, ...]

    @property
    def row_size(self) -> int:
        """Elements per row."""
        return int(np.prod(self.row_shape, dtype=np.int64))

    @classmethod
    def of(cls, variable: tf.Variable) -> SparseTable:
        """Reads the table facts from a variable with a fully known shape."""
        shape = variable.shape
        if shape.rank is None or shape.rank < 1 or not shape.is_fully_defined():
            raise ValueError(f"sparse variable {variable.name} needs a known shape [rows, ...]")
        if shape[0] >= 2**31:
            raise ValueError(f"sparse variable {variable.name} has more than 2^31 rows")
        return cls(name=variable.name, rows=int(shape[0]), row_shape=tuple(shape[1:]))


@dataclass(frozen=True)
class PathCostModel:
    """Chooses the cheaper path for one table from the rows touched per step.

    Costs are in units of one dense element (allreduced, then applied by dense FTRL).

    Attributes:
        sparse_element_cost: Cost of one sparse element (allgathered with its index,
            de-duplicated, then applied by sparse FTRL) in dense-element units.
    """

    sparse_element_cost: float = DEFAULT_SPARSE_ELEMENT_COST
    dedup_max_unique_ratio: float = 0.9

    def dedup_pays(self, distinct_rows_all_ranks: int, raw_rows_all_ranks: int) -> bool:
        """Whether local de-duplication removes enough rows to pay for ``tf.unique``.

        Args:
            distinct_rows_all_ranks: Sum over ranks of the distinct rows each touched.
            raw_rows_all_ranks: Sum over ranks of the gradient rows (with repeats).
        """
        if raw_rows_all_ranks <= 0:
            return False
        return distinct_rows_all_ranks <= self.dedup_max_unique_ratio * raw_rows_all_ranks

    def sparse_cost(self, touched_rows_all_ranks: int, table: SparseTable) -> float:
        """Allgather path: every rank receives each rank's distinct rows with an index."""
        return self.sparse_element_cost * touched_rows_all_ranks * (table.row_size + 1)

    def dense_cost(self, table: SparseTable) -> float:
        """Allreduce path: the whole table moves and is applied."""
        return float(table.rows * table.row_size)

    def choose(self, touched_rows_all_ranks: int, table: SparseTable) -> str:
        """``"dense"`` or ``"sparse"``, whichever the model says is cheaper.

        Args:
            touched_rows_all_ranks: Sum over ranks of the distinct rows each touched.
            table: The table.
        """
        dense = self.dense_cost(table) < self.sparse_cost(touched_rows_all_ranks, table)
        return DENSE if dense else SPARSE


# ----------------------------------------------------------------------------------
# Building blocks (graph-safe, usable inside tf.function)
# ----------------------------------------------------------------------------------


def as_indexed_slices(gradient: Any, variable: tf.Variable) -> tf.IndexedSlices:
    """The gradient of a sparse variable as IndexedSlices with int32 indices.

    A missing gradient becomes zero rows; a dense one (the table was also used by a
    dense op) becomes all rows, which is correct but costs O(table).

    Args:
        gradient: What the tape returned for ``variable``.
        variable: The sparse variable.
    """
    dense_shape = _dense_shape(variable)
    if gradient is None:
        empty = tf.zeros([0, *variable.shape[1:]], variable.dtype)
        return tf.IndexedSlices(empty, tf.zeros([0], tf.int32), dense_shape)
    if isinstance(gradient, tf.IndexedSlices):
        return tf.IndexedSlices(gradient.values, tf.cast(gradient.indices, tf.int32), dense_shape)
    _LOG.warning("variable %s got a dense gradient; sending all its rows", variable.name)
    rows = tf.range(tf.shape(gradient)[0], dtype=tf.int32)
    return tf.IndexedSlices(gradient, rows, dense_shape)


def deduplicate(indices: tf.Tensor, values: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Sums the rows of repeated indices.

    Args:
        indices: [n] row indices, possibly repeated.
        values: [n, ...] one gradient row per index.

    Returns:
        ([u] distinct indices in order of first appearance, [u, ...] summed rows).
    """
    unique_indices, positions = tf.unique(indices)
    summed = tf.math.unsorted_segment_sum(values, positions, tf.size(unique_indices))
    return unique_indices, summed


def densify(indices: tf.Tensor, values: tf.Tensor, rows: int) -> tf.Tensor:
    """Scatters (index, row) pairs into a dense [rows, ...] tensor, summing repeats."""
    return tf.math.unsorted_segment_sum(values, indices, rows)


def pack_rows(indices: tf.Tensor, values: tf.Tensor, row_size: int) -> tf.Tensor:
    """Packs int32 indices and float32 rows into one int32 [u, 1 + row_size] tensor.

    The float bits travel unchanged (``tf.bitcast``), so one allgather carries both
    and the values come back bit-exact.
    """
    bits = tf.reshape(tf.bitcast(values, tf.int32), [-1, row_size])
    return tf.concat([tf.reshape(indices, [-1, 1]), bits], axis=1)


def unpack_rows(packed: tf.Tensor, row_shape: Sequence[int]) -> tuple[tf.Tensor, tf.Tensor]:
    """Inverse of :func:`pack_rows`: ([u] int32 indices, [u, *row_shape] float32 rows)."""
    values = tf.bitcast(packed[:, 1:], tf.float32)
    return packed[:, 0], tf.reshape(values, [-1, *row_shape])


def allgather_rows(
    local_rows: Sequence[tuple[tf.Tensor, tf.Tensor]],
    tables: Sequence[SparseTable],
    name: str = "adrank_sparse_rows",
    pack: Sequence[bool] | None = None,
) -> list[tuple[tf.Tensor, tf.Tensor]]:
    """Allgathers each table's (indices, rows) from every rank in one grouped call.

    float32 tables travel packed as one tensor each in one grouped call (unless
    ``pack`` says not); the others as two plain allgathers each.

    Args:
        local_rows: Per table, this rank's ([u] int32 indices, [u, ...] rows).
        tables: The matching tables.
        name: Horovod name of the collective (the same on every rank).
        pack: Per table, whether a float32 table is packed (default: all); must be
            the same on every rank.

    Returns:
        Per table, the concatenation over ranks of (indices, rows).
    """
    if not local_rows:
        return []
    packed = [values.dtype == tf.float32 and (pack is None or bool(pack[k]))
              for k, (_, values) in enumerate(local_rows)]
    # Grouped allgather needs one dtype: packed tables go in one grouped call, the
    # others as two plain allgathers each (as horovod_default sends IndexedSlices).
    to_send = [pack_rows(indices, values, table.row_size)
               for (indices, values), table, p in zip(local_rows, tables, packed) if p]
    received = iter(hvd.grouped_allgather(to_send, name=name) if to_send else [])
    gathered = []
    for k, ((indices, values), table, p) in enumerate(zip(local_rows, tables, packed)):
        if p:
            gathered.append(unpack_rows(next(received), table.row_shape))
        else:
            gathered.append((hvd.allgather(indices, name=f"{name}_{k}_indices"),
                             hvd.allgather(values, name=f"{name}_{k}_values")))
    return gathered


def grouped_allreduce_average(
    tensors: Sequence[tf.Tensor], name: str = "adrank_dense_grads"
) -> list[tf.Tensor]:
    """Averages dense tensors over ranks in one fused grouped allreduce."""
    if not tensors:
        return []
    return list(hvd.grouped_allreduce(list(tensors), op=hvd.Average, name=name))


def agree_on_paths(
    local_touched_rows: Sequence[int] | tf.Tensor,
    local_raw_rows: Sequence[int] | tf.Tensor,
    tables: Sequence[SparseTable],
    cost_model: PathCostModel,
) -> tuple[Plan, tuple[bool, ...], np.ndarray, np.ndarray]:
    """Chooses every table's path and local de-dup from counts summed over ranks.

    One allreduce (sum) of exact integers, so every rank gets the same choices. A
    table whose de-dup does not pay sends its raw rows, which the sparse cost counts.

    Args:
        local_touched_rows: Per table, the distinct rows this rank touched.
        local_raw_rows: Per table, this rank's gradient rows counting repeats.
        tables: The tables.
        cost_model: Compares the paths and says when de-dup pays.

    Returns:
        (the plan, per table whether to de-dup, summed distinct rows, summed raw rows).
    """
    n = len(tables)
    local = tf.concat([tf.cast(tf.reshape(local_touched_rows, [-1]), tf.int64),
                       tf.cast(tf.reshape(local_raw_rows, [-1]), tf.int64)], axis=0)
    summed = hvd.allreduce(local, op=hvd.Sum, name="adrank_touched_and_raw_rows").numpy()
    distinct, raw = summed[:n], summed[n:]
    dedup = tuple(cost_model.dedup_pays(int(u), int(r)) for u, r in zip(distinct, raw))
    plan = tuple(cost_model.choose(int(u if d else r), table)
                 for u, r, d, table in zip(distinct, raw, dedup, tables))
    return plan, dedup, distinct, raw


# ----------------------------------------------------------------------------------
# The train step
# ----------------------------------------------------------------------------------

LossFn = Callable[..., tf.Tensor]
Dedup = tuple[bool, ...]


def owned_rows(
    indices: tf.Tensor, values: tf.Tensor, rank: int, size: int
) -> tuple[tf.Tensor, tf.Tensor]:
    """The (index, row) pairs whose row this rank owns (``index % size == rank``)."""
    mine = tf.equal(tf.math.floormod(indices, size), rank)
    return tf.boolean_mask(indices, mine), tf.boolean_mask(values, mine)


def send_rows_to_owners(
    indices: tf.Tensor, values: tf.Tensor, table: SparseTable, name: str
) -> tuple[tf.Tensor, tf.Tensor]:
    """Sends each (index, row) pair to the rank that owns the row (one ``hvd.alltoall``).

    Returns the pairs this rank owns, from every rank (repeats not summed). A float32
    table travels packed (:func:`pack_rows`) in one alltoall; others are allgathered
    and filtered (:func:`owned_rows`).
    """
    rank, size = hvd.rank(), hvd.size()
    if values.dtype != tf.float32:
        (indices, values), = allgather_rows([(indices, values)], [table], name=name)
        return owned_rows(indices, values, rank, size)
    owner = tf.math.floormod(indices, size)
    parts = tf.dynamic_partition(pack_rows(indices, values, table.row_size), owner, size)
    splits = tf.stack([tf.shape(part)[0] for part in parts])
    received, _ = hvd.alltoall(tf.concat(parts, axis=0), splits=splits, name=name)
    return unpack_rows(received, table.row_shape)


def owner_mask(rows: int, rank: int, size: int) -> tf.Tensor:
    """[rows, 1] bool: the rows of a table this rank owns."""
    return tf.reshape(tf.equal(tf.math.floormod(tf.range(rows), size), rank), [rows, 1])


class TrainStep:
    """One distributed training step; call it with a batch, get this rank's loss.

    Holds the optimizers and, in ``"split"`` mode, the current per-table plan. Each
    plan gets its own traced ``tf.function`` (built once, then cached), so
    switching plans retraces at most once per distinct plan. A step that re-chooses
    the plan (step 1, then every ``replan_every``) runs in two traced halves: the
    local gradients and their row counts, then -- once the ranks have agreed on the
    plan from those counts -- the exchange and apply in that plan. So step 1 already
    takes the chosen path: a table that belongs on the dense path never sees a
    sparse update (a sparse op puts TensorFlow variables in copy-on-read mode, after
    which every dense update of them copies the whole table: about 15% slower steps
    at 2^16-2^18 rows in bench/sparse_dense.py).

    Attributes:
        mode: ``"split"``, ``"sparse_as_dense"`` or ``"horovod_default"``.
        dense_optimizer: RMSProp (legacy Keras) for the dense variables.
        sparse_optimizer: FTRL (legacy Keras) for the sparse variables.
        tables: Static facts about the sparse variables.
        steps: Steps run so far.
    """

    def __init__(
        self,
        loss_fn: LossFn,
        dense_vars: Sequence[tf.Variable],
        sparse_vars: Sequence[tf.Variable],
        mode: Mode,
        dense_optimizer: Any,
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
        self.path_policy = path_policy
        self.replan_every = replan_every
        self.cost_model = cost_model or PathCostModel()
        self.tables = [SparseTable.of(v) for v in self.sparse_vars]
        if mode != "horovod_default" and path_policy != SPARSE:
            _warn_unless_zero(self.sparse_vars)
        self.sharded = shard_sparse_updates and mode == "split" and hvd.size() > 1
        self.steps = 0
        self.last_touched_rows: np.ndarray | None = None
        initial = DENSE if path_policy == DENSE else SPARSE
        self._plan: Plan = tuple(initial for _ in self.tables)
        self._dedup: Dedup = tuple(True for _ in self.tables)
        self.last_raw_rows: np.ndarray | None = None
        self._functions: dict[tuple[Any, ...], Callable[..., Any]] = {}
        self._measuring: Callable[..., Any] | None = None

    @property
    def plan(self) -> Plan:
        """Per sparse variable, the path of the next step (``"sparse"``/``"dense"``)."""
        return self._plan

    @property
    def dedup(self) -> Dedup:
        """Per sparse variable, whether a sparse-path table is de-duplicated locally."""
        return self._dedup

    @property
    def last_density(self) -> list[float] | None:
        """Per table, the mean over ranks of (distinct rows touched / rows) at the last plan."""
        if self.last_touched_rows is None:
            return None
        size = hvd.size()
        return [float(n) / (size * t.rows) for n, t in zip(self.last_touched_rows, self.tables)]

    @property
    def variables(self) -> list[tf.Variable]:
        """Dense then sparse variables."""
        return self.dense_vars + self.sparse_vars

    @property
    def optimizers(self) -> list[Any]:
        """Dense then sparse optimizer."""
        return [self.dense_optimizer, self.sparse_optimizer]

    def __call__(self, *batch: Any) -> tf.Tensor:
        """Runs one step on this rank's batch (every rank must call it together).

        Args:
            *batch: Passed to the loss closure unchanged.

        Returns:
            This rank's loss (not averaged over ranks).
        """
        if self._replan_due(self.steps + 1):
            loss = self._measured_step(batch)
        else:
            loss = self.function_for(self._plan, self._dedup)(*batch)
        self.steps += 1
        return loss

    def function_for(self, plan: Plan, dedup: Dedup | None = None) -> Callable[..., Any]:
        """The traced step for a plan: batch -> this rank's loss.

        Args:
            plan: Per table, ``"sparse"`` or ``"dense"``.
            dedup: Per table, whether a sparse-path table is de-duplicated before
                it is sent (default: all).
        """
        dedup = tuple(True for _ in plan) if dedup is None else tuple(dedup)
        key = (plan, dedup)
        if key not in self._functions:
            if self.mode == "split":
                def step(*batch: Any) -> tf.Tensor:
                    loss, dense_grads, slices = self._local_gradients(batch)
                    self._exchange_and_apply(plan, dedup, dense_grads, slices)
                    return loss
            else:
                step = self._tape_step
            self._functions[key] = tf.function(step, reduce_retracing=True)
        return self._functions[key]

    def _measured_step(self, batch: tuple[Any, ...]) -> tf.Tensor:
        """Local gradients and row counts; agree on the plan; exchange and apply in it."""
        if self._measuring is None:
            self._measuring = tf.function(self._gradients_and_counts, reduce_retracing=True)
        loss, dense_grads, indices, values, counts = self._measuring(*batch)
        self._replan(counts)
        slices = [tf.IndexedSlices(v, i, _dense_shape(var))
                  for i, v, var in zip(indices, values, self.sparse_vars)]
        self._apply_function(self._plan, self._dedup)(dense_grads, slices)
        return loss

    def _apply_function(self, plan: Plan, dedup: Dedup) -> Callable[..., Any]:
        """The traced second half of a measured step, per plan."""
        key = ("apply", plan, dedup)
        if key not in self._functions:
            self._functions[key] = tf.function(
                lambda dense_grads, slices: self._exchange_and_apply(plan, dedup, dense_grads, slices),
                reduce_retracing=True)
        return self._functions[key]

    def _gradients_and_counts(self, *batch: Any) -> tuple[Any, ...]:
        """(loss, dense grads, per table indices and rows, [2, tables] distinct/raw rows)."""
        loss, dense_grads, slices = self._local_gradients(batch)
        distinct = [tf.size(tf.unique(s.indices)[0]) for s in slices]
        raw = [tf.size(s.indices) for s in slices]
        counts = tf.stack([tf.stack(distinct), tf.stack(raw)]) if slices else tf.zeros([2, 0], tf.int32)
        return (loss, dense_grads, [s.indices for s in slices], [s.values for s in slices], counts)

    def _replan_due(self, step_number: int) -> bool:
        """Whether the plan is re-chosen before step ``step_number`` (1-based)."""
        if self.mode != "split" or self.path_policy != "auto" or not self.tables:
            return False
        return step_number == 1 or step_number % self.replan_every == 0

    def _replan(self, local_counts: tf.Tensor) -> None:
        plan, dedup, distinct, raw = agree_on_paths(
            local_counts[0], local_counts[1], self.tables, self.cost_model)
        self.last_touched_rows = distinct
        self.last_raw_rows = raw
        if any(old == SPARSE and new == DENSE for old, new in zip(self._plan, plan)) and self.steps:
            self.consolidate_sparse_state()  # a dense apply reads every row's slots
        if (plan, dedup) != (self._plan, self._dedup):
            _LOG.info("step %d: sparse paths %s, local de-dup %s (distinct/raw rows, all "
                      "ranks: %s/%s)", self.steps + 1, dict(zip((t.name for t in self.tables), plan)),
                      list(dedup), distinct.tolist(), raw.tolist())
        self._plan = plan
        self._dedup = dedup

    def _local_gradients(self, batch: tuple[Any, ...]) -> tuple[tf.Tensor, list[tf.Tensor], list[Any]]:
        """(loss, dense gradients as tensors, sparse gradients as int32 IndexedSlices)."""
        with tf.GradientTape() as tape:
            loss = self.loss_fn(*batch)
        grads = tape.gradient(loss, self.variables)
        dense = [_dense_or_zeros(g, v) for g, v in zip(grads[: len(self.dense_vars)], self.dense_vars)]
        slices = [as_indexed_slices(g, v)
                  for g, v in zip(grads[len(self.dense_vars):], self.sparse_vars)]
        return loss, dense, slices

    def _exchange_and_apply(self, plan: Plan, dedup: Dedup, dense_grads: list[tf.Tensor],
                            slices: list[tf.IndexedSlices]) -> None:
        """De-duplicate where agreed, exchange, apply; share owners' rows when sharded."""
        local_rows = [deduplicate(s.indices, s.values) if path == SPARSE and d else (s.indices, s.values)
                      for s, path, d in zip(slices, plan, dedup)]
        dense_avg, table_grads = self._exchange(plan, dense_grads, local_rows, dedup)
        self._apply(dense_avg, table_grads)
        if self.sharded:
            self._share_owned_rows(plan, table_grads)

    def _exchange(
        self,
        plan: Plan,
        dense_grads: list[tf.Tensor],
        local_rows: list[tuple[tf.Tensor, tf.Tensor]],
        dedup: Dedup,
    ) -> tuple[list[tf.Tensor], list[Any]]:
        """One fused allreduce (dense grads + dense-path tables); sparse-path rows to their
        owners (one alltoall per table) or, unsharded, one grouped allgather.

        Returns:
            (averaged dense gradients, per table its averaged gradient: a dense tensor
            or IndexedSlices whose repeated indices the optimizer sums).
        """
        by_dense = [k for k, path in enumerate(plan) if path == DENSE]
        by_sparse = [k for k, path in enumerate(plan) if path == SPARSE]
        # Names carry the plan and the packing, so one name always means the same
        # list of tensors ("d" dense, "s" sparse packed, "r" sparse raw).
        tag = "".join("d" if p == DENSE else "s" if d else "r" for p, d in zip(plan, dedup))
        to_reduce = dense_grads + [densify(*local_rows[k], self.tables[k].rows) for k in by_dense]
        reduced = grouped_allreduce_average(to_reduce, name=f"adrank_dense_grads_{tag}")
        if self.sharded:  # each rank receives the rows it owns and applies them once
            gathered = [deduplicate(*send_rows_to_owners(*local_rows[k], self.tables[k],
                                                         name=f"adrank_owned_grads_{tag}_{k}"))
                        for k in by_sparse]
        else:
            gathered = allgather_rows([local_rows[k] for k in by_sparse],
                                      [self.tables[k] for k in by_sparse],
                                      name=f"adrank_sparse_rows_{tag}",
                                      pack=[dedup[k] for k in by_sparse])
        table_grads: dict[int, Any] = dict(zip(by_dense, reduced[len(dense_grads):]))
        for k, (indices, values) in zip(by_sparse, gathered):
            dense_shape = _dense_shape(self.sparse_vars[k])
            table_grads[k] = tf.IndexedSlices(values / hvd.size(), indices, dense_shape)
        return reduced[: len(dense_grads)], [table_grads[k] for k in range(len(plan))]

    def _share_owned_rows(self, plan: Plan, table_grads: list[Any]) -> None:
        """Allgathers every rank's freshly updated own rows and writes them here."""
        by_sparse = [k for k, path in enumerate(plan) if path == SPARSE]
        updated = [(table_grads[k].indices, tf.gather(self.sparse_vars[k], table_grads[k].indices))
                   for k in by_sparse]
        tag = "".join("d" if p == DENSE else "s" for p in plan)
        gathered = allgather_rows(updated, [self.tables[k] for k in by_sparse],
                                  name=f"adrank_owned_rows_{tag}")
        for k, (indices, rows) in zip(by_sparse, gathered):
            self.sparse_vars[k].scatter_update(tf.IndexedSlices(rows, indices))

    def consolidate_sparse_state(self) -> None:
        """Makes every sparse table's FTRL slots whole on every rank (a collective).

        With sharded updates each rank's slots are exact only for the rows it owns;
        one grouped allreduce (sum) of the slots, each masked to this rank's rows,
        gives every rank every owner's rows (adding zeros is exact). O(table): call it
        before checkpoints and broadcasts, not every step. A no-op unless sharded.
        """
        if not self.sharded:
            return
        slots, masked = [], []
        for variable, table in zip(self.sparse_vars, self.tables):
            mine = owner_mask(table.rows, hvd.rank(), hvd.size())
            for name in self.sparse_optimizer.get_slot_names():
                slot = self.sparse_optimizer.get_slot(variable, name)
                slots.append(slot)
                flat = tf.reshape(slot, [table.rows, -1])
                masked.append(tf.where(mine, flat, tf.zeros_like(flat)))
        if not slots:
            return
        summed = hvd.grouped_allreduce(masked, op=hvd.Sum, name="adrank_sparse_slots")
        for slot, value in zip(slots, summed):
            slot.assign(tf.reshape(value, slot.shape))

    def broadcast_initial_state(self, root_rank: int = 0) -> None:
        """Consolidates the sparse slots, then copies all state from ``root_rank``.

        Call on every rank after the first step (see :func:`broadcast_initial_state`).
        """
        self.consolidate_sparse_state()
        broadcast_initial_state(self.variables, self.optimizers, root_rank=root_rank)

    def _tape_step(self, *batch: Any) -> tf.Tensor:
        """``hvd.DistributedGradientTape`` as it comes (the comparison modes)."""
        with tf.GradientTape() as tape:
            loss = self.loss_fn(*batch)
        tape = hvd.DistributedGradientTape(tape, sparse_as_dense=self.mode == "sparse_as_dense")
        grads = tape.gradient(loss, self.variables)
        self._apply(grads[: len(self.dense_vars)], grads[len(self.dense_vars):])
        return loss

    def _apply(self, dense_grads: Sequence[Any], sparse_grads: Sequence[Any]) -> None:
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


def _dense_shape(variable: tf.Variable) -> tf.Tensor:
    """A variable's shape as int64, a constant when static (no read of the variable)."""
    if variable.shape.is_fully_defined():
        return tf.constant(variable.shape.as_list(), tf.int64)
    return tf.shape(variable, out_type=tf.int64)


def _dense_or_zeros(gradient: Any, variable: tf.Variable) -> tf.Tensor:
    """A dense variable's gradient as a dense tensor (zeros when missing)."""
    if gradient is None:
        return tf.zeros_like(variable)
    return tf.convert_to_tensor(gradient)


def _require_legacy_sparse(optimizer: Any) -> None:
    """Refuses sparse optimizers whose per-step cost grows with the table."""
    if not isinstance(optimizer, LegacyOptimizer):
        raise TypeError(
            "the sparse optimizer must be a tf.keras.optimizers.legacy optimizer, got "
            f"{type(optimizer).__name__}: the new Keras optimizers update whole tables "
            "per step (tf.keras.optimizers.Ftrl is O(table), DESIGN.md)"
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
    rmsprop_kwargs: dict[str, Any] | None = None,
    ftrl_kwargs: dict[str, Any] | None = None,
    dense_optimizer: Any | None = None,
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
        dense_lr: RMSProp learning rate for one process.
        ftrl_lr: FTRL learning rate (not scaled: FTRL's per-coordinate rate already
            adapts to the averaged gradient).
        scale_dense_lr_by_size: Multiply ``dense_lr`` by ``hvd.size()`` (the
            Horovod convention).
        path_policy: In ``"split"`` mode, ``"auto"`` chooses each table's path
            from measured density; ``"sparse"``/``"dense"`` force one path.
        replan_every: In ``"auto"``, re-measure after step 1 and every this many
            steps.
        cost_model: The path chooser; calibrated defaults when omitted.
        shard_sparse_updates: In ``"split"`` mode on several ranks, each rank
            applies FTRL to the sparse-path rows it owns and shares the results
            (see the module docstring); ``False`` applies every row on every rank.
        rmsprop_kwargs: Extra arguments for ``tf.keras.optimizers.legacy.RMSprop``.
        ftrl_kwargs: Extra arguments for ``tf.keras.optimizers.legacy.Ftrl``.
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


def optimizer_variables(optimizer: Any) -> list[tf.Variable]:
    """An optimizer's own state (iterations, hyperparameters, slots), legacy or new."""
    variables = optimizer.variables
    return list(variables() if callable(variables) else variables)


def broadcast_initial_state(
    variables: Sequence[tf.Variable], optimizers: Sequence[Any], root_rank: int = 0
) -> None:
    """Copies model variables and optimizer state from ``root_rank`` to every rank.

    Call on every rank after the first step, once the optimizers have made their
    slots (slot order is the same on every rank: same code, same variables).

    Args:
        variables: Model variables.
        optimizers: Optimizers whose slots, iteration counters and hyperparameters
            follow.
        root_rank: The rank whose state wins.
    """
    state = list(variables)
    for optimizer in optimizers:
        state.extend(optimizer_variables(optimizer))
    hvd.broadcast_variables(state, root_rank=root_rank)


__all__ = [
    "DENSE",
    "MODES",
    "PATH_POLICIES",
    "SPARSE",
    "PathCostModel",
    "SparseTable",
    "TrainStep",
    "agree_on_paths",
    "allgather_rows",
    "as_indexed_slices",
    "broadcast_initial_state",
    "deduplicate",
    "densify",
    "grouped_allreduce_average",
    "make_train_step",
    "optimizer_variables",
    "owned_rows",
    "owner_mask",
    "send_rows_to_owners",
    "pack_rows",
    "unpack_rows",
]
