"""The ``recommend`` run: similar SKUs, user recommendations and query to SKU, evaluated on the held-out day.

One run (:func:`recommend`) reads the current serving snapshot of ``sku_embeddings`` and
the ``sku_embeddings`` version it mirrors (so every table comes from one set of
embeddings), the stage-1 model that made them (its query tower) and the latest
``training_examples`` version (clicks and queries), then:

1. chooses the search: exact up to ``recommend.exact_max_skus`` SKUs, else an
   inverted-file index built with Spark ML ``KMeans`` (:mod:`adrank.recommend.index`),
   whose recall@10 against exact search is measured on ``recommend.recall_sample`` SKUs;
2. overwrites ``similar_skus`` (every SKU, itself excluded), ``user_recommendations``
   (users who clicked in the ``lookback_days`` before the end of the data, as of then,
   their clicks excluded) and ``query_recommendations`` (the window's distinct queries),
   one commit each carrying the run's record (:mod:`adrank.recommend.store`);
3. evaluates on the held-out dates (the last ``train.holdout_days``): similar-SKU
   precision@10 of sharing a category, query recall@10, user hit rate@10 (users as of the
   held-out day's start), each against popularity (:mod:`adrank.recommend.metrics`). A
   figure without its ground truth (a catalog without ``category_id``, no held-out search
   or user) is None: null in the record, "not available" on the console.

The run's index folder is removed when it ends, whatever happens. The run returns its
figures as :class:`Recommendations` (the run record's ``recommend``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from adrank.context.behaviour import clicks_of
from adrank.context.towers import query_vectors
from adrank.core import layout
from adrank.core.config import Config, FeaturesConfig, RecommendConfig
from adrank.core.errors import InputError
from adrank.recommend import incremental, index, metrics, store, users
from adrank.recommend.lists import sku_requests, write_tables
from adrank.recommend.neighbours import EXACT, IVF, Catalog, Limits, nearest
from adrank.recommend.queries import similar_to_query
from adrank.recommend.ranking import Ranking
from adrank.recommend.settings import Places, Settings
from adrank.runtime.console import NOT_AVAILABLE, say_table
from adrank.runtime.runs import RunReport
from adrank.storage import delta

POPULAR_LIMIT = 1000  # the popularity list a baseline filters its exclusions from


class RecommendInputError(InputError):
    """recommend cannot start: no serving snapshot, no training examples, or no model."""


@dataclasses.dataclass(frozen=True)
class Inputs:
    """What one run reads, pinned."""

    embeddings: DataFrame  # sku_id, embedding of the snapshot's sku_embeddings version
    examples: DataFrame
    versions: dict[str, int]
    snapshot_path: str
    skus: int
    model_path: str
    dates: list[dt.date]


@dataclasses.dataclass(frozen=True)
class Recommendations:
    """What a ``recommend`` run read, how it searched, what it wrote and how it scored.

    ``versions``: the pinned inputs; ``search``: exact or IVF (with the index's figures and
    recall@10); ``tables``: each table's commit figures (with ``mode`` and how many lists it
    ``recomputed`` and ``removed``); ``metrics``: the held-out figures against popularity (None
    where there is no ground truth); ``plan``: full or incremental, why, and what changed.
    """

    versions: dict[str, int]
    search: dict[str, Any]
    tables: dict[str, dict[str, Any]]
    metrics: dict[str, Any]
    plan: dict[str, Any] = dataclasses.field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        """The run record's ``recommend``."""
        return {"recommend": dataclasses.asdict(self)}


def recommend(spark: SparkSession, config: Config, report: RunReport) -> Recommendations:
    """Write the three recommendation tables (full or incremental) and evaluate them; print the metrics
    table; the figures."""
    settings, places = Settings.of(config), Places.of(config)
    inputs = pinned_inputs(spark, places, settings.holdout_days)
    folder = Path(places.index) / report.run_id
    as_of = str(_end_of(inputs.dates))
    with report.timed("recommend_plan"):
        plan = incremental.plan_run(spark, settings, places, inputs.embeddings, inputs.versions,
                                    search_method(settings.recommend, inputs.skus), as_of)
    say_table(report.job, f"recommend: {plan.mode} ({plan.reason})")
    try:
        with report.timed("recommend_index"):
            catalogs, search, basis = choose_search(settings.recommend, settings.seed, inputs, folder, plan.basis)
            plan = dataclasses.replace(plan, basis=basis)
        limits = Limits(settings.recommend.k, settings.recommend.query_block, settings.recommend.catalog_block)
        record = {"run_id": report.run_id, **{f"{k}_version": v for k, v in inputs.versions.items()},
                  "search": search["method"], "as_of": as_of, **plan.record()}
        tables = write_tables(spark, settings, places.tables, report, inputs, catalogs, limits, plan, record)
        if catalogs.similar.method == IVF:
            with report.timed("recommend_recall"):
                search["ivf"]["recall_at_10"], search["ivf"]["recall_sample"] = ivf_recall(
                    spark, settings, places.tables[layout.SIMILAR_SKUS], inputs, catalogs.similar,
                    tables[layout.SIMILAR_SKUS]["version"])
        with report.timed("recommend_evaluation"):
            found = evaluate(spark, settings, places, inputs, catalogs.requests, limits, tables)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        plan.release()
    result = Recommendations(inputs.versions, search, tables, found, plan.figures())
    say_table(report.job, metrics_table(result.as_json()["recommend"]))
    return result


def metrics_table(figures: Mapping[str, Any]) -> str:
    """The held-out metrics against popularity as plain text, with what they were computed from.

    ``figures`` is the run record's ``recommend`` (:meth:`Recommendations.as_json`).
    """
    found, versions, search = figures["metrics"], figures["versions"], figures["search"]
    rows = [("metric", "served", "embedding", "popularity", "measured on")]
    for label, name, count in (("similar-SKU precision@10", "similar_precision_at_10",
                                f"{found.get('similar_skus_evaluated', search['skus'])} SKUs with a category"),
                               ("query recall@10", "query_recall_at_10", f"{found['query_searches']} searches"),
                               ("user hit rate@10", "user_hit_rate_at_10", f"{found['users_evaluated']} users"),
                               ("user hit rate@10, feed", "user_hit_rate_at_10_feed",
                                f"{found['users_evaluated_feed']} users")):
        rows.append((label, _fmt(found.get(name)), _fmt(found.get(f"{name}_embedding", found.get(name))),
                     _fmt(found.get(f"{name}_popularity")), count))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    ivf = search.get("ivf") or {}
    how = (f"IVF, {ivf.get('lists')} lists, nprobe {ivf.get('nprobe')}, recall@10 {_fmt(ivf.get('recall_at_10'))}"
           if search["method"] == IVF else "exact")
    head = (f"recommendations on the held-out dates {', '.join(found['holdout_dates'])} (sku_embeddings "
            f"v{versions['sku_embeddings']}, serving snapshot v{versions['serving_snapshot']}, embedding model "
            f"v{versions['embedding_model']}, search {how}, popularity weight {found['popularity_weight']}):")
    return "\n".join([head, *("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows)])


def _fmt(value: Any) -> str:
    """A figure with 4 decimals; one that could not be computed (None, NaN) is "not available"."""
    return NOT_AVAILABLE if not isinstance(value, (int, float)) or value != value else f"{value:.4f}"


def pinned_inputs(spark: SparkSession, places: Places, holdout_days: int) -> Inputs:
    """The serving snapshot, its ``sku_embeddings`` version and model, and ``training_examples``
    (with more than ``holdout_days`` dates)."""
    from adrank.embed.store import serving_snapshot
    from adrank.train.registry import version_path

    try:
        snapshot = serving_snapshot(places.serving)
    except FileNotFoundError as error:
        raise RecommendInputError(f"no serving snapshot of {layout.SKU_EMBEDDINGS} ({error}): "
                                  "run `./spark-submit.sh embed_catalog` first; nothing was written") from None
    table_version, model_version = int(snapshot.manifest["table_version"]), int(snapshot.manifest["model_version"])
    try:
        model_path, _ = version_path(places.registry, layout.PAIRWISE, model_version)
    except FileNotFoundError as error:
        raise RecommendInputError(f"{error}: the model behind serving snapshot v{snapshot.version} is gone; "
                                  "nothing was written") from None
    examples_path = places.examples
    try:
        examples_version = delta.pin_version(spark, examples_path)
    except Exception as error:  # noqa: BLE001 - any failure to open the table is the same missing input
        raise RecommendInputError(f"no {layout.TRAINING_EXAMPLES} table at {examples_path} "
                                  f"({type(error).__name__}): run build_tables first; nothing was written") from None
    examples = delta.read_delta(spark, examples_path, examples_version)
    dates = sorted(r.date for r in examples.select("date").distinct().collect())
    if len(dates) <= holdout_days:
        raise RecommendInputError(f"{layout.TRAINING_EXAMPLES} v{examples_version} has {len(dates)} date(s): "
                                  f"need more than train.holdout_days={holdout_days}")
    embeddings = delta.read_delta(spark, places.embeddings, table_version)
    versions = {"sku_embeddings": table_version, "serving_snapshot": snapshot.version,
                "embedding_model": model_version, "training_examples": examples_version}
    return Inputs(embeddings.select("sku_id", "embedding"), examples, versions, snapshot.path, len(snapshot),
                  model_path, dates)


@dataclasses.dataclass(frozen=True)
class Catalogs:
    """The two ways a run searches: SKU to SKU (whitened cosine), and users and queries (plain cosine).

    The query tower and the behaviour means do not share the catalog's statistics, so the
    whitening fitted on the catalog serves similar SKUs only (measured: it lifts
    similar-SKU precision and lowers query recall and user hit rate).
    """

    similar: Catalog
    requests: Catalog


def search_method(settings: RecommendConfig, skus: int) -> str:
    """Exact search up to ``exact_max_skus`` SKUs, else IVF."""
    return EXACT if skus <= settings.exact_max_skus else IVF


def choose_search(settings: RecommendConfig, seed: int, inputs: Inputs, folder: Path,
                  basis: incremental.Basis) -> tuple[Catalogs, dict[str, Any], incremental.Basis]:
    """Exact search over the snapshot up to ``exact_max_skus`` SKUs; above, IVF indexes under ``folder``
    on the basis's centroids (fitted, KMeans seeded with ``seed``, when it has none yet); similar SKUs
    compared after the basis's whitening. Returns the basis with the centroids the indexes use."""
    whitening = basis.whitening
    figures: dict[str, Any] = {"skus": inputs.skus, "k": settings.k, "exact_max_skus": settings.exact_max_skus,
                               "whitening_power": settings.whitening_power, "ivf": None}
    if search_method(settings, inputs.skus) == EXACT:
        return (Catalogs(Catalog(EXACT, inputs.snapshot_path, whitening=whitening), Catalog(EXACT, inputs.snapshot_path)),
                {"method": EXACT, **figures}, basis)
    lists = settings.ivf_lists or index.default_lists(inputs.skus)
    built, centroids = {}, {}
    for name, how in (("similar", whitening), ("requests", None)) if whitening else (("similar", None),):
        built[name], centroids[name] = index.build_index(
            inputs.embeddings, folder / name, lists=lists, train_rows=lists * settings.ivf_train_per_list,
            max_iterations=settings.ivf_max_iterations, seed=seed, whitening=how, centroids=basis.centroids.get(name))
    nprobe = min(settings.ivf_nprobe, built["similar"]["lists"])
    similar = Catalog(IVF, str(folder / "similar"), nprobe, whitening)
    requests = Catalog(IVF, str(folder / "requests"), nprobe) if whitening else similar
    ivf = {**built["similar"], "nprobe": nprobe, "indexes": len(built), "recall_sample": None, "recall_at_10": None}
    return Catalogs(similar, requests), {"method": IVF, **figures, "ivf": ivf}, dataclasses.replace(
        basis, centroids=centroids)


def _end_of(dates: list[dt.date]) -> dt.datetime:
    """Midnight after the last date (UTC): the time the tables are "as of"."""
    return dt.datetime.combine(dates[-1] + dt.timedelta(days=1), dt.time())


def ivf_recall(spark: SparkSession, settings: Settings, similar_path: str, inputs: Inputs, catalog: Catalog,
               similar_version: int) -> tuple[float | None, int]:
    """recall@10 of the index's ``similar_skus`` (at ``similar_path``, version ``similar_version``)
    against exact search, on a sample of SKUs; with the number of SKUs compared."""
    sample_size = min(settings.recommend.recall_sample, inputs.skus)
    fraction = min(1.0, 2.0 * sample_size / max(1, inputs.skus))
    sample = sku_requests(inputs.embeddings).sample(fraction=fraction, seed=settings.seed).orderBy(
        F.xxhash64("sku_id"), "sku_id").limit(sample_size)
    limits = Limits(metrics.AT, settings.recommend.query_block, settings.recommend.catalog_block)
    exact = nearest(sample, "sku_id", Catalog(EXACT, inputs.snapshot_path, whitening=catalog.whitening), limits).select(
        "sku_id", metrics.top_ids("neighbours").alias("exact"))
    approximate = store.read_table(spark, similar_path, similar_version)
    joined = exact.join(approximate.select("sku_id", metrics.top_ids("neighbours").alias("found")), "sku_id")
    recall = F.size(F.array_intersect("exact", "found")) / F.greatest(F.size("exact"), F.lit(1))
    row = joined.agg(F.avg(recall).alias("r"), F.count("*").alias("n")).collect()[0]
    return (None if row.r is None else float(row.r)), int(row.n)


def evaluate(spark: SparkSession, settings: Settings, places: Places, inputs: Inputs, catalog: Catalog,
             limits: Limits, tables: dict[str, Any]) -> dict[str, Any]:
    """The held-out metrics, each with its popularity baseline (nothing of the held-out dates is used
    to recommend: users as of their start, popularity from the clicks before it).

    ``*_embedding`` is the embedding's own order (popularity weight 0); the unsuffixed
    figure is what the tables serve (their ``recommend.popularity_weight``).
    """
    holdout = inputs.dates[-settings.holdout_days:]
    start = dt.datetime.combine(holdout[0], dt.time())
    before = inputs.examples.where(F.col("date") < F.lit(holdout[0]))
    after = inputs.examples.where(F.col("date") >= F.lit(holdout[0]))
    popular = metrics.popular_skus(clicks_of(before), POPULAR_LIMIT)
    ranking = Ranking.of(settings.recommend, clicks_of(before), inputs.embeddings, limits, catalog, popular)
    figures: dict[str, Any] = {"holdout_dates": [str(d) for d in holdout], "popular_skus": popular[:metrics.AT],
                               "popularity_weight": settings.recommend.popularity_weight}
    figures.update(_similar_metrics(spark, places, tables, popular))
    figures.update(_query_metrics(inputs, catalog, ranking, after, popular))
    figures.update(_user_metrics(settings.features, inputs, catalog, ranking, after, str(start), popular))
    return figures


def _similar_metrics(spark: SparkSession, places: Places, tables: dict[str, Any], popular: list[int]) -> dict[str, Any]:
    categories = delta.read_delta(spark, places.sku_images).select("sku_id", "category_id")
    similar = store.read_table(spark, places.tables[layout.SIMILAR_SKUS], tables[layout.SIMILAR_SKUS]["version"])
    found = similar.select("sku_id", metrics.top_ids("neighbours").alias("ids"))
    baseline = similar.select("sku_id", metrics.popular_excluding(popular, F.array("sku_id")).alias("ids"))
    precision, measured = metrics.similar_precision(found, categories)
    popularity, _ = metrics.similar_precision(baseline, categories)
    return {"similar_precision_at_10": precision, "similar_precision_at_10_popularity": popularity,
            "similar_skus_evaluated": measured}


def _both_orders(candidates: DataFrame, key: str, ranking: Ranking) -> tuple[DataFrame, DataFrame]:
    """``key, ids`` of the top 10 in the embedding's order, and in the served (re-ranked) order."""
    embedding = candidates.select(key, metrics.top_ids("neighbours").alias("ids"))
    served = ranking.rerank(candidates, key).select(key, metrics.top_ids("recommendations").alias("ids"))
    return embedding, served


def _query_metrics(inputs: Inputs, catalog: Catalog, ranking: Ranking, after: DataFrame,
                   popular: list[int]) -> dict[str, Any]:
    """Held-out clicked searches: is the clicked SKU among the query's top 10?"""
    searches = after.where((F.col("page") == layout.SEARCH) & (F.col("label") == 1)).select(
        "query", F.col("ad_sku_id").alias("sku_id")).cache()
    try:
        vectors = query_vectors(searches, inputs.model_path).withColumnRenamed("embedding", "vector")
        candidates = ranking.candidates(vectors, "query", catalog).cache()
        embedding, served = _both_orders(candidates, "query", ranking)
        recall, searched = metrics.query_recall(searches, served)
        own, _ = metrics.query_recall(searches, embedding)
        listed = F.array(*[F.lit(i) for i in popular[:metrics.AT]]).cast("array<bigint>")
        baseline, _ = metrics.query_recall(searches, searches.select("query").distinct().select(
            "query", listed.alias("ids")))
    finally:
        searches.unpersist()
    candidates.unpersist()
    return {"query_recall_at_10": recall, "query_recall_at_10_embedding": own,
            "query_recall_at_10_popularity": baseline, "query_searches": searched}


def _user_metrics(features: FeaturesConfig, inputs: Inputs, catalog: Catalog, ranking: Ranking, after: DataFrame,
                  start: str, popular: list[int]) -> dict[str, Any]:
    """Users with a held-out click, recommended for as of the held-out day's start.

    ``user_hit_rate_at_10`` counts a held-out click on any page; ``*_feed`` only the feed's
    (the page user recommendations serve), over the users with a held-out feed click.
    """
    clicks = clicks_of(inputs.examples)
    held = _clicked_sets(after).cache()
    asked = held.select("user_id").withColumn("ts", F.to_timestamp(F.lit(start)))
    requests = users.user_requests(asked, clicks, inputs.embeddings, features).cache()
    try:
        candidates = ranking.candidates(requests, "user_id", catalog).cache()
        embedding, served = _both_orders(candidates, "user_id", ranking)
        baseline = requests.select("user_id", metrics.popular_excluding(popular, F.col("exclude")).alias("ids"))
        with_history = held.join(requests.select("user_id"), "user_id")
        figures: dict[str, Any] = {}
        for suffix, column in (("", "clicked"), ("_feed", "clicked_feed")):
            evaluated = with_history.select("user_id", F.col(column).alias("clicked")).where(F.size("clicked") > 0)
            figures[f"user_hit_rate_at_10{suffix}"], figures[f"users_evaluated{suffix}"] = metrics.user_hit_rate(
                evaluated, served)
            figures[f"user_hit_rate_at_10{suffix}_embedding"], _ = metrics.user_hit_rate(evaluated, embedding)
            figures[f"user_hit_rate_at_10{suffix}_popularity"], _ = metrics.user_hit_rate(evaluated, baseline)
        figures["users_without_history"] = held.count() - figures["users_evaluated"]
        candidates.unpersist()
    finally:
        held.unpersist()
        requests.unpersist()
    return figures


def _clicked_sets(after: DataFrame) -> DataFrame:
    """``user_id, clicked, clicked_feed``: each user's held-out clicked SKUs, on any page and on the feed."""
    clicked = after.where(F.col("label") == 1)
    feed = F.when(F.col("page") == layout.FEED, F.col("ad_sku_id"))
    return clicked.groupBy("user_id").agg(F.array_sort(F.collect_set("ad_sku_id")).alias("clicked"),
                                          F.array_sort(F.collect_set(feed)).alias("clicked_feed"))


__all__ = ["Places", "Ranking", "RecommendInputError", "Recommendations", "Settings", "choose_search", "evaluate",
           "metrics_table", "pinned_inputs", "recommend", "similar_to_query", "sku_requests"]
