"""The model pages and their JSON: the registry, one model (metrics, curves, confusion
matrix), a comparison, promotion through the gate, rollback, training runs.

Models are trained by the real domain code on generated embeddings (the helpers
of tests/datasets/test_training.py), once per module; each test works on a
copy. Tasks are sent through a real Celery app on the in-memory broker and read
back from its queue: the test checks what was sent, and never runs it.
"""

from __future__ import annotations

import re
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from curation import training_runs
from curation.accounts import create_user
from curation.learning.scoring import LearningPaths
from curation.models import AuditEntry, ModelVersion, RunStatus, TrainingRun
from curation.runtime import Runtime, build_runtime
from datasets.training import TrainingOptions, request_and_train
from tests.conftest import make_settings
from tests.datasets.test_training import SPACE, _build, _shuffled_v2
from webui import create_app

PASSWORD = "correct horse battery"
QUICK = TrainingOptions(epochs=40, patience=8, label_issues=False)
_META = re.compile(r'<meta name="csrf-token" content="([^"]+)">')


@dataclass(frozen=True)
class TrainedModels:
    """Model ``good`` (v1, champion) and ``bad`` (v2 with shuffled train labels: a
    candidate the gate refuses); classes c0, c1, c2 ("Class 0" ...)."""

    good: int
    bad: int
    class_ids: list[int]


def train_two_models(runtime: Runtime) -> TrainedModels:
    built = _build(runtime)
    paths = LearningPaths.under(runtime.settings.data_dir)
    good = request_and_train(
        runtime.factory, paths, requested_by="test", version_ref="v1", space_key=SPACE,
        seed=0, options=QUICK,
    )  # fmt: skip
    _shuffled_v2(runtime)
    bad = request_and_train(
        runtime.factory, paths, requested_by="test", version_ref="v2", space_key=SPACE,
        seed=0, options=QUICK, promote=False,
    )  # fmt: skip
    assert good.promoted and not bad.promoted
    assert bad.gate is not None and not bad.gate.passed
    return TrainedModels(good.model_version_id, bad.model_version_id, list(built["class_ids"]))  # type: ignore[call-overload]


@dataclass(frozen=True)
class Template:
    database: Path
    data_dir: Path
    models: TrainedModels


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory, migrated_sqlite_template: Path) -> Template:
    folder = tmp_path_factory.mktemp("models")
    database = folder / "curation.db"
    shutil.copyfile(migrated_sqlite_template, database)
    runtime = build_runtime(make_settings(folder / "var", f"sqlite:///{database}"))
    try:
        with runtime.factory() as session, session.begin():
            for name, role in (("root", "admin"), ("ann", "reviewer")):
                create_user(session, username=name, password=PASSWORD, role=role, actor="t")
        models = train_two_models(runtime)
    finally:
        runtime.dispose()
    return Template(database, folder / "var", models)


@pytest.fixture
def runtime(template: Template, tmp_path: Path) -> Iterator[Runtime]:
    database = tmp_path / "curation.db"
    shutil.copyfile(template.database, database)
    shutil.copytree(template.data_dir, tmp_path / "var")
    runtime = build_runtime(make_settings(tmp_path / "var", f"sqlite:///{database}"))
    yield runtime
    runtime.dispose()


@pytest.fixture
def models(template: Template) -> TrainedModels:
    return template.models


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Any]:
    """A fresh ``workers.tasks`` whose Celery app sends to the in-memory broker;
    returns a function that drains a queue: [(task name, args)]."""
    monkeypatch.setenv("CURATION_BROKER_URL", "memory://")
    monkeypatch.setenv("CURATION_RESULT_BACKEND", "cache+memory://")
    monkeypatch.setenv("CURATION_DATA_DIR", str(tmp_path / "worker"))
    for name in [m for m in sys.modules if m == "workers" or m.startswith("workers.")]:
        monkeypatch.delitem(sys.modules, name)
    import workers.tasks

    app = workers.tasks.celery_app
    assert app.conf.broker_url == "memory://"

    def drain(queue: str = "training") -> list[tuple[str, list[Any]]]:
        out = []
        with app.connection_for_read() as connection:
            simple = connection.SimpleQueue(queue)
            while True:
                try:
                    message = simple.get(block=False)
                except simple.Empty:
                    break
                body = message.decode()
                out.append((message.headers["task"], list(body[0])))
                message.ack()
            simple.close()
        return out

    yield drain


def _client(runtime: Runtime, username: str | None) -> tuple[FlaskClient, str]:
    client = create_app({"TESTING": True}, runtime=runtime).test_client()
    token = _META.search(client.get("/login").get_data(as_text=True)).group(1)  # type: ignore[union-attr]
    if username is None:
        return client, token
    client.post("/login", data={"username": username, "password": PASSWORD, "csrf_token": token})
    token = _META.search(client.get("/").get_data(as_text=True)).group(1)  # type: ignore[union-attr]
    return client, token


# --- looking ---------------------------------------------------------------------------------


def test_the_models_page_lists_versions_and_runs(runtime: Runtime, models) -> None:
    ann, _ = _client(runtime, "ann")
    page = ann.get("/models")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert f'<tr id="model-{models.good}" class="champion">' in html
    assert f'id="model-{models.bad}"' in html and "candidate" in html
    assert 'href="/datasets/v1"' in html and 'href="/datasets/v2"' in html
    assert SPACE in html
    # Two succeeded runs (one per request_and_train) with their models linked.
    assert html.count('class="run-status run-succeeded"') == 2
    assert f'href="/models/{models.bad}">model {models.bad}</a>' in html
    assert 'src="/static/models.js"' in html and "<script" not in html.split("<main", 1)[1]
    # A reviewer sees no admin form.
    assert 'id="retrain-form"' not in html and 'id="cancel-form"' not in html
    listing = ann.get("/api/v1/models").get_json()
    assert listing["champion"] == models.good
    assert [m["id"] for m in listing["models"]] == [models.good, models.bad]
    assert listing["models"][0]["dataset_version"] == "v1"
    assert 0.0 <= listing["models"][0]["accuracy"] <= 1.0
    runs = ann.get("/api/v1/training/runs").get_json()
    assert runs["active"] is None and len(runs["runs"]) == 2
    assert ann.get("/api/v1/training/runs/active").get_json()["run"] is None


def test_a_model_page_shows_metrics_curves_and_the_confusion_matrix(
    runtime: Runtime, models
) -> None:
    ann, _ = _client(runtime, "ann")
    html = ann.get(f"/models/{models.good}").get_data(as_text=True)
    assert 'id="model-status">champion<' in html
    for k in range(3):
        assert f"Class {k} (c{k})" in html  # class names in the per-class table and matrix
    assert html.count("<svg") == 3
    for chart in ("chart-loss", "chart-accuracy", "chart-confusion"):
        assert f'id="{chart}"' in html
    assert "validation loss" in html and "train accuracy" in html
    assert 'class="heat heat-9 diagonal"' in html  # a well separated class: a dark diagonal
    assert "true Class 0 (c0), predicted Class 0 (c0)" in html
    assert 'id="per-class-table"' in html and 'id="confusion-table"' in html
    assert 'id="calibration-note"' in html
    assert " style=" not in html.split("<main", 1)[1]
    detail = ann.get(f"/api/v1/models/{models.good}").get_json()
    assert detail["status"] == "champion" and detail["dataset_version"] == "v1"
    assert set(detail["metrics"]["test"]["per_class"]) == {str(c) for c in models.class_ids}
    assert detail["metrics"]["curves"]["loss"]
    assert detail["class_names"][str(models.class_ids[1])] == "Class 1 (c1)"
    assert detail["history"] and detail["history"][0]["action"] == "model.promote"


def test_a_model_page_says_how_many_images_self_training_learnt(runtime: Runtime, models) -> None:
    ann, _ = _client(runtime, "ann")
    # The template's store holds labelled images only: nothing to learn, no line.
    assert 'id="self-training"' not in ann.get(f"/models/{models.good}").get_data(as_text=True)
    with runtime.factory() as session, session.begin():
        version = session.get_one(ModelVersion, models.good)
        version.settings = version.settings | {
            "self_training": {"candidates": 120, "learnt_from_guesses": 97}
        }
    html = ann.get(f"/models/{models.good}").get_data(as_text=True)
    assert "also learnt 97 of 120 unlabelled images" in html


def test_bad_and_unknown_ids(runtime: Runtime, models) -> None:
    ann, _ = _client(runtime, "ann")
    assert ann.get("/models/999").status_code == 404
    missing = ann.get("/api/v1/models/999")
    assert missing.status_code == 404
    assert missing.get_json()["error"]["message"] == "model version 999 does not exist"
    assert ann.get("/models/abc").status_code == 404
    bad = ann.get(f"/models/compare?a=x&b={models.good}")
    assert bad.status_code == 400 and "must be a model version id" in bad.get_data(as_text=True)
    assert ann.get(f"/api/v1/models/compare?a={models.good}").status_code == 400
    assert ann.get(f"/api/v1/models/compare?a={models.good}&b=999").status_code == 404
    assert ann.get("/api/v1/training/runs/999").status_code == 404
    anonymous, _ = _client(runtime, None)
    assert anonymous.get("/api/v1/models").status_code == 401
    assert anonymous.get("/models").status_code == 302


def test_compare_two_versions(runtime: Runtime, models) -> None:
    ann, _ = _client(runtime, "ann")
    url = f"/models/compare?a={models.good}&b={models.bad}"
    html = ann.get(url).get_data(as_text=True)
    assert f"Model {models.good} vs model {models.bad}" in html
    assert 'id="recall-table"' in html and "Class 2 (c2)" in html
    assert 'id="gate-verdict">Refused<' in html
    assert 'class="delta down" id="accuracy-change"' in html
    payload = ann.get("/api/v1" + url).get_json()
    assert payload["test_split_of"] == models.bad
    assert payload["accuracy_change"] < 0
    assert payload["gate"]["passed"] is False and payload["gate"]["champion"] == models.good
    # Against itself: no gate to run.
    same = ann.get(f"/api/v1/models/compare?a={models.good}&b={models.good}").get_json()
    assert same["gate"] is None and same["accuracy_change"] == 0


# --- changing --------------------------------------------------------------------------------


def _status(runtime: Runtime, version_id: int) -> tuple[str, str | None]:
    with runtime.factory() as session:
        version = session.get_one(ModelVersion, version_id)
        return version.status, version.status_reason


def test_promotion_runs_the_gate_and_an_override_is_recorded(
    runtime: Runtime, models, sent
) -> None:
    root, token = _client(runtime, "root")
    url = f"/models/{models.bad}/promote"
    # No reason: refused, nothing changes.
    empty = root.post(url, data={"reason": "  ", "csrf_token": token})
    assert empty.status_code == 400 and "A reason is required" in empty.get_data(as_text=True)
    # The gate refuses the worse model and says why.
    refused = root.post(url, data={"reason": "try it", "csrf_token": token})
    html = refused.get_data(as_text=True)
    assert refused.status_code == 409
    assert "the promotion gate refused it" in html and 'id="gate-reasons"' in html
    assert "accuracy" in html and "vs champion" in html
    assert ">try it</textarea>" in html  # the reason is kept for another try
    assert _status(runtime, models.bad)[0] == "candidate"
    assert sent() == []
    # Ticked override: promoted, the gate's verdict recorded in the reason; rescore sent.
    forced = root.post(url, data={"reason": "try it", "override": "yes", "csrf_token": token})
    assert forced.status_code == 302 and forced.headers["Location"] == url.rsplit("/", 1)[0]
    status, reason = _status(runtime, models.bad)
    assert status == "champion" and reason is not None
    assert reason.startswith("try it (gate skipped: gate refused:")
    assert _status(runtime, models.good)[0] == "retired"
    assert sent() == [("curation.training.rescore", [models.bad])]
    page = root.get(url.rsplit("/", 1)[0]).get_data(as_text=True)
    assert "the gate refused it and was overridden" in page
    assert 'id="is-champion"' in page and 'id="history-table"' in page
    with runtime.factory() as session:
        entry = session.scalars(select(AuditEntry).where(AuditEntry.action == "model.promote"))
        last = list(entry)[-1]
        assert last.actor == "user:root" and last.entity_id == models.bad
    # Promoting the champion again is a conflict, shown on the page.
    again = root.post(url, data={"reason": "again", "csrf_token": token})
    assert again.status_code == 409 and "already the champion" in again.get_data(as_text=True)


def test_rollback_needs_a_reason_and_sends_a_rescore(runtime: Runtime, models, sent) -> None:
    root, token = _client(runtime, "root")
    root.post(
        f"/models/{models.bad}/promote",
        data={"reason": "forced", "override": "yes", "csrf_token": token},
    )
    sent()
    url = f"/models/{models.good}/rollback"
    empty = root.post(url, data={"reason": "", "csrf_token": token})
    assert empty.status_code == 400
    back = root.post(url, data={"reason": "v2 labels were shuffled", "csrf_token": token})
    assert back.status_code == 302
    assert _status(runtime, models.good) == ("champion", "v2 labels were shuffled")
    assert _status(runtime, models.bad)[0] == "retired"
    assert sent() == [("curation.training.rescore", [models.good])]
    history = root.get(f"/api/v1/models/{models.good}").get_json()["history"]
    assert [h["action"] for h in history] == ["model.promote", "model.promote", "model.rollback"]
    assert history[1]["what"].startswith("retired")


def test_reviewers_may_not_change_anything(runtime: Runtime, models) -> None:
    ann, token = _client(runtime, "ann")
    for url in (
        f"/models/{models.bad}/promote",
        f"/models/{models.good}/rollback",
        "/models/retrain",
        "/models/runs/1/cancel",
    ):
        refused = ann.post(url, data={"reason": "mine", "override": "yes", "csrf_token": token})
        assert refused.status_code == 403, url
    assert _status(runtime, models.bad)[0] == "candidate"
    with runtime.factory() as session:
        assert len(training_runs.list_runs(session)) == 2


def test_posts_without_the_csrf_token_are_refused(runtime: Runtime, models) -> None:
    root, _ = _client(runtime, "root")
    refused = root.post(f"/models/{models.bad}/promote", data={"reason": "x", "override": "yes"})
    assert refused.status_code == 400 and "CSRF" in refused.get_data(as_text=True)
    assert root.post("/models/retrain", data={"csrf_token": "wrong"}).status_code == 400
    assert _status(runtime, models.bad)[0] == "candidate"
    with runtime.factory() as session:
        assert len(training_runs.list_runs(session)) == 2


def test_retrain_now_queues_one_run_and_a_second_click_is_folded_in(
    runtime: Runtime, models, sent
) -> None:
    root, token = _client(runtime, "root")
    first = root.post("/models/retrain", data={"csrf_token": token})
    assert first.status_code == 302 and first.headers["Location"] == "/models#runs"
    with runtime.factory() as session:
        run = training_runs.active_run(session)
        assert run is not None
        run_id = run.id
        assert (run.status, run.trigger, run.requested_by) == ("queued", "manual", "user:root")
    assert sent() == [("curation.training.retrain", [run_id])]
    html = root.get("/models").get_data(as_text=True)
    assert f"Training run {run_id} queued" in html
    assert 'id="cancel-form"' in html and f'data-run-id="{run_id}"' in html
    second = root.post("/models/retrain", data={"csrf_token": token})
    assert second.status_code == 302
    html = root.get("/models").get_data(as_text=True)
    assert f"A training run is already queued (run {run_id})" in html
    assert "1 request folded so far" in html
    assert sent() == []  # the queued run's task is already on its way
    with runtime.factory() as session:
        active = session.scalars(
            select(TrainingRun).where(TrainingRun.status.in_(["queued", "running"]))
        ).all()
        assert [(r.id, r.coalesced) for r in active] == [(run_id, 1)]
    polled = root.get("/api/v1/training/runs/active").get_json()
    assert polled["run"]["id"] == run_id and polled["run"]["coalesced"] == 1


def test_cancel_the_active_run(runtime: Runtime, models, sent) -> None:
    root, token = _client(runtime, "root")
    root.post("/models/retrain", data={"csrf_token": token})
    with runtime.factory() as session:
        run = training_runs.active_run(session)
        assert run is not None
        run_id = run.id
    cancelled = root.post(f"/models/runs/{run_id}/cancel", data={"csrf_token": token})
    assert cancelled.status_code == 302
    with runtime.factory() as session:
        assert session.get_one(TrainingRun, run_id).status == RunStatus.CANCELLED.value
    html = root.get("/models").get_data(as_text=True)
    assert f"Training run {run_id} cancelled before it started." in html
    # A run that already ended cannot be cancelled again.
    again = root.post(f"/models/runs/{run_id}/cancel", data={"csrf_token": token})
    assert again.status_code == 409 and "already ended" in again.get_data(as_text=True)
    # A running run is asked to stop; the page shows its progress and the request.
    root.post("/models/retrain", data={"csrf_token": token})
    from datetime import UTC, datetime

    with runtime.factory() as session, session.begin():
        running = training_runs.active_run(session)
        assert running is not None
        running_id = running.id
        training_runs.start(session, running_id, datetime.now(UTC))
        training_runs.heartbeat(session, running_id, 0.4, "epoch 8 of 20", datetime.now(UTC))
    root.post(f"/models/runs/{running_id}/cancel", data={"csrf_token": token})
    html = root.get("/models").get_data(as_text=True)
    assert "will stop after its current epoch" in html
    assert 'value="0.4"' in html and "epoch 8 of 20" in html and "40.0%" in html
    polled = root.get("/api/v1/training/runs/active").get_json()["run"]
    assert polled["status"] == "running" and polled["cancel_requested"] is True
