"""The labelling config: one choice per class, and rectangle labels for boxes."""

from __future__ import annotations

from collections.abc import Sequence
from xml.etree import ElementTree as ET

# The choice for "this photo shows no landmark"; no class may carry this name.
NOT_A_LANDMARK = "(not a landmark)"
# Names of the config's tags, which the results refer to.
IMAGE = "image"
CHOICES = "class"
BOXES = "box"


def label_config(class_names: Sequence[str]) -> str:
    """The Label Studio XML for ``class_names`` (display names, in this order).

    One ``Choices`` (single choice, with "not a landmark" last) classifies the
    photo; ``RectangleLabels`` with the same names draws the landmark's box.
    """
    view = ET.Element("View")
    ET.SubElement(view, "Image", name=IMAGE, value="$image", zoom="true")
    ET.SubElement(view, "Header", value="Which landmark is this?")
    choices = ET.SubElement(
        view, "Choices", name=CHOICES, toName=IMAGE, choice="single", required="true"
    )
    for name in [*class_names, NOT_A_LANDMARK]:
        ET.SubElement(choices, "Choice", value=name)
    boxes = ET.SubElement(view, "RectangleLabels", name=BOXES, toName=IMAGE)
    for name in class_names:
        ET.SubElement(boxes, "Label", value=name)
    return ET.tostring(view, encoding="unicode")
