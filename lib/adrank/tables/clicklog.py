"""Click-log parsing: one typed row per input line, with a ``reason``.

Every transform here keeps *all* input lines. A line that breaks the input contract gets a
``reason`` code from :mod:`adrank.tables.quarantine` (null means good) and keeps its
``raw`` text and ``input_date``; :func:`split_by_reason` then routes it to good or bad, so
input lines = good rows + bad rows by construction. A reason, once set, is never
overwritten: the first failing check wins.

The order of the checks matters for that count:

1. per-line checks (:func:`parse_click_log`): JSON, types, required fields, values;
2. catalog check (:func:`with_sku_attributes`): ad or context SKU not in ``sku_images``;
3. duplicates last, among the rows still good only, so a broken copy of an impression
   never displaces a good one: first a copy of an id already kept on an earlier date
   (:func:`flag_kept_before`, the build's state), then the later copies among the lines
   (:func:`drop_duplicate_impressions`).

The generic helpers every JSON-lines source reuses (parsing, reasons, duplicates, the
good/bad split) are in :mod:`adrank.tables.quarantine`; LR records in
:mod:`adrank.tables.lr_features`.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from adrank.core.layout import PAGES
from adrank.tables.quarantine import (
    BAD_POSITION,
    BAD_TIMESTAMP,
    BAD_VALUE,
    DATE_MISMATCH,
    DUPLICATE_ID,
    MISSING_FIELD,
    UNKNOWN_SKU,
    bad_timestamp,
    flag_duplicates,
    outside_date_folder,
    parsed_json_lines,
    with_reason,
)

CLICK_SCHEMA = (
    "impression_id string, ts string, user_id long, page string, context_sku_id long, "
    "query string, ad_sku_id long, position int, clicked int"
)
CLICK_REQUIRED = ("impression_id", "ts", "user_id", "page", "ad_sku_id", "position", "clicked")


def parse_click_log(lines: DataFrame) -> DataFrame:
    """Click-log lines as typed impressions, each with its ``reason`` (null = good).

    Args:
        lines: ``value`` (one JSON line) and ``input_date`` (from ``date=`` folders).

    Returns:
        ``raw``, ``input_date``, ``reason``, ``impression_id``, ``ts`` (timestamp),
        ``user_id``, ``page``, ``context_sku_id`` (null unless detail), ``query`` (null
        unless search), ``ad_sku_id``, ``position``, ``clicked``.
    """
    return (
        parsed_json_lines(lines, CLICK_SCHEMA)
        .transform(with_reason, *_click_checks())
        .select(
            "raw", "input_date", "reason", "impression_id",
            F.col("ts").try_cast("timestamp").alias("ts"), "user_id", "page",
            F.when(F.col("page") == "detail", F.col("context_sku_id")).alias("context_sku_id"),
            F.when(F.col("page") == "search", F.col("query")).alias("query"),
            "ad_sku_id", "position", "clicked",
        )
    )


def _click_checks() -> list[tuple[Column, str]]:
    missing = F.trim(F.col("impression_id")) == ""
    for name in CLICK_REQUIRED:
        missing = missing | F.col(name).isNull()
    return [
        (missing, MISSING_FIELD),
        (bad_timestamp(F.col("ts")), BAD_TIMESTAMP),
        (outside_date_folder(F.col("ts"), F.col("input_date")), DATE_MISMATCH),
        (~F.col("page").isin(*PAGES), BAD_VALUE),
        ((F.col("page") == "detail") & F.col("context_sku_id").isNull(), MISSING_FIELD),
        (~F.col("clicked").isin(0, 1), BAD_VALUE),
        (F.col("position") < 1, BAD_POSITION),
    ]


def with_sku_attributes(impressions: DataFrame, skus: DataFrame) -> DataFrame:
    """Looks up the ad and context SKUs in the catalog; a SKU not found is UNKNOWN_SKU.

    One lookup serves both the check and the example columns, so impressions are joined
    to the catalog twice (ad, context) in the whole build.

    Args:
        impressions: Output of :func:`parse_click_log`.
        skus: The ``sku_images`` table: ``sku_id``, ``category_id``, ``updated_at``.

    Returns:
        ``impressions`` with ``ad_category_id``, ``context_category_id`` (int) and
        ``ad_updated_at`` (timestamp), and UNKNOWN_SKU where the ad SKU, or a detail
        page's context SKU, is not in the catalog.
    """
    catalog = sku_catalog(skus).withColumn("_known", F.lit(True))
    ad = catalog.select(
        F.col("sku_id").alias("ad_sku_id"), F.col("category_id").alias("ad_category_id"),
        F.col("updated_at").alias("ad_updated_at"), F.col("_known").alias("_ad_known"),
    )
    context = catalog.select(
        F.col("sku_id").alias("context_sku_id"), F.col("category_id").alias("context_category_id"),
        F.col("_known").alias("_ctx_known"),
    )
    joined = impressions.join(ad, "ad_sku_id", "left").join(context, "context_sku_id", "left")
    unknown_ctx = F.col("context_sku_id").isNotNull() & F.col("_ctx_known").isNull()
    unknown = F.col("_ad_known").isNull() | unknown_ctx
    return joined.transform(with_reason, (unknown, UNKNOWN_SKU)).drop("_ad_known", "_ctx_known")


def sku_catalog(skus: DataFrame) -> DataFrame:
    """One row per known ``sku_id``: ``category_id`` (int) and ``updated_at``.

    Guards the joins against a catalog with repeated ids (which would repeat impressions
    and break lines = good + bad).

    Raises:
        ValueError: ``skus`` lacks one of the three columns.
    """
    missing = {"sku_id", "category_id", "updated_at"} - set(skus.columns)
    if missing:
        raise ValueError(f"skus needs columns sku_id, category_id, updated_at; missing {sorted(missing)}")
    return skus.where(F.col("sku_id").isNotNull()).groupBy("sku_id").agg(
        F.min("category_id").cast("int").alias("category_id"),
        F.max("updated_at").alias("updated_at"),
    )


def drop_duplicate_impressions(impressions: DataFrame) -> DataFrame:
    """Keeps one good row per ``impression_id``; extra copies get DUPLICATE_ID.

    The kept copy is the first by ``ts``, then ``raw``, then ``input_date``, so the choice
    is the same on every recomputation. Apply it last (see the module docstring).
    """
    return flag_duplicates(impressions, ["impression_id"], ["ts", "raw", "input_date"])


def flag_kept_before(impressions: DataFrame, kept_before: DataFrame) -> DataFrame:
    """A good copy of an id kept on an earlier date (in ``kept_before``) gets DUPLICATE_ID.

    Args:
        impressions: Checked impressions (``impression_id``, ``reason``).
        kept_before: ``impression_id`` of the ids kept on dates before every line's date
            (the kept-ids state, :mod:`adrank.tables.state`).
    """
    earlier = kept_before.select("impression_id").distinct().withColumn("_kept_before", F.lit(True))
    joined = impressions.join(earlier, "impression_id", "left")
    return joined.transform(with_reason, (F.col("_kept_before").isNotNull(), DUPLICATE_ID)).drop("_kept_before")


def checked_click_log(lines: DataFrame, skus: DataFrame, kept_before: DataFrame | None = None) -> DataFrame:
    """All click-log lines with their final ``reason``: parse, catalog lookup, dedup.

    ``kept_before`` (optional): ids kept on dates before the lines' (see :func:`flag_kept_before`).
    Its good rows (:func:`split_by_reason`) are what
    :func:`adrank.tables.examples.training_examples` takes as ``clicks``.
    """
    checked = parse_click_log(lines).transform(with_sku_attributes, skus)
    if kept_before is not None:
        checked = checked.transform(flag_kept_before, kept_before)
    return checked.transform(drop_duplicate_impressions)
