"""The Flask application factory."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flask import Flask

from curation.runtime import Runtime, build_runtime


def create_app(config: dict[str, Any] | None = None, *, runtime: Runtime | None = None) -> Flask:
    app = Flask(__name__)
    runtime = runtime or build_runtime()
    app.config.update(
        SECRET_KEY=runtime.settings.secret_key,
        MAX_CONTENT_LENGTH=runtime.settings.max_image_bytes + 1024 * 1024,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=runtime.settings.is_production,
        SESSION_COOKIE_NAME="curation_session",
        PERMANENT_SESSION_LIFETIME=timedelta(hours=12),
    )
    app.config.update(config or {})
    app.extensions["curation"] = runtime

    from webui import admin, api, auth, classes, dashboard, datasets, errors, models, review, status

    errors.init_app(app)
    auth.init_app(app)  # CSRF check, security headers, template helpers
    app.register_blueprint(auth.blueprint)
    app.register_blueprint(status.blueprint)
    app.register_blueprint(review.blueprint)
    app.register_blueprint(admin.blueprint)
    from webui import api_admin

    app.register_blueprint(api_admin.blueprint)  # /admin/tokens, /admin/reporters
    app.register_blueprint(dashboard.blueprint)
    app.register_blueprint(datasets.blueprint)
    app.register_blueprint(classes.blueprint)
    app.register_blueprint(models.blueprint)
    from webui import labelstudio

    app.register_blueprint(labelstudio.blueprint)  # signed image URLs and the webhook
    api.init_app(app)  # /api/v1: token auth, rate limits, JSON errors
    return app


def runtime_of(app: Flask) -> Runtime:
    runtime: Runtime = app.extensions["curation"]
    return runtime
