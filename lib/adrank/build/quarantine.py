"""Quarantine: every input row that breaks a contract, with its source, raw record and reason.

Transforms split an input into good rows and bad rows; bad rows carry ``raw`` (the record
as a string), ``reason`` (one of the codes below) and ``input_date`` (the date partition
the row came from, null for undated sources). :func:`quarantine_rows` gives them the
table's shape. Input rows = good rows + quarantined rows, always.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
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
