"""Click-log and LR-feature-record parsing: one typed row per input line, with a ``reason``.

Every transform here keeps *all* input lines. A line that breaks the input contract gets a
``reason`` code from :mod:`adrank.build.quarantine` (null means good) and keeps its
``raw`` text and ``input_date``; :func:`split_by_reason` then routes it to good or bad, so
input lines = good rows + bad rows by construction. A reason, once set, is never
overwritten: the first failing check wins.

The order of the checks matters for that count:

1. per-line checks (:func:`parse_click_log`): JSON, types, required fields, values;
2. catalog check (:func:`with_sku_attributes`): ad or context SKU not in ``sku_images``;
3. duplicates last (:func:`drop_duplicate_impressions`), among the rows still good only,
   so a broken copy of an impression never displaces a good one.

The generic helpers (:func:`parsed_json_lines`, :func:`with_reason`,
:func:`flag_duplicates`, :func:`split_by_reason`) are reused for every JSON-lines source.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from adrank.build.quarantine import (
    BAD_ENCODING,
    BAD_JSON,
    BAD_POSITION,
    BAD_TIMESTAMP,
    BAD_TYPE,
    BAD_VALUE,
    DATE_MISMATCH,
    DUPLICATE_ID,
    MISSING_FIELD,
    UNKNOWN_SKU,
    first_failing_reason,
)

CORRUPT = "_corrupt_record"
PAGES = ("detail", "feed", "search")
CLICK_SCHEMA = (
    "impression_id string, ts string, user_id long, page string, context_sku_id long, "
    "query string, ad_sku_id long, position int, clicked int"
)
CLICK_REQUIRED = ("impression_id", "ts", "user_id", "page", "ad_sku_id", "position", "clicked")
LR_FEATURES_SCHEMA = "impression_id string, features array<string>"
ISO_TIMESTAMP = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$"
TOKEN = r"^[^=]+="
_PARSED = "_parsed"
JSON_WHITESPACE = " \t\r\n"


def parsed_json_lines(lines: DataFrame, ddl: str) -> DataFrame:
    """Parses JSON lines under an explicit schema; encoding, syntax and type errors become reasons.

    ``from_json`` runs in PERMISSIVE mode with a corrupt-record column. Reasons, first
    failing wins:

    * BAD_ENCODING: the line is not valid UTF-8 (Spark's text reader keeps the bytes as
      they are); its ``raw`` is ``base64:`` + the line's bytes, so nothing is replaced;
    * BAD_JSON: not exactly one JSON object: not an object at all (checked again, only for
      corrupt lines, as a ``map<string,string>``, which accepts any value type), or an
      object followed by anything but white space (a second object, trailing garbage),
      which ``from_json`` would silently ignore (see :func:`single_json_value`);
    * BAD_TYPE: a field of the wrong JSON type, e.g. ``"clicked": "yes"``.

    Args:
        lines: ``value`` (the raw line) and optionally ``input_date`` (the date folder).
        ddl: The fields of one record, as a DDL string.

    Returns:
        ``raw``, ``input_date`` (null if absent), ``reason`` and the schema's fields.
    """
    options = {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": CORRUPT}
    has_date = "input_date" in lines.columns
    input_date = F.col("input_date").cast("date") if has_date else F.lit(None).cast("date")
    parsed = lines.select(
        F.col("value"),
        input_date.alias("input_date"),
        F.from_json("value", f"{ddl}, {CORRUPT} string", options).alias(_PARSED),
    )
    valid_utf8 = F.is_valid_utf8("value")
    raw = F.when(valid_utf8, F.col("value")).otherwise(_base64_line(F.col("value"))).alias("raw")
    reason = _json_error(F.col("value"), F.col(_PARSED), valid_utf8).alias("reason")
    return parsed.select(raw, "input_date", reason, f"{_PARSED}.*").drop(CORRUPT)


def _json_error(raw: Column, parsed: Column, valid_utf8: Column) -> Column:
    corrupt = parsed[CORRUPT].isNotNull()
    text = F.trim(raw, F.lit(JSON_WHITESPACE))
    not_object = parsed.isNull() | ~text.startswith("{") | ~text.endswith("}")
    unparseable = corrupt & F.from_json(raw, "map<string,string>").isNull()
    not_one = ~F.coalesce(single_json_value(raw), F.lit(False))
    return first_failing_reason(
        (~valid_utf8, BAD_ENCODING), (not_object | unparseable | not_one, BAD_JSON), (corrupt, BAD_TYPE)
    )


def single_json_value(raw: Column) -> Column:
    """True when ``raw`` holds one JSON value and nothing after it but white space.

    ``from_json`` parses the first value of a line and ignores whatever follows, so
    ``{"a": 1} {"a": 2}`` would keep the first record and lose the second. The line is
    parsed again inside two wrappers: as the only element of an array (``[raw]``: a comma
    makes two elements, anything else after the value breaks it, except a ``]`` that
    closes the array early) and as the value of an object (``{"v": raw}``: a ``]`` after
    the value breaks it). A line passes both only when nothing follows its value.
    """
    in_array = F.from_json(F.concat(F.lit("["), raw, F.lit("]")), "array<string>")
    in_object = F.from_json(
        F.concat(F.lit('{"v": '), raw, F.lit("}")), f"v string, {CORRUPT} string",
        {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": CORRUPT},
    )
    return (F.size(in_array) == 1) & in_object[CORRUPT].isNull()


def _base64_line(value: Column) -> Column:
    """``base64:`` + the line's bytes: a lossless, valid-UTF-8 ``raw`` for a line that is not UTF-8."""
    return F.concat(F.lit("base64:"), F.base64(value.cast("binary")))


def with_reason(df: DataFrame, *checks: tuple[Column, str]) -> DataFrame:
    """Sets ``reason`` to the first failing check's code on rows that have none yet."""
    return df.withColumn("reason", F.coalesce(F.col("reason"), first_failing_reason(*checks)))


def flag_duplicates(df: DataFrame, keys: list[str], order: list[str]) -> DataFrame:
    """Marks all but one good row per key as DUPLICATE_ID.

    The kept row is the first good row by ``order``; rows that already have a reason
    are left alone and never count as the kept copy.
    """
    ranking = Window.partitionBy(*keys).orderBy(F.col("reason").isNotNull(), *order)
    extra = F.col("reason").isNull() & (F.row_number().over(ranking) > 1)
    return df.withColumn("reason", F.when(extra, F.lit(DUPLICATE_ID)).otherwise(F.col("reason")))


def split_by_reason(df: DataFrame) -> tuple[DataFrame, DataFrame]:
    """Splits checked rows into good rows and bad rows (any source).

    Returns:
        ``(good, bad)``: good rows without ``reason`` and ``raw``; bad rows as ``raw``,
        ``reason``, ``input_date``, ready for :func:`~adrank.build.quarantine.quarantine_rows`.
    """
    good = df.where(F.col("reason").isNull()).drop("reason", "raw")
    bad = df.where(F.col("reason").isNotNull()).select("raw", "reason", "input_date")
    return good, bad


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


def outside_date_folder(ts_text: Column, input_date: Column) -> Column:
    """True when the impression's UTC day is not the ``date=`` folder it was read from.

    ``training_examples`` is partitioned by that day and a build replaces whole days, so a
    late or misfiled line would otherwise land in (or vanish from) another day's partition.
    """
    seconds = F.unix_seconds(ts_text.try_cast("timestamp"))
    utc_date = F.date_from_unix_date(F.floor(seconds / 86_400).cast("int"))
    return input_date.isNotNull() & (utc_date != input_date)


def bad_timestamp(text: Column) -> Column:
    """ISO-8601 with an explicit zone (``Z`` or ``+hh:mm``) that names a real instant."""
    return ~text.rlike(ISO_TIMESTAMP) | text.try_cast("timestamp").isNull()


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


def checked_click_log(lines: DataFrame, skus: DataFrame) -> DataFrame:
    """All click-log lines with their final ``reason``: parse, catalog lookup, dedup.

    Its good rows (:func:`split_by_reason`) are what
    :func:`adrank.build.examples.training_examples` takes as ``clicks``.
    """
    return (
        parse_click_log(lines)
        .transform(with_sku_attributes, skus)
        .transform(drop_duplicate_impressions)
    )


def parse_lr_features(lines: DataFrame) -> DataFrame:
    """LR feature-record lines as ``impression_id``, ``features`` (array of ``name=value``).

    Reasons: BAD_JSON, BAD_TYPE (e.g. ``features`` not an array), MISSING_FIELD, and
    BAD_VALUE for a token that is null or not ``name=value``.
    """
    missing = F.col("impression_id").isNull() | F.col("features").isNull()
    bad_token = F.exists("features", lambda t: t.isNull() | ~t.rlike(TOKEN))
    return (
        parsed_json_lines(lines, LR_FEATURES_SCHEMA)
        .transform(with_reason, (missing, MISSING_FIELD), (bad_token, BAD_VALUE))
    )


def flag_lr_without_impression(records: DataFrame, impressions: DataFrame) -> DataFrame:
    """Marks LR feature records that join no good impression of their own date folder.

    A record joins the impression with its ``impression_id`` read from the same
    ``date=`` folder, so a build of any set of dates gives an impression the same tokens.
    A record filed in a later date's folder than its impression is DATE_MISMATCH; any
    other record without an impression is BAD_VALUE (its ``impression_id`` refers to
    nothing it may join). Either way it goes to quarantine, keeping lines = good + bad.

    Args:
        records: Output of :func:`parse_lr_features`, with ``input_date``.
        impressions: Good impressions (one row per ``impression_id``) with their
            ``input_date``: those of every date read, earlier dates included.
    """
    ids = impressions.select("impression_id", F.col("input_date").alias("_impression_date"))
    joined = records.join(ids, "impression_id", "left")
    impression_date = F.col("_impression_date")
    filed_late = impression_date < F.col("input_date")
    orphan = impression_date.isNull() | ~impression_date.eqNullSafe(F.col("input_date"))
    return joined.transform(with_reason, (filed_late, DATE_MISMATCH), (orphan, BAD_VALUE)).drop(
        "_impression_date"
    )


def drop_duplicate_lr_records(records: DataFrame) -> DataFrame:
    """Keeps one good LR record per ``impression_id`` and date folder (first by ``raw``).

    Copies in other folders are not duplicates of it: they join no impression of theirs
    and :func:`flag_lr_without_impression` quarantines them.
    """
    return flag_duplicates(records, ["impression_id", "input_date"], ["raw"])


def checked_lr_features(lines: DataFrame, impressions: DataFrame) -> DataFrame:
    """All LR feature lines with their final ``reason``: parse, dedup, then orphan check.

    Dedup before the orphan check gives the same good rows as the other order (a
    record's copies are all orphans or none), and lets the examples use the deduped
    records without the orphan join (a left join from impressions drops orphans anyway).
    """
    return (
        parse_lr_features(lines)
        .transform(drop_duplicate_lr_records)
        .transform(flag_lr_without_impression, impressions)
    )
