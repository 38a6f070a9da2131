"""What a rank reads: the dataset of each role, the order roles take turns, agreed over ranks.

Contract: a ``dataset_fn(role, rank, size, settings, start_batch)`` returns a
``tf.data.Dataset`` of dict batches (or a context manager yielding one, entered for the
length of training), or ``None`` when the role has no data; by default
(:func:`input_dataset`) the Petastorm files of ``settings.files[role]``. ``start_batch``
is how many batches of that role the checkpointed run already consumed: a seekable
source starts there; the Petastorm reader cannot seek, so after a resume it starts a
fresh pass over its shard (statistically equivalent, not bit-identical). Roles alternate
round-robin (:func:`role_schedule`) among those with data on every rank
(:func:`agreed_roles`, a collective). TensorFlow and Horovod are imported inside.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

from adrank.train.ranks.settings import RankSettings, Stage
from adrank.train.ranks.stages import DETAIL, EXAMPLES, JOINT_ROLE, SEARCH

if TYPE_CHECKING:
    from contextlib import AbstractContextManager
    from typing import TypeAlias

    import tensorflow as tf

    from adrank.train.ranks.hvd_setup import RankInfo

    DatasetSource: TypeAlias = tf.data.Dataset | AbstractContextManager[tf.data.Dataset] | None
    DatasetFn = Callable[[str, int, int, RankSettings, int], DatasetSource]
    Batch = Mapping[str, tf.Tensor]


def input_dataset(role: str, rank: int, size: int, settings: RankSettings,
                  start_batch: int) -> DatasetSource:
    """The default ``dataset_fn``: the Petastorm files of a role, or None without files.

    Returns the context manager of :func:`adrank.train.ranks.input.pair_dataset` /
    :func:`~adrank.train.ranks.input.example_dataset` (endless); the loop enters it, so
    the reader stops when training ends. After a resume the shuffle seed is offset by
    ``start_batch`` so it does not replay the first run's order.
    """
    files = list(settings.files.get(role) or [])
    if not files:
        return None
    from adrank.train.ranks import input as train_input

    train, features = settings.train, settings.features
    seed = settings.seed + start_batch
    if role in (DETAIL, SEARCH):
        return train_input.pair_dataset(files, rank, size, train.pair_batch_size,
                                        features.image_size, role, seed=seed)
    if role == EXAMPLES:
        return train_input.example_dataset(files, rank, size, train.lr_batch_size,
                                           features.max_sparse_ids, seed=seed)
    if role == JOINT_ROLE:
        images = features.image_size if train.finetune_cnn else None
        return train_input.joint_dataset(files, rank, size, train.joint_batch_size, features.max_sparse_ids,
                                         train.embedding_dim, image_size=images, seed=seed)
    raise ValueError(f"no default dataset for role {role!r}")


def role_schedule(roles: Sequence[str], step: int) -> str:
    """The role of global step ``step`` (0-based): roles alternate round-robin."""
    return roles[step % len(roles)]


def batches_consumed(roles: Sequence[str], role: str, steps: int) -> int:
    """How many batches of ``role`` the first ``steps`` steps consumed."""
    return sum(1 for s in range(steps) if role_schedule(roles, s) == role)


def agreed_roles(spec: Stage, settings: RankSettings, dataset_fn: DatasetFn,
                  info: RankInfo, start: int, stack: contextlib.ExitStack) -> dict[str, Iterator[Batch]]:
    """Batch iterators per role, for the roles that have data on every rank.

    All ranks must follow one schedule: a role with data on some ranks only is an
    error on every rank (an allreduce of the presence flags decides, so they agree).
    ``dataset_fn`` may return a ``tf.data.Dataset`` or a context manager yielding one
    (entered on ``stack`` only once the roles are settled, so nothing is opened twice).
    """
    import horovod.tensorflow as hvd
    import tensorflow as tf

    datasets: dict[str, DatasetSource] = {}
    for role in spec.roles:
        consumed = batches_consumed(spec.roles, role, start)
        datasets[role] = dataset_fn(role, info.rank, info.size, settings, consumed)
    present = tf.constant([1 if datasets[r] is not None else 0 for r in spec.roles], tf.int32)
    counts = hvd.allreduce(present, op=hvd.Sum, name="adrank_roles").numpy().tolist()
    partial = [r for r, n in zip(spec.roles, counts) if 0 < n < info.size]
    if partial:
        raise RuntimeError(f"dataset roles {partial} have data on some ranks only")
    have = [r for r, n in zip(spec.roles, counts) if n == info.size]
    if not have:
        raise RuntimeError(f"no data for any of the roles {list(spec.roles)}")
    # The schedule alternates among the roles present: after a resume, their
    # consumption differs from the all-roles guess, so those datasets are remade.
    for role in have:
        consumed = batches_consumed(have, role, start)
        if consumed != batches_consumed(spec.roles, role, start):
            datasets[role] = dataset_fn(role, info.rank, info.size, settings, consumed)
    opened: dict[str, tf.data.Dataset] = {}
    for role in have:
        source = datasets[role]
        opened[role] = stack.enter_context(source) if isinstance(source, contextlib.AbstractContextManager) else source
    return {r: iter(opened[r].repeat().prefetch(1)) for r in have}


def next_batch(iterator: Iterator[Batch], role: str, step: int, rank: int) -> Batch:
    try:
        return next(iterator)
    except StopIteration:
        raise RuntimeError(f"rank {rank}: dataset '{role}' yielded no batch at step {step} "
                           "(an empty shard?)") from None


__all__ = ["agreed_roles", "batches_consumed", "input_dataset", "next_batch", "role_schedule"]
