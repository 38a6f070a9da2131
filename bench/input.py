"""Benchmark: does Petastorm + tf.data feed a stage-1 rank faster than it trains?

Prints ONE JSON line. Not a test. In one run, on demo-ish data generated into a temp
folder (defaults: 50,000 impressions, 2,000 SKUs, 64x64 PNG images):

1. Spark (local[2]) generates the inputs, builds the tables, builds the stage-1 pairs
   and materialises them (Delta, 4 files per kind); the live files of the pinned
   version's ``detail`` partition are listed; Spark then stops, so the figures below
   do not share the cores with it.
2. ``input``: detail pair batches (64 x context/pos/neg images) that
   :func:`adrank.train.ranks.input.pair_dataset` delivers to one rank (rank 0 of 1: the whole
   file set; repeating; 1 Petastorm reader thread; tf.data's PNG decoding on a private
   pool of ``--decode-threads`` threads, default 1: one rank's share of 2 cores).
3. ``train``: the samples/s one stage-1 step consumes: PairwiseModel with the
   mini_inception tower (TrainConfig defaults: width 16, embedding 32) and the query
   tower, pairwise loss, legacy RMSprop, in a ``tf.function``, TF capped at 1 intra-op +
   1 inter-op thread (as a rank is), on batches already in memory (taken from step 2).
4. ``pyarrow``: a plain read of the same files, ``pq.read_table`` of the three image
   columns then PIL decoding of every PNG to a uint8 array (rows/s; 3 images a row).

Target: ``input_over_train`` >= 3 (the input leaves the step 2/3 of its core).

Usage: ``.venv/bin/python bench/input.py [--impressions N] [--skus S] [--batches B]``
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BATCH = 64
IMAGE_SIZE = 64
KIND = "detail"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--impressions", type=int, default=50_000)
    parser.add_argument("--skus", type=int, default=2000)
    parser.add_argument("--batches", type=int, default=60, help="timed input batches")
    parser.add_argument("--steps", type=int, default=12, help="timed training steps")
    parser.add_argument("--decode-threads", type=int, default=1)
    return parser.parse_args(argv)


def bench_config(root: Path, impressions: int, skus: int):
    """The demo config with this benchmark's sizes, under ``root``."""
    from adrank.core.config import load_config

    return load_config(REPO / "conf" / "local.yaml", [
        f"storage.root={root / 'tables'}", f"inputs.root={root / 'inputs'}",
        f"sample.num_impressions={impressions}", f"sample.num_skus={skus}",
        f"sample.num_users={max(100, skus // 2)}", f"features.image_size={IMAGE_SIZE}"])


def prepare_pairs(config) -> dict:
    """Generate, build, make and materialise the pairs; return the detail files and figures."""
    from adrank.core import layout
    from adrank.runtime.runs import RunReport
    from adrank.runtime.spark import build_spark
    from adrank.sample.generate import generate_inputs
    from adrank.storage import delta
    from adrank.tables import run as build
    from adrank.train import pairs
    from adrank.train import store as train_store

    spark = build_spark(config.spark, "adrank-bench-input")
    generate_inputs(spark, config.sample, config.inputs.root)
    build.build_tables(spark, config, RunReport("bench_input"), None)
    examples_path = layout.table_path(config, layout.TRAINING_EXAMPLES)
    examples = delta.read_delta(spark, examples_path, delta.pin_version(spark, examples_path)).cache()
    skus = delta.read_delta(spark, layout.table_path(config, layout.SKU_IMAGES)).cache()
    keys = pairs.stage1_pairs(examples, skus).cache()
    rows, dropped = pairs.with_images(keys, skus)
    path = layout.table_path(config, layout.PAIRS_TRAIN)
    version = train_store.materialise_pairs(spark, rows, path)
    files = delta.live_files(None, path, version, {train_store.PAIRS_PARTITION: KIND})
    spark.stop()
    return {"files": files, "pairs_version": version, "dropped_without_image": dropped}


def input_rate(files: list[str], batches: int, decode_threads: int) -> tuple[float, list]:
    """Samples/s that pair_dataset delivers; also returns a few batches for the train step."""
    from adrank.train.ranks.input import pair_dataset

    with pair_dataset(files, 0, 1, BATCH, IMAGE_SIZE, KIND, num_epochs=None, seed=1,
                      decode_threads=decode_threads) as dataset:
        iterator = iter(dataset)
        kept = [next(iterator) for _ in range(5)]  # warm-up, and the train step's batches
        start = time.perf_counter()
        for _ in range(batches):
            next(iterator)
        seconds = time.perf_counter() - start
    return batches * BATCH / seconds, kept


def train_rate(batches: list, steps: int) -> float:
    """Samples/s of one stage-1 training step (mini_inception, legacy RMSprop)."""
    import tensorflow as tf

    from adrank.core.config import TrainConfig
    from adrank.train.ranks.models import PairwiseModel, pairwise_loss, query_tower, sku_tower

    cfg = TrainConfig()
    tf.keras.utils.set_random_seed(0)
    model = PairwiseModel(sku_tower(cfg.tower, IMAGE_SIZE, cfg.embedding_dim, cfg.tower_width),
                          query_tower(cfg.embedding_dim))
    optimizer = tf.keras.optimizers.legacy.RMSprop(cfg.dense_learning_rate)

    @tf.function
    def step(batch):
        with tf.GradientTape() as tape:
            loss = pairwise_loss(*model(batch, training=True))
        variables = model.sku_tower.trainable_variables
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    for batch in batches[:2]:
        step(batch).numpy()
    start = time.perf_counter()
    for i in range(steps):
        step(batches[i % len(batches)]).numpy()
    return steps * BATCH / (time.perf_counter() - start)


def pyarrow_rate(files: list[str]) -> tuple[float, int]:
    """Rows/s of pq.read_table over the files plus PIL decoding of every image."""
    import numpy as np
    import pyarrow.parquet as pq
    from PIL import Image

    columns = ["context_image", "pos_image", "neg_image"]
    start = time.perf_counter()
    rows = 0
    for url in files:
        table = pq.read_table(url.removeprefix("file://"), columns=columns)
        for column in columns:
            for png in table[column].to_pylist():
                np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
        rows += table.num_rows
    return rows / (time.perf_counter() - start), rows


def main(argv: list[str] | None = None) -> None:
    """Prepare the pairs, time the three readers/consumers, print one JSON line."""
    args = parse_args(argv)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    with tempfile.TemporaryDirectory(prefix="adrank-bench-input-") as tmp:
        prepared = prepare_pairs(bench_config(Path(tmp), args.impressions, args.skus))
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        files = prepared["files"]
        input_per_s, batches = input_rate(files, args.batches, args.decode_threads)
        train_per_s = train_rate(batches, args.steps)
        plain_per_s, rows = pyarrow_rate(files)
    print(json.dumps({
        "bench": "input", "impressions": args.impressions, "skus": args.skus,
        "kind": KIND, "pair_rows": rows, "files": len(files), "batch": BATCH, "image_size": IMAGE_SIZE,
        "images_per_sample": 3, "dropped_without_image": prepared["dropped_without_image"],
        "input_samples_per_s": round(input_per_s, 1),
        "input_setup": f"petastorm thread reader x1, tf.data decode_png pool x{args.decode_threads}",
        "train_samples_per_s": round(train_per_s, 1),
        "train_setup": "PairwiseModel mini_inception w16 d32, legacy RMSprop, tf.function, TF 1+1 threads",
        "pyarrow_pil_rows_per_s": round(plain_per_s, 1),
        "pyarrow_setup": "pq.read_table 3 image columns + PIL PNG decode, single thread",
        "input_over_train": round(input_per_s / train_per_s, 2), "target_input_over_train_min": 3,
        "input_over_pyarrow": round(input_per_s / plain_per_s, 2),
    }))


if __name__ == "__main__":
    main()
