"""Benchmark: similar-SKU search at N and 4N SKUs, exact (blocked) against the inverted-file index.

Prints ONE JSON line. Not a test. In one run, in a temp folder, on Spark ``local[2]``:

1. Synthetic embeddings (D = ``--dim``): ``--topics`` random unit directions, each SKU one
   of them plus Gaussian noise of ``--spread`` per coordinate, then scaled to length 1
   (clustered like real catalog embeddings, and not trivially separable). The 4N catalog
   holds the N one plus 3N more SKUs drawn the same way.
2. For each size: a real serving snapshot of the catalog (the exact search reads it,
   memory-mapped) and the catalog as a DataFrame (cached, counted before timing).
   ``exact``: :func:`adrank.recommend.neighbours.nearest` of every SKU (itself excluded)
   over the snapshot, written to Spark's ``noop`` sink. ``ivf``: the index build
   (:func:`adrank.recommend.index.build_index`: ``KMeans`` on Spark ML, assignment, the
   sorted stream into files), then the same ``nearest`` over it with ``--nprobe``.
3. recall@10 of the IVF result against exact search on a sample of ``--recall-sample``
   SKUs (the exact answer computed in numpy on the driver, the same cosine).

Targets: recall@10 >= 0.95; the JSON gives ``ivf_speedup_at_4n`` = exact seconds / IVF
seconds (build + search) at 4N, and how each method grows from N to 4N (exact is
quadratic, the index about N^1.5 with sqrt(N) lists).

Usage: ``.venv/bin/python bench/recommend.py [--skus N] [--dim D] [--nprobe P] [--lists L]``
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "lib"))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skus", type=int, default=20_000, help="N (the second size is 4N)")
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--topics", type=int, default=200)
    parser.add_argument("--spread", type=float, default=0.2)
    parser.add_argument("--nprobe", type=int, default=16)
    parser.add_argument("--lists", type=int, default=0, help="IVF lists (0: about sqrt(SKUs), the job's default)")
    parser.add_argument("--recall-sample", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=7)
    return parser.parse_args(argv)


def catalog(n: int, args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray]:
    """``(ids, unit vectors)`` of ``n`` SKUs; the first ``m`` rows are the same for every ``n >= m``."""
    from adrank.recommend.neighbours import unit_rows

    rng = np.random.default_rng(args.seed)
    topics = unit_rows(rng.normal(size=(args.topics, args.dim)))
    which = rng.integers(0, args.topics, n)
    noise = rng.normal(scale=args.spread, size=(n, args.dim))
    return np.arange(n, dtype=np.int64) + 1, unit_rows(topics[which] + noise)


def write_snapshot(root: Path, ids: np.ndarray, vectors: np.ndarray) -> str:
    from adrank.embed.serving import Shape, publish_snapshot, write_arrays

    def write(folder: Path) -> None:
        write_arrays([(ids, vectors)], folder, len(ids), vectors.shape[1])

    return str(root / f"v{publish_snapshot(root, write, Shape(len(ids), vectors.shape[1], 0, 1), keep=1)}")


def timed(step) -> tuple[float, object]:  # noqa: ANN001 - a zero-argument callable
    start = time.perf_counter()
    result = step()
    return round(time.perf_counter() - start, 3), result


def one_size(spark, n: int, args: argparse.Namespace, work: Path) -> dict:  # noqa: ANN001
    from pyspark.sql import functions as F

    from adrank.recommend import index
    from adrank.recommend.neighbours import EXACT, IVF, Catalog, Limits, exact_search, nearest

    ids, vectors = catalog(n, args)
    folder = write_snapshot(work / f"serving-{n}", ids, vectors)
    frame = spark.createDataFrame([(int(i), v.tolist()) for i, v in zip(ids, vectors)],
                                  "sku_id long, embedding array<float>").repartition(4).cache()
    frame.count()
    requests = frame.select("sku_id", F.col("embedding").alias("vector"), F.array("sku_id").alias("exclude"))
    limits = Limits(10)

    def run(catalog_: Catalog) -> None:
        nearest(requests, "sku_id", catalog_, limits).write.format("noop").mode("overwrite").save()

    exact_s, _ = timed(lambda: run(Catalog(EXACT, folder)))
    lists = args.lists or index.default_lists(n)
    build_s, (built, _) = timed(lambda: index.build_index(frame, work / f"ivf-{n}", lists=lists, train_rows=lists * 64,
                                                     max_iterations=10, seed=args.seed))
    ivf = Catalog(IVF, str(work / f"ivf-{n}"), min(args.nprobe, built["lists"]))
    search_s, _ = timed(lambda: run(ivf))
    sample = np.random.default_rng(args.seed + 1).choice(n, min(args.recall_sample, n), replace=False)
    wanted = requests.where(F.col("sku_id").isin([int(ids[i]) for i in sample]))
    found = {r.sku_id: [x.sku_id for x in r.neighbours] for r in nearest(wanted, "sku_id", ivf, limits).collect()}
    truth = exact_search(vectors[sample], [np.array([ids[i]]) for i in sample], ids, vectors, limits)
    recall = float(np.mean([len(set(found[int(ids[i])]) & set(t.tolist())) / len(t)
                            for i, (t, _) in zip(sample, truth)]))
    frame.unpersist()
    return {"skus": n, "exact_s": exact_s, "ivf_build_s": build_s, "ivf_search_s": search_s,
            "ivf_s": round(build_s + search_s, 3), "ivf_lists": built["lists"], "ivf_nprobe": ivf.nprobe,
            "largest_list": built["largest_list"], "recall_at_10": round(recall, 4), "recall_sample": len(sample)}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from adrank.core.config import load_config
    from adrank.runtime.spark import build_spark

    with tempfile.TemporaryDirectory(prefix="bench-recommend-") as tmp:
        work = Path(tmp)
        config = load_config(REPO / "conf" / "local.yaml", [f"storage.root={work / 'tables'}",
                                                           f"inputs.root={work / 'inputs'}"])
        spark = build_spark(config.spark, "adrank-bench-recommend")
        spark.sparkContext.setLogLevel("ERROR")
        try:
            small = one_size(spark, args.skus, args, work)
            large = one_size(spark, 4 * args.skus, args, work)
        finally:
            spark.stop()
    print(json.dumps({
        "bench": "recommend", "shape": {"dim": args.dim, "topics": args.topics, "spread": args.spread, "k": 10,
                                        "cores": 2, "master": "local[2]"},
        "n": small, "4n": large,
        "exact_growth_n_to_4n": round(large["exact_s"] / small["exact_s"], 2),
        "ivf_growth_n_to_4n": round(large["ivf_s"] / small["ivf_s"], 2),
        "ivf_speedup_at_4n": round(large["exact_s"] / large["ivf_s"], 2),
        "ivf_search_speedup_at_4n": round(large["exact_s"] / large["ivf_search_s"], 2),
        "recall_at_10_at_4n": large["recall_at_10"],
    }, sort_keys=True))


if __name__ == "__main__":
    main()
