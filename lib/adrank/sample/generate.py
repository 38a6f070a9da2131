"""Generates every raw input of the sample world and its manifest.

Layout under the inputs root (the input contract ``build_tables`` reads):
``catalog/`` (Parquet), ``click_log/date=*/`` and ``lr_features/date=*/`` (JSON
lines), ``user_snapshots/`` and ``sku_snapshots/`` (JSON lines), ``_manifest.json``;
and beside them ``_oracle/click_probability/`` (Parquet: ``impression_id``,
``click_probability``), the planted probability of every good impression, which only the
evaluation of stage 3 reads (the ceiling); the pipeline never takes it as an input.
"""
from __future__ import annotations

import dataclasses
import json
from typing import TYPE_CHECKING

from pyspark.sql import SparkSession

from adrank.core.config import to_json
from adrank.core.layout import CATALOG, ORACLE_FOLDER, ORACLE_TABLE
from adrank.sample.catalog import catalog_source
from adrank.sample.clicklog import impression_sources, oracle_frame
from adrank.sample.impressions import CLICK_MODEL
from adrank.sample.snapshots import snapshot_sources
from adrank.sample.source import SourceData
from adrank.sample.storage import write_source
from adrank.sample.world import PALETTES, SHAPES, TEXTURES, World, build_world
from adrank.storage.delta import write_text_file

if TYPE_CHECKING:
    from adrank.core.config import SampleConfig

MANIFEST_NAME = "_manifest.json"


def generate_inputs(spark: SparkSession, cfg: SampleConfig, inputs_root: str) -> dict:
    """Writes all raw inputs under ``inputs_root`` (overwriting) and returns their figures.

    The same seed and sizes give the same rows on any cluster.

    Args:
        spark: The session.
        cfg: The sample sizes and seed (any dataclass with SampleConfig's fields).
        inputs_root: Local path or Hadoop URI of the inputs folder.

    Returns:
        The manifest, a JSON-able dict also written to ``<inputs_root>/_manifest.json``.
    """
    root = inputs_root.rstrip("/")
    world = build_world(cfg)
    sources = {
        CATALOG: catalog_source(spark, world, cfg.broken_per_kind),
        **impression_sources(spark, world, cfg),
        **snapshot_sources(spark, world, cfg),
    }
    for name, source in sources.items():
        write_source(name, source, f"{root}/{name}")
    oracle_frame(spark, world, cfg).write.mode("overwrite").parquet(f"{root}/{ORACLE_FOLDER}/{ORACLE_TABLE}")
    manifest = build_manifest(cfg, world, sources)
    manifest["oracle"] = {"path": f"{ORACLE_FOLDER}/{ORACLE_TABLE}", "rows": cfg.num_impressions,
                          "note": "true click probability per good impression; evaluation only, never an input"}
    manifest_text = to_json(manifest, indent=2, sort_keys=True) + "\n"
    write_text_file(spark, f"{root}/{MANIFEST_NAME}", manifest_text)
    return json.loads(manifest_text)


def build_manifest(cfg: SampleConfig, world: World, sources: dict[str, SourceData]) -> dict:
    """Returns the figures of a generated sample.

    Args:
        cfg: The sample config.
        world: Its world.
        sources: The generated sources.
    """
    return {
        "seed": cfg.seed,
        "config": dataclasses.asdict(cfg),
        "dates": list(world.dates),
        "good_rows": {name: source.good_rows for name, source in sources.items()},
        "broken_rows": {name: dict(source.broken_rows) for name, source in sources.items()},
        "cold_start_skus": int(world.sku_is_cold.sum()),
        "categories": [
            {"category_id": category, "palette": PALETTES[world.category_palette[category]],
             "shape": SHAPES[world.category_shape[category]], "texture": TEXTURES[world.category_texture[category]]}
            for category in range(world.num_categories)
        ],
        "click_model": dataclasses.asdict(CLICK_MODEL),
    }
