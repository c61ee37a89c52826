"""From a Label Studio annotation's result to a class name and a box in pixels."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from curation.exceptions import RejectedInput
from curation.geometry import Box
from curation.labelstudio.config import BOXES, CHOICES, NOT_A_LANDMARK


@dataclass(frozen=True)
class Answer:
    """What one annotation says: a class name (None: not a landmark) and a box."""

    class_name: str | None
    box: Box | None


def percent_box_to_pixels(value: Mapping[str, Any], *, width: int, height: int) -> Box:
    """A rectangle in Label Studio's percentages of the image to pixel corners.

    Label Studio stores ``x``, ``y``, ``width`` and ``height`` as percentages
    (0 to 100) of the image's width and height. A rotated rectangle is refused:
    the platform's boxes are axis-aligned. The result is clipped to the image
    and rounded to a tenth of a pixel.
    """
    try:
        x, y = float(value["x"]), float(value["y"])
        w, h = float(value["width"]), float(value["height"])
    except (KeyError, TypeError, ValueError):
        raise RejectedInput(f"a rectangle needs x, y, width and height: {dict(value)}") from None
    if abs(float(value.get("rotation") or 0.0)) > 0.01:
        raise RejectedInput("a rotated rectangle cannot be stored as a box")
    x0 = max(0.0, x) * width / 100.0
    y0 = max(0.0, y) * height / 100.0
    x1 = min(100.0, x + w) * width / 100.0
    y1 = min(100.0, y + h) * height / 100.0
    if x1 <= x0 or y1 <= y0:
        raise RejectedInput(f"the rectangle is empty: {dict(value)}")
    return (round(x0, 1), round(y0, 1), round(x1, 1), round(y1, 1))


def pixels_to_percent_box(box: Box, *, width: int, height: int) -> dict[str, float]:
    """Pixel corners to Label Studio's percentages (for predictions)."""
    x0, y0, x1, y1 = box
    return {
        "x": 100.0 * x0 / width,
        "y": 100.0 * y0 / height,
        "width": 100.0 * (x1 - x0) / width,
        "height": 100.0 * (y1 - y0) / height,
        "rotation": 0.0,
    }


def read_answer(result: Sequence[Mapping[str, Any]], *, width: int, height: int) -> Answer:
    """The class and box an annotation's ``result`` list holds.

    The class is the ``Choices`` answer, or else the label of the drawn
    rectangle; a rectangle whose label contradicts the choice is refused.
    Raises RejectedInput for an annotation that chose nothing.
    """
    choice: str | None = None
    box: Box | None = None
    box_label: str | None = None
    for region in result:
        value = region.get("value") or {}
        if region.get("from_name") == CHOICES and value.get("choices"):
            choice = str(value["choices"][0])
        elif region.get("from_name") == BOXES and value.get("rectanglelabels"):
            if box is not None:
                raise RejectedInput("more than one box was drawn; the platform keeps one")
            # Label Studio sends the size it displayed; ours is the stored image's.
            box = percent_box_to_pixels(value, width=width, height=height)
            box_label = str(value["rectanglelabels"][0])
    name = choice if choice is not None else box_label
    if name is None:
        raise RejectedInput("the annotation chose no class")
    if name == NOT_A_LANDMARK:
        return Answer(class_name=None, box=None)
    if box_label is not None and box_label != name:
        raise RejectedInput(f"the box is labelled {box_label!r} but the choice is {name!r}")
    return Answer(class_name=name, box=box)
