"""Tokens for the apps that call the REST API: create, verify, revoke, list.

A token reads ``cur_<prefix>_<secret>``. The prefix (12 hex digits, stored
plain and unique) finds the row in one indexed lookup; the secret is stored
only as a scrypt hash (the same helpers as passwords) and checked in constant
time. The plaintext is returned once, by :func:`create_token`, and never
stored or logged. Like every domain function these take a ``Session`` and
never commit.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from curation.accounts import _dummy_hash, hash_password, verify_password
from curation.exceptions import Conflict, NotFound, RejectedInput
from curation.models import ApiToken, AuditEntry

TOKEN_PATTERN = re.compile(r"cur_([0-9a-f]{12})_([A-Za-z0-9_-]{20,64})")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._-]{0,99}")


@dataclass(frozen=True)
class CreatedToken:
    token: ApiToken
    plaintext: str  # shown to the admin once


def _clean(value: str, field: str) -> str:
    value = value.strip()
    if not _NAME.fullmatch(value):
        raise RejectedInput(
            f"{field} must be 1 to 100 characters: letters, digits, space, '.', '_' or '-'"
        )
    return value


def create_token(
    session: Session, *, name: str, app: str | None = None, actor: str
) -> CreatedToken:
    """A new token for ``app`` (default: ``name``); Conflict when the name is taken."""
    clean_name = _clean(name, "token name")
    clean_app = _clean(app, "app") if app else clean_name
    if session.scalar(select(ApiToken.id).where(ApiToken.name == clean_name)) is not None:
        raise Conflict(f"a token called {clean_name!r} already exists")
    prefix = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    token = ApiToken(
        name=clean_name,
        app=clean_app,
        prefix=prefix,
        secret_hash=hash_password(secret),
        created_by=actor[:80],
    )
    try:
        with session.begin_nested():
            session.add(token)
            session.flush()
    except IntegrityError:
        raise Conflict(f"a token called {clean_name!r} already exists") from None
    session.add(
        AuditEntry(
            actor=actor,
            action="api_token.create",
            entity_type="api_token",
            entity_id=token.id,
            details={"name": clean_name, "app": clean_app, "prefix": prefix},
        )
    )
    return CreatedToken(token=token, plaintext=f"cur_{prefix}_{secret}")


def verify_token(session: Session, presented: str, *, touch: bool = True) -> ApiToken | None:
    """The live token that ``presented`` is, or None (malformed, unknown, wrong or revoked).

    One scrypt check runs whatever the outcome, so timing does not reveal
    which prefixes exist. ``touch`` records ``last_used_at``.
    """
    match = TOKEN_PATTERN.fullmatch(presented.strip())
    token = None
    if match is not None:
        token = session.scalar(select(ApiToken).where(ApiToken.prefix == match.group(1)))
    if token is None or match is None:
        verify_password(_dummy_hash(), presented[:128])
        return None
    if not verify_password(token.secret_hash, match.group(2)) or token.revoked_at is not None:
        return None
    if touch:
        token.last_used_at = datetime.now(UTC)
    return token


def revoke_token(session: Session, token_id: int, *, actor: str) -> ApiToken:
    """Revoke a token (idempotent); NotFound for an unknown id."""
    token = session.get(ApiToken, token_id)
    if token is None:
        raise NotFound(f"no API token with id {token_id}")
    if token.revoked_at is None:
        token.revoked_at = datetime.now(UTC)
        session.add(
            AuditEntry(
                actor=actor,
                action="api_token.revoke",
                entity_type="api_token",
                entity_id=token.id,
                details={"name": token.name, "app": token.app},
            )
        )
        session.flush()
    return token


def list_tokens(session: Session) -> list[ApiToken]:
    """Every token, newest first (revoked ones included, marked)."""
    return list(session.scalars(select(ApiToken).order_by(ApiToken.id.desc())))
