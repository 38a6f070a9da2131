"""Reads of the raw inputs (the README's input contracts), as DataFrames of raw records.

Nothing is parsed here: JSON-lines sources come back one row per line (``value``) with
the date partition they came from (``input_date``), so that parsing, checks and
quarantine happen in the pure transforms of ``adrank.features``.
"""

from __future__ import annotations

import datetime

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from adrank.config import Config
from adrank.tables import join_path

CATALOG = "catalog"
CLICK_LOG = "click_log"
LR_FEATURES = "lr_features"
USER_SNAPSHOTS = "user_snapshots"
SKU_SNAPSHOTS = "sku_snapshots"
DATED_SOURCES = (CLICK_LOG, LR_FEATURES)


def input_path(config: Config, source: str) -> str:
    """Where a raw source lives: ``<inputs.root>/<source>``."""
    return join_path(config.inputs.root, source)


def read_catalog(spark: SparkSession, config: Config) -> DataFrame:
    """The catalog as given (Parquet with image bytes)."""
    return spark.read.parquet(input_path(config, CATALOG))


def read_dated_lines(
    spark: SparkSession, config: Config, source: str, dates: tuple[datetime.date, datetime.date] | None
) -> DataFrame:
    """Lines of a ``<source>/date=YYYY-MM-DD/`` folder, with ``input_date``; only ``dates`` if given."""
    lines = spark.read.option("basePath", input_path(config, source)).text(input_path(config, source))
    lines = lines.withColumn("input_date", F.col("date").cast("date")).drop("date")
    if dates is not None:
        lines = lines.where(F.col("input_date").between(F.lit(dates[0]), F.lit(dates[1])))
    return lines


def read_undated_lines(spark: SparkSession, config: Config, source: str) -> DataFrame:
    """Lines of an undated JSON-lines source (snapshots), with a null ``input_date``."""
    lines = spark.read.text(input_path(config, source))
    return lines.withColumn("input_date", F.lit(None).cast("date"))


def available_dates(spark: SparkSession, config: Config) -> list[datetime.date]:
    """The dates present in the click log, from its ``date=`` folder names (no data scan)."""
    jvm = spark.sparkContext._jvm
    folder = jvm.org.apache.hadoop.fs.Path(input_path(config, CLICK_LOG))
    fs = folder.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    names = [status.getPath().getName() for status in fs.listStatus(folder) if status.isDirectory()]
    return sorted(datetime.date.fromisoformat(n[5:]) for n in names if n.startswith("date="))
