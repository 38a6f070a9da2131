"""A user's behaviour embedding at a point in time: the recency-weighted mean of what they clicked before.

Contract (pure DataFrame transforms, shared by stage 3's feed context and by the
recommendations of a user): for each request row (an impression, or a user "as of" a
time) the clicks of that user whose time is **strictly before** the row's ``ts`` and
within ``lookback_days`` of it, the newest ``max_clicks`` of them (ties by ``sku_id``),
each weighted ``0.5 ** (age_hours / half_life_hours)``; the result is the weighted mean
of their SKUs' embeddings. A click whose SKU has no embedding is ignored. A row without
such a click gets ``behaviour`` null and ``behaviour_clicks`` 0. Nothing at or after the
row's ``ts`` is ever used, so an impression never sees its own click. Every request row
appears exactly once. The clicks of one row are bounded by ``max_clicks`` (memory per
row), and the sum runs in a fixed order (the same result whatever the partitioning).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

SECONDS_PER_HOUR = 3600.0
SECONDS_PER_DAY = 86_400


def clicks_of(examples: DataFrame) -> DataFrame:
    """``user_id, sku_id, ts`` of the clicked impressions of ``training_examples`` rows (the ad SKU)."""
    return examples.where(F.col("label") == 1).select("user_id", F.col("ad_sku_id").alias("sku_id"), "ts")


def clicks_for_dates(examples: DataFrame, dates: Sequence[dt.date], lookback_days: int) -> DataFrame:
    """:func:`clicks_of` the ``training_examples`` rows that a behaviour vector of an impression on ``dates`` can
    use: from ``lookback_days`` before the first date (and a day more, whatever the time zone of ``date``) to
    the last. Only those dates are read, however long the table's history."""
    since = min(dates) - dt.timedelta(days=lookback_days + 1)
    return clicks_of(examples.where((F.col("date") >= F.lit(since)) & (F.col("date") <= F.lit(max(dates)))))


def behaviour_embeddings(impressions: DataFrame, clicks: DataFrame, embeddings: DataFrame, *,
                         half_life_hours: float, max_clicks: int, lookback_days: int) -> DataFrame:
    """``impression_id, behaviour, behaviour_clicks`` for every impression.

    Args:
        impressions: ``impression_id, user_id, ts``.
        clicks: ``user_id, sku_id, ts`` (the time of the click).
        embeddings: ``sku_id, embedding`` (array<float> of one width).
        half_life_hours: Age at which a click weighs half.
        max_clicks: Newest clicks kept per impression.
        lookback_days: Clicks older than this (before the impression) are ignored.
    """
    return _behaviour(impressions.select("impression_id", "user_id", "ts"), "impression_id", clicks, embeddings,
                      half_life_hours, max_clicks, lookback_days)


def behaviour_as_of(users: DataFrame, clicks: DataFrame, embeddings: DataFrame, *, half_life_hours: float,
                    max_clicks: int, lookback_days: int) -> DataFrame:
    """``user_id, behaviour, behaviour_clicks`` for each ``user_id, ts`` row of ``users`` (one per user)."""
    return _behaviour(users.select("user_id", "ts"), "user_id", clicks, embeddings,
                      half_life_hours, max_clicks, lookback_days)


def _behaviour(requests: DataFrame, key: str, clicks: DataFrame, embeddings: DataFrame,
               half_life_hours: float, max_clicks: int, lookback_days: int) -> DataFrame:
    """The shared body: request rows keyed by ``key``."""
    history = _clicks_with_embeddings(clicks, embeddings)
    earlier = _earlier_clicks(requests, key, history, lookback_days)
    newest = _newest(earlier, key, max_clicks)
    means = _weighted_means(newest, key, half_life_hours)
    return (requests.select(key).join(means, key, "left")
            .select(key, "behaviour", F.coalesce("behaviour_clicks", F.lit(0)).cast("int").alias("behaviour_clicks")))


def _clicks_with_embeddings(clicks: DataFrame, embeddings: DataFrame) -> DataFrame:
    """``user_id, sku_id, click_ts, embedding``: clicks whose SKU has an embedding."""
    return (clicks.select("user_id", "sku_id", F.col("ts").alias("click_ts"))
            .join(embeddings.select("sku_id", "embedding"), "sku_id"))


def _earlier_clicks(requests: DataFrame, key: str, history: DataFrame, lookback_days: int) -> DataFrame:
    """Each request with the user's clicks strictly before its ``ts`` and within the lookback."""
    left = requests.alias("r")
    right = history.alias("c")
    condition = ((F.col("r.user_id") == F.col("c.user_id")) & (F.col("c.click_ts") < F.col("r.ts"))
                 & (F.col("c.click_ts") >= F.col("r.ts") - F.expr(f"INTERVAL {int(lookback_days)} DAYS")))
    return left.join(right, condition).select(
        F.col(f"r.{key}").alias(key), F.col("r.ts").alias("ts"), "c.sku_id", "c.click_ts", "c.embedding")


def _newest(earlier: DataFrame, key: str, max_clicks: int) -> DataFrame:
    """The newest ``max_clicks`` clicks of each request (ties: the smaller ``sku_id`` first)."""
    order = Window.partitionBy(key).orderBy(F.col("click_ts").desc(), F.col("sku_id"))
    return earlier.withColumn("_n", F.row_number().over(order)).where(F.col("_n") <= max_clicks)


def _weighted_means(newest: DataFrame, key: str, half_life_hours: float) -> DataFrame:
    """``key, behaviour, behaviour_clicks``: the weighted mean embedding of each request's clicks."""
    age_hours = (F.col("ts").cast("double") - F.col("click_ts").cast("double")) / SECONDS_PER_HOUR
    weighted = newest.withColumn("weight", F.pow(F.lit(0.5), age_hours / F.lit(float(half_life_hours))))
    items = F.array_sort(F.collect_list(F.struct("_n", "weight", "embedding")))  # a fixed order: by _n
    grouped = weighted.groupBy(key).agg(items.alias("items"), F.count("*").alias("behaviour_clicks"))
    return grouped.select(key, _mean_of(F.col("items")).alias("behaviour"), "behaviour_clicks")


def _mean_of(items: Column) -> Column:
    """sum(weight * embedding) / sum(weight) over an array of (weight, embedding) structs."""
    total = F.aggregate(items, F.lit(0.0).cast("double"), lambda acc, item: acc + item["weight"])
    width = F.size(items[0]["embedding"])
    return F.transform(
        F.sequence(F.lit(0), width - 1),
        lambda i: (F.aggregate(items, F.lit(0.0).cast("double"),
                               lambda acc, item: acc + item["weight"] * item["embedding"][i]) / total).cast("float"))


__all__ = ["behaviour_as_of", "behaviour_embeddings", "clicks_for_dates", "clicks_of"]
