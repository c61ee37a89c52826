"""``curation tokens``: create, list and revoke the API tokens of apps.

The plaintext token is printed once, by ``create``; only its hash is kept.
"""

from __future__ import annotations

from typing import Any

import click

from curation import api_tokens
from curation.cli_classes import _actor
from curation.cli_support import domain_errors, emit, json_option
from curation.models import ApiToken
from curation.runtime import build_runtime


def _token_dict(token: ApiToken) -> dict[str, Any]:
    def iso(moment: Any) -> str | None:
        return moment.isoformat() if moment is not None else None

    return {
        "id": token.id,
        "name": token.name,
        "app": token.app,
        "prefix": token.prefix,
        "created_by": token.created_by,
        "created_at": iso(token.created_at),
        "last_used_at": iso(token.last_used_at),
        "revoked_at": iso(token.revoked_at),
    }


@click.group("tokens")
def tokens() -> None:
    """API tokens for apps: create, list, revoke."""


@tokens.command("create")
@click.argument("name")
@click.option("--app", default=None, help="The app it belongs to (default: NAME).")
@json_option
@domain_errors
def create_command(name: str, app: str | None, as_json: bool) -> None:
    """Create a token; prints it once (it cannot be shown again)."""
    runtime = build_runtime()
    with runtime.factory() as session, session.begin():
        created = api_tokens.create_token(session, name=name, app=app, actor=_actor())
        payload = _token_dict(created.token) | {"token": created.plaintext}
    emit(
        as_json,
        payload,
        lambda: click.echo(
            f"token {payload['id']} for app {payload['app']} (shown once):\n{payload['token']}"
        ),
    )


@tokens.command("list")
@json_option
@domain_errors
def list_command(as_json: bool) -> None:
    """Every token, newest first (never the secret)."""
    runtime = build_runtime()
    with runtime.factory() as session:
        rows = [_token_dict(t) for t in api_tokens.list_tokens(session)]

    def human() -> None:
        for row in rows:
            state = f"revoked {row['revoked_at']}" if row["revoked_at"] else "live"
            click.echo(
                f"{row['id']:>4}  {row['name']:<24} app={row['app']:<16} cur_{row['prefix']}_…"
                f"  last used {row['last_used_at'] or 'never'}  {state}"
            )
        if not rows:
            click.echo("no tokens")

    emit(as_json, {"tokens": rows}, human)


@tokens.command("revoke")
@click.argument("token_id", type=int)
@json_option
@domain_errors
def revoke_command(token_id: int, as_json: bool) -> None:
    """Revoke a token: requests with it are refused from now on."""
    runtime = build_runtime()
    with runtime.factory() as session, session.begin():
        payload = _token_dict(api_tokens.revoke_token(session, token_id, actor=_actor()))
    emit(as_json, payload, lambda: click.echo(f"token {token_id} revoked"))
