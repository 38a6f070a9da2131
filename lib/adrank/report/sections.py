"""The report's sections after the headline: the joint comparison, training, embeddings,
recommendations and the step timings, each from its part of the run's figures.

Pure: figures in, HTML out. A section whose figures are missing says "not available".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from adrank.report.html import (
    COMPARISON_COLUMNS,
    MISSING,
    MODELS,
    RECOMMEND_METRICS,
    as_number,
    esc,
    fmt_count,
    fmt_metric,
    fmt_seconds,
    fmt_value,
    image,
    not_available,
    section,
    section_figures,
    table,
    versions_line,
)


def timings_html(figures: Mapping[str, Any]) -> str:
    """The step timings (the report's last section)."""
    timings = figures.get("timings_s")
    if not isinstance(timings, Mapping) or not timings:
        return section("Timings", not_available("timings"), "timings-section")
    return section("Timings", table(["step", "seconds"], [[k, fmt_seconds(v)] for k, v in timings.items()],
                                    table_id="timings"), "timings-section")


def comparison_rows(comparison: Mapping[str, Any]) -> list[list[str]]:
    """The joint comparison as formatted cells: one row per model, "-" for a model without figures."""
    names = [m for m in MODELS if m in comparison] + [m for m in comparison if m not in MODELS]
    rows = []
    for name in names:
        row = comparison[name]
        if not isinstance(row, Mapping):
            rows.append([name, *[MISSING] * len(COMPARISON_COLUMNS)])
            continue
        rows.append([name, *(fmt_metric(row.get(key)) if kind == "metric" else fmt_count(row.get(key))
                             for _, key, kind in COMPARISON_COLUMNS)])
    return rows


def joint_html(figures: Mapping[str, Any]) -> str:
    """Stage 3: the comparison table of every model on the held-out dates, with its versions."""
    joint = section_figures(figures, "joint")
    comparison = joint.get("comparison") if joint else None
    if not joint or not isinstance(comparison, Mapping) or not comparison:
        return section("Joint model: comparison on the held-out dates", not_available("comparison"), "joint")
    modules = joint.get("modules") if isinstance(joint.get("modules"), Mapping) else {}
    versions = {"training_examples": joint.get("training_examples_version"),
                "sku_embeddings": joint.get("sku_embeddings_version"),
                "embedding_model": joint.get("embedding_model_version"),
                **{f"{kind} model": (m or {}).get("model_version") for kind, m in (modules or {}).items()},
                "held-out dates": joint.get("holdout_dates")}
    header = ["model", *(title for title, _, _ in COMPARISON_COLUMNS)]
    missing = "".join(not_available(f"{name} row") for name in ("lr", "oracle")
                      if not isinstance(comparison.get(name), Mapping))
    body = (f"<p>best module: {esc(joint.get('best_module'))}</p>"
            + table(header, comparison_rows(comparison), table_id="comparison") + missing + versions_line(versions))
    return section("Joint model: comparison on the held-out dates", body, "joint")


def training_html(figures: Mapping[str, Any], plots: Mapping[str, str]) -> str:
    """Training curves (loss by step) of stage 1, the LR and the joint modules, with their versions."""
    parts = []
    for stage, title in (("pairwise", "Stage 1: pairwise CNN"), ("lr", "LR baseline"),
                         ("joint", "Stage 3: joint modules")):
        stage_figures = section_figures(figures, stage) or {}
        alt = f"{stage} training loss by step and held-out metric at each checkpoint"
        parts.append(f"<h3>{esc(title)}</h3>" + image(plots.get(stage), alt, f"{stage} training curve"))
        parts.append(versions_line(_training_versions(stage, stage_figures)))
    return section("Training curves", "".join(parts), "training")


def _training_versions(stage: str, figures: Mapping[str, Any]) -> dict[str, Any]:
    versions: dict[str, Any] = {"training_examples": figures.get("training_examples_version")}
    if stage == "joint":
        modules = figures.get("modules") if isinstance(figures.get("modules"), Mapping) else {}
        versions.update({f"{kind} model": (m or {}).get("model_version") for kind, m in (modules or {}).items()})
    else:
        versions["model"] = figures.get("model_version")
    return versions


def embed_html(figures: Mapping[str, Any]) -> str:
    """Stage 2: which model embedded the catalog, the ``sku_embeddings`` version and the serving snapshot."""
    embed = section_figures(figures, "embed_catalog")
    if embed is None:
        return section("Catalog embeddings", not_available("embed_catalog"), "embed")
    snapshot = embed.get("serving_snapshot") if isinstance(embed.get("serving_snapshot"), Mapping) else {}
    rows = [["embedding model", fmt_value(embed.get("model_version"))],
            ["sku_embeddings version", fmt_value(embed.get("sku_embeddings_version"))],
            ["serving snapshot version", fmt_value((snapshot or {}).get("snapshot_version"))],
            ["serving snapshot rows", fmt_count((snapshot or {}).get("rows"))],
            ["embedding dim", fmt_count((snapshot or {}).get("dim"))]]
    return section("Catalog embeddings", table(["figure", "value"], rows, table_id="embed"), "embed")


def recommend_metric_rows(metrics: Mapping[str, Any]) -> list[list[str]]:
    """Each recommendation metric against the popularity baseline (and what it was evaluated on)."""
    rows = []
    for title, ours, embedding, popularity, evaluated in RECOMMEND_METRICS:
        mine, base = as_number(metrics.get(ours)), as_number(metrics.get(popularity))
        lift = mine - base if mine is not None and base is not None else None
        rows.append([title, fmt_metric(mine), fmt_metric(metrics.get(embedding)), fmt_metric(base), fmt_metric(lift),
                     fmt_count(metrics.get(evaluated)) if evaluated else MISSING])
    return rows


def recommend_html(figures: Mapping[str, Any], plots: Mapping[str, str]) -> str:
    """Recommendations: metrics against popularity, the search method, the tables written, versions."""
    recommend = section_figures(figures, "recommend")
    if recommend is None:
        return section("Recommendations", not_available("recommend"), "recommend")
    metrics = recommend.get("metrics") if isinstance(recommend.get("metrics"), Mapping) else None
    parts = [table(["metric", "served", "embedding order", "popularity", "served - popularity", "evaluated on"],
                   recommend_metric_rows(metrics), table_id="recommend-metrics")
             if metrics else not_available("metrics")]
    if metrics:
        parts.append(f"<p>users without history: {esc(fmt_count(metrics.get('users_without_history')))}</p>")
    parts.append(image(plots.get("recommend"), "recommendation metrics against popularity", "metrics chart"))
    parts.append(_search_html(recommend.get("search")))
    parts.append(_tables_html(recommend.get("tables")))
    versions = dict(recommend.get("versions") or {}) if isinstance(recommend.get("versions"), Mapping) else {}
    versions["held-out dates"] = (metrics or {}).get("holdout_dates")
    parts.append(versions_line(versions))
    return section("Recommendations", "".join(parts), "recommend")


def _search_html(search: Any) -> str:
    if not isinstance(search, Mapping):
        return not_available("search")
    text = (f"nearest neighbours: {esc(search.get('method'))} search over {esc(fmt_count(search.get('skus')))}"
            f" SKUs, k = {esc(fmt_count(search.get('k')))}")
    ivf = search.get("ivf")
    if isinstance(ivf, Mapping):
        text += (f"; IVF {esc(fmt_count(ivf.get('lists')))} lists, nprobe {esc(fmt_count(ivf.get('nprobe')))}, "
                 f"recall@10 against exact {esc(fmt_metric(ivf.get('recall_at_10')))} "
                 f"(sample {esc(fmt_count(ivf.get('recall_sample')))})")
    return f"<p>{text}</p>"


def _tables_html(tables: Any) -> str:
    if not isinstance(tables, Mapping) or not tables:
        return not_available("tables written")
    rows = [[name, fmt_value((t or {}).get("version")), fmt_count((t or {}).get("rows"))]
            for name, t in tables.items()]
    return table(["table", "version", "rows"], rows, table_id="recommend-tables")
