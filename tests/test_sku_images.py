"""The sku_images table: any format/mode decodes to a square RGB image, broken rows are
quarantined, the MERGE rewrites only changed SKUs (seen in the Change Data Feed), and
the independent delta-rs reader sees what Spark wrote."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import io
import json
import struct
import zlib

import deltalake
import numpy as np
import pytest
from chispa import assert_df_equality
from PIL import Image
from pyspark.sql import functions as F

from adrank.core import layout
from adrank.core.config import FeaturesConfig
from adrank.storage import delta
from adrank.storage.delta import USER_METADATA_CONF, read_delta
from adrank.tables.images import (
    SKU_IMAGES_DDL,
    decode_resize_encode,
    preprocess_images,
    split_images,
    to_rgb,
)
from adrank.tables.quarantine import (
    DUPLICATE_ID,
    NULL_ID,
    OVERSIZED_IMAGE,
    QUARANTINE_DDL,
    UNDECODABLE_IMAGE,
    quarantine_rows,
)
from adrank.tables.store import upsert_sku_images

CATALOG_DDL = "sku_id long, title string, image binary, updated_at timestamp, category_id int"
RAW_DDL = "sku_id long, title string, updated_at timestamp, image_bytes int, image_hash string, detail string"
T0 = dt.datetime(2026, 11, 1, 12, 0)
RED, GREEN, BLUE, WHITE = (220, 20, 20), (20, 200, 40), (30, 40, 210), (255, 255, 255)


def encode(img: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, fmt, **options)
    return buffer.getvalue()


def solid(color, size=(96, 72), fmt="PNG", mode="RGB") -> bytes:
    return encode(Image.new(mode, size, color), fmt)


def noisy_jpeg(seed: int, size=(96, 80)) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return encode(Image.fromarray(pixels), "JPEG", quality=90)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def decoded(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


def assert_color(img: Image.Image, expected, tolerance=14):
    """Every pixel (so also the corners: the centre crop kept no border) is near ``expected``."""
    pixels = np.asarray(img, dtype=np.int16)
    assert np.abs(pixels - np.array(expected)).max() <= tolerance, (pixels.min((0, 1)), pixels.max((0, 1)))


def catalog(spark, rows):
    return spark.createDataFrame(
        [(sku, f"title {sku}", image, when, 3) for sku, image, when in rows], CATALOG_DDL)


# --- decoding every format and mode ---------------------------------------------------

def striped_png() -> bytes:
    """200 x 100: green 50-px borders left and right of a red 100 x 100 centre."""
    img = Image.new("RGB", (200, 100), GREEN)
    img.paste(Image.new("RGB", (100, 100), RED), (50, 0))
    return encode(img, "PNG")


FORMAT_CASES = {
    1: ("JPEG RGB", solid(RED, (120, 80), "JPEG"), RED, (120, 80)),
    2: ("PNG RGBA transparent", solid((200, 0, 0, 0), (100, 100), mode="RGBA"), WHITE, (100, 100)),
    3: ("PNG L", solid(128, (70, 90), mode="L"), (128, 128, 128), (70, 90)),
    4: ("WebP", encode(Image.new("RGB", (90, 60), GREEN), "WEBP", lossless=True), GREEN, (90, 60)),
    5: ("JPEG CMYK", solid((0, 255, 255, 0), (80, 80), "JPEG", mode="CMYK"), (255, 0, 0), (80, 80)),
    6: ("PNG P", encode(Image.new("RGB", (64, 40), BLUE).convert("P", palette=Image.Palette.ADAPTIVE), "PNG"),
        BLUE, (64, 40)),
    7: ("PNG wide, centre crop", striped_png(), RED, (200, 100)),
    8: ("PNG tiny, upscaled", solid(BLUE, (16, 20)), BLUE, (16, 20)),
    9: ("JPEG large, draft path", solid(GREEN, (1600, 1200), "JPEG"), GREEN, (1600, 1200)),
    10: ("PNG 16-bit grey 50%", encode(Image.fromarray(np.full((50, 70), 32768, np.uint16)), "PNG"),
         (128, 128, 128), (70, 50)),
    11: ("GIF animated, first frame", encode(Image.new("RGB", (60, 60), RED), "GIF", save_all=True,
                                              append_images=[Image.new("RGB", (60, 60), BLUE)]), RED, (60, 60)),
}


def test_every_format_and_mode_becomes_a_square_rgb_image_of_the_same_content(spark, config):
    features = dataclasses.replace(config.features, image_size=64)  # colour tolerances are set at 64 px
    size = features.image_size
    rows = [(sku, image, T0) for sku, (_, image, _, _) in FORMAT_CASES.items()]
    out = preprocess_images(catalog(spark, rows), features).cache()

    facts = ["sku_id", "status", "image_format", "height", "width", "channels", "orig_width",
             "orig_height", "image_hash"]
    expected = spark.createDataFrame(
        [(sku, "ok", "PNG", size, size, 3, w, h, sha(image)) for sku, (_, image, _, (w, h)) in FORMAT_CASES.items()],
        "sku_id long, status string, image_format string, height int, width int, channels int, "
        "orig_width int, orig_height int, image_hash string")
    assert_df_equality(out.select(*facts), expected, ignore_row_order=True, ignore_nullable=True)

    for row in out.collect():
        name, raw, color, _ = FORMAT_CASES[row.sku_id]
        img = decoded(row.image)
        assert (img.format, img.mode, img.size) == ("PNG", "RGB", (size, size)), name
        assert_color(img, color)
        plain = decode_resize_encode(raw, size, "PNG", features.max_image_pixels)
        assert plain["image"] == row.image, f"{name}: the UDF and the plain function disagree"


# --- the plain function: limits, guards, JPEG storage ---------------------------------

def test_declared_pixel_count_is_checked_before_decoding_at_the_exact_limit():
    at_limit = solid(0, (1000, 1000), mode="L")
    over_limit = solid(0, (1001, 1000), mode="L")
    assert decode_resize_encode(at_limit, 32, "PNG", 1_000_000)["status"] == "ok"
    over = decode_resize_encode(over_limit, 32, "PNG", 1_000_000)
    assert over["status"] == OVERSIZED_IMAGE
    assert "1001x1000" in over["detail"]
    assert (over["image"], over["orig_width"], over["orig_height"]) == (None, 1001, 1000)
    assert over["image_hash"] == sha(over_limit)


def test_pil_decompression_bomb_guard_also_reports_oversized():
    bomb = encode(Image.new("1", (15_000, 15_000), 0), "PNG")  # 225M pixels, past PIL's own limit
    result = decode_resize_encode(bomb, 32, "PNG", max_pixels=10**9)
    assert result["status"] == OVERSIZED_IMAGE
    assert "DecompressionBombError" in result["detail"]


def test_jpeg_storage_and_missing_bytes():
    stored = decode_resize_encode(solid(RED, (300, 200), "JPEG"), 48, "JPEG", 10**6)
    img = decoded(stored["image"])
    assert (stored["image_format"], img.format, img.mode, img.size) == ("JPEG", "JPEG", "RGB", (48, 48))
    assert_color(img, RED)
    missing = decode_resize_encode(None, 48, "JPEG", 10**6)
    assert (missing["status"], missing["detail"], missing["image_hash"]) == (UNDECODABLE_IMAGE, "no image bytes", None)


def test_jpeg_store_format_from_config_reaches_the_udf(spark, config):
    features = dataclasses.replace(config.features, image_store_format="JPEG")
    out = preprocess_images(catalog(spark, [(1, solid(BLUE, (80, 60)), T0)]), features).collect()
    assert (out[0].image_format, decoded(out[0].image).format) == ("JPEG", "JPEG")
    assert_color(decoded(out[0].image), BLUE)


# --- decoding by the real mode, bit depth, orientation and frame ------------------------

def png_16bit(pixels: np.ndarray, *chunks: tuple[bytes, bytes]) -> bytes:
    """A 16-bit PNG, grey if ``pixels`` is 2-D, RGB if 3-D, written chunk by chunk
    (Pillow cannot write 16-bit RGB); ``chunks`` go before the image data."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    height, width = pixels.shape[:2]
    header = struct.pack(">IIBBBBB", width, height, 16, 2 if pixels.ndim == 3 else 0, 0, 0, 0)
    rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in pixels)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + b"".join(chunk(*c) for c in chunks)
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def stored_pixels(raw: bytes, size: int = 32) -> np.ndarray:
    """The pixels ``decode_resize_encode`` stores for ``raw`` (PNG, so exactly), as int16."""
    result = decode_resize_encode(raw, size, "PNG", 10**7)
    assert result["status"] == "ok", result["detail"]
    img = decoded(result["image"])
    assert (img.mode, img.size) == ("RGB", (size, size))
    return np.asarray(img, dtype=np.int16)


def grey_array(value, dtype, size=(60, 40)) -> np.ndarray:
    return np.full((size[1], size[0]), value, dtype)


HIGH_DEPTH_CASES = {
    "PNG 16-bit grey 50%": (png_16bit(grey_array(32768, np.uint16)), (128, 128, 128)),
    "PNG 16-bit grey 25%, by Pillow": (encode(Image.fromarray(grey_array(16384, np.uint16)), "PNG"), (64, 64, 64)),
    "PNG 16-bit RGB": (png_16bit(np.full((40, 60, 3), (65535, 32768, 0), np.uint16)), (255, 128, 0)),
    "TIFF 16-bit grey (I;16)": (encode(Image.fromarray(grey_array(32768, np.uint16)), "TIFF"), (128, 128, 128)),
    "TIFF 32-bit int (I)": (encode(Image.fromarray(grey_array(2**30, np.int32)), "TIFF"), (128, 128, 128)),
    "TIFF 32-bit float (F), 0..1": (encode(Image.fromarray(grey_array(0.25, np.float32)), "TIFF"), (64, 64, 64)),
}


@pytest.mark.parametrize("name", HIGH_DEPTH_CASES)
def test_high_bit_depth_samples_are_scaled_by_their_range_not_clipped(name):
    raw, expected = HIGH_DEPTH_CASES[name]
    pixels = stored_pixels(raw)
    assert np.abs(pixels - np.array(expected)).max() <= 1, (name, pixels.min((0, 1)), pixels.max((0, 1)))


def quadrant_colors(pixels: np.ndarray) -> list[tuple[int, ...]]:
    """Mean colour of the top-left, top-right, bottom-left, bottom-right quadrants."""
    half = pixels.shape[0] // 2
    quads = [pixels[:half, :half], pixels[:half, half:], pixels[half:, :half], pixels[half:, half:]]
    return [tuple(int(v) for v in q.reshape(-1, 3).mean(0).round()) for q in quads]


def near(color, expected, tolerance=24) -> bool:
    return max(abs(a - b) for a, b in zip(color, expected)) <= tolerance


@pytest.mark.parametrize(("fmt", "orientation", "scale", "red_quadrant"), [
    ("JPEG", 6, 1, 1),  # 90 degrees clockwise to view: the top-left block ends top right
    ("JPEG", 8, 1, 2),  # 90 degrees anticlockwise: it ends bottom left
    ("JPEG", 6, 20, 1),  # large enough for the reduced-scale (draft) decode
    ("PNG", 8, 1, 2),  # eXIf chunk
])
def test_exif_orientation_is_applied_before_the_centre_crop(fmt, orientation, scale, red_quadrant):
    width, height = 80 * scale, 40 * scale  # wide as stored, tall as shown
    img = Image.new("RGB", (width, height), BLUE)
    img.paste(Image.new("RGB", (width // 2, height // 2), RED), (0, 0))  # top-left quarter of the file
    exif = Image.Exif()
    exif[0x0112] = orientation
    quads = quadrant_colors(stored_pixels(encode(img, fmt, exif=exif.tobytes())))
    assert near(quads[red_quadrant], RED), quads
    assert all(near(color, BLUE) for i, color in enumerate(quads) if i != red_quadrant), quads


def test_to_rgb_returns_the_whole_image_as_viewers_show_it():
    img = Image.new("RGB", (80, 40), BLUE)
    img.paste(Image.new("RGB", (10, 10), RED), (0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6
    shown = to_rgb(Image.open(io.BytesIO(encode(img, "JPEG", exif=exif.tobytes()))))
    assert (shown.mode, shown.size) == ("RGB", (40, 80))
    assert near(shown.getpixel((35, 4)), RED) and near(shown.getpixel((4, 4)), BLUE)


def left_transparent(mode: str, color, fmt="PNG") -> bytes:
    """40 x 40 in ``mode``: the left half fully transparent, the right half opaque ``color``."""
    if mode == "I;16":  # grey 0 is the tRNS colour key
        pixels = np.zeros((40, 40), np.uint16)
        pixels[:, 20:] = color
        return png_16bit(pixels, (b"tRNS", struct.pack(">H", 0)))
    if mode == "P":
        img = Image.new("P", (40, 40), 0)
        img.putpalette([0, 0, 0, *color])
        img.paste(1, (20, 0, 40, 40))
        return encode(img, fmt, transparency=0)
    img = Image.new(mode, (40, 40), (0,) * len(mode))
    img.paste(Image.new(mode, (20, 40), (*color, 255) if mode == "RGBA" else (color, 255)), (20, 0))
    return encode(img, fmt)


@pytest.mark.parametrize(("mode", "fmt", "color", "opaque"), [
    ("P", "PNG", BLUE, BLUE),  # palette with tRNS
    ("P", "GIF", RED, RED),
    ("LA", "PNG", 60, (60, 60, 60)),
    ("RGBA", "PNG", GREEN, GREEN),
    ("I;16", "PNG", 16384, (64, 64, 64)),  # 16-bit grey with tRNS
])
def test_transparent_pixels_are_white_and_opaque_ones_keep_their_colour(mode, fmt, color, opaque):
    pixels = stored_pixels(left_transparent(mode, color, fmt))
    assert np.abs(pixels[:, :12] - np.array(WHITE)).max() <= 1
    assert np.abs(pixels[:, -12:] - np.array(opaque)).max() <= 1


@pytest.mark.parametrize(("mode", "value", "expected"), [
    ("LA", (0, 128), (127, 127, 127)),  # half-transparent black on white
    ("RGBA", (200, 0, 0, 128), (227, 127, 127)),
])
def test_partial_alpha_is_composited_on_white(mode, value, expected):
    pixels = stored_pixels(solid(value, (50, 30), mode=mode))
    assert np.abs(pixels - np.array(expected)).max() <= 1, (pixels.min((0, 1)), pixels.max((0, 1)))


def test_cmyk_jpeg_becomes_its_rgb_colour():
    pixels = stored_pixels(solid((255, 0, 0, 0), (50, 30), "JPEG", mode="CMYK"))  # cyan ink
    assert np.abs(pixels - np.array((0, 255, 255))).max() <= 8


@pytest.mark.parametrize("fmt", ["GIF", "PNG", "WEBP"])
def test_an_animated_image_is_stored_as_its_first_frame(fmt):
    frames = [Image.new("RGB", (50, 30), color) for color in (RED, BLUE, GREEN)]
    raw = encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0,
                 **({"lossless": True} if fmt == "WEBP" else {}))
    assert Image.open(io.BytesIO(raw)).n_frames == 3
    assert np.abs(stored_pixels(raw) - np.array(RED)).max() <= 14


# --- broken rows, duplicates, reconciliation --------------------------------------------

@pytest.fixture(scope="module")
def broken(spark):
    """A catalog with every kind of broken row, preprocessed once (cached) and split."""
    img = {name: solid(color) for name, color in
           [("good", RED), ("old", GREEN), ("new", BLUE), ("tie_a", (1, 2, 3)), ("tie_b", (4, 5, 6))]}
    img.update(truncated=noisy_jpeg(1)[:1500], garbage=b"definitely not an image" * 10,
               bomb=encode(Image.new("1", (10_000, 10_000), 0), "PNG"), late_broken=b"\x89PNG broken")
    later = T0 + dt.timedelta(hours=1)
    rows = [
        (1, img["good"], T0), (2, img["garbage"], T0), (3, img["truncated"], T0), (4, img["bomb"], T0),
        (None, img["good"], T0), (5, None, T0),
        (6, img["old"], T0), (6, img["new"], later),  # the later row wins
        (7, img["tie_a"], T0), (7, img["tie_b"], T0),  # same time: the larger hash wins
        (8, img["late_broken"], later), (8, img["old"], T0),  # a broken later row does not hide a good one
    ]
    source = catalog(spark, rows)
    preprocessed = preprocess_images(source, FeaturesConfig()).cache()
    good_rows, bad_rows = split_images(preprocessed)
    yield {"img": img, "later": later, "source": source, "good": good_rows, "bad": bad_rows}
    preprocessed.unpersist()


def test_good_rows_keep_the_latest_valid_row_of_each_sku(spark, broken):
    img = broken["img"]
    keep7 = max(sha(img["tie_a"]), sha(img["tie_b"]))
    expected = [(1, sha(img["good"]), T0), (6, sha(img["new"]), broken["later"]), (7, keep7, T0),
                (8, sha(img["old"]), T0)]
    assert_df_equality(
        broken["good"].select("sku_id", "image_hash", "updated_at"),
        spark.createDataFrame(expected, "sku_id long, image_hash string, updated_at timestamp"),
        ignore_row_order=True, ignore_nullable=True)


def test_bad_rows_carry_their_reason_and_a_raw_record_without_image_bytes(spark, broken):
    img = broken["img"]
    parsed = broken["bad"].select(F.from_json("raw", RAW_DDL).alias("r"), "reason", "input_date")

    def bad(sku, reason, name):
        return sku, reason, sha(img[name]), len(img[name])

    expected = [
        bad(2, UNDECODABLE_IMAGE, "garbage"), bad(3, UNDECODABLE_IMAGE, "truncated"),
        bad(4, OVERSIZED_IMAGE, "bomb"), bad(None, NULL_ID, "good"), (5, UNDECODABLE_IMAGE, None, None),
        bad(6, DUPLICATE_ID, "old"), (7, DUPLICATE_ID, min(sha(img["tie_a"]), sha(img["tie_b"])), len(img["tie_a"])),
        bad(8, UNDECODABLE_IMAGE, "late_broken"),
    ]
    assert_df_equality(
        parsed.select("r.sku_id", "reason", "r.image_hash", "r.image_bytes"),
        spark.createDataFrame(expected, "sku_id long, reason string, image_hash string, image_bytes int"),
        ignore_row_order=True, ignore_nullable=True)
    assert parsed.where(F.col("input_date").isNotNull()).count() == 0
    for row in broken["bad"].collect():
        assert set(json.loads(row.raw)) == {"sku_id", "title", "updated_at", "image_bytes", "image_hash", "detail"}
        assert len(row.raw) < 1000  # never the image bytes


def test_good_plus_bad_rows_reconcile_with_the_input_and_fit_the_quarantine(broken):
    good, bad = broken["good"].count(), broken["bad"].count()
    assert (good, bad) == (4, 8)
    assert good + bad == broken["source"].count()
    shaped = quarantine_rows(broken["bad"], "catalog", "run-1")
    assert [f.name for f in shaped.schema] == [p.split()[0] for p in QUARANTINE_DDL.split(", ")]
    assert shaped.count() == bad


def test_good_rows_have_the_sku_images_schema(spark, config):
    good_rows, _ = split_images(preprocess_images(catalog(spark, [(1, solid(RED), T0)]), config.features))
    assert good_rows.schema.simpleString() == spark.createDataFrame([], SKU_IMAGES_DDL).schema.simpleString()


# --- the Delta table: MERGE of changes only, Change Data Feed, delta-rs -----------------

@pytest.fixture(scope="module")
def upserted(spark, tmp_path_factory):
    """Three runs: create {1, 2, 3}; full snapshot {1 changed, 2 same, 4 new}; partial {4 retitled}."""
    features = FeaturesConfig()
    path = str(tmp_path_factory.mktemp("sku_images") / "sku_images")
    red, blue, green, yellow, white = (solid(c) for c in (RED, BLUE, GREEN, (230, 220, 20), WHITE))
    later = T0 + dt.timedelta(days=1)
    runs = [
        ([(1, red, T0), (2, blue, T0), (3, green, T0)], True),
        ([(1, yellow, later), (2, blue, later), (4, white, later)], True),
        ([(4, white, later)], False),
    ]
    figures, goods = [], []
    for number, (rows, full) in enumerate(runs, start=1):
        source = catalog(spark, rows)
        if number == 3:
            source = source.withColumn("title", F.lit("renamed"))
        good, _ = split_images(preprocess_images(source, features))
        figures.append(upsert_sku_images(spark, good, path, {"run_id": f"run-{number}"}, full_snapshot=full))
        goods.append(good)
    return {"path": path, "figures": figures, "goods": goods}


def changes(spark, path, version):
    return (spark.read.format("delta").option("readChangeFeed", "true")
            .option("startingVersion", version).option("endingVersion", version).load(path))


def test_first_upsert_creates_the_table_with_change_data_feed_and_no_deletion_vectors(spark, upserted):
    first = upserted["figures"][0]
    assert first == {"version": 1, "rows_inserted": 3, "rows_updated": 0, "rows_deleted": 0, "rows_copied": 0,
                     "created": True}
    properties = spark.sql(f"DESCRIBE DETAIL delta.`{upserted['path']}`").first().properties
    assert properties["delta.enableChangeDataFeed"] == "true"
    assert properties["delta.enableDeletionVectors"] == "false"


def test_merge_rewrites_only_the_changed_sku_inserts_new_and_deletes_vanished(spark, upserted):
    path, second = upserted["path"], upserted["figures"][1]
    assert second == {"version": 2, "rows_inserted": 1, "rows_updated": 1, "rows_deleted": 1,
                      "rows_copied": 1, "created": False}  # 2 shared the file of 1 and 3
    assert_df_equality(
        changes(spark, path, second["version"]).select("sku_id", "_change_type"),
        spark.createDataFrame([(1, "update_preimage"), (1, "update_postimage"), (3, "delete"), (4, "insert")],
                              "sku_id long, _change_type string"),
        ignore_row_order=True, ignore_nullable=True)
    unchanged_row_kept_as_was = F.when(F.col("sku_id") == 2, F.lit(T0)).otherwise(F.col("updated_at"))
    assert_df_equality(read_delta(spark, path, version=2),
                       upserted["goods"][1].withColumn("updated_at", unchanged_row_kept_as_was),
                       ignore_row_order=True, ignore_nullable=True)
    history = spark.sql(f"DESCRIBE HISTORY delta.`{path}`").where("version = 2").first()
    assert json.loads(history.userMetadata) == {"run_id": "run-2"}
    assert spark.conf.get(USER_METADATA_CONF, None) is None


def test_partial_catalog_updates_without_deleting(spark, upserted):
    path, third = upserted["path"], upserted["figures"][2]
    assert third == {"version": 3, "rows_inserted": 0, "rows_updated": 1, "rows_deleted": 0,
                     "rows_copied": 2, "created": False}  # 1 and 2 share the file of 4
    assert [tuple(r) for r in changes(spark, path, 3).select("sku_id", "_change_type", "title").collect()
            if r._change_type == "update_postimage"] == [(4, "update_postimage", "renamed")]
    assert sorted(r.sku_id for r in read_delta(spark, path).collect()) == [1, 2, 4]


@pytest.mark.parametrize("version", [2, 3])
def test_delta_rs_reads_what_spark_wrote(spark, upserted, version):
    path = upserted["path"]
    arrow = deltalake.DeltaTable(path, version=version).to_pyarrow_table()
    theirs = sorted(zip(arrow["sku_id"].to_pylist(), arrow["image_hash"].to_pylist(), arrow["image"].to_pylist()))
    ours = sorted((r.sku_id, r.image_hash, r.image) for r in read_delta(spark, path, version=version).collect())
    assert theirs == ours
    assert len(ours) == 3


# --- a rebuild decodes only new and changed images ------------------------------------

def build_images(spark, config, rows) -> tuple[dict, object]:
    """Write ``rows`` as the catalog (Parquet) and run build_sku_images; (figures, bad rows)."""
    from contextlib import ExitStack

    from adrank.core import layout
    from adrank.runtime.runs import RunReport
    from adrank.storage import delta
    from adrank.tables import run as build

    spark.createDataFrame(rows, CATALOG_DDL).write.mode("overwrite").parquet(
        layout.input_path(config, layout.CATALOG))
    report = RunReport("build_tables")
    with ExitStack() as cached:
        built = build.build_sku_images(spark, config.features, layout.input_path(config, layout.CATALOG),
                                       layout.table_path(config, layout.SKU_IMAGES), report, cached)
        counts, bad = built.counts, built.bad
        bad_rows = sorted((r.reason, r.raw) for r in bad.collect())
    assert counts["input"] == counts["good"] + len(bad_rows)  # nothing lost
    images = delta.read_delta(spark, layout.table_path(config, layout.SKU_IMAGES)).drop("updated_at")
    return {**built.figures, "table": sorted(images.collect()), "bad": bad_rows}, images


def test_a_rebuild_decodes_only_new_and_changed_images_and_stores_what_a_fresh_build_stores(spark, tmp_path):
    from conftest import tiny_config

    first = [(sku, f"title {sku}", noisy_jpeg(sku), T0, 3) for sku in range(1, 6)]
    first += [(None, "no id", solid(RED), T0, 3), (9, "broken", b"not an image", T0, 3)]
    second = [row for row in first if row[0] != 2]
    second = [(3, "renamed", *row[2:]) if row[0] == 3 else row for row in second]
    second += [(2, "title 2", noisy_jpeg(102), T0, 3), (6, "title 6", noisy_jpeg(6), T0, 3)]

    config = tiny_config(tmp_path / "incremental")
    assert build_images(spark, config, first)[0]["images_decoded"] == 7
    rebuilt, _ = build_images(spark, config, second)
    assert (rebuilt["images_decoded"], rebuilt["images_reused"]) == (4, 4)  # 2, 6 and the 2 broken rows
    assert (rebuilt["rows_inserted"], rebuilt["rows_updated"], rebuilt["rows_deleted"]) == (1, 2, 0)
    fresh, _ = build_images(spark, tiny_config(tmp_path / "fresh"), second)
    assert fresh["images_reused"] == 0
    assert rebuilt["table"] == fresh["table"]  # same rows, same stored image bytes
    assert rebuilt["bad"] == fresh["bad"]

    resized, _ = build_images(spark, tiny_config(tmp_path / "incremental", "features.image_size=48"), second)
    assert (resized["images_decoded"], resized["images_reused"]) == (8, 0)  # another preprocessing: all again
    assert {row.height for row in resized["table"]} == {48}
    again, _ = build_images(spark, tiny_config(tmp_path / "incremental", "features.image_size=48"), second)
    assert again["images_reused"] == 6  # the new preprocessing was recorded with the table


# --- a rebuild of an unchanged catalog changes nothing (issue 10, case 8) ---------------

def commits_after(spark, path, version):
    """``[(version, operation, operationMetrics, userMetadata)]`` of the commits after ``version``."""
    history = spark.sql(f"DESCRIBE HISTORY delta.`{path}`").where(f"version > {version}").orderBy("version")
    return [(r.version, r.operation, r.operationMetrics, r.userMetadata) for r in history.collect()]


def change_feed(spark, path, start, end):
    frame = (spark.read.format("delta").option("readChangeFeed", "true")
             .option("startingVersion", start).option("endingVersion", end).load(path))
    return sorted((r.sku_id, r._change_type) for r in frame.collect())


def live_files_by_sku(spark, path):
    rows = delta.read_delta(spark, path).select("sku_id", F.col("_metadata.file_path").alias("file")).collect()
    return {r.sku_id: r.file for r in rows}


def test_an_unchanged_rebuild_changes_no_row_and_a_changed_sku_rewrites_only_its_file(spark, tmp_path):
    from conftest import tiny_config

    config = tiny_config(tmp_path)
    rows = [(sku, f"title {sku}", solid((sku * 9, 100, 200), (40, 30)), T0, sku % 3) for sku in range(1, 41)]
    several_files = {"spark.sql.shuffle.partitions": "4", "spark.sql.adaptive.coalescePartitions.enabled": "false"}
    with delta.session_conf(spark, several_files):  # so that a change has files to leave alone
        build_images(spark, config, rows)
    path = layout.table_path(config, layout.SKU_IMAGES)
    first = delta.latest_version(spark, path)
    files = live_files_by_sku(spark, path)
    assert len(set(files.values())) > 1

    unchanged, _ = build_images(spark, config, rows)
    commits = commits_after(spark, path, first)
    assert [(op, json.loads(meta)["catalog_rows"]) for _, op, _, meta in commits] == [("SET TBLPROPERTIES", 40)]
    assert unchanged["version"] == commits[-1][0]
    assert (unchanged["rows_inserted"], unchanged["rows_updated"], unchanged["rows_deleted"],
            unchanged["rows_copied"]) == (0, 0, 0, 0)
    assert live_files_by_sku(spark, path) == files  # no file added or removed
    assert change_feed(spark, path, first + 1, unchanged["version"]) == []

    changed = [(5, "renamed", *row[2:]) if row[0] == 5 else row for row in rows if row[0] != 7]
    changed.append((41, "new", solid((1, 2, 3), (40, 30)), T0, 1))
    rebuilt, _ = build_images(spark, config, changed)
    (version, operation, metrics, _), = commits_after(spark, path, unchanged["version"])
    assert (version, operation) == (rebuilt["version"], "MERGE")
    touched = {files[5], files[7]}
    kept_rows = sum(1 for sku, file in files.items() if file in touched) - 2
    assert (rebuilt["rows_inserted"], rebuilt["rows_updated"], rebuilt["rows_deleted"]) == (1, 1, 1)
    assert (int(metrics["numTargetRowsCopied"]), int(metrics["numTargetFilesRemoved"])) == (kept_rows, len(touched))
    assert rebuilt["rows_copied"] == kept_rows
    assert change_feed(spark, path, unchanged["version"] + 1, version) == [
        (5, "update_postimage"), (5, "update_preimage"), (7, "delete"), (41, "insert")]
    untouched = {sku: file for sku, file in files.items() if file not in touched}
    assert {sku: file for sku, file in live_files_by_sku(spark, path).items() if sku in untouched} == untouched
