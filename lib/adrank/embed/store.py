"""Delta I/O of embed_catalog: the ``sku_embeddings`` table, its run records, the staging area,
and (for other jobs) the published serving snapshot (:func:`serving_snapshot`).

``sku_embeddings`` (:data:`adrank.embed.incremental.SKU_EMBEDDINGS_DDL`) is written only
by MERGE from a staged Parquet folder, in one commit whose ``userMetadata`` is the run's
record (:class:`Processed`): ``{"job": "embed_catalog", "run_id", "source_version",
"model_version", "mode"}``. The record is the only place the processed ``sku_images``
version lives, so it is committed atomically with the rows it describes; the next run
reads it back from the table history (:func:`last_processed`). A run with nothing to
write (only titles changed) records its versions in a commit that changes a table
property instead (:func:`record_without_rows`): a MERGE or append with no rows makes no
Delta commit at all.

Deletion vectors are ON for ``sku_embeddings`` (off for the tables Petastorm reads): a
MERGE that updates 1% of the SKUs marks their old rows deleted in a small deletion
vector and writes only the new rows, instead of rewriting every file that holds one of
them. Read it with Spark (or a deletion-vector-aware reader), or use the serving
snapshot; :func:`adrank.storage.delta.live_files` refuses it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from pyspark.sql import Column, DataFrame, Row, SparkSession

from adrank.core.errors import naming_table
from adrank.embed.incremental import DELETE, SKU_EMBEDDINGS_COLUMNS, SKU_EMBEDDINGS_DDL, STAGED_DDL, UPSERT
from adrank.storage.delta import (
    MERGE_METRICS,
    USER_METADATA_CONF,
    commit_figures,
    commit_with_metadata,
    create_table,
    hadoop_path,
    latest_version,
    session_conf,
    set_properties,
)

if TYPE_CHECKING:
    from adrank.embed.serving import ServingSnapshot

JOB = "embed_catalog"
SKU_EMBEDDINGS_PROPERTIES = {"delta.enableDeletionVectors": "true", "delta.enableChangeDataFeed": "false"}
RECORD_PROPERTY = "adrank.embed_catalog.sourceVersion"
MERGE_FIGURES = {key: name for key, name in MERGE_METRICS.items() if name != "rows_copied"}
# The staged Parquet is written once and read only until the run ends: Delta need not copy
# (materialize) it before the MERGE to guard against a source that changes between its passes.
MERGE_CONF = {"spark.databricks.delta.merge.materializeSource": "none"}
HISTORY_PAGE = 50  # newest commits read first for the last run's record
# Commits after which the table holds the same rows as before (a snapshot of either serves both).
DATA_PRESERVING_OPERATIONS = ("OPTIMIZE", "REORG", "SET TBLPROPERTIES", "VACUUM START", "VACUUM END")
CHANGE_FEED_UNAVAILABLE = (
    "DELTA_MISSING_CHANGE_DATA", "DELTA_TRUNCATED_TRANSACTION_LOG", "DELTA_FILE_NOT_FOUND",
    "FILE_NOT_EXIST", "FileNotFoundException", "VersionNotFoundException",
)


@dataclass(frozen=True)
class Processed:
    """What a committed run embedded: ``sku_images`` up to ``source_version`` with a model."""

    run_id: str
    source_version: int
    model_version: int
    mode: str

    def metadata(self) -> str:
        """The commit's ``userMetadata`` (JSON, sorted keys)."""
        return json.dumps({"job": JOB, **asdict(self)}, sort_keys=True)


@dataclass(frozen=True)
class Committed:
    """The figures of a run's commit to ``sku_embeddings`` (from its operationMetrics)."""

    version: int
    read_version: int | None  # the table version the commit read (None: unknown)
    rows_inserted: int
    rows_updated: int
    rows_deleted: int
    source_rows: int  # staged rows the MERGE read (0 for a record-only commit)
    files_added: int


class ChangeFeedUnavailable(RuntimeError):
    """The Change Data Feed of the wanted range cannot be read (its message says why)."""


def ensure_table(spark: SparkSession, path: str) -> bool:
    """Create the empty ``sku_embeddings`` table (deletion vectors on) unless it exists."""
    return create_table(spark, path, spark.createDataFrame([], SKU_EMBEDDINGS_DDL).schema, SKU_EMBEDDINGS_PROPERTIES)


def recent_history(spark: SparkSession, path: str, page: int = HISTORY_PAGE) -> list[Row]:
    """The newest ``page`` commits of the table, newest first (``version``, ``operation``,
    ``userMetadata``, ``operationMetrics``): one read serves a run's record, its
    compaction count and its snapshot check."""
    from delta.tables import DeltaTable

    rows = (DeltaTable.forPath(spark, path).history(page)
            .select("version", "operation", "userMetadata", "operationMetrics").collect())
    return sorted(rows, key=lambda r: r.version, reverse=True)


def last_processed(spark: SparkSession, path: str, newest: list[Row] | None = None,
                   page: int = HISTORY_PAGE) -> Processed | None:
    """The record of the latest committed run in the history of ``sku_embeddings`` (None: none).

    Looks in ``newest`` (:func:`recent_history`; read when not given) first: every run
    commits a record, so it is almost always there. The whole history is read only when
    a full page holds none, so the cost of a run does not grow with the age of the table.
    """
    from delta.tables import DeltaTable

    newest = recent_history(spark, path, page) if newest is None else newest
    record = _newest_record(newest)
    if record is None and len(newest) >= page:  # older commits exist: read them all
        record = _newest_record(DeltaTable.forPath(spark, path).history().select("version", "userMetadata").collect())
    if record is None:
        return None
    return Processed(str(record["run_id"]), int(record["source_version"]), int(record["model_version"]),
                     str(record.get("mode", "")))


def files_added_since_compaction(newest: list[Row], page: int = HISTORY_PAGE) -> int | None:
    """Data files the commits after the latest OPTIMIZE added (None: no OPTIMIZE in a full page).

    Args:
        newest: :func:`recent_history` rows, newest first.
        page: The page size they were read with.
    """
    added = 0
    for row in newest:
        if row.operation == "OPTIMIZE":
            return added
        metrics = row.operationMetrics or {}
        added += int(metrics.get("numTargetFilesAdded") or metrics.get("numFiles") or 0)
    return None if len(newest) >= page else added


def same_data_since(newest: list[Row], version: int) -> int:
    """The oldest version whose rows are those of ``version``.

    Walks back from ``version`` over the commits of ``newest`` (:func:`recent_history`)
    that only reorganise files or set properties (:data:`DATA_PRESERVING_OPERATIONS`);
    a version not among them stops the walk.
    """
    operations = {row.version: row.operation for row in newest}
    oldest = version
    while operations.get(oldest) in DATA_PRESERVING_OPERATIONS:
        oldest -= 1
    return oldest


def _newest_record(history: list) -> dict | None:
    """The ``userMetadata`` (parsed) of the newest commit of this job among ``history`` rows."""
    for row in sorted(history, key=lambda r: r.version, reverse=True):
        record = _parse_record(row.userMetadata)
        if record is not None:
            return record
    return None


def _parse_record(metadata: str | None) -> dict | None:
    if not metadata:
        return None
    try:
        record = json.loads(metadata)
    except ValueError:
        return None
    return record if isinstance(record, dict) and record.get("job") == JOB else None


def read_changes(spark: SparkSession, path: str, start: int, end: int) -> DataFrame:
    """The Change Data Feed of ``sku_images`` for versions ``start..end`` (inclusive).

    Raises:
        ChangeFeedUnavailable: See :func:`change_feed_errors` (some cases surface here,
            the others when the frame is read).
    """
    with change_feed_errors():
        return (spark.read.format("delta").option("readChangeFeed", "true")
                .option("startingVersion", start).option("endingVersion", end).load(path))


@contextmanager
def change_feed_errors() -> Iterator[None]:
    """Turn Spark/Delta errors that mean "this range is unreadable" into ChangeFeedUnavailable.

    Wrap whatever reads a :func:`read_changes` frame: change data was not recorded for a
    version of the range, its files were vacuumed, or the log was truncated.
    """
    from py4j.protocol import Py4JJavaError
    from pyspark.errors import PySparkException

    try:
        yield
    except (PySparkException, Py4JJavaError) as error:
        text = str(error)
        if any(marker in text for marker in CHANGE_FEED_UNAVAILABLE):
            reason = next(line for line in text.splitlines() if line.strip())
            raise ChangeFeedUnavailable(reason.strip()[:300]) from None
        raise


def write_staged(staged: DataFrame, path: str) -> None:
    """Materialise the staged rows once (Parquet), so the MERGE never re-runs the CNN."""
    staged.write.mode("overwrite").parquet(path)


def read_staged(spark: SparkSession, staged_path: str) -> DataFrame:
    """The staged rows (:data:`STAGED_DDL`) of a run, e.g. for the serving export's patch."""
    return spark.read.schema(STAGED_DDL).parquet(staged_path)


def merge_staged(spark: SparkSession, path: str, staged_path: str, record: Processed) -> Committed | None:
    """MERGE the staged rows into ``sku_embeddings`` in one commit carrying ``record``.

    Returns:
        ``version``, ``read_version`` (the version the MERGE read), ``rows_inserted``,
        ``rows_updated``, ``rows_deleted`` and ``source_rows`` of the commit;
        None when the MERGE changed nothing (Delta then makes no commit).
    """
    from delta.tables import DeltaTable

    staged = spark.read.schema(STAGED_DDL).parquet(staged_path)
    values: dict[str, str | Column] = {c: f"s.{c}" for c in SKU_EMBEDDINGS_COLUMNS}
    settings = {USER_METADATA_CONF: record.metadata(), **MERGE_CONF}
    with session_conf(spark, settings), naming_table(path):
        (DeltaTable.forPath(spark, path).alias("t")
         .merge(staged.alias("s"), "t.sku_id = s.sku_id")
         .whenMatchedDelete(condition=f"s.op = '{DELETE}'")
         .whenMatchedUpdate(condition=f"s.op = '{UPSERT}'", set=values)
         .whenNotMatchedInsert(condition=f"s.op = '{UPSERT}'", values=values)
         .execute())
    return _commit_figures(spark, path, record)


def record_without_rows(spark: SparkSession, path: str, record: Processed) -> Committed:
    """Commit ``record`` with no row change (a table property); its figures as :func:`merge_staged`'s."""
    with session_conf(spark, {USER_METADATA_CONF: record.metadata()}):
        set_properties(spark, path, {RECORD_PROPERTY: str(record.source_version)})
    figures = _commit_figures(spark, path, record)
    if figures is None:
        raise RuntimeError(f"no commit with this run's record in the history of {path}")
    return figures


def _commit_figures(spark: SparkSession, path: str, record: Processed) -> Committed | None:
    """Figures of the commit carrying ``record`` (another writer may have committed after it)."""
    row = commit_with_metadata(spark, path, record.metadata())
    if row is None:
        return None
    read_version = None if row.readVersion is None else int(row.readVersion)
    return Committed(read_version=read_version, **commit_figures(row, MERGE_FIGURES))


def compact(spark: SparkSession, path: str) -> dict[str, int]:
    """OPTIMIZE the table: bin-pack small files; files with many deleted rows are rewritten
    without them (and their deletion vectors). Rows do not change.

    Returns:
        ``files_removed``, ``files_added`` and the ``version`` of the OPTIMIZE commit.
    """
    from delta.tables import DeltaTable

    with naming_table(path):
        metrics = DeltaTable.forPath(spark, path).optimize().executeCompaction().select("metrics").collect()[0][0]
    return {"files_removed": int(metrics.numFilesRemoved), "files_added": int(metrics.numFilesAdded),
            "version": latest_version(spark, path)}


def remove_folder(spark: SparkSession, uri: str) -> None:
    """Delete a folder (recursively) on any Hadoop file system; no error if absent."""
    path, fs = hadoop_path(spark, uri)
    fs.delete(path, True)


def remove_stale_folders(spark: SparkSession, parent: str, older_than_s: float) -> list[str]:
    """Delete the sub-folders of ``parent`` not modified for ``older_than_s`` seconds."""
    import time

    path, fs = hadoop_path(spark, parent)
    if not fs.exists(path):
        return []
    cutoff_ms = (time.time() - older_than_s) * 1000
    removed = []
    for status in fs.listStatus(path):
        if status.isDirectory() and status.getModificationTime() < cutoff_ms:
            fs.delete(status.getPath(), True)
            removed.append(status.getPath().getName())
    return removed


def serving_snapshot(root: str, version: int | None = None) -> ServingSnapshot:
    """The serving snapshot ``CURRENT`` names (or ``version``) under ``root`` (``layout.serving_root``),
    memory-mapped read-only.

    The way other jobs read embed_catalog's published embeddings (``recommend``).

    Raises:
        FileNotFoundError: No snapshot is published (or not that version).
    """
    from adrank.embed.serving import load_serving_snapshot

    return load_serving_snapshot(root, version)
