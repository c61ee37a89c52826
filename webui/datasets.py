"""Dataset versions on the web: the list, one version, a diff, a leak check, snapshots.

Pages (any signed-in user may look; only an admin may take a snapshot):

* ``/datasets``: every version, newest first, paginated; the form that
  takes a snapshot (admins) and the one that picks two versions to compare;
* ``/datasets/v<n>``: one version, its class list with images per split;
* ``/datasets/diff?from=v1&to=v2``: what changed (``limit`` rows per kind);
* ``/datasets/v<n>/leaks``: near-duplicates across the version's splits.

The same data is JSON under ``/api/v1/datasets``. A version reference is
what the CLI takes (``v3``, ``3``, ``latest``): a malformed one is a 400, an
unknown one a 404. Thin: parse, call one domain function in one short
session, shape for display. Snapshots are taken exactly as the CLI takes
them (``datasets.activation``), the signed-in admin as author.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flask import (
    Blueprint,
    current_app,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from flask import session as cookie
from flask.typing import ResponseReturnValue
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from curation.classes import describe_change
from curation.db import write_transaction
from curation.exceptions import Conflict, CurationError, Forbidden, NotFound, RejectedInput
from curation.models import ClassChange, DatasetVersion, UserRole
from datasets.activation import class_activation
from datasets.diff import DEFAULT_LIMIT, VersionDiff, diff_versions
from datasets.leaks import LeakReport, check_version
from datasets.manifest import SPLIT_NAMES
from datasets.versions import find_version, load_manifest, snapshot, version_dict
from webui import runtime_of
from webui.auth import API_PREFIXES, current_user, login_required, role_required

blueprint = Blueprint("datasets", __name__)

PAGE_SIZE = 50
# Rows listed per kind of change on the diff page (the JSON lists as many as
# the CLI's --json); the counts are always complete.
PAGE_DIFF_LIMIT = 200
MAX_DIFF_LIMIT = 10_000
LEAK_ROWS = 200
# The hash check of a leak report compares every cross-split pair (about
# 7 ns a pair here): above this many a web request skips it and says so; the
# near-duplicate group check still runs, and the CLI runs the full check.
WEB_MAX_LEAK_PAIRS = 200_000_000
MAX_MESSAGE = 2000
# What the version page shows once after a snapshot; capped so the signed
# session cookie stays far below the browsers' 4 KB.
_JUST_TAKEN = "datasets.just_taken"
_JUST_TAKEN_IDS = 50
_JUST_TAKEN_SLUGS = 20
_WHOLE = re.compile(r"\s*\d{1,9}\s*")
_STATUS = {RejectedInput: 400, Forbidden: 403, NotFound: 404, Conflict: 409}
_ERROR_TITLES = {400: "Bad Request", 403: "Forbidden", 404: "Not Found", 409: "Conflict"}


def _session() -> Session:
    return runtime_of(current_app).factory()


@blueprint.errorhandler(CurationError)
def _domain_error(error: CurationError) -> ResponseReturnValue:
    """As webui.errors for the JSON routes; the pages get the HTML error page."""
    status = next((code for kind, code in _STATUS.items() if isinstance(error, kind)), 500)
    if request.path.startswith(API_PREFIXES):
        return jsonify({"error": {"code": type(error).__name__, "message": str(error)}}), status
    title = _ERROR_TITLES.get(status, "Error")
    return render_template("error.html", status=status, code=title, message=str(error)), status


@blueprint.context_processor
def _helpers() -> dict[str, Any]:
    return {"n": lambda value: f"{value:,}", "stamp": stamp, "split_names": SPLIT_NAMES}


def stamp(moment: datetime) -> str:
    return f"{moment:%Y-%m-%d %H:%M} UTC"


def _whole(name: str, *, default: int | None, low: int, high: int) -> int | None:
    """A whole-number query parameter in [low, high]; ``default`` when absent."""
    raw = request.args.get(name, "")
    if raw == "":
        return default
    if not _WHOLE.fullmatch(raw) or not low <= int(raw) <= high:
        raise RejectedInput(f"{name} must be a whole number from {low} to {high}, not {raw!r}")
    return int(raw)


# --- shaping versions ----------------------------------------------------------------


@dataclass(frozen=True)
class VersionRow:
    version: DatasetVersion
    parent_number: int | None

    @property
    def ref(self) -> str:
        return f"v{self.version.number}"

    @property
    def parent_ref(self) -> str | None:
        return None if self.parent_number is None else f"v{self.parent_number}"

    def as_dict(self) -> dict[str, Any]:
        links = {
            "page": url_for("datasets.version_page", ref=self.ref),
            "api": url_for("datasets.version_json", ref=self.ref),
            "leaks": url_for("datasets.leaks_page", ref=self.ref),
            "diff_from_parent": None
            if self.parent_ref is None
            else diff_url("datasets.diff_json", self.parent_ref, self.ref),
        }
        return version_dict(self.version) | {
            "number": self.version.number,
            "parent_version": self.parent_ref,
            "links": links,
        }


def diff_url(endpoint: str, old: str, new: str) -> str:
    refs: dict[str, Any] = {"from": old, "to": new}  # "from" is a keyword in Python
    return url_for(endpoint, **refs)


def _parent_numbers(session: Session, versions: list[DatasetVersion]) -> dict[int, int]:
    ids = sorted({v.parent_id for v in versions if v.parent_id is not None})
    if not ids:
        return {}
    rows = session.execute(
        select(DatasetVersion.id, DatasetVersion.number).where(DatasetVersion.id.in_(ids))
    ).all()
    return {int(row[0]): int(row[1]) for row in rows}


def _rows(session: Session, versions: list[DatasetVersion]) -> list[VersionRow]:
    numbers = _parent_numbers(session, versions)
    return [
        VersionRow(v, None if v.parent_id is None else numbers.get(v.parent_id)) for v in versions
    ]


@dataclass(frozen=True)
class VersionPage:
    rows: list[VersionRow]
    total: int
    next_before: int | None  # the cursor of the next (older) page


def _versions_page(session: Session, before: int | None) -> VersionPage:
    query = select(DatasetVersion).order_by(DatasetVersion.number.desc()).limit(PAGE_SIZE + 1)
    if before is not None:
        query = query.where(DatasetVersion.number < before)
    versions = list(session.scalars(query))
    older = len(versions) > PAGE_SIZE
    versions = versions[:PAGE_SIZE]
    total = session.scalar(select(func.count()).select_from(DatasetVersion)) or 0
    return VersionPage(
        rows=_rows(session, versions),
        total=int(total),
        next_before=versions[-1].number if older else None,
    )


@dataclass(frozen=True)
class ClassRow:
    class_id: int
    slug: str
    display_name: str
    status: str
    images: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.images.values())


@dataclass(frozen=True)
class VersionDetail:
    row: VersionRow
    classes: list[ClassRow]  # by class id

    def long_tail(self) -> list[ClassRow]:
        """Most images first: the head, then the tail."""
        return sorted(self.classes, key=lambda c: (-c.total, c.slug))

    def as_dict(self) -> dict[str, Any]:
        # As ``curation dataset show --json``: "classes" is the list.
        return self.row.as_dict() | {
            "class_count": self.row.version.class_count,
            "classes": [
                {
                    "id": c.class_id,
                    "slug": c.slug,
                    "display_name": c.display_name,
                    "status": c.status,
                    "images": c.images,
                }
                for c in self.classes
            ],
        }


def _detail(session: Session, version: DatasetVersion) -> VersionDetail:
    manifest = load_manifest(session, version)
    per_class = manifest.per_class_split_counts()
    [row] = _rows(session, [version])
    return VersionDetail(
        row=row,
        classes=[
            ClassRow(
                class_id=record.class_id,
                slug=record.slug,
                display_name=record.display_name,
                status=record.status,
                images=per_class.get(record.class_id, dict.fromkeys(SPLIT_NAMES, 0)),
            )
            for record in manifest.classes
        ],
    )


# --- the list and snapshots ------------------------------------------------------------


def _list_page(
    *, status: int = 200, error: str | None = None, message: str = ""
) -> tuple[str, int]:
    before = _whole("before", default=None, low=1, high=10**9 - 1)
    with _session() as session:
        page = _versions_page(session, before)
    html = render_template(
        "datasets.html",
        page=page,
        before=before,
        error=error,
        message=message,
        max_message=MAX_MESSAGE,
    )
    return html, status


@blueprint.get("/datasets")
@login_required
def list_page() -> ResponseReturnValue:
    return _list_page()


@blueprint.get("/datasets/snapshot")
@login_required
def snapshot_get() -> ResponseReturnValue:
    # The form posts here; a reload or a bookmark of this address lands on the list.
    return redirect(url_for("datasets.list_page"))


@blueprint.post("/datasets/snapshot")
@role_required(UserRole.ADMIN)
def take_snapshot() -> ResponseReturnValue:
    user = current_user()
    assert user is not None
    message = request.form.get("message", "")
    if len(message) > MAX_MESSAGE:
        return _list_page(
            status=400,
            error=f"No snapshot taken: the message is longer than {MAX_MESSAGE} characters.",
            message=message[:MAX_MESSAGE],
        )
    runtime = runtime_of(current_app)
    activate = class_activation(
        min_train=runtime.settings.class_min_train_images,
        min_test=runtime.settings.class_min_test_images,
        actor=user,
    )
    try:
        with write_transaction(runtime.factory) as session:
            result = snapshot(
                session,
                author=user.username,
                author_id=user.id,
                message=message,
                activate=activate,
            )
            taken = result.as_dict()
    except RejectedInput as error:
        return _list_page(status=400, error=f"No snapshot taken: {error}.", message=message)
    except IntegrityError:
        # Two snapshots at once picked the same number (PostgreSQL makes the
        # second wait instead; SQLite refuses it on commit).
        return _list_page(
            status=409,
            error="No snapshot taken: another snapshot was taken at the same moment."
            " Look at the list, then try again if it is still needed.",
            message=message,
        )
    held, activated = taken["held_back_test_changes"], taken["activated_classes"]
    flash(
        f"{taken['version']} taken: {taken['items']:,} images in {taken['classes']:,} classes"
        f" ({taken['added']:,} added, {taken['removed']:,} removed,"
        f" {taken['changed']:,} changed)."
    )
    cookie[_JUST_TAKEN] = {
        "version": taken["version"],
        "held_back": held[:_JUST_TAKEN_IDS],
        "held_back_count": len(held),
        "activated": activated[:_JUST_TAKEN_SLUGS],
        "activated_count": len(activated),
    }
    return redirect(url_for("datasets.version_page", ref=taken["version"]))


@blueprint.get("/api/v1/datasets")
@login_required
def list_json() -> ResponseReturnValue:
    before = _whole("before", default=None, low=1, high=10**9 - 1)
    with _session() as session:
        page = _versions_page(session, before)
    return jsonify(
        {
            "versions": [row.as_dict() for row in page.rows],
            "total": page.total,
            "limit": PAGE_SIZE,
            "next": None
            if page.next_before is None
            else url_for("datasets.list_json", before=page.next_before),
        }
    )


# --- one version ------------------------------------------------------------------------


def _just_taken(ref: str) -> Mapping[str, Any] | None:
    """What the snapshot that made ``ref`` reported, once (then it is forgotten)."""
    taken = cookie.get(_JUST_TAKEN)
    if not isinstance(taken, dict) or taken.get("version") != ref:
        return None
    cookie.pop(_JUST_TAKEN, None)
    return taken


@blueprint.get("/datasets/<ref>")
@login_required
def version_page(ref: str) -> ResponseReturnValue:
    with _session() as session:
        version = find_version(session, ref)
        if ref != f"v{version.number}":  # "latest", "3": one address per version
            return redirect(url_for("datasets.version_page", ref=f"v{version.number}"))
        detail = _detail(session, version)
    settings = runtime_of(current_app).settings
    return render_template(
        "dataset_version.html",
        detail=detail,
        row=detail.row,
        version=detail.row.version,
        classes=detail.long_tail(),
        largest=max((c.total for c in detail.classes), default=0),
        min_train=settings.class_min_train_images,
        min_test=settings.class_min_test_images,
        max_distance=settings.near_duplicate_max_distance,
        just_taken=_just_taken(detail.row.ref),
    )


@blueprint.get("/api/v1/datasets/<ref>")
@login_required
def version_json(ref: str) -> ResponseReturnValue:
    with _session() as session:
        detail = _detail(session, find_version(session, ref))
    return jsonify(detail.as_dict())


# --- diffs --------------------------------------------------------------------------------


def _diff_from_request(default_limit: int) -> VersionDiff:
    """``from`` and ``to`` (default: ``to`` latest, ``from`` its parent) and ``limit``."""
    limit = _whole("limit", default=default_limit, low=0, high=MAX_DIFF_LIMIT)
    assert limit is not None
    with _session() as session:
        new = find_version(session, request.args.get("to") or "latest")
        old_ref = request.args.get("from")
        if old_ref:
            old = find_version(session, old_ref)
        elif new.parent_id is not None:
            old = session.get_one(DatasetVersion, new.parent_id)
        else:
            raise RejectedInput(
                f"v{new.number} has no parent to compare with: name one, as from=v<number>"
            )
        return diff_versions(session, old, new, limit=limit)


def _describe(step: Mapping[str, Any]) -> str:
    try:
        return describe_change(ClassChange(kind=step["kind"], details=step["details"]))
    except (ValueError, KeyError, TypeError, AttributeError):
        return ", ".join(f"{key} {value}" for key, value in step["details"].items())


@blueprint.get("/datasets/diff")
@login_required
def diff_page() -> ResponseReturnValue:
    difference = _diff_from_request(PAGE_DIFF_LIMIT)
    limit = difference.limit
    more = {
        "added": max(len(difference.added) - limit, 0),
        "removed": max(len(difference.removed) - limit, 0),
        "labels": difference.relabelled - len(difference.label_changes),
        "boxes": max(len(difference.boxes_changed) - limit, 0),
        "splits": difference.n_split_moves - len(difference.split_moves),
    }
    return render_template(
        "dataset_diff.html",
        diff=difference,
        old=difference.old,
        new=difference.new,
        limit=limit,
        more=more,
        history=[step | {"text": _describe(step)} for step in difference.class_changes],
        default_limit=PAGE_DIFF_LIMIT,
        max_limit=MAX_DIFF_LIMIT,
    )


@blueprint.get("/api/v1/datasets/diff")
@login_required
def diff_json() -> ResponseReturnValue:
    # As ``curation dataset diff --json``.
    return jsonify(_diff_from_request(DEFAULT_LIMIT).as_dict())


# --- leaks ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class LeakRow:
    a: str
    b: str
    a_image: int | None
    b_image: int | None
    split_a: str
    split_b: str
    kind: str
    distance: int


def _leak_report(ref: str) -> tuple[DatasetVersion, LeakReport, int]:
    settings = runtime_of(current_app).settings
    distance = _whole("max_distance", default=settings.near_duplicate_max_distance, low=0, high=64)
    assert distance is not None
    with _session() as session:
        version = find_version(session, ref)
        report = check_version(
            session, version, max_distance=distance, max_pairs=WEB_MAX_LEAK_PAIRS
        )
    return version, report, distance


@blueprint.get("/datasets/<ref>/leaks")
@login_required
def leaks_page(ref: str) -> ResponseReturnValue:
    version, report, distance = _leak_report(ref)
    rows = [
        LeakRow(
            a=leak.a,
            b=leak.b,
            a_image=leak.a_image_id,
            b_image=leak.b_image_id,
            split_a=leak.split_a,
            split_b=leak.split_b,
            kind=leak.kind,
            distance=leak.distance,
        )
        for leak in report.leaks[:LEAK_ROWS]
    ]
    kinds: dict[str, int] = {}
    for leak in report.leaks:
        kinds[leak.kind] = kinds.get(leak.kind, 0) + 1
    return render_template(
        "dataset_leaks.html",
        version=version,
        report=report,
        rows=rows,
        kinds=kinds,
        more=max(len(report.leaks) - LEAK_ROWS, 0),
        max_distance=distance,
    )


@blueprint.get("/api/v1/datasets/<ref>/leaks")
@login_required
def leaks_json(ref: str) -> ResponseReturnValue:
    version, report, distance = _leak_report(ref)
    return jsonify(report.as_dict() | {"version": f"v{version.number}", "max_distance": distance})
