"""Which lists an incremental ``recommend`` run recomputes: the keys a change can reach.

Every table is a list of the best ``k`` SKUs per key, best first, with the score of its
last one. On an unchanged basis (:mod:`adrank.recommend.incremental`) a list can change
only if:

* its key is new, or its request changed: a SKU whose embedding changed or appeared; a
  user with a click since the previous run, a click that left the behaviour window since,
  or a click in the window on a changed or deleted SKU (their behaviour vector moves);
* it holds a changed or deleted SKU (:func:`holding`);
* a changed or added SKU would now enter it, or change its candidates (:func:`reached`,
  :func:`bars`). Similar SKUs: its cosine reaches the list's last score. Users and queries
  rank ``cosine + popularity_weight x prior`` among their ``candidates`` nearest by cosine
  and the popular SKUs: a new vector can enter the list (``cosine + bonus >= last``) or
  push a list SKU out of the candidates (``cosine >=`` the list's least cosine); an old
  vector leaving the candidates lets the next SKU ``z`` in, which can enter the list only
  if ``cosine(old) + weight x prior(z) >= last``, and ``z``, not a popular candidate, has
  at most the prior of the most clicked SKU outside them. A list shorter than ``k`` is
  reached by every change.

So every other list equals a full recompute's (ties within :data:`TOLERANCE` count as
reached: a superset costs a few searches, never a wrong list). Deleted keys (SKUs gone,
users no longer active or without a behaviour vector, queries out of the window) are the
previous keys a full run would not write (:func:`removed_keys`).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from adrank.recommend.neighbours import Catalog

TOLERANCE = 1e-4  # float32 scores of the same pair may differ by a few ulps between searches
REACH_BLOCK = 4096  # changed vectors scored at once per request block


@dataclasses.dataclass(frozen=True, eq=False)
class Reach:
    """The changed SKUs a reverse check scores: their ``new`` vectors (``[m, d]``, each with its ``bonus`` =
    popularity_weight x prior) and their ``old`` ones (``[o, d]``, users and queries only)."""

    new: np.ndarray
    bonus: np.ndarray
    old: np.ndarray


def bars(previous: DataFrame, key: str, column: str, k: int, weight: float, priors: DataFrame | None,
         outside: float) -> DataFrame:
    """``key, last, floor, vacate`` of each previous list: a new vector reaches it with ``cosine + bonus >=
    last`` or ``cosine >= floor`` (its least cosine), an old one with ``cosine >= vacate`` (``last - weight x
    outside``, the highest prior of a SKU outside the popular candidates; null when ``weight`` is 0). A list
    shorter than ``k`` has null bars: every change reaches it."""
    full = F.size(column) >= k
    last = F.when(full, F.element_at(column, -1)["score"]).cast("double")
    if weight == 0 or priors is None:
        return previous.select(key, last.alias("last"), last.alias("floor"), F.lit(None).cast("double").alias("vacate"))
    listed = previous.select(key, F.explode(column).alias("_n")).select(
        key, F.col("_n.sku_id").alias("sku_id"), F.col("_n.score").alias("score"))
    cosine = F.col("score") - F.lit(float(weight)) * F.coalesce("prior", F.lit(0.0))
    floors = listed.join(priors, "sku_id", "left").groupBy(key).agg(F.min(cosine).alias("_floor"))
    return previous.select(key, last.alias("last"), full.alias("_full")).join(floors, key, "left").select(
        key, "last", F.when(F.col("_full"), F.col("_floor")).cast("double").alias("floor"),
        (F.col("last") - F.lit(float(weight * outside))).alias("vacate"))


def holding(previous: DataFrame, key: str, column: str, skus: DataFrame) -> DataFrame:
    """``key`` of the ``previous`` lists (``column``: array of ``sku_id, score``) that hold one of ``skus``."""
    listed = previous.select(key, F.explode(column).alias("_n")).select(key, F.col("_n.sku_id").alias("_listed"))
    wanted = F.broadcast(skus.select(F.col("sku_id").alias("_listed")).distinct())
    return listed.join(wanted, "_listed").select(key).distinct()


def reached(requests: DataFrame, key: str, reach: Reach, catalog: Catalog) -> DataFrame:
    """``key`` of the ``requests`` (``key, vector`` and :func:`bars`) a changed SKU of ``reach`` reaches
    (within :data:`TOLERANCE`), vectors compared as ``catalog`` compares them."""
    prepared = Reach(catalog.prepare(reach.new) if len(reach.new) else reach.new, reach.bonus,
                     catalog.prepare(reach.old) if len(reach.old) else reach.old)
    body = functools.partial(_reached_frames, catalog, key, prepared)
    return requests.select(key, F.col("vector").cast("array<float>").alias("vector"),
                           *(F.col(c).cast("double").alias(c) for c in ("last", "floor", "vacate"))).mapInPandas(
        body, f"{key} {requests.schema[key].dataType.simpleString()}")


def _best(queries: np.ndarray, vectors: np.ndarray, bonus: np.ndarray | None = None) -> np.ndarray:
    """Per query, the best ``cosine (+ bonus)`` over ``vectors`` (blocks of :data:`REACH_BLOCK`); -inf if none."""
    best = np.full(len(queries), -np.inf)
    for start in range(0, len(vectors), REACH_BLOCK):
        scores = queries @ vectors[start:start + REACH_BLOCK].T
        if bonus is not None:
            scores = scores + bonus[start:start + REACH_BLOCK]
        best = np.maximum(best, scores.max(axis=1))
    return best


def _reached_frames(catalog: Catalog, key: str, reach: Reach,
                    frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    """mapInPandas body of :func:`reached`."""
    for frame in frames:
        if frame.empty:
            continue
        last, floor, vacate = (frame[c].to_numpy(dtype=np.float64, na_value=np.nan) - TOLERANCE
                               for c in ("last", "floor", "vacate"))
        hit = np.isnan(last)
        queries = catalog.prepare(np.stack([np.asarray(v, dtype=np.float32) for v in frame["vector"]]))
        if len(reach.new):
            hit |= _best(queries, reach.new, reach.bonus) >= last
            hit |= _best(queries, reach.new) >= np.nan_to_num(floor, nan=-np.inf)
        if len(reach.old):
            hit |= _best(queries, reach.old) >= np.nan_to_num(vacate, nan=np.inf)
        yield frame.loc[hit, [key]]


def new_skus(previous: DataFrame, requests: DataFrame, key: str) -> DataFrame:
    """``key`` of the requests without a previous list."""
    return requests.select(key).join(previous.select(key), key, "left_anti")


def removed_keys(previous: DataFrame, requests: DataFrame, key: str) -> DataFrame:
    """``key`` of the previous lists a full run would not write (no request for them now)."""
    return previous.select(key).join(requests.select(key), key, "left_anti")


def reach_scope(previous: DataFrame, requests: DataFrame, key: str, touched: DataFrame, bars_: DataFrame,
                reach: Reach, catalog: Catalog, column: str) -> DataFrame:
    """``key`` of the requests whose list is new, holds a touched SKU, or is reached (:func:`reached`)."""
    with_bars = requests.select(key, "vector").join(bars_, key)
    return (new_skus(previous, requests, key)
            .unionByName(holding(previous, key, column, touched))
            .unionByName(reached(with_bars, key, reach, catalog))
            .distinct())


def user_changes(clicks: DataFrame, touched: DataFrame, since: str, as_of: str, behaviour_days: int) -> DataFrame:
    """``user_id`` of users whose request moved since ``since``: a click in ``[since, as_of)``, a click that
    left the behaviour window (``[since - days, as_of - days)``), or a click in the window on a touched SKU."""
    ts, days = F.col("ts"), F.expr(f"INTERVAL {int(behaviour_days)} DAYS")
    start, end = F.to_timestamp(F.lit(since)), F.to_timestamp(F.lit(as_of))
    moved = ((ts >= start) & (ts < end)) | ((ts >= start - days) & (ts < end - days))
    in_window = clicks.where((ts >= end - days) & (ts < end)).join(F.broadcast(touched), "sku_id")
    return clicks.where(moved).select("user_id").unionByName(in_window.select("user_id")).distinct()


__all__ = ["REACH_BLOCK", "TOLERANCE", "Reach", "bars", "holding", "reach_scope", "reached", "removed_keys",
           "user_changes"]
