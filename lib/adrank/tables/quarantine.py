"""Quarantine: every input row that breaks a contract, with its source, raw record and reason.

Transforms split an input into good rows and bad rows; bad rows carry ``raw`` (the record
as a string), ``reason`` (one of the codes below) and ``input_date`` (the date partition
the row came from, null for undated sources). :func:`quarantine_rows` gives them the
table's shape. Input rows = good rows + quarantined rows, always.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

BAD_JSON = "bad_json"
BAD_ENCODING = "bad_encoding"
MISSING_FIELD = "missing_field"
BAD_TYPE = "bad_type"
BAD_VALUE = "bad_value"
BAD_POSITION = "bad_position"
BAD_TIMESTAMP = "bad_timestamp"
UNKNOWN_SKU = "unknown_sku"
DUPLICATE_ID = "duplicate_id"
NULL_ID = "null_id"
UNDECODABLE_IMAGE = "undecodable_image"
OVERSIZED_IMAGE = "oversized_image"
NO_FEATURES = "no_features"
DATE_MISMATCH = "date_mismatch"

REASONS = (
    BAD_JSON, BAD_ENCODING, MISSING_FIELD, BAD_TYPE, BAD_VALUE, BAD_POSITION, BAD_TIMESTAMP, UNKNOWN_SKU,
    DUPLICATE_ID, NULL_ID, UNDECODABLE_IMAGE, OVERSIZED_IMAGE, NO_FEATURES, DATE_MISMATCH,
)
QUARANTINE_DDL = (
    "source string, input_date date, reason string, raw string, run_id string, quarantined_at timestamp"
)


def quarantine_rows(bad: DataFrame, source: str, run_id: str) -> DataFrame:
    """Shape bad rows (``raw``, ``reason``, optional ``input_date``) as quarantine rows."""
    input_date = F.col("input_date") if "input_date" in bad.columns else F.lit(None)
    return bad.select(
        F.lit(source).alias("source"),
        input_date.cast("date").alias("input_date"),
        F.col("reason").cast("string").alias("reason"),
        F.col("raw").cast("string").alias("raw"),
        F.lit(run_id).alias("run_id"),
        F.current_timestamp().alias("quarantined_at"),
    )


def first_failing_reason(*checks: tuple[Column, str]) -> Column:
    """A ``reason`` column: the code of the first check whose condition is true, else null."""
    reason = F.lit(None).cast("string")
    for condition, code in reversed(checks):
        reason = F.when(condition, F.lit(code)).otherwise(reason)
    return reason
CORRUPT = "_corrupt_record"
ISO_TIMESTAMP = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$"
TOKEN = r"^[^=]+="
_PARSED = "_parsed"
JSON_WHITESPACE = " \t\r\n"
_HIGH, _LOW = r"\\u[dD][89abAB][0-9a-fA-F]{2}", r"\\u[dD][c-fC-F][0-9a-fA-F]{2}"
LONE_SURROGATE = f"{_HIGH}(?!{_LOW})|(?<!{_HIGH}){_LOW}"  # a Java regex over escapes, escaped backslashes removed


def parsed_json_lines(lines: DataFrame, ddl: str) -> DataFrame:
    """Parses JSON lines under an explicit schema; encoding, syntax and type errors become reasons.

    ``from_json`` runs in PERMISSIVE mode with a corrupt-record column. Reasons, first
    failing wins:

    * BAD_ENCODING: the line is not valid UTF-8 (Spark's text reader keeps the bytes as
      they are); its ``raw`` is ``base64:`` + the line's bytes, so nothing is replaced. Or
      a string escapes a UTF-16 surrogate that is not half of a pair (``"caf\\udce9"``:
      how Python's ``json.dumps`` writes a byte it read with ``errors="surrogateescape"``),
      which is no character either: the JSON parser would silently turn it into ``?`` and
      keep the line (see :func:`escapes_a_lone_surrogate`); its ``raw`` is the line as is;
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
    valid_text = valid_utf8 & ~escapes_a_lone_surrogate(F.col("value"))
    reason = _json_error(F.col("value"), F.col(_PARSED), valid_text).alias("reason")
    return parsed.select(raw, "input_date", reason, f"{_PARSED}.*").drop(CORRUPT)


def _json_error(raw: Column, parsed: Column, valid_text: Column) -> Column:
    corrupt = parsed[CORRUPT].isNotNull()
    text = F.trim(raw, F.lit(JSON_WHITESPACE))
    not_object = parsed.isNull() | ~text.startswith("{") | ~text.endswith("}")
    unparseable = corrupt & F.from_json(raw, "map<string,string>").isNull()
    not_one = ~F.coalesce(single_json_value(raw), F.lit(False))
    return first_failing_reason(
        (~valid_text, BAD_ENCODING), (not_object | unparseable | not_one, BAD_JSON), (corrupt, BAD_TYPE)
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


def escapes_a_lone_surrogate(raw: Column) -> Column:
    """True when a ``\\uXXXX`` escape of ``raw`` is a UTF-16 surrogate outside a high-low pair.

    Escaped backslashes (``\\\\``) are removed first, left to right as a JSON parser reads
    them, so every backslash left starts an escape; then a high surrogate (``\\ud800`` to
    ``\\udbff``) must be followed by a low one (``\\udc00`` to ``\\udfff``), and a low one
    preceded by a high one. Spark's parser turns a lone one into ``?`` without a word.
    """
    escapes = F.regexp_replace(raw, r"\\\\", "")
    return raw.contains("\\") & escapes.rlike(LONE_SURROGATE)


def _base64_line(value: Column) -> Column:
    """``base64:`` + the line's bytes: a lossless, valid-UTF-8 ``raw`` for a line that is not UTF-8.

    One unbroken base64 string: Spark's ``base64`` cuts it into 76-character lines (MIME), so
    the line breaks it puts in are taken out.
    """
    return F.concat(F.lit("base64:"), F.regexp_replace(F.base64(value.cast("binary")), "[\r\n]", ""))


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
        ``reason``, ``input_date``, ready for :func:`~adrank.tables.quarantine.quarantine_rows`.
    """
    good = df.where(F.col("reason").isNull()).drop("reason", "raw")
    bad = df.where(F.col("reason").isNotNull()).select("raw", "reason", "input_date")
    return good, bad


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
