"""The report's plots: matplotlib (Agg, no display) figures rendered to inline PNG ``data:`` URIs.

Figures are made with :class:`matplotlib.figure.Figure` and an explicit Agg canvas, never
through ``pyplot``: nothing is registered globally, so nothing stays open between runs (and
no GUI backend is ever chosen). A plot whose figures are missing is left out; the page then
says "not available". A training curve has two panels: the training loss by step, and the
held-out metric the ranks computed at each checkpoint (``training.holdout_curve``), or
"no held-out curve" and why.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from adrank.report.html import RECOMMEND_METRICS, as_number

Series = Sequence[tuple[float, float]]


def png_data_uri(figure: Figure) -> str:
    """Render ``figure`` with Agg to a ``data:image/png;base64,...`` URI, then clear it."""
    buffer = io.BytesIO()
    FigureCanvasAgg(figure).print_png(buffer)
    figure.clear()
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def series_points(pairs: Any) -> list[tuple[float, float]]:
    """``[[step, value], ...]`` as float pairs; pairs with a missing value (None) and malformed ones are left out."""
    points = []
    for pair in pairs if isinstance(pairs, (list, tuple)) else []:
        if isinstance(pair, (list, tuple)) and len(pair) == 2 and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in pair):
            points.append((float(pair[0]), float(pair[1])))
    return points


def loss_points(training: Any) -> list[tuple[float, float]]:
    """``training["losses"]`` (``[[step, loss], ...]``) as float pairs; [] when missing or malformed."""
    return series_points(training.get("losses") if isinstance(training, Mapping) else None)


@dataclass(frozen=True)
class Curve:
    """One trained model's curves: training loss by step and the held-out metric at each checkpoint.

    Attributes:
        name: The line's label (the stage, or a stage-3 module).
        losses: (step, rank-mean training loss).
        holdout: (step, held-out metric) at each checkpoint; empty when there is none.
        metric: The held-out metric's name (``auc``, ``pairwise_accuracy``).
        missing: Why there is no held-out series ("" when there is one).
    """

    name: str
    losses: Series
    holdout: Series = ()
    metric: str = ""
    missing: str = ""


def curve_of(name: str, training: Any) -> Curve:
    """The :class:`Curve` of a stage's (or module's) ``training`` figures."""
    curve = training.get("holdout_curve") if isinstance(training, Mapping) else None
    if not isinstance(curve, Mapping):
        return Curve(name, loss_points(training), missing="not recorded")
    points = series_points(curve.get("points"))
    missing = str(curve.get("skipped") or "") or ("" if points else "no checkpoint in this run")
    return Curve(name, loss_points(training), points, str(curve.get("metric") or ""), missing)


def training_figure(curves: Sequence[Curve], title: str) -> Figure | None:
    """Two panels: training loss by step (left) and the held-out metric at each checkpoint
    (right; "no held-out curve" and why, when no curve has one). None without any loss."""
    curves = [curve for curve in curves if curve.losses]
    if not curves:
        return None
    figure = Figure(figsize=(9, 3), dpi=80)
    loss_axes, holdout_axes = figure.subplots(1, 2)
    for curve in curves:
        marker = "." if len(curve.losses) < 30 else ""
        loss_axes.plot([p[0] for p in curve.losses], [p[1] for p in curve.losses], label=curve.name, marker=marker)
    loss_axes.set(title=f"{title}: training loss", xlabel="step", ylabel="loss")
    loss_axes.grid(alpha=0.3)
    loss_axes.legend(fontsize="small")
    _draw_holdout(holdout_axes, curves)
    figure.tight_layout()
    return figure


def _draw_holdout(axes: Any, curves: Sequence[Curve]) -> None:
    """The held-out metric by checkpoint step, one line per curve that has one; else a note."""
    drawn = [curve for curve in curves if curve.holdout]
    metrics = sorted({curve.metric for curve in drawn})
    for curve in drawn:
        axes.plot([p[0] for p in curve.holdout], [p[1] for p in curve.holdout], label=curve.name, marker="o")
    axes.set(title=f"held-out {' / '.join(metrics) or 'metric'} at each checkpoint", xlabel="step",
             ylabel=" / ".join(metrics) or "held-out metric")
    axes.grid(alpha=0.3)
    if drawn:
        axes.axhline(0.5, color="grey", linestyle=":", linewidth=1)  # chance for AUC and pairwise accuracy
        axes.legend(fontsize="small")
    reasons = [f"{curve.name}: {curve.missing}" for curve in curves if not curve.holdout]
    if reasons:
        note = ("no held-out curve" if not drawn else "no held-out curve for") + "\n" + "\n".join(reasons)
        axes.text(0.5, 0.5 if not drawn else 0.1, note, transform=axes.transAxes, ha="center", va="center",
                  fontsize="small", color="#a33")


def stage_curves(figures: Mapping[str, Any]) -> dict[str, list[Curve]]:
    """The curves of a run, by plot: ``pairwise``, ``lr`` and ``joint`` (a curve per module), where present."""
    curves: dict[str, list[Curve]] = {}
    for stage in ("pairwise", "lr"):
        stage_figures = figures.get(stage)
        curves[stage] = [curve_of(stage, stage_figures.get("training") if isinstance(stage_figures, Mapping)
                                  else None)]
    joint = figures.get("joint")
    modules = joint.get("modules") if isinstance(joint, Mapping) else None
    if isinstance(modules, Mapping):
        curves["joint"] = [curve_of(kind, m.get("training")) for kind, m in modules.items() if isinstance(m, Mapping)]
    return curves


def training_plots(figures: Mapping[str, Any]) -> dict[str, str]:
    """The training curves of a run (:func:`stage_curves`, :func:`training_figure`) as ``data:`` URIs."""
    titles = {"pairwise": "pairwise", "lr": "lr", "joint": "joint modules"}
    plots = {}
    for name, curves in stage_curves(figures).items():
        figure = training_figure(curves, titles[name])
        if figure is not None:
            plots[name] = png_data_uri(figure)
    return plots


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
