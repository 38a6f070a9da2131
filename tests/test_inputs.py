"""Raw-input reads: the catalog as a folder of image files plus a CSV, and as Delta."""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import os
from pathlib import Path

import pytest
from PIL import Image
from pyspark.sql import functions as F

from adrank.core import layout
from adrank.tables import inputs
from adrank.tables.images import preprocess_images, split_images


def read_catalog(spark, config):
    """The catalog of ``config``'s inputs, read as build_tables reads it."""
    return inputs.read_catalog(spark, layout.input_path(config, layout.CATALOG), config.features.max_image_bytes)


def png_bytes(colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def test_catalog_from_csv_and_image_files(spark, config, tmp_path):
    folder = tmp_path / "inputs" / "catalog"
    (folder / "img").mkdir(parents=True)
    (folder / "img" / "red.png").write_bytes(png_bytes((255, 0, 0)))
    (folder / "img" / "sub").mkdir()
    (folder / "img" / "sub" / "blue.png").write_bytes(png_bytes((0, 0, 255)))
    (folder / "catalog.csv").write_text(
        "sku_id,title,image_path,updated_at,category_id\n"
        "1,red lamp,img/red.png,2026-11-01T00:00:00Z,3\n"
        "2,blue lamp,./img/sub/blue.png,2026-11-01T00:00:00Z,4\n"
        "3,lost lamp,img/missing.png,2026-11-01T00:00:00Z,3\n"
    )
    catalog = read_catalog(spark, config)
    images = {r.sku_id: r.image for r in catalog.collect()}
    assert images[1] == png_bytes((255, 0, 0))
    assert images[3] is None
    good, bad = split_images(preprocess_images(catalog, config.features))
    assert images[2] == png_bytes((0, 0, 255))
    assert sorted(r.sku_id for r in good.collect()) == [1, 2]
    assert [r.reason for r in bad.collect()] == ["undecodable_image"]


def test_catalog_as_delta_table(spark, config):
    rows = [(7, "t", png_bytes((0, 255, 0)), None, 1)]
    frame = spark.createDataFrame(rows, "sku_id long, title string, image binary, updated_at timestamp, category_id int")
    frame.write.format("delta").save(layout.input_path(config, layout.CATALOG))
    assert [r.image for r in read_catalog(spark, config).collect()] == [rows[0][2]]


# --- the catalog reads that used to fail the whole build (issue 10, cases 7 and 8) -----

OVER_2_GIB = 2_200_000_000  # past what Spark's binaryFile reader can hold (2 GiB - 1 bytes)
CSV_HEADER = "sku_id,title,image_path,updated_at,category_id\n"
RAW_DDL = "sku_id long, updated_at timestamp, image_bytes long, detail string"


def sparse_file(path, size: int) -> None:
    """A file of ``size`` bytes that takes no disk (a hole): reading it would take seconds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    os.truncate(path, size)


def split_catalog(spark, config):
    """``({sku_id: image}, [(sku_id, reason, raw record)])`` of the catalog as read and checked."""
    catalog = read_catalog(spark, config)
    good, bad = split_images(preprocess_images(catalog, config.features))
    parsed = bad.select(F.from_json("raw", RAW_DDL).alias("r"), "reason")
    bad_rows = sorted((r.r.sku_id, r.reason, r.r) for r in parsed.collect())
    return {r.sku_id: r.image_hash for r in good.collect()}, bad_rows


def test_image_files_over_max_image_bytes_are_never_read(spark, config, tmp_path):
    folder = tmp_path / "inputs" / "catalog"
    (folder / "img").mkdir(parents=True)
    (folder / "img" / "red.png").write_bytes(png_bytes((255, 0, 0)))
    sparse_file(folder / "img" / "huge.png", OVER_2_GIB)  # referenced
    sparse_file(folder / "leftovers" / "old_dump.bin", OVER_2_GIB)  # referenced by no row
    (folder / "catalog.csv").write_text(
        CSV_HEADER + "1,red lamp,img/red.png,2026-11-01T00:00:00Z,3\n2,huge lamp,img/huge.png,2026-11-01T00:00:00Z,3\n")
    good, bad = split_catalog(spark, config)
    assert list(good) == [1]
    assert [(sku, reason, raw.image_bytes) for sku, reason, raw in bad] == [(2, "oversized_image", OVER_2_GIB)]
    assert "max_image_bytes" in bad[0][2].detail


def test_binary_file_reader_drops_files_over_the_limit_before_reading_them(spark, tmp_path):
    """What the catalog reader relies on: a pushed-down ``length`` filter is applied to the
    file's status, before its content is read (a 2.2 GB file would fail the read)."""
    sparse_file(tmp_path / "huge.bin", OVER_2_GIB)
    (tmp_path / "small.bin").write_bytes(b"abc")
    files = spark.read.format("binaryFile").load(str(tmp_path))
    assert [(r.length,) for r in files.select("length").orderBy("length").collect()] == [(3,), (OVER_2_GIB,)]
    small = files.where(F.col("length") <= 64 << 20).select("content").collect()
    assert [bytes(r.content) for r in small] == [b"abc"]


def test_max_image_bytes_applies_to_parquet_images_too(spark, config):
    rows = [(1, "t", png_bytes((0, 255, 0)), None, 1), (2, "big", b"\x89PNG" + bytes(5000), None, 1)]
    frame = spark.createDataFrame(rows, "sku_id long, title string, image binary, updated_at timestamp, category_id int")
    frame.write.parquet(layout.input_path(config, layout.CATALOG))
    small = dataclasses.replace(config, features=dataclasses.replace(config.features, max_image_bytes=4096))
    good, bad = split_catalog(spark, small)
    assert list(good) == [1]
    assert [(sku, reason, raw.image_bytes) for sku, reason, raw in bad] == [(2, "oversized_image", 5004)]


WRITTEN = {  # updated_at as written, in each Parquet unit (the second row has none)
    "ns": ["2026-11-01T12:00:00.123456789", None, "1969-12-31T23:59:59.999999999"],
    "us": ["2026-11-01T12:00:00.123456", None, "1969-12-31T23:59:59.999999"],
    "ms": ["2026-11-01T12:00:00.123", None, "1969-12-31T23:59:59.999"],
    "s": ["2026-11-01T12:00:00", None, "1969-12-31T23:59:59"],
}
UNITS = {"ns": ("ns", "UTC"), "ns_naive": ("ns", None), "us": ("us", "UTC"), "ms": ("ms", "UTC"),
         "s": ("s", "UTC"), "int96": ("us", None)}  # (pyarrow writes a pre-1970 INT96 of -1 ns wrongly)


def write_parquet_catalog(folder: Path, unit: str, first_sku: int = 1) -> list[tuple[int, dt.datetime | None]]:
    """A pandas/pyarrow-written catalog file whose ``updated_at`` has the Parquet type ``unit``;
    returns the ``(sku_id, updated_at)`` Spark should read (UTC, floored to microseconds)."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    arrow_unit, zone = UNITS[unit]
    written = WRITTEN[arrow_unit]
    skus = [first_sku + i for i in range(len(written))]
    times = pa.array([None if t is None else pd.Timestamp(t).value for t in written], pa.int64())
    table = pa.table({
        "sku_id": pa.array(skus, pa.int64()), "title": [f"t{s}" for s in skus],
        "image": pa.array([png_bytes((9, 9, 9))] * len(skus), pa.binary()),
        "updated_at": times.cast(pa.timestamp("ns", zone)).cast(pa.timestamp(arrow_unit, zone)),
        "category_id": pa.array([1] * len(skus), pa.int32()),
    })
    folder.mkdir(parents=True, exist_ok=True)
    file = folder / f"part-{first_sku:05d}.parquet"
    if unit == "int96":
        pq.write_table(table, file, use_deprecated_int96_timestamps=True)
    else:  # version 2.6 keeps nanoseconds (pandas' default unit) as TIMESTAMP(NANOS)
        pq.write_table(table, file, version="2.6", coerce_timestamps=None)
    expected = [None if t is None else pd.Timestamp(t).floor("us").to_pydatetime() for t in written]
    return list(zip(skus, expected, strict=True))


@pytest.mark.parametrize("unit", list(UNITS))
def test_parquet_timestamps_of_any_unit_are_read(spark, config, unit):
    expected = write_parquet_catalog(Path(layout.input_path(config, layout.CATALOG)), unit)
    got = sorted((r.sku_id, r.updated_at) for r in read_catalog(spark, config).collect())
    assert got == expected


def test_parquet_files_of_different_timestamp_units_are_read_together(spark, config):
    folder = Path(layout.input_path(config, layout.CATALOG))
    expected = write_parquet_catalog(folder, "us") + write_parquet_catalog(folder, "ns", first_sku=10)
    expected += write_parquet_catalog(folder, "int96", first_sku=20)
    got = sorted((r.sku_id, r.updated_at) for r in read_catalog(spark, config).collect())
    assert got == expected


def test_csv_updated_at_that_does_not_parse_is_bad_timestamp_and_a_missing_one_is_kept(spark, config, tmp_path):
    folder = tmp_path / "inputs" / "catalog"
    folder.mkdir(parents=True)
    (folder / "red.png").write_bytes(png_bytes((255, 0, 0)))
    (folder / "catalog.csv").write_text(
        CSV_HEADER + "1,ok,red.png,2026-11-01T00:00:00Z,3\n2,garbage,red.png,next tuesday,3\n"
        "3,no time,red.png,,3\n4,bad day,red.png,2026-02-30T00:00:00Z,3\n")
    good, bad = split_catalog(spark, config)
    assert sorted(good) == [1, 3]  # a null updated_at is accepted, as from Parquet (below)
    assert [(sku, reason) for sku, reason, _ in bad] == [(2, "bad_timestamp"), (4, "bad_timestamp")]
    assert "next tuesday" in bad[0][2].detail
    updated = {r.sku_id: r.updated_at for r in read_catalog(spark, config).collect()}
    assert updated[3] is None


def test_parquet_null_updated_at_is_kept_like_the_csv_one(spark, config):
    rows = [(7, "t", png_bytes((0, 255, 0)), None, 1)]
    spark.createDataFrame(rows, "sku_id long, title string, image binary, updated_at timestamp, category_id int") \
        .write.parquet(layout.input_path(config, layout.CATALOG))
    good, bad = split_catalog(spark, config)
    assert (list(good), bad) == ([7], [])


def test_absolute_image_paths_inside_and_outside_the_catalog_folder(spark, config, tmp_path):
    folder = tmp_path / "inputs" / "catalog"
    outside = tmp_path / "elsewhere" / "images"
    colours = {sku: (40 * sku, 255 - 40 * sku, 7) for sku in range(1, 8)}
    files = {1: folder / "img" / "a.png", 2: folder / "img" / "b [1].png", 3: outside / "c.png",
             4: outside / "d,e {x}.png", 5: outside / "sub" / "f.png", 6: tmp_path / "elsewhere" / "g.png",
             7: folder / "h.png"}
    for sku, file in files.items():
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_bytes(png_bytes(colours[sku]))
    paths = {1: str(files[1]), 2: f"file:{files[2]}", 3: str(files[3]), 4: f"file://{files[4]}",
             5: f"file:{files[5]}", 6: "../../elsewhere/g.png", 7: "./img/../h.png",
             8: str(outside / "missing.png"), 9: "file:/no/such/folder/x.png", 10: "nosuchscheme://x/y.png"}
    lines = [f'{sku},t{sku},"{p}",2026-11-01T00:00:00Z,3' for sku, p in paths.items()]
    (folder / "catalog.csv").write_text(CSV_HEADER + "\n".join(lines) + "\n")
    sparse_file(outside / "unrelated" / "dump.bin", OVER_2_GIB)  # a sibling tree: never listed into the read

    images = {r.sku_id: r.image for r in read_catalog(spark, config).collect()}
    assert {sku: bytes(images[sku]) for sku in files} == {sku: png_bytes(c) for sku, c in colours.items()}
    good, bad = split_catalog(spark, config)
    assert sorted(good) == list(range(1, 8))
    assert [(sku, reason) for sku, reason, _ in bad] == [(s, "undecodable_image") for s in (8, 9, 10)]
    assert "missing.png" in bad[0][2].detail


def test_image_files_read_are_the_referenced_ones_only(spark, config, tmp_path):
    folder = tmp_path / "inputs" / "catalog"
    outside = tmp_path / "shared"
    for file in (folder / "img" / "a.png", folder / "img" / "unused.png", outside / "b.png",
                 outside / "unused.png", outside / "deep" / "tree" / "c.png"):
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_bytes(png_bytes((1, 2, 3)))
    (folder / "catalog.csv").write_text(
        CSV_HEADER + f"1,a,img/a.png,,1\n2,b,{outside / 'b.png'},,1\n")
    read = read_catalog(spark, config).inputFiles()
    assert sorted(f.removeprefix("file://").removeprefix("file:") for f in read) == sorted(
        [str(folder / "catalog.csv"), str(folder / "img" / "a.png"), str(outside / "b.png")])
