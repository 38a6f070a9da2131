"""Benchmark: embed_catalog on Spark against the same SavedModel in one plain Python process,
and the cost of an incremental run.

Prints ONE JSON line. Not a test. In one run, in a temp folder:

1. Spark (``local[2]``) writes a ``sku_images`` table of ``--skus`` synthetic SKUs (64x64
   PNG: a colour gradient and a rectangle per SKU, generated on the executors) with
   ``upsert_sku_images`` (Change Data Feed on), and a freshly built, untrained
   mini_inception stage-1 model (real TensorFlow) is exported to a temp registry.
2. ``plain``: one Python process (a subprocess, so the Spark JVM is idle meanwhile; TF
   at 2 intra-op threads = the same 2 cores) imports TensorFlow, loads the SavedModel
   with :func:`adrank.embed.udf.load_embedder` (the UDF's own predict function), reads
   the table's ``image`` column with ``deltalake`` in batches of ``--batch`` and embeds
   them, then saves the embeddings (``.npy``).
3. ``spark``: the first (full) ``embed_catalog`` run over the same table: same model,
   same batch size, ``local[2]`` (2 tasks, each TF at 1 thread). ``embed_cnn`` is its
   embedding stage (read sku_images, decode, CNN, write the staging Parquet); the job
   adds the plan, the MERGE into ``sku_embeddings`` and the serving snapshot.
4. ``incremental``, ``--repeats`` times: another ``--changed`` (1%) SKUs get new images
   (one partial MERGE into ``sku_images``), then an incremental run; each must embed
   exactly those SKUs. One run of a few seconds on a shared 2-core machine is noisy, so
   the median and the worst ratio are both reported.

Each step's seconds come with the Spark jobs, stages and tasks it ran (``*_spark_work``):
on a shared machine the seconds are noisy, the counts are not.

Targets: ``spark_over_plain`` >= 0.8 (embedding stage) and ``incremental_over_full``
(the median run) <= 0.15 (issue 23: <= 0.10 at ``--tower-width 16``). The tower is mini_inception with ``--tower-width`` (default 32, the demo's is 16):
heavier than the demo's so that, as with a production CNN, the model rather than the
fixed per-run Delta work dominates a full run; the JSON states it.

Usage: ``.venv/bin/python bench/embed.py [--skus N] [--changed K] [--batch B] [--tower-width W] [--repeats R]``
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
IMAGE_SIZE = 64
CORES = 2


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options (``--plain`` runs the baseline; the benchmark calls it)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skus", type=int, default=50_000)
    parser.add_argument("--changed", type=int, default=500)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--tower-width", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3, help="incremental runs, each on another 1%%")
    parser.add_argument("--plain", nargs=3, metavar=("MODEL", "TABLE", "OUT"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def bench_config(root: Path, args: argparse.Namespace):
    """The demo config at this benchmark's sizes, under ``root``."""
    from adrank.core.config import load_config

    return load_config(REPO / "conf" / "local.yaml", [
        f"storage.root={root / 'tables'}", f"inputs.root={root / 'inputs'}",
        f"features.image_size={IMAGE_SIZE}", f"train.tower_width={args.tower_width}",
        f"embed.batch_size={args.batch}", f"spark.master=local[{CORES}]"])


def synthetic_images(batches, variant: int):  # noqa: ANN001, ANN201 - mapInPandas iterators
    """Executor side: one PNG per ``id`` (gradient + rectangle, seeded by id and variant)."""
    import hashlib
    import io

    import numpy as np
    import pandas as pd
    from PIL import Image

    ramp = np.linspace(0.0, 1.0, IMAGE_SIZE, dtype=np.float32)
    for frame in batches:
        rows = []
        for sku in frame["id"]:
            rng = np.random.default_rng([int(sku), variant])
            a, b = rng.integers(0, 256, (2, 3))
            pixels = (a + (b - a) * ramp[:, None, None]).repeat(IMAGE_SIZE, 1).astype(np.uint8)
            x, y = rng.integers(0, IMAGE_SIZE // 2, 2)
            pixels[y:y + IMAGE_SIZE // 3, x:x + IMAGE_SIZE // 3] = rng.integers(0, 256, 3)
            buffer = io.BytesIO()
            Image.fromarray(pixels).save(buffer, "PNG", compress_level=1)
            data = buffer.getvalue()
            rows.append((int(sku), f"sku {sku}", data, "PNG", IMAGE_SIZE, IMAGE_SIZE, 3,
                         hashlib.sha256(data).hexdigest(), int(sku) % 16))
        yield pd.DataFrame(rows, columns=["sku_id", "title", "image", "image_format", "height", "width",
                                          "channels", "image_hash", "category_id"])


def write_images(spark, config, ids, variant: int, full_snapshot: bool) -> int:  # noqa: ANN001
    """MERGE synthetic images of the SKUs ``ids`` (a DataFrame of ``id``) into sku_images."""
    import functools

    from pyspark.sql import functions as F

    from adrank.core import layout
    from adrank.tables import store as build_store

    schema = ("sku_id long, title string, image binary, image_format string, height int, width int, "
              "channels int, image_hash string, category_id int")
    rows = (ids.mapInPandas(functools.partial(synthetic_images, variant=variant), schema)
            .withColumn("updated_at", F.current_timestamp())
            .select("sku_id", "title", "image", "image_format", "height", "width", "channels", "image_hash",
                    "updated_at", "category_id"))
    path = layout.table_path(config, layout.SKU_IMAGES)
    return build_store.upsert_sku_images(spark, rows, path, {"run_id": f"bench-{variant}"}, full_snapshot)["version"]


def export_model(config) -> tuple[int, str]:  # noqa: ANN001
    """A freshly built (untrained) stage-1 model, exported by a subprocess (no TF in this one)."""
    code = (
        "import sys, tensorflow as tf\n"
        "from adrank.train.ranks.models import PairwiseModel, sku_tower\n"
        "from adrank.train.registry import export_model\n"
        "tf.keras.utils.set_random_seed(0)\n"
        "m = PairwiseModel(sku_tower('mini_inception', int(sys.argv[2]), int(sys.argv[3]), width=int(sys.argv[4])))\n"
        "print(export_model(sys.argv[1], 'pairwise', pairwise_model=m, image_size=int(sys.argv[2]),"
        " data_version=0)[1])\n")
    from adrank.core.layout import registry_root

    args = [registry_root(config), IMAGE_SIZE, config.train.embedding_dim, config.train.tower_width]
    out = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, check=True)
    return 1, out.stdout.strip().splitlines()[-1]


def plain_baseline(model_path: str, table: str, out: str, batch: int) -> dict:
    """In this (fresh) process: TF import, model load, read, decode, embed, save; images/s."""
    start = time.perf_counter()
    import numpy as np
    from deltalake import DeltaTable

    from adrank.embed.udf import load_embedder

    embed = load_embedder(model_path, threads=CORES)
    loaded = time.perf_counter()
    chunks, rows = [], 0
    for record_batch in DeltaTable(table).to_pyarrow_dataset().to_batches(columns=["image"], batch_size=batch):
        images = np.array(record_batch.column(0).to_pylist(), dtype=object)
        chunks.append(embed(images))
        rows += len(images)
    np.save(out, np.concatenate(chunks))
    seconds = time.perf_counter() - start
    return {"images": rows, "seconds": round(seconds, 2), "images_per_s": round(rows / seconds, 1),
            "load_s": round(loaded - start, 2)}


def run_plain(model_path: str, table: str, root: Path, batch: int) -> dict:
    """The baseline in a subprocess (its own TF, 2 threads) while Spark idles."""
    out = subprocess.run(
        [sys.executable, __file__, "--batch", str(batch), "--plain", model_path, table, str(root / "plain.npy")],
        capture_output=True, text=True, check=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def counting_report(spark):  # noqa: ANN001, ANN201 - a RunReport
    """A RunReport whose timed steps also count their Spark jobs and tasks (``spark_work``):
    a measure of the fixed per-run work that, unlike seconds, a shared machine's load does not blur."""
    from contextlib import contextmanager

    from adrank.runtime.runs import RunReport

    tracker = spark.sparkContext.statusTracker()

    class CountingReport(RunReport):
        spark_work: dict

        @contextmanager
        def timed(self, step: str):  # noqa: ANN202
            group = f"{self.run_id}-{step}"
            spark.sparkContext.setJobGroup(group, step)
            try:
                with super().timed(step):
                    yield
            finally:
                spark.sparkContext.setJobGroup("bench", "bench")
                jobs = tracker.getJobIdsForGroup(group)
                stages = [s for j in jobs if (info := tracker.getJobInfo(j)) for s in info.stageIds]
                tasks = sum(info.numTasks for s in stages if (info := tracker.getStageInfo(s)))
                self.spark_work[step] = {"jobs": len(jobs), "stages": len(stages), "tasks": tasks}

    report = CountingReport("embed_catalog")
    report.spark_work = {}
    return report


def timed_run(spark, config) -> tuple[dict, float]:  # noqa: ANN001
    """One embed_catalog run: (figures with timings and Spark work per step, wall seconds)."""
    from adrank.embed.run import embed_catalog

    report = counting_report(spark)
    start = time.perf_counter()
    figures = embed_catalog(spark, config, report).as_json()["embed_catalog"]
    seconds = time.perf_counter() - start
    return {**figures, "timings_s": report.timings_s, "spark_work": report.spark_work}, seconds


def changed_ids_embedded(spark, config, changed) -> bool:  # noqa: ANN001
    """The rows written by the last run are exactly the changed SKUs."""
    from pyspark.sql import functions as F

    from adrank.core import layout
    from adrank.storage import delta
    table = delta.read_delta(spark, layout.table_path(config, layout.SKU_EMBEDDINGS))
    latest = table.agg(F.max("updated_at")).first()[0]
    written = table.where(F.col("updated_at") == latest).select(F.col("sku_id").alias("id"))
    return written.exceptAll(changed).count() == 0 and changed.exceptAll(written).count() == 0


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print one JSON line."""
    args = parse_args(argv)
    if args.plain:
        print(json.dumps(plain_baseline(*args.plain, batch=args.batch)))
        return 0
    from adrank.core import layout
    from adrank.runtime.spark import build_spark

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="adrank-bench-embed-") as folder:
        root = Path(folder)
        config = bench_config(root, args)
        spark = build_spark(config.spark, "adrank-bench-embed")
        started = time.perf_counter()
        write_images(spark, config, spark.range(args.skus, numPartitions=CORES * 2), variant=0, full_snapshot=True)
        _, model_path = export_model(config)
        prepare_s = time.perf_counter() - started
        plain = run_plain(model_path, layout.table_path(config, layout.SKU_IMAGES), root, args.batch)
        full, full_s = timed_run(spark, config)
        incrementals = []
        for repeat in range(args.repeats):
            changed = spark.range(repeat, args.skus, args.skus // args.changed)  # every k-th SKU, shifted
            write_images(spark, config, changed, variant=1 + repeat, full_snapshot=False)
            figures, seconds = timed_run(spark, config)
            incrementals.append((seconds, figures, changed_ids_embedded(spark, config, changed)))
        spark.stop()
    seconds = sorted(s for s, _, _ in incrementals)
    median_s = seconds[len(seconds) // 2]
    incremental_s, incremental, _ = next(run for run in incrementals if run[0] == median_s)
    spark_embed = args.skus / full["timings_s"]["embed_cnn"]
    print(json.dumps({
        "bench": "embed",
        "shape": {"skus": args.skus, "image": f"{IMAGE_SIZE}x{IMAGE_SIZE} PNG", "batch": args.batch,
                  "cores": CORES, "spark": f"local[{CORES}], {CORES} tasks x 1 TF thread",
                  "plain": f"1 process x {CORES} TF threads",
                  "tower": f"mini_inception width {config.train.tower_width}, dim {config.train.embedding_dim}",
                  "changed": args.changed},
        "plain_images_per_s": plain["images_per_s"], "plain_s": plain["seconds"],
        "spark_embed_images_per_s": round(spark_embed, 1),
        "spark_job_images_per_s": round(args.skus / full_s, 1),
        "spark_over_plain": round(spark_embed / plain["images_per_s"], 3),
        "spark_job_over_plain": round(args.skus / full_s / plain["images_per_s"], 3),
        "full_s": round(full_s, 2), "full_timings_s": full["timings_s"],
        "full_spark_work": full["spark_work"],
        "incremental_s": round(incremental_s, 2), "incremental_timings_s": incremental["timings_s"],
        "incremental_spark_work": incremental["spark_work"],
        "incremental_runs_s": [round(s, 2) for s, _, _ in incrementals],
        "incremental_over_full": round(incremental_s / full_s, 3),
        "incremental_over_full_worst": round(seconds[-1] / full_s, 3),
        "incremental_over_full_without_serving_export": round(
            (incremental_s - incremental["timings_s"]["embed_serving"])
            / (full_s - full["timings_s"]["embed_serving"]), 3),
        "incremental_modes": sorted({f["mode"] for _, f, _ in incrementals}),
        "incremental_embedded": [f["skus_embedded"] for _, f, _ in incrementals],
        "incremental_serving_patched_from": [f["serving_snapshot"]["patched_from"] for _, f, _ in incrementals],
        "incremental_embedded_exactly_the_changed": all(exact for _, _, exact in incrementals),
        "prepare_s": round(prepare_s, 1),
        "load_avg_1m_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
    }, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
