"""The three tables of a ``recommend`` run, full or incremental, one commit each.

For each table, the requests a full run would answer (every SKU; the users active in the
``lookback_days`` before ``as_of`` with a behaviour vector; the window's queries) and how a
list is computed (:class:`Lists`). A full plan computes every list and overwrites the
table; an incremental plan (:mod:`adrank.recommend.incremental`) computes the lists its
changes can reach (:mod:`adrank.recommend.scopes`), MERGEs them and deletes the keys a
full run would not write. Users and queries rank on the basis's popularity (the clicks
before ``basis.prior_end``). A table's figures: ``version``, ``rows`` written,
``recomputed`` lists, ``removed`` keys and ``mode``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable
from typing import Any

import numpy as np
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from adrank.context.behaviour import clicks_of
from adrank.context.towers import query_vectors
from adrank.core import layout
from adrank.core.config import RecommendConfig
from adrank.recommend import scopes, store, users
from adrank.recommend.incremental import FULL, Plan
from adrank.recommend.neighbours import Catalog, Limits, nearest
from adrank.recommend.queries import window_queries
from adrank.recommend.ranking import Ranking
from adrank.recommend.settings import Settings
from adrank.runtime.runs import RunReport


@dataclasses.dataclass(frozen=True, eq=False)
class Lists:
    """One table's requests (``key, vector, ...``), how its lists are computed, and how a change reaches them."""

    key: str
    column: str  # the list column
    requests: DataFrame
    compute: Callable[[DataFrame], DataFrame]
    catalog: Catalog  # how a change is compared with a request
    weight: float = 0.0  # the popularity weight of the ranking (0: by cosine alone)
    priors: DataFrame | None = None  # sku_id, prior of the ranking (None: by cosine alone)


def sku_requests(embeddings: DataFrame) -> DataFrame:
    """``sku_id, vector, exclude``: every SKU asks for its neighbours, itself excluded."""
    return embeddings.select("sku_id", F.col("embedding").alias("vector"),
                             F.array(F.col("sku_id").cast("bigint")).alias("exclude"))


def write_tables(spark: SparkSession, settings: Settings, paths: dict[str, str], report: RunReport,
                 inputs: Any, catalogs: Any, limits: Limits, plan: Plan, record: dict[str, Any]) -> dict[str, Any]:
    """The three tables (``paths``: table -> path) of ``inputs`` (:class:`adrank.recommend.run.Inputs`), one
    commit each; ``{table: figures}``."""
    as_of = str(record["as_of"])
    clicks = clicks_of(inputs.examples)
    prior = clicks.where(F.col("ts") < F.to_timestamp(F.lit(plan.basis.prior_end)))
    ranking = Ranking.of(settings.recommend, prior, inputs.embeddings, limits, catalogs.requests)
    ranking.priors.cache()  # ranks every list, and bounds the reverse checks
    start = dt.datetime.fromisoformat(as_of) - dt.timedelta(days=settings.recommend.lookback_days)
    user_requests = users.user_requests(users.active_users(clicks, as_of, settings.recommend.lookback_days),
                                        clicks, inputs.embeddings, settings.features).cache()
    queries = query_vectors(window_queries(inputs.examples, str(start), as_of), inputs.model_path)
    query_requests = queries.withColumnRenamed("embedding", "vector").cache()
    weight = settings.recommend.popularity_weight
    priors = ranking.priors if weight else None
    tables = {
        layout.SIMILAR_SKUS: Lists("sku_id", "neighbours", sku_requests(inputs.embeddings),
                                   lambda r: nearest(r, "sku_id", catalogs.similar, limits), catalogs.similar),
        layout.USER_RECOMMENDATIONS: Lists(
            "user_id", "recommendations", user_requests,
            lambda r: ranking.ranked(r, "user_id", catalogs.requests).join(
                r.select("user_id", "as_of", "behaviour_clicks"), "user_id"), catalogs.requests, weight, priors),
        layout.QUERY_RECOMMENDATIONS: Lists("query", "recommendations", query_requests,
                                            lambda r: ranking.ranked(r, "query", catalogs.requests),
                                            catalogs.requests, weight, priors),
    }
    written = {}
    try:
        for table, lists in tables.items():
            with report.timed(f"recommend_{table}"):
                written[table] = _write(spark, settings, paths[table], table, lists, clicks, plan, record)
    finally:
        user_requests.unpersist()
        query_requests.unpersist()
        ranking.priors.unpersist()
    return written


def _write(spark: SparkSession, settings: Settings, path: str, table: str, lists: Lists, clicks: DataFrame,
           plan: Plan, record: dict[str, Any]) -> dict[str, Any]:
    """One table's commit: every list (full), or the reached ones MERGEd (incremental); its figures."""
    if plan.mode == FULL:
        commit = store.write_table(spark, path, table, lists.compute(lists.requests), record)
        return {"version": commit["version"], "rows": commit["rows_written"], "recomputed": commit["rows_written"],
                "removed": None, "mode": FULL}
    previous = store.read_table(spark, path, plan.previous[table].version)
    scope = _scope(settings, table, lists, previous, clicks, plan, str(record["as_of"]))
    upserts = lists.compute(lists.requests.join(scope, lists.key, "left_semi"))
    commit = store.merge_table(spark, path, table, upserts, scopes.removed_keys(previous, lists.requests, lists.key),
                               record)
    return {**commit, "recomputed": commit["rows"], "mode": plan.mode}


def _scope(settings: Settings, table: str, lists: Lists, previous: DataFrame, clicks: DataFrame, plan: Plan,
           as_of: str) -> DataFrame:
    """``key`` of the lists of ``table`` the run recomputes (:mod:`adrank.recommend.scopes`)."""
    changes = plan.changes_of(table)
    weight = lists.weight
    reach = _reach(changes.frame, lists.priors, weight)
    bars = scopes.bars(previous, lists.key, lists.column, settings.recommend.k, weight, lists.priors,
                       _outside(lists.priors, settings.recommend) if weight else 0.0)
    scope = scopes.reach_scope(previous, lists.requests, lists.key, changes.touched, bars, reach, lists.catalog,
                               lists.column)
    if table == layout.SIMILAR_SKUS:  # a SKU whose own embedding changed asks anew
        scope = scope.unionByName(changes.frame.where(F.col("new").isNotNull()).select("sku_id"))
    elif table == layout.USER_RECOMMENDATIONS:
        since = plan.previous[table].as_of
        scope = scope.unionByName(scopes.user_changes(clicks, changes.touched, since, as_of,
                                                      settings.features.behaviour_lookback_days))
    return scope.distinct()


def _reach(changes: DataFrame, priors: DataFrame | None, weight: float) -> scopes.Reach:
    """The changed SKUs' vectors on the driver: new ones with ``weight x prior``; old ones when ``weight`` > 0."""
    bonus = F.lit(0.0) if priors is None else F.coalesce("prior", F.lit(0.0)) * F.lit(float(weight))
    scored = changes if priors is None else changes.join(priors, "sku_id", "left")
    new = scored.where(F.col("new").isNotNull()).select("new", bonus.alias("bonus")).collect()
    old = [r.old for r in changes.where(F.col("old").isNotNull()).select("old").collect()] if weight else []
    return scopes.Reach(_matrix([r.new for r in new]), np.array([r.bonus for r in new], dtype=np.float64),
                        _matrix(old))


def _matrix(rows: list[Any]) -> np.ndarray:
    return np.array(rows, dtype=np.float32).reshape(len(rows), -1) if rows else np.zeros((0, 0), np.float32)


def _outside(priors: DataFrame | None, recommend: RecommendConfig) -> float:
    """The highest prior of a SKU outside the ``popular_candidates`` most clicked (1 without them)."""
    if priors is None or not recommend.popular_candidates:
        return 1.0
    ranked = priors.orderBy(F.col("prior").desc(), "sku_id").limit(recommend.popular_candidates + 1).collect()
    return float(ranked[-1].prior) if len(ranked) > recommend.popular_candidates else 0.0


__all__ = ["Lists", "sku_requests", "write_tables"]
