"""Serving snapshots of ``sku_embeddings``: the on-disk format, load and verify, patch merge.

Layout under ``serving_root`` (versions published by :func:`adrank.storage.versioned.publish`)::

    <serving_root>/v1/sku_ids.npy      int64 [n], sorted ascending, unique
    <serving_root>/v1/embeddings.npy   float32 [n, d]; row i belongs to sku_ids[i]
    <serving_root>/v1/manifest.json    versions, rows, dim, created_at, patched_from, sha256 of each file
    <serving_root>/CURRENT             "v2": moved forward only, after v2 is complete

Pure (numpy and files; no Spark, no TensorFlow). :mod:`adrank.embed.export` streams a
DataFrame into :func:`write_arrays` and publishes with :func:`publish_snapshot`; a patch
merges a published base (memory-mapped, in blocks of about :data:`BLOCK_BYTES`) with sorted
changes (:func:`patched_blocks`). :func:`load_serving_snapshot` follows ``CURRENT`` (or opens
a given version), checks the manifest against the arrays (and the sha256 sums with
``verify=True``) and maps them read-only; a reader keeps its version after newer ones are
published, even once it is pruned. Errors are one line. Local paths only.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from adrank.storage import versioned

CURRENT = "CURRENT"
MANIFEST = "manifest.json"
IDS_FILE = "sku_ids.npy"
EMBEDDINGS_FILE = "embeddings.npy"
FORMAT = 1
BLOCK_BYTES = 16 << 20
"""Size of one block of the base snapshot that a patch merges with the changes at a time."""
SNAPSHOTS = versioned.Scheme(pointer=CURRENT, manifest=MANIFEST, version_key="snapshot_version")
"""The versioned-folder scheme of serving snapshots."""


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


@dataclasses.dataclass(frozen=True)
class Shape:
    """What a new snapshot's manifest records besides its files."""

    rows: int
    dim: int
    table_version: int
    model_version: int
    patched_from: int | None = None


def local_root(serving_root: str | os.PathLike[str]) -> Path:
    """``serving_root`` as a local Path; one-line ValueError for a URI."""
    return versioned.local_folder(serving_root, "serving snapshots")


def publish_snapshot(root: Path, write: Callable[[Path], None], shape: Shape, keep: int) -> int:
    """Publishes the files ``write`` puts in a folder, with their manifest, as the next version.

    Args:
        root: The serving root (see :func:`local_root`).
        write: Writes ``sku_ids.npy`` and ``embeddings.npy`` (:func:`write_arrays`); any
            error publishes nothing.
        shape: What the manifest records besides the files.
        keep: How many of the newest versions to keep (>= 1); ``CURRENT``'s is always kept.

    Returns:
        The new version ``N``.
    """
    def write_version(folder: Path) -> dict[str, Any]:
        write(folder)
        return _manifest(folder, shape)

    return versioned.publish(root, SNAPSHOTS, write_version, keep=keep)


def _manifest(folder: Path, shape: Shape) -> dict[str, Any]:
    """The manifest of a complete temporary folder (``snapshot_version`` set on claim)."""
    return {
        "format": FORMAT, "snapshot_version": None, "table_version": int(shape.table_version),
        "model_version": int(shape.model_version), "rows": shape.rows, "dim": shape.dim,
        "patched_from": shape.patched_from,
        "created_at": datetime.datetime.now(datetime.UTC).isoformat(),
        "files": {name: {"sha256": _sha256(folder / name), "bytes": (folder / name).stat().st_size}
                  for name in (IDS_FILE, EMBEDDINGS_FILE)},
    }


def write_arrays(chunks: Iterable[tuple[np.ndarray, np.ndarray]], folder: Path, rows: int, dim: int, *,
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
        check_increasing(ids, last)
        ids_out[offset:end] = ids
        embeddings_out[offset:end] = embeddings
        offset, last = end, ids[-1]
    if offset != rows:
        raise ValueError(f"cannot publish serving snapshot: streamed {offset} rows, {counted} {rows} ({why})")
    for array in (ids_out, embeddings_out):
        array.flush()
    del ids_out, embeddings_out
    for name in (IDS_FILE, EMBEDDINGS_FILE):
        versioned.fsync(folder / name)


def check_increasing(ids: np.ndarray, last: int | None) -> None:
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
class Changes:
    """Sorted changes: their ids, which are upserts, and the upserts' embeddings in id order."""

    ids: np.ndarray
    upserts: np.ndarray
    embeddings: np.ndarray

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def rows(self, begin: int, end: int | None = None) -> Changes:
        """The changes at positions ``begin..end`` (to the last one when ``end`` is None)."""
        end = len(self) if end is None else end
        first, last = (int(np.count_nonzero(self.upserts[:i])) for i in (begin, end))
        return Changes(self.ids[begin:end], self.upserts[begin:end], self.embeddings[first:last])


def patch_base(root: Path, version: int) -> ServingSnapshot:
    """Snapshot ``version``, its sha256 sums checked; ValueError if it is empty (no dim to keep)."""
    base = load_serving_snapshot(root, version, verify=True)
    if not len(base):
        raise ValueError(f"cannot publish serving snapshot: v{version} is empty, nothing to patch")
    return base


def patched_blocks(base: ServingSnapshot, changes: Iterable[Changes],
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


def _merged_range(base: ServingSnapshot, start: int, stop: int, chunk: Changes,
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


def _apply(ids: np.ndarray, embeddings: np.ndarray, changes: Changes) -> tuple[np.ndarray, np.ndarray]:
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
    root = local_root(serving_root)
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


def _one_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


__all__ = ["BLOCK_BYTES", "CURRENT", "MANIFEST", "SNAPSHOTS", "Changes", "ServingSnapshot", "Shape",
           "check_increasing", "load_serving_snapshot", "local_root", "patch_base", "patched_blocks",
           "publish_snapshot", "write_arrays"]
