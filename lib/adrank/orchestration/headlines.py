"""Each task's headline: the key figures of its result in a few words, on the task's "done" line.

A headline reads the fields of the typed result the task's job returned (the job modules
are imported for type checking only: the graph that names these functions stays light). A
metric that could not be computed (None, NaN) is "not available".
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from adrank.runtime.console import NOT_AVAILABLE

if TYPE_CHECKING:
    from adrank.embed.run import EmbeddedCatalog
    from adrank.recommend.run import Recommendations
    from adrank.runtime.runs import JobResult
    from adrank.sample.run import GeneratedData
    from adrank.tables.run import BuiltTables
    from adrank.train.run import TrainedStage

Headline = Callable[[Any], str]  # a task's result (the type its body returns) -> its headline


def figure(value: Any, digits: int) -> str:
    """A metric with ``digits`` decimals, or "not available" when it could not be computed (None, NaN)."""
    number = float(value) if isinstance(value, int | float) and not isinstance(value, bool) else math.nan
    return NOT_AVAILABLE if math.isnan(number) else f"{number:.{digits}f}"


def no_headline(result: JobResult) -> str:
    """No headline: the task's line just says it is done."""
    return ""


def generated(result: GeneratedData) -> str:
    """``<n> impressions, <n> SKUs``."""
    return f"{result.good_rows['click_log']} impressions, {result.good_rows['catalog']} SKUs"


def built(result: BuiltTables) -> str:
    """The rows read, kept and quarantined over every source."""
    rows = result.sources.values()
    return (f"{sum(r.input for r in rows)} rows in, {sum(r.good for r in rows)} good, "
            f"{sum(r.quarantined for r in rows)} quarantined")


def lineage(result: TrainedStage) -> str:
    """``; <mode>: <why>``: how the stage was trained (train.mode; empty when not recorded)."""
    mode, reason = result.figures.get("mode"), result.figures.get("mode_reason")
    return f"; {mode}: {reason}" if mode and reason else f"; {mode}" if mode else ""


def pairwise_trained(result: TrainedStage) -> str:
    """The model version and its held-out pairwise accuracy."""
    return f"model v{result.model_version}, pairwise accuracy {result.metrics['pairwise_accuracy']:.4f}{lineage(result)}"


def lr_trained(result: TrainedStage) -> str:
    """The model version and its held-out AUC."""
    return f"model v{result.model_version}, AUC {result.metrics['auc']:.4f}{lineage(result)}"


def joint_trained(result: TrainedStage) -> str:
    """The best module's AUC overall and on cold-start ads, each against the LR's."""
    best, lr = result.comparison[str(result.best_module)], result.comparison["lr"]
    return (f"best {result.best_module}: AUC {figure(best['auc'], 4)} (LR {figure(lr['auc'], 4)}), "
            f"cold start {figure(best.get('cold_auc'), 4)} (LR {figure(lr.get('cold_auc'), 4)}){lineage(result)}")


def embedded(result: EmbeddedCatalog) -> str:
    """How many SKUs this run embedded, of the catalog, and in which mode."""
    return f"{result.written.skus_embedded} of {result.skus_total} SKUs embedded ({result.plan.mode})"


def recommended(result: Recommendations) -> str:
    """The three held-out figures: similar-SKU precision, query recall and user hit rate at 10, and the run's mode."""
    found, plan = result.metrics, result.plan or {}
    mode = f"; {plan['mode']}: {plan.get('reason', '')}".rstrip(": ") if plan.get("mode") else ""
    return (f"similar P@10 {figure(found.get('similar_precision_at_10'), 3)}, query recall@10 "
            f"{figure(found.get('query_recall_at_10'), 3)}, user hit@10 {figure(found.get('user_hit_rate_at_10'), 3)}"
            f"{mode}")
