"""The I/O of the tables the train job owns: the stage-1 pairs tables and the stage-3 joint examples.

Contract: :func:`materialise_pairs` writes pairs as a Delta table partitioned by kind
(``stage1_pairs_train`` / ``stage1_pairs_holdout``) and returns its new version;
:func:`pair_files` lists the live files of a pinned version per kind (what the ranks
read); :func:`rows_per_kind` counts them. :func:`write_joint_examples` overwrites
``joint_examples_train`` / ``joint_examples_holdout`` (deletion vectors off, so the ranks
can list their live files) and returns the new version. Both lay their rows out with
:func:`in_stable_files`: which rows share a file, and their order in it, depend on the
rows alone, so the ranks read the same batches whatever master computed them. Generic
Delta I/O goes through :mod:`adrank.storage.delta`.
"""

from __future__ import annotations

from collections.abc import Sequence

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from adrank.core import layout
from adrank.core.errors import naming_table
from adrank.storage import delta

PAIR_KINDS = (layout.DETAIL, layout.SEARCH)
PAIRS_PARTITION = "kind_part"  # a copy of kind: the files of one kind hold that kind only
# Columns that order the rows of the tables the ranks read (identical rows may tie).
PAIR_ORDER = ("kind", "date", "context_sku_id", "query", "pos_sku_id", "neg_sku_id")
JOINT_ORDER = ("impression_id",)


def in_stable_files(frame: DataFrame, files: int, keys: Sequence[str]) -> DataFrame:
    """``frame`` in ``files`` partitions by a hash of ``keys``, each sorted by that hash, then ``keys``.

    Which file a row lands in and where, then depends on the row alone. A round-robin
    ``repartition(files)`` depends on the upstream partitions too: a standalone cluster
    and a local master wrote the same rows in other files and orders, so the ranks read
    other batches and trained other models. Sorting by the hash rather than the keys keeps
    each file in a pseudo-random order (Petastorm shuffles row groups, never rows).
    """
    order = F.xxhash64(*keys)
    return frame.repartition(files, order).sortWithinPartitions(order, *keys)


def pair_files(spark: SparkSession, path: str, version: int) -> dict[str, list[str]]:
    """Per kind with rows, the live files of version ``version`` of the pairs table at ``path``."""
    files = {kind: delta.live_files(spark, path, version, {PAIRS_PARTITION: kind})
             for kind in PAIR_KINDS}
    return {kind: listed for kind, listed in files.items() if listed}


def rows_per_kind(spark: SparkSession, path: str) -> dict[str, int]:
    """Rows of each kind in the pairs table at ``path``, in one aggregation."""
    counts = delta.read_delta(spark, path).groupBy(PAIRS_PARTITION).count()
    return {row[PAIRS_PARTITION]: row["count"] for row in counts.collect()}


def write_joint_examples(spark: SparkSession, path: str, frame: DataFrame, files: int = 4) -> int:
    """Overwrites the joint examples table at ``path`` with ``frame`` as about ``files`` files; its new version."""
    writer = (in_stable_files(frame, files, JOINT_ORDER).write.format("delta").mode("overwrite")
              .option("overwriteSchema", "true"))
    for key, value in delta.NO_DELETION_VECTORS.items():
        writer = writer.option(key, value)
    with naming_table(path):
        writer.save(path)
    return delta.last_commit_metrics(spark, path)["version"]


def materialise_pairs(spark: SparkSession, pairs_df: DataFrame, path: str, files_per_kind: int = 4) -> int:
    """Writes stage-1 pairs as a Delta table (overwrite, deletion vectors off).

    The table is partitioned by :data:`PAIRS_PARTITION` (a copy of ``kind``), so the
    files of one kind hold that kind only and training lists them with
    ``live_files(..., partition={"kind_part": kind})``; ``kind`` and ``date`` stay inside
    the files as data columns. Each kind is written as about ``files_per_kind`` files
    (Petastorm shards by row group: at least as many files as ranks keeps every shard
    its own rows).

    Args:
        spark: The session.
        pairs_df: Rows of ``adrank.train.pairs.PAIRS_DDL``.
        path: Table location.
        files_per_kind: Files written per kind (one row group each at these sizes).

    Returns:
        The version written: pin it for training.
    """
    frame = in_stable_files(pairs_df.withColumn(PAIRS_PARTITION, F.col("kind")), files_per_kind, PAIR_ORDER)
    writer = (frame.write.format("delta").mode("overwrite").option("overwriteSchema", "true")
              .partitionBy(PAIRS_PARTITION))
    for key, value in delta.NO_DELETION_VECTORS.items():
        writer = writer.option(key, value)
    with naming_table(path):
        writer.save(path)
    return delta.last_commit_metrics(spark, path)["version"]
