"""The ``curation`` command line.

Domain errors become one clear line on stderr and exit status 2; ``--json``
puts a machine-readable summary on stdout while the progress bar, when stderr
is a terminal, stays on stderr.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import click
from tqdm import tqdm

from curation import migrate
from curation.cli_bench import bench
from curation.cli_classes import classes
from curation.cli_labelstudio import labelstudio
from curation.cli_models import models
from curation.cli_support import domain_errors
from curation.cli_support import emit as _emit
from curation.cli_tokens import tokens
from curation.ingest.core import IngestContext
from curation.ingest.folders import crawl_items, labelled_tree_items
from curation.ingest.jsonlabels import PRESETS, JsonMapping, json_labelled_items
from curation.ingest.records import IngestItem, IngestSummary
from curation.ingest.reports import ingest_report
from curation.ingest.runner import IngestRunner, read_untrusted_file
from curation.learning.scoring import LearningPaths
from curation.models.accounts import User, UserRole
from curation.neardup import NearDuplicateIndex
from curation.runtime import Runtime, build_runtime
from curation.store.gc import DEFAULT_GRACE_SECONDS, collect_everything


@click.group()
def main() -> None:
    """Active-learning curation of landmark photos."""


main.add_command(classes)  # curation/cli_classes.py
main.add_command(models)  # curation/cli_models.py
main.add_command(bench)  # curation/cli_bench.py
main.add_command(labelstudio)  # curation/cli_labelstudio.py
main.add_command(tokens)  # curation/cli_tokens.py


# --- database -----------------------------------------------------------------


@main.group()
def db() -> None:
    """Database schema (Alembic migrations)."""


@db.command("upgrade")
@click.argument("revision", default="head")
@domain_errors
def db_upgrade(revision: str) -> None:
    runtime = build_runtime()
    migrate.upgrade(runtime.settings.database_url, revision)
    click.echo(f"database at {revision}")


@db.command("downgrade")
@click.argument("revision")
@domain_errors
def db_downgrade(revision: str) -> None:
    runtime = build_runtime()
    migrate.downgrade(runtime.settings.database_url, revision)
    click.echo(f"database at {revision}")


@db.command("check")
@domain_errors
def db_check() -> None:
    """Fail if the models and the migrations disagree."""
    runtime = build_runtime()
    migrate.check(runtime.settings.database_url)
    click.echo("models and migrations agree")


# --- ingestion ----------------------------------------------------------------


@main.group()
def ingest() -> None:
    """Bring images in: crawls, labelled sets, per-image JSON, single reports."""


def _run_ingest(
    runtime: Runtime,
    items: Iterable[IngestItem],
    summary: IngestSummary,
    *,
    action: str,
    as_json: bool,
    total: int | None,
) -> None:
    runner = IngestRunner(runtime.factory, runtime.store, runtime.settings)
    show_bar = sys.stderr.isatty() and not os.environ.get("CURATION_NO_PROGRESS")
    with tqdm(total=total, unit="img", disable=not show_bar, file=sys.stderr) as bar:
        runner.run(items, actor="cli", action=action, on_progress=bar.update, summary=summary)
    _emit(as_json, summary.as_dict(), lambda: _print_summary(summary))


def _print_summary(summary: IngestSummary) -> None:
    click.echo(
        f"{summary.files} files: {summary.ingested} ingested, "
        f"{summary.exact_duplicates} exact duplicates, {summary.near_duplicates} near-duplicates, "
        f"{summary.already_present} already present, {len(summary.rejected)} rejected "
        f"({summary.seconds:.1f} s)"
    )
    if summary.labels_added or summary.labels_changed:
        click.echo(f"labels: {summary.labels_added} added, {summary.labels_changed} changed")
    if summary.classes_created:
        click.echo(f"new classes: {', '.join(summary.classes_created)}")
    for entry in summary.rejected:
        click.echo(f"  rejected {entry['path']}: {entry['reason']}")
    for entry in summary.label_conflicts:
        click.echo(f"  label conflict {entry['path']}: {entry['reason']}")
    for entry in summary.manifest_problems:
        click.echo(f"  manifest {entry['path']}: {entry['reason']}")


def _count_files(folder: Path) -> int:
    return sum(1 for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))


_json_option = click.option("--json", "as_json", is_flag=True, help="Print a JSON summary.")
_folder = click.argument("folder", type=click.Path(path_type=Path, file_okay=False))


@ingest.command("crawl")
@_folder
@click.option("--crawler", default="crawler", show_default=True, help="Name of the crawler.")
@click.option("--manifest", type=click.Path(path_type=Path, dir_okay=False), help="CSV: path,url.")
@_json_option
@domain_errors
def ingest_crawl(folder: Path, crawler: str, manifest: Path | None, as_json: bool) -> None:
    """A folder of crawled images, with an optional CSV manifest of source URLs."""
    runtime = build_runtime()
    summary = IngestSummary()
    items = crawl_items(folder, crawler=crawler, manifest=manifest, summary=summary)
    _run_ingest(
        runtime, items, summary, action="ingest.crawl", as_json=as_json, total=_count_files(folder)
    )


@ingest.command("labelled")
@_folder
@click.option("--dataset", help="Dataset name (default: the folder's name).")
@_json_option
@domain_errors
def ingest_labelled(folder: Path, dataset: str | None, as_json: bool) -> None:
    """A folder-per-class tree, with or without train/validation/test levels."""
    runtime = build_runtime()
    summary = IngestSummary()
    name = dataset or folder.resolve().name
    items = labelled_tree_items(folder, dataset_name=name, summary=summary)
    _run_ingest(
        runtime,
        items,
        summary,
        action="ingest.labelled",
        as_json=as_json,
        total=_count_files(folder),
    )


@ingest.command("json")
@_folder
@click.option("--dataset", help="Dataset name (default: the folder's name).")
@click.option("--preset", type=click.Choice(sorted(PRESETS)), default="aihub", show_default=True)
@click.option(
    "--mapping", type=click.Path(path_type=Path, dir_okay=False), help="Mapping JSON file."
)
@_json_option
@domain_errors
def ingest_json(
    folder: Path, dataset: str | None, preset: str, mapping: Path | None, as_json: bool
) -> None:
    """Images with a JSON file beside each giving class and bounding box (AI-Hub style)."""
    runtime = build_runtime()
    summary = IngestSummary()
    chosen = JsonMapping.load(mapping) if mapping is not None else PRESETS[preset]
    name = dataset or folder.resolve().name
    items = json_labelled_items(folder, dataset_name=name, mapping=chosen, summary=summary)
    total = sum(1 for p in folder.rglob("*") if p.is_file() and p.suffix.lower() != ".json")
    _run_ingest(runtime, items, summary, action="ingest.json", as_json=as_json, total=total)


@ingest.command("report")
@click.argument("image", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--claimed", required=True, help="The class the user says the photo shows.")
@click.option("--predicted", help="The class the app predicted.")
@click.option("--reporter", help="The reporter's id.")
@click.option("--note", help="The user's note.")
@_json_option
@domain_errors
def ingest_report_command(
    image: Path,
    claimed: str,
    predicted: str | None,
    reporter: str | None,
    note: str | None,
    as_json: bool,
) -> None:
    """One user report (the HTTP route arrives with the app API)."""
    runtime = build_runtime()
    settings = runtime.settings
    data = read_untrusted_file(image, max_bytes=settings.max_image_bytes)
    with runtime.factory() as session, session.begin():
        index = NearDuplicateIndex()
        index.refresh(session)
        context = IngestContext(
            store=runtime.store, index=index, max_distance=settings.near_duplicate_max_distance
        )
        result = ingest_report(
            session,
            context,
            image_bytes=data,
            claimed_class_name=claimed,
            predicted_class_name=predicted,
            reporter_id=reporter,
            note=note,
            filename=image.name,
            max_bytes=settings.max_image_bytes,
            max_pixels=settings.max_image_pixels,
        )
    payload = {
        "image_id": result.image_id,
        "source_id": result.source_id,
        "outcome": result.outcome.value,
    }
    _emit(
        as_json,
        payload,
        lambda: click.echo(f"report stored: image {result.image_id} ({result.outcome.value})"),
    )


# --- the model in the loop ------------------------------------------------------


def _learning_paths(runtime: Runtime) -> LearningPaths:
    return LearningPaths.under(runtime.settings.data_dir)


@main.command("score")
@click.option("--limit", type=int, default=None, help="At most this many pending images.")
@_json_option
@domain_errors
def score(limit: int | None, as_json: bool) -> None:
    """Embed and score pending images in this process (no worker needed)."""
    from datetime import timedelta

    from curation.learning import outbox
    from curation.learning.backbones import load_backbone
    from curation.learning.pipeline import BatchOutcome, process_batch
    from curation.learning.priority import Strategy

    runtime = build_runtime()
    settings = runtime.settings
    with runtime.factory() as session, session.begin():
        due = outbox.claim_due(session, limit=limit or 10**9, stale_after=timedelta(0))
    backbone = load_backbone(settings.backbone, settings.backbone_weights)
    total = BatchOutcome()
    show_bar = sys.stderr.isatty() and not os.environ.get("CURATION_NO_PROGRESS")
    with tqdm(total=len(due), unit="img", disable=not show_bar, file=sys.stderr) as bar:
        for start in range(0, len(due), settings.scoring_batch_size):
            batch = due[start : start + settings.scoring_batch_size]
            outcome = process_batch(
                runtime,
                backbone,
                batch,
                strategy=Strategy(settings.queue_strategy),
                random_share=settings.queue_random_share,
            )
            total.embedded += outcome.embedded
            total.scored += outcome.scored
            total.failed.update(outcome.failed)
            total.dead.extend(outcome.dead)
            bar.update(len(batch))
    payload = {
        "images": len(due),
        "embedded": total.embedded,
        "scored": total.scored,
        "failed": [{"image_id": k, "error": v} for k, v in total.failed.items()],
        "dead": total.dead,
    }
    _emit(
        as_json,
        payload,
        lambda: click.echo(
            f"{len(due)} images: {total.embedded} embeddings, {total.scored} scored,"
            f" {len(total.failed)} failed, {len(total.dead)} parked as dead"
        ),
    )


# ``curation train`` trains on a dataset version, so it lives in the datasets
# layer (datasets/cli_training.py) and arrives through the entry point below;
# ``curation train --from-labels`` is the training from current labels that
# used to live here.


@main.group()
def queue() -> None:
    """The review queue."""


@queue.command("top")
@click.argument("n", type=click.IntRange(1, 10000), default=20)
@click.option(
    "--rediversify",
    is_flag=True,
    help="Spread the batch again with diverse_top (the stored order, which claims follow,"
    " is already spread at the head of the ranking).",
)
@_json_option
@domain_errors
def queue_top(n: int, rediversify: bool, as_json: bool) -> None:
    """The next N items with priority, reasons and sources."""
    from curation.queue import top_items

    runtime = build_runtime()
    with runtime.factory() as session:
        entries = top_items(session, _learning_paths(runtime), n, diverse=rediversify)

    def human() -> None:
        for entry in entries:
            click.echo(f"image {entry.image_id}  priority {entry.priority:.3f}  [{entry.strategy}]")
            for reason in entry.reasons:
                click.echo(f"    - {reason}")

    _emit(as_json, {"items": [e.as_dict() for e in entries]}, human)


# --- store --------------------------------------------------------------------


@main.group()
def store() -> None:
    """The image store."""


@store.command("gc")
@click.option("--grace-seconds", type=float, default=DEFAULT_GRACE_SECONDS, show_default=True)
@click.option("--dry-run", is_flag=True)
@_json_option
@domain_errors
def store_gc(grace_seconds: float, dry_run: bool, as_json: bool) -> None:
    """Remove stored files that no image row references, and fine-tuned spaces and
    classifier files that no model uses (left by a fine-tuning run killed outright)."""
    runtime = build_runtime()
    orphans, leftovers = collect_everything(
        runtime.factory,
        runtime.store,
        runtime.settings.data_dir,
        grace_seconds=grace_seconds,
        dry_run=dry_run,
    )
    verb = "would remove" if dry_run else "removed"
    _emit(
        as_json,
        {"orphans": orphans, "fine_tuning_leftovers": leftovers, "dry_run": dry_run},
        lambda: click.echo(
            f"{verb} {len(orphans)} orphan files and {len(leftovers)} fine-tuning leftovers"
            + (f" ({', '.join(leftovers)})" if leftovers else "")
        ),
    )


# --- accounts -------------------------------------------------------------------


@main.group()
def users() -> None:
    """Reviewer and admin accounts (the first admin is made here)."""


@users.command("create")
@click.argument("username")
@click.option(
    "--role",
    type=click.Choice([role.value for role in UserRole]),
    required=True,
    help="What the account may do.",
)
@click.option(
    "--password-stdin",
    is_flag=True,
    help="Read the password from the first line of stdin instead of prompting.",
)
@_json_option
@domain_errors
def users_create(username: str, role: str, password_stdin: bool, as_json: bool) -> None:
    """Create an account; the password is prompted for twice, hidden."""
    from curation.accounts import create_user

    password: str
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    runtime = build_runtime()
    with runtime.factory() as session, session.begin():
        user = create_user(session, username=username, password=password, role=role, actor="cli")
        payload = _user_payload(user)
    _emit(as_json, payload, lambda: click.echo(f"user {user.username} created ({user.role})"))


@users.command("list")
@_json_option
@domain_errors
def users_list(as_json: bool) -> None:
    """Every account with its role and whether it is active."""
    from curation.accounts import list_users

    runtime = build_runtime()
    with runtime.factory() as session:
        rows = [_user_payload(user) for user in list_users(session)]

    def human() -> None:
        for row in rows:
            state = "active" if row["is_active"] else "inactive"
            click.echo(f"{row['id']:>4}  {row['username']:<24} {row['role']:<9} {state}")

    _emit(as_json, {"users": rows}, human)


def _user_payload(user: User) -> dict[str, Any]:
    return {
        "id": user.id,
        "username": user.username,
        "role": user.role,
        "is_active": user.is_active,
        "created_at": user.created_at.isoformat(),
    }


# --- processes ----------------------------------------------------------------


@main.command("web")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--workers", default=2, show_default=True, type=int)
def web(host: str, port: int, workers: int) -> None:
    """Serve the web app with gunicorn."""
    os.execvp(  # noqa: S606  (replaces this process with gunicorn on purpose)
        sys.executable,
        [
            sys.executable,
            "-m",
            "gunicorn",
            "--bind",
            f"{host}:{port}",
            "--workers",
            str(workers),
            "--access-logfile",
            "-",
            "webui.wsgi:app",
        ],
    )


@main.command("worker", context_settings={"ignore_unknown_options": True})
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
def worker(celery_args: tuple[str, ...]) -> None:
    """Start a Celery worker (extra arguments go to celery)."""
    # Replaced by the celery process rather than imported: the domain
    # package never imports Celery.
    os.execvp(  # noqa: S606
        sys.executable,
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "workers.app",
            "worker",
            "--loglevel=INFO",
            *celery_args,
        ],
    )


def _attach_commands_of_other_layers() -> None:
    """Add the command groups registered under the ``curation.commands`` entry point.

    ``curation dataset ...`` lives in the datasets layer, which may import
    this package but not the other way round. A dotted name joins a group of
    this package: ``models.reembed`` becomes ``curation models reembed``.
    """
    from importlib.metadata import entry_points

    for entry in entry_points(group="curation.commands"):
        group_name, _, name = entry.name.rpartition(".")
        group = main.commands.get(group_name) if group_name else main
        if not isinstance(group, click.Group):
            logging.getLogger(__name__).warning(
                "command %s (%s) names no command group of curation: left out",
                entry.name,
                entry.value,
            )
            continue
        if name not in group.commands:
            group.add_command(entry.load(), name)


_attach_commands_of_other_layers()

if __name__ == "__main__":
    main()
