"""The report's first screen: the run's status, the best joint module against the LR and the
oracle, the recommendations against popularity and the versions changed since the previous run.

Pure: figures (a run's ``RunReport.as_dict()``) in, HTML out; each missing piece says "not available".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from adrank.report.html import as_number, dig, esc, na
from adrank.runtime.console import NOT_AVAILABLE


def header_html(figures: Mapping[str, Any], previous: Mapping[str, Any] | None = None) -> str:
    """The title (run id) and the headline."""
    return f"<h1>adrank run {esc(figures.get('run_id'))}</h1>" + headline_html(figures, previous)


# --------------------------------------------------------------------------------
# The headline: what a person asks first
# --------------------------------------------------------------------------------

HEADLINE_RECOMMENDATIONS = (("similar-SKU precision@10", "similar_precision_at_10"),
                            ("query recall@10", "query_recall_at_10"),
                            ("user hit rate@10", "user_hit_rate_at_10"))
# (the name a version is shown under, where a run's figures hold it: the first found wins)
VERSION_SOURCES: tuple[tuple[str, tuple[tuple[str, ...], ...]], ...] = (
    ("sku_images", (("sku_images", "version"),)),
    ("training_examples", (("training_examples", "version"), ("joint", "training_examples_version"),
                           ("lr", "training_examples_version"), ("pairwise", "training_examples_version"),
                           ("recommend", "versions", "training_examples"))),
    ("model pairwise", (("pairwise", "model_version"), ("embed_catalog", "model_version"),
                        ("recommend", "versions", "embedding_model"))),
    ("sku_embeddings", (("embed_catalog", "sku_embeddings_version"), ("recommend", "versions", "sku_embeddings"),
                        ("joint", "sku_embeddings_version"))),
    ("serving snapshot", (("embed_catalog", "serving_snapshot", "snapshot_version"),
                          ("recommend", "versions", "serving_snapshot"))),
    ("model lr", (("lr", "model_version"), ("joint", "lr_baseline", "model_version"))),
)


def headline_html(figures: Mapping[str, Any], previous: Mapping[str, Any] | None = None) -> str:
    """The first screen: status, best module against the LR and the oracle (overall and cold start),
    recommendations against popularity, and the versions changed since ``previous`` (the previous
    run's figures; None: no earlier run record). Each missing piece says "not available"."""
    rows = [("run", _status_html(figures))]
    if figures.get("error"):
        rows.append(("error", f'<span class="failed">{esc(figures["error"])}</span>'))
    rows += _ranking_rows(figures)
    rows.append(("recommendations", _recommendations_headline(figures)))
    rows.append(("since the previous run", _changes_html(figures, previous)))
    body = "".join(f"<tr><th>{esc(label)}</th><td>{cell}</td></tr>" for label, cell in rows)
    return f'<div id="headline"><table>{body}</table></div>'




def _status_html(figures: Mapping[str, Any]) -> str:
    status = figures.get("status")
    shown = (f'<span class="{"failed" if status == "failed" else "status"}">{esc(status)}</span>' if status
             else na("status"))
    total = as_number(dig(figures, "timings_s", "total"))
    text = f"{esc(figures.get('job') or 'run')} {shown}" + (f" in {esc(_duration(total))}" if total is not None else "")
    tasks = figures.get("tasks")
    if isinstance(tasks, Mapping) and tasks:
        counts: dict[str, int] = {}
        for entry in tasks.values():
            state = str(entry.get("status", "?")) if isinstance(entry, Mapping) else "?"
            counts[state] = counts.get(state, 0) + 1
        text += "; tasks: " + esc(", ".join(f"{n} {state}" for state, n in counts.items()))
    return text


def _duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s" if minutes else f"{rest} s"


def _reused(figures: Mapping[str, Any], task: str) -> str:
    """`` (from run X: current, not run again)`` when the task was skipped as current."""
    entry = dig(figures, "tasks", task)
    if isinstance(entry, Mapping) and entry.get("status") == "skipped" and entry.get("from_run"):
        return f" (from run {esc(entry['from_run'])}: current, not run again)"
    return ""


def _ranking_rows(figures: Mapping[str, Any]) -> list[tuple[str, str]]:
    comparison = dig(figures, "joint", "comparison")
    best = dig(figures, "joint", "best_module")
    if not isinstance(comparison, Mapping) or not isinstance(comparison.get(best), Mapping):
        return [("joint model", na("best module"))]
    reused = _reused(figures, "train_joint")
    return [("joint model", lift_html(comparison, str(best), "AUC", "auc") + reused),
            ("cold start", lift_html(comparison, str(best), "cold-start AUC", "cold_auc") + reused)]


def lift_html(comparison: Mapping[str, Any], best: str, label: str, key: str) -> str:
    """``best module dnn: cold-start AUC 0.655 vs LR 0.543 (+0.112), oracle 0.743: 56% of the possible lift``."""
    mine, lr, oracle = (as_number(row.get(key)) if isinstance(row, Mapping) else None
                        for row in (comparison.get(best), comparison.get("lr"), comparison.get("oracle")))
    head = f"best module {esc(best)}: {esc(label)}"
    if mine is None:
        return f"{head} {na()}"
    text = f"{head} {mine:.3f} vs " + (f"LR {lr:.3f} ({mine - lr:+.3f})" if lr is not None else na("LR"))
    if oracle is None:
        return f"{text}, {na('oracle')}"
    text += f", oracle {oracle:.3f}"
    if lr is not None and oracle > lr and mine >= lr:  # below the LR: the negative lift says it
        text += f": {(mine - lr) / (oracle - lr):.0%} of the possible lift"
    return text


def _recommendations_headline(figures: Mapping[str, Any]) -> str:
    metrics = dig(figures, "recommend", "metrics")
    if not isinstance(metrics, Mapping):
        return na()
    parts = []
    for label, name in HEADLINE_RECOMMENDATIONS:
        mine, base = as_number(metrics.get(name)), as_number(metrics.get(f"{name}_popularity"))
        if mine is None:
            parts.append(na(label))
        elif base is None:
            parts.append(f"{esc(label)} {mine:.3f} vs {na('popularity')}")
        else:
            parts.append(f"{esc(label)} {mine:.3f} vs popularity {base:.3f} ({mine - base:+.3f})")
    return "; ".join(parts) + _reused(figures, "recommend")


def run_versions(figures: Mapping[str, Any]) -> dict[str, int]:
    """The table and model versions a run read or wrote, by the name the headline shows them under."""
    found: dict[str, int] = {}
    for name, places in VERSION_SOURCES:
        for keys in places:
            value = dig(figures, *keys)
            if isinstance(value, int) and not isinstance(value, bool):
                found[name] = value
                break
    modules = dig(figures, "joint", "modules")
    for kind, module in (modules.items() if isinstance(modules, Mapping) else ()):
        version = dig(module, "model_version")
        if isinstance(version, int) and not isinstance(version, bool):
            found[f"model joint {kind}"] = version
    tables = dig(figures, "recommend", "tables")
    for name, written in (tables.items() if isinstance(tables, Mapping) else ()):
        version = dig(written, "version")
        if isinstance(version, int) and not isinstance(version, bool):
            found[str(name)] = version
    return found


def _changes_html(figures: Mapping[str, Any], previous: Mapping[str, Any] | None) -> str:
    if previous is None:
        return "no earlier run record: nothing to compare"
    now, before = run_versions(figures), run_versions(previous)
    which = (f"run {esc(previous.get('run_id'))} ({esc(previous.get('job'))}, "
             f"{esc(previous.get('status') or 'status ' + NOT_AVAILABLE)}): ")
    if not now:
        return which + na("versions of this run")
    changed = [f"{name} v{before[name]} \u2192 v{version}" for name, version in now.items()
               if name in before and before[name] != version]
    changed += [f"{name} v{version} (new)" for name, version in now.items() if name not in before]
    same = sum(1 for name, version in now.items() if before.get(name) == version)
    if not changed:
        return which + f"nothing changed ({same} versions the same)"
    return which + esc("; ".join(changed)) + (f"; {same} other versions the same" if same else "")
