"""Tests of the sample-data generator: determinism, planted signal, cold start, broken rows, images."""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import json
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from adrank.core.config import SampleConfig
from adrank.sample.generate import generate_inputs
from adrank.storage.delta import write_text_file
from conftest import tiny_config

TINY = SampleConfig(
    num_skus=120, num_users=40, num_impressions=4000, num_days=3, num_categories=8,
    image_min_size=32, image_max_size=48, broken_per_kind=2, rows_per_partition=2000,
)
JSON_SOURCES = ("click_log", "lr_features", "user_snapshots", "sku_snapshots")
OVERSIZED_PIXELS = 50_000_000


@dataclass(frozen=True)
class Sample:
    """One generated sample read back, every source sorted so that samples compare.

    Attributes:
        figures: What generate_inputs returned.
        manifest: The written _manifest.json.
        catalog_schema: The catalog's Spark schema, as a simple string.
        catalog: (sku_id, title, image, updated_at epoch seconds, category_id) rows.
        lines: Per JSON-lines source, (date or "", line) pairs.
    """

    figures: dict
    manifest: dict
    catalog_schema: str
    catalog: list[tuple]
    lines: dict[str, list[tuple[str, str]]]
    oracle: dict[str, float]
    root: Path


def generate_and_read(spark: SparkSession, cfg: SampleConfig, root: Path) -> Sample:
    """Generates a sample under ``root`` and reads everything it wrote."""
    figures = generate_inputs(spark, cfg, str(root))
    catalog_frame = spark.read.parquet(str(root / "catalog"))
    catalog = catalog_frame.select(
        "sku_id", "title", "image", F.unix_timestamp("updated_at").alias("updated_at"), "category_id")
    rows = sorted(((r.sku_id, r.title, bytes(r.image), r.updated_at, r.category_id) for r in catalog.collect()),
                  key=lambda r: (r[0] is None, r[0] or 0, r[1], r[2]))
    lines = {source: sorted(read_lines(spark, root / source)) for source in JSON_SOURCES}
    manifest = json.loads((root / "_manifest.json").read_text())
    oracle = {r.impression_id: r.click_probability
              for r in spark.read.parquet(str(root / "_oracle" / "click_probability")).collect()}
    return Sample(figures, manifest, catalog_frame.schema.simpleString(), rows, lines, oracle, root)


def read_lines(spark: SparkSession, path: Path) -> list[tuple[str, str]]:
    """Returns the (date partition or "", line) pairs of a JSON-lines source."""
    frame = spark.read.text(str(path))
    if "date" not in frame.columns:
        return [("", row.value) for row in frame.collect()]
    return [(str(row.date), row.value) for row in frame.collect()]


def parse_time(text: str) -> float:
    """Epoch seconds of an ISO-8601 UTC timestamp; ValueError if it does not parse."""
    return dt.datetime.fromisoformat(text).timestamp()


def click_kind(line: str, catalog_ids: set[int], seen_ids: set[str]) -> str:
    """The broken kind of a click-log line, or "good"."""
    try:
        record = json.loads(line)
    except ValueError:
        return "malformed_json"
    if "clicked" not in record:
        return "missing_field"
    if record["position"] < 1:
        return "bad_position"
    if record["ad_sku_id"] not in catalog_ids:
        return "unknown_sku"
    if record["impression_id"] in seen_ids:
        return "duplicate_impression"
    seen_ids.add(record["impression_id"])
    return "good"


def features_kind(line: str) -> str:
    """The broken kind of an LR-features line, or "good"."""
    try:
        record = json.loads(line)
    except ValueError:
        return "malformed_json"
    return "good" if isinstance(record["features"], list) else "features_not_array"


def snapshot_kind(line: str) -> str:
    """The broken kind of a snapshot line, or "good"."""
    try:
        parse_time(json.loads(line)["valid_from"])
    except ValueError:
        return "bad_timestamp"
    return "good"


def catalog_kind(sku_id: int | None, image: bytes) -> str:
    """The broken kind of a catalog row, or "good"."""
    if sku_id is None:
        return "null_sku_id"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            picture = Image.open(io.BytesIO(image))
        if picture.width * picture.height > OVERSIZED_PIXELS:
            return "oversized_image"
        picture.load()
    except OSError:
        return "corrupt_image"
    return "good"


def good_records(sample: Sample, source: str) -> list[tuple[str, dict]]:
    """The (date, parsed record) pairs of a source's good lines."""
    catalog_ids = {row[0] for row in sample.catalog if row[0] is not None}
    seen: set[str] = set()
    kind_of = {
        "click_log": lambda line: click_kind(line, catalog_ids, seen),
        "lr_features": features_kind,
    }.get(source, snapshot_kind)
    return [(date, json.loads(line)) for date, line in sample.lines[source] if kind_of(line) == "good"]


def good_catalog(sample: Sample) -> list[tuple]:
    """The catalog rows of the world's SKUs (ids 1..num_skus)."""
    num_skus = sample.manifest["config"]["num_skus"]
    return [row for row in sample.catalog if row[0] is not None and 1 <= row[0] <= num_skus]


@pytest.fixture(scope="module")
def tiny(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> Sample:
    """The tiny sample, generated once for the module."""
    return generate_and_read(spark, TINY, tmp_path_factory.mktemp("tiny"))


def test_figures_are_the_written_manifest(tiny: Sample) -> None:
    assert tiny.figures == tiny.manifest
    assert tiny.manifest["config"] == dataclasses.asdict(TINY)
    assert tiny.manifest["dates"] == ["2026-11-01", "2026-11-02", "2026-11-03"]


def test_sources_follow_the_input_contract(tiny: Sample) -> None:
    assert tiny.catalog_schema == (
        "struct<sku_id:bigint,title:string,image:binary,updated_at:timestamp,category_id:int>")
    clicks = good_records(tiny, "click_log")
    assert {date for date, _ in clicks} == set(tiny.manifest["dates"])
    assert all(record["ts"].startswith(date) and record["ts"].endswith("Z") for date, record in clicks)
    keys = {"impression_id", "ts", "user_id", "page", "ad_sku_id", "position", "clicked"}
    by_page = {"detail": keys | {"context_sku_id"}, "feed": keys, "search": keys | {"query"}}
    assert all(set(record) == by_page[record["page"]] for _, record in clicks)


def test_same_seed_gives_identical_rows(spark: SparkSession, tiny: Sample, tmp_path: Path) -> None:
    again = generate_and_read(spark, TINY, tmp_path)
    assert again.catalog == tiny.catalog
    for source in JSON_SOURCES:
        assert again.lines[source] == tiny.lines[source], source
    assert again.manifest == tiny.manifest
    assert again.oracle == tiny.oracle


def test_other_seed_gives_other_rows(spark: SparkSession, tiny: Sample, tmp_path: Path) -> None:
    other = generate_and_read(spark, dataclasses.replace(TINY, seed=TINY.seed + 1), tmp_path)
    assert {row[2] for row in other.catalog}.isdisjoint({row[2] for row in good_catalog(tiny)})
    assert set(other.lines["click_log"]) != set(tiny.lines["click_log"])
    assert other.manifest["good_rows"]["click_log"] == tiny.manifest["good_rows"]["click_log"]


def test_row_kinds_match_the_manifest(tiny: Sample) -> None:
    catalog_ids = {row[0] for row in tiny.catalog if row[0] is not None}
    seen: set[str] = set()
    kinds = {
        "catalog": Counter(catalog_kind(row[0], row[2]) for row in tiny.catalog),
        "click_log": Counter(click_kind(line, catalog_ids, seen) for _, line in tiny.lines["click_log"]),
        "lr_features": Counter(features_kind(line) for _, line in tiny.lines["lr_features"]),
        "user_snapshots": Counter(snapshot_kind(line) for _, line in tiny.lines["user_snapshots"]),
        "sku_snapshots": Counter(snapshot_kind(line) for _, line in tiny.lines["sku_snapshots"]),
    }
    for source, counts in kinds.items():
        expected = {"good": tiny.manifest["good_rows"][source], **tiny.manifest["broken_rows"][source]}
        assert dict(counts) == expected, source
    assert tiny.manifest["good_rows"]["click_log"] == TINY.num_impressions


def test_same_category_ads_are_clicked_more(tiny: Sample) -> None:
    category = {row[0]: row[4] for row in good_catalog(tiny)}
    clicks = [record for _, record in good_records(tiny, "click_log")]
    detail = [r for r in clicks if r["page"] == "detail"]
    same = [r["clicked"] for r in detail if category[r["context_sku_id"]] == category[r["ad_sku_id"]]]
    cross = [r["clicked"] for r in detail if category[r["context_sku_id"]] != category[r["ad_sku_id"]]]
    assert min(len(same), len(cross)) > 300
    assert np.mean(same) > 2 * np.mean(cross)
    assert 0.03 < np.mean([r["clicked"] for r in clicks]) < 0.15


def test_cold_start_skus_appear_on_the_last_day_only(tiny: Sample) -> None:
    first_day = parse_time(tiny.manifest["dates"][0] + "T00:00:00+00:00")
    cold = {row[0] for row in good_catalog(tiny) if row[3] >= first_day}
    assert len(cold) == tiny.manifest["cold_start_skus"] > 0
    shown_on = Counter(
        date for date, r in good_records(tiny, "click_log") if {r["ad_sku_id"], r.get("context_sku_id")} & cold)
    assert set(shown_on) == {tiny.manifest["dates"][-1]}
    cold_snapshots = [r for _, r in good_records(tiny, "sku_snapshots") if r["entity_id"] in cold]
    assert len(cold_snapshots) == len(cold)


def test_every_impression_has_features_and_an_as_of_snapshot(tiny: Sample) -> None:
    clicks = [record for _, record in good_records(tiny, "click_log")]
    with_features = {record["impression_id"] for _, record in good_records(tiny, "lr_features")}
    assert {r["impression_id"] for r in clicks} == with_features
    snapshot_times: dict[int, list[float]] = {}
    for _, snapshot in good_records(tiny, "user_snapshots"):
        snapshot_times.setdefault(snapshot["entity_id"], []).append(parse_time(snapshot["valid_from"]))
    assert all(min(snapshot_times[r["user_id"]]) <= parse_time(r["ts"]) for r in clicks)
    same_day_snapshot_later = [
        r for r in clicks
        if any(0 < t - parse_time(r["ts"]) and r["ts"][:10] == iso_date(t) for t in snapshot_times[r["user_id"]])]
    assert same_day_snapshot_later


def iso_date(epoch_seconds: float) -> str:
    """The UTC date of an epoch second."""
    return dt.datetime.fromtimestamp(epoch_seconds, dt.UTC).date().isoformat()


def test_good_images_decode_in_mixed_formats(tiny: Sample) -> None:
    pictures = [Image.open(io.BytesIO(row[2])) for row in good_catalog(tiny)]
    for picture in pictures:
        picture.load()
        assert TINY.image_min_size <= min(picture.size) <= max(picture.size) <= TINY.image_max_size
    assert {p.format for p in pictures} == {"JPEG", "PNG", "WEBP"}
    assert {"RGB", "RGBA", "L", "CMYK"} <= {p.mode for p in pictures}


def test_images_show_their_category(tiny: Sample) -> None:
    rows = good_catalog(tiny)
    thumbnails = np.stack([
        np.asarray(Image.open(io.BytesIO(row[2])).convert("RGB").resize((4, 4), Image.BILINEAR), float).ravel()
        for row in rows])
    categories = np.array([row[4] for row in rows])
    fit, held_out = np.arange(0, len(rows), 2), np.arange(1, len(rows), 2)
    centroids = np.stack([thumbnails[fit][categories[fit] == c].mean(axis=0) for c in range(TINY.num_categories)])
    distances = ((thumbnails[held_out, None, :] - centroids[None, :, :]) ** 2).sum(axis=2)
    accuracy = np.mean(distances.argmin(axis=1) == categories[held_out])
    assert accuracy > 0.6, f"held-out nearest-centroid accuracy {accuracy:.2f}, chance {1 / TINY.num_categories:.2f}"


def test_text_file_written_through_a_hadoop_uri(spark: SparkSession, tmp_path: Path) -> None:
    target = tmp_path / "nested" / "_manifest.json"
    write_text_file(spark, target.as_uri(), '{"seed": 7}\n')
    assert target.read_text() == '{"seed": 7}\n'
    write_text_file(spark, f"file:{target}", '{"seed": 8}\n')  # file:/abs, as Spark prints paths
    assert target.read_text() == '{"seed": 8}\n'


def test_text_file_written_to_a_plain_path_replaces_it_without_a_temporary_left(tmp_path: Path) -> None:
    target = tmp_path / "a" / "_manifest.json"
    for seed in (1, 2):
        write_text_file(None, str(target), f'{{"seed": {seed}}}\n')
    assert target.read_text() == '{"seed": 2}\n'
    assert [p.name for p in target.parent.iterdir()] == ["_manifest.json"]


def test_the_oracle_side_file_holds_the_true_probability_of_every_good_impression(tiny: Sample) -> None:
    clicks = [record for _, record in good_records(tiny, "click_log")]
    assert set(tiny.oracle) == {record["impression_id"] for record in clicks}
    assert len(tiny.oracle) == tiny.manifest["oracle"]["rows"] == TINY.num_impressions
    probabilities = np.array(list(tiny.oracle.values()))
    assert ((probabilities > 0) & (probabilities < 1)).all()
    click_rate = np.mean([record["clicked"] for record in clicks])
    assert abs(probabilities.mean() - click_rate) < 0.03  # the clicks were drawn from these probabilities


def test_oracle_metrics_score_held_out_rows_with_the_true_probability(spark: SparkSession, tiny: Sample,
                                                                      tmp_path: Path) -> None:
    from adrank.core.layout import oracle_path
    from adrank.train.joint.oracle import oracle_metrics

    clicks = [record for _, record in good_records(tiny, "click_log")]
    rows = [(r["impression_id"], r["clicked"], False, r["ad_sku_id"], r["page"]) for r in clicks]
    rows.append(("imp-not-generated", 1, True, 1, "feed"))
    holdout = spark.createDataFrame(
        rows, "impression_id string, label int, is_cold_start_ad boolean, ad_sku_id long, page string")
    config = tiny_config(tmp_path, f"inputs.root={tiny.root}")
    metrics = oracle_metrics(spark, oracle_path(config), holdout, seen_ad_skus=[r["ad_sku_id"] for r in clicks])
    assert metrics is not None
    assert (metrics["matched_rows"], metrics["holdout_rows"]) == (len(clicks), len(clicks) + 1)
    assert metrics["auc"] > 0.6
    assert metrics["cold_rows"] == 0
    assert sum(metrics[f"{page}_rows"] for page in ("detail", "feed", "search")) == len(clicks)
    assert oracle_metrics(spark, oracle_path(tiny_config(tmp_path)), holdout, seen_ad_skus=[]) is None
