"""The behaviour embedding (adrank.context.behaviour): point in time, recency weights, bounds, one row each."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from adrank.context.behaviour import behaviour_as_of, behaviour_embeddings

T0 = dt.datetime(2026, 11, 5, 12, 0, 0)
EMBEDDINGS = {1: [1.0, 0.0], 2: [0.0, 1.0], 3: [1.0, 1.0]}
HALF_LIFE = 24.0


def frames(spark, impressions, clicks):
    imps = spark.createDataFrame(impressions, "impression_id string, user_id long, ts timestamp")
    clk = spark.createDataFrame(clicks, "user_id long, sku_id long, ts timestamp")
    emb = spark.createDataFrame([(k, v) for k, v in EMBEDDINGS.items()], "sku_id long, embedding array<float>")
    return imps, clk, emb


def behaviour(spark, impressions, clicks, max_clicks=20, lookback_days=30):
    imps, clk, emb = frames(spark, impressions, clicks)
    out = behaviour_embeddings(imps, clk, emb, half_life_hours=HALF_LIFE, max_clicks=max_clicks,
                               lookback_days=lookback_days)
    return {r.impression_id: (r.behaviour, r.behaviour_clicks) for r in out.collect()}


def test_clicks_at_or_after_the_impression_are_never_used(spark):
    impressions = [("a", 7, T0)]
    clicks = [(7, 1, T0 + dt.timedelta(seconds=1)), (7, 2, T0), (7, 3, T0 + dt.timedelta(days=1))]
    assert behaviour(spark, impressions, clicks) == {"a": (None, 0)}


def test_the_mean_is_weighted_by_recency_with_the_half_life(spark):
    impressions = [("a", 7, T0)]
    clicks = [(7, 1, T0 - dt.timedelta(hours=24)), (7, 2, T0 - dt.timedelta(hours=48)),
              (8, 3, T0 - dt.timedelta(hours=1))]  # another user's click
    vector, count = behaviour(spark, impressions, clicks)["a"]
    expected = (0.5 * np.array([1.0, 0.0]) + 0.25 * np.array([0.0, 1.0])) / 0.75
    assert count == 2
    np.testing.assert_allclose(vector, expected, rtol=1e-6)


def test_only_the_newest_clicks_within_the_lookback_count_and_unembedded_skus_are_ignored(spark):
    impressions = [("a", 7, T0)]
    clicks = [(7, 1, T0 - dt.timedelta(hours=1)), (7, 2, T0 - dt.timedelta(hours=2)),
              (7, 3, T0 - dt.timedelta(hours=3)), (7, 99, T0 - dt.timedelta(minutes=1)),
              (7, 3, T0 - dt.timedelta(days=40))]
    vector, count = behaviour(spark, impressions, clicks, max_clicks=2)["a"]
    assert count == 2  # SKU 99 has no embedding; the 40-day-old click is outside the lookback
    w1, w2 = 0.5 ** (1 / HALF_LIFE), 0.5 ** (2 / HALF_LIFE)
    np.testing.assert_allclose(vector, [w1 / (w1 + w2), w2 / (w1 + w2)], rtol=1e-6)


def test_every_impression_appears_once_also_without_history(spark):
    impressions = [("a", 7, T0), ("b", 7, T0 + dt.timedelta(hours=5)), ("c", 9, T0)]
    clicks = [(7, 1, T0 + dt.timedelta(hours=1))]
    got = behaviour(spark, impressions, clicks)
    assert set(got) == {"a", "b", "c"}
    assert got["a"] == (None, 0) and got["c"] == (None, 0)
    assert got["b"][1] == 1
    np.testing.assert_allclose(got["b"][0], [1.0, 0.0])


def test_as_of_gives_one_row_per_user(spark):
    _, clk, emb = frames(spark, [], [(7, 1, T0 - dt.timedelta(hours=1)), (9, 2, T0 + dt.timedelta(hours=1))])
    users = spark.createDataFrame([(7, T0), (9, T0)], "user_id long, ts timestamp")
    out = {r.user_id: r.behaviour_clicks for r in behaviour_as_of(
        users, clk, emb, half_life_hours=HALF_LIFE, max_clicks=5, lookback_days=30).collect()}
    assert out == {7: 1, 9: 0}


@pytest.mark.parametrize("seed", range(3))
def test_random_histories_match_a_plain_python_reference(spark, seed):
    rng = np.random.default_rng(seed)
    impressions = [(f"i{n}", int(rng.integers(1, 4)), T0 + dt.timedelta(hours=int(rng.integers(0, 48))))
                   for n in range(12)]
    clicks = [(int(rng.integers(1, 4)), int(rng.integers(1, 4)), T0 + dt.timedelta(hours=int(rng.integers(-24, 48))))
              for _ in range(20)]
    got = behaviour(spark, impressions, clicks, max_clicks=3)
    for impression_id, user, ts in impressions:
        earlier = sorted(((c_ts, sku) for u, sku, c_ts in clicks if u == user and c_ts < ts),
                         key=lambda c: (-c[0].timestamp(), c[1]))[:3]
        vector, count = got[impression_id]
        assert count == len(earlier)
        if not earlier:
            assert vector is None
            continue
        weights = np.array([0.5 ** ((ts - c_ts).total_seconds() / 3600 / HALF_LIFE) for c_ts, _ in earlier])
        expected = (weights[:, None] * np.array([EMBEDDINGS[sku] for _, sku in earlier])).sum(0) / weights.sum()
        np.testing.assert_allclose(vector, expected, rtol=1e-5)


def test_the_clicks_of_the_lookback_before_some_dates_give_those_dates_the_behaviour_of_all_clicks(spark):
    from pyspark.sql import functions as F

    from adrank.context.behaviour import clicks_for_dates, clicks_of

    rng = np.random.default_rng(3)
    start, days, lookback = dt.datetime(2026, 11, 1), 8, 2
    rows = [(f"i{n}", int(rng.integers(1, 4)), int(rng.integers(1, 4)), int(rng.random() < 0.5),
             start + dt.timedelta(minutes=int(rng.integers(0, days * 24 * 60)))) for n in range(300)]
    examples = spark.createDataFrame(rows, "impression_id string, user_id long, ad_sku_id long, label int, "
                                           "ts timestamp").withColumn("date", F.to_date("ts"))
    _, _, embeddings = frames(spark, [], [])
    dates = [dt.date(2026, 11, 6), dt.date(2026, 11, 7)]
    impressions = examples.where(F.col("date").isin(dates)).select("impression_id", "user_id", "ts")

    def vectors(clicks) -> dict:
        out = behaviour_embeddings(impressions, clicks, embeddings, half_life_hours=HALF_LIFE, max_clicks=5,
                                   lookback_days=lookback)
        return {r.impression_id: (r.behaviour, r.behaviour_clicks) for r in out.collect()}

    bounded = clicks_for_dates(examples, dates, lookback)
    first_read = min(r.ts for r in bounded.collect()).date()
    assert first_read >= dates[0] - dt.timedelta(days=lookback + 1)  # older dates are not read
    expected = vectors(clicks_of(examples))
    assert vectors(bounded) == expected and sum(count for _, count in expected.values()) > 0
