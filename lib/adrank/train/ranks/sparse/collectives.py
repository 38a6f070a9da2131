"""The collectives of the two gradient paths (graph-safe, usable inside ``tf.function``).

Contract: every function here is called by every rank in the same order with the same
names. Dense gradients (and dense-path tables) are averaged in one fused
``hvd.grouped_allreduce``. Sparse-path rows travel as (index, row) pairs, float32 rows
packed with their int32 index into one int32 tensor (bit-exact): sharded (several ranks),
one ``hvd.alltoall`` per table sends each pair to the row's owner (row ``i`` belongs to
rank ``i % size``), which applies FTRL to it, and one grouped allgather then hands the
owners' updated rows to every rank (:func:`share_owned_rows`); unsharded, one grouped
allgather gives every rank every rank's rows. With sharding the FTRL slots are exact only
on each row's owner until :func:`consolidate_slots` (one masked allreduce, O(table)).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeAlias

import horovod.tensorflow as hvd
import tensorflow as tf

from adrank.train.ranks.hvd_setup import rank0_logger
from adrank.train.ranks.sparse.plan import DENSE, SPARSE, Dedup, Plan, SparseTable

Rows = tuple[tf.Tensor, tf.Tensor]
Gradient: TypeAlias = tf.Tensor | tf.IndexedSlices
Optimizer: TypeAlias = tf.keras.optimizers.Optimizer | tf.keras.optimizers.legacy.Optimizer

_LOG = rank0_logger(__name__)


def dense_shape(variable: tf.Variable) -> tf.Tensor:
    """A variable's shape as int64, a constant when static (no read of the variable)."""
    if variable.shape.is_fully_defined():
        return tf.constant(variable.shape.as_list(), tf.int64)
    return tf.shape(variable, out_type=tf.int64)


def as_indexed_slices(gradient: Gradient | None, variable: tf.Variable) -> tf.IndexedSlices:
    """The gradient of a sparse variable as IndexedSlices with int32 indices.

    A missing gradient becomes zero rows; a dense one (the table was also used by a
    dense op) becomes all rows, which is correct but costs O(table).
    """
    shape = dense_shape(variable)
    if gradient is None:
        empty = tf.zeros([0, *variable.shape[1:]], variable.dtype)
        return tf.IndexedSlices(empty, tf.zeros([0], tf.int32), shape)
    if isinstance(gradient, tf.IndexedSlices):
        return tf.IndexedSlices(gradient.values, tf.cast(gradient.indices, tf.int32), shape)
    _LOG.warning("variable %s got a dense gradient; sending all its rows", variable.name)
    rows = tf.range(tf.shape(gradient)[0], dtype=tf.int32)
    return tf.IndexedSlices(gradient, rows, shape)


def deduplicate(indices: tf.Tensor, values: tf.Tensor) -> Rows:
    """Sums the rows of repeated indices: ([u] distinct indices in order of first
    appearance, [u, ...] summed rows)."""
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


def unpack_rows(packed: tf.Tensor, row_shape: Sequence[int]) -> Rows:
    """Inverse of :func:`pack_rows`: ([u] int32 indices, [u, *row_shape] float32 rows)."""
    values = tf.bitcast(packed[:, 1:], tf.float32)
    return packed[:, 0], tf.reshape(values, [-1, *row_shape])


def allgather_rows(
    local_rows: Sequence[Rows],
    tables: Sequence[SparseTable],
    name: str = "adrank_sparse_rows",
    pack: Sequence[bool] | None = None,
) -> list[Rows]:
    """Allgathers each table's (indices, rows) from every rank in one grouped call.

    float32 tables travel packed as one tensor each in one grouped call (unless
    ``pack`` says not, the same on every rank); the others as two plain allgathers each.

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


def owned_rows(indices: tf.Tensor, values: tf.Tensor, rank: int, size: int) -> Rows:
    """The (index, row) pairs whose row this rank owns (``index % size == rank``)."""
    mine = tf.equal(tf.math.floormod(indices, size), rank)
    return tf.boolean_mask(indices, mine), tf.boolean_mask(values, mine)


def send_rows_to_owners(indices: tf.Tensor, values: tf.Tensor, table: SparseTable, name: str) -> Rows:
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


def exchange(
    plan: Plan,
    dedup: Dedup,
    dense_grads: Sequence[tf.Tensor],
    local_rows: Sequence[Rows],
    sparse_vars: Sequence[tf.Variable],
    tables: Sequence[SparseTable],
    sharded: bool,
) -> tuple[list[tf.Tensor], list[Gradient]]:
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
    to_reduce = list(dense_grads) + [densify(*local_rows[k], tables[k].rows) for k in by_dense]
    reduced = grouped_allreduce_average(to_reduce, name=f"adrank_dense_grads_{tag}")
    if sharded:  # each rank receives the rows it owns and applies them once
        gathered = [deduplicate(*send_rows_to_owners(*local_rows[k], tables[k],
                                                     name=f"adrank_owned_grads_{tag}_{k}"))
                    for k in by_sparse]
    else:
        gathered = allgather_rows([local_rows[k] for k in by_sparse], [tables[k] for k in by_sparse],
                                  name=f"adrank_sparse_rows_{tag}", pack=[dedup[k] for k in by_sparse])
    table_grads: dict[int, Gradient] = dict(zip(by_dense, reduced[len(dense_grads):]))
    for k, (indices, values) in zip(by_sparse, gathered):
        table_grads[k] = tf.IndexedSlices(values / hvd.size(), indices, dense_shape(sparse_vars[k]))
    return reduced[: len(dense_grads)], [table_grads[k] for k in range(len(plan))]


def share_owned_rows(plan: Plan, table_grads: Sequence[Gradient], sparse_vars: Sequence[tf.Variable],
                     tables: Sequence[SparseTable]) -> None:
    """Allgathers every rank's freshly updated own rows and writes them here."""
    by_sparse = [k for k, path in enumerate(plan) if path == SPARSE]
    updated = [(table_grads[k].indices, tf.gather(sparse_vars[k], table_grads[k].indices))
               for k in by_sparse]
    tag = "".join("d" if p == DENSE else "s" for p in plan)
    gathered = allgather_rows(updated, [tables[k] for k in by_sparse], name=f"adrank_owned_rows_{tag}")
    for k, (indices, rows) in zip(by_sparse, gathered):
        sparse_vars[k].scatter_update(tf.IndexedSlices(rows, indices))


def consolidate_slots(optimizer: tf.keras.optimizers.legacy.Optimizer,
                      sparse_vars: Sequence[tf.Variable], tables: Sequence[SparseTable]) -> None:
    """Makes the sharded tables' optimizer slots whole on every rank (a collective).

    One grouped allreduce (sum) of the slots, each masked to this rank's rows, gives
    every rank every owner's rows (adding zeros is exact). O(table).
    """
    slots, masked = [], []
    for variable, table in zip(sparse_vars, tables):
        mine = owner_mask(table.rows, hvd.rank(), hvd.size())
        for name in optimizer.get_slot_names():
            slot = optimizer.get_slot(variable, name)
            slots.append(slot)
            flat = tf.reshape(slot, [table.rows, -1])
            masked.append(tf.where(mine, flat, tf.zeros_like(flat)))
    if not slots:
        return
    summed = hvd.grouped_allreduce(masked, op=hvd.Sum, name="adrank_sparse_slots")
    for slot, value in zip(slots, summed):
        slot.assign(tf.reshape(value, slot.shape))


def optimizer_variables(optimizer: Optimizer) -> list[tf.Variable]:
    """An optimizer's own state (iterations, hyperparameters, slots), legacy or new."""
    variables = optimizer.variables
    return list(variables() if callable(variables) else variables)


def broadcast_initial_state(
    variables: Sequence[tf.Variable], optimizers: Sequence[Optimizer], root_rank: int = 0
) -> None:
    """Copies model variables and optimizer state from ``root_rank`` to every rank.

    Call on every rank after the first step, once the optimizers have made their
    slots (slot order is the same on every rank: same code, same variables).
    """
    state = list(variables)
    for optimizer in optimizers:
        state.extend(optimizer_variables(optimizer))
    hvd.broadcast_variables(state, root_rank=root_rank)


__all__ = [
    "allgather_rows", "as_indexed_slices", "broadcast_initial_state", "consolidate_slots",
    "deduplicate", "dense_shape", "densify", "exchange", "grouped_allreduce_average",
    "optimizer_variables", "owned_rows", "owner_mask", "pack_rows", "send_rows_to_owners",
    "share_owned_rows", "unpack_rows",
]
