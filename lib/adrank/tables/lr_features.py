"""LR feature-record parsing: one ``impression_id`` and its ``name=value`` tokens per line, with a ``reason``.

Like every JSON-lines source, every line is kept: a broken one gets the first failing
reason (:mod:`adrank.tables.quarantine`) and goes to quarantine, so lines = good + bad.
A record joins the good impression of its own date folder only.
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from adrank.tables.quarantine import (
    BAD_VALUE,
    DATE_MISMATCH,
    MISSING_FIELD,
    TOKEN,
    flag_duplicates,
    parsed_json_lines,
    with_reason,
)

LR_FEATURES_SCHEMA = "impression_id string, features array<string>"


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


