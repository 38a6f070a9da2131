"""Offline evaluation of the trained models (numpy + TensorFlow; no Spark, no files).

Stage 1 (pairwise CNN):

- :func:`evaluate_pairs`: pairwise accuracy (the positive outranks the negative) and
  loss on held-out triplet batches (the integrator passes batches of the last
  ``train.holdout_days`` days; :func:`split_holdout_dates` picks those days).
- :func:`precision_at_k` / :func:`catalog_precision`: embed every catalog image with
  the model's ``sku_embedding``, find each SKU's ``k`` nearest other SKUs by cosine
  similarity, and average the fraction of them that share its ``category_id``. SKUs
  without a category (negative or NaN) are left out, as queries and as neighbours.

LR:

- :func:`auc` and :func:`log_loss` (from :mod:`adrank.train.ranks.metrics`, which the
  ranks share for the training curve).
- :func:`lr_metrics` / :func:`evaluate_lr`: both overall and on cold-start
  impressions: rows flagged ``is_cold_start_ad``, or whose ``ad_sku_id`` never
  appeared in training (:func:`cold_start_mask`).

Every function returns a dict of plain floats (and ints for counts).
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np
from numpy.typing import ArrayLike

from adrank.train.ranks.metrics import auc, log_loss, pair_metrics

DEFAULT_K = 10
Batch = Mapping[str, ArrayLike]  # numpy arrays or tensors, by column


# --------------------------------------------------------------------------------
# Ranking metrics on arrays
# --------------------------------------------------------------------------------


def cold_start_mask(is_cold_start_ad: ArrayLike | None = None, ad_sku_ids: ArrayLike | None = None,
                    seen_ad_skus: Iterable[int] | None = None) -> np.ndarray:
    """Rows that are cold-start impressions: flagged, or an ad SKU unseen in training.

    Args:
        is_cold_start_ad: Bool array ``[n]`` (the ``training_examples`` column) or None.
        ad_sku_ids: Int array ``[n]`` or None.
        seen_ad_skus: Ad SKU ids that occur in the training rows; None skips that test.
    """
    if is_cold_start_ad is None and ad_sku_ids is None:
        raise ValueError("cold_start_mask needs is_cold_start_ad or ad_sku_ids")
    n = len(np.asarray(is_cold_start_ad if is_cold_start_ad is not None else ad_sku_ids))
    mask = np.zeros(n, dtype=bool)
    if is_cold_start_ad is not None:
        mask |= np.asarray(is_cold_start_ad).astype(bool).ravel()
    if ad_sku_ids is not None and seen_ad_skus is not None:
        seen = np.fromiter(seen_ad_skus, dtype=np.int64)
        mask |= ~np.isin(np.asarray(ad_sku_ids, dtype=np.int64).ravel(), seen)
    return mask


def lr_metrics(labels: ArrayLike, probabilities: ArrayLike, cold: ArrayLike | None = None) -> dict[str, float]:
    """AUC and log loss, overall and on the ``cold`` rows.

    Returns:
        ``auc``, ``log_loss``, ``rows``, ``cold_auc``, ``cold_log_loss``, ``cold_rows``
        (cold figures NaN when there are no cold rows or no ``cold`` mask).
    """
    labels = np.asarray(labels).ravel()
    probabilities = np.asarray(probabilities, dtype=np.float64).ravel()
    result = {"auc": auc(labels, probabilities), "log_loss": log_loss(labels, probabilities),
              "rows": int(labels.size)}
    cold = np.zeros(labels.size, bool) if cold is None else np.asarray(cold, bool).ravel()
    result.update({"cold_auc": auc(labels[cold], probabilities[cold]) if cold.any() else float("nan"),
                   "cold_log_loss": log_loss(labels[cold], probabilities[cold]),
                   "cold_rows": int(cold.sum())})
    return result


def ranking_metrics(labels: ArrayLike, probabilities: ArrayLike, cold: ArrayLike | None = None,
                    pages: ArrayLike | None = None) -> dict[str, float | int]:
    """:func:`lr_metrics` plus, with ``pages`` (page names per row), ``<page>_auc``,
    ``<page>_log_loss`` and ``<page>_rows`` for every page of ``adrank.core.layout.PAGES``
    (NaN when a page has no rows or one class)."""
    from adrank.core.layout import PAGES

    labels = np.asarray(labels).ravel()
    probabilities = np.asarray(probabilities, dtype=np.float64).ravel()
    result: dict[str, float | int] = dict(lr_metrics(labels, probabilities, cold))
    if pages is None:
        return result
    names = np.asarray(pages, dtype=object).ravel()
    for page in PAGES:
        rows = names == page
        result.update({f"{page}_auc": auc(labels[rows], probabilities[rows]) if rows.any() else float("nan"),
                       f"{page}_log_loss": log_loss(labels[rows], probabilities[rows]),
                       f"{page}_rows": int(rows.sum())})
    return result


def evaluate_lr(score_fn: Callable[[Batch], ArrayLike], batches: Iterable[Batch],
                seen_ad_skus: Iterable[int] | None = None) -> dict[str, float]:
    """Scores held-out example batches and computes :func:`lr_metrics`.

    Args:
        score_fn: Batch -> click probabilities ``[B]`` (e.g. ``lambda b:
            tf.sigmoid(lr_model(b, training=False))``, or the ``lr_score`` signature).
        batches: Dicts with ``sparse_ids``, ``num_sparse_ids``, ``label`` and
            optionally ``is_cold_start_ad`` / ``ad_sku_id`` (for the cold figures).
        seen_ad_skus: Ad SKUs of the training rows (for "never seen" cold start).
    """
    seen = None if seen_ad_skus is None else np.fromiter(seen_ad_skus, dtype=np.int64)
    labels, probabilities, cold = [], [], []
    for batch in batches:
        labels.append(_numpy(batch["label"]).ravel())
        probabilities.append(_numpy(score_fn(batch)).ravel())
        flags = batch.get("is_cold_start_ad")
        ids = batch.get("ad_sku_id")
        if flags is None and ids is None:
            cold.append(np.zeros(labels[-1].size, bool))
        else:
            cold.append(cold_start_mask(None if flags is None else _numpy(flags),
                                        None if ids is None else _numpy(ids), seen))
    if not labels:
        return lr_metrics(np.zeros(0), np.zeros(0))
    return lr_metrics(np.concatenate(labels), np.concatenate(probabilities), np.concatenate(cold))


# --------------------------------------------------------------------------------
# Stage 1: pairs and the catalog
# --------------------------------------------------------------------------------


def evaluate_pairs(model: Callable[..., tuple[ArrayLike, ArrayLike]], batches: Iterable[Batch],
                   scale: float = 10.0) -> dict[str, float]:
    """Pairwise accuracy and loss of a PairwiseModel on held-out triplet batches.

    Args:
        model: Called as ``model(batch, training=False) -> (sim_pos, sim_neg)``.
        batches: Triplet batches (``context_image`` or ``query``, ``pos_image``,
            ``neg_image``), detail and search mixed freely.
        scale: The loss's similarity scale (as in training).

    Returns:
        ``pairwise_accuracy`` (ties count as wrong), ``pairwise_loss``, ``pairs``.
    """
    positives, negatives = [], []
    for batch in batches:
        sim_pos, sim_neg = model(batch, training=False)
        positives.append(_numpy(sim_pos).ravel())
        negatives.append(_numpy(sim_neg).ravel())
    return pair_metrics(np.concatenate(positives) if positives else np.zeros(0),
                        np.concatenate(negatives) if negatives else np.zeros(0), scale)


def precision_at_k(embeddings: ArrayLike, categories: ArrayLike, k: int = DEFAULT_K) -> dict[str, float]:
    """Mean fraction of each SKU's ``k`` cosine nearest neighbours in its category.

    The SKU itself is never its own neighbour; with fewer than ``k + 1`` SKUs, all
    the others are the neighbours. Rows whose category is negative or NaN are left
    out. Exact (blocked brute force): fine for catalogs up to some 10^5 SKUs.

    Returns:
        ``precision_at_<k>`` (NaN for fewer than 2 SKUs), ``skus``, ``k``.
    """
    embeddings = np.asarray(embeddings, dtype=np.float32)
    categories = np.asarray(categories, dtype=np.float64).ravel()
    keep = np.isfinite(categories) & (categories >= 0)
    vectors, labels = embeddings[keep], categories[keep]
    n = len(labels)
    name = f"precision_at_{k}"
    if n < 2:
        return {name: float("nan"), "skus": n, "k": k}
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    vectors = vectors / np.maximum(norms, 1e-12)
    neighbours = min(k, n - 1)
    hits = 0.0
    block = 1024
    for begin in range(0, n, block):
        sims = vectors[begin:begin + block] @ vectors.T
        rows = np.arange(begin, min(begin + block, n))
        sims[rows - begin, rows] = -np.inf
        top = np.argpartition(-sims, neighbours - 1, axis=1)[:, :neighbours]
        hits += float((labels[top] == labels[rows, None]).mean(axis=1).sum())
    return {name: hits / n, "skus": n, "k": k}


def catalog_precision(embed_fn: Callable[[ArrayLike], ArrayLike], batches: Iterable[Batch],
                      k: int = DEFAULT_K) -> dict[str, float]:
    """Embeds catalog batches and computes :func:`precision_at_k`.

    Args:
        embed_fn: uint8 images ``[B, S, S, 3]`` -> embeddings ``[B, D]`` (e.g.
            ``model.embed_sku`` or ``lambda x: loaded.signatures["sku_embedding"](
            image=x)["embedding"]``).
        batches: Dicts with ``image`` and ``category_id``.
        k: Neighbours per SKU.
    """
    embeddings, categories = [], []
    for batch in batches:
        embeddings.append(_numpy(embed_fn(batch["image"])))
        categories.append(_numpy(batch["category_id"]).astype(np.float64).ravel())
    if not embeddings:
        return precision_at_k(np.zeros((0, 1)), np.zeros(0), k)
    return precision_at_k(np.concatenate(embeddings), np.concatenate(categories), k)


def split_holdout_dates(dates: Sequence[datetime.date | str],
                        holdout_days: int) -> tuple[list[datetime.date], list[datetime.date]]:
    """(training dates, held-out dates): the last ``holdout_days`` distinct dates are held out.

    Dates may be ``datetime.date`` or ISO strings; at least one date stays for training.
    """
    distinct = sorted({d if isinstance(d, datetime.date) else datetime.date.fromisoformat(str(d))
                       for d in dates})
    held = max(0, min(holdout_days, len(distinct) - 1))
    cut = len(distinct) - held
    return distinct[:cut], distinct[cut:]


def evaluate_ranking(score_fn: Callable[[Batch], ArrayLike], batches: Iterable[Batch],
                     seen_ad_skus: Iterable[int]) -> dict[str, float | int]:
    """Scores held-out batches and computes :func:`ranking_metrics` (overall, cold start, per page).

    Cold start is :func:`cold_start_mask` of the batches' ``is_cold_start_ad`` and
    ``ad_sku_id`` against ``seen_ad_skus`` (the same rule for every model); pages are the
    batches' ``page_name``.
    """
    seen = np.fromiter(seen_ad_skus, dtype=np.int64)
    labels, probabilities, cold, pages = [], [], [], []
    for batch in batches:
        labels.append(_numpy(batch["label"]).ravel())
        probabilities.append(_numpy(score_fn(batch)).ravel())
        cold.append(cold_start_mask(_numpy(batch["is_cold_start_ad"]), _numpy(batch["ad_sku_id"]), seen))
        pages.append(np.asarray(batch["page_name"], dtype=object))
    if not labels:
        return ranking_metrics(np.zeros(0), np.zeros(0), np.zeros(0, bool), np.zeros(0, object))
    return ranking_metrics(np.concatenate(labels), np.concatenate(probabilities), np.concatenate(cold),
                           np.concatenate(pages))


def _numpy(value: object) -> np.ndarray:
    """Tensors (anything with ``.numpy()``) and array-likes -> numpy."""
    return np.asarray(value.numpy() if hasattr(value, "numpy") else value)


__all__ = ["auc", "catalog_precision", "cold_start_mask", "evaluate_lr", "evaluate_pairs", "evaluate_ranking",
           "log_loss", "lr_metrics", "pair_metrics", "precision_at_k", "ranking_metrics", "split_holdout_dates"]
