"""Benchmark the training curve's held-out metric: training time with and without it.

Prints one JSON line. On the tiny config (``conf/tiny.yaml``: 2 ranks, one TF thread
each; stage 1 6 steps of 16 pairs of 32x32 images, the LR 6 steps of 128 rows, a
checkpoint every 3 steps), each stage is launched on Petastorm files (inline data: 4
files of training rows, 4 of held-out rows) with ``train.holdout_curve_rows`` 0 (no
curve) and at its default (1024; the held-out files hold ``--holdout-rows`` rows), in
alternation, ``--repeats`` times each, every launch into a fresh checkpoint folder.
Figures per stage: the median of the ranks' own training seconds (``seconds``: from
``hvd.init`` to the end, the sample read included) and of the launch's wall time, and
their ratios (with / without).

Usage: ``.venv/bin/python bench/holdout_curve.py [--repeats 3] [--holdout-rows 512]``
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
FILES = 4


def png(rng: np.random.Generator, side: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def write_files(folder: Path, table_of_rows) -> list[str]:
    """``FILES`` Parquet files, each the table ``table_of_rows(file index)``."""
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    paths = [str(folder / f"part-{i}.parquet") for i in range(FILES)]
    for index, path in enumerate(paths):
        pq.write_table(table_of_rows(index), path)
    return paths


def pair_table(rows: int, side: int, seed: int):
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    return pa.table({"kind": ["detail"] * rows, "query": [""] * rows,
                     **{name: pa.array([png(rng, side) for _ in range(rows)], pa.binary())
                        for name in ("context_image", "pos_image", "neg_image")}})


def example_table(rows: int, width: int, seed: int):
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    ids = rng.integers(1, 2 ** 16, (rows, width))
    return pa.table({"sparse_ids": pa.array(list(ids), pa.list_(pa.int64())),
                     "num_sparse_ids": pa.array(np.full(rows, width, np.int32)),
                     "label": pa.array((ids[:, 0] % 2).astype(np.int32))})


def launch_once(config, stage: str, files, holdout_files, root: Path, curve_rows: int) -> dict[str, float]:
    import dataclasses

    from adrank.train.launch import launch, make_settings

    train = dataclasses.replace(config.train, holdout_curve_rows=curve_rows, launcher="horovodrun")
    settings = make_settings(config, stage=stage, data_version=1, files=files, holdout_files=holdout_files,
                             checkpoint_root=str(root), train=train)
    started = time.perf_counter()
    result = launch(settings)
    return {"seconds": float(result["seconds"]), "wall": time.perf_counter() - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--holdout-rows", type=int, default=512, help="rows of the held-out files")
    args = parser.parse_args()
    from adrank.core.config import load_config

    config = load_config(REPO / "conf" / "tiny.yaml", ["features.max_sparse_ids=8"])
    side, width, per_file = config.features.image_size, config.features.max_sparse_ids, args.holdout_rows // FILES
    figures: dict[str, object] = {"ranks": config.train.ranks, "holdout_rows": args.holdout_rows,
                                  "holdout_curve_rows": config.train.holdout_curve_rows, "repeats": args.repeats}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        inputs = {
            "pairwise": ({"detail": write_files(root / "pairs", lambda i: pair_table(64, side, i))},
                         {"detail": write_files(root / "pairs_holdout", lambda i: pair_table(per_file, side, 10 + i))},
                         f"{config.train.pair_steps} steps of {config.train.pair_batch_size} pairs of {side}x{side}"),
            "lr": ({"examples": write_files(root / "examples", lambda i: example_table(1024, width, i))},
                   {"examples": write_files(root / "examples_holdout",
                                            lambda i: example_table(per_file, width, 10 + i))},
                   f"{config.train.lr_steps} steps of {config.train.lr_batch_size} rows x {width} ids"),
        }
        for stage, (files, holdout_files, shape) in inputs.items():
            runs: dict[int, list[dict[str, float]]] = {0: [], config.train.holdout_curve_rows: []}
            for repeat in range(args.repeats):
                for rows in runs:
                    runs[rows].append(launch_once(config, stage, files, holdout_files,
                                                  root / "checkpoints" / f"{stage}-{rows}-{repeat}", rows))
            without, with_curve = (runs[rows] for rows in runs)
            medians = {name: {key: statistics.median(r[key] for r in results) for key in ("seconds", "wall")}
                       for name, results in (("without", without), ("with", with_curve))}
            figures[stage] = {
                "shape": shape, "checkpoint_every": config.train.checkpoint_every, **medians,
                "ratio_seconds": round(medians["with"]["seconds"] / medians["without"]["seconds"], 3),
                "ratio_wall": round(medians["with"]["wall"] / medians["without"]["wall"], 3)}
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
