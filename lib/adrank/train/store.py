"""The I/O of the tables the train job owns: the stage-1 pairs tables.

Contract: :func:`write_pairs` materialises pairs as a Delta table partitioned by kind
(``stage1_pairs_train`` / ``stage1_pairs_holdout``) and returns its new version;
:func:`pair_files` lists the live files of a pinned version per kind (what the ranks
read); :func:`rows_per_kind` counts them. Generic Delta I/O goes through ``adrank.tables``.
"""

from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession

from adrank import layout, tables
from adrank.config import Config

PAIR_KINDS = (layout.DETAIL, layout.SEARCH)


def write_pairs(spark: SparkSession, config: Config, pairs: DataFrame, name: str) -> int:
    """Overwrites pairs table ``name`` with ``pairs``; its new Delta version."""
    return tables.materialise_pairs(spark, pairs, layout.table_path(config, name))


def pair_files(spark: SparkSession, config: Config, name: str, version: int) -> dict[str, list[str]]:
    """Per kind with rows, the live files of version ``version`` of pairs table ``name``."""
    path = layout.table_path(config, name)
    files = {kind: tables.live_files(spark, path, version, {tables.PAIRS_PARTITION: kind})
             for kind in PAIR_KINDS}
    return {kind: listed for kind, listed in files.items() if listed}


def rows_per_kind(spark: SparkSession, config: Config, name: str) -> dict[str, int]:
    """Rows of each kind in a pairs table, in one aggregation."""
    counts = tables.read_delta(spark, layout.table_path(config, name)).groupBy(tables.PAIRS_PARTITION).count()
    return {row[tables.PAIRS_PARTITION]: row["count"] for row in counts.collect()}


__all__ = ["pair_files", "rows_per_kind", "write_pairs"]
