"""The CSV manifest: one row per exported image, in export order, with a header.

Columns: ``path`` (relative to the export root, ``/``-separated), ``split``,
``class_index``, ``class_slug``, ``class_display_name``, the box corners
``box_x_min, box_y_min, box_x_max, box_y_max`` in pixels of the exported
image (empty where there is no box), the exported image's ``width`` and
``height``, ``offset_x, offset_y`` (where the exported pixels start in the
stored image: 0, 0 unless cropped; add them to map a box back), and the
source image's ``sha256`` (its identity in the platform, not the hash of the
exported file, which differs when cropped).

UTF-8 without a byte-order mark, ``\\n`` line ends, every field quoted only
where needed: two exports of one version are byte-identical.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import numpy as np
from numpy.typing import NDArray

from datasets.export.plan import ExportPlan, format_coordinate
from datasets.manifest import SPLIT_NAMES

MANIFEST_NAME: Final = "manifest.csv"
COLUMNS: Final = (
    "path",
    "split",
    "class_index",
    "class_slug",
    "class_display_name",
    "box_x_min",
    "box_y_min",
    "box_x_max",
    "box_y_max",
    "width",
    "height",
    "offset_x",
    "offset_y",
    "sha256",
)


def flat_layout(plan: ExportPlan) -> list[str]:
    """``images/<name>``: names are unique over the whole plan."""
    return [f"images/{name}" for name in plan.names]


def write_manifest_csv(
    plan: ExportPlan, root: Path, paths: Sequence[str], windows: NDArray[np.int64]
) -> Path:
    # Plain Python values up front: indexing numpy arrays per cell is slow.
    boxes = plan.exported_boxes(windows).tolist()
    has_box = plan.has_box.tolist()
    cuts = windows.tolist()
    indices = plan.class_indices.tolist()
    splits = plan.splits.tolist()
    target = root / MANIFEST_NAME
    with target.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(COLUMNS)
        for row, path in enumerate(paths):
            left, top, right, bottom = cuts[row]
            index = indices[row]
            box = [format_coordinate(v) for v in boxes[row]] if has_box[row] else [""] * 4
            writer.writerow(
                [
                    path,
                    SPLIT_NAMES[splits[row]],
                    index,
                    plan.class_slugs[index],
                    plan.class_names[index],
                    *box,
                    right - left,
                    bottom - top,
                    left,
                    top,
                    plan.sha256[row],
                ]
            )
    return target
