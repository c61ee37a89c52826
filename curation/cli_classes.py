"""``curation classes``: list, add, rename, merge, split and retire landmark classes.

A class is named by its slug or by any of its names (``taxonomy.find_class``).
Each change runs in one transaction and is recorded as done by
``cli:<OS user>``. As in ``curation.cli``, a domain error is one line on
stderr and exit status 2; ``--json`` prints the result on stdout.

Kept apart from ``curation.cli`` (which registers this group) so that the
class commands do not grow the main module; both use ``curation.cli_support``.
"""

from __future__ import annotations

import getpass
from typing import Any

import click

from curation import classes as lifecycle
from curation.cli_support import domain_errors, json_option
from curation.cli_support import emit as _emit
from curation.learning.scoring import LearningPaths
from curation.models import ClassChange, ClassStatus, LandmarkClass
from curation.runtime import build_runtime


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no user name in the environment or the password database
        return "cli"


def _class_dict(landmark: LandmarkClass) -> dict[str, Any]:
    return {
        "id": landmark.id,
        "slug": landmark.slug,
        "display_name": landmark.display_name,
        "status": landmark.status,
        "latitude": landmark.latitude,
        "longitude": landmark.longitude,
        "aliases": [{"language": a.language, "name": a.name} for a in landmark.aliases],
    }


def _aliases_text(aliases: list[dict[str, str]]) -> str:
    return ", ".join(f"{a['language']}:{a['name']}" for a in aliases)


_json_option = json_option
_reason_option = click.option("--reason", default="", help="Why: kept in the class history.")


@click.group("classes")
def classes() -> None:
    """Landmark classes: list them, propose, rename, merge, split, retire."""


@classes.command("list")
@click.option("--status", type=click.Choice([s.value for s in ClassStatus]), default=None)
@_json_option
@domain_errors
def list_command(status: str | None, as_json: bool) -> None:
    """Every class with its status, names and the number of images labelled with it now."""
    runtime = build_runtime()
    with runtime.factory() as session:
        rows = [c.as_dict() for c in lifecycle.list_classes(session, status)]

    def human() -> None:
        for row in rows:
            click.echo(
                f"{row['id']:>5}  {row['slug']:<32} {row['status']:<9} {row['images']:>7} images"
                f"  {row['display_name']}  [{_aliases_text(row['aliases'])}]"
            )
        if not rows:
            click.echo("no classes")

    _emit(as_json, {"classes": rows}, human)


@classes.command("history")
@click.argument("name")
@_json_option
@domain_errors
def history_command(name: str, as_json: bool) -> None:
    """Every change of one class, oldest first."""
    runtime = build_runtime()
    with runtime.factory() as session:
        landmark = lifecycle.resolve_class(session, name)
        changes = lifecycle.class_history(session, landmark.id)
        payload: dict[str, Any] = {
            "class": _class_dict(landmark),
            "history": [lifecycle.change_as_dict(c) for c in changes],
        }
        lines = [_history_line(c) for c in changes]

    def human() -> None:
        click.echo(f"{landmark.display_name} ({landmark.slug}), {landmark.status}")
        for line in lines:
            click.echo(f"  {line}")

    _emit(as_json, payload, human)


def _history_line(change: ClassChange) -> str:
    when = change.created_at.strftime("%Y-%m-%d %H:%M")
    reason = f" ({change.reason})" if change.reason else ""
    return f"{when}  {lifecycle.describe_change(change)}, by {change.actor}{reason}"


@classes.command("add")
@click.argument("name")
@click.option("--language", help="Language of NAME (default: guessed from the script).")
@click.option(
    "--alias",
    "aliases",
    multiple=True,
    metavar="LANG:NAME",
    help="Another name, e.g. ko:경복궁 (repeatable; without LANG: the language is guessed).",
)
@click.option("--lat", "latitude", type=float, help="Latitude, -90 to 90.")
@click.option("--lon", "longitude", type=float, help="Longitude, -180 to 180.")
@_reason_option
@_json_option
@domain_errors
def add_command(
    name: str,
    language: str | None,
    aliases: tuple[str, ...],
    latitude: float | None,
    longitude: float | None,
    reason: str,
    as_json: bool,
) -> None:
    """Propose a new class NAME (it becomes active once it has enough reviewed images)."""
    runtime = build_runtime()
    with runtime.factory() as session, session.begin():
        landmark = lifecycle.propose_class(
            session,
            name,
            language=language,
            aliases=[lifecycle.parse_alias(a) for a in aliases],
            latitude=latitude,
            longitude=longitude,
            actor=_actor(),
            reason=reason,
        )
        payload: dict[str, Any] = {"class": _class_dict(landmark)}
    _emit(
        as_json,
        payload,
        lambda: click.echo(
            f"class {payload['class']['display_name']} proposed as {payload['class']['slug']}"
        ),
    )


@classes.command("alias")
@click.argument("name")
@click.argument("alias")
@click.option("--language", help="Language of ALIAS (default: guessed from the script).")
@_reason_option
@_json_option
@domain_errors
def alias_command(name: str, alias: str, language: str | None, reason: str, as_json: bool) -> None:
    """Give class NAME another name ALIAS."""
    runtime = build_runtime()
    with runtime.factory() as session, session.begin():
        landmark = lifecycle.resolve_class(session, name)
        added = lifecycle.add_alias(
            session, landmark.id, alias, language=language, actor=_actor(), reason=reason
        )
        payload: dict[str, Any] = {
            "class": _class_dict(landmark),
            "alias": {"language": added.language, "name": added.name},
        }
    _emit(
        as_json,
        payload,
        lambda: click.echo(
            f"{payload['class']['slug']}: alias {payload['alias']['name']!r}"
            f" ({payload['alias']['language']}) added"
        ),
    )


@classes.command("rename")
@click.argument("name")
@click.argument("new_name")
@click.option("--language", help="Language of NEW_NAME (default: guessed from the script).")
@_reason_option
@_json_option
@domain_errors
def rename_command(
    name: str, new_name: str, language: str | None, reason: str, as_json: bool
) -> None:
    """Rename class NAME to NEW_NAME; the old name stays an alias, still searchable."""
    runtime = build_runtime()
    with runtime.factory() as session, session.begin():
        landmark = lifecycle.resolve_class(session, name)
        old = landmark.display_name
        lifecycle.rename(
            session, landmark.id, new_name, language=language, actor=_actor(), reason=reason
        )
        payload: dict[str, Any] = {
            "class": _class_dict(landmark),
            "from": old,
            "to": landmark.display_name,
        }
    _emit(
        as_json,
        payload,
        lambda: click.echo(f"{payload['class']['slug']}: renamed {old!r} to {payload['to']!r}"),
    )


@classes.command("merge")
@click.argument("source")
@click.argument("into")
@_reason_option
@_json_option
@domain_errors
def merge_command(source: str, into: str, reason: str, as_json: bool) -> None:
    """Merge class SOURCE into class INTO: its images and names move, SOURCE is retired."""
    runtime = build_runtime()
    with runtime.factory() as session, session.begin():
        source_id = lifecycle.resolve_class(session, source).id
        into_id = lifecycle.resolve_class(session, into).id
        result = lifecycle.merge(session, source_id, into_id, actor=_actor(), reason=reason)
        payload: dict[str, Any] = {
            "source": _class_dict(result.source),
            "into": _class_dict(result.into),
            "labels_moved": result.labels_moved,
            "claims_moved": result.claims_moved,
            "aliases_added": [{"language": lang, "name": n} for lang, n in result.aliases_added],
        }
    _emit(
        as_json,
        payload,
        lambda: click.echo(
            f"{payload['source']['slug']} merged into {payload['into']['slug']}:"
            f" {payload['labels_moved']} labels moved, {len(payload['aliases_added'])} names added"
        ),
    )


@classes.command("split")
@click.argument("name")
@click.option(
    "--into",
    "parts",
    multiple=True,
    required=True,
    metavar="NAME",
    help="A new class (give two or more).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="k-means seed.")
@_reason_option
@_json_option
@domain_errors
def split_command(name: str, parts: tuple[str, ...], seed: int, reason: str, as_json: bool) -> None:
    """Split class NAME into new classes; its images go back to review, similar ones together."""
    runtime = build_runtime()
    embeddings = LearningPaths.under(runtime.settings.data_dir).embeddings
    with runtime.factory() as session, session.begin():
        landmark = lifecycle.resolve_class(session, name)
        result = lifecycle.split(
            session,
            landmark.id,
            list(parts),
            actor=_actor(),
            reason=reason,
            embeddings_dir=embeddings,
            seed=seed,
        )
        payload: dict[str, Any] = {
            "original": _class_dict(result.original),
            "new_classes": [_class_dict(c) for c in result.new_classes],
            "images_reopened": result.images_reopened,
            "cluster_sizes": result.cluster_sizes,
            "grouped_by": result.grouped_by,
        }
    _emit(
        as_json,
        payload,
        lambda: click.echo(
            f"{payload['original']['slug']} split into"
            f" {', '.join(c['slug'] for c in payload['new_classes'])}:"
            f" {payload['images_reopened']} images back in review"
            f" in {len(payload['cluster_sizes'])} groups"
        ),
    )


@classes.command("retire")
@click.argument("name")
@_reason_option
@_json_option
@domain_errors
def retire_command(name: str, reason: str, as_json: bool) -> None:
    """Retire class NAME: reviewers are no longer offered it; its labels stay."""
    runtime = build_runtime()
    with runtime.factory() as session, session.begin():
        landmark = lifecycle.resolve_class(session, name)
        lifecycle.retire(session, landmark.id, actor=_actor(), reason=reason)
        payload: dict[str, Any] = {"class": _class_dict(landmark)}
    _emit(as_json, payload, lambda: click.echo(f"{payload['class']['slug']} retired"))
