"""Tests of adrank.train.ranks.sparse: the split dense/sparse gradient paths on real Horovod.

One 2-rank Horovod job (Gloo, CPU, one TF thread per rank) runs every distributed
scenario and returns plain numpy results; the tests below check those results.
Each rank trains on a different batch; the reference is one process training on
the concatenated batch with the same optimizers.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import pytest

hvd_runner = pytest.importorskip("horovod.runner")
pytest.importorskip("horovod.tensorflow")

SIZE = 2
BATCH = 6
DIM = 4
DENSE_LR = 0.01
FTRL_LR = 0.1
TOLERANCE = 1e-5
# Small table: each step touches most rows (the dense path wins); large: few rows.
SMALL_ROWS = 24
LARGE_ROWS = 4096


# --------------------------------------------------------------------------------
# The model, batches and reference (run inside the Horovod ranks and in-process)
# --------------------------------------------------------------------------------


def make_batch(rank: int, step: int) -> dict[str, np.ndarray]:
    """A rank's batch: ids into the small and the large table, and labels."""
    rng = np.random.default_rng(1000 * step + rank)
    return {
        "small_ids": rng.integers(0, SMALL_ROWS, size=(BATCH, 3)).astype(np.int32),
        "large_ids": rng.integers(0, 40, size=(BATCH, 2)).astype(np.int32),  # repeats
        "labels": rng.integers(0, 2, size=(BATCH,)).astype(np.float32),
    }


def concat_batches(batches: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The batches of all ranks as one batch."""
    return {key: np.concatenate([b[key] for b in batches]) for key in batches[0]}


def make_variables(zero_tables: bool, seed: int = 7) -> dict[str, Any]:
    """Dense weights (random) and two tables (random or zero), the same on every rank."""
    import tensorflow as tf

    rng = np.random.default_rng(seed)

    def table(rows: int, width: int) -> tf.Variable:
        init = np.zeros((rows, width)) if zero_tables else rng.normal(0, 0.1, (rows, width))
        return tf.Variable(init.astype(np.float32))

    return {
        "w": tf.Variable(rng.normal(0, 0.5, (DIM, 1)).astype(np.float32)),
        "b": tf.Variable(np.array([0.1], np.float32)),
        "small": table(SMALL_ROWS, DIM),
        "large": table(LARGE_ROWS, 1),
    }


def make_loss_fn(variables: dict[str, Any]):
    """Logistic loss: embedding (small table) through a dense layer, plus LR weights."""
    import tensorflow as tf

    def loss_fn(small_ids, large_ids, labels):
        embedded = tf.reduce_sum(tf.nn.embedding_lookup(variables["small"], small_ids), axis=1)
        lr_part = tf.reduce_sum(tf.gather(variables["large"], large_ids), axis=[1, 2])
        logits = tf.squeeze(embedded @ variables["w"], axis=1) + lr_part + variables["b"]
        return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels, logits))

    return loss_fn


def dense_and_sparse(variables: dict[str, Any]) -> tuple[list[Any], list[Any]]:
    """The two variable lists of the API."""
    return [variables["w"], variables["b"]], [variables["small"], variables["large"]]


def as_numpy(variables: list[Any]) -> list[np.ndarray]:
    """Variable values as numpy arrays."""
    return [v.numpy() for v in variables]


def reference_run(zero_tables: bool, steps: int, size: int, slots: bool = False) -> Any:
    """One process, batch = all ranks' batches; RMSProp (lr x size) and FTRL, no Horovod.

    Returns the variables, or with ``slots`` (variables, FTRL slots of each table).
    """
    import tensorflow as tf

    variables = make_variables(zero_tables)
    dense, sparse = dense_and_sparse(variables)
    loss_fn = make_loss_fn(variables)
    rmsprop = tf.keras.optimizers.legacy.RMSprop(DENSE_LR * size)
    ftrl = tf.keras.optimizers.legacy.Ftrl(FTRL_LR)
    for step in range(steps):
        batch = concat_batches([make_batch(rank, step) for rank in range(size)])
        with tf.GradientTape() as tape:
            loss = loss_fn(batch["small_ids"], batch["large_ids"], batch["labels"])
        grads = tape.gradient(loss, dense + sparse)
        rmsprop.apply_gradients(zip(grads[:2], dense))
        ftrl.apply_gradients(zip(grads[2:], sparse))
    if slots:
        return as_numpy(dense + sparse), ftrl_slots(ftrl, sparse)
    return as_numpy(dense + sparse)


def ftrl_slots(optimizer: Any, tables: list[Any]) -> list[np.ndarray]:
    """The accumulator and linear slot of each table, in that order."""
    return [optimizer.get_slot(t, name).numpy() for t in tables for name in ("accumulator", "linear")]


def distributed_run(mode: str, policy: str, zero_tables: bool, steps: int) -> dict[str, Any]:
    """Trains ``steps`` steps with :func:`make_train_step` on this rank's batches.

    The plan is re-chosen after steps 1 and 2; step 3 runs the non-measuring variant.
    """
    import horovod.tensorflow as hvd

    from adrank.train.ranks.sparse.step import make_train_step

    variables = make_variables(zero_tables)
    dense, sparse = dense_and_sparse(variables)
    step = make_train_step(make_loss_fn(variables), dense, sparse, mode, DENSE_LR, FTRL_LR,
                           path_policy=policy, replan_every=2)
    plans = []
    for i in range(steps):
        plans.append(step.plan)
        batch = make_batch(hvd.rank(), i)
        step(batch["small_ids"], batch["large_ids"], batch["labels"])
    own_slots = ftrl_slots(step.sparse_optimizer, sparse)  # before consolidation
    step.consolidate_sparse_state()
    reference, reference_slots = reference_run(zero_tables, steps, hvd.size(), slots=True)
    return {"values": as_numpy(dense + sparse), "plans": plans, "reference": reference,
            "sharded": step.sharded, "own_slots": own_slots,
            "slots": ftrl_slots(step.sparse_optimizer, sparse), "reference_slots": reference_slots}


def skewed_plan_run() -> dict[str, Any]:
    """Rank 0 touches every row of a table, rank 1 one row: do the ranks agree?"""
    import horovod.tensorflow as hvd
    import tensorflow as tf

    from adrank.train.ranks.sparse.plan import PathCostModel, SparseTable, agree_on_paths

    rows = 1000
    table = SparseTable(name="t", rows=rows, row_shape=(8,))
    model = PathCostModel(sparse_element_cost=1.0)
    touched = rows if hvd.rank() == 0 else 1
    local_choice = model.choose(touched * hvd.size(), table)  # if each rank chose alone
    plan, _, summed, _ = agree_on_paths(tf.constant([touched]), tf.constant([touched]), [table], model)
    return {"local_choice": local_choice, "plan": plan, "summed": summed.tolist(),
            "train_step": skewed_train_step_run(model)}


def skewed_train_step_run(model: Any) -> dict[str, Any]:
    """The same skew through a train step: rank 0 reads all 64 rows, rank 1 row 5."""
    import horovod.tensorflow as hvd
    import tensorflow as tf

    from adrank.train.ranks.sparse.step import make_train_step

    table = tf.Variable(tf.zeros((64, 8)))
    ids = tf.range(64) if hvd.rank() == 0 else tf.fill([64], 5)
    def loss_fn() -> tf.Tensor:
        rows = tf.gather(table, ids)
        return tf.reduce_sum(rows**2 - rows)

    step = make_train_step(loss_fn, [], [table], cost_model=model, replan_every=1)
    plans = []
    for _ in range(2):
        step()
        plans.append(step.plan)
    return {"plans": plans, "table": table.numpy()}


def dedup_choice_run() -> dict[str, Any]:
    """Local de-dup decided from summed counts: skewed ranks, then all-distinct ids.

    Skewed: rank 0 reads 64 distinct rows (alone it would skip de-dup), rank 1 row 5
    64 times; summed, 65 of 128 rows are distinct, so both ranks de-duplicate.
    Distinct: both ranks read distinct rows, so both send raw rows; the table must
    then equal a ``horovod_default`` run on the same ids.
    """
    import horovod.tensorflow as hvd
    import tensorflow as tf

    from adrank.train.ranks.sparse.plan import PathCostModel
    from adrank.train.ranks.sparse.step import make_train_step

    model = PathCostModel()
    out: dict[str, Any] = {"alone_skewed": model.dedup_pays(64, 64) if hvd.rank() == 0
                           else model.dedup_pays(1, 64)}
    cases = {"skewed": tf.range(64) if hvd.rank() == 0 else tf.fill([64], 5),
             "distinct": tf.range(64) * 2 + hvd.rank()}
    for case, ids in cases.items():
        for mode in ("split", "horovod_default"):
            table = tf.Variable(tf.zeros((LARGE_ROWS, DIM)))

            def loss_fn(table=table, ids=ids) -> tf.Tensor:
                rows = tf.gather(table, ids)
                return tf.reduce_sum(rows**2 - rows * tf.cast(ids[:, None] % 3, tf.float32))

            step = make_train_step(loss_fn, [], [table], mode, cost_model=model,
                                   replan_every=1)
            dedups, plans = [], []
            for _ in range(3):
                step()
                dedups.append(step.dedup)
                plans.append(step.plan)
            out[f"{case}_{mode}"] = {"dedup": dedups, "plans": plans, "table": table.numpy()}
    return out


def broadcast_run() -> dict[str, Any]:
    """Rank-dependent initial values, one step, broadcast: state must match rank 0."""
    import horovod.tensorflow as hvd

    from adrank.train.ranks.sparse.step import make_train_step

    variables = make_variables(zero_tables=False, seed=100 + hvd.rank())
    dense, sparse = dense_and_sparse(variables)
    step = make_train_step(make_loss_fn(variables), dense, sparse)
    batch = make_batch(hvd.rank(), 0)
    step(batch["small_ids"], batch["large_ids"], batch["labels"])
    step.broadcast_initial_state()
    slots = [v.numpy() for opt in step.optimizers for v in opt.variables()]
    return {"values": as_numpy(step.variables), "slots": slots}


SCENARIOS = {
    "split_sparse_random": ("split", "sparse", False, 2),
    "split_dense_zero": ("split", "dense", True, 2),
    "split_auto_zero": ("split", "auto", True, 3),
    "split_auto_random": ("split", "auto", False, 1),
    "sparse_as_dense_zero": ("sparse_as_dense", "auto", True, 3),
    "horovod_default_zero": ("horovod_default", "auto", True, 3),
}


def rank_worker() -> dict[str, Any]:
    """Everything one rank runs; returns plain numpy/python results."""
    from adrank.train.ranks.hvd_setup import init_horovod

    init_horovod(intra_op_threads=1, inter_op_threads=1)
    results = {name: distributed_run(*args) for name, args in SCENARIOS.items()}
    results["skewed_plan"] = skewed_plan_run()
    results["dedup_choice"] = dedup_choice_run()
    results["broadcast"] = broadcast_run()
    return results


# --------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ranks() -> list[dict[str, Any]]:
    """The results of both ranks of one 2-rank Horovod job."""
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    return hvd_runner.run(rank_worker, num_proc=SIZE, use_gloo=True, start_timeout=60)


def assert_all_close(actual: list[np.ndarray], expected: list[np.ndarray]) -> None:
    """Variable lists equal within the tolerance."""
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        np.testing.assert_allclose(a, e, rtol=TOLERANCE, atol=TOLERANCE)


@pytest.mark.parametrize("scenario", ["split_sparse_random", "split_dense_zero",
                                      "split_auto_zero"])
def test_split_matches_single_process_reference_on_both_ranks(ranks, scenario):
    for result in ranks:
        assert_all_close(result[scenario]["values"], result[scenario]["reference"])
    assert_all_close(ranks[0][scenario]["values"], ranks[1][scenario]["values"])


@pytest.mark.parametrize("scenario", ["split_sparse_random", "split_auto_zero"])
def test_sharded_slots_consolidate_to_the_single_process_reference(ranks, scenario):
    for result in ranks:
        assert result[scenario]["sharded"]
        assert_all_close(result[scenario]["slots"], result[scenario]["reference_slots"])


def test_each_rank_applies_ftrl_only_to_the_rows_it_owns(ranks):
    """Large table (sparse path): before consolidation a rank's slots moved only on its rows."""
    for rank, result in enumerate(ranks):
        run = result["split_sparse_random"]
        own_accumulator, reference_accumulator = run["own_slots"][2], run["reference_slots"][2]
        touched = np.flatnonzero((reference_accumulator != 0.1).any(axis=1))
        mine = touched[touched % SIZE == rank]
        theirs = touched[touched % SIZE != rank]
        assert len(mine) > 0 and len(theirs) > 0
        np.testing.assert_allclose(own_accumulator[mine], reference_accumulator[mine], rtol=TOLERANCE)
        assert np.all(own_accumulator[theirs] == 0.1)  # the FTRL initial accumulator


def test_random_table_on_the_dense_path_keeps_touched_rows_and_zeroes_the_rest(ranks):
    """Auto sends the small table dense from step 1: FTRL's dense apply is exact on the
    rows the batch touched and resets never-updated rows of a random table to 0 (its
    closed form), as sparse_as_dense does; the large table (sparse path) stays exact."""
    for result in ranks:
        run = result["split_auto_random"]
        assert run["plans"] == [("sparse", "sparse")]  # the attribute before step 1
        small, reference_small = run["values"][2], run["reference"][2]
        touched = np.unique(make_batch(0, 0)["small_ids"].tolist() + make_batch(1, 0)["small_ids"].tolist())
        untouched = np.setdiff1d(np.arange(SMALL_ROWS), touched)
        assert len(untouched) > 0
        np.testing.assert_allclose(small[touched], reference_small[touched], rtol=TOLERANCE, atol=TOLERANCE)
        assert np.all(small[untouched] == 0) and np.all(reference_small[untouched] != 0)
        assert_all_close(run["values"][3:], run["reference"][3:])


def test_auto_policy_sends_small_table_dense_and_large_table_sparse(ranks):
    plans = [result["split_auto_zero"]["plans"] for result in ranks]
    assert plans[0] == plans[1]
    assert plans[0][0] == ("sparse", "sparse")  # before any measurement
    assert plans[0][1:] == [("dense", "sparse"), ("dense", "sparse")]


def test_three_modes_give_the_same_variables(ranks):
    for result in ranks:
        split = result["split_auto_zero"]["values"]
        assert_all_close(result["sparse_as_dense_zero"]["values"], split)
        assert_all_close(result["horovod_default_zero"]["values"], split)


def test_skewed_local_densities_still_give_one_plan(ranks):
    local_choices = [result["skewed_plan"]["local_choice"] for result in ranks]
    assert local_choices[0] != local_choices[1]  # alone, the ranks would disagree
    assert ranks[0]["skewed_plan"]["plan"] == ranks[1]["skewed_plan"]["plan"]
    assert ranks[0]["skewed_plan"]["summed"] == ranks[1]["skewed_plan"]["summed"] == [1001]


def test_skewed_batches_give_one_plan_and_one_state_through_the_train_step(ranks):
    runs = [result["skewed_plan"]["train_step"] for result in ranks]
    assert runs[0]["plans"] == runs[1]["plans"] == [("dense",), ("dense",)]
    np.testing.assert_allclose(runs[0]["table"], runs[1]["table"], rtol=TOLERANCE, atol=TOLERANCE)
    assert np.count_nonzero(runs[0]["table"].any(axis=1)) == 64  # all rows moved


def test_dedup_choice_is_the_same_on_both_ranks_and_raw_rows_stay_exact(ranks):
    runs = [result["dedup_choice"] for result in ranks]
    assert runs[0]["alone_skewed"] != runs[1]["alone_skewed"]  # alone, they would differ
    for case, dedup in (("skewed", (True,)), ("distinct", (False,))):
        split = [run[f"{case}_split"] for run in runs]
        assert split[0]["dedup"] == split[1]["dedup"] == [dedup] * 3
        assert split[0]["plans"] == split[1]["plans"] == [("sparse",)] * 3
        for run in runs:
            np.testing.assert_allclose(run[f"{case}_split"]["table"],
                                       run[f"{case}_horovod_default"]["table"],
                                       rtol=TOLERANCE, atol=TOLERANCE)
        assert np.count_nonzero(split[0]["table"].any(axis=1)) > 0


def test_broadcast_after_first_step_copies_variables_and_slots(ranks):
    assert_all_close(ranks[1]["broadcast"]["values"], ranks[0]["broadcast"]["values"])
    assert_all_close(ranks[1]["broadcast"]["slots"], ranks[0]["broadcast"]["slots"])


def test_single_process_smoke():
    """Size 1, in this process: two auto steps equal the plain reference."""
    import horovod.tensorflow as hvd

    from adrank.train.ranks.hvd_setup import init_horovod
    from adrank.train.ranks.sparse.step import make_train_step

    init_horovod()
    assert hvd.size() == 1
    variables = make_variables(zero_tables=True)
    dense, sparse = dense_and_sparse(variables)
    step = make_train_step(make_loss_fn(variables), dense, sparse, "split", DENSE_LR, FTRL_LR,
                           replan_every=1)
    for i in range(2):
        batch = make_batch(0, i)
        loss = step(batch["small_ids"], batch["large_ids"], batch["labels"])
        assert np.isfinite(loss.numpy())
    assert step.plan == ("dense", "sparse")
    assert_all_close(as_numpy(dense + sparse), reference_run(True, 2, 1))


def test_new_keras_ftrl_is_refused():
    import tensorflow as tf

    from adrank.train.ranks.hvd_setup import init_horovod
    from adrank.train.ranks.sparse.step import make_train_step

    init_horovod()
    variables = make_variables(zero_tables=True)
    dense, sparse = dense_and_sparse(variables)
    with pytest.raises(TypeError, match="legacy"):
        make_train_step(make_loss_fn(variables), dense, sparse,
                        sparse_optimizer=tf.keras.optimizers.Ftrl(0.1))
