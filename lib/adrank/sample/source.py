"""What each generated source hands to the writer: its rows and its figures."""
from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import DataFrame


@dataclass(frozen=True)
class SourceData:
    """One raw input source, good and deliberately broken rows together.

    Attributes:
        frame: All rows to write. JSON-lines sources have a ``value`` string column
            (one line each) and, when partitioned by day, a ``date`` column.
        good_rows: How many rows keep the input contract.
        broken_rows: How many rows break it, by kind.
    """

    frame: DataFrame
    good_rows: int
    broken_rows: dict[str, int]
