"""YOLO detection labels: ``images/<split>/<name>``, ``labels/<split>/<stem>.txt``.

Each label file has one line ``<class index> <x centre> <y centre> <width>
<height>``, the box normalised by the exported image's width and height
(so every value lies in [0, 1]), six decimals. ``classes.txt`` lists the
class slugs one a line in index order; ``data.yaml`` (Ultralytics) names
the split folders relative to itself (no ``path`` key, so the folder can be
moved) and the class names in index order.

An image without a box gets the whole image (``0.5 0.5 1 1``), as in the
COCO export: an empty label file would tell a detector the photo shows no
landmark. ``data.yaml`` counts those images (``whole_image_boxes``). With
``crop``, a boxed image is its crop, and its box is (about) the whole crop.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from datasets.export.plan import ExportPlan
from datasets.manifest import SPLIT_NAMES


def label_directories() -> list[str]:
    return [f"labels/{split}" for split in SPLIT_NAMES]


def yolo_rows(plan: ExportPlan, windows: NDArray[np.int64]) -> NDArray[np.float64]:
    """(n, 4) float64 (x centre, y centre, width, height), normalised to [0, 1]."""
    boxes = plan.detection_boxes(windows)
    sizes = (windows[:, 2:4] - windows[:, 0:2]).astype(np.float64)
    centres = (boxes[:, 0:2] + boxes[:, 2:4]) / 2.0 / sizes
    extents = (boxes[:, 2:4] - boxes[:, 0:2]) / sizes
    rows: NDArray[np.float64] = np.clip(np.concatenate([centres, extents], axis=1), 0.0, 1.0)
    return rows


def write_yolo(plan: ExportPlan, root: Path, windows: NDArray[np.int64]) -> None:
    rows = yolo_rows(plan, windows).tolist()
    indices, splits = plan.class_indices.tolist(), plan.splits.tolist()
    for row, name in enumerate(plan.names):
        x, y, w, h = rows[row]
        line = f"{indices[row]} {x:.6f} {y:.6f} {w:.6f} {h:.6f}\n"
        stem = name.rsplit(".", 1)[0]
        (root / "labels" / SPLIT_NAMES[splits[row]] / f"{stem}.txt").write_text(line, "ascii")
    (root / "classes.txt").write_text(
        "".join(f"{slug}\n" for slug in plan.class_slugs), encoding="utf-8"
    )
    # JSON strings are valid YAML double-quoted scalars, so no YAML library is needed.
    names = ", ".join(json.dumps(slug, ensure_ascii=False) for slug in plan.class_slugs)
    whole = int(np.count_nonzero(~plan.has_box))
    (root / "data.yaml").write_text(
        "# YOLO dataset; paths are relative to this file.\n"
        "train: images/train\n"
        "val: images/validation\n"
        "test: images/test\n"
        f"nc: {len(plan.class_slugs)}\n"
        f"names: [{names}]\n"
        f"whole_image_boxes: {whole}\n",
        encoding="utf-8",
    )
