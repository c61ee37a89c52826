"""The REST API for apps, under /api/v1: predict, reports, classes; token auth.

Every request but the OpenAPI document carries ``Authorization: Bearer
cur_<prefix>_<secret>``; the blueprint is CSRF-exempt because no route here
reads the session cookie. Errors are JSON, ``{"error": {"code", "message"}}``:
domain errors through webui/errors.py, HTTP ones (404, 405, 413, 429) here.
Rate limits are Flask-Limiter's, keyed by token, checked after the token.
"""

from __future__ import annotations

import hashlib
from typing import Any

from flask import Blueprint, Flask, Response, current_app, g, jsonify, request
from flask.typing import ResponseReturnValue
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from sqlalchemy import select
from sqlalchemy.orm import selectinload
from werkzeug.datastructures import FileStorage
from werkzeug.exceptions import HTTPException

from curation.api_tokens import verify_token
from curation.db import write_transaction
from curation.exceptions import RejectedInput
from curation.ingest.core import IngestContext
from curation.ingest.reports import ingest_app_photo
from curation.learning.scoring import LearningPaths
from curation.models import ApiToken, ClassStatus, LandmarkClass
from curation.neardup import NearDuplicateIndex
from curation.prediction import MAX_TOP_K, predict
from curation.reporters import report_status, submit_report
from curation.validation import sniff_format
from webui import runtime_of
from webui.api_spec import openapi_document
from webui.auth import csrf_exempt

PREFIX = "/api/v1"
MAX_TEXT_FIELD = 2000

blueprint = csrf_exempt(Blueprint("api", __name__, url_prefix=PREFIX))
limiter = Limiter(key_func=get_remote_address, default_limits=[], headers_enabled=True)

_PUBLIC = {"api.openapi"}
_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "too_many_requests",
    500: "internal_error",
}


class ApiError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code or _STATUS_CODES[status]
        self.message = message


def error_response(status: int, code: str, message: str) -> tuple[Response, int]:
    return jsonify({"error": {"code": code, "message": message}}), status


def init_app(app: Flask) -> None:
    settings = runtime_of(app).settings
    app.config.setdefault("RATELIMIT_STORAGE_URI", settings.ratelimit_storage_url)
    # Keys carry the database's identity: processes that share one database
    # (and a Redis storage) share the counts, separate test databases do not.
    app.extensions["api_limit_scope"] = hashlib.sha256(settings.database_url.encode()).hexdigest()[
        :12
    ]
    limiter.init_app(app)

    @app.errorhandler(ApiError)
    def _api_error(error: ApiError) -> tuple[Response, int]:
        return error_response(error.status, error.code, error.message)

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException) -> Any:
        if not request.path.startswith(PREFIX + "/"):
            return error
        status = error.code or 500
        code = _STATUS_CODES.get(status, "http_error")
        response, _ = error_response(status, code, error.description or error.name)
        if status == 429:
            # RateLimitExceeded's own response carries the Retry-After headers.
            for header in ("Retry-After", "X-RateLimit-Limit", "X-RateLimit-Remaining"):
                own = error.get_response().headers.get(header)
                if own:
                    response.headers[header] = own
        return response, status

    app.register_blueprint(blueprint)


def _token_key() -> str:
    token: ApiToken | None = g.get("api_token")
    scope = current_app.extensions["api_limit_scope"]
    return (
        f"{scope}:token:{token.id}" if token is not None else f"{scope}:ip:{get_remote_address()}"
    )


def _limit() -> str:
    return runtime_of(current_app).settings.api_rate_limit


# One budget per token across every endpoint (scope "api"), not one per route.
rate_limited = limiter.shared_limit(_limit, scope="api", key_func=_token_key)


@blueprint.before_request
def _authenticate() -> ResponseReturnValue | None:
    if request.endpoint in _PUBLIC or request.endpoint is None:
        return None
    header = request.headers.get("Authorization", "")
    scheme, _, presented = header.partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        return error_response(
            401, "unauthorized", "send the app's token: Authorization: Bearer cur_..."
        )
    factory = runtime_of(current_app).factory
    with write_transaction(factory) as session:
        token = verify_token(session, presented[:256])
        if token is not None:
            session.flush()  # write last_used_at before the row leaves the session
            session.expunge(token)
    if token is None:
        return error_response(401, "invalid_token", "the token is unknown, malformed or revoked")
    g.api_token = token
    return None


# --- request parsing -----------------------------------------------------------------


def _image_upload() -> bytes:
    settings = runtime_of(current_app).settings
    if not request.mimetype.startswith("multipart/form-data"):
        raise ApiError(415, "send multipart/form-data with the photo in the field 'image'")
    upload = request.files.get("image")
    if not isinstance(upload, FileStorage):
        raise ApiError(400, "the field 'image' (a file) is required", "missing_field")
    data = upload.stream.read(settings.api_max_image_bytes + 1)
    if len(data) > settings.api_max_image_bytes:
        raise ApiError(413, f"the image is larger than {settings.api_max_image_bytes} bytes")
    try:
        sniff_format(data)
    except RejectedInput as error:
        raise ApiError(415, error.reason, "unsupported_media_type") from None
    return data


def _text(name: str, *, required: bool = False, limit: int = MAX_TEXT_FIELD) -> str | None:
    value = request.form.get(name)
    if value is None or not value.strip():
        if required:
            raise ApiError(400, f"the field {name!r} is required", "missing_field")
        return None
    if len(value) > limit:
        raise ApiError(
            400, f"the field {name!r} is longer than {limit} characters", "invalid_field"
        )
    if "\x00" in value:
        raise ApiError(400, f"the field {name!r} contains a NUL byte", "invalid_field")
    return value


def _flag(name: str) -> bool:
    """A yes/no form field: absent, "false" or "0" is no; "true" or "1" is yes."""
    raw = (request.form.get(name) or "").strip().lower()
    if raw in ("", "false", "0"):
        return False
    if raw in ("true", "1"):
        return True
    raise ApiError(400, f"{name} must be true or false", "invalid_field")


def _int_field(source: Any, name: str, default: int, low: int, high: int) -> int:
    raw = source.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, f"{name} must be a whole number", "invalid_field") from None
    if not low <= value <= high:
        raise ApiError(400, f"{name} must be between {low} and {high}", "invalid_field")
    return value


# --- routes ----------------------------------------------------------------------------


@blueprint.get("/openapi.json")
def openapi() -> ResponseReturnValue:
    return jsonify(openapi_document())


@blueprint.post("/predict")
@rate_limited
def predict_view() -> ResponseReturnValue:
    data = _image_upload()
    top_k = _int_field(request.form, "top_k", 5, 1, MAX_TOP_K)
    lang = _text("lang", limit=16)
    store = _flag("store")
    runtime = runtime_of(current_app)
    settings = runtime.settings
    with runtime.factory() as session:
        result = predict(
            session,
            LearningPaths.under(settings.data_dir),
            data,
            backbone=settings.backbone,
            weights=settings.backbone_weights,
            top_k=top_k,
            language=lang.strip() if lang else None,
            max_bytes=settings.api_max_image_bytes,
            max_pixels=settings.max_image_pixels,
            embedder=current_app.config.get("CURATION_TEST_EMBEDDER"),
        )
    stored_image_id = None
    if store:
        # Only when the app asks: the photo joins the pool for review.
        token: ApiToken = g.api_token
        with write_transaction(runtime.factory) as session:
            index = NearDuplicateIndex()
            index.refresh(session)
            stored_image_id = ingest_app_photo(
                session,
                IngestContext(
                    store=runtime.store,
                    index=index,
                    max_distance=settings.near_duplicate_max_distance,
                ),
                image_bytes=data,
                app=token.app,
                max_bytes=settings.api_max_image_bytes,
                max_pixels=settings.max_image_pixels,
            )
    return jsonify(
        {
            "model_version": result.model_version_id,
            "stored_image_id": stored_image_id,
            "predictions": [
                {
                    "slug": guess.slug,
                    "name": guess.name,
                    "language": guess.language,
                    "probability": round(guess.probability, 6),
                }
                for guess in result.guesses
            ],
        }
    )


@blueprint.post("/reports")
@rate_limited
def create_report() -> ResponseReturnValue:
    data = _image_upload()
    claimed = _text("claimed", required=True, limit=200)
    predicted = _text("predicted", limit=200)
    reporter = _text("reporter_id", limit=128)
    note = _text("note")
    assert claimed is not None
    runtime = runtime_of(current_app)
    settings = runtime.settings
    token: ApiToken = g.api_token
    with write_transaction(runtime.factory) as session:
        index = NearDuplicateIndex()
        index.refresh(session)
        context = IngestContext(
            store=runtime.store, index=index, max_distance=settings.near_duplicate_max_distance
        )
        receipt = submit_report(
            session,
            context,
            session.get_one(ApiToken, token.id),
            image_bytes=data,
            claimed_class_name=claimed,
            predicted_class_name=predicted,
            reporter_id=reporter,
            note=note,
            max_bytes=settings.api_max_image_bytes,
            max_pixels=settings.max_image_pixels,
            max_per_hour=settings.api_reporter_max_per_hour,
        )
        body = report_status(session, token, receipt.report.id)
    return jsonify(body), 201


@blueprint.get("/reports/<int:report_id>")
@rate_limited
def get_report(report_id: int) -> ResponseReturnValue:
    runtime = runtime_of(current_app)
    with runtime.factory() as session:
        return jsonify(report_status(session, g.api_token, report_id))


@blueprint.get("/classes")
@rate_limited
def list_classes() -> ResponseReturnValue:
    status = request.args.get("status")
    allowed = [s.value for s in ClassStatus]
    if status is not None and status not in allowed:
        raise ApiError(400, f"status must be one of {', '.join(allowed)}", "invalid_field")
    query = select(LandmarkClass).options(selectinload(LandmarkClass.aliases))
    if status is not None:
        query = query.where(LandmarkClass.status == status)
    runtime = runtime_of(current_app)
    with runtime.factory() as session:
        classes = [
            {
                "slug": landmark.slug,
                "display_name": landmark.display_name,
                "status": landmark.status,
                "aliases": [{"language": a.language, "name": a.name} for a in landmark.aliases],
            }
            for landmark in session.scalars(query.order_by(LandmarkClass.slug))
        ]
    return jsonify({"classes": classes})
