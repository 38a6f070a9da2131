"""The sample world: categories, SKUs and users, drawn on the driver from the seed.

The world is the small global state every generation block needs (which category a
SKU is in, how popular it is, which SKUs are cold-start, what each user likes). It
is a handful of plain numpy arrays, cheap to build and to ship in a closure.

A category is a (shape, palette) pair with a texture; two categories are related
when they share the shape or the palette, which the planted click model uses.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from adrank.sample.blocks import Stream, block_rng

if TYPE_CHECKING:
    from adrank.core.config import SampleConfig

SHAPES = ("circle", "square", "triangle", "stripes", "ring", "cross")
PALETTES = ("crimson", "amber", "lime", "emerald", "azure", "violet")
PALETTE_HUES = (350.0, 40.0, 90.0, 150.0, 210.0, 275.0)
TEXTURES = ("flat", "noise", "checker", "gradient")
PRODUCT_NOUNS = ("lamp", "mug", "vase", "cushion", "poster", "clock", "bag", "scarf")
IMAGE_FORMATS = ("jpeg_rgb", "png_rgb", "png_rgba", "png_gray", "webp", "jpeg_cmyk")
IMAGE_FORMAT_SHARES = (0.70, 0.12, 0.04, 0.04, 0.07, 0.03)
SECONDS_PER_DAY = 86_400
CATALOG_HISTORY_DAYS = 90


@dataclass(frozen=True, eq=False)
class World:
    """Global state of the sample, indexed by SKU index or user index.

    SKU ids are ``index + 1``; user ids are ``index + 1``.
    """

    seed: int
    dates: tuple[str, ...]
    day_starts: np.ndarray
    image_size_range: tuple[int, int]
    category_shape: np.ndarray
    category_palette: np.ndarray
    category_texture: np.ndarray
    sku_category: np.ndarray
    sku_log_popularity: np.ndarray
    sku_is_cold: np.ndarray
    sku_format: np.ndarray
    sku_noun: np.ndarray
    sku_updated_at: np.ndarray
    user_category: np.ndarray
    user_effect: np.ndarray
    user_log_activity: np.ndarray

    @property
    def num_categories(self) -> int:
        """Number of categories."""
        return len(self.category_shape)

    @property
    def num_skus(self) -> int:
        """Number of good catalog SKUs."""
        return len(self.sku_category)

    @property
    def num_users(self) -> int:
        """Number of users."""
        return len(self.user_category)

    @property
    def last_day(self) -> int:
        """Index of the last day, the only day cold-start SKUs appear."""
        return len(self.dates) - 1

    def category_words(self, category: int) -> tuple[str, str]:
        """Returns the (palette word, shape word) of a category."""
        return PALETTES[self.category_palette[category]], SHAPES[self.category_shape[category]]


def build_world(cfg: SampleConfig) -> World:
    """Draws the world of a sample config.

    Args:
        cfg: The sample configuration.

    Returns:
        The world, identical for identical seeds and sizes.
    """
    rng = block_rng(cfg.seed, Stream.WORLD, 0)
    shape, palette, texture = category_attributes(cfg.num_categories)
    sku_category = rng.permutation(np.arange(cfg.num_skus) % cfg.num_categories)
    starts = day_starts(cfg.start_date, cfg.num_days)
    sku_is_cold = pick_cold_skus(rng, sku_category, cfg.cold_start_fraction)
    return World(
        seed=cfg.seed,
        dates=tuple(iso_date(start) for start in starts),
        day_starts=starts,
        image_size_range=(cfg.image_min_size, cfg.image_max_size),
        category_shape=shape,
        category_palette=palette,
        category_texture=texture,
        sku_category=sku_category,
        sku_log_popularity=rng.normal(0.0, 1.0, cfg.num_skus),
        sku_is_cold=sku_is_cold,
        sku_format=assign_formats(rng, cfg.num_skus),
        sku_noun=rng.integers(0, len(PRODUCT_NOUNS), cfg.num_skus),
        sku_updated_at=sku_update_times(rng, starts, sku_is_cold),
        user_category=rng.integers(0, cfg.num_categories, cfg.num_users),
        user_effect=rng.normal(0.0, 0.35, cfg.num_users),
        user_log_activity=rng.normal(0.0, 0.8, cfg.num_users),
    )


def category_attributes(num_categories: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Returns shape, palette and texture indices of each category.

    The first six categories have six distinct shapes and palettes; later ones reuse
    them in new pairs, so related categories (sharing one of the two) appear early.

    Args:
        num_categories: 2 to 36.
    """
    category = np.arange(num_categories)
    shape = category % len(SHAPES)
    palette = (shape + category // len(SHAPES)) % len(PALETTES)
    texture = category % len(TEXTURES)
    return shape, palette, texture


def day_starts(start_date: str, num_days: int) -> np.ndarray:
    """Returns the epoch seconds of 00:00 UTC of each day."""
    first = dt.datetime.fromisoformat(start_date).replace(tzinfo=dt.UTC)
    return int(first.timestamp()) + SECONDS_PER_DAY * np.arange(num_days, dtype=np.int64)


def iso_date(epoch_seconds: int) -> str:
    """Returns the ISO date (UTC) of an epoch second."""
    return dt.datetime.fromtimestamp(int(epoch_seconds), dt.UTC).date().isoformat()


def pick_cold_skus(rng: np.random.Generator, sku_category: np.ndarray, fraction: float) -> np.ndarray:
    """Marks the cold-start SKUs, keeping at least one normal SKU per category.

    Args:
        rng: The world generator.
        sku_category: Category of each SKU.
        fraction: Share of SKUs to make cold.

    Returns:
        A boolean mask over SKU indices.
    """
    _, first_of_category = np.unique(sku_category, return_index=True)
    candidates = np.setdiff1d(np.arange(len(sku_category)), first_of_category)
    num_cold = min(len(candidates), int(round(fraction * len(sku_category))))
    is_cold = np.zeros(len(sku_category), dtype=bool)
    is_cold[rng.choice(candidates, num_cold, replace=False)] = True
    return is_cold


def assign_formats(rng: np.random.Generator, num_skus: int) -> np.ndarray:
    """Assigns an image format to each SKU, every format at least once.

    Args:
        rng: The world generator.
        num_skus: Number of SKUs.

    Returns:
        Indices into ``IMAGE_FORMATS``.
    """
    quotas = [max(1, int(round(share * num_skus))) for share in IMAGE_FORMAT_SHARES[1:]]
    quotas.insert(0, num_skus - sum(quotas))
    formats = np.repeat(np.arange(len(IMAGE_FORMATS)), quotas)
    return rng.permutation(formats)


def sku_update_times(rng: np.random.Generator, starts: np.ndarray, is_cold: np.ndarray) -> np.ndarray:
    """Returns each SKU's ``updated_at`` in epoch seconds.

    Normal SKUs were updated within the 90 days before the first day; cold-start SKUs
    appear at 00:00 of the last day, before any impression of that day.
    """
    history = CATALOG_HISTORY_DAYS * SECONDS_PER_DAY
    before_start = starts[0] - rng.integers(1, history, len(is_cold))
    return np.where(is_cold, starts[-1], before_start)


def iso_timestamps(epoch_seconds: np.ndarray) -> np.ndarray:
    """Formats epoch seconds as ISO-8601 UTC strings such as ``2026-11-01T13:05:22Z``."""
    text = np.datetime_as_string(np.asarray(epoch_seconds, dtype="datetime64[s]"), unit="s")
    return np.char.add(text, "Z")
