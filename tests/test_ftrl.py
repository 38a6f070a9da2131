"""GatherScatterFtrl equals TensorFlow's legacy FTRL on sparse and dense gradients."""

from __future__ import annotations

import numpy as np
import pytest

ROWS, WIDTH = 40, 3
SETTINGS = {
    "plain": {},
    "l1_l2_beta": {"l1_regularization_strength": 0.02, "l2_regularization_strength": 0.03,
                   "beta": 0.1},
    "shrinkage_power": {"l2_shrinkage_regularization_strength": 0.05,
                        "learning_rate_power": -0.7, "l1_regularization_strength": 0.001,
                        "initial_accumulator_value": 0.3},
}


def initial_table() -> np.ndarray:
    """The table both optimizers start from."""
    return np.random.default_rng(5).normal(0, 0.2, (ROWS, WIDTH)).astype(np.float32)


def run_both(settings: dict, sparse: bool, steps: int = 4) -> tuple[list, list]:
    """The same gradients through both optimizers: (legacy state, gather-scatter state)."""
    import tensorflow as tf

    from adrank.train.ranks.ftrl import GatherScatterFtrl

    initial = initial_table()
    states = []
    for optimizer_class in (tf.keras.optimizers.legacy.Ftrl, GatherScatterFtrl):
        table = tf.Variable(initial)
        optimizer = optimizer_class(0.1, **settings)
        grads = np.random.default_rng(9)
        for _ in range(steps):
            indices = grads.integers(0, ROWS, 25).astype(np.int32)  # repeats included
            values = grads.normal(size=(25, WIDTH)).astype(np.float32)
            gradient = tf.IndexedSlices(tf.constant(values), tf.constant(indices),
                                        tf.constant([ROWS, WIDTH]))
            if not sparse:
                gradient = tf.convert_to_tensor(gradient)
            optimizer.apply_gradients([(gradient, table)])
        states.append([table.numpy(), optimizer.get_slot(table, "accumulator").numpy(),
                       optimizer.get_slot(table, "linear").numpy()])
    return states[0], states[1]


@pytest.mark.parametrize("settings", SETTINGS.values(), ids=SETTINGS.keys())
@pytest.mark.parametrize("sparse", [True, False], ids=["sparse", "dense"])
def test_gather_scatter_ftrl_matches_the_legacy_kernel(settings, sparse):
    legacy, gather_scatter = run_both(settings, sparse)
    for expected, actual in zip(legacy, gather_scatter):
        np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(legacy[0], initial_table())  # the steps did move the table


def test_untouched_rows_and_their_slots_stay_put():
    import tensorflow as tf

    from adrank.train.ranks.ftrl import GatherScatterFtrl

    table = tf.Variable(tf.ones((ROWS, WIDTH)))
    optimizer = GatherScatterFtrl(0.1)
    gradient = tf.IndexedSlices(tf.ones((2, WIDTH)), tf.constant([3, 7]), tf.constant([ROWS, WIDTH]))
    optimizer.apply_gradients([(gradient, table)])
    moved = np.flatnonzero((table.numpy() != 1.0).any(axis=1))
    assert moved.tolist() == [3, 7]
    accumulator = optimizer.get_slot(table, "accumulator").numpy()
    assert np.flatnonzero((accumulator != 0.1).any(axis=1)).tolist() == [3, 7]


def test_distinct_indices_promise_skips_the_sum_and_still_matches():
    import tensorflow as tf

    from adrank.train.ranks.ftrl import GatherScatterFtrl

    gradient = tf.IndexedSlices(tf.constant([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]), tf.constant([5, 9]),
                                tf.constant([ROWS, WIDTH]))
    tables = [tf.Variable(tf.zeros((ROWS, WIDTH))) for _ in range(2)]
    plain, promised = GatherScatterFtrl(0.1), GatherScatterFtrl(0.1)
    plain.apply_gradients([(gradient, tables[0])])
    with promised.indices_are_distinct():
        promised.apply_gradients([(gradient, tables[1])])
    np.testing.assert_allclose(tables[1].numpy(), tables[0].numpy(), rtol=1e-6)
    repeated = tf.IndexedSlices(tf.ones((2, WIDTH)), tf.constant([3, 3]), tf.constant([ROWS, WIDTH]))
    summed = tf.Variable(tf.zeros((ROWS, WIDTH)))
    plain.apply_gradients([(repeated, summed)])
    assert promised._distinct_indices is False  # the promise ended with the block
    once = tf.Variable(tf.zeros((ROWS, WIDTH)))
    GatherScatterFtrl(0.1).apply_gradients([(tf.IndexedSlices(2 * tf.ones((1, WIDTH)), tf.constant([3]),
                                                              tf.constant([ROWS, WIDTH])), once)])
    np.testing.assert_allclose(summed.numpy(), once.numpy(), rtol=1e-6)  # repeats summed by default
