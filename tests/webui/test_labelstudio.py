"""Label Studio's side door: signed image URLs and the webhook's shared secret."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest

from curation.ingest.folders import crawl_items
from curation.ingest.records import IngestSummary
from curation.ingest.runner import IngestRunner
from curation.labelstudio.signing import signed_image_path
from curation.labelstudio.sync import SECRET_HEADER, WEBHOOK_PATH
from curation.runtime import Runtime
from tests.factories import jpeg
from webui import create_app


def _one_image(runtime: Runtime, tmp_path: Path) -> int:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(jpeg(1, 64, 48))
    summary = IngestSummary()
    IngestRunner(runtime.factory, runtime.store, runtime.settings).run(
        crawl_items(folder, crawler="t", manifest=None, summary=summary),
        actor="test",
        action="test",
        summary=summary,
        parallel=False,
    )
    return 1


def test_signed_image_url(runtime: Runtime, tmp_path: Path) -> None:
    image_id = _one_image(runtime, tmp_path)
    client = create_app({"TESTING": True}, runtime=runtime).test_client()
    key = runtime.settings.secret_key
    good = signed_image_path(key, image_id, int(time.time()) + 60)
    response = client.get(good)
    assert response.status_code == 200 and response.mimetype == "image/jpeg"
    assert client.get(signed_image_path(key, image_id, int(time.time()) - 1)).status_code == 403
    assert client.get(good.replace("sig=", "sig=f")).status_code == 403
    assert client.get(f"/integrations/labelstudio/images/{image_id}").status_code == 403
    assert client.get(signed_image_path(key, 999, int(time.time()) + 60)).status_code == 404


def test_webhook_needs_the_secret_and_enqueues_a_pull(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    import webui.labelstudio as module

    queued: list[int] = []
    monkeypatch.setattr(module, "_enqueue_pull", queued.append)
    runtime.settings = replace(runtime.settings, labelstudio_webhook_secret="hook-secret")
    client = create_app({"TESTING": True}, runtime=runtime).test_client()
    body = {"action": "ANNOTATION_CREATED", "task": {"id": 41}, "annotation": {"id": 5}}
    assert client.post(WEBHOOK_PATH, json=body).status_code == 403
    wrong = client.post(WEBHOOK_PATH, json=body, headers={SECRET_HEADER: "nope"})
    assert wrong.status_code == 403
    assert queued == []
    ok = client.post(WEBHOOK_PATH, json=body, headers={SECRET_HEADER: "hook-secret"})
    assert ok.status_code == 202 and queued == [41]


def test_webhook_refused_when_no_secret_is_set(runtime: Runtime) -> None:
    client = create_app({"TESTING": True}, runtime=runtime).test_client()
    response = client.post(WEBHOOK_PATH, json={"task": {"id": 1}}, headers={SECRET_HEADER: ""})
    assert response.status_code == 403
