"""Delta I/O of recommend: the ``similar_skus``, ``user_recommendations`` and ``query_recommendations`` tables.

Each run overwrites each table in one commit whose ``userMetadata`` is the run's record:
``{"job": "recommend", "run_id", "sku_embeddings_version", "serving_snapshot_version",
"embedding_model_version", "training_examples_version", "search"}``, so a reader of any
version knows what it was computed from (:func:`run_record`). A killed run leaves every
table at its previous version or at this run's: never a mix inside one table. Two
concurrent runs: each table holds one run's rows whole (Delta's optimistic concurrency).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pyspark.sql import DataFrame, SparkSession

from adrank.core import layout
from adrank.storage import delta

JOB = "recommend"
KEYS = {layout.SIMILAR_SKUS: "sku_id", layout.USER_RECOMMENDATIONS: "user_id",
        layout.QUERY_RECOMMENDATIONS: "query"}
COLUMNS = {
    layout.SIMILAR_SKUS: ("sku_id", "neighbours"),
    layout.USER_RECOMMENDATIONS: ("user_id", "as_of", "behaviour_clicks", "recommendations"),
    layout.QUERY_RECOMMENDATIONS: ("query", "recommendations"),
}


def write_table(spark: SparkSession, path: str, table: str, frame: DataFrame,
                record: Mapping[str, Any]) -> dict[str, int]:
    """Overwrites ``table`` (at ``path``) with ``frame`` in one commit carrying ``record``; its version and rows."""
    info = {"job": JOB, **record}
    delta.write_delta(frame.select(*COLUMNS[table]), path, mode="overwrite", commit_info=info)
    commit = delta.commit_with_metadata(spark, path, json.dumps(info, sort_keys=True))
    if commit is None:
        raise RuntimeError(f"{table}: the commit of run {record.get('run_id')} is not in the newest 20 commits")
    return delta.commit_figures(commit, delta.WRITE_METRICS)


def read_table(spark: SparkSession, path: str, version: int | None = None) -> DataFrame:
    """One of the recommendation tables, at ``path`` (at ``version``)."""
    return delta.read_delta(spark, path, version)


def run_record(spark: SparkSession, path: str, version: int) -> dict[str, Any]:
    """The record of the run that wrote ``version`` of the table at ``path`` ({} if it carries none)."""
    from delta.tables import DeltaTable

    rows = (DeltaTable.forPath(spark, path).history()
            .where(f"version = {int(version)}").select("userMetadata").collect())
    return json.loads(rows[0].userMetadata) if rows and rows[0].userMetadata else {}


__all__ = ["COLUMNS", "JOB", "KEYS", "read_table", "run_record", "write_table"]
