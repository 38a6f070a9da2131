"""Serving export: versioned, read-optimised snapshots of ``sku_embeddings`` for online use.

Layout under ``serving_root``::

    <serving_root>/v1/sku_ids.npy      int64 [n], sorted ascending, unique
    <serving_root>/v1/embeddings.npy   float32 [n, d]; row i belongs to sku_ids[i]
    <serving_root>/v1/manifest.json    versions, rows, dim, created_at, sha256 of each file
    <serving_root>/v2/...
    <serving_root>/CURRENT             "v2": replaced atomically, after v2 is complete

:func:`publish_serving_snapshot` (the Spark side; it never imports TensorFlow) first checks
the DataFrame in one aggregation (row count, embedding length, null or non-finite
embeddings) and refuses bad input with a one-line ``ValueError``. It then streams the
rows in ``sku_id`` order, one range partition at a time (``repartitionByRange`` +
``mapInArrow`` packing each Arrow batch into two byte strings + ``toLocalIterator``),
straight into ``np.lib.format.open_memmap`` files in a hidden temporary folder: the driver
holds at most two partitions of about :data:`PARTITION_BYTES` each, whatever the table's
size. Duplicate ids are caught on that sorted stream; any error removes the temporary
folder, so nothing is published. The folder is then renamed to ``v<N>`` (``N`` = highest
existing version + 1; a rename onto an existing, non-empty version fails, so racing
publishers take different numbers: the approach of :mod:`adrank.train.registry`),
``CURRENT`` is replaced (temporary file + ``os.replace``) and versions beyond the newest
``keep`` are deleted, never the one ``CURRENT`` names. Pointer moves and pruning run
under an exclusive ``flock`` on ``<serving_root>/.lock``, and ``CURRENT`` only ever moves
forward, so a slow publisher cannot roll it back.

An empty table publishes a valid 0-row snapshot (``dim`` 0): serving mirrors the table.

:func:`patch_serving_snapshot` publishes the next snapshot from a published one (the
*base*) and a run's changes (rows of ``sku_id``, ``embedding``, ``op`` in {"upsert",
"delete"}; delete rows carry only ``sku_id``) instead of re-exporting the whole table: the
changes are streamed in ``sku_id`` order exactly as above (one Spark job, no shuffle of
the table), and the new arrays are a chunked two-way sorted merge of the memory-mapped base
(fixed blocks of about :data:`BLOCK_BYTES`) and the change stream: base rows whose id is
upserted or deleted are dropped, upserts are inserted in order. Its cost is O(changed
rows) on Spark plus one sequential copy of the base; the driver holds one base block and
at most two partitions of changes at a time. It refuses (one-line ``ValueError``, nothing published)
changes with null ids, unknown ops, duplicate ids, null / non-finite embeddings or another
dim than the base's, an empty base, and a result whose row count is not
``expected_rows`` (the caller's count of the table it mirrors, e.g. from the MERGE's
metrics): the caller then publishes in full. The manifest names the base
(``patched_from``; ``null`` for a full publish).

:func:`load_serving_snapshot` follows ``CURRENT`` (or opens a given version), checks the
manifest against the arrays (rows, dim, dtypes; the sha256 sums too with
``verify=True``, which reads every byte) and maps the arrays with
``np.load(mmap_mode="r")``. A reader keeps working on the version it opened after newer
versions are published, even once that version is pruned (a deleted file stays mapped).
A serving process swaps by loading again and replacing its reference.

Local paths only (``/path`` or ``file:///path``): renames, ``flock`` and ``os.replace``
need a POSIX file system. On an object store (s3a://, abfss://, gs://) there is no
atomic directory rename: publish to a local folder, upload the version's files under
``v<N>/`` (with a conditional "create only if absent" put on ``manifest.json`` to claim
``N``), and write ``CURRENT`` last; the pointer is what makes a version visible there,
readers must only follow it, and pruning must wait until no reader can still be
fetching the old version's files (object stores have no open-file semantics).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import fcntl
import functools
import hashlib
import json
import math
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from adrank import versioned

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

CURRENT = "CURRENT"
MANIFEST = "manifest.json"
IDS_FILE = "sku_ids.npy"
EMBEDDINGS_FILE = "embeddings.npy"
FORMAT = 1
PARTITION_BYTES = 64 << 20
"""Target size of one streamed range partition (the driver holds at most two)."""
BLOCK_BYTES = 16 << 20
"""Size of one block of the base snapshot that a patch merges with the changes at a time."""
STALE_TEMPORARY_SECONDS = 24 * 3600
"""Hidden temporaries older than this are left-overs of a crashed publisher: removed."""

_TEMPORARY = ".tmp-"
_TRASH = ".del-"
_LOCK = ".lock"
_PACKED_SCHEMA = "rows long, problem string, sku_ids binary, upserts binary, embeddings binary"


@dataclasses.dataclass(frozen=True, eq=False)
class ServingSnapshot:
    """One published snapshot, memory-mapped read-only.

    Attributes:
        version: The snapshot version ``N`` (folder ``v<N>``).
        sku_ids: Sorted, unique int64 ids, shape ``[n]``.
        embeddings: float32 ``[n, d]``; row ``i`` belongs to ``sku_ids[i]``.
        manifest: The parsed ``manifest.json``.
        path: The snapshot's folder.
    """

    version: int
    sku_ids: np.ndarray
    embeddings: np.ndarray
    manifest: dict[str, Any]
    path: str = ""

    @property
    def dim(self) -> int:
        """Embedding length ``d``."""
        return int(self.embeddings.shape[1])

    def __len__(self) -> int:
        return int(self.sku_ids.shape[0])

    def lookup(self, sku_ids: Iterable[int] | np.ndarray) -> np.ndarray:
        """The embeddings of ``sku_ids``, in the order given.

        Args:
            sku_ids: Ids to look up (any order, repeats allowed).

        Returns:
            A float32 array ``[len(sku_ids), d]`` (a copy, not a view of the file).

        Raises:
            KeyError: Some ids are not in the snapshot; the message names them.
        """
        wanted = np.asarray(sku_ids if isinstance(sku_ids, np.ndarray) else list(sku_ids),
                            dtype=np.int64).reshape(-1)
        if len(self):
            rows = np.minimum(np.searchsorted(self.sku_ids, wanted), len(self) - 1)
            found = self.sku_ids[rows] == wanted
        else:
            rows, found = np.zeros_like(wanted), np.zeros(wanted.shape, dtype=bool)
        if not found.all():
            missing = np.unique(wanted[~found])
            shown = ", ".join(str(i) for i in missing[:10]) + (", ..." if len(missing) > 10 else "")
            raise KeyError(f"{len(missing)} sku_id(s) not in serving snapshot v{self.version}: {shown}")
        return np.asarray(self.embeddings[rows], dtype=np.float32)


# ---------------------------------------------------------------------------- publish


def publish_serving_snapshot(spark: SparkSession, embeddings_df: DataFrame, serving_root: str | os.PathLike,
                             *, table_version: int, model_version: int, keep: int = 3) -> dict[str, Any]:
    """Publishes the embeddings as the next snapshot version and points ``CURRENT`` at it.

    Args:
        spark: The session ``embeddings_df`` belongs to (unused; library functions take it).
        embeddings_df: At least ``sku_id`` (long) and ``embedding`` (array of float or
            double); e.g. ``sku_embeddings`` read with ``versionAsOf=table_version``. It
            is read twice (check, then stream), so it must be pinned: rows that change
            in between are refused.
        serving_root: Local folder of the snapshots (see the module docstring).
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
    _check_keep(keep)
    root = _local(serving_root)
    columns = _serving_columns(embeddings_df)
    rows, dim = _checked_shape(columns)
    version = _publish(root, lambda folder: _write_arrays(_stream_sorted(columns, rows, dim), folder, rows, dim),
                       _Shape(rows, dim, table_version, model_version), keep)
    return {"snapshot_version": version, "path": str(root / f"v{version}"), "rows": rows, "dim": dim}


def patch_serving_snapshot(spark: SparkSession, changes_df: DataFrame, serving_root: str | os.PathLike, *,
                           base_version: int, table_version: int, model_version: int, expected_rows: int,
                           keep: int = 3, change_rows: int | None = None) -> dict[str, Any]:
    """Publishes snapshot ``base_version`` with ``changes_df`` applied as the next version.

    Args:
        spark: The session ``changes_df`` belongs to (unused; library functions take it).
        changes_df: One row per changed SKU: ``sku_id`` (long), ``op`` ("upsert" or
            "delete") and ``embedding`` (array of numbers; ignored for deletes), e.g. the
            staged rows of an embed_catalog run (:data:`adrank.embed.incremental.STAGED_DDL`).
            A delete of an id the base lacks is a no-op. Read once.
        serving_root: Local folder of the snapshots (see the module docstring).
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
    _check_keep(keep)
    if expected_rows < 0:
        raise ValueError(f"cannot publish serving snapshot: expected_rows must be >= 0, got {expected_rows}")
    root = _local(serving_root)
    base = _patch_base(root, base_version)
    columns = _change_columns(changes_df)
    counted = columns.count() if change_rows is None else change_rows
    partitions = _partitions(counted, 9 + 4 * base.dim)
    dim = base.dim if expected_rows else 0  # an empty result has dim 0, as a full publish of it would
    block_rows = max(1, BLOCK_BYTES // (8 + 4 * base.dim))

    def write(folder: Path) -> None:
        changes = _stream_changes(columns, partitions, base)
        _write_arrays(_patched_blocks(base, changes, block_rows), folder, expected_rows, dim,
                      counted="expected", why=f"v{base.version} with the changes applied")

    shape = _Shape(expected_rows, dim, table_version, model_version, patched_from=base.version)
    version = _publish(root, write, shape, keep)
    return {"snapshot_version": version, "path": str(root / f"v{version}"), "rows": expected_rows, "dim": dim,
            "patched_from": base.version}


@dataclasses.dataclass(frozen=True)
class _Shape:
    """What a new snapshot's manifest records besides its files."""

    rows: int
    dim: int
    table_version: int
    model_version: int
    patched_from: int | None = None


def _check_keep(keep: int) -> None:
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")


def _publish(root: Path, write: Callable[[Path], None], shape: _Shape, keep: int) -> int:
    """Writes a hidden temporary folder with ``write``, claims the next version, moves ``CURRENT``, prunes.

    Any error in ``write`` removes the temporary folder: nothing is published.
    """
    root.mkdir(parents=True, exist_ok=True)
    temporary = root / f"{_TEMPORARY}{uuid.uuid4().hex}"
    temporary.mkdir()
    try:
        write(temporary)
        version = _claim_version(root, temporary, _manifest(temporary, shape))
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    with _locked(root):
        _advance_pointer(root, version)
        _prune(root, keep)
    return version


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

    Duplicate ids are caught later, by :func:`_write_arrays`, on the sorted stream (the
    sort is needed anyway; a ``count_distinct`` here would shuffle the table once more).
    """
    from pyspark.sql import functions as F

    problems = _row_problems()
    size = F.when(F.col("embedding").isNotNull(), F.size("embedding"))
    stats = columns.agg(
        F.count(F.lit(1)).alias("rows"), F.min(size).alias("min_dim"), F.max(size).alias("max_dim"),
        *[F.sum(cond.cast("long")).alias(f"p{i}") for i, cond in enumerate(problems.values())],
    ).first()
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


def _stream_packed(columns: DataFrame, partitions: int, dim: int) -> Iterator[Any]:
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


def _pack_batches(batches: Iterator[Any], dim: int) -> Iterator[Any]:
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


def _batch_problem(ids: Any, embeddings: Any, upserts: Any | None, dim: int) -> str:
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


def _blobs(ids: Any, embeddings: Any, upserts: Any | None) -> dict[str, bytes]:
    """The ids, the upsert flags (uint8; none for a publish) and the (upserts') embeddings as bytes."""
    if upserts is not None:
        embeddings = embeddings.filter(upserts)
    return {
        "sku_ids": ids.to_numpy(zero_copy_only=False).astype("<i8").tobytes(),
        "upserts": b"" if upserts is None else upserts.to_numpy(zero_copy_only=False).astype(np.uint8).tobytes(),
        "embeddings": embeddings.flatten().to_numpy(zero_copy_only=False).astype("<f4").tobytes(),
    }


def _write_arrays(chunks: Iterable[tuple[np.ndarray, np.ndarray]], folder: Path, rows: int, dim: int, *,
                  counted: str = "counted", why: str = "the DataFrame changed after it was checked") -> None:
    """Writes the chunks into ``sku_ids.npy`` / ``embeddings.npy``, checking strict id order.

    Args:
        chunks: ``(sku_ids [k], embeddings [k, dim])`` in id order.
        folder: Where the files go.
        rows: The exact number of rows the chunks must hold.
        dim: Embedding length.
        counted: How ``rows`` was found ("counted", "expected"), for the error text.
        why: What a mismatch means, for the error text.
    """
    ids_out = np.lib.format.open_memmap(folder / IDS_FILE, mode="w+", dtype=np.int64, shape=(rows,))
    embeddings_out = np.lib.format.open_memmap(folder / EMBEDDINGS_FILE, mode="w+", dtype=np.float32,
                                               shape=(rows, dim))
    offset, last = 0, None
    for ids, embeddings in chunks:
        if not len(ids):
            continue
        end = offset + len(ids)
        if end > rows:
            raise ValueError(f"cannot publish serving snapshot: more than the {rows} rows {counted} ({why})")
        _check_increasing(ids, last)
        ids_out[offset:end] = ids
        embeddings_out[offset:end] = embeddings
        offset, last = end, ids[-1]
    if offset != rows:
        raise ValueError(f"cannot publish serving snapshot: streamed {offset} rows, {counted} {rows} ({why})")
    for array in (ids_out, embeddings_out):
        array.flush()
    del ids_out, embeddings_out
    for name in (IDS_FILE, EMBEDDINGS_FILE):
        _fsync(folder / name)


def _check_increasing(ids: np.ndarray, last: int | None) -> None:
    """ValueError on the first ``sku_id`` of the sorted stream that does not exceed the one before."""
    joined = ids if last is None else np.concatenate(([last], ids))
    bad = np.flatnonzero(joined[1:] <= joined[:-1])
    if bad.size:
        before, after = joined[bad[0]], joined[bad[0] + 1]
        if before == after:
            raise ValueError(f"cannot publish serving snapshot: duplicate sku_id {after}")
        raise ValueError("cannot publish serving snapshot: sku_id not increasing while streaming "
                         "(the DataFrame changed after it was checked)")


# ---------------------------------------------------------------------------- patch


@dataclasses.dataclass(frozen=True)
class _Changes:
    """Sorted changes: their ids, which are upserts, and the upserts' embeddings in id order."""

    ids: np.ndarray
    upserts: np.ndarray
    embeddings: np.ndarray

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def rows(self, begin: int, end: int | None = None) -> _Changes:
        """The changes at positions ``begin..end`` (to the last one when ``end`` is None)."""
        end = len(self) if end is None else end
        first, last = (int(np.count_nonzero(self.upserts[:i])) for i in (begin, end))
        return _Changes(self.ids[begin:end], self.upserts[begin:end], self.embeddings[first:last])


def _patch_base(root: Path, version: int) -> ServingSnapshot:
    """Snapshot ``version``, its sha256 sums checked; ValueError if it is empty (no dim to keep)."""
    base = load_serving_snapshot(root, version, verify=True)
    if not len(base):
        raise ValueError(f"cannot publish serving snapshot: v{version} is empty, nothing to patch")
    return base


def _stream_changes(columns: DataFrame, partitions: int, base: ServingSnapshot) -> Iterator[_Changes]:
    """The changes in sku_id order, in chunks (one Arrow batch each), checked against ``base``."""
    last = None
    for chunk in _stream_packed(columns, partitions, base.dim):
        if chunk["problem"]:
            raise ValueError(f"cannot publish serving snapshot: changes to v{base.version}: {chunk['problem']}")
        ids = np.frombuffer(chunk["sku_ids"], dtype="<i8")
        upserts = np.frombuffer(chunk["upserts"], dtype=np.uint8).astype(bool)
        embeddings = np.frombuffer(chunk["embeddings"], dtype="<f4").reshape(int(upserts.sum()), base.dim)
        _check_increasing(ids, last)
        finite = np.isfinite(embeddings).all(axis=1)
        if not finite.all():
            raise ValueError(f"cannot publish serving snapshot: changes to v{base.version}: non-finite value "
                             f"in embedding (e.g. sku_id {ids[upserts][~finite][0]})")
        last = ids[-1]
        yield _Changes(ids, upserts, embeddings)


def _patched_blocks(base: ServingSnapshot, changes: Iterable[_Changes],
                    block_rows: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The base's rows with the changes applied, in sku_id order.

    A two-way merge: each chunk of changes takes the base rows up to its last id, in
    blocks of at most ``block_rows``; each block carries the changes that fall within it.
    """
    start = 0
    for chunk in changes:
        stop = int(np.searchsorted(base.sku_ids, chunk.ids[-1], side="right"))
        yield from _merged_range(base, start, stop, chunk, block_rows)
        start = stop
    for begin in range(start, len(base), block_rows):
        yield base.sku_ids[begin:begin + block_rows], base.embeddings[begin:begin + block_rows]


def _merged_range(base: ServingSnapshot, start: int, stop: int, chunk: _Changes,
                  block_rows: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Base rows ``start..stop`` (ids up to ``chunk``'s last) merged with ``chunk``, block by block."""
    done = 0
    for begin in range(start, stop, block_rows):
        end = min(begin + block_rows, stop)
        block_ids = base.sku_ids[begin:end]
        cut = len(chunk) if end == stop else int(np.searchsorted(chunk.ids, block_ids[-1], side="right"))
        yield _apply(block_ids, base.embeddings[begin:end], chunk.rows(done, cut))
        done = cut
    if done < len(chunk):  # the base has no rows in this range
        yield _apply(base.sku_ids[stop:stop], base.embeddings[stop:stop], chunk.rows(done))


def _apply(ids: np.ndarray, embeddings: np.ndarray, changes: _Changes) -> tuple[np.ndarray, np.ndarray]:
    """One block of base rows without the changed ids, with the upserts inserted in id order."""
    if not len(changes):
        return ids, embeddings
    at = np.minimum(np.searchsorted(changes.ids, ids), len(changes) - 1)
    kept = changes.ids[at] != ids
    kept_ids = ids[kept]
    new_ids = changes.ids[changes.upserts]
    where = np.searchsorted(kept_ids, new_ids)
    return (np.insert(kept_ids, where, new_ids),
            np.insert(np.asarray(embeddings)[kept], where, changes.embeddings, axis=0))


# ---------------------------------------------------------------------------- manifest, version, pointer


def _manifest(folder: Path, shape: _Shape) -> dict[str, Any]:
    """The manifest of a complete temporary folder (``snapshot_version`` set on claim)."""
    return {
        "format": FORMAT, "snapshot_version": None, "table_version": int(shape.table_version),
        "model_version": int(shape.model_version), "rows": shape.rows, "dim": shape.dim,
        "patched_from": shape.patched_from,
        "created_at": datetime.datetime.now(datetime.UTC).isoformat(),
        "files": {name: {"sha256": _sha256(folder / name), "bytes": (folder / name).stat().st_size}
                  for name in (IDS_FILE, EMBEDDINGS_FILE)},
    }


def _claim_version(root: Path, temporary: Path, manifest: dict[str, Any]) -> int:
    """Renames ``temporary`` to the next free ``v<N>`` (retrying on a race); returns N."""
    def write_manifest(version: int) -> None:
        manifest["snapshot_version"] = version
        (temporary / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        _fsync(temporary / MANIFEST)

    return versioned.claim_next_version(root, temporary, write_manifest)


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``<root>/.lock`` (pointer moves and pruning)."""
    with open(root / _LOCK, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _advance_pointer(root: Path, version: int) -> None:
    """Points ``CURRENT`` at ``v<version>`` unless it already names a newer version."""
    try:
        current = _pointer(root)
    except (FileNotFoundError, ValueError):
        current = None
    if current is None or version > current:
        versioned.write_atomically(root / CURRENT, f"v{version}\n")


def _prune(root: Path, keep: int) -> None:
    """Deletes versions older than the newest ``keep`` (never ``CURRENT``'s), and left-overs."""
    existing = _versions(root)
    kept = set(existing[-keep:])
    with contextlib.suppress(FileNotFoundError, ValueError):
        kept.add(_pointer(root))
    for version in existing:
        if version not in kept:
            trash = root / f"{_TRASH}v{version}-{uuid.uuid4().hex}"
            os.rename(root / f"v{version}", trash)
            shutil.rmtree(trash, ignore_errors=True)
    _remove_leftovers(root)


def _remove_leftovers(root: Path) -> None:
    """Removes half-deleted versions and temporaries older than STALE_TEMPORARY_SECONDS."""
    for path in root.iterdir():
        if path.name.startswith(_TRASH) or (path.name.startswith(_TEMPORARY)
                                            and _age_seconds(path) > STALE_TEMPORARY_SECONDS):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


def _age_seconds(path: Path) -> float:
    """Seconds since ``path`` last changed (0 if it is gone: a publisher just renamed it)."""
    try:
        return time.time() - path.lstat().st_mtime
    except FileNotFoundError:
        return 0.0


# ---------------------------------------------------------------------------- load


def load_serving_snapshot(serving_root: str | os.PathLike, version: int | None = None, *,
                          verify: bool = False) -> ServingSnapshot:
    """Opens a snapshot (the one ``CURRENT`` names by default), memory-mapped read-only.

    Args:
        serving_root: The folder :func:`publish_serving_snapshot` wrote.
        version: A snapshot version; ``None`` follows ``CURRENT``.
        verify: Also check the files' sha256 against the manifest (reads every byte).

    Returns:
        The :class:`ServingSnapshot`.

    Raises:
        FileNotFoundError: No ``CURRENT``, or the version does not exist (one line).
        ValueError: A corrupt snapshot: unreadable files or manifest, or arrays that
            do not match it (one line).
    """
    root = _local(serving_root)
    if version is not None:
        return _load(root, int(version), verify)
    for _ in range(3):
        current = _pointer(root)
        try:
            return _load(root, current, verify)
        except FileNotFoundError:
            if _pointer(root) == current:  # not a pointer that moved on while we opened
                raise
    return _load(root, _pointer(root), verify)


def _load(root: Path, version: int, verify: bool) -> ServingSnapshot:
    folder = root / f"v{version}"
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        if not isinstance(manifest, dict):
            raise ValueError(f"{MANIFEST} is not a JSON object")
        if verify:
            _verify_digests(folder, manifest)
        ids = np.load(folder / IDS_FILE, mmap_mode="r")
        embeddings = np.load(folder / EMBEDDINGS_FILE, mmap_mode="r")
    except FileNotFoundError as error:
        raise FileNotFoundError(f"serving snapshot v{version} in {root} is missing "
                                f"({Path(error.filename or folder).name} not found)") from None
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"serving snapshot {folder} is corrupt: {_one_line(error)}") from None
    _check_arrays(folder, version, manifest, ids, embeddings)
    return ServingSnapshot(version, ids, embeddings, manifest, str(folder))


def _check_arrays(folder: Path, version: int, manifest: dict[str, Any], ids: np.ndarray,
                  embeddings: np.ndarray) -> None:
    """ValueError (one line) unless the arrays have the manifest's version, rows, dim and dtypes."""
    expected = (version, (manifest.get("rows"),), (manifest.get("rows"), manifest.get("dim")))
    actual = (manifest.get("snapshot_version"), ids.shape, embeddings.shape)
    if expected != actual or ids.dtype != np.int64 or embeddings.dtype != np.float32:
        raise ValueError(f"serving snapshot {folder} is corrupt: manifest says version {version}, rows "
                         f"{manifest.get('rows')}, dim {manifest.get('dim')} (int64 ids, float32 "
                         f"embeddings) but found version {manifest.get('snapshot_version')}, ids "
                         f"{ids.dtype}{list(ids.shape)}, embeddings {embeddings.dtype}{list(embeddings.shape)}")


def _verify_digests(folder: Path, manifest: dict[str, Any]) -> None:
    for name in (IDS_FILE, EMBEDDINGS_FILE):
        if _sha256(folder / name) != manifest["files"][name]["sha256"]:
            raise ValueError(f"sha256 of {name} does not match the manifest")


# ---------------------------------------------------------------------------- files


def _local(root: str | os.PathLike) -> Path:
    return versioned.local_folder(root, "serving snapshots")


def _versions(root: Path) -> list[int]:
    """Complete versions in ``root``, ascending (hidden temporaries never match)."""
    return versioned.versions_in(root)


def _pointer(root: Path) -> int:
    """The version ``CURRENT`` names; one-line FileNotFoundError / ValueError."""
    try:
        return versioned.read_pointer(root / CURRENT)
    except FileNotFoundError:
        raise FileNotFoundError(f"no serving snapshot in {root} (no {CURRENT} file)") from None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync(path: Path) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def _one_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


__all__ = ["CURRENT", "MANIFEST", "ServingSnapshot", "load_serving_snapshot", "patch_serving_snapshot",
           "publish_serving_snapshot"]
