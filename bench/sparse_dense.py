"""Benchmark: step time of the three gradient modes of adrank.train.ranks.sparse.

Not a test. Prints ONE JSON line. Shape of the work (defaults): 2 Horovod ranks
(Gloo, CPU, 1 intra-op + 1 inter-op TF thread each) on this machine; one LR/embedding
table of 2^16, 2^18, 2^20, 2^22 rows x dim 8 (float32, zero-initialised, FTRL);
a dense layer 8 -> 1 + bias (RMSProp); per rank a batch of 4096 examples x 20 ids,
ids uniform over the table (``--ids zipf`` for Zipf(1.1) ranks over a shuffled table).

Per table size, in the same run: the median step time (after warm-up) of ``split``
(its automatic per-table choice, and each path forced), ``sparse_as_dense`` and
``horovod_default``. Modes are interleaved in rounds so that machine noise hits them
alike; each round starts with the next mode (no mode always follows the same one),
and the first step after a switch is not timed. Before the ranks start, one process times the legacy FTRL sparse apply on a
fixed number of touched rows at every table size (it must not grow like the table)
next to the dense apply (which does).

``split_forced_dense`` at a size where ``split`` chose dense runs the same code as
``split``: the gap between the two is the noise of the run. ``split_unsharded`` is
``split`` with every rank applying FTRL to every gathered row (no owner sharding).
All modes use the same FTRL (:class:`adrank.train.ranks.ftrl.GatherScatterFtrl`); the
one-process ``ftrl_apply`` section also times TensorFlow's row-at-a-time kernel. ``cost_model`` fits the
path chooser's constant from the forced-path timings.

Usage: .venv/bin/python bench/sparse_dense.py [--log2-rows 16,18,20,22] [--ids zipf]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import numpy as np

# name -> (mode, path policy, sharded sparse updates)
MODES = {
    "split": ("split", "auto", True),
    "sparse_as_dense": ("sparse_as_dense", "auto", True),
    "horovod_default": ("horovod_default", "auto", True),
    "split_forced_sparse": ("split", "sparse", True),
    "split_forced_dense": ("split", "dense", True),
    "split_unsharded": ("split", "auto", False),
}
DISTINCT_BATCHES = 3


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log2-rows", default="16,18,20,22")
    parser.add_argument("--dim", type=int, default=8)
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--ids-per-example", type=int, default=20)
    parser.add_argument("--ids", choices=["uniform", "zipf"], default="uniform")
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--steps", type=int, default=96, help="timed steps per mode")
    parser.add_argument("--rounds", type=int, default=16, help="interleaved rounds per size")
    parser.add_argument("--untimed-per-round", type=int, default=1,
                        help="steps run but not timed when a round switches to a mode")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--ftrl-touched-rows", type=int, default=65536)
    parser.add_argument("--sparse-element-cost", type=float, default=None)
    return parser.parse_args(argv)


def draw_ids(rng: np.random.Generator, kind: str, rows: int, shape: tuple[int, int]) -> np.ndarray:
    """Feature ids: uniform over the table, or Zipf(1.1) ranks over a shuffled table."""
    if kind == "uniform":
        return rng.integers(0, rows, size=shape, dtype=np.int64).astype(np.int32)
    ranks = (rng.zipf(1.1, size=shape) - 1) % rows
    permutation = np.random.default_rng(0).permutation(rows)
    return permutation[ranks].astype(np.int32)


def time_ftrl_applies(log2_rows: list[int], dim: int, touched: int) -> dict[str, Any]:
    """FTRL sparse applies on ``touched`` distinct rows vs the dense apply, per size.

    Sparse: TensorFlow's kernel (legacy Keras FTRL) and adrank's gather/scatter FTRL.
    """
    import tensorflow as tf

    from adrank.train.ranks.ftrl import GatherScatterFtrl
    from adrank.train.ranks.hvd_setup import cap_tf_threads

    cap_tf_threads(1, 1)
    rng = np.random.default_rng(0)
    sparse_ms, gather_scatter_ms, dense_ms = [], [], []
    legacy = tf.keras.optimizers.legacy.Ftrl
    for log2 in log2_rows:
        rows = 2**log2
        indices = tf.constant(rng.choice(rows, size=min(touched, rows), replace=False), tf.int32)
        grad_rows = tf.constant(rng.normal(size=(indices.shape[0], dim)).astype(np.float32))
        dense_grad = tf.math.unsorted_segment_sum(grad_rows, indices, rows)
        sparse_grad = tf.IndexedSlices(grad_rows, indices, tf.constant([rows, dim]))
        for grad, optimizer, out in ((sparse_grad, legacy, sparse_ms),
                                     (sparse_grad, GatherScatterFtrl, gather_scatter_ms),
                                     (dense_grad, legacy, dense_ms)):
            apply = ftrl_apply_fn(grad, rows, dim, optimizer)
            out.append(round(median_ms(apply, warmup=2, steps=7), 2))
    sparse_growth = sparse_ms[-1] / sparse_ms[0]
    table_growth = 2 ** (log2_rows[-1] - log2_rows[0])
    return {"touched_rows": touched, "log2_rows": log2_rows,
            "legacy_sparse_apply_ms": sparse_ms, "gather_scatter_sparse_apply_ms": gather_scatter_ms,
            "legacy_dense_apply_ms": dense_ms,
            "sparse_growth_largest_vs_smallest": round(sparse_growth, 2),
            "gather_scatter_growth_largest_vs_smallest":
                round(gather_scatter_ms[-1] / gather_scatter_ms[0], 2),
            "dense_growth_largest_vs_smallest": round(dense_ms[-1] / dense_ms[0], 2),
            "table_growth": table_growth,
            "sparse_apply_o_touched_rows": sparse_growth < 0.1 * table_growth}


def ftrl_apply_fn(grad: Any, rows: int, dim: int, optimizer_class: Any) -> Any:
    """A traced FTRL apply of ``grad`` to a fresh zero [rows, dim] table."""
    import tensorflow as tf

    table = tf.Variable(tf.zeros((rows, dim)))
    ftrl = optimizer_class(0.05)

    @tf.function
    def apply() -> None:
        ftrl.apply_gradients([(grad, table)])

    return apply


def median_ms(fn: Any, warmup: int, steps: int) -> float:
    """Median wall time of ``fn()`` in ms after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def build_mode(mode: str, policy: str, sharded: bool, rows: int, dim: int,
               cost: float | None) -> Any:
    """A fresh model (zero table, dense layer) and its train step for one mode."""
    import tensorflow as tf

    from adrank.train.ranks.sparse.plan import PathCostModel
    from adrank.train.ranks.sparse.step import make_train_step

    table = tf.Variable(tf.zeros((rows, dim)), name="lr_table")
    w = tf.Variable(tf.random.stateless_normal((dim, 1), seed=(1, 2)) * 0.1, name="w")
    b = tf.Variable(tf.zeros((1,)), name="b")

    def loss_fn(ids, labels):
        pooled = tf.reduce_sum(tf.gather(table, ids), axis=1)
        logits = tf.squeeze(pooled @ w, axis=1) + b
        return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels, logits))

    model = PathCostModel() if cost is None else PathCostModel(sparse_element_cost=cost)
    return make_train_step(loss_fn, [w, b], [table], mode, 1e-3, 0.05, path_policy=policy,
                           replan_every=10**9, cost_model=model, shard_sparse_updates=sharded)


def bench_rank(options: dict[str, Any]) -> dict[str, Any]:
    """One rank: per table size, build every mode, then time them interleaved."""
    import gc

    import horovod.tensorflow as hvd
    import tensorflow as tf

    from adrank.train.ranks.hvd_setup import init_horovod

    init_horovod(1, 1)
    rng = np.random.default_rng(1 + hvd.rank())
    shape = (options["batch"], options["ids_per_example"])
    results = []
    for log2 in options["log2_rows"]:
        rows = 2**log2
        batches = [(tf.constant(draw_ids(rng, options["ids"], rows, shape)),
                    tf.constant(rng.integers(0, 2, options["batch"]).astype(np.float32)))
                   for _ in range(DISTINCT_BATCHES)]
        steps = {name: build_mode(mode, policy, sharded, rows, options["dim"],
                                  options["sparse_element_cost"])
                 for name, (mode, policy, sharded) in MODES.items()}
        for step in steps.values():  # traces; step 1 also sets the split plan
            run_steps(step, batches, options["warmup"])
        times: dict[str, list[float]] = {name: [] for name in MODES}
        names = list(steps)
        for round_number in range(options["rounds"]):
            # Each round starts with the next mode, so no mode always follows another.
            shift = round_number % len(names)
            for name in names[shift:] + names[:shift]:
                step = steps[name]
                # The first step after a switch pays for the previous mode's memory
                # churn (its 128 MB dense buffers at 2^22); it is run but not timed.
                run_steps(step, batches, options["untimed_per_round"])
                times[name].extend(run_steps(step, batches, options["steps"] // options["rounds"]))
        results.append(summarise(rows, times, steps["split"]))
        del steps
        gc.collect()
    return {"rank": hvd.rank(), "sizes": results}


def run_steps(step: Any, batches: list[Any], count: int) -> list[float]:
    """Runs ``count`` steps (cycling through the batches); their wall times in ms."""
    times = []
    for i in range(count):
        start = time.perf_counter()
        step(*batches[i % len(batches)]).numpy()
        times.append(1000 * (time.perf_counter() - start))
    return times


def summarise(rows: int, times: dict[str, list[float]], split: Any) -> dict[str, Any]:
    """Medians, the split plan and the ratios the targets are stated in."""
    med = {name: round(float(np.median(t)), 1) for name, t in times.items()}
    best_other = min(med["sparse_as_dense"], med["horovod_default"])
    return {
        "rows": rows,
        **{f"{name}_ms": value for name, value in med.items()},
        "min_ms": {name: round(float(np.min(t)), 1) for name, t in times.items()},
        "split_plan": split.plan[0],
        "touched_rows_all_ranks": int(split.planner.last_touched_rows[0]),
        "faster_forced_path": "dense" if med["split_forced_dense"] < med["split_forced_sparse"]
        else "sparse",
        "split_vs_best_other": round(med["split"] / best_other, 2),
        "sparse_as_dense_vs_split": round(med["sparse_as_dense"] / med["split"], 2),
        "split_unsharded_vs_split": round(med["split_unsharded"] / med["split"], 2),
    }


def calibrate(sizes: list[dict[str, Any]], dim: int) -> dict[str, Any]:
    """Fits the cost model's constant from the forced-path timings.

    Dense path: ``t = base + d * rows * dim`` (least squares over sizes). Sparse path:
    ``t = base + s * touched * (dim + 1)``, ``s`` the median over sizes. The model's
    ``sparse_element_cost`` is ``s / d``.
    """
    dense_elements = np.array([s["rows"] * dim for s in sizes], dtype=float)
    dense_ms = np.array([s["split_forced_dense_ms"] for s in sizes])
    d, base = np.polyfit(dense_elements, dense_ms, 1)
    sparse_elements = np.array([s["touched_rows_all_ranks"] * (dim + 1) for s in sizes], float)
    sparse_ms = np.array([s["split_forced_sparse_ms"] for s in sizes])
    per_element = float(np.median((sparse_ms - base) / sparse_elements))
    return {"dense_ns_per_element": round(1e6 * d, 3), "fixed_ms": round(float(base), 1),
            "sparse_ns_per_element": round(1e6 * per_element, 2),
            "implied_sparse_element_cost": round(per_element / d, 2) if d > 0 else None}


def targets(sizes: list[dict[str, Any]]) -> dict[str, Any]:
    """split <= 1.1x the faster baseline everywhere; >= 4x faster than dense at the top."""
    worst = max(s["split_vs_best_other"] for s in sizes)
    largest = sizes[-1]
    return {
        "split_le_1.1x_best_other_everywhere": worst <= 1.1,
        "worst_split_vs_best_other": worst,
        "split_ge_4x_faster_than_sparse_as_dense_at_largest":
            largest["sparse_as_dense_vs_split"] >= 4,
        "sparse_as_dense_vs_split_at_largest": largest["sparse_as_dense_vs_split"],
    }


def main(argv: list[str] | None = None) -> None:
    """Times FTRL applies here, then the modes on ``--ranks`` Horovod ranks; prints JSON."""
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    log2_rows = [int(x) for x in args.log2_rows.split(",")]
    options = {"log2_rows": log2_rows, "dim": args.dim, "batch": args.batch,
               "ids_per_example": args.ids_per_example, "ids": args.ids, "steps": args.steps,
               "rounds": args.rounds, "warmup": args.warmup,
               "untimed_per_round": args.untimed_per_round,
               "sparse_element_cost": args.sparse_element_cost}
    load_before = os.getloadavg()[0]
    started = time.time()
    ftrl = time_ftrl_applies(log2_rows, args.dim, args.ftrl_touched_rows)

    import cloudpickle
    import horovod.runner

    from adrank.train.ranks.sparse.plan import DEFAULT_SPARSE_ELEMENT_COST as DEFAULT_COST

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    per_rank = horovod.runner.run(bench_rank, args=(options,), num_proc=args.ranks,
                                  use_gloo=True, start_timeout=120)
    sizes = per_rank[0]["sizes"]
    print(json.dumps({
        "bench": "sparse_dense",
        "shape": {"ranks": args.ranks, "tf_threads_per_rank": [1, 1], "batch_per_rank": args.batch,
                  "ids_per_example": args.ids_per_example, "dim": args.dim, "ids": args.ids,
                  "table_init": "zeros", "timed_steps_per_mode": args.steps,
                  "rounds": args.rounds,
                  "untimed_steps_per_round": args.untimed_per_round, "cores": os.cpu_count()},
        "sizes": sizes,
        "targets": targets(sizes),
        "cost_model": {"sparse_element_cost_used": args.sparse_element_cost or DEFAULT_COST,
                       **calibrate(sizes, args.dim)},
        "ftrl_apply": ftrl,
        "load_avg_1min_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "wall_s": round(time.time() - started, 1),
    }))


if __name__ == "__main__":
    main()
