"""User and SKU snapshots: parsing with reasons, and the point-in-time (as-of) join.

A snapshot line is ``{"entity_id": long, "valid_from": ISO ts, "features": [...]}``.
:func:`join_as_of` gives each impression the features of the latest snapshot of its
entity with ``valid_from <= ts``, never a later one.

How the as-of join works, and why: impressions and snapshots are put in one frame
(``unionByName``), shuffled once by entity key and sorted by time within the key, with
a snapshot placed before an impression at the same instant (so ``valid_from == ts``
counts). A running ``last(snapshot, ignorenulls)`` over that order carries the latest
snapshot forward onto each impression row. The cost is one shuffle and sort of
impressions + snapshots, O((I + S) log), with no per-impression fan-out, whereas joining
on the key and then filtering ``valid_from <= ts`` costs I x (snapshots per entity),
which grows with the history kept. Skew note: all rows of one entity land in one task
(a very hot ad SKU is processed sequentially, spilling if needed, but still linearly).
"""

from __future__ import annotations

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from adrank.tables.quarantine import (
    BAD_TIMESTAMP,
    BAD_VALUE,
    MISSING_FIELD,
    TOKEN,
    bad_timestamp,
    flag_duplicates,
    parsed_json_lines,
    with_reason,
)

SNAPSHOT_SCHEMA = "entity_id long, valid_from string, features array<string>"
_SNAPSHOT = "__asof_snapshot"
_IS_IMPRESSION = "__asof_is_impression"


def parse_snapshots(lines: DataFrame) -> DataFrame:
    """Snapshot lines as ``entity_id``, ``valid_from`` (timestamp), ``features``, with reasons.

    Reasons: BAD_JSON, BAD_TYPE, MISSING_FIELD, BAD_TIMESTAMP (``valid_from`` not ISO-8601
    with a zone), BAD_VALUE (a token not ``name=value``), DUPLICATE_ID (a second snapshot of
    the same entity at the same ``valid_from``: the as-of join needs one per instant).

    Args:
        lines: ``value`` (one JSON line), optionally ``input_date``.

    Returns:
        ``raw``, ``input_date``, ``reason``, ``entity_id``, ``valid_from``, ``features``.
    """
    missing = F.col("entity_id").isNull() | F.col("valid_from").isNull() | F.col("features").isNull()
    bad_token = F.exists("features", lambda t: t.isNull() | ~t.rlike(TOKEN))
    return (
        parsed_json_lines(lines, SNAPSHOT_SCHEMA)
        .transform(
            with_reason,
            (missing, MISSING_FIELD),
            (bad_timestamp(F.col("valid_from")), BAD_TIMESTAMP),
            (bad_token, BAD_VALUE),
        )
        .withColumn("valid_from", F.col("valid_from").try_cast("timestamp"))
        .transform(flag_duplicates, ["entity_id", "valid_from"], ["raw", "input_date"])
    )


def join_as_of(
    impressions: DataFrame,
    snapshots: DataFrame,
    key_col: str,
    prefix: str,
    output_col: str | None = None,
    time_col: str = "ts",
) -> DataFrame:
    """Adds the features of each impression's latest snapshot at or before its time.

    Args:
        impressions: Rows with ``key_col`` (long) and ``time_col`` (timestamp).
        snapshots: Good snapshots: ``entity_id``, ``valid_from``, ``features``; one per
            (entity, valid_from), as :func:`parse_snapshots` guarantees.
        key_col: The impression column holding the entity id (``user_id``, ``ad_sku_id``).
        prefix: Put before every token, e.g. ``"u."`` turns ``segment=3`` into ``u.segment=3``.
        output_col: The new column; defaults to ``prefix`` without dots + ``_tokens``
            (``"u."`` -> ``u_tokens``).
        time_col: The impression time column.

    Returns:
        ``impressions`` with ``output_col`` (array<string>): the prefixed tokens, empty when
        no snapshot is at or before the impression (the impression is kept).
    """
    out = output_col or f"{prefix.replace('.', '')}_tokens"
    rows = impressions.withColumn(_IS_IMPRESSION, F.lit(True)).unionByName(
        _snapshot_rows(impressions, snapshots, key_col, time_col), allowMissingColumns=True
    )
    order = Window.partitionBy(key_col).orderBy(time_col, _IS_IMPRESSION).rowsBetween(
        Window.unboundedPreceding, Window.currentRow
    )
    latest = F.last(_SNAPSHOT, ignorenulls=True).over(order)["features"]
    tokens = F.transform(F.coalesce(latest, F.array()), lambda t: F.concat(F.lit(prefix), t))
    return (
        rows.withColumn(out, tokens.cast("array<string>"))
        .where(F.col(_IS_IMPRESSION))
        .drop(_IS_IMPRESSION, _SNAPSHOT)
    )


def _snapshot_rows(impressions: DataFrame, snapshots: DataFrame, key_col: str, time_col: str) -> DataFrame:
    """Snapshots shaped to union with impressions: key, time, a non-null snapshot struct."""
    types = dict(impressions.dtypes)
    return snapshots.select(
        F.col("entity_id").cast(types[key_col]).alias(key_col),
        F.col("valid_from").cast(types[time_col]).alias(time_col),
        F.struct(F.col("features").cast("array<string>").alias("features")).alias(_SNAPSHOT),
        F.lit(False).alias(_IS_IMPRESSION),
    )
