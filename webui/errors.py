"""Domain exceptions become HTTP statuses here, in one place."""

from __future__ import annotations

from flask import Flask, Response, jsonify

from curation.exceptions import Conflict, CurationError, Forbidden, NotFound, RejectedInput
from curation.reporters import ReporterThrottled

_STATUS: dict[type[CurationError], int] = {
    RejectedInput: 400,
    Forbidden: 403,
    NotFound: 404,
    Conflict: 409,
    ReporterThrottled: 429,
}


def init_app(app: Flask) -> None:
    @app.errorhandler(CurationError)
    def _domain_error(error: CurationError) -> tuple[Response, int]:
        status = next((code for kind, code in _STATUS.items() if isinstance(error, kind)), 500)
        code = type(error).__name__
        response = jsonify({"error": {"code": code, "message": str(error)}})
        if isinstance(error, ReporterThrottled):
            response.headers["Retry-After"] = str(error.retry_after)
        return response, status
