"""The class pages: every class with its names, images and history; admins change them.

``/classes`` lists the classes (signed-in users); ``/classes/<id>`` shows one
with its whole history. Changes are forms that POST to ``/classes/...`` and
are for admins only (a reviewer gets 403). Each change runs in one
transaction: a refusal renders the page again with the reason and the
matching status (400, 404, 409) and nothing applied; a success redirects
with a flash message.
"""

from __future__ import annotations

from collections.abc import Callable

from flask import Blueprint, current_app, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from sqlalchemy.orm import Session

from curation import classes as lifecycle
from curation.db import write_transaction
from curation.exceptions import Conflict, CurationError, NotFound, RejectedInput
from curation.learning.scoring import LearningPaths
from curation.models import ClassStatus, User, UserRole
from webui import runtime_of
from webui.auth import current_user, login_required, role_required

blueprint = Blueprint("classes", __name__)

_STATUS = {RejectedInput: 400, NotFound: 404, Conflict: 409}


def _status_of(error: CurationError) -> int:
    return next((code for kind, code in _STATUS.items() if isinstance(error, kind)), 500)


def _admin() -> User:
    user = current_user()
    assert user is not None  # role_required let the request through
    return user


def _form(name: str) -> str:
    return request.form.get(name, "").strip()


def _number(name: str, label: str) -> float | None:
    raw = _form(name)
    if raw == "":
        return None
    try:
        return float(raw)
    except ValueError:
        raise RejectedInput(f"{label} must be a number, not {raw!r}") from None


def _lines(name: str) -> list[str]:
    return [line.strip() for line in request.form.get(name, "").splitlines() if line.strip()]


# --- pages ------------------------------------------------------------------------


def _list_page(
    *, status: int = 200, error: str | None = None, form: dict[str, str] | None = None
) -> tuple[str, int]:
    wanted = request.args.get("status") or None
    if wanted is not None and wanted not in {s.value for s in ClassStatus}:
        wanted, error, status = None, f"Unknown status {wanted!r}: showing every class.", 400
    with runtime_of(current_app).factory() as session:
        rows = lifecycle.list_classes(session, wanted)
        histories = {
            class_id: [(change, lifecycle.describe_change(change)) for change in changes]
            for class_id, changes in lifecycle.class_histories(session).items()
        }
    page = render_template(
        "classes.html",
        rows=rows,
        histories=histories,
        statuses=[s.value for s in ClassStatus],
        wanted=wanted,
        error=error,
        form=form or {},
    )
    return page, status


def _detail_page(class_id: int, *, status: int = 200, error: str | None = None) -> tuple[str, int]:
    with runtime_of(current_app).factory() as session:
        try:
            summary = lifecycle.class_summary(session, class_id)
        except NotFound as missing:
            return render_template(
                "error.html", status=404, code="NotFound", message=str(missing)
            ), 404
        history = [
            (change, lifecycle.describe_change(change))
            for change in lifecycle.class_history(session, class_id)
        ]
        others = [
            c
            for c in lifecycle.list_classes(session)
            if c.id != class_id and c.status != ClassStatus.RETIRED.value
        ]
    page = render_template(
        "class_detail.html",
        landmark=summary,
        history=history,
        others=others,
        error=error,
        retired=summary.status == ClassStatus.RETIRED.value,
    )
    return page, status


@blueprint.get("/classes")
@login_required
def page() -> ResponseReturnValue:
    return _list_page()


@blueprint.get("/classes/<int:class_id>")
@login_required
def detail(class_id: int) -> ResponseReturnValue:
    return _detail_page(class_id)


# --- changes (admins) -------------------------------------------------------------


def _change(class_id: int, apply: Callable[[Session, User], str]) -> ResponseReturnValue:
    """Run ``apply`` in one transaction; flash its message, or show why it was refused."""
    try:
        with write_transaction(runtime_of(current_app).factory) as session:
            message = apply(session, _admin())
    except CurationError as error:
        return _detail_page(class_id, status=_status_of(error), error=f"Not changed: {error}.")
    flash(message)
    return redirect(url_for("classes.detail", class_id=class_id))


@blueprint.post("/classes")
@role_required(UserRole.ADMIN)
def propose() -> ResponseReturnValue:
    form = {
        key: request.form.get(key, "")
        for key in ("name", "language", "aliases", "latitude", "longitude", "reason")
    }
    try:
        with write_transaction(runtime_of(current_app).factory) as session:
            landmark = lifecycle.propose_class(
                session,
                form["name"],
                language=_form("language") or None,
                aliases=[lifecycle.parse_alias(line) for line in _lines("aliases")],
                latitude=_number("latitude", "latitude"),
                longitude=_number("longitude", "longitude"),
                actor=_admin(),
                reason=form["reason"],
            )
            class_id, name = landmark.id, landmark.display_name
    except CurationError as error:
        return _list_page(status=_status_of(error), error=f"Not proposed: {error}.", form=form)
    flash(f"Class {name} proposed.")
    return redirect(url_for("classes.detail", class_id=class_id))


@blueprint.post("/classes/<int:class_id>/aliases")
@role_required(UserRole.ADMIN)
def add_alias(class_id: int) -> ResponseReturnValue:
    def apply(session: Session, admin: User) -> str:
        alias = lifecycle.add_alias(
            session,
            class_id,
            _form("name"),
            language=_form("language") or None,
            actor=admin,
            reason=_form("reason"),
        )
        return f"Alias {alias.name} ({alias.language}) added."

    return _change(class_id, apply)


@blueprint.post("/classes/<int:class_id>/rename")
@role_required(UserRole.ADMIN)
def rename(class_id: int) -> ResponseReturnValue:
    def apply(session: Session, admin: User) -> str:
        landmark = lifecycle.rename(
            session,
            class_id,
            _form("name"),
            language=_form("language") or None,
            actor=admin,
            reason=_form("reason"),
        )
        return f"Renamed to {landmark.display_name}; the old name stays searchable."

    return _change(class_id, apply)


@blueprint.post("/classes/<int:class_id>/merge")
@role_required(UserRole.ADMIN)
def merge(class_id: int) -> ResponseReturnValue:
    def apply(session: Session, admin: User) -> str:
        target = _form("into")
        if not target:
            raise RejectedInput("name the class to merge into")
        into = lifecycle.resolve_class(session, target)
        result = lifecycle.merge(session, class_id, into.id, actor=admin, reason=_form("reason"))
        return f"Merged into {result.into.display_name}: {result.labels_moved} labels moved."

    return _change(class_id, apply)


@blueprint.post("/classes/<int:class_id>/split")
@role_required(UserRole.ADMIN)
def split(class_id: int) -> ResponseReturnValue:
    embeddings = LearningPaths.under(runtime_of(current_app).settings.data_dir).embeddings

    def apply(session: Session, admin: User) -> str:
        result = lifecycle.split(
            session,
            class_id,
            _lines("into"),
            actor=admin,
            reason=_form("reason"),
            embeddings_dir=embeddings,
        )
        names = ", ".join(c.display_name for c in result.new_classes)
        return (
            f"Split into {names}: {result.images_reopened} images are back in review,"
            f" in {len(result.cluster_sizes)} groups of similar photos."
        )

    return _change(class_id, apply)


@blueprint.post("/classes/<int:class_id>/retire")
@role_required(UserRole.ADMIN)
def retire(class_id: int) -> ResponseReturnValue:
    def apply(session: Session, admin: User) -> str:
        landmark = lifecycle.retire(session, class_id, actor=admin, reason=_form("reason"))
        return f"Class {landmark.display_name} retired."

    return _change(class_id, apply)
