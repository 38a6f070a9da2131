"""The click-log and LR-feature sources: JSON lines of simulated impressions.

Both sources are partitioned by ``date`` and hold one ``value`` line per record:

- click log: ``impression_id``, ``ts``, ``user_id``, ``page``, ``context_sku_id``
  (detail pages only), ``query`` (search pages only), ``ad_sku_id``, ``position``,
  ``clicked``;
- LR features: ``impression_id`` and ``features``, tokens such as ``"hour=13"``.

Both are rendered from the same simulated block, so they agree impression by
impression. Broken records are impressions simulated past the last good index
(block ``num_impressions``) and then damaged; duplicates repeat the first good lines.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from functools import partial
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession

from adrank.core.layout import CLICK_LOG, LR_FEATURES
from adrank.sample.blocks import block_frame, block_ranges
from adrank.sample.impressions import (
    AB_GROUPS,
    DEVICES,
    NETWORKS,
    PAGES,
    DayPools,
    click_probability,
    simulate_impressions,
)
from adrank.sample.source import SourceData
from adrank.sample.world import World, iso_timestamps

if TYPE_CHECKING:
    from adrank.core.config import SampleConfig

LINES_SCHEMA = "date string, value string"
ORACLE_SCHEMA = "impression_id string, click_probability double"
CLICK_BROKEN_KINDS = ("malformed_json", "unknown_sku", "bad_position", "missing_field", "duplicate_impression")
FEATURES_BROKEN_KINDS = ("malformed_json", "features_not_array")
UNKNOWN_SKU_ID_BASE = 1_000_000_000

Records = Callable[[World, pd.DataFrame], list[dict]]


def click_records(world: World, impressions: pd.DataFrame) -> list[dict]:
    """Returns the click-log record of each simulated impression."""
    timestamps = iso_timestamps(world.day_starts[impressions["day"]] + impressions["second_of_day"])
    columns = zip(impressions["impression_index"], timestamps, impressions["user"], impressions["page"],
                  impressions["context_sku"], impressions["query"], impressions["ad_sku"],
                  impressions["position"], impressions["clicked"])
    records = []
    for index, ts, user, page, context_sku, query, ad_sku, position, clicked in columns:
        record = {"impression_id": impression_id(index), "ts": str(ts), "user_id": int(user) + 1, "page": PAGES[page]}
        if context_sku >= 0:
            record["context_sku_id"] = int(context_sku) + 1
        if query is not None:
            record["query"] = query
        record.update(ad_sku_id=int(ad_sku) + 1, position=int(position), clicked=int(clicked))
        records.append(record)
    return records


def feature_records(world: World, impressions: pd.DataFrame) -> list[dict]:
    """Returns the LR-feature record of each simulated impression."""
    columns = zip(impressions["impression_index"], impressions["second_of_day"] // 3600, impressions["device"],
                  impressions["position"], impressions["page"], impressions["network"], impressions["ab_group"])
    return [
        {"impression_id": impression_id(index),
         "features": [f"hour={hour}", f"device={DEVICES[device]}", f"slot={position}", f"page={PAGES[page]}",
                      f"net={NETWORKS[network]}", f"ab=grp{ab_group % AB_GROUPS}"]}
        for index, hour, device, position, page, network, ab_group in columns
    ]


def impression_id(index: int) -> str:
    """Returns the impression id of an impression index, e.g. ``imp-00000123``."""
    return f"imp-{int(index):08d}"


def line_blocks(world: World, pools: DayPools, records: Records,
                batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    """mapInPandas body: the dated JSON lines of each block of impressions."""
    for start, size in block_ranges(batches):
        impressions = simulate_impressions(world, pools, start, size)
        lines = [json.dumps(record) for record in records(world, impressions)]
        yield pd.DataFrame({"date": np.asarray(world.dates)[impressions["day"]], "value": lines})


def oracle_blocks(world: World, pools: DayPools, batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    """mapInPandas body: the planted click probability of each good impression of each block."""
    for start, size in block_ranges(batches):
        impressions = simulate_impressions(world, pools, start, size)
        yield pd.DataFrame({"impression_id": [impression_id(i) for i in impressions["impression_index"]],
                            "click_probability": click_probability(world, impressions)})


def oracle_frame(spark: SparkSession, world: World, cfg: SampleConfig) -> DataFrame:
    """``impression_id, click_probability`` of every good impression: the ceiling, never an input."""
    blocks = block_frame(spark, cfg.num_impressions, cfg.rows_per_partition)
    return blocks.mapInPandas(partial(oracle_blocks, world, DayPools.of(world)), ORACLE_SCHEMA)


def impression_sources(spark: SparkSession, world: World, cfg: SampleConfig) -> dict[str, SourceData]:
    """Returns the ``click_log`` and ``lr_features`` sources.

    Args:
        spark: The session.
        world: The sample world.
        cfg: The sample config (``num_impressions``, ``rows_per_partition``,
            ``broken_per_kind``).
    """
    pools = DayPools.of(world)
    blocks = block_frame(spark, cfg.num_impressions, cfg.rows_per_partition)
    broken = broken_lines(world, pools, cfg)
    sources = {}
    for name, records, kinds in ((CLICK_LOG, click_records, CLICK_BROKEN_KINDS),
                                 (LR_FEATURES, feature_records, FEATURES_BROKEN_KINDS)):
        good = blocks.mapInPandas(partial(line_blocks, world, pools, records), LINES_SCHEMA)
        bad = spark.createDataFrame(broken[name], LINES_SCHEMA).coalesce(1)
        sources[name] = SourceData(good.unionByName(bad), cfg.num_impressions,
                                   {kind: cfg.broken_per_kind for kind in kinds})
    return sources


def broken_lines(world: World, pools: DayPools, cfg: SampleConfig) -> dict[str, pd.DataFrame]:
    """Returns the broken (date, value) lines of both sources, kind after kind.

    Args:
        world: The sample world.
        pools: The world's SKU pools.
        cfg: The sample config.
    """
    per_kind = cfg.broken_per_kind
    damaged = simulate_impressions(world, pools, cfg.num_impressions, per_kind * (len(CLICK_BROKEN_KINDS) - 1))
    first_block = simulate_impressions(world, pools, 0, min(cfg.rows_per_partition, cfg.num_impressions))
    repeated = first_block.iloc[np.arange(per_kind) % len(first_block)]
    click_lines = [damage_click(kind, record) for kind, record in
                   zip(np.repeat(CLICK_BROKEN_KINDS[:-1], per_kind), click_records(world, damaged))]
    click_lines += [json.dumps(record) for record in click_records(world, repeated)]
    feature_lines = [damage_features(kind, record) for kind, record in
                     zip(np.repeat(FEATURES_BROKEN_KINDS, per_kind), feature_records(world, damaged))]
    dates = np.asarray(world.dates)
    click_days = np.r_[damaged["day"], repeated["day"]]
    feature_days = damaged["day"].to_numpy()[:len(feature_lines)]
    return {
        CLICK_LOG: pd.DataFrame({"date": dates[click_days], "value": click_lines}),
        LR_FEATURES: pd.DataFrame({"date": dates[feature_days], "value": feature_lines}),
    }


def damage_click(kind: str, record: dict) -> str:
    """Returns the JSON line of a click record broken in one of ``CLICK_BROKEN_KINDS``."""
    if kind == "unknown_sku":
        record["ad_sku_id"] = UNKNOWN_SKU_ID_BASE + record["ad_sku_id"]
    elif kind == "bad_position":
        record["position"] = 0
    elif kind == "missing_field":
        del record["clicked"]
    line = json.dumps(record)
    return line[: len(line) // 2] if kind == "malformed_json" else line


def damage_features(kind: str, record: dict) -> str:
    """Returns the JSON line of a feature record broken in one of ``FEATURES_BROKEN_KINDS``."""
    if kind == "features_not_array":
        record["features"] = " ".join(record["features"])
    line = json.dumps(record)
    return line[: len(line) // 2] if kind == "malformed_json" else line
