"""Training input: the live Parquet files of one pinned Delta version -> Petastorm -> tf.data.

The driver pins a version and lists its live files (``adrank.storage.delta.pin_version`` and
``adrank.storage.delta.live_files``; never the table's folder, which also holds the files of
older versions) and hands ``(files, data_version)`` to every rank. This module reads
those files only; it imports neither pyspark nor the Delta log.

Per rank::

    make_batch_reader(files, cur_shard, shard_count)   row groups of this rank's shard
    -> make_petastorm_dataset -> unbatch                 one row at a time
    -> filter(kind) -> map(decode PNG, AUTOTUNE)         uint8 [S, S, 3]
    -> batch(drop_remainder=True) -> prefetch

Sharding and empty shards. Petastorm gives row group ``i`` (files in the order given,
row groups in file order) to shard ``i mod shard_count``; :func:`plan_shards`
replicates that from the Parquet footers alone. With fewer non-empty row groups than
ranks some shards would be empty, and a rank reading an empty shard either stops at once
(its peers then wait for it in their next collective) or, repeating, never yields
(it hangs). The policy (:func:`plan_shards`), computed from the same footers on every
rank, so identical everywhere without communication:

* the files are split into ``k`` shards, ``k`` the largest number ``<= size`` for
  which every shard has rows (``k = size`` whenever there are enough row groups);
* rank ``r`` reads shard ``r mod k``: when ``k < size``, ranks ``r`` and ``r + k`` read
  the same rows (in different orders: the shuffle seed includes the rank);
* a file set without any row raises :class:`EmptyInputError` on every rank, before any
  reader starts (and so before any collective).

Every rank must run the same number of steps: with ``num_epochs=None`` (repeat) the
caller runs a fixed count; with a finite ``num_epochs`` the batched datasets are cut to
:meth:`ShardPlan.steps` batches, the number the smallest shard can fill, the same on
every rank.

The training curve's held-out sample (:func:`sample_rows`) follows the same plan, read
once, in file order: rank ``r < k`` takes the first :func:`sample_quota` rows of shard
``r``, a rank ``r >= k`` none (it would repeat rank ``r mod k``'s rows).

Pair datasets yield homogeneous batches: ``"detail"`` batches carry ``context_image``,
``"search"`` batches ``query`` (what :class:`adrank.train.ranks.models.PairwiseModel`
expects). The files given must hold one kind only (list them with the pairs table's
``kind_part`` partition filter); the footers' ``kind`` statistics are checked, because
a shard whose rows all fail the kind filter would never yield.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from urllib.parse import urlparse

import pyarrow.parquet as pq
import tensorflow as tf

DETAIL = "detail"
SEARCH = "search"
PAIR_KINDS = (DETAIL, SEARCH)
PAIR_COLUMNS = {
    DETAIL: ("kind", "context_image", "pos_image", "neg_image"),
    SEARCH: ("kind", "query", "pos_image", "neg_image"),
}
IMAGE_COLUMNS = ("context_image", "pos_image", "neg_image")
EXAMPLE_COLUMNS = ("sparse_ids", "num_sparse_ids", "label")
JOINT_COLUMNS = ("sparse_ids", "num_sparse_ids", "label", "page", "x", "x_present", "y", "y_present")
JOINT_IMAGE_COLUMNS = ("ad_image", "context_image", "query")  # read only when the towers are fine-tuned


class EmptyInputError(ValueError):
    """The file set has no rows to train on (raised identically on every rank)."""


# --------------------------------------------------------------------------------
# Files, footers and shards
# --------------------------------------------------------------------------------


def as_url(path_or_url: str) -> str:
    """A URL Petastorm accepts: local paths become ``file:///...``; URLs are kept."""
    if "://" in path_or_url:
        return path_or_url
    if path_or_url.startswith("file:"):
        return "file:///" + path_or_url.removeprefix("file:").lstrip("/")
    return "file://" + path_or_url


@functools.lru_cache(maxsize=4096)
def _footer(url: str) -> pq.FileMetaData:
    """The Parquet footer of one file (no data pages are read).

    Cached by URL: a Delta data file is never rewritten in place (a change writes a new
    file under a new name), so a URL's footer cannot go stale.
    """
    import pyarrow.fs as pafs

    parsed = urlparse(url)
    if parsed.scheme == "file":
        return pq.read_metadata(parsed.path)
    filesystem, path = pafs.FileSystem.from_uri(url)
    with filesystem.open_input_file(path) as handle:
        return pq.read_metadata(handle)


def row_group_rows(files: Sequence[str]) -> list[int]:
    """Rows of every row group, in the order Petastorm enumerates them for ``files``."""
    return [footer.row_group(i).num_rows for footer in map(_footer, map(as_url, files))
            for i in range(footer.num_row_groups)]


@dataclass(frozen=True)
class ShardPlan:
    """How ``size`` ranks split a file set (see the module docstring).

    Attributes:
        size: Number of ranks.
        shard_count: ``k``, the shards the files are split into (``<= size``).
        shard_rows: Rows of each of the ``k`` shards.
    """

    size: int
    shard_count: int
    shard_rows: tuple[int, ...]

    def shard_of(self, rank: int) -> int:
        """The shard rank ``rank`` reads."""
        if not 0 <= rank < self.size:
            raise ValueError(f"rank must be in 0..{self.size - 1}, got {rank}")
        return rank % self.shard_count

    def steps(self, batch_size: int, num_epochs: int = 1) -> int:
        """Batches every rank can fill in ``num_epochs`` epochs (the smallest shard's)."""
        return num_epochs * min(self.shard_rows) // batch_size


def plan_shards(files: Sequence[str], size: int) -> ShardPlan:
    """The shard plan for ``size`` ranks: the largest ``k <= size`` without an empty shard.

    Raises:
        EmptyInputError: The files hold no rows.
    """
    rows = row_group_rows(files)
    if sum(rows) == 0:
        raise EmptyInputError(f"the {len(files)} input files hold no rows")
    for shard_count in range(min(size, len(rows)), 0, -1):
        counts = [sum(rows[i::shard_count]) for i in range(shard_count)]
        if min(counts) > 0:
            return ShardPlan(size, shard_count, tuple(counts))
    raise AssertionError("unreachable: one shard holding every row is never empty")


def check_single_kind(files: Sequence[str], kind: str) -> None:
    """Checks from the footers' ``kind`` statistics that every row has ``kind``.

    Raises:
        ValueError: A row group may hold another kind (or has no statistics).
    """
    for url in map(as_url, files):
        footer = _footer(url)
        column = footer.schema.names.index("kind")
        for i in range(footer.num_row_groups):
            group = footer.row_group(i)
            if group.num_rows == 0:
                continue
            stats = group.column(column).statistics
            if stats is None or not stats.has_min_max or not stats.min == stats.max == kind:
                raise ValueError(
                    f"{url} row group {i} may hold rows of another kind than {kind!r}: pass the "
                    f"files of one kind (live_files(..., partition={{'kind_part': {kind!r}}}))")


# --------------------------------------------------------------------------------
# Readers and datasets
# --------------------------------------------------------------------------------


@contextlib.contextmanager
def shard_rows(
    files: Sequence[str],
    rank: int,
    size: int,
    columns: Sequence[str],
    *,
    num_epochs: int | None = 1,
    shuffle: bool = True,
    seed: int = 0,
    workers_count: int = 1,
) -> Iterator[tf.data.Dataset]:
    """Rows (one dict per row) of rank ``rank``'s shard, following :func:`plan_shards`.

    The Petastorm reader runs while the context is open and is stopped on exit.

    Args:
        files: Live data files of the pinned version (paths or URLs).
        rank: This rank.
        size: Number of ranks.
        columns: Columns to read.
        num_epochs: Passes over the shard; None repeats forever.
        shuffle: Shuffle the order of row groups (per epoch).
        seed: Shuffle seed, offset by ``rank``; the split itself does not depend on it.
        workers_count: Petastorm reader threads.

    Yields:
        A ``tf.data.Dataset`` of ``{column: tensor}``.
    """
    from petastorm import make_batch_reader
    from petastorm.tf_utils import make_petastorm_dataset

    urls = [as_url(f) for f in files]
    plan = plan_shards(urls, size)
    reader = make_batch_reader(
        urls, schema_fields=list(columns), reader_pool_type="thread", workers_count=workers_count,
        num_epochs=num_epochs, shuffle_row_groups=shuffle, seed=seed + rank,
        cur_shard=plan.shard_of(rank), shard_count=plan.shard_count)
    with reader:
        batches = make_petastorm_dataset(reader)
        yield batches.unbatch().map(lambda row: {name: getattr(row, name) for name in columns})


@contextlib.contextmanager
def pair_dataset(
    files: Sequence[str],
    rank: int,
    size: int,
    batch_size: int,
    image_size: int,
    kind: str,
    *,
    num_epochs: int | None = None,
    shuffle: bool = True,
    seed: int = 0,
    workers_count: int = 1,
    decode_threads: int | None = None,
) -> Iterator[tf.data.Dataset]:
    """Stage-1 batches of one kind for :class:`~adrank.train.ranks.models.PairwiseModel`.

    Args:
        files: Live files of the pairs table holding ``kind`` rows only.
        rank: This rank.
        size: Number of ranks.
        batch_size: Rows per batch (the last partial batch is dropped).
        image_size: Side S of the stored square images.
        kind: ``"detail"`` or ``"search"``.
        num_epochs: None repeats forever (run a fixed number of steps); a number cuts
            the dataset to ``plan_shards(files, size).steps(batch_size, num_epochs)``
            batches on every rank.
        shuffle: Shuffle row groups per epoch.
        seed: Shuffle seed (offset by rank).
        workers_count: Petastorm reader threads.
        decode_threads: Size of tf.data's thread pool for PNG decoding (None: TF's
            default, one per core).

    Yields:
        Batches ``{"context_image" | "query", "pos_image", "neg_image"}``: images uint8
        ``[B, S, S, 3]``, queries tf.string ``[B]``.
    """
    if kind not in PAIR_KINDS:
        raise ValueError(f"kind must be one of {PAIR_KINDS}, got {kind!r}")
    check_single_kind(files, kind)
    columns = PAIR_COLUMNS[kind]
    with shard_rows(files, rank, size, columns, num_epochs=num_epochs, shuffle=shuffle, seed=seed,
                    workers_count=workers_count) as rows:
        rows = rows.filter(lambda row: tf.equal(row["kind"], kind))
        decoded = rows.map(lambda row: decode_pair(row, image_size), num_parallel_calls=tf.data.AUTOTUNE)
        yield _batched(decoded, batch_size, _steps(files, size, batch_size, num_epochs), decode_threads)


def decode_pair(row: dict[str, tf.Tensor], image_size: int) -> dict[str, tf.Tensor]:
    """Decodes the PNG columns of one pair row to uint8 ``[S, S, 3]``; drops ``kind``."""
    out = {}
    for name, value in row.items():
        if name in IMAGE_COLUMNS:
            out[name] = tf.ensure_shape(tf.io.decode_png(value, channels=3), (image_size, image_size, 3))
        elif name != "kind":
            out[name] = value
    return out


@contextlib.contextmanager
def example_dataset(
    files: Sequence[str],
    rank: int,
    size: int,
    batch_size: int,
    max_sparse_ids: int,
    *,
    num_epochs: int | None = None,
    shuffle: bool = True,
    seed: int = 0,
    workers_count: int = 1,
) -> Iterator[tf.data.Dataset]:
    """LR batches from ``training_examples`` files for :class:`~adrank.train.ranks.models.LinearModel`.

    Args:
        files: Live files of the pinned ``training_examples`` version.
        rank: This rank.
        size: Number of ranks.
        batch_size: Rows per batch (the last partial batch is dropped).
        max_sparse_ids: K, the padded width of ``sparse_ids``.
        num_epochs: As in :func:`pair_dataset`.
        shuffle: Shuffle row groups per epoch.
        seed: Shuffle seed (offset by rank).
        workers_count: Petastorm reader threads.

    Yields:
        Batches ``{"sparse_ids": int64 [B, K], "num_sparse_ids": int32 [B],
        "label": float32 [B]}``.
    """
    with shard_rows(files, rank, size, EXAMPLE_COLUMNS, num_epochs=num_epochs, shuffle=shuffle,
                    seed=seed, workers_count=workers_count) as rows:
        typed = rows.map(lambda row: typed_example(row, max_sparse_ids))
        yield _batched(typed, batch_size, _steps(files, size, batch_size, num_epochs), None)


def typed_example(row: dict[str, tf.Tensor], max_sparse_ids: int) -> dict[str, tf.Tensor]:
    """One ``training_examples`` row as the LR takes it (ids int64 ``[K]``, label float32)."""
    return {"sparse_ids": tf.ensure_shape(tf.cast(row["sparse_ids"], tf.int64), (max_sparse_ids,)),
            "num_sparse_ids": tf.cast(row["num_sparse_ids"], tf.int32),
            "label": tf.cast(row["label"], tf.float32)}


@contextlib.contextmanager
def joint_dataset(
    files: Sequence[str],
    rank: int,
    size: int,
    batch_size: int,
    max_sparse_ids: int,
    embedding_dim: int,
    *,
    image_size: int | None = None,
    num_epochs: int | None = None,
    shuffle: bool = True,
    seed: int = 0,
    workers_count: int = 1,
) -> Iterator[tf.data.Dataset]:
    """Stage-3 batches from the ``joint_examples_train`` files for ``JointModel``.

    Args:
        files: Live files of the pinned ``joint_examples_train`` version.
        rank: This rank.
        size: Number of ranks.
        batch_size: Rows per batch (the last partial batch is dropped).
        max_sparse_ids: K, the padded width of ``sparse_ids``.
        embedding_dim: D, the width of ``x`` and ``y``.
        image_size: When given (fine-tuning the towers), also the decoded ``ad_image`` /
            ``context_image`` (uint8 ``[S, S, 3]``) and ``query``.
        num_epochs: As in :func:`pair_dataset`.
        shuffle: Shuffle row groups per epoch.
        seed: Shuffle seed (offset by rank).
        workers_count: Petastorm reader threads.

    Yields:
        Batches of the LR inputs, ``label`` float32, ``page`` int32, ``x`` / ``y``
        float32 ``[B, D]``, ``x_present`` / ``y_present`` float32 (and the images).
    """
    columns = joint_columns(image_size)
    with shard_rows(files, rank, size, columns, num_epochs=num_epochs, shuffle=shuffle,
                    seed=seed, workers_count=workers_count) as rows:
        typed = rows.map(lambda row: typed_joint_row(row, max_sparse_ids, embedding_dim, image_size),
                         num_parallel_calls=tf.data.AUTOTUNE)
        yield _batched(typed, batch_size, _steps(files, size, batch_size, num_epochs), None)


def joint_columns(image_size: int | None) -> tuple[str, ...]:
    """The joint examples' columns a rank reads (the images too when the towers are fine-tuned)."""
    return JOINT_COLUMNS + (JOINT_IMAGE_COLUMNS if image_size is not None else ())


def typed_joint_row(row: dict[str, tf.Tensor], max_sparse_ids: int, embedding_dim: int,
                    image_size: int | None) -> dict[str, tf.Tensor]:
    """One joint examples row as ``JointModel`` takes it (images decoded when ``image_size`` is given)."""
    out = {
        "sparse_ids": tf.ensure_shape(tf.cast(row["sparse_ids"], tf.int64), (max_sparse_ids,)),
        "num_sparse_ids": tf.cast(row["num_sparse_ids"], tf.int32),
        "label": tf.cast(row["label"], tf.float32), "page": tf.cast(row["page"], tf.int32),
        "x": tf.ensure_shape(tf.cast(row["x"], tf.float32), (embedding_dim,)),
        "y": tf.ensure_shape(tf.cast(row["y"], tf.float32), (embedding_dim,)),
        "x_present": tf.cast(row["x_present"], tf.float32), "y_present": tf.cast(row["y_present"], tf.float32),
    }
    if image_size is not None:
        for name in ("ad_image", "context_image"):
            image = tf.io.decode_image(row[name], channels=3, expand_animations=False)
            out[name] = tf.ensure_shape(image, (image_size, image_size, 3))
        out["query"] = row["query"]
    return out


# --------------------------------------------------------------------------------
# A small fixed held-out sample (the training curve's held-out metric)
# --------------------------------------------------------------------------------


def sample_quota(plan: ShardPlan, rank: int, limit: int) -> int:
    """Rows rank ``rank`` contributes to a held-out sample of at most ``limit`` rows.

    The ``k`` shards share the limit evenly (the first ``limit mod k`` one row more), each
    capped at its rows; a rank ``r >= k``, which reads the same shard as rank ``r mod k``,
    contributes none, so no row is counted twice.
    """
    if rank >= plan.shard_count or limit <= 0:
        return 0
    share = limit // plan.shard_count + (1 if rank < limit % plan.shard_count else 0)
    return min(share, plan.shard_rows[rank])


def sample_rows(files: Sequence[str], rank: int, size: int, columns: Sequence[str],
                limit: int) -> dict[str, tf.Tensor] | None:
    """This rank's part of a fixed held-out sample: the first :func:`sample_quota` rows of its
    shard, in file order (no shuffle), read once; None when it contributes none.

    Over ranks ``0..size-1`` the parts are disjoint and hold ``min(limit, rows)`` rows at most.
    """
    if not files:
        return None
    quota = sample_quota(plan_shards([as_url(f) for f in files], size), rank, limit)
    if quota == 0:
        return None
    with shard_rows(files, rank, size, columns, num_epochs=1, shuffle=False) as rows:
        for batch in rows.batch(quota).take(1):
            return dict(batch)
    return None


def _steps(files: Sequence[str], size: int, batch_size: int, num_epochs: int | None) -> int | None:
    """Batches every rank yields: None (unbounded) when repeating."""
    if num_epochs is None:
        return None
    return plan_shards([as_url(f) for f in files], size).steps(batch_size, num_epochs)


def _batched(rows: tf.data.Dataset, batch_size: int, steps: int | None,
             threads: int | None) -> tf.data.Dataset:
    """Batches (dropping the remainder), cuts to ``steps`` if given, prefetches."""
    batches = rows.batch(batch_size, drop_remainder=True)
    if steps is not None:
        batches = batches.take(steps)
    if threads is not None:
        options = tf.data.Options()
        options.threading.private_threadpool_size = threads
        batches = batches.with_options(options)
    return batches.prefetch(tf.data.AUTOTUNE)
