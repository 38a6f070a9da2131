"""Writing the generated sources, locally or to a Hadoop URI (small files: ``adrank.storage.delta.write_text_file``)."""
from __future__ import annotations

from adrank.core.layout import CATALOG, DATED_SOURCES
from adrank.sample.source import SourceData

PARQUET_SOURCES = (CATALOG,)


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
