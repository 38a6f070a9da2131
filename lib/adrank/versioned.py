"""Versioned folders on a local file system: ``v1/``, ``v2/``, ... and a pointer file.

The model registry (:mod:`adrank.train.registry`) and the serving snapshots
(:mod:`adrank.embed.serving`) publish the same way: write a version completely into
a hidden temporary folder beside the versions, rename it to ``v<N>`` (``N`` = the
highest existing version + 1; a rename onto an existing folder fails, so racing
publishers get different numbers), then replace a small pointer file (temporary file
+ ``os.replace``). A reader that follows the pointer never sees a half-written
version. Hidden entries (``.tmp-*`` and the like) are never versions.

Local paths only (``/path`` or ``file:///path``): the rename and pointer steps need
a POSIX file system. Object stores have no atomic rename; there a version would be
claimed with a create-if-absent write and the pointer written last.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable
from pathlib import Path

VERSION_NAME = re.compile(r"^v(\d+)$")
CLAIM_ATTEMPTS = 100


def local_folder(root: str | os.PathLike, what: str) -> Path:
    """``root`` as a local Path (``file://`` stripped); a one-line error for a URI.

    Args:
        root: ``/path`` or ``file:///path``.
        what: What lives there, for the error (e.g. ``"the model registry"``).
    """
    text = os.fspath(root)
    if text.startswith("file://"):
        return Path(text[len("file://"):])
    if "://" in text:
        raise ValueError(f"{what}: only local paths are supported, got {text!r} (see adrank.versioned)")
    return Path(text)


def versions_in(folder: Path) -> list[int]:
    """The complete versions in ``folder``, ascending (``[]`` when it does not exist)."""
    if not folder.is_dir():
        return []
    found = (VERSION_NAME.match(p.name) for p in folder.iterdir() if p.is_dir())
    return sorted(int(m.group(1)) for m in found if m)


def claim_next_version(folder: Path, temporary: Path, before_rename: Callable[[int], None]) -> int:
    """Renames ``temporary`` to the next free ``folder/v<N>``, retrying on a race.

    Args:
        folder: Where the versions are.
        temporary: The complete new version (a folder beside them).
        before_rename: Called with ``N`` before each attempt (e.g. to write the
            version number into the temporary folder's metadata).

    Returns:
        ``N``.
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
    temporary = path.with_name(f".tmp-{path.name}-{uuid.uuid4().hex}")
    with open(temporary, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


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


__all__ = ["VERSION_NAME", "claim_next_version", "local_folder", "read_pointer", "versions_in",
           "write_atomically"]
