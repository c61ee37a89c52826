"""Admin pages for the REST API: the apps' tokens, and how far each reporter is trusted.

``/admin/tokens`` lists, creates and revokes tokens. A new token's plaintext
is in the body of the POST's own response (``Cache-Control: no-store``) and
nowhere else: not in a redirect, not in the flashed messages (the session
cookie is signed, not encrypted), not in the database (only its hash).
Revoking asks first, on a page of its own with a form.

``/admin/reporters`` shows each (app, reporter id): reports, decided, agreed,
reliability and whether the flood throttle holds it now; least reliable first
unless another order is asked for. Admins only; no script, so the strict CSP holds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Blueprint, current_app, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from curation.api_tokens import create_token, list_tokens, revoke_token
from curation.db import write_transaction
from curation.exceptions import Conflict, NotFound, RejectedInput
from curation.models import ApiToken, UserRole
from curation.reporters import ReporterSummary, reporter_summaries
from webui import runtime_of
from webui.auth import current_user, role_required

blueprint = Blueprint("api_admin", __name__)

REPORTER_ROWS = 200  # reporters with the most reports; the page sorts these

_SORTS: dict[str, tuple[str, Callable[[ReporterSummary], Any]]] = {
    "reliability": (
        "lowest reliability first",
        lambda s: (s.record.reliability, -s.record.reports),
    ),
    "reports": ("most reports first", lambda s: (-s.record.reports, s.record.reliability)),
    "last_hour": ("most reports in the last hour first", lambda s: (-s.record.last_hour,)),
    "throttled": ("throttled first", lambda s: (not s.throttled, s.record.reliability)),
    "reporter": ("by app and reporter id", lambda s: (s.app, s.reporter_id)),
}


def _actor() -> str:
    user = current_user()
    assert user is not None  # role_required ran first
    return user.username


def _tokens_page(
    *,
    status: int = 200,
    error: str | None = None,
    form: dict[str, str] | None = None,
    created: dict[str, Any] | None = None,
) -> ResponseReturnValue:
    with runtime_of(current_app).factory() as session:
        tokens = list_tokens(session)
    page = render_template(
        "admin_tokens.html",
        tokens=tokens,
        error=error,
        form=form or {"name": "", "app": ""},
        created=created,
    )
    # The page may hold a plaintext token: no cache keeps a copy.
    return page, status, {"Cache-Control": "no-store"}


@blueprint.get("/admin/tokens")
@role_required(UserRole.ADMIN)
def tokens_page() -> ResponseReturnValue:
    return _tokens_page()


@blueprint.post("/admin/tokens")
@role_required(UserRole.ADMIN)
def create_token_view() -> ResponseReturnValue:
    form = {
        "name": request.form.get("name", "").strip(),
        "app": request.form.get("app", "").strip(),
    }
    try:
        with write_transaction(runtime_of(current_app).factory) as session:
            made = create_token(session, name=form["name"], app=form["app"] or None, actor=_actor())
            created = {
                "id": made.token.id,
                "name": made.token.name,
                "app": made.token.app,
                "plaintext": made.plaintext,
            }
    except RejectedInput as error:
        return _tokens_page(status=400, error=f"Not created: {error}.", form=form)
    except Conflict as error:
        return _tokens_page(status=409, error=f"Not created: {error}.", form=form)
    return _tokens_page(status=201, created=created)


def _token_or_none(token_id: int) -> ApiToken | None:
    with runtime_of(current_app).factory() as session:
        return session.get(ApiToken, token_id) if 0 < token_id < 2**31 else None


@blueprint.get("/admin/tokens/<int:token_id>/revoke")
@role_required(UserRole.ADMIN)
def confirm_revoke(token_id: int) -> ResponseReturnValue:
    token = _token_or_none(token_id)
    if token is None:
        return _tokens_page(status=404, error=f"No API token with id {token_id}.")
    return render_template("admin_token_revoke.html", token=token)


@blueprint.post("/admin/tokens/<int:token_id>/revoke")
@role_required(UserRole.ADMIN)
def revoke_token_view(token_id: int) -> ResponseReturnValue:
    if request.form.get("confirm") != "yes":
        return redirect(url_for("api_admin.confirm_revoke", token_id=token_id))
    try:
        with write_transaction(runtime_of(current_app).factory) as session:
            token = revoke_token(session, token_id, actor=_actor())
            name = token.name
    except NotFound as error:
        return _tokens_page(status=404, error=f"{error}.")
    flash(f"Token {name} revoked: apps that use it now get 401.")
    return redirect(url_for("api_admin.tokens_page"))


@blueprint.get("/admin/reporters")
@role_required(UserRole.ADMIN)
def reporters_page() -> ResponseReturnValue:
    sort = request.args.get("sort", "reliability")
    if sort not in _SORTS:
        sort = "reliability"
    settings = runtime_of(current_app).settings
    with runtime_of(current_app).factory() as session:
        rows = reporter_summaries(
            session, max_per_hour=settings.api_reporter_max_per_hour, limit=REPORTER_ROWS
        )
    rows.sort(key=_SORTS[sort][1])
    return render_template(
        "admin_reporters.html",
        rows=rows,
        sort=sort,
        sorts={key: label for key, (label, _) in _SORTS.items()},
        max_per_hour=settings.api_reporter_max_per_hour,
        row_limit=REPORTER_ROWS,
    )
