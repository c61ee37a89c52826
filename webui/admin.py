"""Admin pages beside the user list: the reviewers' disagreements.

``/admin/disagreements`` renders the page (no script); the same rows are
JSON at ``/api/v1/admin/disagreements``. Both are for admins only: a
reviewer gets 403, a signed-out visitor the login page (or a JSON 401).
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, current_app, jsonify, render_template, request, url_for
from flask.typing import ResponseReturnValue

from curation.exceptions import RejectedInput
from curation.models import UserRole
from curation.review import disagreements
from curation.review.disagreements import Disagreement, DisagreementPage, DisagreementState
from webui import runtime_of
from webui.auth import role_required

blueprint = Blueprint("admin", __name__)


def _page_from_request() -> tuple[DisagreementPage, dict[str, int]]:
    state = DisagreementState.parse(request.args.get("state"))
    after = _whole_number("after")
    limit = _whole_number("limit")
    with runtime_of(current_app).factory() as session:
        page = disagreements.list_disagreements(
            session,
            state,
            now=datetime.now(UTC),
            after=after,
            limit=disagreements.DEFAULT_PAGE if limit is None else limit,
        )
        counts = disagreements.open_counts(session)
    return page, counts


def _whole_number(name: str) -> int | None:
    raw = request.args.get(name, "")
    if raw == "":
        return None
    if not raw.isdigit():
        raise RejectedInput(f"{name} must be a whole number")
    return int(raw)


def review_url(row: Disagreement) -> str | None:
    """Where an admin decides the item: the review page, claiming this very item."""
    if row.state is not DisagreementState.DISPUTED:
        return None
    return url_for("review.page", item=row.item_id, reason="disputed")


def _row_json(row: Disagreement) -> dict[str, Any]:
    data = asdict(row)
    for key in ("first", "second", "resolution"):
        if data[key] is not None:
            data[key]["decided_at"] = data[key]["decided_at"].isoformat()
    data["state"] = row.state.value
    data["held_until"] = row.held_until.isoformat() if row.held_until else None
    data["thumb_url"] = url_for("review.thumbnail", image_id=row.image_id)
    data["image_url"] = url_for("review.image", image_id=row.image_id)
    data["review_url"] = review_url(row)
    return data


@blueprint.get("/admin/disagreements")
@role_required(UserRole.ADMIN)
def disagreements_page() -> ResponseReturnValue:
    try:
        page, counts = _page_from_request()
    except RejectedInput as error:
        return render_template(
            "error.html", status=400, code="RejectedInput", message=str(error)
        ), 400
    next_url = (
        url_for(
            "admin.disagreements_page",
            state=page.state.value,
            after=page.next_cursor,
            limit=page.limit if page.limit != disagreements.DEFAULT_PAGE else None,
        )
        if page.next_cursor is not None
        else None
    )
    return render_template(
        "admin_disagreements.html",
        page=page,
        counts=counts,
        states=list(DisagreementState),
        first_page=request.args.get("after") is not None,
        next_url=next_url,
        review_url=review_url,
    )


@blueprint.get("/api/v1/admin/disagreements")
@role_required(UserRole.ADMIN)
def disagreements_json() -> ResponseReturnValue:
    page, counts = _page_from_request()
    return jsonify(
        {
            "state": page.state.value,
            "items": [_row_json(row) for row in page.rows],
            "next_cursor": page.next_cursor,
            "limit": page.limit,
            "counts": counts,
        }
    )
