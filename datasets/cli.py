"""``curation dataset ...``: snapshot, list, show, diff, export, check-leaks.

The group is attached to the ``curation`` command through the
``curation.commands`` entry point (pyproject.toml), so the domain package's
CLI never imports this layer.
"""

from __future__ import annotations

import getpass
import json
from pathlib import Path
from typing import Any

import click

from curation.cli_support import domain_errors
from curation.exceptions import RejectedInput
from curation.runtime import build_runtime
from datasets.activation import class_activation
from datasets.diff import DEFAULT_LIMIT, diff_versions
from datasets.export_cli import export_command
from datasets.leaks import check_folder, check_version
from datasets.splits import SplitRatios
from datasets.versions import find_version, list_versions, load_manifest, snapshot, version_dict

_json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


def _echo_json(payload: dict[str, Any] | list[Any]) -> None:
    click.echo(json.dumps(payload, ensure_ascii=False, indent=2))


@click.group("dataset")
def dataset() -> None:
    """Versioned dataset snapshots: leak-free splits, diffs, exports."""


@dataset.command("snapshot")
@click.option("-m", "--message", required=True, help="What this version adds or changes.")
@click.option("--author", default=None, help="Who takes it (default: the OS user).")
@click.option("--ratios", default=None, help="train/validation/test, e.g. 70/15/15 (first only).")
@click.option("--seed", type=int, default=None, help="Split seed (first version only).")
@_json_option
@domain_errors
def snapshot_command(
    message: str, author: str | None, ratios: str | None, seed: int | None, as_json: bool
) -> None:
    """Take a new version of the dataset from the current labels."""
    runtime = build_runtime()
    settings = runtime.settings
    who = author or f"cli:{getpass.getuser()}"
    activate = class_activation(
        min_train=settings.class_min_train_images,
        min_test=settings.class_min_test_images,
        actor=who,
    )
    with runtime.factory() as session, session.begin():
        result = snapshot(
            session,
            author=who,
            message=message,
            ratios=SplitRatios.parse(ratios) if ratios else None,
            seed=seed,
            activate=activate,
        )
        payload = result.as_dict() | {"seconds": result.timings}
    if as_json:
        _echo_json(payload)
        return
    click.echo(
        f"{payload['version']}: {payload['items']} images, {payload['classes']} classes"
        f" ({payload['added']} added, {payload['removed']} removed,"
        f" {payload['changed']} changed); splits {payload['splits']}"
    )
    click.echo(f"manifest {payload['manifest_hash']}")
    if payload["activated_classes"]:
        click.echo(f"classes now active: {', '.join(payload['activated_classes'])}")
    if payload["held_back_test_changes"]:
        click.echo(
            f"held back: {len(payload['held_back_test_changes'])} test-split label changes"
            " wait for a second review (images "
            + ", ".join(str(i) for i in payload["held_back_test_changes"][:20])
            + ")"
        )


@dataset.command("list")
@_json_option
@domain_errors
def list_command(as_json: bool) -> None:
    """Every version, oldest first."""
    runtime = build_runtime()
    with runtime.factory() as session:
        rows = [version_dict(v) for v in list_versions(session)]
    if as_json:
        _echo_json(rows)
        return
    if not rows:
        click.echo("no dataset versions yet")
    for row in rows:
        click.echo(
            f"{row['version']:>5}  {row['created_at'][:19]}  {row['items']:>8} images"
            f"  {row['classes']:>4} classes  {row['author']}: {row['message']}"
        )


@dataset.command("show")
@click.argument("version", default="latest")
@_json_option
@domain_errors
def show_command(version: str, as_json: bool) -> None:
    """One version: its numbers, and its images per class and split."""
    runtime = build_runtime()
    with runtime.factory() as session:
        found = find_version(session, version)
        manifest = load_manifest(session, found)
        per_class = manifest.per_class_split_counts()
        nothing = dict.fromkeys(("train", "validation", "test"), 0)
        payload = version_dict(found) | {
            "classes": [
                record.as_dict() | {"images": per_class.get(record.class_id, nothing)}
                for record in manifest.classes
            ]
        }
    if as_json:
        _echo_json(payload)
        return
    click.echo(
        f"{payload['version']} by {payload['author']} at {payload['created_at'][:19]}:"
        f" {payload['message']}"
    )
    click.echo(f"  {payload['items']} images, splits {payload['splits']}")
    click.echo(f"  manifest {payload['manifest_hash']} (stored as {payload['stored_as']})")
    for record in payload["classes"]:
        images = record["images"]
        click.echo(
            f"  {record['slug']:<40} {record['status']:<9}"
            f" train {images['train']:>6}  validation {images['validation']:>6}"
            f"  test {images['test']:>6}"
        )


@dataset.command("diff")
@click.argument("old")
@click.argument("new", default="latest")
@click.option(
    "--limit",
    type=click.IntRange(0, 10**6),
    default=DEFAULT_LIMIT,
    show_default=True,
    help="Rows listed per kind of change (counts are always complete).",
)
@_json_option
@domain_errors
def diff_command(old: str, new: str, limit: int, as_json: bool) -> None:
    """What changed from OLD to NEW (default: the latest version)."""
    runtime = build_runtime()
    with runtime.factory() as session:
        difference = diff_versions(
            session, find_version(session, old), find_version(session, new), limit=limit
        )
        if as_json:
            _echo_json(difference.as_dict())
        else:
            click.echo(difference.as_text())


@dataset.command("check-leaks")
@click.argument("target")
@click.option(
    "--max-distance",
    type=click.IntRange(0, 64),
    default=None,
    help="pHash bits apart that still count as a near-duplicate (default: setting).",
)
@_json_option
@domain_errors
def check_leaks_command(target: str, max_distance: int | None, as_json: bool) -> None:
    """Duplicates across splits in a version (v3, latest) or a folder; exit 1 if any."""
    runtime = build_runtime()
    settings = runtime.settings
    distance = settings.near_duplicate_max_distance if max_distance is None else max_distance
    path = Path(target)
    if path.exists():
        if not path.is_dir():
            raise RejectedInput(f"not a folder: {target}")
        report = check_folder(
            path,
            max_distance=distance,
            max_bytes=settings.max_image_bytes,
            max_pixels=settings.max_image_pixels,
        )
    else:
        with runtime.factory() as session:
            report = check_version(session, find_version(session, target), max_distance=distance)
    if as_json:
        _echo_json(report.as_dict())
    else:
        click.echo(report.as_text())
    if report.leaks:
        raise SystemExit(1)


dataset.add_command(export_command, "export")
