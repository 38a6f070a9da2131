"""Top-k cosine neighbours of request vectors among the catalog: exact (blocked) and inverted-file search.

Contract: :func:`nearest` maps a search over a frame of requests (a key, a ``vector`` and
an optional ``exclude`` array of sku_ids never to return) with ``mapInPandas``: each
Python worker memory-maps the catalog from a folder on ``storage.local`` (mounted at the
same place on every executor) and keeps, per block of at most ``query_block`` requests, a
running top k that it merges with each catalog block's scores, so a task holds at most
``query_block x catalog_block`` scores whatever the catalog's size, and the requests
spread over the cluster. Two catalogs (:class:`Catalog`):

* exact: a serving snapshot (``sku_ids.npy`` sorted, ``embeddings.npy``), read in blocks
  of ``catalog_block`` rows;
* inverted file (:mod:`adrank.recommend.index`): unit vectors sorted by cluster, with the
  clusters' centroids and offsets; each request searches its ``nprobe`` nearest clusters.

Scores are cosine similarities in float32; a request's result is its best ``k`` sku_ids,
best first (ties: the smaller sku_id), without the excluded ids; fewer when the catalog
(or the probed clusters) hold fewer. Pure numpy apart from :func:`nearest`.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

EXACT = "exact"
IVF = "ivf"
NEIGHBOURS_TYPE = "array<struct<sku_id:bigint,score:float>>"
_EMPTY_ID = -1


@dataclasses.dataclass(frozen=True, eq=False)
class Whitening:
    """A linear map fitted on the catalog's unit embeddings: ``(unit(x) - mean) @ matrix``, then length 1.

    PCA whitening (each principal direction scaled by ``variance ** -power / 2``) spreads
    the directions the embeddings crowd into; it is unsupervised (the catalog's own
    statistics), and applied alike to requests and catalog, so cosine stays symmetric.
    """

    mean: np.ndarray
    matrix: np.ndarray

    def apply(self, vectors: np.ndarray) -> np.ndarray:
        """Unit rows of the whitened ``vectors``."""
        return unit_rows((unit_rows(vectors) - self.mean) @ self.matrix)


class PartialSums:
    """``count``, ``sum(x)`` and ``sum(x x^T)`` of unit vectors, added block by block (float64)."""

    def __init__(self) -> None:
        self.count = 0
        self.total: np.ndarray = np.zeros(0)
        self.outer: np.ndarray = np.zeros((0, 0))

    def add(self, vectors: np.ndarray) -> None:
        """Adds the unit rows of raw ``vectors [b, d]``."""
        units = unit_rows(vectors).astype(np.float64)
        if not self.count:
            self.total, self.outer = np.zeros(units.shape[1]), np.zeros((units.shape[1],) * 2)
        self.count += len(units)
        self.total = self.total + units.sum(0)
        self.outer = self.outer + units.T @ units


def whitening_of_arrays(vectors: np.ndarray, power: float, block: int = 65_536) -> Whitening:
    """The whitening of raw ``vectors [n, d]`` (e.g. a memory-mapped snapshot), read in blocks."""
    sums = PartialSums()
    for start in range(0, len(vectors), block):
        sums.add(np.asarray(vectors[start:start + block]))
    return whitening_of(sums.count, sums.total, sums.outer, power)


def whitening_of(count: int, total: np.ndarray, outer: np.ndarray, power: float) -> Whitening:
    """The whitening of ``count`` unit vectors with ``sum(x)`` = ``total`` and ``sum(x x^T)`` = ``outer``."""
    mean = total / count
    covariance = outer / count - np.outer(mean, mean)
    variances, directions = np.linalg.eigh((covariance + covariance.T) / 2)
    floor = max(float(variances.max()), 1e-12) * 1e-6
    scale = np.maximum(variances, floor) ** (-power / 2)
    return Whitening(mean.astype(np.float32), (directions * scale).astype(np.float32))


@dataclasses.dataclass(frozen=True, eq=False)
class Catalog:
    """Where a search reads the catalog, and how (picklable: shipped to the Python workers).

    Attributes:
        method: :data:`EXACT` (``folder`` is a serving snapshot) or :data:`IVF` (an index,
            whose vectors are already prepared).
        folder: The local folder of the arrays.
        nprobe: Clusters searched per request (IVF only).
        whitening: Applied to requests (and, exact, to catalog blocks); None: plain cosine.
    """

    method: str
    folder: str
    nprobe: int = 1
    whitening: Whitening | None = None

    def prepare(self, vectors: np.ndarray) -> np.ndarray:
        """Raw vectors as the search compares them: whitened (if any) and of length 1."""
        return unit_rows(vectors) if self.whitening is None else self.whitening.apply(vectors)


@dataclasses.dataclass(frozen=True, eq=False)
class Always:
    """SKUs every request also scores, besides its nearest (e.g. the most popular ones).

    Attributes:
        ids: sku_ids ``[p]``, sorted ascending.
        vectors: Their unit vectors ``[p, d]``.
    """

    ids: np.ndarray
    vectors: np.ndarray


@dataclasses.dataclass(frozen=True)
class Limits:
    """How many results, and the block sizes that bound a task's memory."""

    k: int
    query_block: int = 512
    catalog_block: int = 8192


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """float32 rows scaled to length 1 (a zero row stays zero)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1.0).astype(np.float32)


class TopK:
    """The running best ``k`` (score, sku_id) of each of ``n`` requests."""

    def __init__(self, n: int, k: int) -> None:
        self.k = k
        self.scores = np.full((n, k), -np.inf, dtype=np.float32)
        self.ids = np.full((n, k), _EMPTY_ID, dtype=np.int64)

    def merge(self, rows: np.ndarray, scores: np.ndarray, block_ids: np.ndarray) -> None:
        """Merges the scores ``[len(rows), m]`` of the catalog ids ``block_ids [m]`` into ``rows``."""
        all_scores = np.concatenate([self.scores[rows], scores], axis=1)
        all_ids = np.concatenate([self.ids[rows], np.broadcast_to(block_ids, scores.shape)], axis=1)
        if all_scores.shape[1] > self.k:
            keep = np.argpartition(-all_scores, self.k - 1, axis=1)[:, :self.k]
            all_scores = np.take_along_axis(all_scores, keep, axis=1)
            all_ids = np.take_along_axis(all_ids, keep, axis=1)
        self.scores[rows], self.ids[rows] = all_scores, all_ids

    def results(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per request: ``(sku_ids, scores)`` best first, ties by the smaller id, empty slots dropped."""
        out = []
        for ids, scores in zip(self.ids, self.scores):
            found = np.isfinite(scores)
            ids, scores = ids[found], scores[found]
            order = np.lexsort((ids, -scores))
            out.append((ids[order], scores[order]))
        return out


def mask_excluded(scores: np.ndarray, excluded: Sequence[np.ndarray], block_ids: np.ndarray) -> None:
    """Sets ``scores[i, j]`` to -inf where ``block_ids[j]`` (sorted) is in ``excluded[i]`` (in place)."""
    lengths = np.fromiter((len(e) for e in excluded), dtype=np.int64, count=len(excluded))
    if not lengths.sum() or not len(block_ids):
        return
    rows = np.repeat(np.arange(len(excluded)), lengths)
    wanted = np.concatenate([np.asarray(e, dtype=np.int64) for e in excluded])
    positions = np.minimum(np.searchsorted(block_ids, wanted), len(block_ids) - 1)
    hit = block_ids[positions] == wanted
    scores[rows[hit], positions[hit]] = -np.inf


def exact_search(queries: np.ndarray, excluded: Sequence[np.ndarray], ids: np.ndarray, vectors: np.ndarray,
                 limits: Limits, prepare: Callable[[np.ndarray], np.ndarray] = unit_rows,
                 ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Every catalog block of ``ids [n]`` (sorted) / ``vectors [n, d]`` (``prepare``-d: unit by
    default) against unit ``queries [b, d]``."""
    top = TopK(len(queries), limits.k)
    every = np.arange(len(queries))
    for start in range(0, len(ids), limits.catalog_block):
        block_ids = np.asarray(ids[start:start + limits.catalog_block])
        scores = queries @ prepare(vectors[start:start + limits.catalog_block]).T
        mask_excluded(scores, excluded, block_ids)
        top.merge(every, scores, block_ids)
    return top.results()


@dataclasses.dataclass(frozen=True)
class InvertedFile:
    """An inverted-file index in memory (arrays may be memory-mapped).

    Attributes:
        centroids: Unit vectors ``[lists, d]``.
        offsets: ``[lists + 1]``: cluster ``c`` holds rows ``offsets[c]:offsets[c + 1]``.
        ids: sku_ids ``[n]``, sorted within each cluster.
        vectors: Unit vectors ``[n, d]``, in the same order.
    """

    centroids: np.ndarray
    offsets: np.ndarray
    ids: np.ndarray
    vectors: np.ndarray


def probed_clusters(queries: np.ndarray, centroids: np.ndarray, nprobe: int) -> np.ndarray:
    """``[b, nprobe]``: the clusters whose centroids are nearest each unit query."""
    nprobe = min(nprobe, len(centroids))
    scores = queries @ centroids.T
    return np.argpartition(-scores, nprobe - 1, axis=1)[:, :nprobe]


def ivf_search(queries: np.ndarray, excluded: Sequence[np.ndarray], index: InvertedFile, nprobe: int,
               limits: Limits) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each unit query against the members of its ``nprobe`` nearest clusters only."""
    top = TopK(len(queries), limits.k)
    probes = probed_clusters(queries, index.centroids, nprobe)
    for cluster in np.unique(probes):
        rows = np.flatnonzero((probes == cluster).any(axis=1))
        begin, end = int(index.offsets[cluster]), int(index.offsets[cluster + 1])
        for start in range(begin, end, limits.catalog_block):
            stop = min(end, start + limits.catalog_block)
            block_ids = np.asarray(index.ids[start:stop])
            scores = queries[rows] @ np.asarray(index.vectors[start:stop]).T
            mask_excluded(scores, [excluded[r] for r in rows], block_ids)
            top.merge(rows, scores, block_ids)
    return top.results()


@functools.lru_cache(maxsize=4)
def _open(method: str, folder_name: str) -> tuple[np.ndarray, np.ndarray] | InvertedFile:
    """The catalog's arrays, memory-mapped read-only (once per Python worker)."""
    folder = Path(folder_name)
    if method == EXACT:
        return (np.load(folder / "sku_ids.npy", mmap_mode="r"), np.load(folder / "embeddings.npy", mmap_mode="r"))
    return InvertedFile(*(np.load(folder / f"{name}.npy", mmap_mode="r")
                          for name in ("centroids", "offsets", "ids", "vectors")))


def search(catalog: Catalog, queries: np.ndarray, excluded: Sequence[np.ndarray],
           limits: Limits, always: Always | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """The top k of raw ``queries [b, d]`` (normalised here) in ``catalog``, block by block.

    With ``always`` (vectors prepared like the catalog's), each result also holds those SKUs
    (unless excluded), all by cosine, best first.
    """
    opened = _open(catalog.method, catalog.folder)
    out: list[tuple[np.ndarray, np.ndarray]] = []
    for start in range(0, len(queries), limits.query_block):
        units = catalog.prepare(queries[start:start + limits.query_block])
        part = excluded[start:start + limits.query_block]
        if isinstance(opened, InvertedFile):
            found = ivf_search(units, part, opened, catalog.nprobe, limits)
        else:
            found = exact_search(units, part, *opened, limits, catalog.prepare)
        out += found if always is None else with_always(found, units, part, always)
    return out


def with_always(found: list[tuple[np.ndarray, np.ndarray]], units: np.ndarray, excluded: Sequence[np.ndarray],
                always: Always) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each result joined with the ``always`` SKUs it lacks (their cosine to the unit query), best first."""
    scores = units @ always.vectors.T
    mask_excluded(scores, excluded, always.ids)
    out = []
    for (ids, best), row in zip(found, scores):
        keep = np.isfinite(row) & ~np.isin(always.ids, ids)
        ids, best = np.concatenate([ids, always.ids[keep]]), np.concatenate([best, row[keep]])
        order = np.lexsort((ids, -best))
        out.append((ids[order], best[order]))
    return out


def nearest(requests: DataFrame, key: str, catalog: Catalog, limits: Limits,
            always: Always | None = None) -> DataFrame:
    """``key, neighbours`` (top k ``sku_id, score``, best first; plus ``always``) of each request row.

    Args:
        requests: ``key``, ``vector`` (array<float>, not null) and optionally ``exclude``
            (array<long>: ids never returned, e.g. the SKU itself or what a user clicked).
        key: The column that names a request (kept as it is).
        catalog: Where the catalog is, and how to search it.
        limits: k and the block sizes.
        always: SKUs every result also holds (shipped to the workers: keep it small).
    """
    key_type = requests.schema[key].dataType.simpleString()
    exclude = F.col("exclude") if "exclude" in requests.columns else F.lit(None).cast("array<bigint>")
    frame = requests.select(key, F.col("vector").cast("array<float>").alias("vector"),
                            F.coalesce(exclude.cast("array<bigint>"), F.array().cast("array<bigint>")).alias("exclude"))
    found = frame.mapInPandas(functools.partial(_search_frames, catalog, limits, key, always),
                              f"{key} {key_type}, ids array<bigint>, scores array<float>")
    neighbours = F.zip_with("ids", "scores", lambda i, s: F.struct(i.alias("sku_id"), s.alias("score")))
    return found.select(key, neighbours.alias("neighbours"))


def _search_frames(catalog: Catalog, limits: Limits, key: str, always: Always | None,
                   frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    """mapInPandas body of :func:`nearest`."""
    for frame in frames:
        if frame.empty:
            continue
        queries = np.stack([np.asarray(v, dtype=np.float32) for v in frame["vector"]])
        excluded = [np.asarray(e, dtype=np.int64) for e in frame["exclude"]]
        results = search(catalog, queries, excluded, limits, always)
        yield pd.DataFrame({key: frame[key].to_numpy(), "ids": [ids for ids, _ in results],
                            "scores": [scores for _, scores in results]})


__all__ = ["EXACT", "IVF", "Always", "Catalog", "PartialSums", "Whitening", "whitening_of", "whitening_of_arrays", "InvertedFile", "Limits", "NEIGHBOURS_TYPE", "TopK", "exact_search",
           "ivf_search", "mask_excluded", "nearest", "probed_clusters", "search", "unit_rows", "with_always"]
