"""Deterministic randomness and fixed generation blocks for the sample generator.

Every random draw of the generator comes from ``numpy.random.default_rng([seed,
stream, block_start])``: a stream names what is drawn (images, impressions, ...) and a
block is a fixed range of row indices. Rows therefore depend only on the seed and the
sizes, never on how Spark splits the work.
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from enum import IntEnum

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F


class Stream(IntEnum):
    """Independent random streams, one per kind of thing drawn."""

    WORLD = 1
    SKU_ATTRIBUTES = 2
    IMAGES = 3
    IMPRESSIONS = 4
    USER_SNAPSHOTS = 5
    SKU_SNAPSHOTS = 6
    BROKEN = 7


def block_rng(seed: int, stream: Stream, block_start: int) -> np.random.Generator:
    """Returns the random generator of one block of one stream.

    Args:
        seed: The sample seed.
        stream: What the block draws.
        block_start: Index of the block's first row.
    """
    return np.random.default_rng([seed, int(stream), block_start])


def block_frame(spark: SparkSession, num_rows: int, rows_per_block: int) -> DataFrame:
    """Returns one row per generation block, one block per partition.

    Args:
        spark: The session.
        num_rows: Rows to generate in all.
        rows_per_block: Fixed block size; the last block may be shorter.

    Returns:
        A DataFrame of ``block_start`` and ``block_size`` (longs).
    """
    num_blocks = max(1, math.ceil(num_rows / rows_per_block))
    start = F.col("id") * F.lit(rows_per_block)
    return spark.range(num_blocks, numPartitions=num_blocks).select(
        start.alias("block_start"),
        F.least(F.lit(rows_per_block), F.lit(num_rows) - start).alias("block_size"),
    )


def block_ranges(batches: Iterator[pd.DataFrame]) -> Iterator[tuple[int, int]]:
    """Yields ``(block_start, block_size)`` pairs from mapInPandas input batches.

    Args:
        batches: Iterator of pandas DataFrames made by ``block_frame``.
    """
    for batch in batches:
        for start, size in zip(batch["block_start"], batch["block_size"]):
            yield int(start), int(size)
