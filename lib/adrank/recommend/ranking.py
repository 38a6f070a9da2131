"""The second stage of user and query recommendations: the embedding's candidates re-scored with popularity.

Pure DataFrame transforms. The search returns each request's ``recommend.candidates``
nearest SKUs by cosine; :func:`reranked` keeps the best ``k`` of them by

    score = cosine + popularity_weight * prior,   prior = log(1 + clicks) / log(1 + most clicks)

where ``clicks`` counts the SKU's clicks before the request's time (a SKU never clicked,
e.g. a cold-start one, has prior 0 and still ranks by its picture alone). With weight 0
the order is the embedding's. Ties: the smaller sku_id. :class:`Ranking` holds a run's
prior and its always-scored popular SKUs, and searches then re-ranks.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from adrank.core.config import RecommendConfig
from adrank.recommend import metrics
from adrank.recommend.neighbours import Always, Catalog, Limits, nearest


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


@dataclasses.dataclass(frozen=True)
class Ranking:
    """User and query recommendations: ``candidates`` by cosine (and the most clicked SKUs), the best
    ``k`` of them by cosine + popularity."""

    settings: RecommendConfig
    priors: DataFrame
    limits: Limits
    always: Always | None = None

    @classmethod
    def of(cls, settings: RecommendConfig, clicks: DataFrame, embeddings: DataFrame, limits: Limits,
           catalog: Catalog, popular: list[int] | None = None) -> Ranking:
        """The ranking whose popularity comes from ``clicks`` (``sku_id``), for searches of ``catalog``.

        ``popular``: the most clicked sku_ids of ``clicks`` if the caller has them (else counted here).
        """
        always = None
        if settings.popularity_weight > 0 and settings.popular_candidates > 0:
            wanted = settings.popular_candidates
            ranked = popular[:wanted] if popular is not None and len(popular) >= wanted else None
            always = popular_vectors(embeddings, ranked or metrics.popular_skus(clicks, wanted), catalog)
        return cls(settings, popularity_prior(clicks), limits, always)

    def candidates(self, requests: DataFrame, key: str, catalog: Catalog) -> DataFrame:
        """``key, neighbours``: the ``recommend.candidates`` nearest SKUs by cosine (``k`` at weight 0)."""
        settings = self.settings
        wanted = settings.candidates if settings.popularity_weight > 0 else settings.k  # weight 0: the top k is it
        wider = dataclasses.replace(self.limits, k=max(self.limits.k, wanted))
        return nearest(requests, key, catalog, wider, self.always)

    def rerank(self, candidates: DataFrame, key: str, column: str = "neighbours") -> DataFrame:
        """``key, recommendations``: the best ``k`` of ``candidates`` by the blended score."""
        settings = self.settings
        return reranked(candidates, key, column, self.priors, settings.popularity_weight,
                                       settings.k).withColumnRenamed(column, "recommendations")

    def ranked(self, requests: DataFrame, key: str, catalog: Catalog) -> DataFrame:
        """Candidates, then the re-ranked best ``k``."""
        return self.rerank(self.candidates(requests, key, catalog), key)


def popular_vectors(embeddings: DataFrame, popular: list[int], catalog: Catalog) -> Always | None:
    """The popular SKUs that have an embedding, sorted, prepared as ``catalog`` compares them (a few rows)."""
    rows = sorted((r.sku_id, r.embedding) for r in embeddings.where(F.col("sku_id").isin(popular)).collect())
    if not rows:
        return None
    return Always(np.array([i for i, _ in rows], dtype=np.int64),
                  catalog.prepare(np.array([v for _, v in rows], dtype=np.float32)))


__all__ = ["Ranking", "popular_vectors", "popularity_prior", "reranked"]
