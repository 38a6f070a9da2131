"""Raw-input reads: the catalog as a folder of image files plus a CSV, and as Delta."""

from __future__ import annotations

import io

from PIL import Image

from adrank import inputs
from adrank.features.images import preprocess_images, split_images


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
    catalog = inputs.read_catalog(spark, config)
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
    frame.write.format("delta").save(inputs.input_path(config, inputs.CATALOG))
    assert [r.image for r in inputs.read_catalog(spark, config).collect()] == [rows[0][2]]
