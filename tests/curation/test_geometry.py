"""Box conventions, clipping, and boxes moved by EXIF orientation."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image as PILImage
from PIL import ImageOps

from curation.exceptions import RejectedInput
from curation.geometry import clip_box, orient_box, to_corners


def test_to_corners_xyxy_pixels_is_identity() -> None:
    assert to_corners((1, 2, 30, 40), box_format="xyxy", units="pixels", width=100, height=50) == (
        1,
        2,
        30,
        40,
    )


def test_to_corners_xywh_pixels() -> None:
    assert to_corners((10, 5, 30, 20), box_format="xywh", units="pixels", width=100, height=50) == (
        10,
        5,
        40,
        25,
    )


def test_to_corners_normalized() -> None:
    assert to_corners(
        (0.1, 0.2, 0.5, 0.6), box_format="xyxy", units="normalized", width=320, height=240
    ) == pytest.approx((32.0, 48.0, 160.0, 144.0))
    assert to_corners(
        (0.1, 0.2, 0.5, 0.4), box_format="xywh", units="normalized", width=320, height=240
    ) == pytest.approx((32.0, 48.0, 192.0, 144.0))


def test_clip_box_clips_within_tolerance() -> None:
    assert clip_box((-1.5, -2.0, 101.0, 51.9), width=100, height=50) == (0.0, 0.0, 100.0, 50.0)
    assert clip_box((10, 10, 20, 20), width=100, height=50) == (10, 10, 20, 20)


@pytest.mark.parametrize(
    ("box", "prefix"),
    [
        ((10, 10, 10, 20), "bounding box is empty or inverted"),
        ((30, 10, 20, 20), "bounding box is empty or inverted"),
        ((10, 30, 20, 20), "bounding box is empty or inverted"),
        ((-5, 0, 20, 20), "bounding box (-5, 0, 20, 20) lies outside the 100x50 image"),
        ((0, 0, 103, 20), "bounding box (0, 0, 103, 20) lies outside the 100x50 image"),
        ((300, 200, 400, 300), "bounding box (300, 200, 400, 300) lies outside the 100x50 image"),
    ],
)
def test_clip_box_rejects(box: tuple[float, float, float, float], prefix: str) -> None:
    with pytest.raises(RejectedInput) as caught:
        clip_box(box, width=100, height=50)
    assert caught.value.reason.startswith(prefix)


def _with_orientation(image: PILImage.Image, orientation: int) -> PILImage.Image:
    exif = PILImage.Exif()
    exif[0x0112] = orientation
    out = io.BytesIO()
    image.save(out, format="PNG", exif=exif.tobytes())
    reopened = PILImage.open(io.BytesIO(out.getvalue()))
    reopened.load()
    assert reopened.getexif().get(0x0112) == orientation
    return reopened


def _bbox(image: PILImage.Image) -> tuple[float, float, float, float]:
    ys, xs = np.nonzero(np.asarray(image.convert("L")) > 127)
    return (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize(
    ("width", "height", "box"),
    [(40, 30, (5, 7, 17, 12)), (23, 61, (0, 40, 9, 61)), (50, 50, (30, 2, 49, 11))],
)
def test_orient_box_agrees_with_exif_transpose(
    orientation: int, width: int, height: int, box: tuple[int, int, int, int]
) -> None:
    blank = np.zeros((height, width), dtype=np.uint8)
    x0, y0, x1, y1 = box
    blank[y0:y1, x0:x1] = 255
    image = _with_orientation(PILImage.fromarray(blank, "L"), orientation)
    transposed = ImageOps.exif_transpose(image)
    assert transposed is not None
    expected = _bbox(transposed)
    moved = orient_box(
        (float(x0), float(y0), float(x1), float(y1)),
        orientation=orientation,
        width=width,
        height=height,
    )
    assert moved == expected
    # The moved box lies on the transposed grid.
    assert moved[2] <= transposed.width and moved[3] <= transposed.height


def test_orient_box_unknown_orientation_is_identity() -> None:
    assert orient_box((1, 2, 3, 4), orientation=0, width=10, height=10) == (1, 2, 3, 4)
