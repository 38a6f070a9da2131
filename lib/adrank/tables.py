"""Table names and paths, and the one place Delta tables and run files are read and written.

Delta tables live at ``<storage.root>/<table>``. Writes carry the run id (and any figures
given) as Delta commit metadata, so ``DESCRIBE HISTORY`` tells which run wrote what.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

from pyspark.sql import DataFrame, SparkSession

from adrank.config import Config

SKU_IMAGES = "sku_images"
TRAINING_EXAMPLES = "training_examples"
QUARANTINE = "quarantine"
SKU_EMBEDDINGS = "sku_embeddings"
RUNS_FOLDER = "_runs"


def table_path(config: Config, table: str) -> str:
    """Where ``table`` lives: ``<storage.root>/<table>``."""
    return join_path(config.storage.root, table)


def join_path(root: str, *parts: str) -> str:
    """Join path parts onto a local path or a URI (``s3a://b/x`` + ``t`` -> ``s3a://b/x/t``)."""
    return "/".join([root.rstrip("/"), *(p.strip("/") for p in parts)])


def write_delta(
    df: DataFrame,
    path: str,
    *,
    mode: str = "append",
    partition_by: Sequence[str] = (),
    replace_where: str | None = None,
    commit_info: Mapping[str, Any] | None = None,
) -> None:
    """Write ``df`` as a Delta table in one commit.

    Args:
        df: rows to write.
        path: table location.
        mode: ``append`` or ``overwrite``.
        partition_by: partition columns (used when the table is created).
        replace_where: with ``overwrite``, replace only the rows matching this predicate.
        commit_info: JSON-able facts stored in the commit's ``userMetadata``.
    """
    writer = df.write.format("delta").mode(mode)
    if partition_by:
        writer = writer.partitionBy(*partition_by)
    if replace_where:
        writer = writer.option("replaceWhere", replace_where)
    if commit_info:
        writer = writer.option("userMetadata", json.dumps(dict(commit_info), sort_keys=True))
    writer.save(path)


def read_delta(spark: SparkSession, path: str, version: int | None = None) -> DataFrame:
    """Read a Delta table, at ``version`` if given (time travel)."""
    reader = spark.read.format("delta")
    if version is not None:
        reader = reader.option("versionAsOf", version)
    return reader.load(path)


def write_text_file(spark: SparkSession | None, uri: str, text: str) -> None:
    """Write one small text file to a local path or any Hadoop-supported URI."""
    if "://" not in uri or uri.startswith("file://"):
        local = Path(uri.removeprefix("file://"))
        local.parent.mkdir(parents=True, exist_ok=True)
        tmp = local.with_name(f".{local.name}.tmp")
        tmp.write_text(text)
        tmp.replace(local)
        return
    if spark is None:
        raise ValueError(f"writing {uri} needs a SparkSession (Hadoop FileSystem)")
    jvm = spark.sparkContext._jvm
    hadoop_path = jvm.org.apache.hadoop.fs.Path(uri)
    fs = hadoop_path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    stream = fs.create(hadoop_path, True)
    try:
        stream.write(bytearray(text.encode("utf-8")))
    finally:
        stream.close()
