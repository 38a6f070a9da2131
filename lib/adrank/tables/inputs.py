"""Reads of the raw inputs (docs/design.md "Input contracts"), as DataFrames of raw records.

Nothing is parsed here: JSON-lines sources come back one row per line (``value``) with
the date partition they came from (``input_date``), so that parsing, checks and
quarantine happen in the pure transforms of ``adrank.tables`` (clicklog, lr_features, snapshots, quarantine).
"""

from __future__ import annotations

import datetime
import posixpath
import re
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import unquote

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from adrank.core.layout import join_path
from adrank.storage import delta
from adrank.storage.delta import hadoop_conf, hadoop_path, jvm

DATE_FOLDER = re.compile(r"date=\d{4}-\d{2}-\d{2}")


CATALOG_CSV = "catalog.csv"
CATALOG_CSV_SCHEMA = "sku_id long, title string, image_path string, updated_at string, category_id int"
NANOS_AS_LONG = "spark.sql.legacy.parquet.nanosAsLong"  # TIMESTAMP(NANOS) columns read as longs
LISTING_PARALLELISM = "spark.sql.sources.parallelPartitionDiscovery.parallelism"
OPEN_COST = "spark.sql.files.openCostInBytes"  # what Spark counts per file when it packs files into tasks
_URI = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):(?://([^/]*))?(.*)$", re.DOTALL)  # scheme:[//authority]path
_GLOB = re.compile(r"([\\{}\[\]*?])")
_BINARY_FILE_DDL = "path string, modificationTime timestamp, length long, content binary"


def read_catalog(spark: SparkSession, folder: str, max_image_bytes: int) -> DataFrame:
    """The catalog as given: a Delta table, Parquet files, or a CSV beside image files.

    ``folder`` (``<inputs.root>/catalog/``) holds one of: a Delta table (``_delta_log``); Parquet with an
    ``image`` binary column (``updated_at`` of any Parquet timestamp type); or ``catalog.csv``
    (``sku_id, title, image_path, updated_at, category_id``) naming image files
    (:func:`_catalog_from_csv`; files above ``max_image_bytes`` are not read). Nothing is
    checked here (``adrank.tables.images`` does).
    """
    if _exists(spark, join_path(folder, "_delta_log")):
        return spark.read.format("delta").load(folder)
    if _exists(spark, join_path(folder, CATALOG_CSV)):
        return _catalog_from_csv(spark, folder, max_image_bytes)
    return _catalog_from_parquet(spark, folder)


def _catalog_from_csv(spark: SparkSession, folder: str, max_image_bytes: int) -> DataFrame:
    """CSV rows with their image files: ``updated_at`` as the text written, ``image_path`` as
    written, ``image_file_bytes`` (the size of the file it names, null if there is none) and
    ``image`` (null if there is no file or it is over ``max_image_bytes``: then it is not read).

    ``image_path`` is resolved like a link against the folder: relative to it, an absolute
    path on its file system, or any Hadoop URI (``file:/x``, ``s3a://b/x``...), inside the
    folder or not. Only what is named is read: each folder holding named files is listed
    once (not recursively), and only the named files are opened.
    """
    rows = spark.read.schema(CATALOG_CSV_SCHEMA).option("header", True).csv(join_path(folder, CATALOG_CSV))
    named = [r.image_path for r in rows.select("image_path").distinct().collect() if r.image_path]
    uris = _image_uris(spark, _qualified(spark, folder), named)
    files, sizes = _image_files(spark, _existing(spark, {u for u in uris.values() if u is not None}))
    located = spark.createDataFrame([(p, u, sizes[u]) for p, u in uris.items() if u in sizes],
                                    "image_path string, image_uri string, image_file_bytes long")
    contents = files.where(F.col("length") <= max_image_bytes).select(  # pushed down: larger files are not opened
        F.col("path").alias("image_uri"), F.col("content").alias("image"))
    joined = rows.join(F.broadcast(located), "image_path", "left").join(contents, "image_uri", "left")
    return joined.select("sku_id", "title", "image", "updated_at", "category_id", "image_path", "image_file_bytes")


def _image_uris(spark: SparkSession, folder_uri: str, named: list[str]) -> dict[str, str | None]:
    """Each ``image_path`` -> the file it names as a qualified URI (Hadoop's ``Path`` form, as
    Spark's file sources report paths), or None (a relative URI, no file system for it)."""
    prefixes: dict[tuple[str, str | None], str | None] = {}

    def prefix(scheme: str, authority: str | None) -> str | None:
        if (scheme, authority) not in prefixes:
            prefixes[scheme, authority] = _qualified_root(spark, scheme, authority)
        return prefixes[scheme, authority]

    base = _URI.match(folder_uri)
    if base is None:
        raise ValueError(f"{folder_uri!r} is not a qualified URI (scheme:path)")
    base_prefix, base_path = prefix(base[1], base[2]), base[3]
    uris: dict[str, str | None] = {}
    for given in named:
        uri = _URI.match(given)
        if uri:  # a scheme: a colon before any slash, as Hadoop's Path reads it
            root, path = (prefix(uri[1], uri[2]), uri[3]) if uri[3].startswith("/") else (None, "")
        else:
            root, path = base_prefix, given if given.startswith("/") else f"{base_path}/{given}"
        usable = root is not None and "\n" not in given
        uris[given] = f"{root}/{posixpath.normpath(path).lstrip('/')}" if usable else None
    return uris


def _qualified_root(spark: SparkSession, scheme: str, authority: str | None) -> str | None:
    """``scheme://authority`` as Hadoop qualifies it (``file:``, ``hdfs://nn:8020``), None if no
    file system serves it (an unknown scheme, a wrong authority)."""
    try:
        return _qualified(spark, f"{scheme}://{authority or ''}/").rstrip("/")
    except Exception as error:  # noqa: BLE001 - a Py4JJavaError: a bad URI is a bad row, anything else fails
        if any(kind in str(error) for kind in ("UnsupportedFileSystemException", "IllegalArgumentException")):
            return None
        raise


def _existing(spark: SparkSession, uris: set[str]) -> set[str]:
    """Those of ``uris`` that exist (files or folders): one non-recursive listing of each
    folder holding one."""
    gateway = jvm(spark)
    found: set[str] = set()
    for parent in sorted({uri[: uri.rindex("/") + 1] for uri in uris}):
        pattern, fs = hadoop_path(spark, _GLOB.sub(r"\\\1", parent) + "*")
        statuses = fs.globStatus(pattern)  # None if the folder does not exist
        if statuses:
            paths = gateway.org.apache.hadoop.fs.FileUtil.stat2Paths(statuses)
            found.update(gateway.scala.collection.immutable.ArraySeq.unsafeWrapArray(paths).mkString("\n").split("\n"))
    return found & uris


def _image_files(spark: SparkSession, uris: set[str]) -> tuple[DataFrame, dict[str, int]]:
    """``(binaryFile rows of the files among uris, {uri: size})``: a folder among them is
    dropped (its files are not what was named), as are names Spark hides (``_x``, ``.x``)."""
    files = _binary_files(spark, sorted(uris))
    with delta.session_conf(spark, {OPEN_COST: str(8 << 10)}):  # statuses only: no file is opened, pack them
        listed = {row.path: row.length for row in files.select("path", "length").collect()}
    sizes = {uri: size for uri, size in listed.items() if uri in uris}
    if len(sizes) < len(listed):  # a folder was named: list only the files
        files = _binary_files(spark, sorted(sizes))
    return files, sizes


def _binary_files(spark: SparkSession, uris: list[str]) -> DataFrame:
    """Spark's ``binaryFile`` source over exactly these existing files (no folder listed).

    The paths travel to the JVM as one string (py4j would make a call per list item) and are
    escaped, as the source reads each as a glob pattern.
    """
    if not uris:
        return spark.createDataFrame([], _BINARY_FILE_DDL)
    gateway = jvm(spark)
    text = "\n".join(_GLOB.sub(r"\\\1", uri) for uri in uris)
    paths = gateway.PythonUtils.toSeq(gateway.java.util.regex.Pattern.compile("\n").splitAsStream(text).toList())
    # Each path is a root of the file index: its listing job gets one task per path unless capped.
    with delta.session_conf(spark, {LISTING_PARALLELISM: str(spark.sparkContext.defaultParallelism)}):
        return DataFrame(spark._jsparkSession.read().format("binaryFile").load(paths), spark)


def _catalog_from_parquet(spark: SparkSession, folder: str) -> DataFrame:
    """Parquet whose ``updated_at`` may be of any Parquet timestamp type.

    Spark reads INT96 and INT64 millisecond or microsecond timestamps, but refuses
    nanoseconds (pandas' unit: ``pq.write_table`` with ``version="2.6"``). The schema is
    inferred with ``spark.sql.legacy.parquet.nanosAsLong`` (a nanosecond column then reads as
    its raw long, with or without that setting later), and each file's footer says which
    files hold nanoseconds: those are floored to microseconds. Files of both kinds are read
    apart and unioned.
    """
    with delta.session_conf(spark, {NANOS_AS_LONG: "true"}):
        frame = spark.read.parquet(folder)
    if "updated_at" not in frame.columns:
        return frame
    files = [unquote(f) for f in frame.inputFiles()]
    nanos = [f for f in files if _holds_nanoseconds(spark, f, "updated_at")]
    if not nanos:
        return frame
    if len(nanos) == len(files):
        return _nanoseconds_as_timestamp(frame)
    others = [f for f in files if f not in set(nanos)]
    with delta.session_conf(spark, {NANOS_AS_LONG: "true"}):
        parts = [spark.read.option("basePath", folder).parquet(*(_GLOB.sub(r"\\\1", f) for f in group))
                 for group in (nanos, others)]
    return _nanoseconds_as_timestamp(parts[0]).unionByName(
        parts[1].withColumn("updated_at", F.col("updated_at").cast("timestamp")), allowMissingColumns=True)


def _holds_nanoseconds(spark: SparkSession, uri: str, column: str) -> bool:
    """Whether the Parquet footer of ``uri`` types ``column`` as a nanosecond timestamp."""
    gateway = jvm(spark)
    path, _ = hadoop_path(spark, uri)
    hadoop_file = gateway.org.apache.parquet.hadoop.util.HadoopInputFile.fromPath(path, hadoop_conf(spark))
    reader = gateway.org.apache.parquet.hadoop.ParquetFileReader.open(hadoop_file)
    try:
        schema = reader.getFooter().getFileMetaData().getSchema()
        return bool(schema.containsField(column)) and "TIMESTAMP(NANOS" in schema.getType(column).toString()
    finally:
        reader.close()


def _nanoseconds_as_timestamp(frame: DataFrame) -> DataFrame:
    """``updated_at`` nanoseconds since the epoch (a long) as a timestamp, floored to microseconds."""
    return frame.withColumn("updated_at", F.expr("timestamp_micros((updated_at - pmod(updated_at, 1000)) div 1000)"))


def _qualified(spark: SparkSession, uri: str) -> str:
    """The fully qualified form of a path, as Spark's file sources report it (``file:/x``)."""
    path, fs = hadoop_path(spark, uri)
    return fs.makeQualified(path).toString()


def _exists(spark: SparkSession, uri: str) -> bool:
    path, fs = hadoop_path(spark, uri)
    return fs.exists(path)


def read_dated_lines(spark: SparkSession, root: str, dates: Sequence[datetime.date]) -> DataFrame:
    """Lines of the ``<root>/date=YYYY-MM-DD/`` folders of ``dates``, with ``input_date``.

    ``root`` is a dated source's folder (``<inputs.root>/<source>``).

    Only those folders are listed and read (never the whole history); a date without a
    folder contributes no line (the build's plan decides whether that is allowed).
    """
    folders = [join_path(root, date_folder_name(d)) for d in sorted(set(dates))]
    folders = [f for f in folders if _exists(spark, f)]
    if not folders:
        return spark.createDataFrame([], "value string, input_date date")
    lines = spark.read.option("basePath", root).text(folders)
    return lines.withColumn("input_date", F.col("date").cast("date")).drop("date")


def read_undated_lines(spark: SparkSession, folder: str) -> DataFrame:
    """Lines of an undated JSON-lines source's folder (snapshots), with a null ``input_date``."""
    lines = spark.read.text(folder)
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


def list_dated_folders(spark: SparkSession, root: str, source: str) -> DatedFolders:
    """Lists a dated source's folder ``root`` (``<inputs.root>/<source>/``); a missing folder holds no date."""
    folder, fs = hadoop_path(spark, root)
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
