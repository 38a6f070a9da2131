"""Table names and paths, and the one place Delta tables and run files are read and written.

Delta tables live at ``<storage.root>/<table>``. Writes carry the run id (and any figures
given) as Delta commit metadata, so ``DESCRIBE HISTORY`` tells which run wrote what.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from adrank.config import Config

SKU_IMAGES = "sku_images"
TRAINING_EXAMPLES = "training_examples"
QUARANTINE = "quarantine"
SKU_EMBEDDINGS = "sku_embeddings"
RUNS_FOLDER = "_runs"


def hadoop_path(spark: SparkSession, uri: str) -> tuple[Any, Any]:
    """``(org.apache.hadoop.fs.Path, its FileSystem)`` for ``uri``, with the session's Hadoop
    configuration (which holds the credentials)."""
    path = spark.sparkContext._jvm.org.apache.hadoop.fs.Path(uri)
    return path, path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())


@contextmanager
def session_conf(spark: SparkSession, settings: Mapping[str, str]) -> Iterator[None]:
    """Set SQL confs for the block, then restore the previous values (or unset them)."""
    previous = {key: spark.conf.get(key, None) for key in settings}
    for key, value in settings.items():
        spark.conf.set(key, value)
    try:
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                spark.conf.unset(key)
            else:
                spark.conf.set(key, value)


def commit_with_metadata(spark: SparkSession, path: str, metadata: str, operation: str | None = None) -> Any:
    """The newest of the last 20 commits whose ``userMetadata`` is ``metadata`` (and whose
    operation is ``operation``, if given): ``version``, ``readVersion``, ``operationMetrics``;
    None if there is none (another writer may have committed after it)."""
    from delta.tables import DeltaTable

    rows = (DeltaTable.forPath(spark, path).history(20)
            .select("version", "readVersion", "operation", "userMetadata", "operationMetrics").collect())
    matching = [r for r in rows if r.userMetadata == metadata and operation in (None, r.operation)]
    return max(matching, key=lambda r: r.version, default=None)


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
    """Write one small UTF-8 text file, replacing it.

    A path without a scheme is written with Python (to a temporary name, then renamed);
    a URI (``s3a://``, ``hdfs://``, ``file:``) through the Hadoop FileSystem of the
    session's JVM, whose configuration holds the credentials.
    """
    if not urlparse(uri).scheme:
        local = Path(uri)
        local.parent.mkdir(parents=True, exist_ok=True)
        tmp = local.with_name(f".{local.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(local)
        return
    if spark is None:
        raise ValueError(f"writing {uri} needs a SparkSession (Hadoop FileSystem)")
    path, fs = hadoop_path(spark, uri)
    stream = fs.create(path, True)
    try:
        stream.write(bytearray(text.encode("utf-8")))
    finally:
        stream.close()


SKU_IMAGES_PROPERTIES = {"delta.enableChangeDataFeed": "true", "delta.enableDeletionVectors": "false"}
USER_METADATA_CONF = "spark.databricks.delta.commitInfo.userMetadata"
PREPROCESSING_PROPERTY = "adrank.images.preprocessing"  # what made the stored images
UNCHANGED_RUN_PROPERTY = "adrank.sku_images.unchangedRun"  # the last run that found nothing to change
SKU_IMAGES_COMPARED = ("image_hash", "title", "category_id", "image_format", "height", "width")
SKU_IMAGES_CHANGED = " OR ".join(f"NOT (t.{c} <=> s.{c})" for c in SKU_IMAGES_COMPARED)
_OP = "_op"  # of a change row: upsert or delete


def stored_image_keys(spark: SparkSession, path: str, preprocessing: str) -> DataFrame | None:
    """``sku_id``, ``image_hash`` of ``sku_images`` if its images were stored by ``preprocessing``.

    None when the table does not exist or records another preprocessing (table property
    :data:`PREPROCESSING_PROPERTY`): then every image must be decoded again.
    """
    from delta.tables import DeltaTable

    if not DeltaTable.isDeltaTable(spark, path):
        return None
    table = DeltaTable.forPath(spark, path)
    if table.detail().first().properties.get(PREPROCESSING_PROPERTY) != preprocessing:
        return None
    return table.toDF().select("sku_id", "image_hash")


def upsert_sku_images(
    spark: SparkSession,
    good_df: DataFrame,
    path: str,
    commit_info: Mapping[str, Any] | None,
    full_snapshot: bool = True,
    preprocessing: str | None = None,
) -> dict[str, int | bool]:
    """MERGE the good ``sku_images`` rows into the table, rewriting only changed rows.

    The first run creates the table (Change Data Feed on, deletion vectors off). Only the
    changes are MERGEd (:func:`_sku_image_changes`): SKUs that are new, whose
    ``image_hash``, ``title``, ``category_id`` or stored format/size changed, or (full
    snapshot) that are gone. A MERGE rewrites every file holding a row it matches (with
    deletion vectors off a file is rewritten whole, its other rows copied), so unchanged
    SKUs are not offered to it: their files stay as they are and they leave no trace in
    the Change Data Feed. A row with a null ``image`` (its image was not decoded again: the
    same bytes are stored) keeps the stored image; it is never inserted (the caller's row
    count then shows it).

    When nothing changed, Delta makes no MERGE commit; the run is then recorded (its
    ``commit_info`` as ``userMetadata``) in a commit that only sets the table property
    :data:`UNCHANGED_RUN_PROPERTY` (and the preprocessing, if asked): no data file is added
    or removed, and the Change Data Feed of that version is empty.

    Args:
        spark: The session.
        good_df: ``sku_images`` rows, one per ``sku_id`` (``split_images``' good output).
        path: Table location.
        commit_info: JSON-able facts stored as the commits' ``userMetadata``.
        full_snapshot: ``good_df`` is the whole catalog: delete SKUs absent from it.
            Pass False for partial (incremental) catalog drops.
        preprocessing: What made the images (``preprocessing_fingerprint``), recorded as a
            table property once the MERGE is committed. Pass it only when the table does
            not record it yet (:func:`stored_image_keys` gave None); None leaves the
            property alone.

    Returns:
        ``version`` of the run's commit (the MERGE, or the property commit when nothing
        changed), ``rows_inserted``, ``rows_updated``, ``rows_deleted``, ``rows_copied``
        (unchanged rows rewritten with a file the MERGE rewrote; from its operationMetrics)
        and ``created``.
    """
    metadata = json.dumps(dict(commit_info or {}), sort_keys=True)
    properties = {} if preprocessing is None else {PREPROCESSING_PROPERTY: preprocessing}
    with session_conf(spark, {USER_METADATA_CONF: metadata}):
        created = _create_sku_images(spark, good_df, path, preprocessing)
        before = latest_version(spark, path)
        _merge_sku_images(spark, _sku_image_changes(spark, good_df, path, full_snapshot), path, good_df.columns)
        row = commit_with_metadata(spark, path, metadata, operation="MERGE")
        if row is None or row.version <= before:  # nothing changed: Delta made no commit; record the run
            _set_properties(spark, path, {UNCHANGED_RUN_PROPERTY: str((commit_info or {}).get("run_id", "")),
                                          **({} if created else properties)})
            properties = {}
            row = commit_with_metadata(spark, path, metadata, operation="SET TBLPROPERTIES")
    if row is None:
        raise RuntimeError(f"no commit with this run's metadata in the history of {path}")
    if properties and not created:
        _set_properties(spark, path, properties)
    return {**_merge_figures(row), "created": created}


def _sku_image_changes(spark: SparkSession, good_df: DataFrame, path: str, full_snapshot: bool) -> DataFrame:
    """The rows the MERGE must touch: ``good_df``'s new and changed SKUs (``_op`` upsert) and,
    for a full snapshot, the stored SKUs gone from it (``_op`` delete; other columns null).

    Compared with the stored keys and compared columns only (never the image bytes).
    """
    stored = read_delta(spark, path).select("sku_id", *SKU_IMAGES_COMPARED)
    offered = good_df.alias("s").join(stored.alias("t"), F.col("s.sku_id") == F.col("t.sku_id"), "left")
    upserts = offered.where(F.col("t.sku_id").isNull() | F.expr(SKU_IMAGES_CHANGED)).select("s.*")
    changes = upserts.withColumn(_OP, F.lit("upsert"))
    if full_snapshot:
        gone = stored.select("sku_id").join(good_df.select("sku_id"), "sku_id", "left_anti")
        changes = changes.unionByName(gone.withColumn(_OP, F.lit("delete")), allowMissingColumns=True)
    return changes


def _merge_sku_images(spark: SparkSession, changes: DataFrame, path: str, columns: Sequence[str]) -> None:
    """One MERGE by ``sku_id`` of the change rows: delete, update or insert."""
    from delta.tables import DeltaTable

    values = {c: f"s.{c}" for c in columns}
    (DeltaTable.forPath(spark, path).alias("t")
     .merge(changes.alias("s"), "t.sku_id = s.sku_id")
     .whenMatchedDelete(condition=f"s.{_OP} = 'delete'")
     .whenMatchedUpdate(condition=f"s.{_OP} = 'upsert' AND ({SKU_IMAGES_CHANGED})",
                        set={**values, "image": "coalesce(s.image, t.image)"})
     .whenNotMatchedInsert(condition=f"s.{_OP} = 'upsert' AND s.image IS NOT NULL", values=values)
     .execute())


def _set_properties(spark: SparkSession, path: str, properties: Mapping[str, str]) -> None:
    """One commit setting table properties (it adds and removes no data file)."""
    pairs = ", ".join(f"'{key}' = '{value}'" for key, value in properties.items())
    spark.sql(f"ALTER TABLE delta.`{path}` SET TBLPROPERTIES ({pairs})")


def _create_sku_images(spark: SparkSession, good_df: DataFrame, path: str, preprocessing: str | None) -> bool:
    """Create the empty table with its properties unless it exists; True if created."""
    from delta.tables import DeltaTable

    if DeltaTable.isDeltaTable(spark, path):
        return False
    builder = DeltaTable.createIfNotExists(spark).location(path).addColumns(good_df.schema)
    properties = {**SKU_IMAGES_PROPERTIES, **({PREPROCESSING_PROPERTY: preprocessing} if preprocessing else {})}
    for key, value in properties.items():
        builder = builder.property(key, value)
    builder.execute()
    return True


def _merge_figures(row: Any) -> dict[str, int]:
    """Figures of the run's commit (a history row; a property commit has no row metrics)."""
    metrics = row.operationMetrics or {}
    return {
        "version": int(row.version),
        "rows_inserted": int(metrics.get("numTargetRowsInserted", 0)),
        "rows_updated": int(metrics.get("numTargetRowsUpdated", 0)),
        "rows_deleted": int(metrics.get("numTargetRowsDeleted", 0)),
        "rows_copied": int(metrics.get("numTargetRowsCopied", 0)),
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


# --------------------------------------------------------------------------------
# Pinned versions and their live files (what training hands to Petastorm)
# --------------------------------------------------------------------------------

PAIRS = "stage1_pairs"
PAIRS_PARTITION = "kind_part"
NO_DELETION_VECTORS = {"delta.enableDeletionVectors": "false"}


class DeletionVectorsError(ValueError):
    """The table may hold deletion vectors: its live files can still contain deleted rows."""


def pin_version(spark: SparkSession | None, path: str, version: int | None = None) -> int:
    """The Delta version training reads: ``version`` checked to exist, or the latest.

    Args:
        spark: A session (reads the log through Spark: any Hadoop file system), or None
            (reads it with ``deltalake``, no JVM).
        path: Table location.
        version: A version to pin; None pins the latest.

    Returns:
        The pinned version.

    Raises:
        ValueError: ``version`` is not a version of the table (or is no longer readable).
    """
    latest = latest_version(spark, path)
    if version is None:
        return latest
    if not 0 <= version <= latest:
        raise ValueError(f"{path} has versions 0..{latest}, not {version}")
    if spark is not None:
        read_delta(spark, path, version).schema  # noqa: B018 - raises if the version was cleaned up
    else:
        from deltalake import DeltaTable

        DeltaTable(path, version=version)
    return version


def latest_version(spark: SparkSession | None, path: str) -> int:
    """The latest version of a Delta table (``spark`` None: read with ``deltalake``)."""
    if spark is None:
        from deltalake import DeltaTable

        return int(DeltaTable(path).version())
    from delta.tables import DeltaTable as SparkDeltaTable

    return int(SparkDeltaTable.forPath(spark, path).history(1).collect()[0].version)


def live_files(
    spark: SparkSession | None, path: str, version: int, partition: Mapping[str, str] | None = None
) -> list[str]:
    """The data files of exactly ``version`` of a Delta table, as sorted URIs.

    A Delta folder also holds the files of older versions (rewritten by UPDATE, DELETE,
    MERGE, overwrite): reading the folder would read stale and deleted rows; reading
    this list reads the version. Partition column values are not inside the files.

    Args:
        spark: None reads the log with ``deltalake`` (``DeltaTable.file_uris()``); a
            session reads it through Spark (``inputFiles()`` at ``versionAsOf``), for
            stores ``deltalake`` is not configured for.
        path: Table location.
        version: The pinned version (:func:`pin_version`).
        partition: Optional ``{partition column: value}`` to keep the files of.

    Returns:
        Sorted URIs (``file:///...`` for local files).

    Raises:
        DeletionVectorsError: The table supports deletion vectors, so a data file may
            hold rows deleted at ``version``. Keep ``delta.enableDeletionVectors=false``
            on tables read this way (or materialise the version with Spark).
    """
    if spark is None:
        files = _live_files_deltalake(path, version, partition)
    else:
        files = _live_files_spark(spark, path, version, partition)
    return sorted(_file_uri(f) for f in files)


def _live_files_deltalake(path: str, version: int, partition: Mapping[str, str] | None) -> list[str]:
    from deltalake import DeltaTable

    table = DeltaTable(path, version=version)
    if "deletionVectors" in (table.protocol().reader_features or []):
        raise DeletionVectorsError(_deletion_vectors_message(path, version))
    filters = [(name, "=", str(value)) for name, value in (partition or {}).items()] or None
    return list(table.file_uris(partition_filters=filters))


def _live_files_spark(
    spark: SparkSession, path: str, version: int, partition: Mapping[str, str] | None
) -> list[str]:
    from delta.tables import DeltaTable as SparkDeltaTable
    from pyspark.sql import functions as F

    features = SparkDeltaTable.forPath(spark, path).detail().collect()[0].asDict().get("tableFeatures") or []
    if "deletionVectors" in features:  # table features are never dropped: latest covers older versions
        raise DeletionVectorsError(_deletion_vectors_message(path, version))
    frame = read_delta(spark, path, version)
    for name, value in (partition or {}).items():
        frame = frame.where(F.col(name) == F.lit(value))
    return list(frame.inputFiles())


def _deletion_vectors_message(path: str, version: int) -> str:
    return (f"{path} supports deletion vectors: the data files of version {version} may still hold "
            "deleted rows; recreate it with delta.enableDeletionVectors=false or materialise the version")


def _file_uri(path_or_uri: str) -> str:
    """``/a/b`` and ``file:/a/b`` -> ``file:///a/b``; other URIs unchanged."""
    if path_or_uri.startswith("file:"):
        return "file://" + "/" + path_or_uri.removeprefix("file:").lstrip("/")
    if "://" in path_or_uri:
        return path_or_uri
    return "file://" + str(Path(path_or_uri).resolve())


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
    for key, value in NO_DELETION_VECTORS.items():
        writer = writer.option(key, value)
    writer.save(path)
    return last_commit_metrics(spark, path)["version"]
