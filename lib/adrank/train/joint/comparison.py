"""Stage 3's comparison: every model's held-out figures side by side (the report's table).

Contract: :func:`comparison_row` keeps the compared figures of one model
(:data:`COMPARED`: AUC and log loss overall, on cold-start impressions and per page, with
the row counts); :func:`comparison_table` prints the rows as plain text;
:func:`auc_order` orders modules by held-out AUC (NaN last).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from adrank.core import layout

COMPARED = ("auc", "log_loss", "rows", "cold_auc", "cold_log_loss", "cold_rows",
            *(f"{page}_{metric}" for page in layout.PAGES for metric in ("auc", "log_loss", "rows")))


def comparison_row(metrics: dict[str, Any] | None) -> dict[str, Any] | None:
    """One row of the comparison table (NaN as null when written)."""
    return None if metrics is None else {key: metrics.get(key) for key in COMPARED}


def auc_order(metrics: dict[str, Any]) -> float:
    """A module's held-out AUC to sort by (NaN or missing: below every AUC)."""
    value = metrics.get("auc")
    return float(value) if isinstance(value, (int, float)) and value == value else float("-inf")


def comparison_table(comparison: Mapping[str, Any]) -> str:
    """The comparison as a plain-text table (rows: models; columns: AUC, cold AUC, log loss, per page)."""
    pages = [f"{page} AUC" for page in layout.PAGES]
    header = ["model", "AUC", "cold AUC", "log loss", *pages, "rows", "cold rows"]
    lines = [header]
    for name, row in comparison.items():
        if not isinstance(row, dict):
            lines.append([name, *["-"] * (len(header) - 1)])
            continue
        lines.append([name, _fmt(row.get("auc")), _fmt(row.get("cold_auc")), _fmt(row.get("log_loss")),
                      *[_fmt(row.get(f"{page}_auc")) for page in layout.PAGES],
                      str(row.get("rows", "-")), str(row.get("cold_rows", "-"))])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in lines)


def _fmt(value: Any) -> str:
    return "-" if not isinstance(value, (int, float)) or value != value else f"{value:.4f}"


__all__ = ["COMPARED", "auc_order", "comparison_row", "comparison_table"]
