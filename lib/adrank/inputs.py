"""Reads of the raw inputs (the README's input contracts), as DataFrames of raw records.

Nothing is parsed here: JSON-lines sources come back one row per line (``value``) with
the date partition they came from (``input_date``), so that parsing, checks and
quarantine happen in the pure transforms of ``adrank.features``.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Sequence
from dataclasses import dataclass

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
DATE_FOLDER = re.compile(r"date=\d{4}-\d{2}-\d{2}")


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
    spark: SparkSession, config: Config, source: str, dates: Sequence[datetime.date]
) -> DataFrame:
    """Lines of the ``<source>/date=YYYY-MM-DD/`` folders of ``dates``, with ``input_date``.

    Only those folders are listed and read (never the whole history); a date without a
    folder contributes no line (the build's plan decides whether that is allowed).
    """
    root = input_path(config, source)
    folders = [join_path(root, date_folder_name(d)) for d in sorted(set(dates))]
    folders = [f for f in folders if _exists(spark, f)]
    if not folders:
        return spark.createDataFrame([], "value string, input_date date")
    lines = spark.read.option("basePath", root).text(folders)
    return lines.withColumn("input_date", F.col("date").cast("date")).drop("date")


def read_undated_lines(spark: SparkSession, config: Config, source: str) -> DataFrame:
    """Lines of an undated JSON-lines source (snapshots), with a null ``input_date``."""
    lines = spark.read.text(input_path(config, source))
    return lines.withColumn("input_date", F.lit(None).cast("date"))


def date_folder_name(date: datetime.date) -> str:
    """The folder of one date of a dated source: ``date=YYYY-MM-DD``."""
    return f"date={date.isoformat()}"


@dataclass(frozen=True)
class DatedFolders:
    """What one dated source's folder holds, from its listing (no data scan).

    Attributes:
        source: The source name (``click_log`` or ``lr_features``).
        dates: The dates of its well-named ``date=YYYY-MM-DD`` folders, sorted.
        stray: Entries that are neither such a folder nor hidden (names starting with
            ``_`` or ``.``, e.g. ``_SUCCESS``): files outside a date folder, badly named
            folders (``date=2026-11-4``). Their lines would be read by no build.
    """

    source: str
    dates: tuple[datetime.date, ...]
    stray: tuple[str, ...]


def list_dated_folders(spark: SparkSession, config: Config, source: str) -> DatedFolders:
    """Lists ``<inputs.root>/<source>/``; a missing folder holds no date."""
    folder, fs = hadoop_path(spark, input_path(config, source))
    if not fs.exists(folder):
        return DatedFolders(source, (), ())
    dates, stray = [], []
    for status in fs.listStatus(folder):
        name = status.getPath().getName()
        date = _folder_date(name) if status.isDirectory() else None
        if date is not None:
            dates.append(date)
        elif not name.startswith(("_", ".")):
            stray.append(f"{source}/{name}")
    return DatedFolders(source, tuple(sorted(dates)), tuple(sorted(stray)))


def _folder_date(name: str) -> datetime.date | None:
    """The date of a ``date=YYYY-MM-DD`` folder name, None for any other name."""
    if not DATE_FOLDER.fullmatch(name):
        return None
    try:
        return datetime.date.fromisoformat(name[len("date="):])
    except ValueError:  # date=2026-02-30
        return None
