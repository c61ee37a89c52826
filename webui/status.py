"""The overview page and the health check."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, jsonify, render_template
from sqlalchemy import func, select, text
from sqlalchemy.exc import SQLAlchemyError

from curation.models import Image, ImageSource, Label, LandmarkClass, NearDuplicateGroup
from webui import runtime_of

blueprint = Blueprint("status", __name__)


def _counts() -> dict[str, Any]:
    runtime = runtime_of(current_app)
    with runtime.factory() as session:

        def count(model: Any) -> int:
            return session.scalar(select(func.count()).select_from(model)) or 0

        by_kind = dict(
            session.execute(select(ImageSource.kind, func.count()).group_by(ImageSource.kind))
            .tuples()
            .all()
        )
        by_status = dict(
            session.execute(
                select(LandmarkClass.status, func.count()).group_by(LandmarkClass.status)
            )
            .tuples()
            .all()
        )
        return {
            "images": count(Image),
            "near_duplicate_groups": count(NearDuplicateGroup),
            "sources": by_kind,
            "classes": by_status,
            "labels": count(Label),
        }


@blueprint.get("/")
def overview() -> str:
    return render_template("overview.html", counts=_counts())


@blueprint.get("/healthz")
def health() -> tuple[Response, int]:
    runtime = runtime_of(current_app)
    try:
        with runtime.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except SQLAlchemyError as error:
        return jsonify({"ok": False, "database": f"unreachable: {type(error).__name__}"}), 503
    return jsonify({"ok": True, "database": "ok"}), 200


@blueprint.get("/api/v1/stats")
def stats() -> Response:
    return jsonify(_counts())
