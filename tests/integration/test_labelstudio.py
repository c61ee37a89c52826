"""The Label Studio round trip against a real Label Studio server.

The server runs from its own venv (scripts/labelstudio.sh install: its pinned
dependencies conflict with ours), on a free loopback port with a fresh data
folder. The platform serves the signed image URLs from a werkzeug thread.
Push 200 queue items, annotate every task through Label Studio's REST API as
a second user (signed up with the admin's invite), pull: 200 labels, authored
by that user; pull again: nothing new.
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from curation.ingest.folders import crawl_items
from curation.ingest.records import IngestSummary
from curation.ingest.runner import IngestRunner
from curation.labelstudio.client import SdkApi
from curation.labelstudio.config import NOT_A_LANDMARK, label_config
from curation.labelstudio.sync import pull, push
from curation.learning.pipeline import queue_for_cold_start
from curation.learning.scoring import LearningPaths
from curation.models import (
    ClassStatus,
    Image,
    Label,
    LabelStudioAnnotation,
    LabelStudioTask,
    LandmarkClass,
    QueueItem,
    QueueStatus,
)
from curation.runtime import Runtime
from curation.taxonomy import find_or_create_class
from tests.factories import jpeg

REPO_ROOT = Path(__file__).resolve().parents[2]
LS_VENV = Path(os.environ.get("CURATION_LABELSTUDIO_VENV", REPO_ROOT / ".cache/label-studio-venv"))
LS_BIN = LS_VENV / "bin" / "label-studio"
REQUIRE = os.environ.get("CURATION_REQUIRE_SERVICES") == "1"
ADMIN_TOKEN = "curation-test-admin-token-0123456789abcdef"  # a throwaway server
ITEMS = int(os.environ.get("CURATION_LABELSTUDIO_TEST_ITEMS", "200"))
CLASSES = ["Gyeongbokgung", "Deoksugung", "Changdeokgung", "N Seoul Tower"]
NEW_CLASS = "Namsan Hanok Village"  # added to the config in Label Studio only
START_TIMEOUT = 600

pytestmark = pytest.mark.slow


def _problem() -> str | None:
    if not LS_BIN.is_file():
        return f"{LS_BIN} is absent: run scripts/labelstudio.sh install"
    try:
        import httpx  # noqa: F401
        import label_studio_sdk  # noqa: F401
    except ImportError:
        return "label-studio-sdk is not installed (pip install -e '.[labelstudio]')"
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def label_studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    problem = _problem()
    if problem is not None:
        if REQUIRE:
            pytest.fail(problem)
        pytest.skip(problem)
    import httpx

    port = _free_port()
    data = tmp_path_factory.mktemp("label-studio")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CURATION_")},
        "LABEL_STUDIO_BASE_DATA_DIR": str(data),
        "LATEST_VERSION_CHECK": "false",
        "LABEL_STUDIO_USERNAME": "admin@example.com",
        "LABEL_STUDIO_PASSWORD": "admin-password-123",
        "LABEL_STUDIO_USER_TOKEN": ADMIN_TOKEN,
        "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
    }
    log = (data / "server.log").open("wb")
    process = subprocess.Popen(
        [
            str(LS_BIN),
            "start",
            "--no-browser",
            "--internal-host",
            "127.0.0.1",
            "--port",
            str(port),
            "--enable-legacy-api-token",
        ],
        cwd=data,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    try:
        while True:
            if process.poll() is not None:
                pytest.fail(f"Label Studio exited with {process.returncode}; see {data}/server.log")
            try:
                if httpx.get(url + "/health", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() - started > START_TIMEOUT:
                pytest.fail(f"Label Studio did not start in {START_TIMEOUT} s")
            time.sleep(1)
        print(f"Label Studio started in {time.monotonic() - started:.0f} s")
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def _second_user_token(url: str) -> str:
    """Sign up a second user with the admin's invite link; their legacy API token."""
    import httpx

    admin = {"Authorization": f"Token {ADMIN_TOKEN}"}
    invite = httpx.get(url + "/api/invite", headers=admin).json()["token"]
    with httpx.Client(base_url=url, follow_redirects=True) as browser:
        browser.get(f"/user/signup/?token={invite}")
        browser.post(
            f"/user/signup/?token={invite}",
            data={
                "email": "annotator@example.com",
                "password": "annotator-password-1",
                "csrfmiddlewaretoken": browser.cookies.get("csrftoken"),
                "allow_newsletters": "false",
            },
            headers={"Referer": url + "/user/signup/"},
        )
        response = browser.get("/api/current-user/token")
        response.raise_for_status()
        return str(response.json()["token"])


def _serve(runtime: Runtime) -> tuple[str, Any]:
    from werkzeug.serving import make_server

    from webui import create_app

    app = create_app({"TESTING": False}, runtime=runtime)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    return f"http://127.0.0.1:{server.server_port}", server


def _seed(runtime: Runtime, folder: Path) -> list[int]:
    with runtime.factory() as session, session.begin():
        for name in CLASSES:
            find_or_create_class(session, name)
    folder.mkdir(parents=True)
    for n in range(ITEMS):
        (folder / f"photo-{n:03d}.jpg").write_bytes(jpeg(5000 + n, 96, 64))
    summary = IngestSummary()
    IngestRunner(runtime.factory, runtime.store, runtime.settings).run(
        crawl_items(folder, crawler="ls-test", manifest=None, summary=summary),
        actor="test",
        action="test.seed",
        summary=summary,
        parallel=False,
    )
    with runtime.factory() as session:
        image_ids = list(session.scalars(select(Image.id).order_by(Image.id)))
    assert len(image_ids) == ITEMS, summary
    queue_for_cold_start(runtime, image_ids)
    return image_ids


def _result(k: int, name: str) -> list[dict[str, Any]]:
    choice = {
        "from_name": "class",
        "to_name": "image",
        "type": "choices",
        "value": {"choices": [name]},
    }
    if k % 3 or name == NOT_A_LANDMARK:
        return [choice]
    box = {
        "from_name": "box",
        "to_name": "image",
        "type": "rectanglelabels",
        "original_width": 96,
        "original_height": 64,
        "value": {
            "x": 25.0,
            "y": 12.5,
            "width": 50.0,
            "height": 50.0,
            "rotation": 0,
            "rectanglelabels": [name],
        },
    }
    return [choice, box]


def test_push_annotate_pull_pull_again(label_studio: str, runtime: Runtime, tmp_path: Path) -> None:
    import httpx

    image_ids = _seed(runtime, tmp_path / "photos")
    public_url, server = _serve(runtime)
    try:
        settings = replace(
            runtime.settings,
            labelstudio_url=label_studio,
            labelstudio_token=ADMIN_TOKEN,
            public_url=public_url,
        )
        api = SdkApi(label_studio, ADMIN_TOKEN)
        pushed = push(
            runtime.factory,
            api,
            settings=settings,
            paths=LearningPaths.under(settings.data_dir),
            project="landmarks-test",
            limit=ITEMS,
        )
        assert pushed.sent == ITEMS
        assert sorted(pushed.image_ids) == image_ids

        with runtime.factory() as session:
            statuses = set(session.scalars(select(QueueItem.status)))
        assert statuses == {QueueStatus.HELD.value}  # out of the web queue

        tasks = list(api.tasks(pushed.project_id))
        assert len(tasks) == ITEMS
        # The image URL is the platform's, signed and expiring; no path leaks.
        image_url = tasks[0]["data"]["image"]
        assert image_url.startswith(public_url + "/integrations/labelstudio/images/")
        assert str(runtime.settings.data_dir) not in image_url
        assert httpx.get(image_url).status_code == 200
        assert httpx.get(image_url.replace("sig=", "sig=0")).status_code == 403

        # Someone adds a class to the config in Label Studio.
        api.set_label_config(pushed.project_id, label_config([*CLASSES, NEW_CLASS]))
        assert NEW_CLASS in api.get_label_config(pushed.project_id)

        token = _second_user_token(label_studio)
        names = [*CLASSES, NOT_A_LANDMARK, NEW_CLASS]
        with httpx.Client(
            base_url=label_studio, headers={"Authorization": f"Token {token}"}, timeout=60
        ) as annotator:
            for k, task in enumerate(tasks):
                name = names[k % len(names)]
                response = annotator.post(
                    f"/api/tasks/{task['id']}/annotations/",
                    json={"result": _result(k, name), "was_cancelled": False},
                )
                assert response.status_code == 201, response.text

        first = pull(runtime.factory, api, project="landmarks-test")
        assert first.labels == ITEMS, first.as_dict()
        assert first.not_applied == {}
        assert len(first.proposed_classes) == 1

        with runtime.factory() as session:
            labels = session.scalars(select(Label).order_by(Label.id)).all()
            assert len(labels) == ITEMS
            assert {label.image_id for label in labels} == set(image_ids)
            assert all(label.origin.startswith("labelstudio:landmarks-test:") for label in labels)
            authors = set(session.scalars(select(LabelStudioAnnotation.ls_user)))
            assert authors == {"annotator@example.com"}
            new = session.scalars(
                select(LandmarkClass).where(LandmarkClass.display_name == NEW_CLASS)
            ).one()
            assert new.status == ClassStatus.PROPOSED.value
            boxed = [label for label in labels if label.box is not None]
            assert boxed and all(label.box == (24.0, 8.0, 72.0, 40.0) for label in boxed)
            by_class = dict(
                session.execute(
                    select(LandmarkClass.slug, func.count())
                    .join(Label, Label.class_id == LandmarkClass.id)
                    .group_by(LandmarkClass.slug)
                )
                .tuples()
                .all()
            )
            assert set(by_class) == {
                "gyeongbokgung",
                "deoksugung",
                "changdeokgung",
                "n-seoul-tower",
                new.slug,
            }
            assert set(session.scalars(select(QueueItem.status))) == {QueueStatus.DONE.value}
            assert set(session.scalars(select(LabelStudioTask.state))) == {"returned"}

        second = pull(runtime.factory, api, project="landmarks-test")
        assert second.labels == 0
        assert second.already_pulled == ITEMS
        with runtime.factory() as session:
            assert session.scalar(select(func.count()).select_from(Label)) == ITEMS
    finally:
        server.shutdown()
        server.server_close()
