"""Models on the web: the registry, one model's metrics, a comparison, training runs.

Pages (any signed-in user may look; only an admin may change anything):

* ``/models``: every model version (the champion highlighted) and the training
  runs, the active one's progress refreshed by ``static/models.js`` from
  ``/api/v1/training/runs/active``; admins ask for a run ("Retrain now") or
  cancel the active one;
* ``/models/<id>``: metrics overall and per class, training curves, the
  confusion matrix, the status history; admins promote (through the gate, an
  override is recorded in the reason) or roll back to it;
* ``/models/compare?a=ID&b=ID``: two versions on one frozen test split.

JSON mirrors live under ``/api/v1/models`` and ``/api/v1/training/runs``.
Thin: every change is one domain call in one transaction owned here, and the
worker tasks (a training run, a rescore after a promotion) are sent only after
that transaction committed.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
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
from flask.typing import ResponseReturnValue
from markupsafe import Markup
from sqlalchemy import select
from sqlalchemy.orm import Session

from curation import registry, training_runs
from curation.db import write_transaction
from curation.exceptions import Conflict, CurationError, Forbidden, NotFound, RejectedInput
from curation.learning.scoring import LearningPaths
from curation.models import (
    AuditEntry,
    DatasetVersion,
    EmbeddingSpace,
    LandmarkClass,
    ModelStatus,
    ModelVersion,
    RunStatus,
    RunTrigger,
    TrainingRun,
    UserRole,
)
from webui import model_charts, runtime_of
from webui.auth import API_PREFIXES, current_user, login_required, role_required

blueprint = Blueprint("models", __name__)

MAX_REASON = 2000
RUNS_SHOWN = 50
POLL_SECONDS = 3
_WHOLE = re.compile(r"\s*\d{1,9}\s*")
_STATUS = {RejectedInput: 400, Forbidden: 403, NotFound: 404, Conflict: 409}
_ERROR_TITLES = {400: "Bad Request", 403: "Forbidden", 404: "Not Found", 409: "Conflict"}
_ACTIONS = {"model.promote": "promoted", "model.rollback": "rolled back to"}


def _session() -> Session:
    return runtime_of(current_app).factory()


def _paths() -> LearningPaths:
    return LearningPaths.under(runtime_of(current_app).settings.data_dir)


def _now() -> datetime:
    return datetime.now(UTC)


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
    return {"stamp": stamp, "percent": percent, "number": number, "poll_seconds": POLL_SECONDS}


def stamp(moment: datetime | str | None) -> str:
    if moment is None:
        return "—"
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    return f"{moment:%Y-%m-%d %H:%M} UTC"


def percent(share: float | None) -> str:
    if share is None or not math.isfinite(share):
        return "—"
    return f"{share * 100:.1f}%"


def number(value: float | None, digits: int = 3) -> str:
    if value is None or not math.isfinite(value):
        return "—"
    return f"{value:.{digits}f}"


def _id_param(name: str) -> int:
    raw = request.args.get(name, "")
    if not _WHOLE.fullmatch(raw):
        raise RejectedInput(f"{name} must be a model version id (a whole number), not {raw!r}")
    return int(raw)


# --- shaping -------------------------------------------------------------------------------


def _class_names(session: Session, class_ids: set[int]) -> dict[int, str]:
    if not class_ids:
        return {}
    rows = session.execute(
        select(LandmarkClass.id, LandmarkClass.slug, LandmarkClass.display_name).where(
            LandmarkClass.id.in_(sorted(class_ids))
        )
    ).all()
    return {int(r[0]): f"{r[2]} ({r[1]})" if r[2] != r[1] else str(r[1]) for r in rows}


def _dataset_refs(session: Session, ids: set[int]) -> dict[int, str]:
    if not ids:
        return {}
    rows = session.execute(
        select(DatasetVersion.id, DatasetVersion.number).where(DatasetVersion.id.in_(sorted(ids)))
    ).all()
    return {int(r[0]): f"v{r[1]}" for r in rows}


def _spaces(session: Session, ids: set[int]) -> dict[int, str]:
    if not ids:
        return {}
    rows = session.execute(
        select(EmbeddingSpace.id, EmbeddingSpace.key).where(EmbeddingSpace.id.in_(sorted(ids)))
    ).all()
    return {int(r[0]): str(r[1]) for r in rows}


def _model_row(
    version: ModelVersion, datasets: dict[int, str], spaces: dict[int, str]
) -> dict[str, Any]:
    row = registry.model_dict(version)
    dataset_id = version.dataset_version_id
    return row | {
        "dataset_version": datasets.get(dataset_id) if dataset_id is not None else None,
        "space": spaces.get(version.space_id, f"space {version.space_id}"),
        "links": {
            "page": url_for("models.model_page", version_id=version.id),
            "api": url_for("models.model_json", version_id=version.id),
        },
    }


def _model_rows(session: Session) -> list[dict[str, Any]]:
    versions = registry.list_models(session)
    datasets = _dataset_refs(
        session, {v.dataset_version_id for v in versions if v.dataset_version_id is not None}
    )
    spaces = _spaces(session, {v.space_id for v in versions})
    return [_model_row(v, datasets, spaces) for v in versions]


def _run_row(run: TrainingRun) -> dict[str, Any]:
    return training_runs.run_dict(run) | {
        "active": run.status in (RunStatus.QUEUED.value, RunStatus.RUNNING.value),
        "model_link": None
        if run.model_version_id is None
        else url_for("models.model_page", version_id=run.model_version_id),
    }


def _history(session: Session, version_id: int) -> list[dict[str, Any]]:
    """Promotions and rollbacks that crowned or retired this version, oldest first."""
    entries = session.scalars(
        select(AuditEntry)
        .where(AuditEntry.entity_type == "model_version", AuditEntry.action.in_(list(_ACTIONS)))
        .order_by(AuditEntry.id)
    )
    out = []
    for entry in entries:
        details = entry.details or {}
        retired = version_id in (details.get("previous_champions") or [])
        if entry.entity_id != version_id and not retired:
            continue
        gate = details.get("gate")
        out.append(
            {
                "at": entry.at.isoformat(),
                "actor": entry.actor,
                "action": entry.action,
                "what": (
                    f"{_ACTIONS[entry.action]} this model"
                    if entry.entity_id == version_id
                    else f"retired: model {entry.entity_id} was {_ACTIONS[entry.action]}"
                ),
                "model_version": entry.entity_id,
                "reason": details.get("reason"),
                "gate": None if gate is None else {"passed": gate.get("passed"),
                                                   "reasons": gate.get("reasons", [])},
            }
        )  # fmt: skip
    return out


@dataclass(frozen=True)
class ClassMetric:
    class_id: int
    name: str
    precision: float | None
    recall: float | None
    support: int


def _detail(session: Session, version_id: int) -> dict[str, Any]:
    version = registry.get_version(session, version_id)
    payload = registry.model_dict(version, full=True)
    test = payload["metrics"].get("test") or {}
    matrix = test.get("confusion_matrix") or {}
    ids = {int(c) for c in version.class_ids} | {int(c) for c in matrix.get("class_ids", [])}
    names = _class_names(session, ids)
    datasets = _dataset_refs(
        session, {version.dataset_version_id} if version.dataset_version_id else set()
    )
    champion = registry.current_champion(session)
    return payload | {
        "class_names": {str(c): names.get(c, f"class {c}") for c in sorted(ids)},
        "dataset_version": datasets.get(version.dataset_version_id or 0),
        "space": _spaces(session, {version.space_id}).get(version.space_id),
        "history": _history(session, version_id),
        "champion_id": champion.id if champion else None,
    }


def _per_class(detail: dict[str, Any]) -> list[ClassMetric]:
    test = detail["metrics"].get("test") or {}
    rows = []
    for key, row in (test.get("per_class") or {}).items():
        rows.append(
            ClassMetric(
                class_id=int(key),
                name=detail["class_names"].get(key, f"class {key}"),
                precision=row.get("precision"),
                recall=row.get("recall"),
                support=int(row.get("support") or 0),
            )
        )
    return rows


def _charts(detail: dict[str, Any]) -> dict[str, Markup | None]:
    metrics = detail["metrics"]
    curves = metrics.get("curves") or {}
    test = metrics.get("test") or {}
    matrix = test.get("confusion_matrix") or {}
    heatmap = None
    if matrix.get("counts"):
        labels = [detail["class_names"].get(str(c), f"class {c}") for c in matrix["class_ids"]]
        heatmap = model_charts.confusion_heatmap(
            matrix["counts"], labels, chart_id="chart-confusion"
        )
    return {
        "loss": model_charts.curve_chart(curves, kind="loss", chart_id="chart-loss"),
        "accuracy": model_charts.curve_chart(curves, kind="accuracy", chart_id="chart-accuracy"),
        "confusion": heatmap,
    }


# --- the list and training runs -------------------------------------------------------------


def _runs(session: Session) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    runs = [_run_row(r) for r in training_runs.list_runs(session, limit=RUNS_SHOWN)]
    active = training_runs.active_run(session)
    return runs, None if active is None else _run_row(active)


@blueprint.get("/models")
@login_required
def list_page() -> ResponseReturnValue:
    with _session() as session:
        models = _model_rows(session)
        runs, active = _runs(session)
    champion = next((m for m in models if m["status"] == ModelStatus.CHAMPION.value), None)
    return render_template(
        "models.html",
        models=list(reversed(models)),
        champion=champion,
        runs=runs,
        active=active,
    )


@blueprint.get("/api/v1/models")
@login_required
def list_json() -> ResponseReturnValue:
    with _session() as session:
        models = _model_rows(session)
    champion = next((m["id"] for m in models if m["status"] == ModelStatus.CHAMPION.value), None)
    return jsonify({"models": models, "champion": champion})


@blueprint.get("/api/v1/training/runs")
@login_required
def runs_json() -> ResponseReturnValue:
    with _session() as session:
        runs, active = _runs(session)
    return jsonify({"runs": runs, "active": active})


@blueprint.get("/api/v1/training/runs/active")
@login_required
def active_run_json() -> ResponseReturnValue:
    """What models.js polls: the active run (None when there is none)."""
    with _session() as session:
        active = training_runs.active_run(session)
        payload = None if active is None else _run_row(active)
    return jsonify({"run": payload, "poll_seconds": POLL_SECONDS})


@blueprint.get("/api/v1/training/runs/<int:run_id>")
@login_required
def run_json(run_id: int) -> ResponseReturnValue:
    with _session() as session:
        return jsonify(_run_row(training_runs.get_run(session, run_id)))


def _enqueue_retrain(run_id: int) -> None:
    # Imported here: importing workers.tasks builds the Celery app from the
    # environment, which no page but this one needs.
    from workers.tasks import retrain

    retrain.delay(run_id)


def _enqueue_rescore(version_id: int) -> None:
    from workers.tasks import rescore

    rescore.delay(version_id)


@blueprint.post("/models/retrain")
@role_required(UserRole.ADMIN)
def retrain_now() -> ResponseReturnValue:
    user = current_user()
    assert user is not None
    with write_transaction(runtime_of(current_app).factory) as session:
        run, created = training_runs.request_run(
            session, trigger=RunTrigger.MANUAL, requested_by=f"user:{user.username}"
        )
        run_id, status, coalesced = run.id, run.status, run.coalesced
    if created:
        _enqueue_retrain(run_id)  # after the commit: the worker finds the run
        flash(f"Training run {run_id} queued: the page shows its progress.")
    else:
        flash(
            f"A training run is already {status} (run {run_id}): your request was folded"
            f" into it ({coalesced} request{'s' if coalesced != 1 else ''} folded so far)."
        )
    return redirect(url_for("models.list_page") + "#runs")


@blueprint.post("/models/runs/<int:run_id>/cancel")
@role_required(UserRole.ADMIN)
def cancel_run(run_id: int) -> ResponseReturnValue:
    with write_transaction(runtime_of(current_app).factory) as session:
        run = training_runs.cancel_request(session, run_id, _now())
        status = run.status
    if status == RunStatus.CANCELLED.value:
        flash(f"Training run {run_id} cancelled before it started.")
    else:
        flash(f"Training run {run_id} will stop after its current epoch.")
    return redirect(url_for("models.list_page") + "#runs")


# --- one model ---------------------------------------------------------------------------------


def _model_page(
    version_id: int,
    *,
    status: int = 200,
    error: str | None = None,
    gate_reasons: list[str] | None = None,
    form: str = "",
    reason: str = "",
) -> tuple[str, int]:
    with _session() as session:
        detail = _detail(session, version_id)
        others = [m for m in _model_rows(session) if m["id"] != version_id]
    html = render_template(
        "model_detail.html",
        model=detail,
        test=detail["metrics"].get("test") or {},
        per_class=_per_class(detail),
        charts=_charts(detail),
        others=others,
        error=error,
        gate_reasons=gate_reasons or [],
        failed_form=form,
        reason=reason,
        max_reason=MAX_REASON,
    )
    return html, status


@blueprint.get("/models/<int:version_id>")
@login_required
def model_page(version_id: int) -> ResponseReturnValue:
    return _model_page(version_id)


@blueprint.get("/api/v1/models/<int:version_id>")
@login_required
def model_json(version_id: int) -> ResponseReturnValue:
    with _session() as session:
        return jsonify(_detail(session, version_id))


def _reason(form: str, version_id: int) -> str | tuple[str, int]:
    reason = " ".join(request.form.get("reason", "").split())
    if not reason:
        return _model_page(
            version_id, status=400, error="A reason is required: it is kept in the audit log.",
            form=form,
        )  # fmt: skip
    if len(reason) > MAX_REASON:
        return _model_page(
            version_id, status=400, form=form, reason=reason[:MAX_REASON],
            error=f"The reason is longer than {MAX_REASON} characters.",
        )  # fmt: skip
    return reason


@blueprint.post("/models/<int:version_id>/promote")
@role_required(UserRole.ADMIN)
def promote(version_id: int) -> ResponseReturnValue:
    user = current_user()
    assert user is not None
    reason = _reason("promote", version_id)
    if not isinstance(reason, str):
        return reason
    override = request.form.get("override") == "yes"
    settings = runtime_of(current_app).settings
    try:
        with write_transaction(runtime_of(current_app).factory) as session:
            gate = registry.promote_through_gate(
                session,
                _paths(),
                version_id,
                actor=user,
                reason=reason,
                now=_now(),
                max_class_drop=settings.gate_max_class_drop,
                min_new_class_recall=settings.gate_min_new_class_recall,
                override=override,
            )
    except registry.GateRefused as refused:
        registry.requeue_lacking(runtime_of(current_app).factory, refused.gate)
        return _model_page(
            version_id, status=409, form="promote", reason=reason,
            error=f"Model {version_id} was not promoted: the promotion gate refused it."
            " Tick the override box to promote it anyway (recorded in the reason).",
            gate_reasons=refused.gate.reasons,
        )  # fmt: skip
    except Conflict as error:
        return _model_page(version_id, status=409, form="promote", reason=reason, error=str(error))
    _enqueue_rescore(version_id)  # after the commit that crowned it
    verdict = "the gate passed" if gate.passed else "the gate refused it and was overridden"
    flash(f"Model {version_id} is the champion ({verdict}); the queue is being rescored with it.")
    return redirect(url_for("models.model_page", version_id=version_id))


@blueprint.post("/models/<int:version_id>/rollback")
@role_required(UserRole.ADMIN)
def rollback(version_id: int) -> ResponseReturnValue:
    user = current_user()
    assert user is not None
    reason = _reason("rollback", version_id)
    if not isinstance(reason, str):
        return reason
    try:
        with write_transaction(runtime_of(current_app).factory) as session:
            registry.rollback(session, version_id, actor=user, reason=reason, now=_now())
    except Conflict as error:
        return _model_page(version_id, status=409, form="rollback", reason=reason, error=str(error))
    _enqueue_rescore(version_id)
    flash(f"Rolled back: model {version_id} is the champion again; the queue is being rescored.")
    return redirect(url_for("models.model_page", version_id=version_id))


# --- comparison ----------------------------------------------------------------------------------


def _comparison() -> dict[str, Any]:
    a_id, b_id = _id_param("a"), _id_param("b")
    settings = runtime_of(current_app).settings
    with _session() as session:
        payload = registry.compare(session, _paths(), a_id, b_id)
        gate = registry.evaluate_gate(
            session,
            _paths(),
            b_id,
            max_class_drop=settings.gate_max_class_drop,
            min_new_class_recall=settings.gate_min_new_class_recall,
            champion_id=a_id,
        )
        ids = {int(c) for c in payload.get("recall_change", {})}
        for key in ("a", "b"):
            version = registry.get_version(session, payload[key]["id"])
            ids |= {int(c) for c in version.class_ids}
        names = _class_names(session, ids)
    # The gate judges b as a challenger to a; for a == b it has nothing to judge.
    payload["gate"] = None if a_id == b_id else gate.as_dict()
    payload["class_names"] = {str(c): names.get(c, f"class {c}") for c in sorted(ids)}
    return payload


@blueprint.get("/models/compare")
@login_required
def compare_page() -> ResponseReturnValue:
    payload = _comparison()
    rows = []
    if "evaluations" in payload:
        first, second = payload["evaluations"]
        for key, change in payload["recall_change"].items():
            rows.append(
                {
                    "class_id": int(key),
                    "name": payload["class_names"].get(key, f"class {key}"),
                    "a": first["recall"].get(key),
                    "b": second["recall"][key],
                    "change": change,
                }
            )
        rows.sort(key=lambda r: (r["change"], r["class_id"]))
    with _session() as session:
        choices = _model_rows(session)
    return render_template("model_compare.html", cmp=payload, rows=rows, choices=choices)


@blueprint.get("/api/v1/models/compare")
@login_required
def compare_json() -> ResponseReturnValue:
    return jsonify(_comparison())
