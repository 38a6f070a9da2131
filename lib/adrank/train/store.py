"""The I/O of the tables the train job owns: the stage-1 pairs tables and the stage-3 joint examples.

Contract: :func:`write_pairs` materialises pairs as a Delta table partitioned by kind
(``stage1_pairs_train`` / ``stage1_pairs_holdout``) and returns its new version;
:func:`pair_files` lists the live files of a pinned version per kind (what the ranks
read); :func:`rows_per_kind` counts them. :func:`write_joint_examples` overwrites
``joint_examples_train`` / ``joint_examples_holdout`` (deletion vectors off, so the ranks
can list their live files) and returns the new version. Generic Delta I/O goes through :mod:`adrank.delta`.
"""

from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession

from adrank import delta, layout
from adrank.config import Config
from adrank.errors import naming_table

PAIR_KINDS = (layout.DETAIL, layout.SEARCH)
PAIRS_PARTITION = "kind_part"  # a copy of kind: the files of one kind hold that kind only


def write_pairs(spark: SparkSession, config: Config, pairs: DataFrame, name: str) -> int:
    """Overwrites pairs table ``name`` with ``pairs``; its new Delta version."""
    return materialise_pairs(spark, pairs, layout.table_path(config, name))


def pair_files(spark: SparkSession, config: Config, name: str, version: int) -> dict[str, list[str]]:
    """Per kind with rows, the live files of version ``version`` of pairs table ``name``."""
    path = layout.table_path(config, name)
    files = {kind: delta.live_files(spark, path, version, {PAIRS_PARTITION: kind})
             for kind in PAIR_KINDS}
    return {kind: listed for kind, listed in files.items() if listed}


def rows_per_kind(spark: SparkSession, config: Config, name: str) -> dict[str, int]:
    """Rows of each kind in a pairs table, in one aggregation."""
    counts = delta.read_delta(spark, layout.table_path(config, name)).groupBy(PAIRS_PARTITION).count()
    return {row[PAIRS_PARTITION]: row["count"] for row in counts.collect()}


def write_joint_examples(spark: SparkSession, config: Config, frame: DataFrame, name: str, files: int = 4) -> int:
    """Overwrites joint examples table ``name`` with ``frame`` as about ``files`` files; its new version."""
    path = layout.table_path(config, name)
    writer = frame.repartition(files).write.format("delta").mode("overwrite").option("overwriteSchema", "true")
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
    from pyspark.sql import functions as F

    frame = pairs_df.withColumn(PAIRS_PARTITION, F.col("kind")).repartition(files_per_kind)
    writer = (frame.write.format("delta").mode("overwrite").option("overwriteSchema", "true")
              .partitionBy(PAIRS_PARTITION))
    for key, value in delta.NO_DELETION_VECTORS.items():
        writer = writer.option(key, value)
    with naming_table(path):
        writer.save(path)
    return delta.last_commit_metrics(spark, path)["version"]
