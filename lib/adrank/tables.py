"""Table names and paths, and the one place Delta tables and run files are read and written.

Delta tables live at ``<storage.root>/<table>``. Writes carry the run id (and any figures
given) as Delta commit metadata, so ``DESCRIBE HISTORY`` tells which run wrote what.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

from pyspark.sql import DataFrame, SparkSession

from adrank.config import Config

SKU_IMAGES = "sku_images"
TRAINING_EXAMPLES = "training_examples"
QUARANTINE = "quarantine"
SKU_EMBEDDINGS = "sku_embeddings"
RUNS_FOLDER = "_runs"


def table_path(config: Config, table: str) -> str:
    """Where ``table`` lives: ``<storage.root>/<table>``."""
    return join_path(config.storage.root, table)


def join_path(root: str, *parts: str) -> str:
    """Join path parts onto a local path or a URI (``s3a://b/x`` + ``t`` -> ``s3a://b/x/t``)."""
    return "/".join([root.rstrip("/"), *(p.strip("/") for p in parts)])


def write_delta(
    df: DataFrame,
    path: str,
    *,
    mode: str = "append",
    partition_by: Sequence[str] = (),
    replace_where: str | None = None,
    commit_info: Mapping[str, Any] | None = None,
) -> None:
    """Write ``df`` as a Delta table in one commit.

    Args:
        df: rows to write.
        path: table location.
        mode: ``append`` or ``overwrite``.
        partition_by: partition columns (used when the table is created).
        replace_where: with ``overwrite``, replace only the rows matching this predicate.
        commit_info: JSON-able facts stored in the commit's ``userMetadata``.
    """
    writer = df.write.format("delta").mode(mode)
    if partition_by:
        writer = writer.partitionBy(*partition_by)
    if replace_where:
        writer = writer.option("replaceWhere", replace_where)
    if commit_info:
        writer = writer.option("userMetadata", json.dumps(dict(commit_info), sort_keys=True))
    writer.save(path)


def read_delta(spark: SparkSession, path: str, version: int | None = None) -> DataFrame:
    """Read a Delta table, at ``version`` if given (time travel)."""
    reader = spark.read.format("delta")
    if version is not None:
        reader = reader.option("versionAsOf", version)
    return reader.load(path)


def write_text_file(spark: SparkSession | None, uri: str, text: str) -> None:
    """Write one small text file to a local path or any Hadoop-supported URI."""
    if "://" not in uri or uri.startswith("file://"):
        local = Path(uri.removeprefix("file://"))
        local.parent.mkdir(parents=True, exist_ok=True)
        tmp = local.with_name(f".{local.name}.tmp")
        tmp.write_text(text)
        tmp.replace(local)
        return
    if spark is None:
        raise ValueError(f"writing {uri} needs a SparkSession (Hadoop FileSystem)")
    jvm = spark.sparkContext._jvm
    hadoop_path = jvm.org.apache.hadoop.fs.Path(uri)
    fs = hadoop_path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    stream = fs.create(hadoop_path, True)
    try:
        stream.write(bytearray(text.encode("utf-8")))
    finally:
        stream.close()


SKU_IMAGES_PROPERTIES = {"delta.enableChangeDataFeed": "true", "delta.enableDeletionVectors": "false"}
USER_METADATA_CONF = "spark.databricks.delta.commitInfo.userMetadata"
SKU_IMAGES_CHANGED = " OR ".join(
    f"NOT (t.{c} <=> s.{c})" for c in ("image_hash", "title", "category_id", "image_format", "height", "width")
)


def upsert_sku_images(
    spark: SparkSession,
    good_df: DataFrame,
    path: str,
    commit_info: Mapping[str, Any] | None,
    full_snapshot: bool = True,
) -> dict[str, int | bool]:
    """MERGE the good ``sku_images`` rows into the table, rewriting only changed rows.

    The first run creates the table (Change Data Feed on, deletion vectors off). Matched
    rows are updated only when ``image_hash``, ``title``, ``category_id`` or the stored
    format/size changed, so unchanged SKUs leave no trace in the Change Data Feed.

    Args:
        spark: The session.
        good_df: ``sku_images`` rows, one per ``sku_id`` (``split_images``' good output).
        path: Table location.
        commit_info: JSON-able facts stored as the commits' ``userMetadata``.
        full_snapshot: ``good_df`` is the whole catalog: delete SKUs absent from it.
            Pass False for partial (incremental) catalog drops.

    Returns:
        ``version`` of the MERGE commit, ``rows_inserted``, ``rows_updated``,
        ``rows_deleted`` (from its operationMetrics) and ``created``.
    """
    metadata = json.dumps(dict(commit_info or {}), sort_keys=True)
    previous = spark.conf.get(USER_METADATA_CONF, None)
    spark.conf.set(USER_METADATA_CONF, metadata)
    try:
        created = _create_sku_images(spark, good_df, path)
        _merge_sku_images(spark, good_df, path, full_snapshot)
    finally:
        if previous is None:
            spark.conf.unset(USER_METADATA_CONF)
        else:
            spark.conf.set(USER_METADATA_CONF, previous)
    return {**_merge_figures(spark, path, metadata), "created": created}


def _merge_sku_images(spark: SparkSession, good_df: DataFrame, path: str, full_snapshot: bool) -> None:
    """One MERGE by ``sku_id``: update changed rows, insert new ones, delete gone ones if asked."""
    from delta.tables import DeltaTable

    merge = (
        DeltaTable.forPath(spark, path).alias("t")
        .merge(good_df.alias("s"), "t.sku_id = s.sku_id")
        .whenMatchedUpdate(condition=SKU_IMAGES_CHANGED, set={c: f"s.{c}" for c in good_df.columns})
        .whenNotMatchedInsertAll()
    )
    if full_snapshot:
        merge = merge.whenNotMatchedBySourceDelete()
    merge.execute()


def _create_sku_images(spark: SparkSession, good_df: DataFrame, path: str) -> bool:
    """Create the empty table with its properties unless it exists; True if created."""
    from delta.tables import DeltaTable

    if DeltaTable.isDeltaTable(spark, path):
        return False
    builder = DeltaTable.createIfNotExists(spark).location(path).addColumns(good_df.schema)
    for key, value in SKU_IMAGES_PROPERTIES.items():
        builder = builder.property(key, value)
    builder.execute()
    return True


def _merge_figures(spark: SparkSession, path: str, metadata: str) -> dict[str, int]:
    """Figures of the latest MERGE commit carrying ``metadata`` (another writer may follow)."""
    from delta.tables import DeltaTable

    history = DeltaTable.forPath(spark, path).history(20)
    rows = (history.where((history.operation == "MERGE") & (history.userMetadata == metadata))
            .orderBy(history.version.desc()).limit(1).collect())
    if not rows:
        raise RuntimeError(f"no MERGE commit with this run's metadata in the history of {path}")
    metrics = rows[0].operationMetrics or {}
    return {
        "version": int(rows[0].version),
        "rows_inserted": int(metrics.get("numTargetRowsInserted", 0)),
        "rows_updated": int(metrics.get("numTargetRowsUpdated", 0)),
        "rows_deleted": int(metrics.get("numTargetRowsDeleted", 0)),
    }


def last_commit_metrics(spark: SparkSession, path: str) -> dict[str, int]:
    """Version and rows written of the table's latest commit (from its operationMetrics)."""
    from delta.tables import DeltaTable

    last = DeltaTable.forPath(spark, path).history(1).collect()[0]
    metrics = last.operationMetrics or {}
    return {
        "version": int(last.version),
        "rows_written": int(metrics.get("numOutputRows", 0)),
        "files_written": int(metrics.get("numFiles", 0)),
    }
