"""The training curve's held-out metric, computed on the ranks at every checkpoint.

Contract: :meth:`HoldoutCurve.read` runs once per stage run, on every rank, before the
first step: each rank reads its part of a fixed sample of at most
``train.holdout_curve_rows`` rows of ``settings.holdout_files`` (shared evenly by the
roles that have files), with :func:`adrank.train.ranks.input.sample_rows`: the first rows
of its shard in file order, the parts disjoint over the ranks, kept encoded in memory.
:meth:`HoldoutCurve.evaluate` runs on every rank at every checkpoint, after the batch-norm
statistics are averaged (so it scores the model the checkpoint holds): it scores the
rank's rows with the stage's :class:`~adrank.train.ranks.settings.HoldoutSpec`, allgathers the
two score columns (two collectives, in one order, on every rank, a rank without rows
included) and computes the metric on the whole sample, exactly: stage 1 the pairwise
accuracy of (sim_pos, sim_neg), the LR and the joint model the AUC of (probability,
label), each with its held-out loss. A stage run without held-out files, or with
``train.holdout_curve_rows: 0``, has no curve and says why (:attr:`HoldoutCurve.skipped`);
that is decided from the settings alone, the same on every rank.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from adrank.train.ranks.settings import HoldoutSpec, Models, RankSettings
from adrank.train.ranks.stages import DETAIL, EXAMPLES, JOINT_ROLE, SEARCH

if TYPE_CHECKING:
    import tensorflow as tf

    Decode = Callable[[dict[str, tf.Tensor]], dict[str, tf.Tensor]]

EVAL_BATCH = 256
NO_FILES = "no held-out files were given to the ranks"
DISABLED = "train.holdout_curve_rows is 0"
NO_ROWS = "the held-out files hold no rows"


def role_limits(roles: Sequence[str], limit: int) -> dict[str, int]:
    """``limit`` rows shared evenly by ``roles`` (the first ``limit mod n`` one more)."""
    count = len(roles)
    return {role: limit // count + (1 if i < limit % count else 0) for i, role in enumerate(roles)}


def role_reading(role: str, settings: RankSettings) -> tuple[tuple[str, ...], Decode]:
    """The columns a role's held-out rows are read with and how one row is decoded."""
    from adrank.train.ranks import input as train_input

    features, train = settings.features, settings.train
    if role in (DETAIL, SEARCH):
        return train_input.PAIR_COLUMNS[role], lambda row: train_input.decode_pair(row, features.image_size)
    if role == EXAMPLES:
        return train_input.EXAMPLE_COLUMNS, lambda row: train_input.typed_example(row, features.max_sparse_ids)
    if role == JOINT_ROLE:
        images = features.image_size if train.finetune_cnn else None
        return train_input.joint_columns(images), lambda row: train_input.typed_joint_row(
            row, features.max_sparse_ids, train.embedding_dim, images)
    raise ValueError(f"no held-out reading for role {role!r}")


class HoldoutCurve:
    """One rank's held-out sample and the (step, metric) points evaluated on it."""

    def __init__(self, spec: HoldoutSpec, settings: RankSettings) -> None:
        self.spec, self.settings = spec, settings
        self.roles = [role for role, files in settings.holdout_files.items() if files]
        limit = settings.train.holdout_curve_rows
        self.skipped = NO_FILES if not self.roles else DISABLED if limit <= 0 else ""
        self.limits = role_limits(self.roles, limit) if not self.skipped else {}
        self.samples: dict[str, dict[str, Any]] = {}
        self.rows = 0
        self.points: list[list[Any]] = []
        self.losses: list[list[Any]] = []

    def read(self, rank: int, size: int) -> None:
        """Reads this rank's part of the sample (once; nothing when the curve is skipped)."""
        from adrank.train.ranks.input import EmptyInputError, sample_rows

        empty = []
        for role in self.roles if not self.skipped else []:
            columns, _ = role_reading(role, self.settings)
            try:
                rows = sample_rows(self.settings.holdout_files[role], rank, size, columns, self.limits[role])
            except EmptyInputError:  # decided from the footers: the same on every rank
                empty.append(role)
                continue
            if rows is not None:
                self.samples[role] = rows
        if self.roles and len(empty) == len(self.roles):
            self.skipped = NO_ROWS

    def evaluate(self, models: Models, step: int) -> dict[str, float] | None:
        """Every rank: the metric and loss of the whole sample at ``step`` (a collective); None if skipped."""
        import horovod.tensorflow as hvd
        import tensorflow as tf

        if self.skipped:
            return None
        firsts, seconds = self._scores(models)
        first = hvd.allgather(firsts, name="adrank_holdout_first")
        second = hvd.allgather(seconds, name="adrank_holdout_second")
        values = self.spec.figures(first.numpy(), second.numpy())
        self.rows = int(tf.size(first))
        metric, loss = _finite(values.get(self.spec.metric)), _finite(values.get(self.spec.loss))
        self.points.append([step, metric])
        self.losses.append([step, loss])
        return {name: value for name, value in ((self.spec.metric, metric), (self.spec.loss, loss))
                if value is not None}

    def _scores(self, models: Models) -> tuple[tf.Tensor, tf.Tensor]:
        """This rank's two score columns (float32 ``[n]`` each; ``[0]`` without rows)."""
        import tensorflow as tf

        score = self.spec.scores(models)
        firsts, seconds = [tf.zeros([0], tf.float32)], [tf.zeros([0], tf.float32)]
        for role, rows in self.samples.items():
            _, decode = role_reading(role, self.settings)
            for batch in tf.data.Dataset.from_tensor_slices(rows).map(decode).batch(EVAL_BATCH):
                first, second = score(batch)
                firsts.append(tf.reshape(tf.cast(first, tf.float32), [-1]))
                seconds.append(tf.reshape(tf.cast(second, tf.float32), [-1]))
        return tf.concat(firsts, 0), tf.concat(seconds, 0)

    def figures(self) -> dict[str, Any]:
        """What the stage's ``training`` figures hold: ``holdout_curve``."""
        if self.skipped:
            return {"metric": self.spec.metric, "skipped": self.skipped}
        return {"metric": self.spec.metric, "loss": self.spec.loss, "rows": self.rows,
                "limit": self.settings.train.holdout_curve_rows, "points": self.points, "losses": self.losses}


def _finite(value: object) -> float | None:
    """A finite float, or None (NaN: one class only in the sample)."""
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None  # type: ignore[arg-type]


__all__ = ["DISABLED", "NO_FILES", "NO_ROWS", "HoldoutCurve", "role_limits", "role_reading"]
