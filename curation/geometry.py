"""Bounding boxes: conversion between conventions and EXIF orientation."""

from __future__ import annotations

from typing import Literal

from curation.exceptions import RejectedInput

Box = tuple[float, float, float, float]  # x_min, y_min, x_max, y_max in pixels
BoxFormat = Literal["xyxy", "xywh"]
BoxUnits = Literal["pixels", "normalized"]


def to_corners(
    values: tuple[float, float, float, float],
    *,
    box_format: BoxFormat,
    units: BoxUnits,
    width: int,
    height: int,
) -> Box:
    """Convert a box in any supported convention to pixel corners."""
    a, b, c, d = values
    x_min, y_min, x_max, y_max = (a, b, a + c, b + d) if box_format == "xywh" else (a, b, c, d)
    if units == "normalized":
        x_min, x_max = x_min * width, x_max * width
        y_min, y_max = y_min * height, y_max * height
    return (x_min, y_min, x_max, y_max)


def clip_box(box: Box, *, width: int, height: int, tolerance: float = 2.0) -> Box:
    """Clip a box to the image; refuse one that is empty or far outside it."""
    x_min, y_min, x_max, y_max = box
    if x_max <= x_min or y_max <= y_min:
        raise RejectedInput(f"bounding box is empty or inverted: {box}")
    if (
        x_min < -tolerance
        or y_min < -tolerance
        or x_max > width + tolerance
        or y_max > height + tolerance
    ):
        raise RejectedInput(f"bounding box {box} lies outside the {width}x{height} image")
    return (max(0.0, x_min), max(0.0, y_min), min(float(width), x_max), min(float(height), y_max))


def orient_box(box: Box, *, orientation: int, width: int, height: int) -> Box:
    """Move a box from the stored pixel grid to the grid after EXIF ``orientation``.

    ``width`` and ``height`` are those of the image before orientation.
    """
    x0, y0, x1, y1 = box
    w, h = float(width), float(height)
    corners = {
        1: (x0, y0, x1, y1),
        2: (w - x1, y0, w - x0, y1),  # mirror horizontal
        3: (w - x1, h - y1, w - x0, h - y0),  # rotate 180
        4: (x0, h - y1, x1, h - y0),  # mirror vertical
        5: (y0, x0, y1, x1),  # transpose
        6: (h - y1, x0, h - y0, x1),  # rotate 90 clockwise
        7: (h - y1, w - x1, h - y0, w - x0),  # transverse
        8: (y0, w - x1, y1, w - x0),  # rotate 270 clockwise
    }
    return corners.get(orientation, corners[1])
