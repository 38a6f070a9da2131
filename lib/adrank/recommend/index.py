"""How the catalog is prepared for search: the whitening fitted on it, and the inverted-file index.

:func:`fit_whitening` fits the PCA whitening of the catalog's unit embeddings from
partial sums computed on the executors (the driver holds d x d numbers).

:func:`build_index` (the approximate search, on Spark ML's ``KMeans``) clusters the
prepared embeddings (``KMeans`` fitted on a sample of at most ``train_rows`` rows; the
centroids are normalised, so a request probes the
clusters of highest cosine; or takes the centroids a recommendation basis holds), assigns every SKU to its nearest centroid on the executors
(the same cosine rule the search probes with), and streams the rows sorted by (cluster,
sku_id), one range partition at a time, into memory-mapped arrays in a new folder under
``storage.local``: ``centroids.npy``, ``offsets.npy``, ``ids.npy``, ``vectors.npy`` (the
layout :class:`adrank.recommend.neighbours.InvertedFile` reads). The driver holds at most
two partitions of about :data:`PARTITION_BYTES` at a time, whatever the catalog's size.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from adrank.recommend.neighbours import IVF, Catalog, PartialSums, Whitening, unit_rows, whitening_of

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame

PARTITION_BYTES = 64 << 20
_ASSIGNED_DDL = "cluster int, sku_id bigint, vector array<float>"
_PACKED_DDL = "clusters binary, ids binary, vectors binary"
_SUMS_DDL = "count bigint, total binary, outer binary"


def default_lists(skus: int) -> int:
    """About sqrt(SKUs) clusters (at least 1)."""
    return max(1, round(math.sqrt(skus)))


def fit_centroids(frame: DataFrame, lists: int, train_rows: int, max_iterations: int, seed: int) -> np.ndarray:
    """Unit centroids ``[<= lists, d]`` of ``KMeans`` on unit ``vector`` rows (a sample of ``train_rows``)."""
    from pyspark.ml.clustering import KMeans
    from pyspark.ml.functions import array_to_vector
    from pyspark.sql import functions as F

    rows = frame.count()
    sample = frame if rows <= train_rows else frame.sample(fraction=train_rows / rows, seed=seed)
    features = sample.select(array_to_vector(F.col("vector")).alias("features"))
    model = KMeans(k=max(1, min(lists, rows)), seed=seed, maxIter=max_iterations).fit(features)
    return unit_rows(np.stack([np.asarray(c, dtype=np.float32) for c in model.clusterCenters()]))


def fit_whitening(embeddings: DataFrame, power: float) -> Whitening:
    """The PCA whitening of the unit ``embedding`` rows: partial sums on the executors, d x d on the driver."""
    parts = embeddings.select("embedding").mapInPandas(_partial_sums, _SUMS_DDL).collect()
    count = sum(int(p["count"]) for p in parts)
    if count == 0:
        raise ValueError("cannot fit a whitening on an empty catalog")
    total = np.sum([np.frombuffer(p["total"], dtype="<f8") for p in parts], axis=0)
    outer = np.sum([np.frombuffer(p["outer"], dtype="<f8") for p in parts], axis=0)
    return whitening_of(count, total, outer.reshape(len(total), len(total)), power)


def _partial_sums(frames: Iterable[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    sums = PartialSums()
    for frame in frames:
        if not frame.empty:
            sums.add(np.stack([np.asarray(v, dtype=np.float32) for v in frame["embedding"]]))
    if sums.count:
        yield pd.DataFrame({"count": [sums.count], "total": [sums.total.astype("<f8").tobytes()],
                            "outer": [sums.outer.astype("<f8").tobytes()]})


def prepared_vectors(embeddings: DataFrame, catalog: Catalog) -> DataFrame:
    """``sku_id, vector``: each embedding as ``catalog`` compares it (whitened, if so, and of length 1)."""
    return embeddings.select("sku_id", "embedding").mapInPandas(
        functools.partial(_prepare_frames, catalog), "sku_id bigint, vector array<float>")


def _prepare_frames(catalog: Catalog, frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    for frame in frames:
        if frame.empty:
            continue
        vectors = catalog.prepare(np.stack([np.asarray(v, dtype=np.float32) for v in frame["embedding"]]))
        yield pd.DataFrame({"sku_id": frame["sku_id"].to_numpy(), "vector": list(vectors)})


def assign(vectors: DataFrame, centroids: np.ndarray) -> DataFrame:
    """``cluster, sku_id, vector``: every unit vector with the cluster of its nearest centroid (cosine)."""
    return vectors.mapInPandas(functools.partial(_assign_frames, centroids), _ASSIGNED_DDL)


def _assign_frames(centroids: np.ndarray, frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    for frame in frames:
        if frame.empty:
            continue
        vectors = np.stack([np.asarray(v, dtype=np.float32) for v in frame["vector"]])
        clusters = np.argmax(vectors @ centroids.T, axis=1).astype(np.int32)
        yield pd.DataFrame({"cluster": clusters, "sku_id": frame["sku_id"].to_numpy(), "vector": frame["vector"]})


def build_index(embeddings: DataFrame, folder: Path, *, lists: int, train_rows: int, max_iterations: int,
                seed: int, whitening: Whitening | None = None,
                centroids: np.ndarray | None = None) -> tuple[dict[str, int], np.ndarray]:
    """Writes the index of ``embeddings`` (``sku_id, embedding``; whitened first, if given) into ``folder``,
    on the given unit ``centroids`` (a basis's) or on centroids fitted here.

    Returns:
        ``{"lists": clusters, "rows": SKUs, "dim": d, "largest_list": rows of the largest cluster,
        "centroids_fitted": 1 if fitted here else 0}`` and the centroids.
    """
    vectors = prepared_vectors(embeddings, Catalog(IVF, str(folder), whitening=whitening)).cache()
    try:
        rows = vectors.count()
        if rows == 0:
            raise ValueError("cannot build a search index of an empty catalog")
        fitted = centroids is None
        if centroids is None:
            centroids = fit_centroids(vectors, lists, train_rows, max_iterations, seed)
        dim = centroids.shape[1]
        folder.mkdir(parents=True, exist_ok=False)
        clusters = _write_sorted(assign(vectors, centroids), folder, rows, dim)
    finally:
        vectors.unpersist()
    offsets = np.searchsorted(clusters, np.arange(len(centroids) + 1)).astype(np.int64)
    np.save(folder / "centroids.npy", centroids)
    np.save(folder / "offsets.npy", offsets)
    return ({"lists": len(centroids), "rows": rows, "dim": dim, "largest_list": int(np.diff(offsets).max()),
             "centroids_fitted": int(fitted)}, centroids)


def _write_sorted(assigned: DataFrame, folder: Path, rows: int, dim: int) -> np.ndarray:
    """Streams ``assigned`` in (cluster, sku_id) order into ``ids.npy`` / ``vectors.npy``; the clusters."""
    partitions = max(1, math.ceil(rows * (12 + 4 * dim) / PARTITION_BYTES))
    ordered = assigned.repartitionByRange(partitions, "cluster", "sku_id").sortWithinPartitions("cluster", "sku_id")
    packed = ordered.mapInArrow(_pack, _PACKED_DDL).toLocalIterator(prefetchPartitions=True)
    ids = np.lib.format.open_memmap(folder / "ids.npy", mode="w+", dtype=np.int64, shape=(rows,))
    vectors = np.lib.format.open_memmap(folder / "vectors.npy", mode="w+", dtype=np.float32, shape=(rows, dim))
    clusters = np.empty(rows, dtype=np.int32)
    offset = 0
    for chunk in packed:
        chunk_ids = np.frombuffer(chunk["ids"], dtype="<i8")
        end = offset + len(chunk_ids)
        if end > rows:
            raise ValueError(f"cannot build the search index: more than the {rows} rows counted")
        ids[offset:end] = chunk_ids
        vectors[offset:end] = np.frombuffer(chunk["vectors"], dtype="<f4").reshape(len(chunk_ids), dim)
        clusters[offset:end] = np.frombuffer(chunk["clusters"], dtype="<i4")
        offset = end
    if offset != rows:
        raise ValueError(f"cannot build the search index: streamed {offset} rows, counted {rows}")
    ids.flush()
    vectors.flush()
    return clusters


def _pack(batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Executor side of :func:`_write_sorted`: each Arrow batch as three little-endian blobs."""
    import pyarrow as pa

    schema = pa.schema([("clusters", pa.binary()), ("ids", pa.binary()), ("vectors", pa.binary())])
    for batch in batches:
        if batch.num_rows == 0:
            continue
        clusters = batch.column(0).to_numpy().astype("<i4")
        ids = batch.column(1).to_numpy().astype("<i8")
        vectors = batch.column(2).flatten().to_numpy().astype("<f4")
        yield pa.RecordBatch.from_pylist(
            [{"clusters": clusters.tobytes(), "ids": ids.tobytes(), "vectors": vectors.tobytes()}], schema=schema)


__all__ = ["assign", "build_index", "default_lists", "fit_centroids", "fit_whitening", "prepared_vectors"]
