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

from collections.abc import Mapping, Sequence
from typing import Any

from adrank.report.headline import header_html, headline_html, lift_html, run_versions
from adrank.report.html import CSP, STYLE, esc, fmt_metric, not_available, section
from adrank.report.sections import (
    comparison_rows,
    embed_html,
    joint_html,
    recommend_html,
    recommend_metric_rows,
    timings_html,
    training_html,
)
from adrank.report.tiles import Gallery, GalleryRow, Tile, gallery_html

__all__ = ["Gallery", "GalleryRow", "Tile", "comparison_rows", "fmt_metric", "headline_html", "lift_html",
           "recommend_metric_rows", "render_page", "run_versions"]


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
