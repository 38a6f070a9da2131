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
from adrank.tables import hadoop_path, join_path

CATALOG = "catalog"
CLICK_LOG = "click_log"
LR_FEATURES = "lr_features"
USER_SNAPSHOTS = "user_snapshots"
SKU_SNAPSHOTS = "sku_snapshots"
DATED_SOURCES = (CLICK_LOG, LR_FEATURES)


def input_path(config: Config, source: str) -> str:
    """Where a raw source lives: ``<inputs.root>/<source>``."""
    return join_path(config.inputs.root, source)


CATALOG_CSV = "catalog.csv"
CATALOG_CSV_SCHEMA = "sku_id long, title string, image_path string, updated_at timestamp, category_id int"


def read_catalog(spark: SparkSession, config: Config) -> DataFrame:
    """The catalog as given: a Delta table, Parquet files, or a CSV beside image files.

    ``<inputs.root>/catalog/`` holds one of: a Delta table (``_delta_log``); Parquet with an
    ``image`` binary column; or ``catalog.csv`` (``sku_id, title, image_path, updated_at,
    category_id``; ``image_path`` relative to the folder or absolute) plus the image files.
    A CSV row whose image file does not exist gets a null ``image`` (quarantined later).
    """
    folder = input_path(config, CATALOG)
    if _exists(spark, join_path(folder, "_delta_log")):
        return spark.read.format("delta").load(folder)
    if _exists(spark, join_path(folder, CATALOG_CSV)):
        return _catalog_from_csv(spark, folder)
    return spark.read.parquet(folder)


def _catalog_from_csv(spark: SparkSession, folder: str) -> DataFrame:
    rows = spark.read.schema(CATALOG_CSV_SCHEMA).option("header", True).csv(join_path(folder, CATALOG_CSV))
    rows = rows.withColumn("image_path", F.regexp_replace("image_path", "^[.]/", ""))
    prefix = _qualified(spark, folder).rstrip("/") + "/"
    files = spark.read.format("binaryFile").option("recursiveFileLookup", True).load(folder)
    images = files.select(
        F.expr(f"substring(path, {len(prefix) + 1})").alias("image_path"), F.col("content").alias("image")
    )
    joined = rows.join(images, "image_path", "left")
    return joined.select("sku_id", "title", "image", "updated_at", "category_id")


def _qualified(spark: SparkSession, uri: str) -> str:
    """The fully qualified form of a path, as Spark's file sources report it (``file:/x``)."""
    path, fs = hadoop_path(spark, uri)
    return fs.makeQualified(path).toString()


def _exists(spark: SparkSession, uri: str) -> bool:
    path, fs = hadoop_path(spark, uri)
    return fs.exists(path)


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
    folder, fs = hadoop_path(spark, input_path(config, CLICK_LOG))
    names = [status.getPath().getName() for status in fs.listStatus(folder) if status.isDirectory()]
    return sorted(datetime.date.fromisoformat(n[5:]) for n in names if n.startswith("date="))
