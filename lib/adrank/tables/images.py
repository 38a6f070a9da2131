"""SKU images: decode, square-crop and re-encode catalog images once, at table-build time.

Two pure transforms make the raw catalog the ``sku_images`` table (schema and bad-row
rules: docs/tables.md, :data:`SKU_IMAGES_DDL`):

* :func:`preprocess_images` decodes every row on the executors (``mapInPandas``) and
  keeps every row (a broken image gets a ``status`` other than ``ok`` and a ``detail``).
  Rows whose original bytes are already stored by the same preprocessing
  (``stored_keys``), and rows rejected before decoding, are not decoded.
* :func:`split_images` splits the result into good rows and bad rows (``raw``, ``reason``,
  ``input_date``) for :func:`adrank.tables.quarantine.quarantine_rows`.

Per image, :func:`decode_resize_encode` (also callable from a plain loop) never raises:
the header's pixel count is checked before decoding, :func:`to_rgb` gives the image as
viewers show it, the centre square is resized to ``image_size`` and re-encoded.
"""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Iterator
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql.types import StringType

from adrank.core.config import FeaturesConfig
from adrank.tables.quarantine import (
    BAD_TIMESTAMP,
    DUPLICATE_ID,
    NULL_ID,
    OVERSIZED_IMAGE,
    UNDECODABLE_IMAGE,
    first_failing_reason,
)

if TYPE_CHECKING:
    from PIL import Image

STATUS_OK = "ok"
PREPROCESSING_VERSION = 2  # bump when decode_resize_encode changes what it stores (2: bit depth, EXIF)
CHANNELS = 3
JPEG_QUALITY = 90
PNG_COMPRESS_LEVEL = 1  # zlib level 1: ~2x faster than 6 for +~9% bytes on 64x64 images
WHITE = (255, 255, 255, 255)
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
_WIDE_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")  # grey samples wider than 8 bits
_TIFF_BITS_PER_SAMPLE, _TIFF_SAMPLE_FORMAT, _TIFF_SIGNED = 258, 339, 2

SKU_IMAGES_DDL = (
    "sku_id long, title string, image binary, image_format string, height int, width int, "
    "channels int, image_hash string, updated_at timestamp, category_id int"
)
SKU_IMAGES_COLUMNS = tuple(part.split()[0] for part in SKU_IMAGES_DDL.split(", "))
RESULT_DDL = (
    "image binary, image_format string, height int, width int, channels int, orig_width int, "
    "orig_height int, orig_bytes int, image_hash string, status string, detail string"
)
RESULT_COLUMNS = tuple(part.split()[0] for part in RESULT_DDL.split(", "))
_INT_COLUMNS = ("height", "width", "channels", "orig_width", "orig_height", "orig_bytes")
# Inside mapInPandas, updated_at travels as microseconds since the epoch (no time-zone games).
_PANDAS_INPUT_DDL = "sku_id long, title string, updated_at_us long, category_id int"
PREPROCESSED_DDL = f"{_PANDAS_INPUT_DDL}, {RESULT_DDL}"  # the mapInPandas output; orig_bytes becomes long
# Optional columns of a catalog read from a CSV and image files (adrank.tables.inputs.read_catalog):
IMAGE_PATH = "image_path"  # the image_path as written
IMAGE_FILE_BYTES = "image_file_bytes"  # size of the file it names (null: no such file); image null if not read


def decode_resize_encode(image_bytes: bytes | None, image_size: int, store_format: str,
                         max_pixels: int) -> dict[str, Any]:
    """Decodes one encoded image, square-crops it to RGB ``image_size`` and re-encodes it.

    Never raises for bad input: failures come back as ``status`` ``undecodable_image`` or
    ``oversized_image`` with a ``detail``. Shared by the Spark UDF and plain loops.

    Args:
        image_bytes: The encoded image (any PIL format and mode), or None.
        image_size: Side of the stored square image, in pixels.
        store_format: ``"PNG"`` (lossless) or ``"JPEG"`` (quality 90).
        max_pixels: Largest width x height accepted, checked before decoding.

    Returns:
        A dict with the keys of :data:`RESULT_COLUMNS`; image fields are None on failure.
    """
    if image_bytes is None:
        return _result(None, UNDECODABLE_IMAGE, "no image bytes")
    data = bytes(image_bytes)
    out = _result(data, STATUS_OK, None)
    try:
        rgb = _decode_square_rgb(data, image_size, max_pixels, out)
        encoded = _encode(rgb, store_format)
    except _Oversized as exc:
        return {**out, "status": OVERSIZED_IMAGE, "detail": str(exc)}
    except Exception as exc:  # noqa: BLE001 - any decoder failure is a bad row, not a crash
        return {**out, **_bomb_or_undecodable(exc)}
    return {**out, "image": encoded, "image_format": store_format.upper(), "height": rgb.height,
            "width": rgb.width, "channels": CHANNELS}


_OBJECT_ADDRESS = re.compile(r" at 0x[0-9a-f]+>")


class _Oversized(ValueError):
    """The header declares more pixels than allowed."""


def _result(data: bytes | None, status: str, detail: str | None) -> dict[str, Any]:
    empty = dict.fromkeys(RESULT_COLUMNS)
    if data is not None:
        empty.update(orig_bytes=len(data), image_hash=hashlib.sha256(data).hexdigest())
    return {**empty, "status": status, "detail": detail}


def _bomb_or_undecodable(exc: Exception) -> dict[str, str]:
    from PIL import Image

    status = OVERSIZED_IMAGE if isinstance(exc, Image.DecompressionBombError) else UNDECODABLE_IMAGE
    message = _OBJECT_ADDRESS.sub(">", str(exc))  # "<_io.BytesIO object at 0x7f..>": differs per run
    return {"status": status, "detail": f"{type(exc).__name__}: {message}"[:500]}


def _decode_square_rgb(data: bytes, image_size: int, max_pixels: int, out: dict[str, Any]) -> Image.Image:
    """Opens lazily, checks the declared size, then decodes (at reduced scale if JPEG)."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        out["orig_width"], out["orig_height"] = width, height = img.size
        if width * height > max_pixels:
            raise _Oversized(f"{width}x{height} = {width * height} pixels > max_image_pixels {max_pixels}")
        if img.format == "JPEG":
            img.draft("RGB", (image_size, image_size))
        return to_rgb(img, image_size)


def to_rgb(img: Image.Image, square_side: int | None = None) -> Image.Image:
    """The image as viewers show it, in 8-bit RGB.

    Frame 0 of an animation; EXIF orientation applied (``ImageOps.exif_transpose``); any
    mode and bit depth mapped to 8 bits (:func:`_eight_bit`); alpha, palette transparency
    and colour keys composited on a white background.

    Args:
        img: An opened PIL image, loaded or not (``draft`` may have been called). Rotated
            in place when its EXIF says so.
        square_side: If given, the centre square is resized to this side, before the alpha
            is composited (resize premultiplies alpha, so this equals compositing first up to rounding).

    Returns:
        An RGB image.
    """
    from PIL import ImageOps

    img.seek(0)  # the first frame (a no-op for a freshly opened image)
    img.load()
    ImageOps.exif_transpose(img, in_place=True)
    working = _eight_bit(img)
    if square_side is not None:
        working = _square(working, square_side)
    return _flatten_rgb(working)


def _eight_bit(img: Image.Image) -> Image.Image:
    """RGBA if the image has any transparency, RGB or L as is, wide grey scaled, anything else RGB."""
    if img.mode in _WIDE_MODES:
        return _scaled_grey(img)
    if img.mode in _ALPHA_MODES or "transparency" in img.info:
        return img.convert("RGBA")
    return img if img.mode in ("RGB", "L") else img.convert("RGB")


def _scaled_grey(img: Image.Image) -> Image.Image:
    """L from 16/32-bit int or float grey, full scale -> 255 (RGBA if a colour key is transparent)."""
    from PIL import Image

    samples = np.asarray(img)
    scaled = samples.astype(np.float32)
    scaled *= 255 / _full_scale(img)
    grey = Image.fromarray(np.rint(np.clip(scaled, 0, 255, out=scaled), out=scaled).astype(np.uint8), "L")
    key = img.info.get("transparency")
    if not isinstance(key, int | float):
        return grey
    rgba = grey.convert("RGBA")
    rgba.putalpha(Image.fromarray(np.where(samples == key, 0, 255).astype(np.uint8), "L"))
    return rgba


def _full_scale(img: Image.Image) -> float:
    """The sample value of white: 1.0 for float; for "I" the TIFF's bits per sample, else 16 bits.

    Pillow holds 16-bit data in "I;16*" and in "I" (PGM/PPM, rescaled to 16 bits); a
    TIFF's "I" may hold 32-bit (or signed 16-bit) samples: its own tags say which.
    Negative samples are black.
    """
    if img.mode == "F":
        return 1.0
    tags = getattr(img, "tag_v2", None) if img.mode == "I" else None
    if tags is None or _TIFF_BITS_PER_SAMPLE not in tags:
        return 65535.0
    bits = tags[_TIFF_BITS_PER_SAMPLE]
    bits = bits[0] if isinstance(bits, tuple) else bits
    signed = tags.get(_TIFF_SAMPLE_FORMAT, 1) in (_TIFF_SIGNED, (_TIFF_SIGNED,))
    return float(2 ** (int(bits) - signed) - 1)


def _square(img: Image.Image, image_size: int) -> Image.Image:
    """Resizes the centre square of ``img`` to ``image_size`` (shorter side, centre crop)."""
    from PIL import Image

    width, height = img.size
    side = min(width, height)
    box = ((width - side) / 2, (height - side) / 2, (width + side) / 2, (height + side) / 2)
    return img.resize((image_size, image_size), Image.Resampling.BICUBIC, box=box, reducing_gap=2.0)


def _flatten_rgb(img: Image.Image) -> Image.Image:
    """RGB, with any alpha composited on white."""
    from PIL import Image

    if img.mode == "RGBA":
        return Image.alpha_composite(Image.new("RGBA", img.size, WHITE), img).convert("RGB")
    return img if img.mode == "RGB" else img.convert("RGB")


def _encode(img: Image.Image, store_format: str) -> bytes:
    buffer = io.BytesIO()
    if store_format.upper() == "JPEG":
        img.save(buffer, "JPEG", quality=JPEG_QUALITY)
    else:
        img.save(buffer, "PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


def preprocess_batches(batches: Iterator[pd.DataFrame], image_size: int, store_format: str,
                       max_pixels: int) -> Iterator[pd.DataFrame]:
    """mapInPandas body: replaces ``image`` by the preprocessed image and its facts.

    Args:
        batches: Catalog batches (``sku_id``, ``title``, ``updated_at_us``, ``category_id``, ``image``).
        image_size: Side of the stored square image.
        store_format: ``"PNG"`` or ``"JPEG"``.
        max_pixels: Largest declared width x height decoded.

    Yields:
        One frame per batch, same rows, columns of :data:`PREPROCESSED_DDL`.
    """
    for batch in batches:
        results = [decode_resize_encode(b, image_size, store_format, max_pixels) for b in batch["image"]]
        frame = pd.DataFrame.from_records(results, columns=list(RESULT_COLUMNS), index=batch.index)
        for name in _INT_COLUMNS:
            frame[name] = frame[name].astype("Int32")
        yield pd.concat([batch.drop(columns="image"), frame], axis=1)


def preprocess_images(catalog_df: DataFrame, features_cfg: FeaturesConfig,
                      partitions: int | None = None, stored_keys: DataFrame | None = None) -> DataFrame:
    """Decodes, square-crops and re-encodes the catalog images; keeps every row.

    Args:
        catalog_df: Raw catalog rows (``category_id`` optional; extra columns dropped).
        features_cfg: ``image_size``, ``image_store_format``, ``max_image_pixels``.
        partitions: If given, repartition (round robin) first so all cores decode.
        stored_keys: ``sku_id``, ``image_hash`` of the images already stored in
            ``sku_images`` by the same preprocessing (:func:`preprocessing_fingerprint`).
            A row whose ``sku_id`` and original-bytes sha256 are among them is not decoded
            again: it comes out ``ok`` with a null ``image`` (the stored one stands; see
            :func:`adrank.tables.store.upsert_sku_images`) and null ``orig_width``/``orig_height``.

    Returns:
        The catalog columns plus ``image_format``, ``height``, ``width``, ``channels``,
        ``orig_width``, ``orig_height``, ``orig_bytes`` (long), ``image_hash``, ``status``,
        ``detail``. Rows rejected before decoding have that reason as ``status``.
    """
    checked = _catalog_columns(catalog_df, features_cfg.max_image_bytes)
    rejected = _rejected_rows(checked.where(F.col("rejected").isNotNull()))
    source = checked.where(F.col("rejected").isNull()).drop("rejected", "rejected_detail", "orig_bytes")
    reused = None
    if stored_keys is not None:
        source, reused = _split_stored(source, stored_keys, features_cfg)
    if partitions:
        source = source.repartition(partitions)
    body = partial(preprocess_batches, image_size=features_cfg.image_size,
                   store_format=features_cfg.image_store_format, max_pixels=features_cfg.max_image_pixels)
    decoded = source.mapInPandas(body, PREPROCESSED_DDL).withColumn("orig_bytes", F.col("orig_bytes").cast("long"))
    if reused is not None:
        decoded = decoded.unionByName(reused)
    decoded = decoded.unionByName(rejected)
    return decoded.withColumn("updated_at", F.timestamp_micros("updated_at_us")).drop("updated_at_us")


def preprocessing_fingerprint(features_cfg: FeaturesConfig) -> str:
    """What the stored images depend on: this code's version and the image settings."""
    return (f"v{PREPROCESSING_VERSION}:{features_cfg.image_size}:{features_cfg.image_store_format}:"
            f"{features_cfg.max_image_pixels}")


def _split_stored(source: DataFrame, stored_keys: DataFrame,
                  features_cfg: FeaturesConfig) -> tuple[DataFrame, DataFrame]:
    """``(rows to decode, rows whose image is already stored)``; the latter as preprocessed rows.

    The image bytes never travel through a join with the whole catalog: the rows are
    matched by their keys (``sku_id``, sha256) alone, and only the keys of rows to decode
    (new, changed, broken: usually few, so broadcast) select the rows with bytes.
    """
    keys = ["sku_id", "image_hash"]
    hashed = source.withColumn("image_hash", F.sha2("image", 256))
    facts = hashed.select("sku_id", "title", "updated_at_us", "category_id", "image_hash",
                          F.length("image").alias("orig_bytes"))
    stored = stored_keys.select(*keys)  # one row per sku_id (a sku_images key)
    matchable = F.col("sku_id").isNotNull() & F.col("image_hash").isNotNull()
    changed = facts.where(matchable).select(*keys).join(stored, keys, "left_anti")  # repeats: harmless in a semi join
    to_decode = (hashed.where(~matchable)
                 .unionByName(hashed.where(matchable).join(changed, keys, "left_semi"))
                 .drop("image_hash"))
    reused = facts.join(stored, keys, "left_semi").select(
        "sku_id", "title", "updated_at_us", "category_id", F.lit(None).cast("binary").alias("image"),
        F.lit(features_cfg.image_store_format).alias("image_format"),
        *(F.lit(features_cfg.image_size).alias(c) for c in ("height", "width")),
        F.lit(CHANNELS).alias("channels"), *(F.lit(None).cast("int").alias(c) for c in ("orig_width", "orig_height")),
        F.col("orig_bytes").cast("long").alias("orig_bytes"), "image_hash", F.lit(STATUS_OK).alias("status"),
        F.lit(None).cast("string").alias("detail"))
    return to_decode, reused


def _catalog_columns(catalog_df: DataFrame, max_image_bytes: int) -> DataFrame:
    """Typed catalog columns, ``orig_bytes`` and the checks made before decoding: ``rejected``
    (a reason code, null if none failed) and ``rejected_detail``."""
    columns = set(catalog_df.columns)
    category = F.col("category_id") if "category_id" in columns else F.lit(None)
    updated_at, bad_time = _updated_at(catalog_df)
    file_bytes = F.col(IMAGE_FILE_BYTES) if IMAGE_FILE_BYTES in columns else F.lit(None)
    size = F.coalesce(file_bytes, F.length("image")).cast("long")
    no_file = F.col(IMAGE_PATH).isNull() | file_bytes.isNull() if IMAGE_PATH in columns else F.lit(False)
    checks = [
        (bad_time, BAD_TIMESTAMP, F.concat(F.lit("updated_at is not a timestamp: "), F.col("updated_at"))),
        (size > max_image_bytes, OVERSIZED_IMAGE,
         F.format_string(f"%d bytes > features.max_image_bytes {max_image_bytes}", size)),
        (no_file, UNDECODABLE_IMAGE, F.concat(F.lit("no image file at "), F.coalesce(F.col(IMAGE_PATH), F.lit("")))
         if IMAGE_PATH in columns else F.lit(None)),
    ]
    detail = F.lit(None).cast("string")
    for condition, _, text in reversed(checks):
        detail = F.when(condition, text).otherwise(detail)
    return catalog_df.select(
        F.col("sku_id").cast("long").alias("sku_id"),
        F.col("title").cast("string").alias("title"),
        F.unix_micros(updated_at).alias("updated_at_us"),
        category.cast("int").alias("category_id"),
        F.col("image").cast("binary").alias("image"),
        size.alias("orig_bytes"),
        first_failing_reason(*((c, code) for c, code, _ in checks)).alias("rejected"),
        detail.alias("rejected_detail"),
    )


def _updated_at(catalog_df: DataFrame) -> tuple[Column, Column]:
    """``(updated_at as a timestamp, it was text that does not parse)``. Text (a CSV catalog)
    is parsed like a Spark cast (ISO-8601; no zone: the session's); empty or null is null."""
    if not isinstance(catalog_df.schema["updated_at"].dataType, StringType):
        return F.col("updated_at").cast("timestamp"), F.lit(False)
    text = F.trim(F.col("updated_at"))
    parsed = F.when(text != "", text.try_cast("timestamp"))
    return parsed, (text != "") & parsed.isNull()


def _rejected_rows(rejected: DataFrame) -> DataFrame:
    """Rows rejected before decoding, as preprocessed rows with the reason as ``status``."""
    return rejected.select(
        "sku_id", "title", "updated_at_us", "category_id", F.lit(None).cast("binary").alias("image"),
        F.lit(None).cast("string").alias("image_format"),
        *(F.lit(None).cast("int").alias(c) for c in ("height", "width", "channels", "orig_width", "orig_height")),
        "orig_bytes", F.sha2("image", 256).alias("image_hash"), F.col("rejected").alias("status"),
        F.col("rejected_detail").alias("detail"))


def split_images(preprocessed: DataFrame) -> tuple[DataFrame, DataFrame]:
    """Splits preprocessed rows into ``sku_images`` rows and bad rows.

    Decoding runs once per action on ``preprocessed``: persist it when both outputs are used.

    Args:
        preprocessed: The output of :func:`preprocess_images`.

    Returns:
        ``(good, bad)``: good has the ``sku_images`` schema, one row per ``sku_id``; bad
        has ``raw`` (JSON without image bytes), ``reason`` and a null ``input_date``.
        Their row counts add up to the input's.
    """
    checked = preprocessed.withColumn("reason", first_failing_reason(
        (F.col("sku_id").isNull(), NULL_ID),
        (F.col("status") == OVERSIZED_IMAGE, OVERSIZED_IMAGE),
        (F.col("status") == BAD_TIMESTAMP, BAD_TIMESTAMP),
        (F.col("status") != STATUS_OK, UNDECODABLE_IMAGE),
    ))
    ranked = _flag_duplicates(checked)
    good = ranked.where(F.col("reason").isNull()).select(*SKU_IMAGES_COLUMNS)
    return good, _bad_rows(ranked.where(F.col("reason").isNotNull()))


def _flag_duplicates(checked: DataFrame) -> DataFrame:
    """Marks all but the latest row (then largest hash) of each valid ``sku_id`` as duplicates."""
    latest_first = Window.partitionBy("sku_id", F.col("reason").isNull()).orderBy(
        F.col("updated_at").desc_nulls_last(), F.col("image_hash").desc_nulls_last(),
        F.col("title").desc_nulls_last())
    duplicate = F.col("reason").isNull() & (F.row_number().over(latest_first) > 1)
    return checked.withColumns({
        "detail": F.when(duplicate, F.lit("a later row of this sku_id was kept")).otherwise(F.col("detail")),
        "reason": F.when(duplicate, F.lit(DUPLICATE_ID)).otherwise(F.col("reason")),
    })


def _bad_rows(bad: DataFrame) -> DataFrame:
    """Bad rows as ``raw`` JSON (sku_id, title, updated_at, image_bytes, image_hash, detail)."""
    raw = F.to_json(F.struct(
        "sku_id", "title", "updated_at", F.col("orig_bytes").alias("image_bytes"), "image_hash", "detail",
    ), {"ignoreNullFields": "false"})
    return bad.select(raw.alias("raw"), "reason", F.lit(None).cast("date").alias("input_date"))

