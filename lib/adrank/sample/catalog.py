"""The catalog source: one row per SKU with its encoded image, plus broken rows.

Columns: ``sku_id`` long, ``title`` string, ``image`` binary, ``updated_at``
timestamp (UTC), ``category_id`` int. Each SKU's row is drawn from its own generator
(``Stream.IMAGES``, SKU index), so partitions only split the work.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from functools import partial

import numpy as np
import pandas as pd
from pyspark.sql import SparkSession

from adrank.sample.blocks import Stream, block_frame, block_ranges, block_rng
from adrank.sample.images import corrupt_image_bytes, oversized_png, sku_image_bytes
from adrank.sample.source import SourceData
from adrank.sample.world import PRODUCT_NOUNS, World

CATALOG_SCHEMA = "sku_id long, title string, image binary, updated_at timestamp, category_id int"
CATALOG_BROKEN_KINDS = ("corrupt_image", "oversized_image", "null_sku_id")
SKUS_PER_PARTITION = 500
JPEG_RGB = 0


def catalog_source(spark: SparkSession, world: World, broken_per_kind: int) -> SourceData:
    """Returns the catalog rows: every SKU of the world, then the broken rows.

    Args:
        spark: The session.
        world: The sample world.
        broken_per_kind: Broken rows of each kind in ``CATALOG_BROKEN_KINDS``.
    """
    good = block_frame(spark, world.num_skus, SKUS_PER_PARTITION).mapInPandas(
        partial(catalog_blocks, world), CATALOG_SCHEMA)
    broken = spark.createDataFrame(broken_catalog_rows(world, broken_per_kind), CATALOG_SCHEMA)
    return SourceData(
        frame=good.unionByName(broken.coalesce(1)),
        good_rows=world.num_skus,
        broken_rows={kind: broken_per_kind for kind in CATALOG_BROKEN_KINDS},
    )


def catalog_blocks(world: World, batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    """mapInPandas body: the catalog rows of each block of SKU indices."""
    for start, size in block_ranges(batches):
        yield catalog_rows(world, np.arange(start, start + size))


def catalog_rows(world: World, sku_index: np.ndarray) -> pd.DataFrame:
    """Returns the catalog rows of some SKUs.

    Args:
        world: The sample world.
        sku_index: SKU indices (ids are ``index + 1``).
    """
    categories = world.sku_category[sku_index]
    return pd.DataFrame({
        "sku_id": sku_index + 1,
        "title": [sku_title(world, c, world.sku_noun[i], i + 1) for i, c in zip(sku_index, categories)],
        "image": [good_image(world, int(i), world.sku_format[i]) for i in sku_index],
        "updated_at": pd.to_datetime(world.sku_updated_at[sku_index], unit="s", utc=True),
        "category_id": categories.astype(np.int32),
    })


def good_image(world: World, sku_index: int, image_format: int) -> bytes:
    """Draws the image of one SKU index from its own generator."""
    category = world.sku_category[sku_index % world.num_skus]
    style = (world.category_shape[category], world.category_palette[category], world.category_texture[category])
    rng = block_rng(world.seed, Stream.IMAGES, sku_index)
    return sku_image_bytes(rng, style, image_format, world.image_size_range)


def sku_title(world: World, category: int, noun: int, token: int) -> str:
    """Returns a title such as ``"crimson ring lamp 0412"``."""
    palette, shape = world.category_words(category)
    return f"{palette} {shape} {PRODUCT_NOUNS[noun]} {token:04d}"


def broken_catalog_rows(world: World, per_kind: int) -> list[tuple]:
    """Returns the broken catalog rows, ``per_kind`` of each kind in order.

    Bad-image rows get SKU ids above the normal range; ``null_sku_id`` rows have a
    good image and no id.

    Args:
        world: The sample world.
        per_kind: Rows of each kind.
    """
    rng = block_rng(world.seed, Stream.BROKEN, 0)
    updated_at = dt.datetime.fromtimestamp(int(world.day_starts[0]) - 3600, dt.UTC)
    rows = []
    for kind_number, kind in enumerate(CATALOG_BROKEN_KINDS):
        for j in range(per_kind):
            index = world.num_skus + kind_number * per_kind + j
            category = int(world.sku_category[index % world.num_skus])
            sku_id = None if kind == "null_sku_id" else index + 1
            image = broken_row_image(rng, world, kind, index, j)
            rows.append((sku_id, sku_title(world, category, 0, index + 1), image, updated_at, category))
    return rows


def broken_row_image(rng: np.random.Generator, world: World, kind: str, index: int, variant: int) -> bytes:
    """Returns the image of a broken catalog row (a good JPEG for ``null_sku_id``).

    Args:
        rng: Generator of the broken records.
        world: The sample world.
        kind: One of ``CATALOG_BROKEN_KINDS``.
        index: The row's SKU index, above the normal range.
        variant: The row's number within its kind.
    """
    if kind == "oversized_image":
        return oversized_png()
    image = good_image(world, index, JPEG_RGB)
    return corrupt_image_bytes(rng, image, variant) if kind == "corrupt_image" else image
