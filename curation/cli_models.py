"""``curation models ...``: the model registry (list, show, compare, promote, rollback).

Promotion runs the gate (challenger vs champion on the challenger's frozen
test split) and refuses a challenger it finds worse, unless ``--skip-gate``;
a promotion or rollback is audited with its reason, and the queue is then
rescored from cached embeddings.
"""

from __future__ import annotations

import getpass
import json
from datetime import UTC, datetime
from typing import Any

import click

from curation import registry
from curation.cli_support import domain_errors
from curation.learning.priority import Strategy
from curation.learning.scoring import LearningPaths
from curation.runtime import Runtime, build_runtime

_json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


def _echo_json(payload: Any) -> None:
    click.echo(json.dumps(payload, ensure_ascii=False, indent=2))


def _paths(runtime: Runtime) -> LearningPaths:
    return LearningPaths.under(runtime.settings.data_dir)


def _number(value: Any) -> str:
    return "-" if value is None else f"{value:.3f}"


@click.group("models")
def models() -> None:
    """Model versions: metrics, comparison, promotion gate, rollback."""


@models.command("list")
@_json_option
@domain_errors
def list_command(as_json: bool) -> None:
    """Every model version, oldest first."""
    runtime = build_runtime()
    with runtime.factory() as session:
        rows = [registry.model_dict(m) for m in registry.list_models(session)]
    if as_json:
        _echo_json(rows)
        return
    if not rows:
        click.echo("no model versions yet")
    for row in rows:
        dataset = f"dataset {row['dataset_version_id']}" if row["dataset_version_id"] else ""
        click.echo(
            f"{row['id']:>5}  {row['status']:<9} {row['classes']:>4} classes"
            f"  accuracy {_number(row['accuracy'])}  top-5 {_number(row['top5_accuracy'])}"
            f"  {row['created_at'][:19]}  {dataset}"
        )


@models.command("show")
@click.argument("version_id", type=int)
@_json_option
@domain_errors
def show_command(version_id: int, as_json: bool) -> None:
    """One version: settings, metrics on its frozen test split, curves."""
    runtime = build_runtime()
    with runtime.factory() as session:
        payload = registry.model_dict(registry.get_version(session, version_id), full=True)
    if as_json:
        _echo_json(payload)
        return
    test = payload["metrics"].get("test", {})
    click.echo(
        f"model {payload['id']} ({payload['status']}): {payload['classes']} classes,"
        f" dataset {payload['settings'].get('dataset_version', '(current labels)')},"
        f" seed {payload['seed']}"
    )
    if payload["status_reason"]:
        click.echo(f"  status reason: {payload['status_reason']}")
    if test:
        click.echo(
            f"  test: {test['test_images']} images, accuracy {_number(test['accuracy'])},"
            f" top-5 {_number(test['top5_accuracy'])},"
            f" ECE {_number(test['expected_calibration_error'])}"
        )
        for class_id, row in test["per_class"].items():
            click.echo(
                f"    class {class_id:>5}: precision {_number(row['precision'])}"
                f"  recall {_number(row['recall'])}  ({row['support']} images)"
            )


@models.command("compare")
@click.argument("a", type=int)
@click.argument("b", type=int)
@_json_option
@domain_errors
def compare_command(a: int, b: int, as_json: bool) -> None:
    """Two versions on one frozen test split (B's, else A's)."""
    runtime = build_runtime()
    with runtime.factory() as session:
        payload = registry.compare(session, _paths(runtime), a, b)
    if as_json:
        _echo_json(payload)
        return
    if "evaluations" not in payload:
        click.echo(payload.get("note", "no shared evaluation"))
        return
    first, second = payload["evaluations"]
    click.echo(
        f"on the test split of model {payload['test_split_of']}"
        f" ({payload['test_images']} images): accuracy {first['accuracy']:.3f} (model {a})"
        f" -> {second['accuracy']:.3f} (model {b})"
    )
    for class_id, change in payload["recall_change"].items():
        click.echo(f"  class {class_id:>5}: recall {change * 100:+.1f} points")


def _actor(actor: str | None) -> str:
    return actor or f"cli:{getpass.getuser()}"


@models.command("promote")
@click.argument("version_id", type=int)
@click.option("--reason", required=True, help="Why (kept in the audit log).")
@click.option("--skip-gate", is_flag=True, help="Promote even if the gate refuses (audited).")
@click.option("--actor", default=None, help="Who promotes (default: the OS user).")
@_json_option
@domain_errors
def promote_command(
    version_id: int, reason: str, skip_gate: bool, actor: str | None, as_json: bool
) -> None:
    """Make VERSION_ID the champion if it passes the gate; then rescore the queue."""
    runtime = build_runtime()
    settings = runtime.settings
    paths = _paths(runtime)
    try:
        with runtime.factory() as session, session.begin():
            gate = registry.promote_through_gate(
                session,
                paths,
                version_id,
                actor=_actor(actor),
                reason=reason,
                now=datetime.now(UTC),
                max_class_drop=settings.gate_max_class_drop,
                min_new_class_recall=settings.gate_min_new_class_recall,
                override=skip_gate,
            )
    except registry.GateRefused as refused:
        registry.requeue_lacking(runtime.factory, refused.gate)
        raise
    rescored = registry.rescore(
        runtime.factory,
        paths,
        version_id,
        strategy=Strategy(settings.queue_strategy),
        random_share=settings.queue_random_share,
    )
    payload = {"model_version": version_id, "gate": gate.as_dict(), "rescored": rescored}
    if as_json:
        _echo_json(payload)
        return
    click.echo(f"model {version_id} is the champion; {gate.summary()}")
    click.echo(f"{rescored} images rescored")


@models.command("rollback")
@click.argument("version_id", type=int)
@click.option("--reason", required=True, help="Why (kept in the audit log and on the model).")
@click.option("--actor", default=None, help="Who rolls back (default: the OS user).")
@_json_option
@domain_errors
def rollback_command(version_id: int, reason: str, actor: str | None, as_json: bool) -> None:
    """Make an earlier VERSION_ID the champion again; then rescore the queue."""
    runtime = build_runtime()
    settings = runtime.settings
    paths = _paths(runtime)
    with runtime.factory() as session, session.begin():
        registry.rollback(
            session, version_id, actor=_actor(actor), reason=reason, now=datetime.now(UTC)
        )
    rescored = registry.rescore(
        runtime.factory,
        paths,
        version_id,
        strategy=Strategy(settings.queue_strategy),
        random_share=settings.queue_random_share,
    )
    payload = {"model_version": version_id, "reason": reason, "rescored": rescored}
    if as_json:
        _echo_json(payload)
        return
    click.echo(f"rolled back: model {version_id} is the champion; {rescored} images rescored")
