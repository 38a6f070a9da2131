"""FTRL whose sparse update is gather -> vectorised math -> scatter (O(touched rows)).

``tf.keras.optimizers.legacy.Ftrl`` applies ``IndexedSlices`` with TensorFlow's
``ResourceSparseApplyFtrl`` kernel, which walks the touched rows one at a time with a
handful of small Eigen expressions per row: about 300 ns per 8-float row on one
core, most of it per-row overhead rather than arithmetic. :class:`GatherScatterFtrl`
keeps the legacy optimizer (its slots, hyperparameters, checkpoints and dense apply
are unchanged) and replaces only the sparse apply: it gathers the touched rows of
the variable and both slots, computes the FTRL-proximal update for all rows at once,
and scatters the three results back. Same arithmetic as the kernel (TensorFlow's
``training_ops.cc`` FTRL functor, ``multiply_linear_by_lr=False``); on 160K touched
rows of a 4M x 8 table it is about 1.5x faster (bench/sparse_dense.py,
``ftrl_apply``), and its cost still depends only on the touched rows.

The indices reaching ``_resource_apply_sparse`` are unique: the legacy base class
sums repeated indices first (``_resource_apply_sparse_duplicate_indices``), which a
scatter needs. A caller that has already de-duplicated (the owner-sharded path of
:mod:`adrank.train.ranks.sparse.step`) traces its apply inside
:meth:`GatherScatterFtrl.indices_are_distinct` to skip that second ``tf.unique``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import tensorflow as tf

# Keras' per-(device, dtype) precomputed coefficients.
ApplyState = dict[tuple[str, tf.dtypes.DType], dict[str, tf.Tensor]]


class GatherScatterFtrl(tf.keras.optimizers.legacy.Ftrl):
    """Legacy Keras FTRL with a vectorised gather/scatter sparse update.

    Takes the same arguments as ``tf.keras.optimizers.legacy.Ftrl`` and gives the
    same results (to float rounding) on dense and sparse gradients.
    """

    _distinct_indices = False

    @contextlib.contextmanager
    def indices_are_distinct(self) -> Iterator[None]:
        """Within the block, sparse gradients are applied without summing repeats.

        A trace-time promise: only for ``apply_gradients`` calls (traced or eager)
        whose ``IndexedSlices`` have distinct indices; a repeat would then keep one of
        its rows' updates instead of their sum.
        """
        self._distinct_indices = True
        try:
            yield
        finally:
            self._distinct_indices = False

    def _resource_apply_sparse_duplicate_indices(
        self, grad: tf.Tensor, handle: tf.Variable, indices: tf.Tensor, **kwargs: ApplyState | None
    ) -> tf.Operation:
        if self._distinct_indices:
            return self._resource_apply_sparse(grad, handle, indices, **kwargs)
        return super()._resource_apply_sparse_duplicate_indices(grad, handle, indices, **kwargs)

    def _resource_apply_sparse(
        self, grad: tf.Tensor, var: tf.Variable, indices: tf.Tensor, apply_state: ApplyState | None = None
    ) -> tf.Operation:
        coefficients = (apply_state or {}).get((var.device, var.dtype.base_dtype)) or \
            self._fallback_apply_state(var.device, var.dtype.base_dtype)
        accumulator = self.get_slot(var, "accumulator")
        linear = self.get_slot(var, "linear")
        new_var, new_accumulator, new_linear = ftrl_rows(
            grad=grad,
            var=tf.gather(var, indices),
            accumulator=tf.gather(accumulator, indices),
            linear=tf.gather(linear, indices),
            lr=coefficients["lr_t"],
            l1=coefficients["l1_regularization_strength"],
            l2=coefficients["l2_regularization_strength"]
            + coefficients["beta"] / (2.0 * coefficients["lr_t"]),
            l2_shrinkage=coefficients["l2_shrinkage_regularization_strength"],
            lr_power=coefficients["learning_rate_power"],
        )
        return tf.group(
            accumulator.scatter_update(tf.IndexedSlices(new_accumulator, indices)),
            linear.scatter_update(tf.IndexedSlices(new_linear, indices)),
            var.scatter_update(tf.IndexedSlices(new_var, indices)),
        )


def ftrl_rows(
    grad: tf.Tensor,
    var: tf.Tensor,
    accumulator: tf.Tensor,
    linear: tf.Tensor,
    lr: tf.Tensor,
    l1: tf.Tensor,
    l2: tf.Tensor,
    l2_shrinkage: tf.Tensor,
    lr_power: tf.Tensor,
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """One FTRL-proximal step on gathered rows (TensorFlow's FTRL kernel arithmetic).

    Args:
        grad: Gradient rows.
        var: The variable's rows.
        accumulator: The "accumulator" slot's rows (sum of squared gradients).
        linear: The "linear" slot's rows.
        lr: Learning rate.
        l1: L1 strength.
        l2: L2 strength (beta already folded in).
        l2_shrinkage: L2 shrinkage strength (0 for plain FTRL).
        lr_power: Learning-rate power (-0.5 in the usual FTRL).

    Returns:
        (new var rows, new accumulator rows, new linear rows).
    """
    shrunk_grad = grad + 2.0 * l2_shrinkage * var
    new_accumulator = accumulator + grad * grad
    new_power = _power(new_accumulator, lr_power)
    sigma = (new_power - _power(accumulator, lr_power)) / lr
    new_linear = linear + shrunk_grad - sigma * var
    quadratic = new_power / lr + 2.0 * l2
    proximal = (tf.sign(new_linear) * l1 - new_linear) / quadratic
    new_var = tf.where(tf.abs(new_linear) > l1, proximal, tf.zeros_like(proximal))
    return new_var, new_accumulator, new_linear


def _power(accumulator: tf.Tensor, lr_power: tf.Tensor) -> tf.Tensor:
    """``accumulator ** -lr_power``, as a square root in the usual ``lr_power == -0.5``."""
    return tf.cond(tf.equal(lr_power, -0.5),
                   lambda: tf.sqrt(accumulator),
                   lambda: tf.pow(accumulator, -lr_power))


__all__ = ["GatherScatterFtrl", "ftrl_rows"]
