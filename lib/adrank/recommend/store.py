"""Delta I/O of recommend: the ``similar_skus``, ``user_recommendations`` and ``query_recommendations`` tables.

Each run writes each table in one commit whose ``userMetadata`` is the run's record:
``{"job": "recommend", "run_id", "sku_embeddings_version", "serving_snapshot_version",
"embedding_model_version", "training_examples_version", "search", "as_of", "mode",
"reason", "basis", "settings"}``, so a reader of any version knows what it was computed
from (:func:`run_record`): a full run overwrites the table (:func:`write_table`), an
incremental one MERGEs its recomputed lists and deletes its removed keys
(:func:`merge_table`; a MERGE that changes nothing commits the record alone). A killed run leaves every
table at its previous version or at this run's: never a mix inside one table. Two
concurrent runs: each table holds one run's rows whole (Delta's optimistic concurrency).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from adrank.core import layout
from adrank.core.errors import naming_table
from adrank.storage import delta

JOB = "recommend"
RECORD_PROPERTY = "adrank.recommend.runId"  # set by a run whose MERGE changed nothing, to commit its record
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


def merge_table(spark: SparkSession, path: str, table: str, upserts: DataFrame, removed: DataFrame,
                record: Mapping[str, Any]) -> dict[str, int]:
    """One MERGE commit carrying ``record``: ``upserts`` (the table's columns) replace or add their keys'
    rows, ``removed`` (the key) are deleted; its version, rows written (inserted + updated) and deleted."""
    from delta.tables import DeltaTable

    key, columns = KEYS[table], COLUMNS[table]
    rows = upserts.select(*columns)
    deletes = removed.select(key).distinct().join(rows.select(key), key, "left_anti").select(
        key, *(F.lit(None).cast(rows.schema[c].dataType).alias(c) for c in columns if c != key))
    source = rows.withColumn("_op", F.lit("upsert")).unionByName(deletes.withColumn("_op", F.lit("delete")))
    info = json.dumps({"job": JOB, **record}, sort_keys=True)
    values: dict[str, str | Column] = {c: f"s.`{c}`" for c in columns}
    materialize = {"spark.databricks.delta.merge.materializeSource": "all"}  # the searches run once
    with delta.session_conf(spark, {delta.USER_METADATA_CONF: info, **materialize}), naming_table(path):
        (DeltaTable.forPath(spark, path).alias("t").merge(source.alias("s"), f"t.`{key}` = s.`{key}`")
         .whenMatchedDelete(condition="s._op = 'delete'")
         .whenMatchedUpdate(condition="s._op = 'upsert'", set=values)
         .whenNotMatchedInsert(condition="s._op = 'upsert'", values=values)
         .execute())
    commit = delta.commit_with_metadata(spark, path, info)
    if commit is None:  # nothing to change: Delta made no commit; the record still is one
        with delta.session_conf(spark, {delta.USER_METADATA_CONF: info}):
            delta.set_properties(spark, path, {RECORD_PROPERTY: str(record.get("run_id"))})
        commit = delta.commit_with_metadata(spark, path, info)
    if commit is None:
        raise RuntimeError(f"{table}: the commit of run {record.get('run_id')} is not in the newest 20 commits")
    figures = delta.commit_figures(commit, delta.MERGE_METRICS)
    return {"version": figures["version"], "rows": figures["rows_inserted"] + figures["rows_updated"],
            "removed": figures["rows_deleted"]}


def read_table(spark: SparkSession, path: str, version: int | None = None) -> DataFrame:
    """One of the recommendation tables, at ``path`` (at ``version``)."""
    return delta.read_delta(spark, path, version)


def run_record(spark: SparkSession, path: str, version: int) -> dict[str, Any]:
    """The record of the run that wrote ``version`` of the table at ``path`` ({} if it carries none)."""
    from delta.tables import DeltaTable

    rows = (DeltaTable.forPath(spark, path).history()
            .where(f"version = {int(version)}").select("userMetadata").collect())
    return json.loads(rows[0].userMetadata) if rows and rows[0].userMetadata else {}


__all__ = ["COLUMNS", "JOB", "KEYS", "RECORD_PROPERTY", "merge_table", "read_table", "run_record", "write_table"]
