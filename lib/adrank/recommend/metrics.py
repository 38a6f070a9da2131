"""Retrieval metrics of the recommendations, each against a popularity baseline computed the same way.

Pure DataFrame aggregations (one small ``collect`` each). The popularity recommender
lists the most clicked SKUs of the training dates (ties: the smaller sku_id) and, like
the embedding recommender, never returns the request's own SKU or what a user already
clicked.

* :func:`similar_precision`: of each SKU's top 10 neighbours, the share in its
  ``category_id`` (the category is never an input of the embeddings: evaluation only),
  over the SKUs that have one;
* :func:`query_recall`: the share of held-out clicked searches whose clicked SKU is in
  the query's top 10;
* :func:`user_hit_rate`: the share of users with a held-out click who clicked one of
  their top 10.

A figure whose ground truth is absent (no SKU with a category, no held-out search, no
held-out user) is None, never 0: "not available", not "the model failed".
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

AT = 10


def popular_skus(clicks: DataFrame, limit: int) -> list[int]:
    """The ``limit`` most clicked sku_ids of ``clicks`` (``sku_id``), most clicked first."""
    counts = clicks.groupBy("sku_id").count().orderBy(F.col("count").desc(), F.col("sku_id"))
    return [int(r.sku_id) for r in counts.limit(limit).collect()]


def top_ids(neighbours: str, at: int = AT) -> Column:
    """The first ``at`` sku_ids of an array of ``sku_id, score`` structs."""
    return F.slice(F.col(neighbours)["sku_id"], 1, at)


def popular_excluding(popular: list[int], exclude: Column, at: int = AT) -> Column:
    """The first ``at`` of ``popular`` that are not in ``exclude`` (an array<long> column)."""
    listed = F.array(*[F.lit(i).cast("bigint") for i in popular]) if popular else F.array().cast("array<bigint>")
    return F.slice(F.filter(listed, lambda x: ~F.array_contains(F.coalesce(exclude, F.array().cast("array<bigint>")),
                                                                  x)), 1, at)


def similar_precision(recommended: DataFrame, categories: DataFrame, at: int = AT) -> tuple[float | None, int]:
    """``(mean share of the first ``at`` of each SKU's ``ids`` that share its category, SKUs measured)``.

    Only SKUs with a ``category_id`` are measured (a neighbour without one is no match):
    ``category_id`` is optional in the catalog, and a catalog without any gives
    ``(None, 0)``, not a precision of 0.

    Args:
        recommended: ``sku_id, ids`` (array<long>).
        categories: ``sku_id, category_id`` of every SKU (null: unknown).
    """
    known = categories.where(F.col("category_id").isNotNull())
    own = known.select("sku_id", F.col("category_id").alias("own"))
    other = known.select(F.col("sku_id").alias("neighbour"), F.col("category_id").alias("theirs"))
    measured = recommended.join(own, "sku_id")
    pairs = measured.select("sku_id", "own", F.explode(F.slice("ids", 1, at)).alias("neighbour"))
    matched = pairs.join(other, "neighbour", "left").groupBy("sku_id").agg(
        F.sum(F.coalesce(F.col("own") == F.col("theirs"), F.lit(False)).cast("int")).alias("same"))
    per_sku = measured.select("sku_id").join(matched, "sku_id", "left")
    row = per_sku.agg(F.avg(F.coalesce("same", F.lit(0)) / F.lit(float(at))).alias("p"),
                      F.count("*").alias("n")).collect()[0]
    return (None if row.p is None else float(row.p)), int(row.n)


def query_recall(searches: DataFrame, recommended: DataFrame) -> tuple[float | None, int]:
    """``(share of searches whose clicked SKU is in the query's ids, searches)``.

    Args:
        searches: ``query, sku_id`` of held-out clicked searches.
        recommended: ``query, ids`` (array<long>); a query without a row is a miss.
    """
    joined = searches.join(recommended, "query", "left")
    hit = F.coalesce(F.array_contains("ids", F.col("sku_id")), F.lit(False)).cast("double")
    row = joined.agg(F.avg(hit).alias("r"), F.count("*").alias("n")).collect()[0]
    return (None if row.r is None else float(row.r)), int(row.n)


def user_hit_rate(held_out: DataFrame, recommended: DataFrame) -> tuple[float | None, int]:
    """``(share of users with one of ``clicked`` among their ids, users)``.

    Args:
        held_out: ``user_id, clicked`` (array<long>) of the users evaluated.
        recommended: ``user_id, ids`` (array<long>); a user without a row is a miss.
    """
    joined = held_out.join(recommended, "user_id", "left")
    hit = F.coalesce(F.arrays_overlap("clicked", "ids"), F.lit(False)).cast("double")
    row = joined.agg(F.avg(hit).alias("h"), F.count("*").alias("n")).collect()[0]
    return (None if row.h is None else float(row.h)), int(row.n)


__all__ = ["AT", "popular_excluding", "popular_skus", "query_recall", "similar_precision", "top_ids",
           "user_hit_rate"]
