"""Decode a stored image into the square RGB pixels a backbone takes.

Decoding is most of the cost of embedding a small photo, so a JPEG is decoded
at reduced scale when it can be: libjpeg scales the inverse DCT by 1/2, 1/4 or
1/8 (Pillow's ``draft``), which skips most of the work for a large photo. The
reduction is chosen so that the region that will be resized (the whole image
or the box) still has at least ``size`` pixels each way, so no detail the
model could see is lost.

The region is then resized to ``size x size`` as a whole (a plain resize to a
square, not a centre crop): the embedding must describe everything in the
region, a box is drawn exactly around what matters and cutting its ends
off would drop part of the object, and a landmark is often off-centre in a
whole photo. The aspect distortion is the same for every image of a given
shape, at training and at scoring time alike. The filter is Pillow's
bilinear, which widens its support when it shrinks (anti-aliased).

Stored copies are JPEG (RGB or grayscale) or PNG (possibly with alpha), with
EXIF orientation already applied, so none is read here. Transparent pixels are
composited over white, as a viewer shows them.
"""

from __future__ import annotations

import io
import math
import os
from typing import Final

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from curation.exceptions import CurationError
from curation.geometry import Box

BACKGROUND: Final = (255, 255, 255)
_DECODE_ERRORS = (Image.DecompressionBombError, OSError, SyntaxError, ValueError, EOFError)


class UndecodableImage(CurationError):
    """A stored image that cannot be decoded; ``source`` names it (a path, or ``"<bytes>"``)."""

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"cannot decode image {source}: {reason}")
        self.source = source
        self.reason = reason


class BoxOutsideImage(ValueError):
    """A box that keeps no area once clipped to the image."""


def decode_for_model(
    data_or_path: bytes | str | os.PathLike[str],
    *,
    size: int,
    box: Box | None,
) -> NDArray[np.uint8]:
    """Decode an image and resize it (or its ``box``) to a ``size x size`` square.

    ``data_or_path``: the encoded bytes, or the path of a file. ``box``:
    ``(x_min, y_min, x_max, y_max)`` in pixels of the full-size image (floats
    allowed); it is clipped to the image, and must keep a positive area.
    Returns uint8 ``(size, size, 3)`` RGB in ``[0, 255]``.

    Raises ``UndecodableImage`` for content that is not a readable image (a
    missing file included) and ``BoxOutsideImage`` (a ``ValueError``) for a box with no area
    inside the image.
    """
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    source = "<bytes>" if isinstance(data_or_path, bytes) else os.fspath(data_or_path)
    opened = io.BytesIO(data_or_path) if isinstance(data_or_path, bytes) else data_or_path
    try:
        with Image.open(opened) as image:
            region = _region(box, image.size)
            scale = _draft(image, region, size)
            x_min, y_min, x_max, y_max = region
            reduced = (x_min / scale, y_min / scale, x_max / scale, y_max / scale)
            rgb = _to_rgb(image)
            resized = rgb.resize(
                (size, size), Image.Resampling.BILINEAR, box=reduced, reducing_gap=None
            )
            pixels = np.asarray(resized, dtype=np.uint8)
    except BoxOutsideImage:
        raise
    except _DECODE_ERRORS as error:
        raise UndecodableImage(source, f"{type(error).__name__}: {error}") from error
    if pixels.shape != (size, size, 3):  # pragma: no cover - Pillow guarantees it
        raise UndecodableImage(source, f"decoded to shape {pixels.shape}")
    return pixels


def _region(box: Box | None, image_size: tuple[int, int]) -> tuple[float, float, float, float]:
    width, height = image_size
    if box is None:
        return (0.0, 0.0, float(width), float(height))
    x_min, y_min = max(0.0, float(box[0])), max(0.0, float(box[1]))
    x_max, y_max = min(float(width), float(box[2])), min(float(height), float(box[3]))
    if not (x_max > x_min and y_max > y_min):
        raise BoxOutsideImage(f"box {box} has no area inside the {width}x{height} image")
    return (x_min, y_min, x_max, y_max)


def _draft(image: Image.Image, region: tuple[float, float, float, float], size: int) -> float:
    """Ask a JPEG for DCT-scaled decoding; return the reduction factor (1 when none).

    Pillow picks the largest factor in (8, 4, 2, 1) that keeps the whole image
    at least the requested size each way; requesting ``size * full / region``
    keeps the region at least ``size`` pixels each way after reduction.
    """
    if image.format != "JPEG":
        return 1.0
    width, height = image.size
    region_width, region_height = region[2] - region[0], region[3] - region[1]
    request = (
        max(1, math.ceil(size * width / region_width)),
        max(1, math.ceil(size * height / region_height)),
    )
    result = image.draft("RGB", request)
    if result is None:
        return 1.0
    _, reduced_box = result
    return width / reduced_box[2]


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        image.mode == "P" and "transparency" in image.info
    )
    if not has_alpha:
        return image.convert("RGB")
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (*BACKGROUND, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")
