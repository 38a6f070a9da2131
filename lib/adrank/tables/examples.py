"""Training examples: good impressions + LR tokens + as-of snapshots -> hashed sparse ids.

:func:`build_examples_with_quarantine` takes the raw lines of the four sources and returns
the examples and, per source, the bad lines (``raw``, ``reason``, ``input_date``). For each
source, input lines = good + bad:

* ``click_log``: per-line checks, unknown SKU, then duplicates (see :mod:`.clicklog`);
* ``lr_features``: per-line checks, duplicates of ``impression_id``, then BAD_VALUE for a
  record whose impression is not a good impression (it joins no example);
* ``user_snapshots``, ``sku_snapshots``: per-line checks and duplicate (entity, instant).

A good impression without an LR record keeps an empty LR token list (count them with
:func:`impressions_without_lr_features`). ``is_cold_start_ad`` is true when the ad SKU's
catalog ``updated_at`` falls on the impression's UTC date, at or before the impression:
the SKU (or its image) appeared that day. It is a per-row fact, so it does not depend on
which dates one build sees (unlike "no impression on an earlier date in this batch", which
would call every SKU cold on the first date of each batch).
"""

from __future__ import annotations

import datetime

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from adrank.core.config import FeaturesConfig
from adrank.core.layout import CLICK_LOG, LR_FEATURES, SKU_SNAPSHOTS, USER_SNAPSHOTS
from adrank.tables.clicklog import checked_click_log
from adrank.tables.hashing import LR_TOKENS, SKU_TOKENS, USER_TOKENS, hashed_ids
from adrank.tables.lr_features import drop_duplicate_lr_records, flag_lr_without_impression, parse_lr_features
from adrank.tables.quarantine import split_by_reason
from adrank.tables.snapshots import join_as_of, parse_snapshots

SOURCES = (CLICK_LOG, LR_FEATURES, USER_SNAPSHOTS, SKU_SNAPSHOTS)
USER_PREFIX = "u."
SKU_PREFIX = "s."
EXAMPLES_DDL = (
    "impression_id string, ts timestamp, date date, user_id long, page string, "
    "context_sku_id long, query string, ad_sku_id long, ad_category_id int, "
    "context_category_id int, position int, label int, sparse_ids array<long>, "
    "num_sparse_ids int, is_cold_start_ad boolean"
)
SECONDS_PER_DAY = 86_400


def build_examples_with_quarantine(
    click_lines: DataFrame,
    lr_lines: DataFrame,
    user_snapshot_lines: DataFrame,
    sku_snapshot_lines: DataFrame,
    skus: DataFrame,
    features_cfg: FeaturesConfig,
    dates: tuple[datetime.date, datetime.date] | None = None,
    kept_before: DataFrame | None = None,
) -> tuple[DataFrame, dict[str, DataFrame]]:
    """Parses and checks the raw sources, then builds the training examples of ``dates``.

    The ids kept on earlier dates make the copies of ``dates`` duplicates, so an
    ``impression_id`` is unique across the whole table whichever dates a build covers, and
    an LR record filed after its impression's date is told apart. A build passes them as
    ``kept_before`` (the kept-ids state, :mod:`adrank.tables.state`); ``click_lines`` may
    also hold earlier dates' lines, which take part in those checks only (neither their
    examples nor their bad lines are returned).

    The examples' plan reads the LR lines deduplicated but without the orphan join (a left
    join from good impressions drops orphans anyway); only ``bad["lr_features"]`` needs it.
    Each returned frame recomputes its parsing when acted on; caching is the job's choice.

    Args:
        click_lines: ``value`` (a JSON line) and ``input_date`` (the ``date=`` folder), of
            ``dates`` and optionally of earlier dates.
        lr_lines: The same for LR feature records, of ``dates`` only.
        user_snapshot_lines: ``value``, optionally ``input_date``.
        sku_snapshot_lines: ``value``, optionally ``input_date``.
        skus: The ``sku_images`` table: ``sku_id``, ``category_id``, ``updated_at``.
        features_cfg: Hashing settings.
        dates: The first and last day whose examples and bad lines are wanted (None: all).
        kept_before: ``impression_id``, ``date`` of the ids kept on dates before every
            line of ``click_lines`` (None: no such state).

    Returns:
        ``(examples, bad)``: examples in :data:`EXAMPLES_DDL`; ``bad`` maps each name in
        :data:`SOURCES` to its bad lines (``raw``, ``reason``, ``input_date``).
    """
    checked = checked_click_log(click_lines, skus, kept_before)
    good_of_every_date, _ = split_by_reason(checked)
    if kept_before is not None:  # an LR record filed after its impression's earlier date: date_mismatch
        earlier = kept_before.select("impression_id", F.col("date").alias("input_date"))
        good_of_every_date = good_of_every_date.select("impression_id", "input_date").unionByName(earlier)
    clicks, bad_clicks = split_by_reason(checked.where(on_dates(F.col("input_date"), dates)))
    records = parse_lr_features(lr_lines).transform(drop_duplicate_lr_records)
    _, bad_lr = split_by_reason(flag_lr_without_impression(records, good_of_every_date))
    users, bad_users = split_by_reason(parse_snapshots(user_snapshot_lines))
    sku_snaps, bad_sku_snaps = split_by_reason(parse_snapshots(sku_snapshot_lines))
    lr_records, _ = split_by_reason(records)
    examples = training_examples(clicks, lr_records, users, sku_snaps, features_cfg)
    bad = dict(zip(SOURCES, (bad_clicks, bad_lr, bad_users, bad_sku_snaps)))
    return examples, bad


def on_dates(day: Column, dates: tuple[datetime.date, datetime.date] | None) -> Column:
    """True for days within ``dates`` (inclusive); always true when ``dates`` is None."""
    return F.lit(True) if dates is None else day.between(F.lit(dates[0]), F.lit(dates[1]))


def training_examples(
    clicks: DataFrame,
    lr_features: DataFrame,
    user_snaps: DataFrame,
    sku_snaps: DataFrame,
    features_cfg: FeaturesConfig,
) -> DataFrame:
    """The training examples of good impressions, in :data:`EXAMPLES_DDL`.

    Args:
        clicks: Good impressions, one per ``impression_id``, with the catalog columns:
            the good side of :func:`~adrank.tables.clicklog.checked_click_log`.
        lr_features: LR records ``impression_id``, ``features``, one per id (records of
            unknown impressions may be present: they join nothing).
        user_snaps: Good user snapshots: ``entity_id``, ``valid_from``, ``features``.
        sku_snaps: Good SKU snapshots, the same shape.
        features_cfg: Hashing settings.
    """
    return (
        clicks.transform(with_cold_start_flag)
        .transform(with_lr_features, lr_features)
        .transform(join_as_of, user_snaps, "user_id", USER_PREFIX, USER_TOKENS)
        .transform(join_as_of, sku_snaps, "ad_sku_id", SKU_PREFIX, SKU_TOKENS)
        .transform(hashed_ids, features_cfg)
        .transform(example_columns)
    )


def with_cold_start_flag(clicks: DataFrame) -> DataFrame:
    """Adds ``is_cold_start_ad`` from ``ad_updated_at`` and ``ts`` (see the module docstring)."""
    return clicks.withColumn("is_cold_start_ad", cold_start(F.col("ad_updated_at"), F.col("ts")))


def cold_start(updated_at: Column, ts: Column) -> Column:
    """True when ``updated_at`` is on the UTC date of ``ts`` and not after ``ts``."""
    same_day = utc_day(updated_at) == utc_day(ts)
    return F.coalesce(same_day & (updated_at <= ts), F.lit(False))


def utc_day(ts: Column) -> Column:
    """Days since 1970-01-01 of a timestamp, in UTC whatever the session time zone."""
    return F.floor(F.unix_seconds(ts) / SECONDS_PER_DAY).cast("int")


def with_lr_features(clicks: DataFrame, lr_features: DataFrame) -> DataFrame:
    """Adds ``lr_features``: the impression's LR tokens, empty when it has no record.

    A record joins on ``impression_id`` and the ``input_date`` folder both (see
    :func:`~adrank.tables.clicklog.flag_lr_without_impression`).
    """
    records = lr_features.select(
        F.col("impression_id").alias("_lr_id"), F.col("input_date").alias("_lr_date"),
        F.col("features").alias("_lr"),
    )
    same_record = (F.col("impression_id") == F.col("_lr_id")) & F.col("input_date").eqNullSafe(F.col("_lr_date"))
    empty = F.array().cast("array<string>")
    return (
        clicks.join(records, same_record, "left")
        .withColumn(LR_TOKENS, F.coalesce(F.col("_lr"), empty))
        .drop("_lr", "_lr_id", "_lr_date")
    )


def impressions_without_lr_features(clicks: DataFrame, lr_features: DataFrame) -> DataFrame:
    """Good impressions that have no good LR record (for a run figure: ``.count()`` it)."""
    return clicks.join(lr_features.select("impression_id"), "impression_id", "left_anti")


def example_columns(df: DataFrame) -> DataFrame:
    """Selects and types the columns of :data:`EXAMPLES_DDL`; ``date`` is the UTC date of ``ts``."""
    return df.select(
        "impression_id", "ts",
        F.date_from_unix_date(utc_day(F.col("ts"))).alias("date"),
        "user_id", "page", "context_sku_id", "query", "ad_sku_id",
        F.col("ad_category_id").cast("int"), F.col("context_category_id").cast("int"),
        F.col("position").cast("int"), F.col("clicked").cast("int").alias("label"),
        "sparse_ids", "num_sparse_ids", "is_cold_start_ad",
    )
