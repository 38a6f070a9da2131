"""The report's plots: matplotlib (Agg, no display) figures rendered to inline PNG ``data:`` URIs.

Figures are made with :class:`matplotlib.figure.Figure` and an explicit Agg canvas, never
through ``pyplot``: nothing is registered globally, so nothing stays open between runs (and
no GUI backend is ever chosen). A plot whose figures are missing is left out; the page then
says "not available".
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from adrank.report.page import RECOMMEND_METRICS, as_number

Series = Sequence[tuple[float, float]]


def png_data_uri(figure: Figure) -> str:
    """Render ``figure`` with Agg to a ``data:image/png;base64,...`` URI, then clear it."""
    buffer = io.BytesIO()
    FigureCanvasAgg(figure).print_png(buffer)
    figure.clear()
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def loss_points(training: Any) -> list[tuple[float, float]]:
    """``training["losses"]`` (``[[step, loss], ...]``) as float pairs; [] when missing or malformed."""
    losses = training.get("losses") if isinstance(training, Mapping) else None
    points = []
    for pair in losses or []:
        if isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(v, (int, float)) for v in pair):
            points.append((float(pair[0]), float(pair[1])))
    return points


def loss_curves(series: Mapping[str, Series], title: str) -> str | None:
    """One plot of loss by step, one line per series; None when no series has points."""
    series = {name: points for name, points in series.items() if points}
    if not series:
        return None
    figure = Figure(figsize=(6, 3), dpi=80)
    axes = figure.add_subplot()
    for name, points in series.items():
        axes.plot([p[0] for p in points], [p[1] for p in points], label=name, marker="." if len(points) < 30 else "")
    axes.set(title=title, xlabel="step", ylabel="loss")
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    figure.tight_layout()
    return png_data_uri(figure)


def training_plots(figures: Mapping[str, Any]) -> dict[str, str]:
    """The training curves of a run: ``pairwise``, ``lr`` and ``joint`` (a line per module), where present."""
    plots: dict[str, str | None] = {}
    for stage in ("pairwise", "lr"):
        stage_figures = figures.get(stage)
        training = stage_figures.get("training") if isinstance(stage_figures, Mapping) else None
        plots[stage] = loss_curves({stage: loss_points(training)}, f"{stage}: training loss")
    joint = figures.get("joint")
    modules = joint.get("modules") if isinstance(joint, Mapping) else None
    if isinstance(modules, Mapping):
        plots["joint"] = loss_curves(
            {kind: loss_points((m or {}).get("training")) for kind, m in modules.items() if isinstance(m, Mapping)},
            "joint modules: training loss")
    return {name: uri for name, uri in plots.items() if uri}


def recommend_plot(metrics: Any) -> str | None:
    """A bar chart of each recommendation metric against popularity; None without metrics."""
    if not isinstance(metrics, Mapping):
        return None
    rows: list[tuple[str, float, float]] = []
    for title, ours, _, base, _ in RECOMMEND_METRICS:
        mine, popularity = as_number(metrics.get(ours)), as_number(metrics.get(base))
        if mine is not None and popularity is not None:
            rows.append((title.split(":")[0].replace(", ", ",\n"), mine, popularity))
    if not rows:
        return None
    figure = Figure(figsize=(6, 2.6), dpi=80)
    axes = figure.add_subplot()
    positions = range(len(rows))
    axes.bar([p - 0.2 for p in positions], [r[1] for r in rows], width=0.4, label="served")
    axes.bar([p + 0.2 for p in positions], [r[2] for r in rows], width=0.4, label="popularity")
    axes.set_xticks(list(positions), [r[0] for r in rows])
    axes.set(ylim=(0, 1), title="@10 against popularity")
    axes.legend(fontsize="small")
    figure.tight_layout()
    return png_data_uri(figure)


def all_plots(figures: Mapping[str, Any]) -> dict[str, str]:
    """Every plot of the report, by name (``pairwise``, ``lr``, ``joint``, ``recommend``)."""
    plots = training_plots(figures)
    recommend = figures.get("recommend")
    chart = recommend_plot(recommend.get("metrics") if isinstance(recommend, Mapping) else None)
    if chart:
        plots["recommend"] = chart
    return plots
