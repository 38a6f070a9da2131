"""Serving export, the Spark side: a DataFrame of ``sku_embeddings`` (or of a run's changes)
streamed into a serving snapshot (:mod:`adrank.embed.serving`).

:func:`publish_serving_snapshot` checks the DataFrame in one aggregation (row count,
embedding length, null or non-finite embeddings), then streams the rows in ``sku_id``
order, one range partition at a time (``repartitionByRange`` + ``mapInArrow`` packing each
Arrow batch into byte strings + ``toLocalIterator``), straight into memory-mapped files:
the driver holds at most two partitions of about :data:`PARTITION_BYTES` each, whatever
the table's size. :func:`patch_serving_snapshot` streams a run's changes the same way (one
Spark job, O(changed rows)) and merges them into a published base. Bad input is a one-line
``ValueError`` and publishes nothing; an empty table publishes a valid 0-row snapshot.

Never imports TensorFlow; pyspark and pyarrow only inside functions (the Arrow packing
runs on executors).
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from adrank.embed import serving
from adrank.embed.serving import Changes, ServingSnapshot, Shape
from adrank.storage import versioned

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import Column, DataFrame, Row, SparkSession

PARTITION_BYTES = 64 << 20
"""Target size of one streamed range partition (the driver holds at most two)."""

_PACKED_SCHEMA = "rows long, problem string, sku_ids binary, upserts binary, embeddings binary"



def publish_serving_snapshot(spark: SparkSession, embeddings_df: DataFrame,
                             serving_root: str | os.PathLike[str], *, table_version: int, model_version: int,
                             keep: int = 3) -> dict[str, int | str]:
    """Publishes the embeddings as the next snapshot version and points ``CURRENT`` at it.

    Args:
        spark: The session ``embeddings_df`` belongs to (unused; library functions take it).
        embeddings_df: At least ``sku_id`` (long) and ``embedding`` (array of float or
            double); e.g. ``sku_embeddings`` read with ``versionAsOf=table_version``. It
            is read twice (check, then stream), so it must be pinned: rows that change
            in between are refused.
        serving_root: Local folder of the snapshots (see :mod:`adrank.embed.serving`).
        table_version: The ``sku_embeddings`` Delta version read, stored in the manifest.
        model_version: The embedding model's registry version, stored in the manifest.
        keep: How many of the newest versions to keep (>= 1); ``CURRENT``'s is always kept.

    Returns:
        ``{"snapshot_version": N, "path": folder, "rows": n, "dim": d}``.

    Raises:
        ValueError: Bad ``keep`` or root, missing columns, duplicate or null ``sku_id``,
            null / ragged / empty / non-finite embeddings, or rows that changed while
            streaming. Nothing is published then.
    """
    del spark
    versioned.check_keep(keep)
    root = serving.local_root(serving_root)
    columns = _serving_columns(embeddings_df)
    rows, dim = _checked_shape(columns)

    def write(folder: Path) -> None:
        serving.write_arrays(_stream_sorted(columns, rows, dim), folder, rows, dim)

    version = serving.publish_snapshot(root, write, Shape(rows, dim, table_version, model_version), keep)
    return {"snapshot_version": version, "path": str(root / f"v{version}"), "rows": rows, "dim": dim}


def patch_serving_snapshot(spark: SparkSession, changes_df: DataFrame,
                           serving_root: str | os.PathLike[str], *,
                           base_version: int, table_version: int, model_version: int, expected_rows: int,
                           keep: int = 3, change_rows: int | None = None) -> dict[str, int | str]:
    """Publishes snapshot ``base_version`` with ``changes_df`` applied as the next version.

    Args:
        spark: The session ``changes_df`` belongs to (unused; library functions take it).
        changes_df: One row per changed SKU: ``sku_id`` (long), ``op`` ("upsert" or
            "delete") and ``embedding`` (array of numbers; ignored for deletes), e.g. the
            staged rows of an embed_catalog run (:data:`adrank.embed.incremental.STAGED_DDL`).
            A delete of an id the base lacks is a no-op. Read once.
        serving_root: Local folder of the snapshots (see :mod:`adrank.embed.serving`).
        base_version: The published snapshot to patch (memory-mapped; its sha256 sums are
            checked first, so a damaged base is never carried forward).
        table_version: The ``sku_embeddings`` Delta version the result mirrors (manifest).
        model_version: The embedding model's registry version (manifest).
        expected_rows: Rows of that table version; the result must have exactly as many.
        keep: How many of the newest versions to keep (>= 1); ``CURRENT``'s is always kept.
        change_rows: The number of rows of ``changes_df`` if known (it only sizes the
            streamed partitions); None counts them (one more Spark job).

    Returns:
        ``{"snapshot_version": N, "path": folder, "rows": n, "dim": d, "patched_from": base_version}``.

    Raises:
        ValueError: Bad ``keep`` or root, a corrupt or empty base, missing columns, bad
            changes (null id, unknown op, duplicate id, null / non-finite embedding, a
            dim other than the base's) or a result of other than ``expected_rows`` rows.
            Nothing is published then.
        FileNotFoundError: Snapshot ``base_version`` does not exist (e.g. pruned).
    """
    del spark
    versioned.check_keep(keep)
    if expected_rows < 0:
        raise ValueError(f"cannot publish serving snapshot: expected_rows must be >= 0, got {expected_rows}")
    root = serving.local_root(serving_root)
    base = serving.patch_base(root, base_version)
    columns = _change_columns(changes_df)
    counted = columns.count() if change_rows is None else change_rows
    partitions = _partitions(counted, 9 + 4 * base.dim)
    dim = base.dim if expected_rows else 0  # an empty result has dim 0, as a full publish of it would
    block_rows = max(1, serving.BLOCK_BYTES // (8 + 4 * base.dim))

    def write(folder: Path) -> None:
        changes = stream_changes(columns, partitions, base)
        serving.write_arrays(serving.patched_blocks(base, changes, block_rows), folder, expected_rows, dim,
                             counted="expected", why=f"v{base.version} with the changes applied")

    shape = Shape(expected_rows, dim, table_version, model_version, patched_from=base.version)
    version = serving.publish_snapshot(root, write, shape, keep)
    return {"snapshot_version": version, "path": str(root / f"v{version}"), "rows": expected_rows, "dim": dim,
            "patched_from": base.version}


def _serving_columns(df: DataFrame) -> DataFrame:
    """``sku_id`` as long and ``embedding`` as array<float>; one-line error if absent."""
    from pyspark.sql import functions as F

    _check_columns(df, ("sku_id", "embedding"))
    return df.select(F.col("sku_id").cast("long").alias("sku_id"),
                     F.col("embedding").cast("array<float>").alias("embedding"))


def _change_columns(df: DataFrame) -> DataFrame:
    """``sku_id`` long, ``embedding`` array<float> (null unless an upsert), ``upsert`` boolean
    (null for an op that is neither upsert nor delete)."""
    from pyspark.sql import functions as F

    from adrank.embed.incremental import DELETE, UPSERT

    _check_columns(df, ("sku_id", "embedding", "op"))
    upsert = F.when(F.col("op") == UPSERT, True).when(F.col("op") == DELETE, False)
    return df.select(F.col("sku_id").cast("long").alias("sku_id"),
                     F.when(upsert, F.col("embedding").cast("array<float>")).alias("embedding"),
                     upsert.alias("upsert"))


def _check_columns(df: DataFrame, names: tuple[str, ...]) -> None:
    """One-line ValueError unless ``df`` has ``names`` and ``embedding`` is an array of numbers."""
    from pyspark.sql.types import ArrayType, NumericType

    missing = [name for name in names if name not in df.columns]
    if missing:
        raise ValueError(f"cannot publish serving snapshot: missing column(s) {missing}")
    kind = df.schema["embedding"].dataType
    if not (isinstance(kind, ArrayType) and isinstance(kind.elementType, NumericType)):
        raise ValueError(f"cannot publish serving snapshot: embedding must be an array of numbers, "
                         f"got {kind.simpleString()}")


def _row_problems() -> dict[str, Column]:
    """Row conditions that make a snapshot unpublishable, by what the error calls them."""
    from pyspark.sql import functions as F

    embedding = F.col("embedding")
    return {
        "null sku_id": F.col("sku_id").isNull(),
        "null embedding": embedding.isNull(),
        "null value in embedding": F.exists(embedding, lambda x: x.isNull()),
        "non-finite value in embedding": F.exists(
            embedding, lambda x: F.isnan(x) | (F.abs(x) == F.lit(float("inf")))),
    }


def _checked_shape(columns: DataFrame) -> tuple[int, int]:
    """``(rows, dim)`` from one aggregation (no shuffle); ValueError naming every problem found.

    Duplicate ids are caught later, by :func:`write_arrays`, on the sorted stream (the
    sort is needed anyway; a ``count_distinct`` here would shuffle the table once more).
    """
    from pyspark.sql import functions as F

    problems = _row_problems()
    size = F.when(F.col("embedding").isNotNull(), F.size("embedding"))
    stats = columns.agg(
        F.count(F.lit(1)).alias("rows"), F.min(size).alias("min_dim"), F.max(size).alias("max_dim"),
        *[F.sum(cond.cast("long")).alias(f"p{i}") for i, cond in enumerate(problems.values())],
    ).collect()[0]  # a global aggregation: always one row
    found = []
    for i, (name, cond) in enumerate(problems.items()):
        if stats[f"p{i}"]:
            found.append(f"{stats[f'p{i}']} row(s) with {name}{_examples(columns.where(cond))}")
    if stats["min_dim"] != stats["max_dim"]:
        found.append(f"embedding lengths differ ({stats['min_dim']} to {stats['max_dim']})")
    elif stats["rows"] and stats["min_dim"] == 0:
        found.append("embeddings are empty (length 0)")
    if found:
        raise ValueError("cannot publish serving snapshot: " + "; ".join(found))
    return int(stats["rows"]), int(stats["max_dim"] or 0)


def _examples(df: DataFrame, limit: int = 5) -> str:
    """`` (e.g. sku_id 3, 7)`` for the first few ``sku_id`` of ``df``."""
    ids = [row["sku_id"] for row in df.select("sku_id").limit(limit).collect()]
    return f" (e.g. sku_id {', '.join(str(i) for i in ids)})" if ids else ""


def _partitions(rows: int, row_bytes: int) -> int:
    """Range partitions of about :data:`PARTITION_BYTES` for ``rows`` rows (at least one)."""
    return max(1, math.ceil(rows * row_bytes / PARTITION_BYTES))


def _stream_packed(columns: DataFrame, partitions: int, dim: int) -> Iterator[Row]:
    """Rows of :data:`_PACKED_SCHEMA` in sku_id order, one range partition at a time."""
    ordered = columns.repartitionByRange(partitions, "sku_id").sortWithinPartitions("sku_id")
    packed = ordered.mapInArrow(functools.partial(_pack_batches, dim=dim), _PACKED_SCHEMA)
    return packed.toLocalIterator(prefetchPartitions=True)


def _stream_sorted(columns: DataFrame, rows: int, dim: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yields ``(sku_ids int64 [k], embeddings float32 [k, dim])`` chunks in sku_id order."""
    if rows == 0:
        return
    for chunk in _stream_packed(columns, _partitions(rows, 8 + 4 * dim), dim):
        if chunk["problem"]:
            raise ValueError(f"cannot publish serving snapshot: {chunk['problem']} appeared while streaming "
                             "(the DataFrame changed after it was checked)")
        ids = np.frombuffer(chunk["sku_ids"], dtype="<i8")
        yield ids, np.frombuffer(chunk["embeddings"], dtype="<f4").reshape(len(ids), dim)


def _pack_batches(batches: Iterator[pa.RecordBatch], dim: int) -> Iterator[pa.RecordBatch]:
    """Executor side of :func:`_stream_packed`: each Arrow batch as little-endian blobs.

    Columns: ``sku_id``, ``embedding`` and, for changes, ``upsert`` (only the upserts'
    embeddings are packed). A batch with a problem is packed as its description alone.
    """
    import pyarrow as pa

    schema = pa.schema([("rows", pa.int64()), ("problem", pa.string()), ("sku_ids", pa.binary()),
                        ("upserts", pa.binary()), ("embeddings", pa.binary())])
    for batch in batches:
        if batch.num_rows == 0:
            continue
        columns = (batch.column(0), batch.column(1), batch.column(2) if batch.num_columns > 2 else None)
        problem = _batch_problem(*columns, dim)
        blobs = {"sku_ids": b"", "upserts": b"", "embeddings": b""} if problem else _blobs(*columns)
        yield pa.RecordBatch.from_pylist([{"rows": batch.num_rows, "problem": problem, **blobs}], schema=schema)


def _batch_problem(ids: pa.Array, embeddings: pa.ListArray, upserts: pa.BooleanArray | None, dim: int) -> str:
    """What makes an Arrow batch unpublishable ("" if nothing): ids, ops, embeddings of upserts."""
    import pyarrow.compute as pc

    if ids.null_count:
        return "null sku_id"
    if upserts is not None:
        if upserts.null_count:
            return f"op neither upsert nor delete (e.g. sku_id {ids.filter(pc.is_null(upserts))[0].as_py()})"
        ids, embeddings = ids.filter(upserts), embeddings.filter(upserts)
    if embeddings.null_count:
        return f"null embedding (e.g. sku_id {ids.filter(pc.is_null(embeddings))[0].as_py()})"
    lengths = pc.list_value_length(embeddings)
    wrong = pc.not_equal(lengths, dim)
    if pc.any(wrong).as_py():
        return (f"embedding length {lengths.filter(wrong)[0].as_py()}, not the snapshot's dim {dim} "
                f"(e.g. sku_id {ids.filter(wrong)[0].as_py()})")
    values = embeddings.flatten()
    if values.null_count:
        row = pc.list_parent_indices(embeddings).filter(pc.is_null(values))[0].as_py()
        return f"null value in embedding (e.g. sku_id {ids[row].as_py()})"
    return ""


def _blobs(ids: pa.Array, embeddings: pa.ListArray, upserts: pa.BooleanArray | None) -> dict[str, bytes]:
    """The ids, the upsert flags (uint8; none for a publish) and the (upserts') embeddings as bytes."""
    if upserts is not None:
        embeddings = embeddings.filter(upserts)
    return {
        "sku_ids": ids.to_numpy(zero_copy_only=False).astype("<i8").tobytes(),
        "upserts": b"" if upserts is None else upserts.to_numpy(zero_copy_only=False).astype(np.uint8).tobytes(),
        "embeddings": embeddings.flatten().to_numpy(zero_copy_only=False).astype("<f4").tobytes(),
    }


def stream_changes(columns: DataFrame, partitions: int, base: ServingSnapshot) -> Iterator[Changes]:
    """The changes in sku_id order, in chunks (one Arrow batch each), checked against ``base``."""
    last = None
    for chunk in _stream_packed(columns, partitions, base.dim):
        if chunk["problem"]:
            raise ValueError(f"cannot publish serving snapshot: changes to v{base.version}: {chunk['problem']}")
        ids = np.frombuffer(chunk["sku_ids"], dtype="<i8")
        upserts = np.frombuffer(chunk["upserts"], dtype=np.uint8).astype(bool)
        embeddings = np.frombuffer(chunk["embeddings"], dtype="<f4").reshape(int(upserts.sum()), base.dim)
        serving.check_increasing(ids, last)
        finite = np.isfinite(embeddings).all(axis=1)
        if not finite.all():
            raise ValueError(f"cannot publish serving snapshot: changes to v{base.version}: non-finite value "
                             f"in embedding (e.g. sku_id {ids[upserts][~finite][0]})")
        last = ids[-1]
        yield Changes(ids, upserts, embeddings)


__all__ = ["PARTITION_BYTES", "patch_serving_snapshot", "publish_serving_snapshot"]
