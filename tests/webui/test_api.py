"""The REST API for apps (/api/v1): tokens, predict, reports, classes, errors, limits,
reporter reliability, the OpenAPI document, and a schemathesis fuzz run against it."""

from __future__ import annotations

import io
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hypothesis
import numpy as np
import pytest
import schemathesis
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image as PILImage
from sqlalchemy import select

from curation.api_tokens import create_token, revoke_token, verify_token
from curation.models import (
    ApiReport,
    ClassAlias,
    ClassStatus,
    ImageSource,
    JobStatus,
    LandmarkClass,
    QueueItem,
    ReviewDecision,
    ScoringJob,
    User,
)
from curation.reporters import priority_weights, reporter_record, reporter_summaries
from curation.runtime import Runtime, build_runtime
from curation.taxonomy import search_key
from tests.conftest import make_settings
from tests.datasets.test_training import DIM
from webui import create_app
from webui.api_spec import openapi_document

PALACE_KO = "경복궁"
FUZZ_EXAMPLES = 25  # per operation


def _jpeg(seed: int, size: tuple[int, int] = (64, 48)) -> bytes:
    pixels = np.random.default_rng(seed).integers(
        0, 255, size=(size[1], size[0], 3), dtype=np.uint8
    )
    out = io.BytesIO()
    PILImage.fromarray(pixels).save(out, format="JPEG")
    return out.getvalue()


def _runtime(tmp_path: Path, database: Path, **overrides: Any) -> Runtime:
    url = f"sqlite:///{database}"
    return build_runtime(make_settings(tmp_path / "var", url, **overrides))


def _seed_classes(runtime: Runtime) -> None:
    with runtime.factory() as session, session.begin():
        palace = LandmarkClass(
            slug="gyeongbokgung", display_name="Gyeongbokgung Palace", status="active"
        )
        palace.aliases.append(
            ClassAlias(language="ko", name=PALACE_KO, search_key=search_key(PALACE_KO))
        )
        session.add(palace)


def _api(runtime: Runtime, name: str = "seed-app") -> tuple[FlaskClient, dict[str, str], int]:
    with runtime.factory() as session, session.begin():
        created = create_token(session, name=name, actor="test")
        token_id, plaintext = created.token.id, created.plaintext
    app = create_app({"TESTING": True}, runtime=runtime)
    return app.test_client(), {"Authorization": f"Bearer {plaintext}"}, token_id


@pytest.fixture
def sqlite_runtime(tmp_path: Path, migrated_sqlite_template: Path) -> Iterator[Runtime]:
    database = tmp_path / "curation.db"
    shutil.copyfile(migrated_sqlite_template, database)
    runtime = _runtime(tmp_path, database)
    _seed_classes(runtime)
    yield runtime
    runtime.dispose()


def _report(client: FlaskClient, auth: dict[str, str], seed: int, **fields: str) -> Any:
    data: dict[str, Any] = {"image": (io.BytesIO(_jpeg(seed)), "photo.jpg"), **fields}
    return client.post(
        "/api/v1/reports", data=data, headers=auth, content_type="multipart/form-data"
    )


def _error(response: Any) -> tuple[int, str]:
    body = response.get_json()
    assert set(body) == {"error"} and body["error"]["message"], body
    return response.status_code, body["error"]["code"]


# --- tokens ---------------------------------------------------------------------------


def test_tokens_are_hashed_verified_and_revocable(sqlite_runtime: Runtime) -> None:
    with sqlite_runtime.factory() as session, session.begin():
        created = create_token(session, name="app one", actor="test")
        assert re.fullmatch(r"cur_[0-9a-f]{12}_[A-Za-z0-9_-]{20,}", created.plaintext)
        secret = created.plaintext.split("_", 2)[2]
        assert secret not in created.token.secret_hash
        assert verify_token(session, created.plaintext) is created.token
        assert verify_token(session, created.plaintext[:-1] + "x") is None
        assert verify_token(session, "cur_000000000000_" + secret) is None
        revoke_token(session, created.token.id, actor="test")
        assert verify_token(session, created.plaintext) is None


# --- reports --------------------------------------------------------------------------


def _korean_report_is_matched(runtime: Runtime) -> None:
    client, auth, _ = _api(runtime)
    response = _report(
        client, auth, 1, claimed=PALACE_KO, predicted="N Seoul Tower", reporter_id="u1"
    )
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert body["claimed_class"]["slug"] == "gyeongbokgung"
    assert body["proposed_class"] is False and body["status"] == "received"
    with runtime.factory() as session:
        report = session.get_one(ApiReport, body["id"])
        source = session.get_one(ImageSource, report.source_id)
        palace = session.scalars(
            select(LandmarkClass).where(LandmarkClass.slug == "gyeongbokgung")
        ).one()
        assert source.kind == "report" and source.claimed_class_id == palace.id
        assert source.claimed_class_name == PALACE_KO and source.reporter_id == "u1"
        # Into the queue through the same path as every image: the scoring outbox.
        job = session.scalars(
            select(ScoringJob).where(ScoringJob.image_id == report.image_id)
        ).one()
        assert job.status == JobStatus.PENDING.value
    polled = client.get(f"/api/v1/reports/{body['id']}", headers=auth)
    assert polled.status_code == 200 and polled.get_json()["id"] == body["id"]


def test_a_korean_name_is_matched_to_its_class(sqlite_runtime: Runtime) -> None:
    _korean_report_is_matched(sqlite_runtime)


@pytest.mark.postgres
def test_a_korean_name_is_matched_to_its_class_on_postgres(tmp_path: Path, pg_url: str) -> None:
    runtime = build_runtime(make_settings(tmp_path / "var", pg_url))
    try:
        _seed_classes(runtime)
        _korean_report_is_matched(runtime)
    finally:
        runtime.dispose()


def test_an_unknown_name_becomes_a_proposed_class(sqlite_runtime: Runtime) -> None:
    client, auth, _ = _api(sqlite_runtime)
    response = _report(client, auth, 2, claimed="Unheard-of Pavilion")
    assert response.status_code == 201
    body = response.get_json()
    assert body["proposed_class"] is True and body["claimed_class"]["status"] == "proposed"
    with sqlite_runtime.factory() as session:
        landmark = session.scalars(
            select(LandmarkClass).where(LandmarkClass.display_name == "Unheard-of Pavilion")
        ).one()
        assert landmark.status == ClassStatus.PROPOSED.value
        report = session.get_one(ApiReport, body["id"])
        assert session.get_one(ImageSource, report.source_id).claimed_class_id == landmark.id


def test_reports_of_another_app_are_not_found(sqlite_runtime: Runtime) -> None:
    client, auth, _ = _api(sqlite_runtime)
    report_id = _report(client, auth, 3, claimed=PALACE_KO).get_json()["id"]
    other, other_auth, _ = _api(sqlite_runtime, "other-app")
    assert _error(other.get(f"/api/v1/reports/{report_id}", headers=other_auth)) == (
        404,
        "NotFound",
    )
    assert _error(client.get("/api/v1/reports/999999", headers=auth)) == (404, "NotFound")


def test_classes_with_aliases_and_status(sqlite_runtime: Runtime) -> None:
    client, auth, _ = _api(sqlite_runtime)
    body = client.get("/api/v1/classes", headers=auth).get_json()
    palace = next(c for c in body["classes"] if c["slug"] == "gyeongbokgung")
    assert (
        palace["status"] == "active" and {"language": "ko", "name": PALACE_KO} in palace["aliases"]
    )
    assert client.get("/api/v1/classes?status=proposed", headers=auth).get_json() == {"classes": []}
    assert _error(client.get("/api/v1/classes?status=nope", headers=auth)) == (400, "invalid_field")


# --- errors ---------------------------------------------------------------------------


def test_every_bad_request_gets_a_json_error(sqlite_runtime: Runtime) -> None:
    client, auth, token_id = _api(sqlite_runtime)
    assert _error(client.get("/api/v1/classes")) == (401, "unauthorized")
    assert _error(client.get("/api/v1/classes", headers={"Authorization": "Bearer nope"})) == (
        401,
        "invalid_token",
    )
    assert _error(_report(client, auth, 4)) == (400, "missing_field")  # no claimed name
    assert _error(_report(client, auth, 4, claimed="x" * 201)) == (400, "invalid_field")
    no_image = client.post("/api/v1/reports", data={"claimed": "a"}, headers=auth)
    assert _error(no_image)[0] == 415  # not multipart
    empty = client.post(
        "/api/v1/reports", data={"claimed": "a"}, headers=auth, content_type="multipart/form-data"
    )
    assert _error(empty) == (400, "missing_field")
    text = client.post(
        "/api/v1/reports",
        data={"claimed": "a", "image": (io.BytesIO(b"hello, not an image"), "a.jpg")},
        headers=auth,
        content_type="multipart/form-data",
    )
    assert _error(text) == (415, "unsupported_media_type")
    assert _error(client.get("/api/v1/nowhere", headers=auth)) == (404, "not_found")
    assert _error(client.get("/api/v1/predict", headers=auth)) == (405, "method_not_allowed")
    with sqlite_runtime.factory() as session, session.begin():
        revoke_token(session, token_id, actor="test")
    assert _error(client.get("/api/v1/classes", headers=auth)) == (401, "invalid_token")


def test_too_large_and_rate_limits(tmp_path: Path, migrated_sqlite_template: Path) -> None:
    database = tmp_path / "curation.db"
    shutil.copyfile(migrated_sqlite_template, database)
    runtime = _runtime(tmp_path, database, api_max_image_bytes=2000, api_rate_limit="3 per minute")
    try:
        client, auth, _ = _api(runtime)
        big = _report(client, auth, 5, claimed="a")  # about 5 kB of noise
        assert _error(big) == (413, "payload_too_large")
        assert client.get("/api/v1/classes", headers=auth).status_code == 200
        assert client.get("/api/v1/classes", headers=auth).status_code == 200
        limited = client.get("/api/v1/classes", headers=auth)
        assert _error(limited) == (429, "too_many_requests")
        assert limited.headers.get("Retry-After")
        # The limit is per token: another app is not held back.
        other, other_auth, _ = _api(runtime, "other-app")
        assert other.get("/api/v1/classes", headers=other_auth).status_code == 200
    finally:
        runtime.dispose()


# --- reporters -------------------------------------------------------------------------


def test_a_flooding_reporter_is_throttled(tmp_path: Path, migrated_sqlite_template: Path) -> None:
    database = tmp_path / "curation.db"
    shutil.copyfile(migrated_sqlite_template, database)
    runtime = _runtime(tmp_path, database, api_reporter_max_per_hour=2)
    try:
        _seed_classes(runtime)
        client, auth, _ = _api(runtime)
        for seed in (10, 11):
            assert (
                _report(client, auth, seed, claimed=PALACE_KO, reporter_id="flood").status_code
                == 201
            )
        throttled = _report(client, auth, 12, claimed=PALACE_KO, reporter_id="flood")
        assert _error(throttled) == (429, "ReporterThrottled") and throttled.headers["Retry-After"]
        assert _report(client, auth, 13, claimed=PALACE_KO, reporter_id="calm").status_code == 201
        with runtime.factory() as session:
            summaries = {s.reporter_id: s for s in reporter_summaries(session, max_per_hour=2)}
        assert summaries["flood"].throttled and not summaries["calm"].throttled
    finally:
        runtime.dispose()


def test_a_reporter_whose_reports_are_rejected_loses_priority(sqlite_runtime: Runtime) -> None:
    client, auth, _ = _api(sqlite_runtime)
    ids = [
        _report(client, auth, 20 + i, claimed=PALACE_KO, reporter_id="wrong").get_json()["id"]
        for i in range(3)
    ]
    with sqlite_runtime.factory() as session, session.begin():
        reviewer = User(username="rev", password_hash="x", role="reviewer")
        other = LandmarkClass(slug="other", display_name="Other", status="active")
        session.add_all([reviewer, other])
        session.flush()
        for report_id in ids:
            report = session.get_one(ApiReport, report_id)
            item = QueueItem(image_id=report.image_id, status="done")
            session.add(item)
            session.flush()
            session.add(
                ReviewDecision(
                    item_id=item.id,
                    image_id=report.image_id,
                    reviewer_id=reviewer.id,
                    stage=1,
                    action="label",
                    class_id=other.id,
                    outcome="labelled",
                )
            )
    with sqlite_runtime.factory() as session:
        record = reporter_record(session, "seed-app", "wrong")
        assert (record.reports, record.decided, record.agreed) == (3, 3, 0)
        assert record.reliability == pytest.approx(2 / 5)
    later = _report(client, auth, 30, claimed=PALACE_KO, reporter_id="wrong").get_json()
    first = client.get(f"/api/v1/reports/{ids[0]}", headers=auth).get_json()
    assert first["status"] == "decided" and first["outcome"]["verdict"] == "corrected"
    with sqlite_runtime.factory() as session:
        report = session.get_one(ApiReport, later["id"])
        assert report.reliability == pytest.approx(2 / 5)
        assert priority_weights(session, np.asarray([report.image_id]))[report.image_id] == (
            pytest.approx(2 / 5)
        )


# --- predict ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, migrated_sqlite_template: Path) -> Path:
    """A copy of the database and data folder with a champion over classes c0, c1, c2."""
    from tests.webui.test_models import train_two_models

    folder = tmp_path_factory.mktemp("api")
    database = folder / "curation.db"
    shutil.copyfile(migrated_sqlite_template, database)
    runtime = build_runtime(make_settings(folder / "var", f"sqlite:///{database}"))
    try:
        train_two_models(runtime)
        with runtime.factory() as session, session.begin():
            c0 = session.scalars(select(LandmarkClass).where(LandmarkClass.slug == "c0")).one()
            c0.aliases.append(
                ClassAlias(language="ko", name="클래스 영", search_key=search_key("클래스 영"))
            )
    finally:
        runtime.dispose()
    return folder


def _centre(k: int) -> Any:
    # tests/datasets/test_training.py draws the class centres first from default_rng(7).
    centres: np.ndarray = np.random.default_rng(7).normal(size=(3, DIM)) * 4
    return centres[k]


def test_predict_gives_the_champions_top_k_named_in_the_language(
    trained: Path, tmp_path: Path
) -> None:
    shutil.copytree(trained, tmp_path / "copy")
    runtime = build_runtime(
        make_settings(
            tmp_path / "copy" / "var",
            f"sqlite:///{tmp_path / 'copy' / 'curation.db'}",
            backbone="efficientnetb0",
            backbone_weights="none",
        )
    )
    try:
        with runtime.factory() as session, session.begin():
            created = create_token(session, name="seed-app", actor="test")
        app: Flask = create_app({"TESTING": True}, runtime=runtime)
        # The backbone is replaced by one that sees class c0's centre in every photo.
        app.config["CURATION_TEST_EMBEDDER"] = lambda pixels: _centre(0)[np.newaxis].astype(
            np.float32
        )
        client = app.test_client()
        auth = {"Authorization": f"Bearer {created.plaintext}"}

        def ask(**fields: Any) -> Any:
            data = {"image": (io.BytesIO(_jpeg(40)), "p.jpg"), **fields}
            return client.post(
                "/api/v1/predict", data=data, headers=auth, content_type="multipart/form-data"
            )

        korean = ask(top_k="2", lang="ko").get_json()
        assert isinstance(korean["model_version"], int) and len(korean["predictions"]) == 2
        best = korean["predictions"][0]
        assert (best["slug"], best["name"], best["language"]) == ("c0", "클래스 영", "ko")
        assert best["probability"] > korean["predictions"][1]["probability"]
        english = ask(lang="en").get_json()["predictions"]
        assert (
            len(english) == 3
            and english[0]["name"] == "Class 0"
            and english[0]["language"] == "und"
        )
        assert sum(p["probability"] for p in english) == pytest.approx(1.0, abs=1e-4)
        assert _error(ask(top_k="0")) == (400, "invalid_field")
        assert _error(ask(top_k="many")) == (400, "invalid_field")
        with runtime.factory() as session:
            assert session.scalar(select(ImageSource.id).limit(1)) is None  # nothing stored
        assert korean["stored_image_id"] is None
        # Asked to, the photo is kept: an unlabelled crawl of the app, waiting for scoring.
        kept = ask(store="true")
        assert kept.status_code == 200
        image_id = kept.get_json()["stored_image_id"]
        assert isinstance(image_id, int)
        with runtime.factory() as session:
            source = session.scalars(select(ImageSource)).one()
            assert (source.image_id, source.kind, source.crawler) == (
                image_id,
                "crawl",
                "app:seed-app",
            )
            assert (
                session.scalar(select(ScoringJob.id).where(ScoringJob.image_id == image_id))
                is not None
            )
        assert ask(store="1").get_json()["stored_image_id"] == image_id  # the same photo
        assert _error(ask(store="maybe")) == (400, "invalid_field")
    finally:
        runtime.dispose()


# --- the OpenAPI document ---------------------------------------------------------------


def test_the_openapi_document_describes_every_route(sqlite_runtime: Runtime) -> None:
    app = create_app({"TESTING": True}, runtime=sqlite_runtime)
    served = app.test_client().get("/api/v1/openapi.json")
    assert served.status_code == 200 and served.get_json() == openapi_document()
    paths = served.get_json()["paths"]
    routes = set()
    for rule in app.url_map.iter_rules():
        # Other blueprints serve session-authenticated JSON for the web pages under
        # /api/v1 too (models, datasets, admin); the document is the apps' API.
        if rule.endpoint.startswith("api."):
            path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
            for method in rule.methods - {"HEAD", "OPTIONS"}:  # type: ignore[operator]
                routes.add((path, method.lower()))
    described = {(path, method) for path, ops in paths.items() for method in ops}
    assert routes == described


# --- schema fuzz --------------------------------------------------------------------------


def test_schema_fuzz_finds_no_server_error(tmp_path: Path, migrated_sqlite_template: Path) -> None:
    """Hypothesis cases from the OpenAPI document, sent in-process (WSGI) with a valid token."""
    database = tmp_path / "curation.db"
    shutil.copyfile(migrated_sqlite_template, database)
    runtime = _runtime(tmp_path, database, api_rate_limit="100000 per minute")
    try:
        _seed_classes(runtime)
        app = create_app({"TESTING": True}, runtime=runtime)
        with runtime.factory() as session, session.begin():
            plaintext = create_token(session, name="fuzz", actor="test").plaintext
        headers = {"Authorization": f"Bearer {plaintext}"}
        schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app)
        operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
        assert len(operations) >= 4  # the document itself may be left out by schemathesis
        seen: set[int] = set()
        for operation in operations:

            @hypothesis.settings(
                max_examples=FUZZ_EXAMPLES,
                deadline=None,
                database=None,
                suppress_health_check=list(hypothesis.HealthCheck),
            )
            @hypothesis.given(case=operation.as_strategy())
            def run(case: Any) -> None:
                response = case.call(headers=headers)
                seen.add(response.status_code)
                assert response.status_code < 500, (case.method, case.path, response.text)

            run()
        assert seen & {200, 201}, seen
    finally:
        runtime.dispose()


@pytest.mark.redis
def test_rate_limits_counted_in_redis_hold_across_app_instances(
    tmp_path: Path, migrated_sqlite_template: Path
) -> None:
    """Production counts in Redis: two web workers (two app instances) share one budget."""
    import uuid

    import redis

    from tests.conftest import REDIS_URL, REQUIRE_SERVICES

    # Its own database number: other tests flush theirs.
    url = REDIS_URL.rsplit("/", 1)[0] + "/13" if REDIS_URL.count("/") > 2 else REDIS_URL + "/13"
    store = redis.Redis.from_url(url)
    try:
        store.ping()
    except redis.RedisError as error:
        if REQUIRE_SERVICES:
            raise
        pytest.skip(f"Redis unreachable at {REDIS_URL}: {error}")
    before = set(store.keys("LIMITS*"))
    database = tmp_path / f"curation-{uuid.uuid4().hex[:8]}.db"  # its own key space
    shutil.copyfile(migrated_sqlite_template, database)
    runtime = _runtime(tmp_path, database, api_rate_limit="3 per minute", ratelimit_storage_url=url)
    try:
        first, auth, _ = _api(runtime)
        second = create_app({"TESTING": True}, runtime=runtime).test_client()
        assert first.get("/api/v1/classes", headers=auth).status_code == 200
        assert second.get("/api/v1/classes", headers=auth).status_code == 200
        assert first.get("/api/v1/classes", headers=auth).status_code == 200
        assert _error(second.get("/api/v1/classes", headers=auth)) == (429, "too_many_requests")
        # The counts live in Redis, not in the process.
        assert set(store.keys("LIMITS*")) - before
    finally:
        runtime.dispose()
