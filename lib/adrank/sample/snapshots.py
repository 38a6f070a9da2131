"""Daily user and SKU feature snapshots, to be joined to impressions as of their time.

One JSON line per snapshot: ``{"entity_id": 12, "valid_from": "2026-11-01T03:22:10Z",
"features": ["segment=3", "activity=high", ...]}``. Every entity has a snapshot on the
day before the first day and one on each day at a random time, so part of a day's
impressions precede that day's snapshot. Cold-start SKUs have one snapshot only, at
00:00 of the last day (when they appear). Some tokens follow the planted click model
(user activity, SKU ctr bucket, user segment), others are noise.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from functools import partial
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession

from adrank.core.layout import SKU_SNAPSHOTS, USER_SNAPSHOTS
from adrank.sample.blocks import Stream, block_frame, block_ranges, block_rng
from adrank.sample.source import SourceData
from adrank.sample.world import SECONDS_PER_DAY, World, iso_timestamps

if TYPE_CHECKING:
    from adrank.core.config import SampleConfig

SNAPSHOT_BROKEN_KINDS = ("bad_timestamp",)
BAD_TIMESTAMPS = ("2026-13-45T99:61:00Z", "not-a-timestamp", "yesterday", "17/11/2026 10:00")
LEVELS = ("low", "mid", "high")
LEVEL_CUTS = (-0.25, 0.25)

SnapshotRows = Callable[[np.random.Generator, World, np.ndarray], pd.DataFrame]


def snapshot_times(rng: np.random.Generator, world: World, num_entities: int) -> np.ndarray:
    """Returns (entities, days + 1) epoch seconds: a random time in day -1, 0, 1, ..."""
    days = np.arange(-1, len(world.dates))
    day_starts = world.day_starts[0] + SECONDS_PER_DAY * days
    return day_starts[None, :] + rng.integers(0, SECONDS_PER_DAY, (num_entities, len(days)))


def levels(values: np.ndarray) -> np.ndarray:
    """Buckets values into low/mid/high."""
    return np.asarray(LEVELS)[np.digitize(values, LEVEL_CUTS)]


def user_snapshot_rows(rng: np.random.Generator, world: World, users: np.ndarray) -> pd.DataFrame:
    """Returns the snapshots of some users (indices): segment, daily activity, tenure."""
    valid_from = snapshot_times(rng, world, len(users))
    segment = world.category_palette[world.user_category[users]]
    tenure = rng.integers(0, 5, len(users))
    activity = levels(world.user_effect[users][:, None] + rng.normal(0.0, 0.3, valid_from.shape))
    features = [[[f"segment={segment[i]}", f"activity={activity[i, d]}", f"tenure={tenure[i]}"]
                 for d in range(valid_from.shape[1])] for i in range(len(users))]
    return snapshot_frame(users, valid_from, features, np.ones(valid_from.shape, bool))


def sku_snapshot_rows(rng: np.random.Generator, world: World, skus: np.ndarray) -> pd.DataFrame:
    """Returns the snapshots of some SKUs (indices): price, daily ctr bucket, stock."""
    valid_from = snapshot_times(rng, world, len(skus))
    price = rng.integers(0, 5, len(skus))
    ctr = levels(0.35 * world.sku_log_popularity[skus][:, None] + rng.normal(0.0, 0.3, valid_from.shape))
    stock = np.where(rng.random(valid_from.shape) < 0.8, "in", "low")
    is_cold = world.sku_is_cold[skus]
    valid_from[is_cold, -1] = world.day_starts[-1]
    ctr[is_cold, -1] = "new"
    features = [[[f"price={price[i]}", f"ctr={ctr[i, d]}", f"stock={stock[i, d]}"]
                 for d in range(valid_from.shape[1])] for i in range(len(skus))]
    keep = ~is_cold[:, None] | (np.arange(valid_from.shape[1]) == valid_from.shape[1] - 1)[None, :]
    return snapshot_frame(skus, valid_from, features, keep)


def snapshot_frame(entities: np.ndarray, valid_from: np.ndarray, features: list, keep: np.ndarray) -> pd.DataFrame:
    """Flattens (entity, day) grids into rows of ``entity_id``, ``valid_from``, ``features``."""
    rows, days = np.nonzero(keep)
    return pd.DataFrame({
        "entity_id": entities[rows] + 1,
        "valid_from": valid_from[rows, days],
        "features": [features[i][d] for i, d in zip(rows, days)],
    })


def snapshot_line(entity_id: int, valid_from: str, features: list[str]) -> str:
    """Returns one snapshot JSON line."""
    return json.dumps({"entity_id": int(entity_id), "valid_from": valid_from, "features": features})


def snapshot_blocks(world: World, stream: Stream, rows: SnapshotRows,
                    batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    """mapInPandas body: the snapshot lines of each block of entity indices."""
    for start, size in block_ranges(batches):
        frame = rows(block_rng(world.seed, stream, start), world, np.arange(start, start + size))
        timestamps = iso_timestamps(frame["valid_from"].to_numpy())
        lines = [snapshot_line(e, str(ts), f) for e, ts, f in zip(frame["entity_id"], timestamps, frame["features"])]
        yield pd.DataFrame({"value": lines})


def broken_snapshot_lines(world: World, num_entities: int, per_kind: int) -> list[tuple[str]]:
    """Returns ``bad_timestamp`` lines: snapshots whose ``valid_from`` does not parse."""
    return [(snapshot_line(j % num_entities + 1, BAD_TIMESTAMPS[j % len(BAD_TIMESTAMPS)], ["broken=1"]),)
            for j in range(per_kind)]


def snapshot_sources(spark: SparkSession, world: World, cfg: SampleConfig) -> dict[str, SourceData]:
    """Returns the ``user_snapshots`` and ``sku_snapshots`` sources.

    Args:
        spark: The session.
        world: The sample world.
        cfg: The sample config (``rows_per_partition``, ``broken_per_kind``).
    """
    per_entity = len(world.dates) + 1
    num_cold = int(world.sku_is_cold.sum())
    users = snapshot_source(spark, world, cfg, Stream.USER_SNAPSHOTS, user_snapshot_rows, world.num_users)
    skus = snapshot_source(spark, world, cfg, Stream.SKU_SNAPSHOTS, sku_snapshot_rows, world.num_skus)
    return {
        USER_SNAPSHOTS: SourceData(users[0], world.num_users * per_entity, users[1]),
        SKU_SNAPSHOTS: SourceData(skus[0], (world.num_skus - num_cold) * per_entity + num_cold, skus[1]),
    }


def snapshot_source(spark: SparkSession, world: World, cfg: SampleConfig, stream: Stream, rows: SnapshotRows,
                    num_entities: int) -> tuple[DataFrame, dict[str, int]]:
    """Returns the snapshot lines of one kind of entity and its broken counts.

    Args:
        spark: The session.
        world: The sample world.
        cfg: The sample config.
        stream: The random stream of these snapshots.
        rows: Draws the snapshot rows of a block of entities.
        num_entities: Entities of this kind.
    """
    entities_per_block = max(1, cfg.rows_per_partition // (len(world.dates) + 1))
    good = block_frame(spark, num_entities, entities_per_block).mapInPandas(
        partial(snapshot_blocks, world, stream, rows), "value string")
    broken = broken_snapshot_lines(world, num_entities, cfg.broken_per_kind)
    bad = spark.createDataFrame(broken, "value string").coalesce(1)
    return good.unionByName(bad), {kind: cfg.broken_per_kind for kind in SNAPSHOT_BROKEN_KINDS}
