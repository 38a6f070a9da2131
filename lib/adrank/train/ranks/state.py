"""A rank's training state: its fingerprint, and the warm start of an incremental run.

Contract: :func:`state_digest` is the SHA-256 of every model variable and every optimizer
variable (RMSProp slots of the dense path, FTRL accumulators of the sparse path,
iteration counts), in the order every rank builds them: two ranks, or a parent run's end
and its child's start, hold the same state bit for bit exactly when their digests are
equal. :func:`restore_warm_start` is rank 0's restore of a registered version's training
state (:attr:`~adrank.train.ranks.settings.RankSettings.warm_start`) into a run whose own
checkpoint folder is empty; the step count starts again at 0. TensorFlow is imported
inside the functions.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import tensorflow as tf


def state_digest(variables: Sequence[tf.Variable]) -> str:
    """SHA-256 (hex) of the variables' shapes, dtypes and bytes, in order."""
    digest = hashlib.sha256()
    for variable in variables:
        value = variable.numpy()
        digest.update(f"{value.dtype.str}{value.shape};".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def restore_warm_start(checkpoint: tf.train.Checkpoint, path: str, stage: str) -> None:
    """Restores ``path`` (weights and optimizer state) into ``checkpoint``'s objects.

    Raises:
        RuntimeError: The saved state does not fit this run's model (one line; the driver
            only warm-starts from a version of the same shape, so this means the code changed).
    """
    try:
        checkpoint.restore(path).assert_existing_objects_matched()
    except (AssertionError, ValueError, OSError) as exc:
        raise RuntimeError(f"the training state {path} does not fit the {stage} model (code changed?); "
                           f"train with train.mode=full ({str(exc).splitlines()[0][:200]})") from exc


__all__ = ["restore_warm_start", "state_digest"]
