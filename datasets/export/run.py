"""Write an export of a plan in one format, atomically, and say what was written."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

from curation.store import ImageStore
from datasets.export.coco import split_directories, split_layout, write_coco
from datasets.export.csvfile import flat_layout, write_manifest_csv
from datasets.export.files import staged_directory, write_images
from datasets.export.folder import folder_directories, folder_layout
from datasets.export.plan import ExportPlan
from datasets.export.yolo import label_directories, write_yolo

ExportFormat = Literal["folder", "csv", "coco", "yolo"]
FORMATS: Final[tuple[ExportFormat, ...]] = ("folder", "csv", "coco", "yolo")
METADATA_NAME: Final = "export.json"


@dataclass
class ExportSummary:
    format: str
    out: str
    crop: bool
    images: int = 0
    bytes: int = 0
    seconds: float = 0.0
    splits: dict[str, int] = field(default_factory=dict)
    classes: dict[str, dict[str, int]] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    whole_image_boxes: int = 0
    cropped: int = 0
    problems: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "out": self.out,
            "crop": self.crop,
            "images": self.images,
            "bytes": self.bytes,
            "seconds": round(self.seconds, 3),
            "splits": self.splits,
            "classes": self.classes,
            "dropped": self.dropped,
            "whole_image_boxes": self.whole_image_boxes,
            "cropped": self.cropped,
            "problems": self.problems,
        }


def export_plan(
    plan: ExportPlan,
    store: ImageStore,
    out: Path,
    *,
    fmt: ExportFormat,
    crop: bool = False,
    force: bool = False,
    workers: int = 4,
    on_progress: Callable[[int], object] | None = None,
) -> ExportSummary:
    """Export ``plan`` to the folder ``out`` in ``fmt``; nothing is left at ``out`` on failure.

    ``crop``: each image with a box is cut to its box (see
    :meth:`ExportPlan.crop_windows`); every coordinate written (CSV, COCO,
    YOLO) then refers to the cut image. ``force``: replace a non-empty
    ``out``. Raises ``curation.exceptions.Conflict`` for a non-empty target.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
    started = time.perf_counter()
    windows = plan.crop_windows(crop=crop)
    summary = ExportSummary(
        format=fmt,
        out=str(out),
        crop=crop,
        images=len(plan),
        splits=plan.split_counts(),
        classes=plan.class_split_counts(),
        dropped=dict(plan.dropped),
        whole_image_boxes=int((~plan.has_box).sum()),
        cropped=int((plan.has_box).sum()) if crop else 0,
        problems=[dict(p) for p in plan.problems],
    )
    with staged_directory(out, force=force) as root:
        if fmt == "folder":
            paths, folders = folder_layout(plan), folder_directories(plan)
        elif fmt == "csv":
            paths, folders = flat_layout(plan), ["images"]
        elif fmt == "coco":
            paths, folders = split_layout(plan), split_directories()
        else:
            paths, folders = split_layout(plan), split_directories() + label_directories()
        for folder in folders:
            (root / folder).mkdir(parents=True, exist_ok=True)
        summary.bytes = write_images(
            store,
            plan.storage_keys,
            plan.stored_formats,
            windows,
            plan.widths,
            plan.heights,
            [root / path for path in paths],
            workers=workers,
            on_progress=on_progress,
        )
        if fmt in ("folder", "csv"):
            write_manifest_csv(plan, root, paths, windows)
        elif fmt == "coco":
            write_coco(plan, root, windows)
        else:
            write_yolo(plan, root, windows)
        _write_metadata(plan, root, fmt=fmt, crop=crop)
    summary.seconds = time.perf_counter() - started
    return summary


def _write_metadata(plan: ExportPlan, root: Path, *, fmt: str, crop: bool) -> None:
    """What the export holds, without a timestamp: two exports of one version are identical."""
    document = {
        "format": fmt,
        "crop": crop,
        "source": dict(plan.source),
        "images": len(plan),
        "splits": plan.split_counts(),
        "classes": [
            {"index": i, "slug": slug, "display_name": name}
            for i, (slug, name) in enumerate(zip(plan.class_slugs, plan.class_names, strict=True))
        ],
        "dropped": dict(plan.dropped),
        "order": "split (train, validation, test), class slug, image sha256",
    }
    (root / METADATA_NAME).write_text(
        json.dumps(document, ensure_ascii=False, indent=2) + "\n", encoding="utf-8"
    )
