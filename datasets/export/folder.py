"""Folder per class, with train/validation/test levels: ``<split>/<class slug>/<name>``.

The layout ``keras.utils.image_dataset_from_directory`` reads (point it at
``<root>/train`` and so on). Every split holds a folder for every class of
the export, empty where the split has none of its images, so the label
indices Keras derives (folders in sorted order) are the same in every split
and equal to :func:`datasets.export.plan.class_index`. ``manifest.csv`` at
the root lists the files in the order Keras reads them with ``shuffle=False``.
"""

from __future__ import annotations

from datasets.export.plan import ExportPlan
from datasets.manifest import SPLIT_NAMES


def folder_layout(plan: ExportPlan) -> list[str]:
    return [
        f"{SPLIT_NAMES[int(split)]}/{plan.class_slugs[int(index)]}/{name}"
        for split, index, name in zip(plan.splits, plan.class_indices, plan.names, strict=True)
    ]


def folder_directories(plan: ExportPlan) -> list[str]:
    return [f"{split}/{slug}" for split in SPLIT_NAMES for slug in plan.class_slugs]
