"""Benchmark: the joint model's train step in the three gradient modes, and frozen vs fine-tune.

Not a test. Prints ONE JSON line. Shape of the work (defaults): 2 Horovod ranks (Gloo,
CPU, 1 intra-op + 1 inter-op TF thread each) on this machine; the real stage-3 model
(:class:`adrank.train.ranks.joint_model.JointModel`, interaction ``product``, frozen: x and y
come from the batch) with its LR table of 2^20 (the demo's ``features.hash_bits``) and
2^22 rows x 1 (float32, zero-initialised, FTRL; the only sparse variable) and its dense
rest (stand-in vectors, page-crossed head: RMSProp); per rank a batch of 1024 examples
(``train.joint_batch_size``) x K = 32 id slots (``features.max_sparse_ids``) of which
5..15 (mean 10) are real ids, uniform over ``1 .. 2^hash_bits - 1``, the rest padding 0
(``num_sparse_ids`` says how many); D = 32 (``train.embedding_dim``); ``page`` uniform
over the three pages, ``x_present`` / ``y_present`` 1 with probability 0.9.

Per size, in the same run: the median step time (after warm-up) of ``split`` (as the
trainer runs it: automatic path choice, re-planned every 50 steps), ``sparse_as_dense``
and ``horovod_default`` (:func:`adrank.train.ranks.sparse.step.make_train_step`), and as a
diagnostic ``split_unsharded`` (every rank applies FTRL to every gathered row). Modes
are interleaved in rounds as in bench/sparse_dense.py: each round starts with the next
mode and the first step after a switch is not timed. ``sparse_as_dense`` allreduces the
whole table every step, so at 2^22 it gets fewer timed steps (``--slow-steps``); the
JSON gives every mode's timed step count. The targets are reported as raw ratios plus a
boolean on the ratio as measured (no noise allowance: ``split_not_slower_than_best_other``
is ``best_other / split >= 1.0``; read the ratio, the run's noise is a few percent).
``--kinds`` (default ``dot,dnn``) adds those interactions at ``--kinds-at`` (20) only.

Then, on the tiny config (conf/tiny.yaml: image_size 32, ``mini_inception`` width 8,
embedding_dim 16, batch 16 per rank, hash_bits 16), steps/s of the split-mode joint step
frozen (no towers) against ``--finetune-cnn`` (SKU tower over ``ad_image`` and
``context_image``, query tower over ``query``), interleaved the same way, same steps.

Usage: PYTHONPATH=$PWD/lib .venv/bin/python bench/joint.py [--hash-bits 20,22]
       [--steps 96] [--slow-steps 32] [--rounds 8] [--kinds dot,dnn] [--kinds-at 20]
       [--tiny-steps 96]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import numpy as np

import sparse_dense  # bench/ is sys.path[0] when run as bench/joint.py
from sparse_dense import run_steps

GRADIENT_MODES = ("split", "sparse_as_dense", "horovod_default")
# name -> (mode, shard sparse updates); split_unsharded is a diagnostic, not in the targets
TIMED_MODES = {**{mode: (mode, True) for mode in GRADIENT_MODES},
               "split_unsharded": ("split", False)}
DISTINCT_BATCHES = 3
DENSE_LR = 0.01  # train.joint_dense_learning_rate (the loop does not scale it by size)
FTRL_LR = 0.05
TINY = {"image_size": 32, "tower": "mini_inception", "width": 8, "embedding_dim": 16,
        "batch": 16, "hash_bits": 16}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hash-bits", default="20,22")
    parser.add_argument("--kind", default="product", help="interaction at every size")
    parser.add_argument("--kinds", default="dot,dnn", help="more interactions, at --kinds-at only")
    parser.add_argument("--kinds-at", type=int, default=20)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--max-ids", type=int, default=32)
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--steps", type=int, default=96, help="timed steps per mode and size")
    parser.add_argument("--slow-steps", type=int, default=32,
                        help="timed steps of sparse_as_dense at hash_bits >= --slow-from")
    parser.add_argument("--slow-from", type=int, default=22)
    parser.add_argument("--rounds", type=int, default=8, help="interleaved rounds per size")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--tiny-steps", type=int, default=96,
                        help="timed steps each of frozen and fine-tune (0: skip)")
    return parser.parse_args(argv)


def make_batch(rng: np.random.Generator, batch: int, max_ids: int, hash_bits: int, dim: int,
               image_size: int | None = None) -> dict[str, Any]:
    """One joint batch (tf tensors); with ``image_size`` also images and queries."""
    import tensorflow as tf

    counts = rng.integers(5, 16, size=batch)
    ids = rng.integers(1, 2**hash_bits, size=(batch, max_ids), dtype=np.int64)
    ids[np.arange(max_ids)[np.newaxis, :] >= counts[:, np.newaxis]] = 0
    out = {
        "sparse_ids": ids, "num_sparse_ids": counts.astype(np.int32),
        "label": rng.integers(0, 2, batch).astype(np.float32),
        "page": rng.integers(0, 3, batch).astype(np.int32),
        "x": rng.normal(size=(batch, dim)).astype(np.float32),
        "y": rng.normal(size=(batch, dim)).astype(np.float32),
        "x_present": (rng.random(batch) < 0.9).astype(np.float32),
        "y_present": (rng.random(batch) < 0.9).astype(np.float32),
    }
    if image_size is not None:
        shape = (batch, image_size, image_size, 3)
        out["ad_image"] = rng.integers(0, 256, size=shape, dtype=np.uint8)
        out["context_image"] = rng.integers(0, 256, size=shape, dtype=np.uint8)
        words = np.array(["red", "shoe", "lamp", "desk", "blue", "sofa", "mug", "oak"])
        out["query"] = np.array([" ".join(rng.choice(words, 2)) for _ in range(batch)])
    return {key: tf.constant(value) for key, value in out.items()}


def build_step(kind: str, hash_bits: int, dim: int, mode: str, first_batch: dict[str, Any],
               towers: dict[str, Any] | None = None, sharded: bool = True) -> Any:
    """A fresh joint model (same seed on every rank) and its train step, state created."""
    import tensorflow as tf

    from adrank.train.ranks.joint_model import JointModel, joint_loss
    from adrank.train.ranks.sparse.step import make_train_step

    tf.keras.utils.set_random_seed(0)
    model = JointModel(kind, hash_bits, dim, **(towers or {}))
    model(first_batch, training=False)  # builds the lazy layers (head, DNN)
    step = make_train_step(lambda batch: joint_loss(model, batch), model.dense_variables(),
                           model.sparse_variables(), mode=mode, dense_lr=DENSE_LR,
                           ftrl_lr=FTRL_LR, scale_dense_lr_by_size=False,
                           shard_sparse_updates=sharded)
    step.create_optimizer_state()
    return step


def warm_up(step: Any, batches: list[Any], count: int) -> None:
    """First step, the initial broadcast (the Horovod convention), then more warm-up."""
    run_steps(step, batches, 1)
    step.broadcast_initial_state()
    run_steps(step, batches, max(count - 1, 0))


def interleave(steps: dict[str, Any], batches: list[Any], rounds: int,
               per_mode_steps: dict[str, int]) -> dict[str, list[float]]:
    """Timed steps (ms) per name, in rounds that each start with the next name."""
    times: dict[str, list[float]] = {name: [] for name in steps}
    names = list(steps)
    for round_number in range(rounds):
        shift = round_number % len(names)
        for name in names[shift:] + names[:shift]:
            run_steps(steps[name], batches, 1)  # after a switch: run, not timed
            per_round = max(per_mode_steps[name] // rounds, 1)
            times[name].extend(run_steps(steps[name], batches, per_round))
    return times


def bench_size(options: dict[str, Any], rng: np.random.Generator, kind: str,
               hash_bits: int) -> dict[str, Any]:
    """One interaction at one table size: the three modes, interleaved."""
    import gc

    batches = [(make_batch(rng, options["batch"], options["max_ids"], hash_bits, options["dim"]),)
               for _ in range(DISTINCT_BATCHES)]
    steps = {name: build_step(kind, hash_bits, options["dim"], mode, batches[0][0], sharded=sharded)
             for name, (mode, sharded) in TIMED_MODES.items()}
    for step in steps.values():
        warm_up(step, batches, options["warmup"])
    counts = dict.fromkeys(steps, options["steps"])
    if hash_bits >= options["slow_from"]:
        counts["sparse_as_dense"] = options["slow_steps"]
    times = interleave(steps, batches, options["rounds"], counts)
    med = {mode: round(float(np.median(t)), 1) for mode, t in times.items()}
    best_other = min(med["sparse_as_dense"], med["horovod_default"])
    result = {
        "hash_bits": hash_bits, "rows": 2**hash_bits, "interaction": kind,
        **{f"{mode}_ms": value for mode, value in med.items()},
        "min_ms": {mode: round(float(np.min(t)), 1) for mode, t in times.items()},
        "timed_steps": {mode: len(t) for mode, t in times.items()},
        "split_plan": steps["split"].plan[0],
        "sparse_as_dense_over_split": round(med["sparse_as_dense"] / med["split"], 2),
        "horovod_default_over_split": round(med["horovod_default"] / med["split"], 2),
        "best_other_over_split": round(best_other / med["split"], 2),
        "split_unsharded_over_split": round(med["split_unsharded"] / med["split"], 2),
        "split_not_slower_than_best_other": best_other / med["split"] >= 1.0,
    }
    del steps
    gc.collect()
    return result


def bench_tiny(options: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    """Frozen vs fine-tune on the tiny config, split mode, interleaved."""
    from adrank.train.ranks.models import query_tower, sku_tower

    t = TINY
    batches = [(make_batch(rng, t["batch"], options["max_ids"], t["hash_bits"],
                           t["embedding_dim"], t["image_size"]),) for _ in range(DISTINCT_BATCHES)]
    towers = {"sku_tower": sku_tower(t["tower"], t["image_size"], t["embedding_dim"],
                                     width=t["width"]),
              "query_tower": query_tower(t["embedding_dim"], width=t["width"])}
    steps = {"frozen": build_step(options["kind"], t["hash_bits"], t["embedding_dim"], "split",
                                  batches[0][0]),
             "finetune_cnn": build_step(options["kind"], t["hash_bits"], t["embedding_dim"],
                                        "split", batches[0][0], towers)}
    for step in steps.values():
        warm_up(step, batches, options["warmup"])
    count = options["tiny_steps"]
    times = interleave(steps, batches, options["rounds"], dict.fromkeys(steps, count))
    per_s = {name: round(1000 * len(x) / float(np.sum(x)), 1) for name, x in times.items()}
    med = {name: round(float(np.median(x)), 1) for name, x in times.items()}
    return {
        "shape": {**t, "interaction": options["kind"], "mode": "split"},
        "timed_steps": {name: len(x) for name, x in times.items()},
        "steps_per_s": per_s,
        "median_ms": med,
        "frozen_over_finetune_steps_per_s": round(per_s["frozen"] / per_s["finetune_cnn"], 2),
    }


def bench_rank(options: dict[str, Any]) -> dict[str, Any]:
    """One rank: every (interaction, size), then the tiny frozen vs fine-tune."""
    import horovod.tensorflow as hvd

    from adrank.train.ranks.hvd_setup import init_horovod

    init_horovod(1, 1)
    rng = np.random.default_rng(1 + hvd.rank())
    sizes = [bench_size(options, rng, options["kind"], bits) for bits in options["hash_bits"]]
    extra = [bench_size(options, rng, kind, options["kinds_at"]) for kind in options["kinds"]]
    tiny = bench_tiny(options, rng) if options["tiny_steps"] > 0 else None
    return {"rank": hvd.rank(), "sizes": sizes, "other_interactions": extra, "tiny": tiny}


def main(argv: list[str] | None = None) -> None:
    """Runs the ranks with ``horovod.runner.run``; prints the JSON line."""
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    options = {"hash_bits": [int(x) for x in args.hash_bits.split(",")], "kind": args.kind,
               "kinds": [k for k in args.kinds.split(",") if k], "kinds_at": args.kinds_at,
               "batch": args.batch, "max_ids": args.max_ids, "dim": args.dim,
               "steps": args.steps, "slow_steps": args.slow_steps, "slow_from": args.slow_from,
               "rounds": args.rounds, "warmup": args.warmup, "tiny_steps": args.tiny_steps}
    load_before = os.getloadavg()[0]
    started = time.time()

    import cloudpickle
    import horovod.runner

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    cloudpickle.register_pickle_by_value(sparse_dense)  # the ranks cannot import bench/
    per_rank = horovod.runner.run(bench_rank, args=(options,), num_proc=args.ranks,
                                  use_gloo=True, start_timeout=120)
    result = per_rank[0]
    by_bits = {s["hash_bits"]: s for s in result["sizes"]}
    print(json.dumps({
        "bench": "joint",
        "shape": {"ranks": args.ranks, "tf_threads_per_rank": [1, 1],
                  "batch_per_rank": args.batch, "id_slots_per_row_K": args.max_ids,
                  "real_ids_per_row": "uniform 5..15 (mean 10), rest padding 0",
                  "ids": "uniform over 1..2^hash_bits-1", "lr_table": "[2^hash_bits, 1] zeros",
                  "embedding_dim_D": args.dim, "interaction": args.kind,
                  "rounds": args.rounds, "warmup_steps": args.warmup,
                  "untimed_steps_per_round": 1, "cores": os.cpu_count()},
        "sizes": result["sizes"],
        "targets": {
            "split_3x_faster_than_sparse_as_dense_at_2^22":
                by_bits[22]["sparse_as_dense_over_split"] >= 3 if 22 in by_bits else None,
            "sparse_as_dense_over_split_at_2^22":
                by_bits[22]["sparse_as_dense_over_split"] if 22 in by_bits else None,
            "split_not_slower_than_best_other": {
                str(s["hash_bits"]): s["split_not_slower_than_best_other"] for s in result["sizes"]},
            "best_other_over_split": {
                str(s["hash_bits"]): s["best_other_over_split"] for s in result["sizes"]},
        },
        "other_interactions": result["other_interactions"],
        "frozen_vs_finetune_tiny": result["tiny"],
        "load_avg_1min_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "wall_s": round(time.time() - started, 1),
    }))


if __name__ == "__main__":
    main()
