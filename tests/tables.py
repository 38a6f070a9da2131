"""Whole-table comparison of two runs' storage roots (for tests that compare runs).

:func:`assert_same_tables` reads each Delta table of both roots with Spark, drops the
columns that record *when* or *by which run* a row was written (:data:`VOLATILE_COLUMNS`),
sorts the rows and compares them whole: every value exactly, floats too unless a
tolerance is given (then only float leaves, inside arrays and structs as well, are
compared with it; ids, strings, bytes and counts stay exact).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from adrank.core import layout  # Every Delta table a pipeline run writes under storage.root.

PIPELINE_TABLES: tuple[str, ...] = (
    layout.SKU_IMAGES, layout.TRAINING_EXAMPLES, layout.QUARANTINE, layout.SKU_EMBEDDINGS,
    layout.PAIRS_TRAIN, layout.PAIRS_HOLDOUT, layout.JOINT_TRAIN, layout.JOINT_HOLDOUT,
    *layout.RECOMMENDATION_TABLES,
)
# Columns that say when or by which run a row was written: never equal across runs.
VOLATILE_COLUMNS: Mapping[str, tuple[str, ...]] = {
    layout.QUARANTINE: ("run_id", "quarantined_at"),
    layout.SKU_EMBEDDINGS: ("updated_at",),
}
MAX_SHOWN = 3  # differing rows shown per table


def table_rows(spark: Any, root: Path | str, table: str,
               ignore: Mapping[str, Sequence[str]] = VOLATILE_COLUMNS) -> tuple[list[str], list[dict]]:
    """The columns and rows (plain Python values) of ``<root>/<table>``, volatile columns dropped."""
    frame = spark.read.format("delta").load(f"{root}/{table}").drop(*ignore.get(table, ()))
    return frame.columns, [row.asDict(recursive=True) for row in frame.collect()]


def _without_floats(value: Any) -> Any:
    """``value`` with every float replaced by None (a sort key that tolerance cannot reorder)."""
    if isinstance(value, float):
        return None
    if isinstance(value, dict):
        return tuple((k, _without_floats(v)) for k, v in sorted(value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_without_floats(v) for v in value)
    return value


def _sort_key(row: dict) -> str:
    return repr((_without_floats(row), repr(row)))


def differs(a: Any, b: Any, tolerance: float, where: str = "") -> str | None:
    """Where ``a`` and ``b`` first differ (floats within ``tolerance`` count as equal), or None."""
    if isinstance(a, float) and isinstance(b, float):
        same = a == b or (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=0.0, abs_tol=tolerance)
        return None if same else f"{where}: {a!r} != {b!r}"
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return f"{where}: keys {sorted(a)} != {sorted(b)}"
        return next((d for k in a if (d := differs(a[k], b[k], tolerance, f"{where}.{k}"))), None)
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{where}: {len(a)} != {len(b)} items"
        return next((d for i, (x, y) in enumerate(zip(a, b)) if (d := differs(x, y, tolerance, f"{where}[{i}]"))),
                    None)
    return None if a == b else f"{where}: {_short(a)} != {_short(b)}"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def table_differences(spark: Any, root_a: Path | str, root_b: Path | str, table: str,
                      tolerance: float = 0.0) -> list[str]:
    """What differs between ``table`` under the two roots (empty: the same rows)."""
    columns_a, rows_a = table_rows(spark, root_a, table)
    columns_b, rows_b = table_rows(spark, root_b, table)
    if columns_a != columns_b:
        return [f"{table}: columns {columns_a} != {columns_b}"]
    if len(rows_a) != len(rows_b):
        return [f"{table}: {len(rows_a)} rows != {len(rows_b)} rows"]
    pairs = zip(sorted(rows_a, key=_sort_key), sorted(rows_b, key=_sort_key))
    found = [f"{table} row {i}{d}" for i, (a, b) in enumerate(pairs) if (d := differs(a, b, tolerance))]
    return found[:MAX_SHOWN] + ([f"{table}: {len(found)} rows differ"] if found else [])


def assert_same_tables(root_a: Path | str, root_b: Path | str, tables: Iterable[str], spark: Any, *,
                       tolerance: Mapping[str, float] | None = None) -> None:
    """Asserts that each of ``tables`` holds the same rows under ``root_a`` and ``root_b``.

    Args:
        root_a: One run's ``storage.root``.
        root_b: The other's.
        tables: Table names (e.g. :data:`PIPELINE_TABLES`).
        spark: A SparkSession with Delta.
        tolerance: Per table, the absolute tolerance of its float values (absent: exact).
    """
    tolerance = tolerance or {}
    problems = [line for table in tables
                for line in table_differences(spark, root_a, root_b, table, tolerance.get(table, 0.0))]
    assert not problems, "tables differ:\n" + "\n".join(problems)
