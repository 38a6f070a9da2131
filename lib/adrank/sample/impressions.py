"""Simulated ad impressions with a planted click model.

Each impression has a page (detail, feed or search), a context side (the detail
page's SKU, the search query's category, or the feed user's preferred category) and
an ad SKU, shown at a position. About 40% of ads come from the context's category,
the rest from the whole catalog by popularity. The click is drawn with

    P(click) = sigmoid(bias + affinity_weight * affinity(context, ad) + user effect
                       + position_slope * log(position) + popularity_weight * ad popularity
                       + device effect + evening effect)

where affinity is 1 for the same category, 0.4 when the categories share their shape
or palette, 0 otherwise. Cold-start SKUs appear (as ad or context) on the last day
only. Impressions are simulated in fixed blocks, each from its own generator.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from adrank.core.layout import PAGES
from adrank.sample.blocks import Stream, block_rng
from adrank.sample.world import SECONDS_PER_DAY, World

PAGE_SHARES = (0.5, 0.3, 0.2)
DETAIL, FEED, SEARCH = range(3)
DEVICES = ("ios", "android", "web")
DEVICE_SHARES = (0.4, 0.4, 0.2)
NETWORKS = ("wifi", "4g", "5g")
AB_GROUPS = 4
MAX_POSITION = 8
SAME_CATEGORY_AD_SHARE = 0.4
QUERY_OWN_CATEGORY_SHARE = 0.6
QUERY_TYPO_SHARE = 0.15
QUERY_EXTRA_WORD_SHARE = 0.15
QUERY_EXTRA_WORDS = ("cheap", "best", "new", "buy", "mini", "gift")


@dataclass(frozen=True)
class ClickModel:
    """Planted ground truth of the click probability (see the module docstring)."""

    bias: float = -3.85
    affinity_weight: float = 1.8
    related_affinity: float = 0.4
    position_slope: float = -0.5
    popularity_weight: float = 0.3
    device_effects: tuple[float, ...] = (0.2, 0.0, -0.25)
    evening_hours: tuple[int, int] = (18, 22)
    evening_effect: float = 0.25


CLICK_MODEL = ClickModel()


@dataclass(frozen=True, eq=False)
class SkuPool:
    """SKUs that may be shown, sorted by category, for popularity-weighted draws.

    Attributes:
        sku_index: Member SKU indices, sorted by category.
        cumulative_weight: Running sum of popularity weights along ``sku_index``.
        category_bounds: Where each category starts in ``sku_index`` (one more
            entry than categories).
    """

    sku_index: np.ndarray
    cumulative_weight: np.ndarray
    category_bounds: np.ndarray

    @classmethod
    def of(cls, world: World, members: np.ndarray) -> SkuPool:
        """Builds the pool of the SKUs where ``members`` is true."""
        index = np.flatnonzero(members)
        index = index[np.argsort(world.sku_category[index], kind="stable")]
        bounds = np.searchsorted(world.sku_category[index], np.arange(world.num_categories + 1))
        return cls(index, np.cumsum(np.exp(world.sku_log_popularity[index])), bounds)

    def pick(self, uniforms: np.ndarray, categories: np.ndarray) -> np.ndarray:
        """Draws SKU indices by popularity, within a category or (-1) from all.

        Args:
            uniforms: One uniform [0, 1) number per draw.
            categories: The category of each draw, or -1 for any.
        """
        any_category = categories < 0
        category = np.clip(categories, 0, None)
        first = np.where(any_category, 0, self.category_bounds[category])
        end = np.where(any_category, len(self.sku_index), self.category_bounds[category + 1])
        weight_before = np.concatenate([[0.0], self.cumulative_weight])
        target = weight_before[first] + uniforms * (weight_before[end] - weight_before[first])
        position = np.searchsorted(self.cumulative_weight, target, side="right")
        return self.sku_index[np.clip(position, first, end - 1)]


@dataclass(frozen=True, eq=False)
class DayPools:
    """The SKU pools of the days before the last (no cold-start SKUs) and of the last."""

    earlier_days: SkuPool
    last_day: SkuPool

    @classmethod
    def of(cls, world: World) -> DayPools:
        """Builds both pools of a world."""
        return cls(SkuPool.of(world, ~world.sku_is_cold), SkuPool.of(world, np.ones(world.num_skus, bool)))

    def pick(self, rng: np.random.Generator, categories: np.ndarray, on_last_day: np.ndarray) -> np.ndarray:
        """Draws one SKU per row from the pool of its day (see ``SkuPool.pick``)."""
        uniforms = rng.random(len(categories))
        earlier = self.earlier_days.pick(uniforms, categories)
        return np.where(on_last_day, self.last_day.pick(uniforms, categories), earlier)


def simulate_impressions(world: World, pools: DayPools, block_start: int, size: int) -> pd.DataFrame:
    """Simulates one block of impressions.

    Args:
        world: The sample world.
        pools: The world's SKU pools.
        block_start: Index of the block's first impression.
        size: Impressions in the block.

    Returns:
        One row per impression: ``impression_index``, ``day``, ``second_of_day``,
        ``user``, ``page``, ``context_sku`` (-1 if none), ``context_category``,
        ``query`` (None unless search), ``ad_sku``, ``position``, ``device``,
        ``network``, ``ab_group``, ``clicked``. SKU and user columns are indices.
    """
    rng = block_rng(world.seed, Stream.IMPRESSIONS, block_start)
    frame = pd.DataFrame({
        "impression_index": np.arange(block_start, block_start + size),
        "day": rng.integers(0, len(world.dates), size),
        "second_of_day": rng.integers(0, SECONDS_PER_DAY, size),
        "user": draw_users(rng, world, size),
        "page": rng.choice(len(PAGES), size, p=PAGE_SHARES),
    })
    on_last_day = frame["day"].to_numpy() == world.last_day
    add_context(frame, rng, world, pools, on_last_day)
    same_category = rng.random(size) < SAME_CATEGORY_AD_SHARE
    frame["ad_sku"] = pools.pick(rng, np.where(same_category, frame["context_category"], -1), on_last_day)
    frame["position"] = draw_positions(rng, size)
    frame["device"] = rng.choice(len(DEVICES), size, p=DEVICE_SHARES)
    frame["network"] = rng.integers(0, len(NETWORKS), size)
    frame["ab_group"] = rng.integers(0, AB_GROUPS, size)
    frame["clicked"] = (rng.random(size) < click_probability(world, frame)).astype(int)
    return frame


def draw_users(rng: np.random.Generator, world: World, size: int) -> np.ndarray:
    """Draws user indices, heavy users more often."""
    cumulative = np.cumsum(np.exp(world.user_log_activity))
    users = np.searchsorted(cumulative, rng.random(size) * cumulative[-1], side="right")
    return np.minimum(users, world.num_users - 1)


def add_context(frame: pd.DataFrame, rng: np.random.Generator, world: World,
                pools: DayPools, on_last_day: np.ndarray) -> None:
    """Adds ``context_sku``, ``context_category`` and ``query`` to impressions."""
    size = len(frame)
    page, user = frame["page"].to_numpy(), frame["user"].to_numpy()
    detail_sku = pools.pick(rng, np.full(size, -1), on_last_day)
    own_category = rng.random(size) < QUERY_OWN_CATEGORY_SHARE
    query_category = np.where(own_category, world.user_category[user], rng.integers(0, world.num_categories, size))
    frame["context_sku"] = np.where(page == DETAIL, detail_sku, -1)
    frame["context_category"] = np.select(
        [page == DETAIL, page == FEED], [world.sku_category[detail_sku], world.user_category[user]], query_category)
    frame["query"] = query_texts(rng, world, frame["context_category"].to_numpy(), page == SEARCH)


def draw_positions(rng: np.random.Generator, size: int) -> np.ndarray:
    """Draws slot positions 1..MAX_POSITION, top slots more often."""
    positions = np.arange(1, MAX_POSITION + 1)
    return rng.choice(positions, size, p=(1.0 / positions) / np.sum(1.0 / positions))


def query_texts(rng: np.random.Generator, world: World, categories: np.ndarray,
                is_search: np.ndarray) -> list[str | None]:
    """Returns search queries ("crimson ring", sometimes with a typo or an extra word).

    Args:
        rng: The block's generator.
        world: The sample world.
        categories: The query category of each impression.
        is_search: Which impressions are searches; the others get None.
    """
    draws = rng.random((len(categories), 5))
    return [
        query_text(world.category_words(category), row_draws) if search else None
        for category, row_draws, search in zip(categories, draws, is_search)
    ]


def query_text(words: tuple[str, str], draws: np.ndarray) -> str:
    """Returns one query from the category words and five uniform draws."""
    palette, shape = words
    if draws[0] < QUERY_TYPO_SHARE:
        cut = 1 + int(draws[1] * (len(shape) - 1))
        shape = shape[:cut] + shape[cut + 1:]
    query = f"{palette} {shape}"
    if draws[2] < QUERY_EXTRA_WORD_SHARE:
        extra = QUERY_EXTRA_WORDS[int(draws[3] * len(QUERY_EXTRA_WORDS))]
        query = f"{extra} {query}" if draws[4] < 0.5 else f"{query} {extra}"
    return query


def affinity(world: World, context_category: np.ndarray, ad_category: np.ndarray) -> np.ndarray:
    """Returns 1 for the same category, 0.4 for categories sharing shape or palette, else 0."""
    same_shape = world.category_shape[context_category] == world.category_shape[ad_category]
    same_palette = world.category_palette[context_category] == world.category_palette[ad_category]
    return np.select([context_category == ad_category, same_shape | same_palette],
                     [1.0, CLICK_MODEL.related_affinity], 0.0)


def click_probability(world: World, frame: pd.DataFrame) -> np.ndarray:
    """Returns the planted click probability of each impression."""
    model = CLICK_MODEL
    ad_sku = frame["ad_sku"].to_numpy()
    hour = frame["second_of_day"].to_numpy() // 3600
    evening = (hour >= model.evening_hours[0]) & (hour <= model.evening_hours[1])
    logit = (
        model.bias
        + model.affinity_weight * affinity(world, frame["context_category"].to_numpy(), world.sku_category[ad_sku])
        + world.user_effect[frame["user"].to_numpy()]
        + model.position_slope * np.log(frame["position"].to_numpy())
        + model.popularity_weight * world.sku_log_popularity[ad_sku]
        + np.asarray(model.device_effects)[frame["device"].to_numpy()]
        + model.evening_effect * evening
    )
    return 1.0 / (1.0 + np.exp(-logit))
