"""Which path each sparse table takes, chosen the same way on every rank.

Contract: every ``replan_every`` steps the ranks allreduce (sum) the number of distinct
and of raw rows each touched (:func:`agree_on_paths`); :class:`PathCostModel` compares the
sparse path (bytes ~ touched rows of all ranks x (row size + 1)) with the dense allreduce
path (bytes ~ table rows x row size), and says whether local de-duplication pays (it does
not for uniform ids into a large table: ``tf.unique`` would remove almost nothing). The
sums are exact integers, identical on every rank, so the choice -- and the collectives
it implies -- cannot differ between ranks (docs/design.md, "Measured pitfalls").
:class:`PathPlanner` holds the current plan of a train step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import horovod.tensorflow as hvd
import numpy as np
import tensorflow as tf

from adrank.train.ranks.hvd_setup import rank0_logger

Mode = Literal["split", "sparse_as_dense", "horovod_default"]
MODES: tuple[str, ...] = ("split", "sparse_as_dense", "horovod_default")
PathPolicy = Literal["auto", "sparse", "dense"]
PATH_POLICIES: tuple[str, ...] = ("auto", "sparse", "dense")
SPARSE = "sparse"
DENSE = "dense"
Plan = tuple[str, ...]
Dedup = tuple[bool, ...]

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
        dedup_max_unique_ratio: Local de-dup pays when distinct/raw rows is at most this.
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


def agree_on_paths(
    local_touched_rows: Sequence[int] | tf.Tensor,
    local_raw_rows: Sequence[int] | tf.Tensor,
    tables: Sequence[SparseTable],
    cost_model: PathCostModel,
) -> tuple[Plan, Dedup, np.ndarray, np.ndarray]:
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


def local_row_counts(indices: Sequence[tf.Tensor]) -> tf.Tensor:
    """[2, tables] int32: per table the distinct and the raw rows of this rank's gradient."""
    if not indices:
        return tf.zeros([2, 0], tf.int32)
    distinct = [tf.size(tf.unique(i)[0]) for i in indices]
    raw = [tf.size(i) for i in indices]
    return tf.stack([tf.stack(distinct), tf.stack(raw)])


class PathPlanner:
    """The current per-table plan of one train step, and when to re-choose it.

    Attributes:
        tables: The sparse tables.
        policy: ``"auto"`` (measured), or ``"sparse"``/``"dense"`` forced.
        replan_every: In ``"auto"``, re-choose at step 1 and every this many steps.
        cost_model: The path chooser.
        plan: Per table, the path of the next step.
        dedup: Per table, whether a sparse-path table is de-duplicated locally.
        last_touched_rows: Distinct rows summed over ranks at the last re-plan.
        last_raw_rows: Raw rows summed over ranks at the last re-plan.
    """

    def __init__(self, tables: Sequence[SparseTable], policy: PathPolicy = "auto",
                 replan_every: int = 50, cost_model: PathCostModel | None = None) -> None:
        self.tables = list(tables)
        self.policy = policy
        self.replan_every = replan_every
        self.cost_model = cost_model or PathCostModel()
        initial = DENSE if policy == DENSE else SPARSE
        self.plan: Plan = tuple(initial for _ in self.tables)
        self.dedup: Dedup = tuple(True for _ in self.tables)
        self.last_touched_rows: np.ndarray | None = None
        self.last_raw_rows: np.ndarray | None = None

    def due(self, step_number: int) -> bool:
        """Whether the plan is re-chosen before step ``step_number`` (1-based)."""
        if self.policy != "auto" or not self.tables:
            return False
        return step_number == 1 or step_number % self.replan_every == 0

    def replan(self, local_counts: tf.Tensor, step_number: int) -> bool:
        """Agrees on the plan from this rank's [2, tables] counts (a collective).

        Returns:
            Whether a table moves from the sparse to the dense path.
        """
        plan, dedup, distinct, raw = agree_on_paths(
            local_counts[0], local_counts[1], self.tables, self.cost_model)
        self.last_touched_rows, self.last_raw_rows = distinct, raw
        to_dense = any(old == SPARSE and new == DENSE for old, new in zip(self.plan, plan))
        if (plan, dedup) != (self.plan, self.dedup):
            _LOG.info("step %d: sparse paths %s, local de-dup %s (distinct/raw rows, all "
                      "ranks: %s/%s)", step_number, dict(zip((t.name for t in self.tables), plan)),
                      list(dedup), distinct.tolist(), raw.tolist())
        self.plan, self.dedup = plan, dedup
        return to_dense


__all__ = ["DEFAULT_SPARSE_ELEMENT_COST", "DENSE", "MODES", "PATH_POLICIES", "SPARSE", "Dedup", "Mode",
           "PathCostModel", "PathPlanner", "PathPolicy", "Plan", "SparseTable", "agree_on_paths",
           "local_row_counts"]
