"""The users to recommend for, as of a time: their behaviour embedding and what they already clicked.

Pure DataFrame transforms. A user is active when they clicked in the ``lookback_days``
before ``as_of``; their request vector is :func:`adrank.context.behaviour.behaviour_as_of` at
``as_of`` (clicks strictly before it: the same point-in-time rule as stage 3's feed
context), and ``exclude`` holds every SKU they clicked before ``as_of``.
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from adrank.context.behaviour import behaviour_as_of
from adrank.core.config import FeaturesConfig


def active_users(clicks: DataFrame, as_of: str, lookback_days: int) -> DataFrame:
    """``user_id, ts``: the users with a click in ``[as_of - lookback_days, as_of)``, ``ts`` = as_of."""
    end = F.to_timestamp(F.lit(as_of))
    recent = clicks.where((F.col("ts") < end) & (F.col("ts") >= end - F.expr(f"INTERVAL {int(lookback_days)} DAYS")))
    return recent.select("user_id").distinct().withColumn("ts", end)


def clicked_before(clicks: DataFrame, users: DataFrame) -> DataFrame:
    """``user_id, exclude``: the SKUs each user of ``users`` (``user_id, ts``) clicked before its ``ts``."""
    earlier = clicks.alias("c").join(users.alias("u"), "user_id").where(F.col("c.ts") < F.col("u.ts"))
    return earlier.groupBy("user_id").agg(F.array_sort(F.collect_set("sku_id")).alias("exclude"))


def user_requests(users: DataFrame, clicks: DataFrame, embeddings: DataFrame,
                  features: FeaturesConfig) -> DataFrame:
    """``user_id, as_of, vector, behaviour_clicks, exclude`` of each user with a behaviour embedding.

    Args:
        users: ``user_id, ts`` (the time of the request).
        clicks: ``user_id, sku_id, ts``.
        embeddings: ``sku_id, embedding``.
        features: The behaviour embedding's half-life, click limit and lookback.
    """
    behaviour = behaviour_as_of(users, clicks, embeddings, half_life_hours=features.behaviour_half_life_hours,
                                max_clicks=features.behaviour_max_clicks,
                                lookback_days=features.behaviour_lookback_days)
    return (users.join(behaviour.where(F.col("behaviour").isNotNull()), "user_id")
            .join(clicked_before(clicks, users), "user_id", "left")
            .select("user_id", F.col("ts").alias("as_of"), F.col("behaviour").alias("vector"), "behaviour_clicks",
                    "exclude"))


__all__ = ["active_users", "clicked_before", "user_requests"]
