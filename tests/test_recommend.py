"""recommend: the search kernels, the index, the exclusions, the point-in-time users, the metrics.

Hand-made embeddings whose neighbours are known; real Spark (the session fixture), real
Delta tables and a real serving snapshot on disk.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adrank.embed.serving import Shape, publish_snapshot, write_arrays
from adrank.recommend import index, metrics, users
from adrank.recommend.neighbours import (
    EXACT,
    IVF,
    Catalog,
    InvertedFile,
    Limits,
    exact_search,
    ivf_search,
    mask_excluded,
    nearest,
    unit_rows,
)


def brute_force(queries: np.ndarray, ids: np.ndarray, vectors: np.ndarray, k: int,
                excluded: list[np.ndarray]) -> list[list[int]]:
    """The reference: every cosine, sorted by (-score, id), excluded ids dropped."""
    scores = unit_rows(queries) @ unit_rows(vectors).T
    out = []
    for row, banned in zip(scores, excluded):
        order = [i for i in np.lexsort((ids, -row)) if ids[i] not in set(banned.tolist())]
        out.append([int(ids[i]) for i in order[:k]])
    return out


def snapshot(root: Path, ids: np.ndarray, vectors: np.ndarray) -> str:
    """A real serving snapshot of ``ids`` (sorted) and ``vectors``; its folder."""
    order = np.argsort(ids)
    ids, vectors = ids[order], vectors[order].astype(np.float32)

    def write(folder: Path) -> None:
        write_arrays([(ids, vectors)], folder, len(ids), vectors.shape[1])

    version = publish_snapshot(root, write, Shape(len(ids), vectors.shape[1], 0, 1), keep=2)
    return str(root / f"v{version}")


def clustered(n: int, clusters: int, dim: int, seed: int, spread: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """``n`` vectors around ``clusters`` random unit directions; the cluster of each."""
    rng = np.random.default_rng(seed)
    centres = unit_rows(rng.normal(size=(clusters, dim)))
    which = rng.integers(0, clusters, n)
    return (centres[which] + spread * rng.normal(size=(n, dim))).astype(np.float32), which


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 60), queries=st.integers(1, 12), k=st.integers(1, 8), block=st.integers(1, 17),
       seed=st.integers(0, 10_000))
def test_blocked_exact_search_equals_brute_force(n, queries, k, block, seed):
    rng = np.random.default_rng(seed)
    ids = np.sort(rng.choice(10_000, n, replace=False)).astype(np.int64)
    vectors = rng.normal(size=(n, 5)).astype(np.float32)
    asked = rng.normal(size=(queries, 5)).astype(np.float32)
    excluded = [rng.choice(ids, rng.integers(0, min(n, 4) + 1), replace=False) for _ in range(queries)]
    found = exact_search(unit_rows(asked), excluded, ids, vectors, Limits(k, catalog_block=block))
    assert [list(map(int, f[0])) for f in found] == brute_force(asked, ids, vectors, k, excluded)
    for (got, scores), banned in zip(found, excluded):
        assert not set(got.tolist()) & set(banned.tolist())
        assert np.all(np.diff(scores) <= 0)  # best first


def test_mask_excluded_touches_only_the_listed_ids():
    scores = np.zeros((2, 4), dtype=np.float32)
    mask_excluded(scores, [np.array([5, 99]), np.array([], dtype=np.int64)], np.array([1, 5, 7, 9]))
    assert np.isneginf(scores[0, 1]) and np.isfinite(scores[0, [0, 2, 3]]).all() and np.isfinite(scores[1]).all()


def test_ivf_probing_every_cluster_is_exact_and_one_cluster_stays_inside_it():
    vectors, which = clustered(300, 6, 8, seed=3)
    ids = np.arange(300, dtype=np.int64)
    centres = unit_rows(np.stack([vectors[which == c].mean(0) for c in range(6)]))
    cluster = np.argmax(unit_rows(vectors) @ centres.T, axis=1)
    order = np.lexsort((ids, cluster))
    offsets = np.searchsorted(cluster[order], np.arange(7))
    ivf = InvertedFile(centres, offsets, ids[order], unit_rows(vectors)[order])
    queries = unit_rows(vectors[:20])
    excluded = [np.array([i]) for i in range(20)]
    everything = ivf_search(queries, excluded, ivf, nprobe=6, limits=Limits(10, catalog_block=7))
    exact = exact_search(queries, excluded, ids, vectors, Limits(10))
    assert [list(f[0]) for f in everything] == [list(e[0]) for e in exact]
    one = ivf_search(queries, excluded, ivf, nprobe=1, limits=Limits(10))
    for q, (got, _) in enumerate(one):
        assert set(cluster[got]) == {cluster[q]}


def test_nearest_excludes_itself_and_finds_the_planted_neighbours(spark, tmp_path):
    # Three tight groups of 4 on the axes: each SKU's 3 neighbours are its group, itself excluded.
    base = np.eye(3, dtype=np.float32)
    ids = np.arange(12, dtype=np.int64) * 10 + 1
    vectors = np.repeat(base, 4, axis=0) + 0.01 * np.arange(12, dtype=np.float32)[:, None]
    folder = snapshot(tmp_path / "serving", ids, vectors)
    requests = spark.createDataFrame(
        [(int(i), v.tolist(), [int(i)]) for i, v in zip(ids, vectors)], "sku_id long, vector array<float>, exclude array<long>")
    found = {r.sku_id: [n.sku_id for n in r.neighbours]
             for r in nearest(requests, "sku_id", Catalog(EXACT, folder), Limits(3)).collect()}
    assert set(found) == set(ids.tolist())
    for sku, neighbours in found.items():
        group = (sku // 10) // 4
        assert sorted(neighbours) == sorted(int(i) for i in ids[group * 4:(group + 1) * 4] if i != sku)


def test_index_build_and_ivf_search_through_spark_recall_against_exact(spark, tmp_path):
    vectors, _ = clustered(400, 8, 8, seed=5)
    ids = np.arange(400, dtype=np.int64) + 1000
    embeddings = spark.createDataFrame([(int(i), v.tolist()) for i, v in zip(ids, vectors)],
                                       "sku_id long, embedding array<float>")
    built, centroids = index.build_index(embeddings, tmp_path / "ivf", lists=8, train_rows=400, max_iterations=10, seed=1)
    assert (built["lists"], built["rows"], built["dim"], built["centroids_fitted"]) == (8, 400, 8, 1)
    again, same = index.build_index(embeddings.where("sku_id % 2 = 0"), tmp_path / "given", lists=3, train_rows=10,
                                    max_iterations=1, seed=7, centroids=centroids)  # a basis's centroids: no KMeans
    assert (again["lists"], again["rows"], again["centroids_fitted"]) == (8, 200, 0) and same is centroids
    assert np.array_equal(np.load(tmp_path / "given" / "centroids.npy"), centroids)
    stored_ids = np.load(tmp_path / "ivf" / "ids.npy")
    assert sorted(stored_ids.tolist()) == ids.tolist()  # every SKU once
    offsets = np.load(tmp_path / "ivf" / "offsets.npy")
    assert offsets[0] == 0 and offsets[-1] == 400 and np.all(np.diff(offsets) >= 0)
    requests = embeddings.selectExpr("sku_id", "embedding AS vector", "array(sku_id) AS exclude")
    approx = {r.sku_id: [n.sku_id for n in r.neighbours]
              for r in nearest(requests, "sku_id", Catalog(IVF, str(tmp_path / "ivf"), nprobe=2), Limits(10)).collect()}
    exact = exact_search(unit_rows(vectors), [np.array([i]) for i in ids], ids, vectors, Limits(10))
    recall = np.mean([len(set(approx[int(i)]) & set(e[0].tolist())) / 10 for i, e in zip(ids, exact)])
    assert recall >= 0.95
    assert all(int(i) not in approx[int(i)] for i in ids)


def test_users_point_in_time_and_exclusion(spark):
    clicks = spark.createDataFrame([
        (1, 10, dt.datetime(2026, 11, 2, 9)),   # before: used, excluded
        (1, 11, dt.datetime(2026, 11, 3, 0)),   # at as_of: never used, not excluded
        (1, 12, dt.datetime(2026, 11, 3, 5)),   # after: never used
        (2, 10, dt.datetime(2026, 10, 1, 0)),   # outside the 7-day window: user 2 not active
    ], "user_id long, sku_id long, ts timestamp")
    embeddings = spark.createDataFrame([(10, [1.0, 0.0]), (11, [0.0, 1.0]), (12, [0.0, 1.0])],
                                       "sku_id long, embedding array<float>")
    active = users.active_users(clicks, "2026-11-03 00:00:00", 7)
    assert [r.user_id for r in active.collect()] == [1]
    from adrank.core.config import FeaturesConfig

    [row] = users.user_requests(active, clicks, embeddings, FeaturesConfig()).collect()
    assert (row.user_id, row.behaviour_clicks, row.exclude) == (1, 1, [10])
    assert row.vector == pytest.approx([1.0, 0.0])
    assert row.as_of == dt.datetime(2026, 11, 3)


def test_metrics_on_known_recommendations(spark):
    categories = spark.createDataFrame([(1, 0), (2, 0), (3, 1), (4, 1)], "sku_id long, category_id int")
    recommended = spark.createDataFrame([(1, [2, 3]), (3, [4, 4]), (4, [])], "sku_id long, ids array<long>")
    # sku 1: 1 of 10 slots share its category; sku 3: 2; sku 4: 0 -> (0.1 + 0.2 + 0) / 3
    assert metrics.similar_precision(recommended, categories) == (pytest.approx(0.1), 3)
    searches = spark.createDataFrame([("a", 1), ("a", 5), ("b", 3), ("zzz", 3)], "query string, sku_id long")
    recs = spark.createDataFrame([("a", [1, 2]), ("b", [4])], "query string, ids array<long>")
    assert metrics.query_recall(searches, recs) == (pytest.approx(0.25), 4)
    held = spark.createDataFrame([(1, [7, 8]), (2, [9])], "user_id long, clicked array<long>")
    found = spark.createDataFrame([(1, [8]), (2, [1])], "user_id long, ids array<long>")
    assert metrics.user_hit_rate(held, found) == (pytest.approx(0.5), 2)
    clicks = spark.createDataFrame([(5,), (5,), (6,), (7,), (7,), (7,)], "sku_id long")
    assert metrics.popular_skus(clicks, 2) == [7, 5]
    frame = spark.createDataFrame([(1, [7])], "user_id long, exclude array<long>")
    [row] = frame.select(metrics.popular_excluding([7, 5, 6], frame["exclude"], at=2).alias("ids")).collect()
    assert row.ids == [5, 6]


def test_similar_precision_is_measured_on_the_skus_with_a_category_and_null_without_any(spark):
    categories = spark.createDataFrame([(1, 0), (2, 0), (3, None), (4, None)], "sku_id long, category_id int")
    recommended = spark.createDataFrame([(1, [2, 3]), (3, [1, 4]), (4, [3])], "sku_id long, ids array<long>")
    # sku 1: 1 of 10 slots shares its category (3 has none: not a match); 3 and 4 have no category to share
    assert metrics.similar_precision(recommended, categories) == (pytest.approx(0.1), 1)
    unknown = spark.createDataFrame([(s, None) for s in (1, 2, 3, 4)], "sku_id long, category_id int")
    assert metrics.similar_precision(recommended, unknown) == (None, 0)


def test_rerank_blends_cosine_with_popularity_and_keeps_cold_skus_by_their_picture(spark):
    from adrank.recommend import ranking

    candidates = spark.createDataFrame(
        [(1, [(10, 0.9), (11, 0.8), (12, 0.7)]), (2, [])],
        "user_id long, neighbours array<struct<sku_id:bigint,score:float>>")
    clicks = spark.createDataFrame([(11,)] * 3 + [(13,)], "sku_id long")
    priors = {r.sku_id: r.prior for r in ranking.popularity_prior(clicks).collect()}
    assert priors == {11: pytest.approx(1.0), 13: pytest.approx(np.log(2) / np.log(4))}
    blended = {r.user_id: [(n.sku_id, round(n.score, 4)) for n in r.neighbours]
               for r in ranking.reranked(candidates, "user_id", "neighbours", ranking.popularity_prior(clicks),
                                         0.2, 2).collect()}
    assert blended == {1: [(11, 1.0), (10, 0.9)], 2: []}  # 10 was never clicked: ranked by cosine alone
    plain = {r.user_id: [n.sku_id for n in r.neighbours]
             for r in ranking.reranked(candidates, "user_id", "neighbours", ranking.popularity_prior(clicks),
                                       0.0, 2).collect()}
    assert plain == {1: [10, 11], 2: []}


def test_always_scored_skus_join_the_nearest_unless_excluded():
    from adrank.recommend.neighbours import Always, with_always

    ids = np.array([1, 2, 3, 4], dtype=np.int64)
    vectors = unit_rows(np.array([[1, 0], [0.9, 0.1], [0, 1], [-1, 0]], dtype=np.float32))
    query = unit_rows(np.array([[1, 0]], dtype=np.float32))
    found = exact_search(query, [np.array([1])], ids, vectors, Limits(1))  # 1 is excluded: the nearest is 2
    always = Always(np.array([2, 3, 4]), vectors[[1, 2, 3]])
    [(got, scores)] = with_always(found, query, [np.array([1, 4])], always)
    assert got.tolist() == [2, 3]  # 2 once, 3 added, 4 excluded; by cosine, best first
    assert scores.tolist() == pytest.approx([float(vectors[1, 0]), 0.0], abs=1e-6)


def test_whitening_fitted_on_spark_equals_the_in_process_one_and_whitens(spark):
    from adrank.recommend.neighbours import whitening_of_arrays

    rng = np.random.default_rng(4)
    raw = (rng.normal(size=(500, 6)) * np.array([5, 3, 1, 1, 0.5, 0.2])).astype(np.float32)
    frame = spark.createDataFrame([(i, v.tolist()) for i, v in enumerate(raw)], "sku_id long, embedding array<float>")
    fitted = index.fit_whitening(frame.repartition(3), power=1.0)
    local = whitening_of_arrays(raw, power=1.0, block=77)
    np.testing.assert_allclose(fitted.mean, local.mean, atol=1e-6)
    np.testing.assert_allclose(np.abs(fitted.matrix), np.abs(local.matrix), rtol=1e-4)  # eigenvector signs may differ
    centred = (unit_rows(raw) - fitted.mean) @ fitted.matrix
    np.testing.assert_allclose(np.cov(centred.T, bias=True), np.eye(6), atol=1e-3)  # power 1: identity covariance
    assert np.allclose(np.linalg.norm(fitted.apply(raw), axis=1), 1.0, atol=1e-5)


def test_user_recommendations_never_hold_what_the_user_clicked_before(spark, tmp_path):
    from adrank.core.config import FeaturesConfig

    ids = np.array([10, 11, 12, 13], dtype=np.int64)
    vectors = np.array([[1, 0], [0.99, 0.1], [0.98, 0.2], [0, 1]], dtype=np.float32)
    folder = snapshot(tmp_path / "serving", ids, vectors)
    clicks = spark.createDataFrame([(1, 10, dt.datetime(2026, 11, 2)), (1, 11, dt.datetime(2026, 11, 2, 1))],
                                   "user_id long, sku_id long, ts timestamp")
    embeddings = spark.createDataFrame([(int(i), v.tolist()) for i, v in zip(ids, vectors)],
                                       "sku_id long, embedding array<float>")
    requests = users.user_requests(users.active_users(clicks, "2026-11-03 00:00:00", 7), clicks, embeddings,
                                   FeaturesConfig())
    [row] = nearest(requests, "user_id", Catalog(EXACT, folder), Limits(3)).collect()
    assert [n.sku_id for n in row.neighbours] == [12, 13]  # 10 and 11 were clicked: the rest, nearest first


# --- a real run on a catalog without category_id -------------------------------------------------


def catalog_without_categories(config) -> None:
    """Rewrite the sample catalog (Parquet) without its optional ``category_id`` column."""
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq

    from adrank.core import layout
    folder = Path(layout.input_path(config, layout.CATALOG))
    table = pq.read_table(folder)
    assert "category_id" in table.column_names  # the sample has it: the test removes it
    shutil.rmtree(folder)
    folder.mkdir()
    table = table.drop(["category_id"])
    micros = table.schema.field("updated_at").type.tz  # as Spark wrote it: microseconds
    table = table.set_column(table.schema.get_field_index("updated_at"), "updated_at",
                             table["updated_at"].cast(pa.timestamp("us", micros)))
    pq.write_table(table, folder / "part-00000.parquet")


def register_untrained_pairwise_model(config) -> int:
    """A freshly built (seeded) stage-1 model with its query tower, as the next ``pairwise`` version."""
    import tensorflow as tf

    from adrank.core import layout
    from adrank.train.ranks.models import PairwiseModel, query_tower, sku_tower
    from adrank.train.registry import export_model

    tf.keras.utils.set_random_seed(7)
    train = config.train
    model = PairwiseModel(sku_tower(train.tower, config.features.image_size, train.embedding_dim, train.tower_width),
                          query_tower(train.embedding_dim, width=train.tower_width))
    version, _ = export_model(layout.registry_root(config), layout.PAIRWISE, pairwise_model=model,
                              image_size=config.features.image_size, data_version=0, run_id="test")
    return version


@pytest.fixture(scope="module")
def run_without_categories(spark, tmp_path_factory) -> dict:
    """The sample data with a catalog that has no ``category_id``, through build_tables, a registered
    model, embed_catalog and recommend: the recommend run's figures."""
    from adrank.embed.run import embed_catalog
    from adrank.recommend.run import recommend
    from adrank.runtime.runs import RunReport
    from adrank.sample.run import generate_data
    from adrank.tables.run import build_tables
    from conftest import tiny_config

    config = tiny_config(tmp_path_factory.mktemp("no_categories"))
    generate_data(spark, config, RunReport("generate_data"))
    catalog_without_categories(config)
    build_tables(spark, config, RunReport("build_tables"), None)
    register_untrained_pairwise_model(config)
    embed_catalog(spark, config, RunReport("embed_catalog"))
    report = RunReport("recommend")
    report.record(recommend(spark, config, report))
    return report.as_dict()


def test_without_categories_the_precision_figures_are_null_and_the_rest_are_measured(run_without_categories):
    import json

    from adrank.core.config import to_json
    from adrank.runtime.tracking import numeric_metrics

    found = run_without_categories["recommend"]["metrics"]
    assert found["similar_precision_at_10"] is None and found["similar_precision_at_10_popularity"] is None
    assert found["similar_skus_evaluated"] == 0
    for name in ("query_recall_at_10", "user_hit_rate_at_10"):  # their ground truth is there: measured
        assert 0.0 <= found[name] <= 1.0 and 0.0 <= found[f"{name}_popularity"] <= 1.0, name
    assert found["query_searches"] > 0 and found["users_evaluated"] > 0
    record = json.loads(to_json(run_without_categories))["recommend"]["metrics"]  # the run record's object
    assert record["similar_precision_at_10"] is None and record["similar_precision_at_10_popularity"] is None
    logged = numeric_metrics(run_without_categories["recommend"])  # what tracking would log: never a None
    assert not any(key.startswith("metrics.similar_precision") for key in logged)
    assert logged["metrics.query_recall_at_10"] == pytest.approx(found["query_recall_at_10"])


def test_without_categories_the_console_table_says_not_available(run_without_categories):
    from adrank.recommend.run import metrics_table
    from adrank.runtime.console import summary_table

    for text in (metrics_table(run_without_categories["recommend"]), summary_table(run_without_categories)):
        [line] = [x for x in text.splitlines() if x.startswith("similar-SKU precision@10")]
        assert line.count("not available") == 3 and "0.0000" not in line, line


def test_a_query_vector_is_the_same_bit_for_bit_however_the_queries_are_partitioned_or_batched(spark, config):
    """TensorFlow rounds a row by its batch's shape: fixed-shape batches make the vector the query's own."""
    import random
    import string

    from adrank.context.towers import QUERY_BATCH, embed_query_texts, query_vectors
    from adrank.core import layout
    from adrank.train.registry import version_path

    version = register_untrained_pairwise_model(config)
    model_path, _ = version_path(layout.registry_root(config), layout.PAIRWISE, version)
    rng = random.Random(3)
    texts = sorted({"".join(rng.choice(string.ascii_lowercase + " ") for _ in range(rng.randint(2, 24)))
                    for _ in range(QUERY_BATCH + 40)})
    alone = np.stack([embed_query_texts(model_path, [text])[0] for text in texts[:25]])
    together = embed_query_texts(model_path, texts)
    assert np.array_equal(alone, together[:25])
    for partitions, order in ((1, texts), (3, texts[::-1]), (7, texts[17:] + texts[:17])):
        frame = spark.createDataFrame([(t,) for t in order], "query string").repartition(partitions)
        found = {row["query"]: np.asarray(row["embedding"], np.float32) for row in query_vectors(frame, model_path).collect()}
        assert sorted(found) == texts
        assert np.array_equal(np.stack([found[t] for t in texts]), together), partitions
