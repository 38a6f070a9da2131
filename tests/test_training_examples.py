"""Training examples: click-log checks and quarantine, point-in-time joins, hashed sparse ids."""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import json

from chispa import assert_df_equality
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from adrank.core.config import FeaturesConfig
from adrank.tables.clicklog import checked_click_log
from adrank.tables.examples import (
    EXAMPLES_DDL,
    build_examples_with_quarantine,
    impressions_without_lr_features,
)
from adrank.tables.hashing import token_id_py, with_feature_tokens, with_sparse_ids, xxhash64_py
from adrank.tables.lr_features import drop_duplicate_lr_records, flag_lr_without_impression, parse_lr_features
from adrank.tables.quarantine import (
    BAD_JSON,
    BAD_POSITION,
    BAD_TIMESTAMP,
    BAD_TYPE,
    BAD_VALUE,
    DATE_MISMATCH,
    DUPLICATE_ID,
    MISSING_FIELD,
    UNKNOWN_SKU,
    split_by_reason,
)
from adrank.tables.snapshots import join_as_of, parse_snapshots

DAY = dt.date(2026, 11, 1)
NEXT_DAY = dt.date(2026, 11, 2)
DROP = object()
LINES_DDL = "value string, input_date date"
SKUS_DDL = "sku_id long, category_id int, updated_at timestamp"


def utc(text: str) -> dt.datetime:
    """An aware UTC datetime (a naive one would be read in the machine's local zone)."""
    return dt.datetime.fromisoformat(text.replace("Z", "")).replace(tzinfo=dt.UTC)


def click(impression_id: str, **fields) -> str:
    """A click-log JSON line: a good feed impression, with fields replaced or dropped."""
    record = {"impression_id": impression_id, "ts": "2026-11-01T10:00:00Z", "user_id": 1, "page": "feed",
              "ad_sku_id": 12, "position": 1, "clicked": 0}
    record.update(fields)
    return json.dumps({k: v for k, v in record.items() if v is not DROP})


def lines(spark, *values: str, input_date: dt.date | None = DAY):
    """Raw input lines as the job reads them: ``value`` and the ``input_date`` folder."""
    return spark.createDataFrame([(v, input_date) for v in values], LINES_DDL)


def catalog(spark):
    """SKUs 11, 12 (old) and 13 (new on DAY: cold start)."""
    return spark.createDataFrame(
        [(11, 1, utc("2026-09-01T00:00:00")), (12, 2, utc("2026-09-01T00:00:00")),
         (13, 3, utc("2026-11-01T00:00:00"))],
        SKUS_DDL,
    )


def snapshot(entity_id, valid_from: str, *tokens: str) -> str:
    """A snapshot JSON line."""
    return json.dumps({"entity_id": entity_id, "valid_from": valid_from, "features": list(tokens)})


def test_as_of_join_takes_the_latest_snapshot_at_or_before_each_impression(spark):
    user_lines = lines(
        spark,
        snapshot(1, "2026-10-31T06:00:00Z", "segment=1"),
        snapshot(1, "2026-11-01T09:00:00Z", "segment=2"),
        snapshot(1, "2026-11-01T12:00:00Z", "segment=3"),
        snapshot(2, "2026-11-01T08:00:00Z", "segment=9"),
        input_date=None,
    )
    snaps, _ = split_by_reason(parse_snapshots(user_lines))
    impressions = spark.createDataFrame(
        [("between", 1, utc("2026-11-01T10:00:00")), ("before_all", 1, utc("2026-10-31T05:00:00")),
         ("exactly_at", 1, utc("2026-11-01T12:00:00")), ("other_user_earlier", 2, utc("2026-11-01T07:59:59")),
         ("no_snapshots", 3, utc("2026-11-01T10:00:00"))],
        "impression_id string, user_id long, ts timestamp",
    )
    expected = spark.createDataFrame(
        [("between", 1, utc("2026-11-01T10:00:00"), ["u.segment=2"]),
         ("before_all", 1, utc("2026-10-31T05:00:00"), []),
         ("exactly_at", 1, utc("2026-11-01T12:00:00"), ["u.segment=3"]),
         ("other_user_earlier", 2, utc("2026-11-01T07:59:59"), []),
         ("no_snapshots", 3, utc("2026-11-01T10:00:00"), [])],
        "impression_id string, user_id long, ts timestamp, u_tokens array<string>",
    )
    joined = join_as_of(impressions, snaps, "user_id", "u.")
    assert_df_equality(joined, expected, ignore_row_order=True, ignore_nullable=True)


def test_each_click_log_contract_break_gets_its_reason_and_lines_reconcile(spark):
    good = [
        click("g_detail", page="detail", context_sku_id=11, ad_sku_id=12, clicked=1),
        click("g_search", page="search", query="red lamp", context_sku_id=11, ad_sku_id=13, position=3),
    ]
    broken = {
        '{"impression_id": "x_json", "ts": ': BAD_JSON,
        click("x_missing", clicked=DROP): MISSING_FIELD,
        click("x_type", clicked="yes"): BAD_TYPE,
        click("x_page", page="home"): BAD_VALUE,
        click("x_clicked", clicked=2): BAD_VALUE,
        click("x_position", position=0): BAD_POSITION,
        click("x_ts", ts="2026-11-01 10:00"): BAD_TIMESTAMP,
        click("x_detail_without_context", page="detail"): MISSING_FIELD,
        click("x_unknown_ad", ad_sku_id=999): UNKNOWN_SKU,
        click("x_unknown_context", page="detail", context_sku_id=998): UNKNOWN_SKU,
    }
    checked = checked_click_log(lines(spark, *good, *broken), catalog(spark)).cache()
    ok, bad = split_by_reason(checked)

    # Reconciliation: every input line comes out exactly once, good (no reason) or bad.
    expected_lines = spark.createDataFrame(
        [(raw, None, DAY) for raw in good] + [(raw, code, DAY) for raw, code in broken.items()],
        "raw string, reason string, input_date date",
    )
    assert_df_equality(checked.select("raw", "reason", "input_date"), expected_lines,
                       ignore_row_order=True, ignore_nullable=True)
    expected_good = spark.createDataFrame(
        [("g_detail", utc("2026-11-01T10:00:00"), 1, "detail", 11, None, 12, 2, 1, 1, 1),
         ("g_search", utc("2026-11-01T10:00:00"), 1, "search", None, "red lamp", 13, 3, None, 3, 0)],
        "impression_id string, ts timestamp, user_id long, page string, context_sku_id long, "
        "query string, ad_sku_id long, ad_category_id int, context_category_id int, position int, "
        "clicked int",
    )
    assert_df_equality(ok.select(*expected_good.columns), expected_good, ignore_row_order=True,
                       ignore_nullable=True)
    assert bad.columns == ["raw", "reason", "input_date"]
    assert not {"raw", "reason"} & set(ok.columns)
    checked.unpersist()


def test_duplicate_impressions_keep_exactly_one_good_copy(spark):
    first = click("d1", ts="2026-11-01T10:00:00Z")
    later = click("d1", ts="2026-11-01T11:00:00Z")
    broken_earlier = click("d2", ts="2026-11-01T09:00:00Z", position=0)
    good_later = click("d2", ts="2026-11-01T10:00:00Z")
    across_days = click("d3")  # its copy in the next day's folder is a misfiled line
    raw_lines = lines(spark, later, first, first, first, broken_earlier, good_later, across_days).unionByName(
        lines(spark, across_days, input_date=NEXT_DAY))
    checked = checked_click_log(raw_lines, catalog(spark)).cache()
    ok, bad = split_by_reason(checked)

    expected_good = spark.createDataFrame(
        [("d1", utc("2026-11-01T10:00:00"), DAY), ("d2", utc("2026-11-01T10:00:00"), DAY),
         ("d3", utc("2026-11-01T10:00:00"), DAY)],
        "impression_id string, ts timestamp, input_date date",
    )
    assert_df_equality(ok.select("impression_id", "ts", "input_date"), expected_good,
                       ignore_row_order=True, ignore_nullable=True)
    expected_bad = spark.createDataFrame(
        [(first, DUPLICATE_ID, DAY), (first, DUPLICATE_ID, DAY), (later, DUPLICATE_ID, DAY),
         (broken_earlier, BAD_POSITION, DAY), (across_days, DATE_MISMATCH, NEXT_DAY)],
        "raw string, reason string, input_date date",
    )
    assert_df_equality(bad, expected_bad, ignore_row_order=True, ignore_nullable=True)
    checked.unpersist()


def test_a_copy_of_an_id_kept_on_an_earlier_date_is_a_duplicate_and_its_lr_record_filed_late(spark):
    """The kept-ids state stands for the earlier dates' raw lines (``kept_before``)."""
    kept_good = click("kept")  # kept on the day before: this copy is the duplicate
    kept_broken = click("kept", position=0)  # a broken copy keeps its own reason
    new = click("new")
    raw_lines = lines(spark, kept_good, kept_broken, new)
    kept_before = spark.createDataFrame([("kept", DAY - dt.timedelta(days=1))], "impression_id string, date date")
    checked = checked_click_log(raw_lines, catalog(spark), kept_before)
    reasons = sorted((r.raw, r.reason) for r in checked.select("raw", "reason").collect())
    assert reasons == sorted([(kept_good, DUPLICATE_ID), (kept_broken, BAD_POSITION), (new, None)])
    records = lines(spark, json.dumps({"impression_id": "kept", "features": ["hour=1"]}),
                    json.dumps({"impression_id": "new", "features": ["hour=2"]}))
    no_snapshots = spark.createDataFrame([], LINES_DDL)
    examples, bad = build_examples_with_quarantine(raw_lines, records, no_snapshots, no_snapshots,
                                                   catalog(spark), FeaturesConfig(), kept_before=kept_before)
    assert [r.impression_id for r in examples.collect()] == ["new"]
    assert [(json.loads(r.raw)["impression_id"], r.reason) for r in bad["lr_features"].collect()] == [
        ("kept", DATE_MISMATCH)]


def test_token_ids_are_stable_known_values_in_range(spark):
    assert xxhash64_py(b"hour=13") == 3140108543195080370
    assert token_id_py("hour=13", 20) == 839346
    assert token_id_py("page=detail", 20) == 550522
    tokens = ["hour=13", "page=detail", "é=ü", "x" * 40, ""] + [f"t={i}" for i in range(400)]
    frame = spark.createDataFrame([(tokens,)], "tokens array<string>")

    def spark_ids(df, bits):
        return df.transform(with_sparse_ids, bits, len(tokens)).first().sparse_ids

    for bits in (8, 20):
        once = spark_ids(frame, bits)
        again = spark_ids(frame.repartition(2).select("tokens"), bits)
        assert once == again == [token_id_py(t, bits) for t in tokens]
        assert min(once) >= 1 and max(once) < 2 ** bits


def test_sparse_ids_are_padded_to_a_fixed_width_and_truncated_in_order(spark, config):
    features = dataclasses.replace(config.features, max_sparse_ids=6, crosses=("page*ad_category",))
    rows = spark.createDataFrame(
        [("short", "feed", 2, ["hour=9"], None, []),
         ("long", "detail", 3, ["z=1", "b=2", "a=3", "c=4"], ["u.segment=1"], ["s.brand=5"])],
        "id string, page string, ad_category_id int, lr_features array<string>, "
        "u_tokens array<string>, s_tokens array<string>",
    )
    ids = rows.transform(with_feature_tokens, features.crosses).transform(
        with_sparse_ids, features.hash_bits, features.max_sparse_ids)

    def hashed(*tokens):
        return [token_id_py(t, features.hash_bits) for t in tokens]

    short = hashed("page=feed", "ad_category=2", "page=feed&ad_category=2", "hour=9")
    long_ = hashed("page=detail", "ad_category=3", "page=detail&ad_category=3", "a=3", "b=2", "c=4")
    expected = spark.createDataFrame(
        [("short", short + [0, 0], 4), ("long", long_, 6)],
        "id string, sparse_ids array<long>, num_sparse_ids int",
    )
    assert_df_equality(ids.select("id", "sparse_ids", "num_sparse_ids"), expected,
                       ignore_row_order=True, ignore_nullable=True)


def test_cross_tokens_appear_only_when_every_part_exists(spark):
    rows = spark.createDataFrame(
        [("both", "feed", 2, ["hour=13", "device=ios"]),
         ("no_hour", "feed", 2, ["device=ios"]),
         ("no_category", "search", None, ["hour=13", "device=ios"])],
        "id string, page string, ad_category_id int, lr_features array<string>",
    ).withColumn("u_tokens", F.lit(None).cast("array<string>")).withColumn("s_tokens", F.array())
    tokens = with_feature_tokens(rows, ("device*hour", "page*ad_category"))
    expected = spark.createDataFrame(
        [("both", ["page=feed", "ad_category=2", "device=ios&hour=13", "page=feed&ad_category=2",
                   "device=ios", "hour=13"]),
         ("no_hour", ["page=feed", "ad_category=2", "page=feed&ad_category=2", "device=ios"]),
         ("no_category", ["page=search", "device=ios&hour=13", "device=ios", "hour=13"])],
        "id string, tokens array<string>",
    )
    assert_df_equality(tokens.select("id", "tokens"), expected, ignore_row_order=True,
                       ignore_nullable=True)


def test_examples_join_all_sources_and_every_source_reconciles(spark, config):
    features = dataclasses.replace(config.features, max_sparse_ids=10)
    skus = catalog(spark)
    raw = {
        "click_log": [
            click("i1", page="detail", context_sku_id=11, ad_sku_id=12, clicked=1, user_id=1),
            click("i2", page="search", query="blue mug", ad_sku_id=13, user_id=2, ts="2026-11-01T11:00:00Z"),
            "not json",
        ],
        "lr_features": [
            '{"impression_id": "i1", "features": ["hour=10", "device=ios"]}',
            '{"impression_id": "i1", "features": ["hour=10", "device=ios"]}',
            '{"impression_id": "orphan", "features": ["hour=1"]}',
            '{"impression_id": "i2", "features": "hour=11"}',
            '{"impression_id": "i2", "features": [',
        ],
        "user_snapshots": [
            snapshot(1, "2026-10-31T06:00:00Z", "segment=1"),
            snapshot(1, "2026-11-01T12:00:00Z", "segment=2"),
            snapshot(2, "yesterday", "segment=5"),
        ],
        "sku_snapshots": [
            snapshot(12, "2026-10-31T06:00:00Z", "brand=7"),
            snapshot(13, "2026-11-01T00:00:00Z", "brand=8"),
            "{",
        ],
    }
    dated = {"click_log", "lr_features"}
    sources = {name: lines(spark, *values, input_date=DAY if name in dated else None)
               for name, values in raw.items()}
    examples, bad = build_examples_with_quarantine(*sources.values(), skus, features)

    def ids(*tokens):
        padded = [token_id_py(t, features.hash_bits) for t in tokens]
        return padded + [0] * (features.max_sparse_ids - len(padded)), len(padded)

    i1 = ids("page=detail", "ad_category=2", "page=detail&ad_category=2", "device=ios&hour=10",
             "device=ios", "hour=10", "u.segment=1", "s.brand=7")
    i2 = ids("page=search", "ad_category=3", "page=search&ad_category=3", "s.brand=8")
    expected = spark.createDataFrame(
        [("i1", utc("2026-11-01T10:00:00"), DAY, 1, "detail", 11, None, 12, 2, 1, 1, 1, *i1, False),
         ("i2", utc("2026-11-01T11:00:00"), DAY, 2, "search", None, "blue mug", 13, 3, None, 1, 0, *i2,
          True)],
        EXAMPLES_DDL,
    )
    assert_df_equality(examples, expected, ignore_row_order=True, ignore_nullable=True)

    expected_bad = {
        "click_log": [BAD_JSON],
        "lr_features": [DUPLICATE_ID, BAD_VALUE, BAD_TYPE, BAD_JSON],
        "user_snapshots": [BAD_TIMESTAMP],
        "sku_snapshots": [BAD_JSON],
    }
    all_bad = functools.reduce(DataFrame.unionByName, [
        frame.select(F.lit(source).alias("source"), "reason") for source, frame in bad.items()])
    assert sorted(all_bad.collect()) == sorted(
        (source, reason) for source, reasons in expected_bad.items() for reason in reasons)

    # Reconciliation: good + bad = input lines, source by source (one job for all four).
    clicks, _ = split_by_reason(checked_click_log(sources["click_log"], skus))
    checked = {
        "click_log": checked_click_log(sources["click_log"], skus),
        "lr_features": parse_lr_features(sources["lr_features"]).transform(drop_duplicate_lr_records)
                       .transform(flag_lr_without_impression, clicks),
        "user_snapshots": parse_snapshots(sources["user_snapshots"]),
        "sku_snapshots": parse_snapshots(sources["sku_snapshots"]),
    }
    counts = functools.reduce(DataFrame.unionByName, [
        frame.select(F.lit(source).alias("source"), F.col("reason").isNull().alias("good"))
        for source, frame in checked.items()]).groupBy("source").agg(
            F.count_if("good").alias("good"), F.count_if(~F.col("good")).alias("bad"))
    good_rows = {"click_log": 2, "lr_features": 1, "user_snapshots": 2, "sku_snapshots": 2}
    assert {r.source: (r.good, r.bad) for r in counts.collect()} == {
        source: (good_rows[source], len(expected_bad[source])) for source in sources}
    assert {source: good_rows[source] + len(expected_bad[source]) for source in sources} == {
        source: len(values) for source, values in raw.items()}
    records, _ = split_by_reason(checked["lr_features"])
    assert [r.impression_id for r in impressions_without_lr_features(clicks, records).collect()] == ["i2"]
