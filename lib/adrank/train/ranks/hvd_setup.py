"""Horovod start-up for a TF2 rank: thread caps, ``hvd.init()``, the local GPU, rank-0 logs.

Contract: :func:`init_horovod` caps TensorFlow's thread pools (two ranks on a small
machine oversubscribe the cores otherwise; must run before TensorFlow's first op), calls
``hvd.init()`` and pins this rank's GPU by ``hvd.local_rank()`` (a no-op on CPU), in that
order. :func:`rank0_logger` gives a logger that only emits on rank 0. The rest of the
Horovod order (scale the learning rate, broadcast after the first step) is in
:func:`adrank.train.ranks.loop.train_stage`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import horovod.tensorflow as hvd
import tensorflow as tf


@dataclass(frozen=True)
class RankInfo:
    """Where this process sits in the Horovod job."""

    rank: int
    size: int
    local_rank: int

    @property
    def is_chief(self) -> bool:
        """Whether this is rank 0, the one that logs and checkpoints."""
        return self.rank == 0


def cap_tf_threads(intra_op_threads: int = 1, inter_op_threads: int = 1) -> bool:
    """Limits TensorFlow's thread pools for this process.

    Args:
        intra_op_threads: Threads one op may use (e.g. a large matmul).
        inter_op_threads: Ops that may run at the same time.

    Returns:
        True if the caps were set; False if TensorFlow had already started (the
        caps can then no longer change, and the existing pools are kept).
    """
    try:
        tf.config.threading.set_intra_op_parallelism_threads(intra_op_threads)
        tf.config.threading.set_inter_op_parallelism_threads(inter_op_threads)
    except RuntimeError:
        return False
    return True


def pin_local_gpu(local_rank: int) -> bool:
    """Makes only this rank's GPU visible to TensorFlow (memory growth on).

    Args:
        local_rank: The rank's index on its host (``hvd.local_rank()``).

    Returns:
        True if a GPU was pinned, False on a machine without GPUs.
    """
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return False
    gpu = gpus[local_rank % len(gpus)]
    tf.config.experimental.set_memory_growth(gpu, True)
    tf.config.set_visible_devices(gpu, "GPU")
    return True


def init_horovod(intra_op_threads: int = 1, inter_op_threads: int = 1) -> RankInfo:
    """Caps threads, initialises Horovod and pins the local GPU, in that order.

    Args:
        intra_op_threads: TensorFlow intra-op threads for this rank.
        inter_op_threads: TensorFlow inter-op threads for this rank.

    Returns:
        This process's rank, the job size and the local rank.
    """
    cap_tf_threads(intra_op_threads, inter_op_threads)
    hvd.init()
    pin_local_gpu(hvd.local_rank())
    return RankInfo(rank=hvd.rank(), size=hvd.size(), local_rank=hvd.local_rank())


class _ChiefOnly(logging.Filter):
    """Drops log records on every rank but 0."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not hvd.is_initialized() or hvd.rank() == 0


def rank0_logger(name: str) -> logging.Logger:
    """A logger that only emits on rank 0 (all ranks before ``hvd.init()``).

    Args:
        name: The logger name, usually ``__name__``.

    Returns:
        The named logger with the rank-0 filter attached once.
    """
    logger = logging.getLogger(name)
    if not any(isinstance(f, _ChiefOnly) for f in logger.filters):
        logger.addFilter(_ChiefOnly())
    return logger
