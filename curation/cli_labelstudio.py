"""``curation labelstudio push|pull``: the two-way sync with a Label Studio server."""

from __future__ import annotations

import click

from curation.cli_support import domain_errors, emit, json_option
from curation.labelstudio.client import connect
from curation.labelstudio.sync import pull, push
from curation.learning.scoring import LearningPaths
from curation.runtime import build_runtime


@click.group("labelstudio")
def labelstudio() -> None:
    """Send queue items to Label Studio and bring its annotations back as labels."""


@labelstudio.command("push")
@click.option("--project", required=True, help="The Label Studio project's title.")
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True)
@json_option
@domain_errors
def push_command(project: str, limit: int, as_json: bool) -> None:
    """Send the top LIMIT queue items as tasks; they leave the web queue until they return."""
    runtime = build_runtime()
    try:
        result = push(
            runtime.factory,
            connect(runtime.settings),
            settings=runtime.settings,
            paths=LearningPaths.under(runtime.settings.data_dir),
            project=project,
            limit=limit,
        )
    finally:
        runtime.dispose()
    emit(
        as_json,
        result.as_dict(),
        lambda: click.echo(
            f"sent {result.sent} items to Label Studio project {result.project!r}"
            f" (id {result.project_id})"
            + ("; labelling config updated" if result.config_updated else "")
        ),
    )


@labelstudio.command("pull")
@click.option("--project", default=None, help="Only this project (default: all with tasks out).")
@json_option
@domain_errors
def pull_command(project: str | None, as_json: bool) -> None:
    """Bring completed annotations back as labels; pulling again adds nothing."""
    runtime = build_runtime()
    try:
        result = pull(runtime.factory, connect(runtime.settings), project=project)
    finally:
        runtime.dispose()

    def human() -> None:
        click.echo(
            f"{result.labels} new labels, {result.already_pulled} annotations pulled before,"
            f" {result.released} held items back in line"
        )
        for slug in result.proposed_classes:
            click.echo(f"proposed class (named in Label Studio): {slug}")
        for reason, count in sorted(result.not_applied.items()):
            click.echo(f"not applied ({count}): {reason}")

    emit(as_json, result.as_dict(), human)
