"""Writing the generated sources and small driver-side files, locally or to a Hadoop URI."""
from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

from pyspark.sql import SparkSession

from adrank.sample.source import SourceData

PARQUET_SOURCES = ("catalog",)
DATED_SOURCES = ("click_log", "lr_features")


def write_source(name: str, source: SourceData, path: str) -> None:
    """Writes one source, replacing what is at ``path``.

    The catalog is Parquet; the other sources are JSON-lines text, the click log and
    the LR features in ``date=YYYY-MM-DD`` folders.

    Args:
        name: The source name.
        source: The rows.
        path: Local path or Hadoop URI of the source's folder.
    """
    writer = source.frame.write.mode("overwrite")
    if name in PARQUET_SOURCES:
        writer.parquet(path)
    elif name in DATED_SOURCES:
        writer.partitionBy("date").text(path)
    else:
        writer.text(path)


def write_text_file(spark: SparkSession, path: str, text: str) -> None:
    """Writes a small UTF-8 file from the driver, replacing it.

    A path without a scheme is written with Python; a URI (``s3a://``, ``hdfs://``,
    ``file:``) through the Hadoop FileSystem of the session's JVM.

    Args:
        spark: The session (its Hadoop configuration holds the credentials).
        path: Local path or Hadoop URI.
        text: The content.
    """
    if not urlparse(path).scheme:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text, encoding="utf-8")
        return
    hadoop_path = spark._jvm.org.apache.hadoop.fs.Path(path)
    stream = hadoop_path.getFileSystem(spark._jsc.hadoopConfiguration()).create(hadoop_path, True)
    try:
        stream.write(bytearray(text.encode("utf-8")))
    finally:
        stream.close()
