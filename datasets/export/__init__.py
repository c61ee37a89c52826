"""Exports of a dataset version: folder per class, CSV manifest, COCO JSON, YOLO labels.

Usage::

    with runtime.factory() as session:
        manifest = load_manifest(session, find_version(session, "v3"))
        plan = plan_export(session, manifest, classes="active", source={"version": "v3"})
    summary = export_plan(plan, runtime.store, Path("out"), fmt="folder", crop=True)

The plan fixes the rows' order and file names (:mod:`datasets.export.plan`);
:func:`export_plan` writes them atomically (:mod:`datasets.export.files`).
"""

from datasets.export.files import crop_bytes, staged_directory
from datasets.export.plan import (
    ClassSelection,
    ExportPlan,
    class_index,
    plan_export,
    select_classes,
)
from datasets.export.run import FORMATS, ExportFormat, ExportSummary, export_plan

__all__ = [
    "FORMATS",
    "ClassSelection",
    "ExportFormat",
    "ExportPlan",
    "ExportSummary",
    "class_index",
    "crop_bytes",
    "export_plan",
    "plan_export",
    "select_classes",
    "staged_directory",
]
