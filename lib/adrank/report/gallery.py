"""The report's galleries: small, deterministic samples of the recommendation tables, with images.

Each gallery reads its Delta table at the version pinned in the run's figures
(``recommend.tables.<name>.version``; ``training_examples`` at
``recommend.versions.training_examples``; ``sku_images`` at its latest version, resolved
once and shown), samples a few rows by sorted id, and collects only the images it shows
(a filter on those ids, never the whole table to the driver). ``training_examples`` is read
for the held-out dates and the ``lookback_days`` before them only (date partitions), never
whole, so the report's cost does not grow with the history kept:

- similar SKUs: a few SKUs (cold-start ones included) with their top-10 neighbours;
- queries: a few queries with their top-10 SKUs;
- users: a few users with their recent clicks and their recommendations.

A gallery whose inputs are missing (a failed or partial run) comes back with the reason it
is not available, and the page says so.
"""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from pyspark.sql import DataFrame, Row, SparkSession, Window
from pyspark.sql import functions as F

from adrank.core import layout
from adrank.core.config import Config
from adrank.report.tiles import Gallery, GalleryRow, Tile
from adrank.storage.delta import latest_version, read_delta

SAMPLE_SKUS = 8
SAMPLE_COLD_SKUS = 3
SAMPLE_QUERIES = 6
SAMPLE_USERS = 6
TOP = 10
RECENT_CLICKS = 10
MIME = {"PNG": "image/png", "JPEG": "image/jpeg", "JPG": "image/jpeg", "WEBP": "image/webp"}


class GalleryUnavailable(LookupError):
    """A figure a gallery needs is missing from the run's figures."""


def _pinned(recommend: Mapping[str, Any], table: str) -> int:
    version = ((recommend.get("tables") or {}).get(table) or {}).get("version")
    if not isinstance(version, int):
        raise GalleryUnavailable(f"no version of {table} in the run's figures")
    return version


def _examples_version(recommend: Mapping[str, Any]) -> int:
    version = (recommend.get("versions") or {}).get(layout.TRAINING_EXAMPLES)
    if not isinstance(version, int):
        raise GalleryUnavailable("no training_examples version in the run's figures")
    return version


# The tables the galleries read (their paths: :func:`gallery_tables`).
TABLES = (layout.SIMILAR_SKUS, layout.QUERY_RECOMMENDATIONS, layout.USER_RECOMMENDATIONS, layout.TRAINING_EXAMPLES,
          layout.SKU_IMAGES)


@dataclasses.dataclass(frozen=True)
class GalleryReads:
    """What the galleries read: each table's path (:data:`TABLES`) and how many days of clicks
    before the held-out dates they look at (a user's recent clicks, a SKU seen before)."""

    paths: Mapping[str, str]
    lookback_days: int


def gallery_tables(config: Config) -> GalleryReads:
    """The paths of every table the galleries read, and the behaviour lookback (``features.behaviour_lookback_days``)."""
    return GalleryReads({table: layout.table_path(config, table) for table in TABLES},
                        config.features.behaviour_lookback_days)


def read_pinned(spark: SparkSession, reads: GalleryReads, table: str, version: int) -> DataFrame:
    """``table`` at ``version``."""
    return read_delta(spark, reads.paths[table], version)


def recent_examples(spark: SparkSession, reads: GalleryReads, version: int, recommend: Mapping[str, Any]) -> DataFrame:
    """``training_examples`` at ``version`` on the held-out dates and the ``lookback_days`` before them
    (a filter on the ``date`` partition: only those days' files are read); every date when the
    run's figures do not name the held-out dates."""
    examples = read_pinned(spark, reads, layout.TRAINING_EXAMPLES, version)
    holdout = (recommend.get("metrics") or {}).get("holdout_dates")
    if not holdout:
        return examples
    first = F.date_sub(F.lit(min(holdout)).cast("date"), reads.lookback_days)
    return examples.where(F.col("date").between(first, F.lit(max(holdout)).cast("date")))


def data_uri(image: bytes | bytearray | None, image_format: str | None) -> str | None:
    """Stored image bytes as a ``data:`` URI (PNG when the format is unknown)."""
    if not image:
        return None
    mime = MIME.get((image_format or "PNG").upper(), "image/png")
    return f"data:{mime};base64," + base64.b64encode(bytes(image)).decode("ascii")


def cold_start_skus(examples: DataFrame, holdout_dates: Sequence[str] | None) -> DataFrame:
    """SKUs (``sku_id``) that are cold-start ads: flagged ``is_cold_start_ad``, or shown as an ad on
    the held-out dates but on no date of ``examples`` before them (the lookback window:
    :func:`recent_examples`)."""
    flagged = examples.where(F.col("is_cold_start_ad")).select(F.col("ad_sku_id").alias("sku_id"))
    if not holdout_dates:
        return flagged.distinct()
    first = min(holdout_dates)
    before = examples.where(F.col("date") < F.lit(first).cast("date")).select(F.col("ad_sku_id").alias("sku_id"))
    held_out = examples.where(F.col("date") >= F.lit(first).cast("date")).select(F.col("ad_sku_id").alias("sku_id"))
    return flagged.unionByName(held_out.join(before, "sku_id", "left_anti")).distinct()


def first_rows(frame: DataFrame, key: str, n: int, flag: str | None = None, n_flagged: int = 0) -> list[Row]:
    """The first ``n`` rows of ``frame`` by ``key``, of which up to ``n_flagged`` come first from the rows
    whose boolean column ``flag`` is true; sorted by ``key``. One Spark job: two ordered limits
    (top-k on the executors), at most ``n + n_flagged`` rows to the driver."""
    if flag is None or not n_flagged:
        return frame.orderBy(key).limit(n).collect()
    flagged = frame.where(F.col(flag)).orderBy(key).limit(n_flagged)
    others = frame.where(~F.col(flag)).orderBy(key).limit(n)
    rows = flagged.unionByName(others).collect()
    chosen = [r for r in rows if r[flag]][:n_flagged]
    chosen += [r for r in rows if not r[flag]][:n - len(chosen)]
    return sorted(chosen, key=lambda r: r[key])


def similar_gallery(spark: SparkSession, reads: GalleryReads, recommend: Mapping[str, Any]) -> Gallery:
    """A few SKUs (some cold-start) and their top-10 similar SKUs."""
    similar_version, examples_version = _pinned(recommend, layout.SIMILAR_SKUS), _examples_version(recommend)
    similar = read_pinned(spark, reads, layout.SIMILAR_SKUS, similar_version)
    examples = recent_examples(spark, reads, examples_version, recommend)
    cold = cold_start_skus(examples, (recommend.get("metrics") or {}).get("holdout_dates"))
    flagged = similar.join(cold.withColumn("cold", F.lit(True)), "sku_id", "left").fillna(False, ["cold"])
    rows = first_rows(flagged, "sku_id", SAMPLE_SKUS, "cold", SAMPLE_COLD_SKUS)
    gallery_rows = tuple(
        GalleryRow(title=f"SKU {r.sku_id}{' (cold start)' if r.cold else ''}",
                   anchors=(Tile(int(r.sku_id)),), results=_ranked(r.neighbours))
        for r in rows)
    versions = {layout.SIMILAR_SKUS: similar_version, layout.TRAINING_EXAMPLES: examples_version}
    return Gallery("Similar SKUs (top 10; same category marked)", gallery_rows, versions)


def query_gallery(spark: SparkSession, reads: GalleryReads, recommend: Mapping[str, Any]) -> Gallery:
    """A few queries (sorted) and their top-10 SKUs."""
    version = _pinned(recommend, layout.QUERY_RECOMMENDATIONS)
    queries = read_pinned(spark, reads, layout.QUERY_RECOMMENDATIONS, version)
    rows = first_rows(queries.where(F.col("query").isNotNull()), "query", SAMPLE_QUERIES)
    gallery_rows = tuple(GalleryRow(title=f"query \u201c{r.query}\u201d", results=_ranked(r.recommendations))
                         for r in rows)
    return Gallery("Query -> SKU recommendations (top 10)", gallery_rows, {layout.QUERY_RECOMMENDATIONS: version})


def user_gallery(spark: SparkSession, reads: GalleryReads, recommend: Mapping[str, Any]) -> Gallery:
    """A few users with history (sorted ids): their recent clicks, then their recommendations."""
    version, examples_version = _pinned(recommend, layout.USER_RECOMMENDATIONS), _examples_version(recommend)
    users = read_pinned(spark, reads, layout.USER_RECOMMENDATIONS, version)
    rows = first_rows(users.where(F.col("behaviour_clicks") > 0), "user_id", SAMPLE_USERS)
    examples = recent_examples(spark, reads, examples_version, recommend)
    clicks = recent_clicks(spark, examples, [(int(r.user_id), r.as_of) for r in rows])
    gallery_rows = tuple(
        GalleryRow(title=f"user {r.user_id} ({r.behaviour_clicks} clicks as of {r.as_of})",
                   anchors=tuple(Tile(s, caption="clicked") for s in clicks.get(int(r.user_id), [])),
                   results=_ranked(r.recommendations), anchor_label="no clicks")
        for r in rows)
    versions = {layout.USER_RECOMMENDATIONS: version, layout.TRAINING_EXAMPLES: examples_version}
    return Gallery("User recommendations (recent clicks -> top 10)", gallery_rows, versions)


def recent_clicks(spark: SparkSession, examples: DataFrame, users: Sequence[tuple[int, Any]]) -> dict[int, list[int]]:
    """Each user's last clicked ad SKUs (label 1) at or before their ``as_of``, newest first."""
    if not users:
        return {}
    as_of = spark.createDataFrame(list(users), "user_id long, as_of timestamp")
    newest = Window.partitionBy("user_id").orderBy(F.col("ts").desc(), F.col("ad_sku_id"))
    clicked = (examples.where(F.col("label") == 1).join(F.broadcast(as_of), "user_id")
               .where(F.col("as_of").isNull() | (F.col("ts") <= F.col("as_of")))
               .withColumn("rank", F.row_number().over(newest)).where(F.col("rank") <= RECENT_CLICKS)
               .select("user_id", "rank", "ad_sku_id").collect())
    found: dict[int, list[int]] = {}
    for r in sorted(clicked, key=lambda r: (r.user_id, r["rank"])):
        found.setdefault(int(r.user_id), []).append(int(r.ad_sku_id))
    return found


def _ranked(recommendations: Iterable[Any] | None) -> tuple[Tile, ...]:
    """The top ``TOP`` of an ``array<struct<sku_id, score>>`` as tiles (score as caption for now)."""
    return tuple(Tile(int(item.sku_id), caption=_score(item.score)) for item in list(recommendations or [])[:TOP])


def _score(score: Any) -> str:
    return f"{score:.3f}" if isinstance(score, (int, float)) else ""


def gallery_skus(galleries: Iterable[Gallery]) -> set[int]:
    """Every SKU id a gallery shows."""
    return {t.sku_id for g in galleries for row in g.rows for t in (*row.anchors, *row.results)}


def sku_images(spark: SparkSession, path: str, sku_ids: Iterable[int]) -> tuple[int, dict[int, Tile]]:
    """``(sku_images version read, {sku_id: Tile with image and category})`` for exactly ``sku_ids``,
    from the ``sku_images`` table at ``path``."""
    version = latest_version(spark, path)
    ids = sorted(set(sku_ids))
    if not ids:
        return version, {}
    rows = (read_delta(spark, path, version).where(F.col("sku_id").isin(ids))
            .select("sku_id", "category_id", "image", "image_format").collect())
    return version, {int(r.sku_id): Tile(int(r.sku_id), r.category_id, data_uri(r.image, r.image_format))
                     for r in rows}


def with_images(gallery: Gallery, images: Mapping[int, Tile], images_version: int) -> Gallery:
    """The gallery with each tile's image and category filled in (captions name the category)."""
    def fill(tile: Tile) -> Tile:
        found = images.get(tile.sku_id)
        category = found.category_id if found else None
        caption = " ".join(p for p in (f"cat {category}" if category is not None else "", tile.caption) if p)
        return dataclasses.replace(tile, category_id=category, image_uri=found.image_uri if found else None,
                                   caption=f"#{tile.sku_id} {caption}".strip())

    rows = tuple(dataclasses.replace(r, anchors=tuple(map(fill, r.anchors)), results=tuple(map(fill, r.results)))
                 for r in gallery.rows)
    return dataclasses.replace(gallery, rows=rows, versions={**gallery.versions, layout.SKU_IMAGES: images_version})


GalleryBuilder = Callable[[SparkSession, GalleryReads, Mapping[str, Any]], Gallery]
BUILDERS: tuple[tuple[str, GalleryBuilder], ...] = (
    ("Similar SKUs", similar_gallery), ("Query -> SKU recommendations", query_gallery),
    ("User recommendations", user_gallery))


def galleries(spark: SparkSession, reads: GalleryReads, figures: Mapping[str, Any]) -> list[Gallery]:
    """Every gallery of the run (each with its images), or [] when the run has no ``recommend`` figures.

    ``reads``: the path of each table read and the lookback (:func:`gallery_tables`).

    A gallery that cannot be built (a missing figure, table or version) is returned with the
    reason, so one missing table does not take the report down.
    """
    recommend = figures.get("recommend")
    if not isinstance(recommend, Mapping):
        return []
    built = [_build(title, builder, spark, reads, recommend) for title, builder in BUILDERS]
    try:
        version, images = sku_images(spark, reads.paths[layout.SKU_IMAGES], gallery_skus(built))
    except Exception as exc:  # noqa: BLE001 - a missing sku_images table leaves the tiles without images
        return [dataclasses.replace(g, versions={**g.versions, layout.SKU_IMAGES: f"unreadable ({_first_line(exc)})"})
                for g in built]
    return [with_images(g, images, version) if g.unavailable is None else g for g in built]


def _build(title: str, builder: GalleryBuilder, spark: SparkSession, reads: GalleryReads,
           recommend: Mapping[str, Any]) -> Gallery:
    try:
        return builder(spark, reads, recommend)
    except GalleryUnavailable as exc:
        return Gallery(title, unavailable=str(exc))
    except Exception as exc:  # noqa: BLE001 - e.g. a table or a version that is not there: say so, go on
        return Gallery(title, unavailable=f"could not read it: {_first_line(exc)}")


def _first_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
