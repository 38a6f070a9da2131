"""The second stage of user and query recommendations: the embedding's candidates re-scored with popularity.

Pure DataFrame transforms. The search returns each request's ``recommend.candidates``
nearest SKUs by cosine; :func:`reranked` keeps the best ``k`` of them by

    score = cosine + popularity_weight * prior,   prior = log(1 + clicks) / log(1 + most clicks)

where ``clicks`` counts the SKU's clicks before the request's time (a SKU never clicked,
e.g. a cold-start one, has prior 0 and still ranks by its picture alone). With weight 0
the order is the embedding's. Ties: the smaller sku_id.
"""

from __future__ import annotations

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F


def popularity_prior(clicks: DataFrame) -> DataFrame:
    """``sku_id, prior`` in (0, 1] for every clicked SKU of ``clicks`` (``sku_id``)."""
    counts = clicks.groupBy("sku_id").agg(F.count("*").alias("clicks"))
    most = counts.agg(F.max("clicks").alias("most"))  # one row
    return counts.crossJoin(most).select("sku_id", (F.log1p("clicks") / F.log1p("most")).alias("prior"))


def reranked(found: DataFrame, key: str, column: str, priors: DataFrame, weight: float, k: int) -> DataFrame:
    """``key, column``: the best ``k`` of each request's candidates (``column``: array of ``sku_id, score``).

    The output's ``score`` is the blended score; requests without candidates keep an empty array.
    """
    if weight == 0:
        return found.select(key, F.slice(column, 1, k).alias(column))
    exploded = found.select(key, F.explode(column).alias("c")).select(key, "c.sku_id", F.col("c.score").alias("cosine"))
    scored = exploded.join(priors, "sku_id", "left").select(
        key, "sku_id", (F.col("cosine") + F.lit(float(weight)) * F.coalesce("prior", F.lit(0.0))).cast("float")
        .alias("score"))
    order = Window.partitionBy(key).orderBy(F.col("score").desc(), F.col("sku_id"))
    best = scored.withColumn("_rank", F.row_number().over(order)).where(F.col("_rank") <= k)
    grouped = best.groupBy(key).agg(F.array_sort(F.collect_list(F.struct("_rank", "sku_id", "score"))).alias("_c"))
    ranked = grouped.select(key, F.transform("_c", lambda c: F.struct(c["sku_id"].alias("sku_id"),
                                                                    c["score"].alias("score"))).alias(column))
    return found.select(key).join(ranked, key, "left").select(
        key, F.coalesce(column, F.array().cast("array<struct<sku_id:bigint,score:float>>")).alias(column))


__all__ = ["popularity_prior", "reranked"]
