"""Query to SKU: the queries to answer, and an ad-hoc query answered from the serving snapshot.

:func:`window_queries` is a pure transform (the distinct queries of the search
impressions in a time window). :func:`similar_to_query` is the library call for one
query string: the registered stage-1 query tower behind the current serving snapshot
embeds it in this process, and an exact search (plain cosine) over the memory-mapped
snapshot answers.
"""

from __future__ import annotations

import numpy as np
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from adrank.context.towers import embed_query_texts
from adrank.core import layout
from adrank.core.config import Config
from adrank.core.errors import InputError
from adrank.recommend.neighbours import EXACT, Catalog, Limits, search


def window_queries(examples: DataFrame, start: str, end: str) -> DataFrame:
    """``query``: the distinct non-empty queries of search impressions with ``start <= ts < end``."""
    in_window = (F.col("ts") >= F.to_timestamp(F.lit(start))) & (F.col("ts") < F.to_timestamp(F.lit(end)))
    searches = examples.where((F.col("page") == layout.SEARCH) & in_window & (F.col("query") != ""))
    return searches.select("query").where(F.col("query").isNotNull()).distinct()


def similar_to_query(config: Config, query: str, k: int | None = None) -> list[tuple[int, float]]:
    """The top ``k`` (default ``recommend.k``) ``(sku_id, cosine)`` for ``query``, best first.

    Reads the current serving snapshot and the stage-1 model version it was made with
    (the registry); no Spark. Plain cosine, as the job's query candidates (the job then
    re-ranks them with the popularity of its run). Raises InputError (one line) if either
    is missing.
    """
    from adrank.embed.store import serving_snapshot
    from adrank.train.registry import version_path

    try:
        snapshot = serving_snapshot(layout.serving_root(config))
        model_path, _ = version_path(layout.registry_root(config), layout.PAIRWISE,
                                     int(snapshot.manifest["model_version"]))
    except FileNotFoundError as error:
        raise InputError(f"cannot answer a query: {error} (run embed_catalog first)") from None
    vector = embed_query_texts(model_path, [query])
    limits = Limits(k or config.recommend.k, config.recommend.query_block, config.recommend.catalog_block)
    [(ids, scores)] = search(Catalog(EXACT, snapshot.path), vector, [np.zeros(0, dtype=np.int64)], limits)
    return [(int(i), float(s)) for i, s in zip(ids, scores)]


__all__ = ["similar_to_query", "window_queries"]
