"""Generic Delta Lake and Hadoop-file-system I/O: every job reads and writes tables through here.

Writes carry the run id (and any figures given) as Delta commit metadata
(``userMetadata``), so ``DESCRIBE HISTORY`` tells which run wrote what; the figures of a
commit come from its ``operationMetrics`` (:func:`commit_figures`). Training pins a version
and reads exactly its live files (:func:`pin_version`, :func:`live_files`). Which table is
where is :mod:`adrank.core.layout`'s business, what a table holds its job's ``store.py``'s.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from pyspark.sql import DataFrame, Row, SparkSession
from pyspark.sql.types import StructType

from adrank.core.errors import naming_table

USER_METADATA_CONF = "spark.databricks.delta.commitInfo.userMetadata"
NO_DELETION_VECTORS = {"delta.enableDeletionVectors": "false"}
# operationMetrics key -> figure name, for the commits adrank makes (absent = 0)
MERGE_METRICS = {"numTargetRowsInserted": "rows_inserted", "numTargetRowsUpdated": "rows_updated",
                 "numTargetRowsDeleted": "rows_deleted", "numTargetRowsCopied": "rows_copied",
                 "numSourceRows": "source_rows", "numTargetFilesAdded": "files_added"}
WRITE_METRICS = {"numOutputRows": "rows_written", "numFiles": "files_written"}


def jvm(spark: SparkSession) -> Any:
    """The py4j gateway to the session's JVM (``org.apache...`` classes)."""
    gateway = spark.sparkContext._jvm
    if gateway is None:
        raise RuntimeError("the SparkSession has no JVM gateway (stopped?)")
    return gateway


def hadoop_conf(spark: SparkSession) -> Any:
    """The session's Hadoop ``Configuration`` (which holds the credentials)."""
    context = spark.sparkContext._jsc
    if context is None:
        raise RuntimeError("the SparkSession has no Java context (stopped?)")
    return context.hadoopConfiguration()


def hadoop_path(spark: SparkSession, uri: str) -> tuple[Any, Any]:
    """``(org.apache.hadoop.fs.Path, its FileSystem)`` for ``uri``, with the session's Hadoop
    configuration."""
    path = jvm(spark).org.apache.hadoop.fs.Path(uri)
    return path, path.getFileSystem(hadoop_conf(spark))


@contextmanager
def session_conf(spark: SparkSession, settings: Mapping[str, str]) -> Iterator[None]:
    """Set SQL confs for the block, then restore the previous values (or unset them)."""
    previous: dict[str, str | None] = {key: spark.conf.get(key, None) for key in settings}
    for key, value in settings.items():
        spark.conf.set(key, value)
    try:
        yield
    finally:
        for key, old in previous.items():
            if old is None:
                spark.conf.unset(key)
            else:
                spark.conf.set(key, old)


def commit_with_metadata(spark: SparkSession, path: str, metadata: str, operation: str | None = None) -> Row | None:
    """The newest of the last 20 commits whose ``userMetadata`` is ``metadata`` (and whose
    operation is ``operation``, if given): ``version``, ``readVersion``, ``operationMetrics``;
    None if there is none (another writer may have committed after it)."""
    from delta.tables import DeltaTable

    rows = (DeltaTable.forPath(spark, path).history(20)
            .select("version", "readVersion", "operation", "userMetadata", "operationMetrics").collect())
    matching = [r for r in rows if r.userMetadata == metadata and operation in (None, r.operation)]
    return max(matching, key=lambda r: r.version, default=None)


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
    with naming_table(path):
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


def path_exists(spark: SparkSession | None, uri: str) -> bool:
    """Whether a file or folder exists at a local path or a URI (the latter through Hadoop)."""
    if not urlparse(uri).scheme:
        return Path(uri).exists()
    if spark is None:
        raise ValueError(f"checking {uri} needs a SparkSession (Hadoop FileSystem)")
    path, fs = hadoop_path(spark, uri)
    return bool(fs.exists(path))


def read_text_file(spark: SparkSession | None, uri: str) -> str | None:
    """The text of one small UTF-8 file written by :func:`write_text_file`; None when absent."""
    if not urlparse(uri).scheme:
        try:
            return Path(uri).read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
    if spark is None:
        raise ValueError(f"reading {uri} needs a SparkSession (Hadoop FileSystem)")
    path, fs = hadoop_path(spark, uri)
    if not fs.exists(path):
        return None
    stream = fs.open(path)
    try:
        reader = jvm(spark).java.io.BufferedReader(jvm(spark).java.io.InputStreamReader(stream, "UTF-8"))
        lines = []
        line = reader.readLine()
        while line is not None:
            lines.append(line)
            line = reader.readLine()
        return "\n".join(lines) + "\n"
    finally:
        stream.close()


def commit_figures(row: Row, metrics: Mapping[str, str] = MERGE_METRICS) -> dict[str, int]:
    """``version`` and the figures (``metrics``: operationMetrics key -> name, absent = 0) of a
    history row; a property commit has no row metrics, so its figures are 0."""
    values = row.operationMetrics or {}
    return {"version": int(row.version), **{name: int(values.get(key) or 0) for key, name in metrics.items()}}


def last_commit_metrics(spark: SparkSession, path: str) -> dict[str, int]:
    """Version, rows and files written of the table's latest commit."""
    from delta.tables import DeltaTable

    return commit_figures(DeltaTable.forPath(spark, path).history(1).collect()[0], WRITE_METRICS)


def create_table(spark: SparkSession, path: str, schema: StructType, properties: Mapping[str, str]) -> bool:
    """Create the empty Delta table at ``path`` with ``properties`` unless it exists; True if created."""
    from delta.tables import DeltaTable

    if DeltaTable.isDeltaTable(spark, path):
        return False
    builder = DeltaTable.createIfNotExists(spark).location(path).addColumns(schema)
    for key, value in properties.items():
        builder = builder.property(key, value)
    builder.execute()
    return True


def set_properties(spark: SparkSession, path: str, properties: Mapping[str, str]) -> None:
    """One commit setting table properties (it adds and removes no data file)."""
    pairs = ", ".join(f"'{key}' = '{value}'" for key, value in properties.items())
    with naming_table(path):
        spark.sql(f"ALTER TABLE delta.`{path}` SET TBLPROPERTIES ({pairs})")


def table_properties(spark: SparkSession, path: str) -> dict[str, str] | None:
    """The table's properties; None when there is no Delta table at ``path``."""
    from delta.tables import DeltaTable

    if not DeltaTable.isDeltaTable(spark, path):
        return None
    detail = DeltaTable.forPath(spark, path).detail().first()
    return dict(detail.properties) if detail is not None else {}


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


