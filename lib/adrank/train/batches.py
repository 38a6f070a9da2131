"""Held-out rows streamed from Spark to the driver as numpy batches, for evaluation.

Contract: each function takes a DataFrame and yields dict batches with the structures
the models take (:mod:`adrank.train.ranks.input` yields the same on the ranks); rows
reach the driver chunk by chunk (``toLocalIterator``), so memory is per batch.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from adrank.core import layout
from adrank.tables.store import decode_stored_images

EVAL_BATCH = 256
EXAMPLE_BATCH = 4096
Batch = dict[str, np.ndarray]
Row = dict[str, Any]  # one Spark Row's values by column (bytes, str, int, lists)


def row_chunks(frame: DataFrame, size: int = EVAL_BATCH) -> Iterator[list[Row]]:
    """The rows of ``frame`` as lists of dicts, streamed to the driver (memory per chunk)."""
    rows = []
    for row in frame.toLocalIterator():
        rows.append(row.asDict())
        if len(rows) == size:
            yield rows
            rows = []
    if rows:
        yield rows


def pair_batches(holdout: DataFrame) -> Iterator[Batch]:
    """Stage-1 pairs: ``detail`` batches (context image) then ``search`` batches (query)."""
    for kind in (layout.DETAIL, layout.SEARCH):
        frame = holdout.where(F.col("kind") == kind)
        for rows in row_chunks(frame):
            batch = {"pos_image": decode_stored_images([r["pos_image"] for r in rows]),
                     "neg_image": decode_stored_images([r["neg_image"] for r in rows])}
            if kind == layout.DETAIL:
                batch["context_image"] = decode_stored_images([r["context_image"] for r in rows])
            else:
                batch["query"] = np.array([r["query"] for r in rows], dtype=object)
            yield batch


def catalog_batches(images: DataFrame) -> Iterator[Batch]:
    """``sku_images`` rows: decoded image and category id (-1 when missing)."""
    frame = images.select("image", F.coalesce("category_id", F.lit(-1)).alias("category_id"))
    for rows in row_chunks(frame):
        yield {"image": decode_stored_images([r["image"] for r in rows]),
               "category_id": np.array([r["category_id"] for r in rows])}


def example_batches(holdout: DataFrame) -> Iterator[Batch]:
    """``training_examples`` rows: hashed ids, label, cold-start flag, ad SKU."""
    frame = holdout.select("sparse_ids", "num_sparse_ids", "label", "is_cold_start_ad", "ad_sku_id", "page")
    for rows in row_chunks(frame, EXAMPLE_BATCH):
        yield {
            "sparse_ids": np.array([r["sparse_ids"] for r in rows], dtype=np.int64),
            "num_sparse_ids": np.array([r["num_sparse_ids"] for r in rows], dtype=np.int32),
            "label": np.array([r["label"] for r in rows], dtype=np.float32),
            "is_cold_start_ad": np.array([r["is_cold_start_ad"] for r in rows], dtype=bool),
            "ad_sku_id": np.array([r["ad_sku_id"] for r in rows], dtype=np.int64),
            "page_name": np.array([r["page"] for r in rows], dtype=object),
        }


def joint_batches(holdout: DataFrame, with_images: bool = False) -> Iterator[Batch]:
    """``joint_examples_holdout`` rows: the joint model's inputs, the LR's, and the evaluation columns."""
    for rows in row_chunks(holdout, EXAMPLE_BATCH):
        batch: Batch = {
            "sparse_ids": np.array([r["sparse_ids"] for r in rows], dtype=np.int64),
            "num_sparse_ids": np.array([r["num_sparse_ids"] for r in rows], dtype=np.int32),
            "label": np.array([r["label"] for r in rows], dtype=np.float32),
            "page": np.array([r["page"] for r in rows], dtype=np.int32),
            "page_name": np.array([r["page_name"] for r in rows], dtype=object),
            "x": np.array([r["x"] for r in rows], dtype=np.float32),
            "x_present": np.array([r["x_present"] for r in rows], dtype=np.float32),
            "y": np.array([r["y"] for r in rows], dtype=np.float32),
            "y_present": np.array([r["y_present"] for r in rows], dtype=np.float32),
            "is_cold_start_ad": np.array([r["is_cold_start_ad"] for r in rows], dtype=bool),
            "ad_sku_id": np.array([r["ad_sku_id"] for r in rows], dtype=np.int64),
        }
        if with_images:
            batch["ad_image"] = decode_stored_images([r["ad_image"] for r in rows])
            batch["context_image"] = decode_stored_images([r["context_image"] for r in rows])
            batch["query"] = np.array([r["query"] for r in rows], dtype=object)
        yield batch


__all__ = ["catalog_batches", "example_batches", "joint_batches", "pair_batches", "row_chunks"]
