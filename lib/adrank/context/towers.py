"""The registered stage-1 query tower over a DataFrame of queries, and over one query in process.

Contract: :func:`query_vectors` maps the ``query_embedding`` signature of a registered
stage-1 SavedModel over the distinct non-empty queries of a frame (a ``mapInPandas``;
TensorFlow is imported inside the Python workers only, and the model is loaded once per
worker). :func:`embed_query_texts` is the same call in this process (an ad-hoc query).
Every call runs the tower on batches of exactly ``QUERY_BATCH`` queries (the last one padded
with empty strings): TensorFlow's CPU kernels round a row differently with the batch's
shape (seen: 1 ulp on a third of the queries at batch 1 or 7), so a fixed shape makes a
query's vector the same bit for bit however Spark partitions or orders the queries, and
the same in process as in a Spark job.
Shared by stage 3 (the search page's context) and ``recommend`` (query to SKU); a frame
module: pyspark and numpy only at import.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

QUERY_VECTORS_DDL = "query string, embedding array<float>"
QUERY_BATCH = 256
SIGNATURE = "query_embedding"


def query_vectors(queries: DataFrame, model_path: str) -> DataFrame:
    """``(query, embedding)`` of each distinct non-empty ``query`` with the SavedModel's query tower."""
    distinct = queries.select("query").where(F.col("query").isNotNull() & (F.col("query") != "")).distinct()
    return distinct.mapInPandas(functools.partial(_embed_queries, model_path), QUERY_VECTORS_DDL)


def embed_query_texts(model_path: str, queries: Sequence[str]) -> np.ndarray:
    """float32 ``[len(queries), D]``: the query tower of the SavedModel at ``model_path`` (in process)."""
    texts = list(queries)
    embed = _query_embedder(model_path)
    batches = [fixed_shape_batch(embed, texts[start:start + QUERY_BATCH]) for start in range(0, len(texts), QUERY_BATCH)]
    return np.concatenate(batches) if batches else np.zeros((0, 0), np.float32)


def fixed_shape_batch(embed, queries: list[str]) -> np.ndarray:  # noqa: ANN001 - a TensorFlow function
    """float32 vectors of up to ``QUERY_BATCH`` queries, run as one batch of exactly ``QUERY_BATCH``."""
    padded = queries + [""] * (QUERY_BATCH - len(queries))
    return np.asarray(embed(padded), dtype=np.float32)[:len(queries)]


def _embed_queries(model_path: str, frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    """mapInPandas body: the ``query_embedding`` signature over fixed-shape batches of queries."""
    embed = _query_embedder(model_path)
    for frame in frames:
        for start in range(0, len(frame), QUERY_BATCH):
            queries = frame["query"].iloc[start:start + QUERY_BATCH].tolist()
            yield pd.DataFrame({"query": queries, "embedding": list(fixed_shape_batch(embed, queries))})


@functools.lru_cache(maxsize=2)
def _query_embedder(model_path: str):  # noqa: ANN202 - a TensorFlow function
    """The query tower of a registered SavedModel, loaded once per Python worker."""
    import tensorflow as tf

    signature = tf.saved_model.load(model_path).signatures[SIGNATURE]
    return lambda queries: signature(query=tf.constant(queries, tf.string))["embedding"].numpy()


__all__ = ["QUERY_BATCH", "QUERY_VECTORS_DDL", "SIGNATURE", "embed_query_texts", "fixed_shape_batch", "query_vectors"]
