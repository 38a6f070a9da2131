"""The building blocks of the report page: its style, escaping, number formats and small HTML pieces.

Pure: no Spark, no files. Every text that comes from the figures goes through :func:`esc`
(:func:`html.escape`). A metric that is None or NaN shows "not available"; a missing count,
version or model row "-".
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Mapping, Sequence
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
    """A metric with 4 decimals, as ``adrank.train.joint.comparison.comparison_table`` prints it; None or NaN
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


def section_figures(figures: Mapping[str, Any], name: str) -> Mapping[str, Any] | None:
    """The figures of section ``name``; None when they are missing (a failed or partial run)."""
    value = figures.get(name)
    return value if isinstance(value, Mapping) else None


def na(what: str = "") -> str:
    """``<what> not available``, marked as such."""
    return f'<span class="na">{esc(what + " " if what else "")}{NOT_AVAILABLE}</span>'


def dig(figures: Any, *keys: str) -> Any:
    """``figures[k1][k2]...``; None where a level is missing or not a mapping."""
    for key in keys:
        if not isinstance(figures, Mapping):
            return None
        figures = figures.get(key)
    return figures
