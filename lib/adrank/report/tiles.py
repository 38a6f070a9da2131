"""The galleries' page model (:class:`Gallery` of :class:`GalleryRow` of :class:`Tile`) and its HTML.

:mod:`adrank.report.gallery` samples the rows from the tables; this module only lays them out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from adrank.report.html import esc, not_available, section, versions_line


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
