"""Versioned folders on a local file system: ``v1/``, ``v2/``, ... a manifest in each, a pointer file.

The one publish protocol of the model registry (:mod:`adrank.train.registry`) and the
serving snapshots (:mod:`adrank.embed.serving`). :func:`publish` writes a version completely
into a hidden temporary folder beside the versions, writes its manifest, renames it to
``v<N>`` (``N`` = the highest existing version + 1; a rename onto an existing folder fails,
so racing publishers take different numbers), then, under an exclusive ``flock`` on
``<root>/.lock`` (unless the :class:`Scheme` has no lock), moves the pointer forward
(temporary file + ``os.replace``; never back to an older version), prunes to the newest
``keep`` versions (never the pointer's) and removes left-overs (half-deleted versions,
temporaries older than :data:`STALE_TEMPORARY_SECONDS`).
A reader that follows the pointer never sees a half-written version. Hidden entries
(``.tmp-*``, ``.del-*``, ``.lock``) are never versions. A :class:`Scheme` names the pointer
and manifest files of one kind of folder.

Local paths only (``/path`` or ``file:///path``): the rename, ``flock`` and pointer steps
need a POSIX file system. Object stores have no atomic rename; there a version would be
claimed with a create-if-absent write and the pointer written last.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

VERSION_NAME = re.compile(r"^v(\d+)$")
CLAIM_ATTEMPTS = 100
STALE_TEMPORARY_SECONDS = 24 * 3600
"""Hidden temporaries older than this are left-overs of a crashed publisher: removed."""

TEMPORARY = ".tmp-"
TRASH = ".del-"
LOCK = ".lock"


def _dumps(manifest: Mapping[str, Any]) -> str:
    return json.dumps(manifest, indent=2, sort_keys=True)


@dataclasses.dataclass(frozen=True)
class Scheme:
    """The file names of one kind of versioned folder.

    Attributes:
        pointer: The pointer file in the root (e.g. ``"CURRENT"``), holding ``v<N>``.
        manifest: The manifest file in each version (e.g. ``"manifest.json"``).
        version_key: The manifest key that holds ``N`` (set when the version is claimed).
        dumps: Manifest -> JSON text (a newline is added).
        lock: The lock file in the root that serialises pointer moves and pruning; None
            for none (a folder that keeps every version and must hold no hidden file
            between publishes: its pointer then moves forward on a best-effort basis, as
            a racing publisher may read it just before another replaces it).
    """

    pointer: str
    manifest: str
    version_key: str
    dumps: Callable[[Mapping[str, Any]], str] = _dumps
    lock: str | None = LOCK


def local_folder(root: str | os.PathLike[str], what: str) -> Path:
    """``root`` as a local Path (``file://`` stripped); a one-line error for a URI.

    Args:
        root: ``/path`` or ``file:///path``.
        what: What lives there, for the error (e.g. ``"the model registry"``).
    """
    text = os.fspath(root)
    if text.startswith("file://"):
        return Path(text[len("file://"):])
    if "://" in text:
        raise ValueError(f"{what}: only local paths are supported, got {text!r} (see adrank.storage.versioned)")
    return Path(text)


def versions_in(folder: Path) -> list[int]:
    """The complete versions in ``folder``, ascending (``[]`` when it does not exist)."""
    if not folder.is_dir():
        return []
    found = (VERSION_NAME.match(p.name) for p in folder.iterdir() if p.is_dir())
    return sorted(int(m.group(1)) for m in found if m)


def read_pointer(path: Path) -> int:
    """The version a pointer file names (``v<N>``); one-line errors.

    Raises:
        FileNotFoundError: No pointer file.
        ValueError: The file does not hold ``v<N>``.
    """
    text = path.read_text().strip()
    match = VERSION_NAME.match(text)
    if not match:
        raise ValueError(f"{path} holds {text[:40]!r}, not v<N>")
    return int(match.group(1))


def publish(root: Path, scheme: Scheme, write: Callable[[Path], Mapping[str, Any]], *,
            keep: int | None = None) -> int:
    """Publishes the next version of ``root`` and points ``scheme.pointer`` at it.

    Args:
        root: The folder of the versions (created if absent).
        scheme: Its pointer and manifest file names.
        write: Writes the new version's files into the (empty, hidden) folder it is given
            and returns the manifest (``scheme.version_key`` is set to ``N`` on claim). It
            returns the manifest, rather than taking it, because a manifest may describe
            what was written (sizes, checksums). Any error removes the folder: nothing is
            published.
        keep: How many of the newest versions to keep (>= 1); the pointer's is always
            kept. None keeps all (the only choice for a scheme without a lock).

    Returns:
        ``N``, the new version (folder ``root/v<N>``).
    """
    check_keep(keep)
    if keep is not None and scheme.lock is None:
        raise ValueError("pruning needs a lock: a Scheme without one keeps every version (keep=None)")
    root.mkdir(parents=True, exist_ok=True)
    temporary = root / f"{TEMPORARY}{uuid.uuid4().hex}"
    temporary.mkdir()
    try:
        manifest = dict(write(temporary))
        version = _claim_next_version(root, temporary,
                                      lambda n: _write_manifest(temporary, scheme, manifest, n))
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    with _locked(root, scheme.lock):
        advance_pointer(root / scheme.pointer, version)
        prune(root, scheme, keep)
    return version


def check_keep(keep: int | None) -> None:
    """ValueError unless ``keep`` is None or at least 1 (callers check it before their expensive work)."""
    if keep is not None and keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")


def _write_manifest(folder: Path, scheme: Scheme, manifest: dict[str, Any], version: int) -> None:
    manifest[scheme.version_key] = version
    (folder / scheme.manifest).write_text(scheme.dumps(manifest) + "\n")
    fsync(folder / scheme.manifest)


def fsync(path: Path) -> None:
    """Flushes a written file to disk (before a rename makes it visible)."""
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def _claim_next_version(folder: Path, temporary: Path, before_rename: Callable[[int], None]) -> int:
    """Renames ``temporary`` to the next free ``folder/v<N>``, retrying on a race; returns ``N``.

    ``before_rename`` is called with ``N`` before each attempt (it writes the manifest).
    """
    for _ in range(CLAIM_ATTEMPTS):
        version = max(versions_in(folder), default=0) + 1
        before_rename(version)
        try:
            os.rename(temporary, folder / f"v{version}")
            return version
        except OSError:
            if not (folder / f"v{version}").exists():
                raise
    raise RuntimeError(f"could not claim a version number in {folder}")


def write_atomically(path: Path, text: str) -> None:
    """Replaces ``path`` with ``text`` in one step (hidden temporary, fsync, os.replace)."""
    temporary = path.with_name(f"{TEMPORARY}{path.name}-{uuid.uuid4().hex}")
    with open(temporary, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


@contextlib.contextmanager
def _locked(root: Path, lock: str | None) -> Iterator[None]:
    """An exclusive ``flock`` on ``<root>/<lock>`` (pointer moves and pruning); nothing if None."""
    if lock is None:
        yield
        return
    with open(root / lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def advance_pointer(pointer: Path, version: int) -> None:
    """Points ``pointer`` at ``v<version>`` unless it already names a newer version."""
    try:
        current: int | None = read_pointer(pointer)
    except (FileNotFoundError, ValueError):
        current = None
    if current is None or version > current:
        write_atomically(pointer, f"v{version}\n")


def prune(root: Path, scheme: Scheme, keep: int | None) -> None:
    """Deletes versions older than the newest ``keep`` (never the pointer's; None: none), and left-overs."""
    if keep is not None:
        existing = versions_in(root)
        kept = set(existing[-keep:])
        with contextlib.suppress(FileNotFoundError, ValueError):
            kept.add(read_pointer(root / scheme.pointer))
        for version in existing:
            if version not in kept:
                trash = root / f"{TRASH}v{version}-{uuid.uuid4().hex}"
                os.rename(root / f"v{version}", trash)
                shutil.rmtree(trash, ignore_errors=True)
    _remove_leftovers(root)


def _remove_leftovers(root: Path) -> None:
    """Removes half-deleted versions and temporaries older than STALE_TEMPORARY_SECONDS."""
    for path in root.iterdir():
        if path.name.startswith(TRASH) or (path.name.startswith(TEMPORARY)
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


__all__ = ["STALE_TEMPORARY_SECONDS", "VERSION_NAME", "Scheme", "advance_pointer", "check_keep", "fsync",
           "local_folder", "prune", "publish", "read_pointer", "versions_in", "write_atomically"]
