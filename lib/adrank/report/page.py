"""The HTML of a run report: figures (a run's ``RunReport.as_dict()``) in, one HTML string out.

Pure: no Spark, no files. Every text that comes from the figures goes through
:func:`html.escape`; images arrive as ``data:`` URIs (made by :mod:`adrank.report.plots` and
:mod:`adrank.report.gallery`), so the page is self-contained: no network, no external CSS or
JavaScript (its Content-Security-Policy forbids both).

The page opens with the headline (:func:`headline_html`: the run's status, the best joint
module against the LR and the oracle, the recommendations against popularity, the versions
changed since the previous run), then the sections, and ends with the step timings. A
section whose figures are missing (a failed or partial run) says "not available"; so does a
metric that is None or NaN (it could not be computed: no ground truth); a missing count,
version or model row is shown as "-".
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from adrank.runtime.console import NOT_AVAILABLE

MISSING = "-"
MODELS = ("lr", "oracle", "dot", "product", "dnn")
PAGES = ("detail", "feed", "search")
# (column title, key of a comparison row, how it is formatted)
COMPARISON_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("AUC", "auc", "metric"), ("cold AUC", "cold_auc", "metric"), ("log loss", "log_loss", "metric"),
    *((f"{page} AUC", f"{page}_auc", "metric") for page in PAGES),
    ("rows", "rows", "count"), ("cold rows", "cold_rows", "count"),
)
# (what is measured, the embeddings' figure, popularity's figure, what it is evaluated on)
# (title, served figure, the embedding's own order, popularity, what it was evaluated on)
RECOMMEND_METRICS: tuple[tuple[str, str, str, str, str | None], ...] = (
    ("similar SKUs: precision@10 (same category)", "similar_precision_at_10", "similar_precision_at_10",
     "similar_precision_at_10_popularity", "similar_skus_evaluated"),
    ("query -> SKU: recall@10", "query_recall_at_10", "query_recall_at_10_embedding",
     "query_recall_at_10_popularity", "query_searches"),
    ("user behaviour: hit rate@10", "user_hit_rate_at_10", "user_hit_rate_at_10_embedding",
     "user_hit_rate_at_10_popularity", "users_evaluated"),
    ("user behaviour, feed clicks: hit rate@10", "user_hit_rate_at_10_feed", "user_hit_rate_at_10_feed_embedding",
     "user_hit_rate_at_10_feed_popularity", "users_evaluated_feed"),
)
STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;max-width:1200px}
h1{font-size:1.5em}h2{font-size:1.2em;border-bottom:1px solid #ccc;margin-top:1.6em}h3{font-size:1em}
table{border-collapse:collapse;margin:.5em 0}th,td{border:1px solid #ccc;padding:.2em .6em}
td.num{text-align:right;font-variant-numeric:tabular-nums}th{background:#f3f3f3}
.versions{color:#555;font-size:.9em}
#headline{border:1px solid #bbb;background:#f8f8f4;padding:.3em .8em;margin:.6em 0 1em}
#headline table{margin:.2em 0}#headline th{text-align:left;background:none;white-space:nowrap}
#headline th,#headline td{border:0;padding:.25em .6em .25em 0;vertical-align:top}.na{color:#a33;font-style:italic}.failed{color:#a33}
.gallery-row{display:flex;flex-wrap:wrap;gap:.4em;align-items:flex-start;margin:.4em 0 1em}
figure{margin:0;text-align:center;font-size:.75em;width:72px}figure img{width:64px;height:64px}
figure.anchor{border:2px solid #333}figure.match{background:#dfd}.sep{align-self:center;font-size:1.4em}
"""
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


@dataclass(frozen=True)
class Tile:
    """One SKU image in a gallery: its id, category, image (a ``data:`` URI) and caption."""

    sku_id: int
    category_id: int | None = None
    image_uri: str | None = None
    caption: str = ""


@dataclass(frozen=True)
class GalleryRow:
    """One sampled item: a title, what it is about (a SKU, a user's clicks) and its top results."""

    title: str
    anchors: tuple[Tile, ...] = ()
    results: tuple[Tile, ...] = ()
    anchor_label: str = ""
    results_label: str = ""


@dataclass(frozen=True)
class Gallery:
    """A gallery section: its rows, the data versions behind them, or why it is not available."""

    title: str
    rows: tuple[GalleryRow, ...] = ()
    versions: Mapping[str, Any] = field(default_factory=dict)
    unavailable: str | None = None


def esc(value: Any) -> str:
    """``value`` as escaped HTML text (attribute-safe); None and NaN as "-"."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    return html.escape(str(value), quote=True)


def as_number(value: Any) -> float | None:
    """``value`` as a float if it is a number (not NaN, not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        return None
    return float(value)


def fmt_metric(value: Any, digits: int = 4) -> str:
    """A metric with 4 decimals, as ``adrank.train.joint.comparison_table`` prints it; None or NaN
    (it could not be computed) as "not available"."""
    number = as_number(value)
    return NOT_AVAILABLE if number is None else f"{number:.{digits}f}"


def fmt_count(value: Any) -> str:
    """A count (rows, users) as an integer; "-" when missing."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        return MISSING
    return str(int(value))


def fmt_seconds(value: Any) -> str:
    """Seconds with one decimal; "-" when missing."""
    number = as_number(value)
    return MISSING if number is None else f"{number:.1f}"


def fmt_value(value: Any) -> str:
    """Any figure as short text: floats with 4 decimals (NaN: "not available"), lists joined, None as "-"."""
    if isinstance(value, float):
        return fmt_metric(value)
    if isinstance(value, (list, tuple)):
        return ", ".join(fmt_value(v) for v in value) or MISSING
    return MISSING if value is None else str(value)


def not_available(what: str = "") -> str:
    """The "not available" note of a missing section or figure."""
    return f'<p class="na">{esc(what + ": " if what else "")}{NOT_AVAILABLE}</p>'


def versions_line(versions: Mapping[str, Any]) -> str:
    """The data and model versions behind a figure, as one line."""
    parts = [f"{esc(name)} {esc(fmt_value(value))}" for name, value in versions.items()]
    return f'<p class="versions">versions: {"; ".join(parts) or NOT_AVAILABLE}</p>'


def table(header: Sequence[str], rows: Iterable[Sequence[str]], numeric_from: int = 1,
          table_id: str = "") -> str:
    """An HTML table of already formatted cells (escaped here); cells from ``numeric_from`` on are numbers."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f'<td{" class=num" if i >= numeric_from else ""}>{esc(c)}</td>'
                         for i, c in enumerate(row)) + "</tr>"
        for row in rows)
    ident = f' id="{esc(table_id)}"' if table_id else ""
    return f"<table{ident}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def image(uri: str | None, alt: str, what: str = "") -> str:
    """An inline ``<img>`` (the URI is a ``data:`` URI), or "not available"."""
    if not uri:
        return not_available(what or alt)
    return f'<img src="{esc(uri)}" alt="{esc(alt)}">'


def section(title: str, body: str, section_id: str) -> str:
    """A titled section."""
    return f'<section id="{esc(section_id)}"><h2>{esc(title)}</h2>{body}</section>'


def _section_figures(figures: Mapping[str, Any], name: str) -> Mapping[str, Any] | None:
    value = figures.get(name)
    return value if isinstance(value, Mapping) else None


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


def _na(what: str = "") -> str:
    return f'<span class="na">{esc(what + " " if what else "")}{NOT_AVAILABLE}</span>'


def _dig(figures: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(figures, Mapping):
            return None
        figures = figures.get(key)
    return figures


def _status_html(figures: Mapping[str, Any]) -> str:
    status = figures.get("status")
    shown = (f'<span class="{"failed" if status == "failed" else "status"}">{esc(status)}</span>' if status
             else _na("status"))
    total = as_number(_dig(figures, "timings_s", "total"))
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
    entry = _dig(figures, "tasks", task)
    if isinstance(entry, Mapping) and entry.get("status") == "skipped" and entry.get("from_run"):
        return f" (from run {esc(entry['from_run'])}: current, not run again)"
    return ""


def _ranking_rows(figures: Mapping[str, Any]) -> list[tuple[str, str]]:
    comparison = _dig(figures, "joint", "comparison")
    best = _dig(figures, "joint", "best_module")
    if not isinstance(comparison, Mapping) or not isinstance(comparison.get(best), Mapping):
        return [("joint model", _na("best module"))]
    reused = _reused(figures, "train_joint")
    return [("joint model", lift_html(comparison, str(best), "AUC", "auc") + reused),
            ("cold start", lift_html(comparison, str(best), "cold-start AUC", "cold_auc") + reused)]


def lift_html(comparison: Mapping[str, Any], best: str, label: str, key: str) -> str:
    """``best module dnn: cold-start AUC 0.655 vs LR 0.543 (+0.112), oracle 0.743: 56% of the possible lift``."""
    mine, lr, oracle = (as_number(row.get(key)) if isinstance(row, Mapping) else None
                        for row in (comparison.get(best), comparison.get("lr"), comparison.get("oracle")))
    head = f"best module {esc(best)}: {esc(label)}"
    if mine is None:
        return f"{head} {_na()}"
    text = f"{head} {mine:.3f} vs " + (f"LR {lr:.3f} ({mine - lr:+.3f})" if lr is not None else _na("LR"))
    if oracle is None:
        return f"{text}, {_na('oracle')}"
    text += f", oracle {oracle:.3f}"
    if lr is not None and oracle > lr and mine >= lr:  # below the LR: the negative lift says it
        text += f": {(mine - lr) / (oracle - lr):.0%} of the possible lift"
    return text


def _recommendations_headline(figures: Mapping[str, Any]) -> str:
    metrics = _dig(figures, "recommend", "metrics")
    if not isinstance(metrics, Mapping):
        return _na()
    parts = []
    for label, name in HEADLINE_RECOMMENDATIONS:
        mine, base = as_number(metrics.get(name)), as_number(metrics.get(f"{name}_popularity"))
        if mine is None:
            parts.append(_na(label))
        elif base is None:
            parts.append(f"{esc(label)} {mine:.3f} vs {_na('popularity')}")
        else:
            parts.append(f"{esc(label)} {mine:.3f} vs popularity {base:.3f} ({mine - base:+.3f})")
    return "; ".join(parts) + _reused(figures, "recommend")


def run_versions(figures: Mapping[str, Any]) -> dict[str, int]:
    """The table and model versions a run read or wrote, by the name the headline shows them under."""
    found: dict[str, int] = {}
    for name, places in VERSION_SOURCES:
        for keys in places:
            value = _dig(figures, *keys)
            if isinstance(value, int) and not isinstance(value, bool):
                found[name] = value
                break
    modules = _dig(figures, "joint", "modules")
    for kind, module in (modules.items() if isinstance(modules, Mapping) else ()):
        version = _dig(module, "model_version")
        if isinstance(version, int) and not isinstance(version, bool):
            found[f"model joint {kind}"] = version
    tables = _dig(figures, "recommend", "tables")
    for name, written in (tables.items() if isinstance(tables, Mapping) else ()):
        version = _dig(written, "version")
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
        return which + _na("versions of this run")
    changed = [f"{name} v{before[name]} \u2192 v{version}" for name, version in now.items()
               if name in before and before[name] != version]
    changed += [f"{name} v{version} (new)" for name, version in now.items() if name not in before]
    same = sum(1 for name, version in now.items() if before.get(name) == version)
    if not changed:
        return which + f"nothing changed ({same} versions the same)"
    return which + esc("; ".join(changed)) + (f"; {same} other versions the same" if same else "")


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
    joint = _section_figures(figures, "joint")
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
        stage_figures = _section_figures(figures, stage) or {}
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
    embed = _section_figures(figures, "embed_catalog")
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
    recommend = _section_figures(figures, "recommend")
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


def tile_html(tile: Tile, anchor_category: int | None = None, anchor: bool = False) -> str:
    """One SKU image with its caption; results of the anchor's category are marked."""
    classes = ["anchor"] if anchor else []
    if not anchor and anchor_category is not None and tile.category_id == anchor_category:
        classes.append("match")
    cls = f' class="{" ".join(classes)}"' if classes else ""
    picture = (f'<img src="{esc(tile.image_uri)}" alt="SKU {esc(tile.sku_id)}">' if tile.image_uri
               else '<span class="na">no image</span>')
    return f"<figure{cls}>{picture}<figcaption>{esc(tile.caption)}</figcaption></figure>"


def gallery_row_html(row: GalleryRow) -> str:
    """One gallery row: the anchors (boxed), an arrow, the results."""
    category = row.anchors[0].category_id if len(row.anchors) == 1 else None
    anchors = "".join(tile_html(t, anchor=True) for t in row.anchors) or (
        f'<span class="na">{esc(row.anchor_label or "none")}</span>' if row.anchor_label else "")
    results = "".join(tile_html(t, category) for t in row.results) or '<span class="na">no results</span>'
    return (f"<h3>{esc(row.title)}</h3>"
            f'<div class="gallery-row">{anchors}<span class="sep">&rarr;</span>{results}</div>')


def gallery_html(gallery: Gallery, index: int) -> str:
    """A gallery section (or why it is not available) with its versions line."""
    if gallery.unavailable is not None:
        body = not_available(gallery.unavailable)
    elif not gallery.rows:
        body = not_available("no rows sampled")
    else:
        body = "".join(gallery_row_html(r) for r in gallery.rows)
    return section(gallery.title, body + versions_line(gallery.versions), f"gallery-{index}")


def render_page(figures: Mapping[str, Any], plots: Mapping[str, str] | None = None,
                galleries: Sequence[Gallery] = (), previous: Mapping[str, Any] | None = None) -> str:
    """The whole report page: the headline first, the timings last.

    Args:
        figures: The run's figures (``RunReport.as_dict()``); any section may be missing.
        plots: ``data:`` URIs of the plots by name (``pairwise``, ``lr``, ``joint``, ``recommend``).
        galleries: The sampled galleries (:mod:`adrank.report.gallery`); none: "not available".
        previous: The previous run's figures (its run record), for the versions changed since.

    Returns:
        One self-contained HTML document.
    """
    plots = plots or {}
    body = [header_html(figures, previous), joint_html(figures), training_html(figures, plots), embed_html(figures),
            recommend_html(figures, plots)]
    body += [gallery_html(g, i) for i, g in enumerate(galleries)] or [
        section("Galleries", not_available("recommendation galleries"), "galleries")]
    body.append(timings_html(figures))
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            f"<title>adrank run {esc(figures.get('run_id'))}</title><style>{STYLE}</style></head>"
            f"<body>{''.join(body)}</body></html>\n")
