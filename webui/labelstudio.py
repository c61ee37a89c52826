"""Label Studio's side door: signed image URLs it loads, and its annotation webhook.

Neither route uses the session cookie. An image URL carries an HMAC of the
image id and its expiry (``curation.labelstudio.signing``); the webhook
carries a shared secret in a header, compared in constant time, and only
enqueues a pull of the task it names (the pull reads Label Studio itself, so
nothing in the webhook's body is trusted beyond a task id).
"""

from __future__ import annotations

import time
from typing import Any

from flask import Blueprint, abort, current_app, jsonify, request, send_file
from flask.typing import ResponseReturnValue

from curation.labelstudio.signing import verify, verify_secret
from curation.labelstudio.sync import SECRET_HEADER, WEBHOOK_PATH
from curation.models import Image
from webui import runtime_of
from webui.auth import csrf_exempt

blueprint = Blueprint("labelstudio", __name__)
csrf_exempt(blueprint)  # no cookie: the secret or the signature authenticates
_MIME = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp"}


@blueprint.get("/integrations/labelstudio/images/<int:image_id>")
def signed_image(image_id: int) -> ResponseReturnValue:
    runtime = runtime_of(current_app)
    if not verify(
        runtime.settings.secret_key,
        image_id,
        request.args.get("expires"),
        request.args.get("sig"),
        now=time.time(),
    ):
        abort(403)
    with runtime.factory() as session:
        image = session.get(Image, image_id)
        if image is None:
            abort(404)
        path = runtime.store.path_for(image.storage_key)
        stored_format = image.stored_format
    if not path.is_file():
        abort(404)
    response = send_file(path, mimetype=_MIME.get(stored_format, "application/octet-stream"))
    response.headers["Cache-Control"] = "private, max-age=3600"
    # Label Studio's page loads the image from another origin.
    response.headers["Access-Control-Allow-Origin"] = "*"
    return response


def _enqueue_pull(task_id: int) -> None:
    # Imported here: importing workers.tasks builds the Celery app.
    from workers.tasks import labelstudio_pull_task

    labelstudio_pull_task.delay(task_id)


def _task_id(payload: Any) -> int | None:
    if not isinstance(payload, dict):
        return None
    task = payload.get("task")
    if isinstance(task, dict):
        task = task.get("id")
    if task is None and isinstance(payload.get("annotation"), dict):
        task = payload["annotation"].get("task")
    if isinstance(task, int) and not isinstance(task, bool):
        return task
    return None


@blueprint.post(WEBHOOK_PATH)
def webhook() -> ResponseReturnValue:
    secret = runtime_of(current_app).settings.labelstudio_webhook_secret
    if not verify_secret(secret, request.headers.get(SECRET_HEADER)):
        return jsonify({"error": "the webhook secret is missing or wrong"}), 403
    payload = request.get_json(silent=True)
    task_ids: list[int] = []
    single = _task_id(payload)
    if single is not None:
        task_ids.append(single)
    elif isinstance(payload, dict) and isinstance(payload.get("annotations"), list):
        # ANNOTATIONS_CREATED (bulk) sends a list of annotations.
        for annotation in payload["annotations"]:
            found = _task_id({"annotation": annotation})
            if found is not None:
                task_ids.append(found)
    for task_id in sorted(set(task_ids)):
        _enqueue_pull(task_id)
    return jsonify({"queued": sorted(set(task_ids))}), 202
