"""Benchmark ``build_tables``: cost at N and 4N impressions, and image preprocessing speed.

Prints one JSON line. In one Spark session (local[2]) and one run:

* the generator writes inputs with N and 4N impressions (same catalog); a warm-up build
  on a small input runs first, then ``build_tables`` on each size into a fresh storage
  root; figures: rows/s of each and the ratio of their times (target <= 4.4, linear);
  the ``training_examples`` step alone is reported too, since the catalog is a fixed cost;
* image preprocessing: ``preprocess_images`` on Spark (images/s per core) against a
  plain single-process loop of the same ``decode_resize_encode`` over the same images
  (target: Spark per core >= 0.7 of the loop). Reported from wall time (meaningful on a
  quiet machine) and from CPU seconds of the whole process tree, JVM and Python workers
  included (robust when other work shares the cores). Also the same preprocessing in a
  rebuild where every image is already stored (``stored_keys``: matched by sha256, not
  decoded): ``rebuild_speedup`` against decoding them all.

Usage: ``.venv/bin/python bench/build_tables.py [--impressions N] [--skus S]``
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def bench_config(root: Path, impressions: int, skus: int):
    """The demo config with sizes for one benchmark input, under ``root``."""
    from adrank.core.config import load_config

    return load_config(
        REPO / "conf" / "local.yaml",
        [f"storage.root={root / 'tables'}", f"inputs.root={root / 'inputs'}",
         f"sample.num_impressions={impressions}", f"sample.num_skus={skus}",
         f"sample.num_users={max(100, skus // 2)}"],
    )


def timed_build(spark, config) -> dict:
    """Generate the inputs, then time ``build_tables`` over all their dates."""
    from adrank.runtime.runs import RunReport
    from adrank.sample.generate import generate_inputs
    from adrank.tables.run import build_tables

    generate_inputs(spark, config.sample, config.inputs.root)
    report = RunReport("bench_build_tables")
    start = time.perf_counter()
    build_tables(spark, config, report, None)
    seconds = time.perf_counter() - start
    rows = report.figures["sources"]["click_log"]["input"]
    return {"impressions": rows, "seconds": round(seconds, 2), "rows_per_s": round(rows / seconds),
            "examples_step_s": report.timings_s["training_examples"]}


def tree_cpu_seconds() -> float:
    """CPU seconds (user + system) used so far by this process and all its descendants
    (the Spark JVM and its Python workers, which are reused between tasks)."""
    import psutil

    total = 0.0
    for process in [psutil.Process(), *psutil.Process().children(recursive=True)]:
        try:
            times = process.cpu_times()
            total += times.user + times.system
        except psutil.Error:
            continue
    return total


def best_seconds(action, repeats: int = 3) -> tuple[float, float]:
    """The fastest wall seconds and the fewest CPU seconds of ``repeats`` calls."""
    walls, cpus = [], []
    for _ in range(repeats):
        cpu, start = tree_cpu_seconds(), time.perf_counter()
        action()
        walls.append(time.perf_counter() - start)
        cpus.append(tree_cpu_seconds() - cpu)
    return min(walls), min(cpus)


def image_rates(spark, config) -> dict:
    """Images/s of Spark preprocessing per core and of a plain single-process loop.

    Both run the same ``decode_resize_encode`` over the same catalog images (cached in
    memory, one partition per core), best of three each, alternating.
    """
    from adrank.core.layout import CATALOG, input_path
    from adrank.sample.generate import generate_inputs
    from adrank.tables import inputs
    from adrank.tables.images import decode_resize_encode, preprocess_images

    generate_inputs(spark, config.sample, config.inputs.root)
    cores = spark.sparkContext.defaultParallelism
    catalog = inputs.read_catalog(spark, input_path(config, CATALOG), config.features.max_image_bytes)
    catalog = catalog.repartition(cores).cache()
    images = [row.image for row in catalog.select("image").collect()]
    features = config.features

    def spark_pass():
        preprocess_images(catalog, features).write.format("noop").mode("overwrite").save()

    def loop_pass():
        for data in images:
            decode_resize_encode(data, features.image_size, features.image_store_format, features.max_image_pixels)

    spark_pass()  # warm-up: Python workers start, caches fill
    spark_wall, spark_cpu = best_seconds(spark_pass)
    loop_wall, loop_cpu = best_seconds(loop_pass)
    rebuild_wall, _ = best_seconds(stored_images_pass(spark, config, catalog))
    catalog.unpersist()
    n = len(images)
    return {
        "images": n, "cores": cores, "image_size": features.image_size, "store_format": features.image_store_format,
        "spark_images_per_s_per_core": round(n / spark_wall / cores, 1),
        "plain_loop_images_per_s": round(n / loop_wall, 1),
        "ratio_wall": round((n / spark_wall / cores) / (n / loop_wall), 3),
        "spark_images_per_cpu_s": round(n / spark_cpu, 1),
        "plain_loop_images_per_cpu_s": round(n / loop_cpu, 1),
        "ratio_cpu": round(loop_cpu / spark_cpu, 3),
        "rebuild_unchanged_catalog_s": round(rebuild_wall, 2), "decode_all_s": round(spark_wall, 2),
        "rebuild_speedup": round(spark_wall / rebuild_wall, 2),
    }


def stored_images_pass(spark, config, catalog):  # noqa: ANN001, ANN201
    """A rebuild's preprocessing when every image is already stored: keys matched, nothing decoded."""
    from adrank.core import layout
    from adrank.tables import store as build_store
    from adrank.tables.images import preprocess_images, preprocessing_fingerprint, split_images

    fingerprint = preprocessing_fingerprint(config.features)
    path = layout.table_path(config, layout.SKU_IMAGES)
    good, _ = split_images(preprocess_images(catalog, config.features))
    build_store.upsert_sku_images(spark, good, path, {"run_id": "bench"}, preprocessing=fingerprint)
    stored = build_store.stored_image_keys(spark, path, fingerprint)

    def rebuild_pass():
        preprocess_images(catalog, config.features, stored_keys=stored).write.format("noop").mode("overwrite").save()

    return rebuild_pass


def main() -> None:
    """Run both benchmarks and print one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--impressions", type=int, default=50_000, help="N (the larger run is 4N)")
    parser.add_argument("--skus", type=int, default=2000)
    parser.add_argument("--image-skus", type=int, default=8000, help="catalog size of the image benchmark")
    parser.add_argument("--only-images", action="store_true", help="skip the N / 4N build runs")
    args = parser.parse_args()
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from adrank.runtime.spark import build_spark

    with tempfile.TemporaryDirectory(prefix="adrank-bench-") as tmp:
        root = Path(tmp)
        spark = build_spark(bench_config(root / "warm", 2000, 200).spark, "adrank-bench-build")
        figures = {"bench": "build_tables", "skus": args.skus}
        if not args.only_images:
            timed_build(spark, bench_config(root / "warm", 2000, 200))
            small = timed_build(spark, bench_config(root / "n", args.impressions, args.skus))
            large = timed_build(spark, bench_config(root / "4n", 4 * args.impressions, args.skus))
            figures.update({
                "n": small, "4n": large, "target_time_ratio_max": 4.4,
                "time_ratio_4n_over_n": round(large["seconds"] / small["seconds"], 3),
                "examples_step_ratio": round(large["examples_step_s"] / small["examples_step_s"], 3),
            })
        figures["image_preprocessing"] = image_rates(spark, bench_config(root / "img", 1000, args.image_skus))
        figures["target_image_ratio_min"] = 0.7
        spark.stop()
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
