"""Procedural SKU images: a category's shape, drawn in its palette and texture.

Each image is a light background with one shape (or stripes) filled with a texture
in the palette's hue. Per SKU, the position, size, rotation, colour, picture size and
pixel noise are jittered, so images of one category look alike without being equal,
and images of different categories differ visibly. Images are encoded in the mix of
formats and modes a real catalog has (JPEG, PNG with RGB/RGBA/L, WebP, CMYK JPEG).
"""
from __future__ import annotations

import colorsys
import io

import numpy as np
from PIL import Image

from adrank.sample.world import IMAGE_FORMATS, PALETTE_HUES, SHAPES, TEXTURES

OVERSIZED_SIDE = 10_000


def sku_image_bytes(rng: np.random.Generator, category_style: tuple[int, int, int],
                    image_format: int, size_range: tuple[int, int]) -> bytes:
    """Draws and encodes one SKU image.

    Args:
        rng: The SKU's own generator.
        category_style: (shape, palette, texture) indices of the SKU's category.
        image_format: Index into ``IMAGE_FORMATS``.
        size_range: Inclusive (min, max) of the width and of the height.

    Returns:
        The encoded image.
    """
    width, height = (int(side) for side in rng.integers(size_range[0], size_range[1] + 1, 2))
    shape, palette, texture = category_style
    mask, scale = shape_mask(rng, SHAPES[shape], width, height)
    fill = texture_fill(rng, TEXTURES[texture], PALETTE_HUES[palette], (mask.shape[0], mask.shape[1]), scale)
    background = rng.uniform(205.0, 250.0) + rng.normal(0.0, 4.0, 3)
    pixels = np.where(mask[..., None], fill, background)
    pixels += rng.normal(0.0, rng.uniform(2.0, 7.0), pixels.shape)
    rgb = np.clip(pixels, 0, 255).astype(np.uint8)
    return encode_image(rng, rgb, mask, IMAGE_FORMATS[image_format])


def shape_mask(rng: np.random.Generator, shape: str, width: int, height: int) -> tuple[np.ndarray, float]:
    """Returns the boolean mask of a jittered shape and its radius in pixels.

    Args:
        rng: The SKU's generator.
        shape: One of ``SHAPES``.
        width: Image width.
        height: Image height.
    """
    ys, xs = np.mgrid[0:height, 0:width] + 0.5
    centre_x = width * (0.5 + rng.uniform(-0.1, 0.1))
    centre_y = height * (0.5 + rng.uniform(-0.1, 0.1))
    radius = min(width, height) * rng.uniform(0.28, 0.4)
    angle = rng.uniform(-0.35, 0.35)
    u = (xs - centre_x) * np.cos(angle) + (ys - centre_y) * np.sin(angle)
    v = (ys - centre_y) * np.cos(angle) - (xs - centre_x) * np.sin(angle)
    return SHAPE_TESTS[shape](u / radius, v / radius), radius


def _triangle(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Equilateral triangle of circumradius 1, apex up."""
    edge_normals = np.deg2rad([90.0, 210.0, 330.0])
    return np.all([u * np.cos(t) + v * np.sin(t) <= 0.5 for t in edge_normals], axis=0)


SHAPE_TESTS = {
    "circle": lambda u, v: u**2 + v**2 <= 1.0,
    "square": lambda u, v: np.maximum(np.abs(u), np.abs(v)) <= 0.8,
    "triangle": _triangle,
    "stripes": lambda u, v: np.floor(u / 0.35) % 2 == 0,
    "ring": lambda u, v: (u**2 + v**2 <= 1.0) & (u**2 + v**2 >= 0.3),
    "cross": lambda u, v: ((np.abs(u) <= 0.3) & (np.abs(v) <= 1.0)) | ((np.abs(v) <= 0.3) & (np.abs(u) <= 1.0)),
}


def texture_fill(rng: np.random.Generator, texture: str, hue: float,
                 shape: tuple[int, int], scale: float) -> np.ndarray:
    """Returns an (height, width, 3) float RGB fill of a jittered palette colour.

    Args:
        rng: The SKU's generator.
        texture: One of ``TEXTURES``.
        hue: Palette hue in degrees.
        shape: (height, width).
        scale: Shape radius in pixels, sets the texture's cell size.
    """
    colour_hue = ((hue + rng.uniform(-8.0, 8.0)) % 360.0) / 360.0
    base = 255.0 * np.array(colorsys.hsv_to_rgb(colour_hue, rng.uniform(0.65, 0.95), rng.uniform(0.7, 0.95)))
    ys, xs = np.mgrid[0:shape[0], 0:shape[1]]
    direction = rng.uniform(0.0, 2.0 * np.pi)
    if texture == "noise":
        factor = 1.0 + rng.normal(0.0, 0.12, shape)
    elif texture == "checker":
        cell = max(3, int(scale / 3))
        factor = np.where((xs // cell + ys // cell) % 2 == 0, 1.0, 0.65)
    elif texture == "gradient":
        ramp = xs * np.cos(direction) + ys * np.sin(direction)
        factor = 0.6 + 0.5 * (ramp - ramp.min()) / max(np.ptp(ramp), 1.0)
    else:
        factor = np.ones(shape)
    return base * factor[..., None]


def encode_image(rng: np.random.Generator, rgb: np.ndarray, mask: np.ndarray, image_format: str) -> bytes:
    """Encodes an RGB picture in one of ``IMAGE_FORMATS``.

    Args:
        rng: The SKU's generator (JPEG/WebP quality, RGBA background alpha).
        rgb: (height, width, 3) uint8 pixels.
        mask: The shape mask, opaque in RGBA images.
        image_format: One of ``IMAGE_FORMATS``.
    """
    quality = int(rng.integers(80, 96))
    image = Image.fromarray(rgb, "RGB")
    buffer = io.BytesIO()
    if image_format == "jpeg_rgb":
        image.save(buffer, "JPEG", quality=quality)
    elif image_format == "jpeg_cmyk":
        image.convert("CMYK").save(buffer, "JPEG", quality=quality)
    elif image_format == "webp":
        image.save(buffer, "WEBP", quality=quality)
    elif image_format == "png_gray":
        image.convert("L").save(buffer, "PNG")
    elif image_format == "png_rgba":
        alpha = np.where(mask, 255, int(rng.integers(0, 256))).astype(np.uint8)
        Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(buffer, "PNG")
    else:
        image.save(buffer, "PNG")
    return buffer.getvalue()


def corrupt_image_bytes(rng: np.random.Generator, valid_jpeg: bytes, variant: int) -> bytes:
    """Returns bytes no decoder accepts: a truncated JPEG (even variant) or garbage.

    Args:
        rng: Generator of the broken records.
        valid_jpeg: A good JPEG to truncate.
        variant: Which kind of corruption.
    """
    if variant % 2 == 0:
        return valid_jpeg[: len(valid_jpeg) * 3 // 5]
    return rng.bytes(256)


def oversized_png() -> bytes:
    """Returns a tiny PNG file of 10000 x 10000 one-bit pixels (a decompression bomb)."""
    buffer = io.BytesIO()
    Image.new("1", (OVERSIZED_SIDE, OVERSIZED_SIDE), 0).save(buffer, "PNG")
    return buffer.getvalue()
