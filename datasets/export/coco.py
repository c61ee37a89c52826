"""COCO detection JSON: ``images/<split>/<name>`` and ``annotations/<split>.json``.

Each split's file has ``images`` (``id``, ``file_name`` relative to
``images/<split>/``, ``width``, ``height`` of the exported image, plus
``sha256``), ``categories`` (every class of the export in slug order, id =
class index + 1, since COCO ids start at 1; ``name`` is the slug, plus
``display_name``) and ``annotations``: exactly one per image, ``bbox``
``[x, y, width, height]`` in pixels of the exported image and ``area`` its
area, ``iscrowd`` 0.

Image ids are positions in the export order counted from 1 over all splits,
so they are unique across the three files and stable across exports; an
annotation has its image's id.

An image without a box (a whole-photo label) gets a whole-image box, marked
``"box_source": "whole_image"`` (``"label"`` for a drawn box), so every image
keeps its class and a detector's training can filter the made-up boxes out.
With ``crop``, a boxed image is its crop and its box lies at (about) 0, 0
with the crop's size. No ``segmentation`` is written: none exists.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from datasets.export.plan import ExportPlan
from datasets.manifest import SPLIT_NAMES

SUPERCATEGORY: Final = "landmark"


def split_layout(plan: ExportPlan) -> list[str]:
    """``images/<split>/<name>``: the layout COCO and YOLO share."""
    return [
        f"images/{SPLIT_NAMES[int(split)]}/{name}"
        for split, name in zip(plan.splits, plan.names, strict=True)
    ]


def split_directories() -> list[str]:
    return [f"images/{split}" for split in SPLIT_NAMES]


def write_coco(plan: ExportPlan, root: Path, windows: NDArray[np.int64]) -> list[Path]:
    boxes = np.round(plan.detection_boxes(windows), 2)
    extents = np.round(boxes[:, 2:4] - boxes[:, 0:2], 2)
    areas = np.round(extents[:, 0] * extents[:, 1], 2).tolist()
    corners, sizes = boxes[:, 0:2].tolist(), extents.tolist()
    image_sizes = (windows[:, 2:4] - windows[:, 0:2]).tolist()
    categories_of = (plan.class_indices + 1).tolist()
    has_box = plan.has_box.tolist()
    categories = [
        {"id": index + 1, "name": slug, "display_name": name, "supercategory": SUPERCATEGORY}
        for index, (slug, name) in enumerate(zip(plan.class_slugs, plan.class_names, strict=True))
    ]
    info = {"description": "landmark curation export", **dict(plan.source)}
    (root / "annotations").mkdir(exist_ok=True)
    written = []
    for value, split in enumerate(SPLIT_NAMES):
        images: list[dict[str, Any]] = []
        annotations: list[dict[str, Any]] = []
        for row in np.flatnonzero(plan.splits == value).tolist():
            image_id = row + 1
            images.append(
                {
                    "id": image_id,
                    "file_name": plan.names[row],
                    "width": image_sizes[row][0],
                    "height": image_sizes[row][1],
                    "sha256": plan.sha256[row],
                }
            )
            annotations.append(
                {
                    "id": image_id,
                    "image_id": image_id,
                    "category_id": categories_of[row],
                    "bbox": corners[row] + sizes[row],
                    "area": areas[row],
                    "iscrowd": 0,
                    "box_source": "label" if has_box[row] else "whole_image",
                }
            )
        target = root / "annotations" / f"{split}.json"
        with target.open("w", encoding="utf-8", newline="\n") as handle:
            handle.write(f'{{"info": {_dumps(info)},\n"licenses": [],\n')
            handle.write(f'"categories": {_records(categories)},\n')
            handle.write(f'"images": {_records(images)},\n')
            handle.write(f'"annotations": {_records(annotations)}}}\n')
        written.append(target)
    return written


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _records(records: list[dict[str, Any]]) -> str:
    """A JSON array, one record a line: readable and diffable, and written by
    json's C encoder (``indent`` would use the pure-Python one, 3 times slower)."""
    if not records:
        return "[]"
    return "[\n" + ",\n".join(_dumps(record) for record in records) + "\n]"
