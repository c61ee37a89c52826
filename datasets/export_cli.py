"""``curation dataset export VERSION``: one export of a version, written atomically.

:func:`export_command` is a plain click command; ``datasets.cli`` attaches it
to the ``dataset`` group. Errors are one ``error:`` line and exit status 2
(``curation.cli.domain_errors``); ``--json`` prints the summary on stdout.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click
from tqdm import tqdm

from curation.cli_support import domain_errors
from curation.runtime import build_runtime
from datasets.export import FORMATS, ExportFormat, ExportSummary, export_plan, plan_export
from datasets.export.files import check_target
from datasets.export.plan import ClassSelection
from datasets.versions import find_version, load_manifest


@click.command("export")
@click.argument("version")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="folder",
    show_default=True,
    help="folder: <split>/<class>/<file> + manifest.csv; csv: images/ + manifest.csv; "
    "coco: images/<split>/ + annotations/<split>.json; yolo: images/, labels/, data.yaml.",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    required=True,
    help="Folder to create (must be absent or empty unless --force).",
)
@click.option(
    "--crop/--no-crop",
    default=False,
    show_default=True,
    help="Cut each image with a box to its box; coordinates then refer to the cut image.",
)
@click.option(
    "--classes",
    type=click.Choice(["active", "all"]),
    default="active",
    show_default=True,
    help="Only classes whose status is active, or every class of the version.",
)
@click.option("--force", is_flag=True, help="Replace a non-empty --out folder.")
@click.option("--workers", type=click.IntRange(1, 64), default=4, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary.")
@domain_errors
def export_command(
    version: str,
    fmt: ExportFormat,
    out: Path,
    crop: bool,
    classes: ClassSelection,
    force: bool,
    workers: int,
    as_json: bool,
) -> None:
    """Export dataset VERSION (v3, 3 or latest) in stable order with stable file names."""
    check_target(out, force=force)  # before reading a million rows, not after
    runtime = build_runtime()
    try:
        with runtime.factory() as session, session.begin():
            found = find_version(session, version)
            label = f"v{found.number}"
            manifest = load_manifest(session, found)
            plan = plan_export(
                session,
                manifest,
                classes=classes,
                source={"version": label, "manifest_hash": found.manifest_hash},
            )
        show_bar = sys.stderr.isatty() and not os.environ.get("CURATION_NO_PROGRESS")
        with tqdm(total=len(plan), unit="img", disable=not show_bar, file=sys.stderr) as bar:
            summary = export_plan(
                plan,
                runtime.store,
                out,
                fmt=fmt,
                crop=crop,
                force=force,
                workers=workers,
                on_progress=bar.update,
            )
    finally:
        runtime.dispose()
    if as_json:
        click.echo(json.dumps(summary.as_dict() | {"version": label}, ensure_ascii=False, indent=2))
    else:
        _print_summary(summary, label)


def _print_summary(summary: ExportSummary, version: str) -> None:
    splits = ", ".join(f"{n} {name}" for name, n in summary.splits.items())
    cropped = f", {summary.cropped} cropped" if summary.crop else ""
    click.echo(
        f"{version}: {summary.images} images ({splits}) in {len(summary.classes)} classes"
        f" exported as {summary.format} to {summary.out}{cropped}"
        f" ({summary.bytes / 1e6:.1f} MB, {summary.seconds:.1f} s)"
    )
    for reason, count in summary.dropped.items():
        if count:
            click.echo(f"  left out: {count} ({reason.replace('_', ' ')})")
    if summary.whole_image_boxes and summary.format in ("coco", "yolo"):
        click.echo(f"  {summary.whole_image_boxes} images without a box got a whole-image box")
    for problem in summary.problems:
        click.echo(f"  {problem['problem'].replace('_', ' ')}: {problem['sha256'][:16]}")
