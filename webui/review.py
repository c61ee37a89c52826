"""The reviewers' queue: the page and its JSON API, and login-protected images.

Thin: parse the request, open one short transaction, call the domain
(``curation.review``), add URLs, answer JSON. Domain errors become JSON
errors in ``webui.errors``.
"""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    jsonify,
    render_template,
    request,
    send_file,
    url_for,
)
from flask.typing import ResponseReturnValue
from PIL import Image as PILImage
from sqlalchemy import select

from curation.db import write_transaction
from curation.exceptions import RejectedInput
from curation.models import Image, Label, QueueItem, User
from curation.review import claims, decisions, views
from webui import runtime_of
from webui.auth import current_user, login_required

blueprint = Blueprint("review", __name__)
THUMB_SIZE = 256
# Leases one renewal request may extend (the page holds two or three).
RENEW_MAX = 20
_MIME = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp"}


def _now() -> datetime:
    return datetime.now(UTC)


def _user() -> User:
    user = current_user()
    assert user is not None  # login_required ran first
    return user


def _lease() -> timedelta:
    return timedelta(seconds=runtime_of(current_app).settings.review_lease_seconds)


def _body() -> dict[str, Any]:
    data = request.get_json(silent=True)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RejectedInput("the request body must be a JSON object")
    return data


def _optional_int(data: dict[str, Any], name: str) -> int | None:
    value = data.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise RejectedInput(f"{name} must be an integer")
    try:
        return int(value)
    except ValueError:
        raise RejectedInput(f"{name} must be an integer") from None


def _with_urls(view: dict[str, Any]) -> dict[str, Any]:
    image_id = view["image_id"]
    view["image_url"] = url_for("review.image", image_id=image_id)
    view["thumb_url"] = url_for("review.thumbnail", image_id=image_id)
    for duplicate in view["near_duplicates"]:
        duplicate["thumb_url"] = url_for("review.thumbnail", image_id=duplicate["image_id"])
    return view


@blueprint.get("/review")
@login_required
def page() -> ResponseReturnValue:
    return render_template(
        "review.html",
        user=_user(),
        lease_seconds=runtime_of(current_app).settings.review_lease_seconds,
    )


@blueprint.post("/review/api/claim")
@login_required
def claim() -> ResponseReturnValue:
    """The next item in line (with optional filters), or with ``item_id`` (admins
    only) that very item; ``{"item": null}`` when nothing is left."""
    data = _body()
    chosen = _optional_int(data, "item_id")
    filters = claims.ClaimFilters(
        reason=data.get("reason") or None,
        source=data.get("source") or None,
        class_id=_optional_int(data, "class_id"),
    )
    runtime = runtime_of(current_app)
    with write_transaction(runtime.factory) as session:
        if chosen is not None:
            item: QueueItem | None = claims.claim_item(
                session, _user(), chosen, lease=_lease(), now=_now()
            )
        else:
            item = claims.claim_next(session, _user(), filters=filters, lease=_lease(), now=_now())
        view = _with_urls(views.item_view(session, item)) if item is not None else None
    return jsonify({"item": view})


@blueprint.get("/review/api/mine")
@login_required
def mine() -> ResponseReturnValue:
    with runtime_of(current_app).factory() as session:
        items = claims.my_claims(session, _user(), _now())
        return jsonify({"items": [_with_urls(views.item_view(session, i)) for i in items]})


@blueprint.get("/review/api/items/<int:item_id>")
@login_required
def item(item_id: int) -> ResponseReturnValue:
    with runtime_of(current_app).factory() as session:
        held = claims.held_item(session, _user(), item_id, _now())
        return jsonify({"item": _with_urls(views.item_view(session, held))})


@blueprint.post("/review/api/items/<int:item_id>/decide")
@login_required
def decide(item_id: int) -> ResponseReturnValue:
    wanted = decisions.DecisionRequest.parse(_body())
    runtime = runtime_of(current_app)
    with write_transaction(runtime.factory) as session:
        decision = decisions.decide(
            session,
            _user(),
            item_id,
            wanted,
            consensus=runtime.settings.review_consensus,
            now=_now(),
        )
        label_ids = list(decision.label_ids)
        applied = sorted(
            session.scalars(select(Label.image_id).where(Label.id.in_(label_ids))).all()
        )
        payload = {
            "id": decision.id,
            "action": decision.action,
            "item_id": item_id,
            "image_id": decision.image_id,
            "outcome": decision.outcome,
            "label_ids": label_ids,
            "applied_to": applied,
        }
    return jsonify({"decision": payload})


@blueprint.post("/review/api/items/<int:item_id>/release")
@login_required
def release(item_id: int) -> ResponseReturnValue:
    with write_transaction(runtime_of(current_app).factory) as session:
        claims.release(session, _user(), item_id, _now())
    return jsonify({})


@blueprint.post("/review/api/items/<int:item_id>/renew")
@login_required
def renew(item_id: int) -> ResponseReturnValue:
    with write_transaction(runtime_of(current_app).factory) as session:
        claims.renew(session, _user(), item_id, lease=_lease(), now=_now())
        held = session.get_one(QueueItem, item_id)
        expires = held.lease_expires_at
    return jsonify({"lease_expires_at": expires.isoformat() if expires else None})


@blueprint.post("/review/api/renew")
@login_required
def renew_many() -> ResponseReturnValue:
    """Renew the leases of the items the page holds, in one request.

    Body ``{"item_ids": [...]}`` (at most RENEW_MAX). Answers ``{"renewed":
    {"<id>": "<lease end, ISO 8601>"}, "lost": [{"item_id": id, "message":
    why}]}``: an item no longer held is reported, not an error.
    """
    raw = _body().get("item_ids")
    if (
        not isinstance(raw, list)
        or len(raw) > RENEW_MAX
        or not all(isinstance(i, int) and not isinstance(i, bool) for i in raw)
    ):
        raise RejectedInput(f"item_ids must be a list of at most {RENEW_MAX} integers")
    with write_transaction(runtime_of(current_app).factory) as session:
        done = claims.renew_many(session, _user(), raw, lease=_lease(), now=_now())
    return jsonify(
        {
            "renewed": {str(i): moment.isoformat() for i, moment in done.renewed.items()},
            "lost": [{"item_id": i, "message": message} for i, message in done.lost.items()],
        }
    )


@blueprint.post("/review/api/undo")
@login_required
def undo() -> ResponseReturnValue:
    with write_transaction(runtime_of(current_app).factory) as session:
        restored = decisions.undo_last(session, _user(), lease=_lease(), now=_now())
        view = _with_urls(views.item_view(session, restored))
    return jsonify({"item": view})


@blueprint.get("/review/api/classes")
@login_required
def classes() -> ResponseReturnValue:
    limit = request.args.get("limit", "20")
    if not limit.isdigit():
        raise RejectedInput("limit must be a positive integer")
    with runtime_of(current_app).factory() as session:
        found = views.search_classes(session, request.args.get("q", ""), limit=int(limit))
    return jsonify({"classes": found})


@blueprint.get("/review/api/classes/<int:class_id>/examples")
@login_required
def examples(class_id: int) -> ResponseReturnValue:
    limit = request.args.get("limit", "6")
    if not limit.isdigit():
        raise RejectedInput("limit must be a positive integer")
    with runtime_of(current_app).factory() as session:
        image_ids = views.class_examples(session, class_id, limit=int(limit))
    return jsonify(
        {
            "images": [
                {
                    "image_id": i,
                    "url": url_for("review.image", image_id=i),
                    "thumb_url": url_for("review.thumbnail", image_id=i),
                }
                for i in image_ids
            ]
        }
    )


def _stored(image_id: int) -> tuple[Any, str]:
    runtime = runtime_of(current_app)
    with runtime.factory() as session:
        image = session.get(Image, image_id)
        if image is None:
            abort(404)
        path = runtime.store.path_for(image.storage_key)
        if not path.is_file():
            # A row whose file is gone (a crashed write, a restored backup).
            abort(404)
        return path, image.stored_format


@blueprint.get("/images/<int:image_id>")
@login_required
def image(image_id: int) -> ResponseReturnValue:
    path, stored_format = _stored(image_id)
    response = send_file(path, mimetype=_MIME.get(stored_format, "application/octet-stream"))
    response.headers["Cache-Control"] = "private, max-age=86400, immutable"
    return response


@blueprint.get("/images/<int:image_id>/thumb")
@login_required
def thumbnail(image_id: int) -> ResponseReturnValue:
    path, _ = _stored(image_id)
    # Stored images were decoded and re-encoded at ingestion: safe to open.
    with PILImage.open(path) as picture:
        picture.draft("RGB", (THUMB_SIZE, THUMB_SIZE))
        small = picture.convert("RGB")
        small.thumbnail((THUMB_SIZE, THUMB_SIZE))
    buffer = io.BytesIO()
    small.save(buffer, "JPEG", quality=80)
    response = Response(buffer.getvalue(), mimetype="image/jpeg")
    response.headers["Cache-Control"] = "private, max-age=86400, immutable"
    return response
