"""The metrics both sides compute: AUC, log loss, pairwise accuracy (numpy only).

The ranks compute them on the held-out sample at every checkpoint (the training curve:
:mod:`adrank.train.ranks.holdout`), the driver on the held-out dates
(:mod:`adrank.train.evaluate`), so they live on the rank side and the driver imports them.

- :func:`auc`: the rank-based (Mann-Whitney) AUC with tied scores given their average
  rank, so a constant score has AUC 0.5. NaN when only one class is present.
- :func:`log_loss`: mean binary cross-entropy, probabilities clipped to ``[eps, 1 - eps]``.
- :func:`pair_metrics`: pairwise accuracy (the positive outranks the negative) and the
  logistic pairwise loss of similarity pairs.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

EPSILON = 1e-7


def auc(labels: ArrayLike, scores: ArrayLike) -> float:
    """Area under the ROC curve from ranks (ties get their average rank).

    Args:
        labels: 0/1 (or bool) array ``[n]``.
        scores: Array ``[n]``; higher means more likely positive.

    Returns:
        The AUC in [0, 1]; NaN when all labels are equal (or there are none).
    """
    labels = np.asarray(labels).astype(bool).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if labels.shape != scores.shape:
        raise ValueError(f"labels {labels.shape} and scores {scores.shape} differ in shape")
    positives = int(labels.sum())
    negatives = labels.size - positives
    if positives == 0 or negatives == 0:
        return float("nan")
    ranks = _average_ranks(scores)
    rank_sum = ranks[labels].sum()
    return float((rank_sum - positives * (positives + 1) / 2) / (positives * negatives))


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, tied values sharing the mean of their ranks."""
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], values.size]
    mean_rank = (starts + ends + 1) / 2.0  # mean of ranks start+1 .. end
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def log_loss(labels: ArrayLike, probabilities: ArrayLike, eps: float = EPSILON) -> float:
    """Mean binary cross-entropy; NaN for no rows."""
    labels = np.asarray(labels, dtype=np.float64).ravel()
    p = np.clip(np.asarray(probabilities, dtype=np.float64).ravel(), eps, 1 - eps)
    if labels.size == 0:
        return float("nan")
    return float(-np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p)))


def pair_metrics(sim_pos: ArrayLike, sim_neg: ArrayLike, scale: float = 10.0) -> dict[str, float]:
    """Accuracy (``sim_pos > sim_neg``) and logistic pairwise loss from similarities."""
    sim_pos = np.asarray(sim_pos, np.float64)
    sim_neg = np.asarray(sim_neg, np.float64)
    if sim_pos.size == 0:
        return {"pairwise_accuracy": float("nan"), "pairwise_loss": float("nan"), "pairs": 0}
    margin = -scale * (sim_pos - sim_neg)
    return {"pairwise_accuracy": float(np.mean(sim_pos > sim_neg)),
            "pairwise_loss": float(np.mean(np.logaddexp(0.0, margin))),
            "pairs": int(sim_pos.size)}


__all__ = ["EPSILON", "auc", "log_loss", "pair_metrics"]
