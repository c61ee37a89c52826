"""The admins' pages for the REST API: tokens (list, create shown once, revoke) and reporters."""

from __future__ import annotations

import io
import re
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from flask.testing import FlaskClient
from PIL import Image as PILImage
from sqlalchemy import select

from curation.accounts import create_user
from curation.api_tokens import create_token
from curation.models import ApiReport, ApiToken, AuditEntry, QueueItem, ReviewDecision, User
from curation.runtime import Runtime, build_runtime
from curation.settings import Settings
from webui import create_app

PASSWORD = "correct horse battery"
_META = re.compile(r'<meta name="csrf-token" content="([^"]+)">')
_SHOWN = re.compile(r'id="new-token-value"[^>]*value="(cur_[0-9a-f]{12}_[A-Za-z0-9_-]+)"')


def _users(runtime: Runtime) -> None:
    with runtime.factory() as session, session.begin():
        for name, role in (("root", "admin"), ("ann", "reviewer")):
            create_user(session, username=name, password=PASSWORD, role=role, actor="t")


def _client(runtime: Runtime, username: str | None) -> tuple[FlaskClient, str]:
    client = create_app({"TESTING": True}, runtime=runtime).test_client()
    token = _META.search(client.get("/login").get_data(as_text=True)).group(1)  # type: ignore[union-attr]
    if username is None:
        return client, token
    client.post("/login", data={"username": username, "password": PASSWORD, "csrf_token": token})
    token = _META.search(client.get("/").get_data(as_text=True)).group(1)  # type: ignore[union-attr]
    return client, token


def _api_client(runtime: Runtime) -> FlaskClient:
    return create_app({"TESTING": True}, runtime=runtime).test_client()


def _bearer(plaintext: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {plaintext}"}


def _jpeg(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, size=(48, 64, 3), dtype=np.uint8)
    out = io.BytesIO()
    PILImage.fromarray(pixels).save(out, format="JPEG")
    return out.getvalue()


@pytest.fixture
def admin(runtime: Runtime) -> tuple[FlaskClient, str]:
    _users(runtime)
    return _client(runtime, "root")


def _create(client: FlaskClient, csrf: str, name: str, app: str = "") -> Any:
    return client.post("/admin/tokens", data={"name": name, "app": app, "csrf_token": csrf})


def test_an_admin_creates_a_token_that_is_shown_once_and_works(
    runtime: Runtime, admin: tuple[FlaskClient, str]
) -> None:
    client, csrf = admin
    home = client.get("/").get_data(as_text=True)
    assert 'href="/admin/tokens">API tokens</a>' in home
    assert 'href="/admin/reporters">Reporters</a>' in home
    empty = client.get("/admin/tokens")
    assert empty.status_code == 200 and "No API tokens yet." in empty.get_data(as_text=True)

    made = _create(client, csrf, "android app", "android")
    assert made.status_code == 201
    assert made.headers["Cache-Control"] == "no-store"
    html = made.get_data(as_text=True)
    assert "Copy it now: it is shown this once and never again." in html
    assert "script" not in html.split("<main", 1)[1]  # the strict CSP: no inline script
    assert "style=" not in html
    shown = _SHOWN.search(html)
    assert shown is not None
    plaintext = shown.group(1)
    prefix = plaintext.split("_")[1]

    api = _api_client(runtime)
    assert api.get("/api/v1/classes", headers=_bearer(plaintext)).status_code == 200

    again = client.get("/admin/tokens").get_data(as_text=True)
    assert plaintext not in again and plaintext.split("_", 2)[2] not in again
    assert "new-token-value" not in again
    row = re.search(r'<tr data-token-id="\d+" class="">(.*?)</tr>', again, re.S)
    assert row is not None
    cells = row.group(1)
    assert "android app" in cells and ">android<" in cells and f"cur_{prefix}_" in cells
    assert "root" in cells and "never" not in cells  # created by root; used just now
    assert ">live<" in cells
    with runtime.factory() as session:
        token = session.scalars(select(ApiToken)).one()
        assert token.created_by == "root" and token.last_used_at is not None
        assert plaintext.split("_", 2)[2] not in token.secret_hash
        assert session.scalars(
            select(AuditEntry.action).where(AuditEntry.entity_type == "api_token")
        ).all() == ["api_token.create"]


def test_bad_and_duplicate_names_are_refused_without_a_token(
    runtime: Runtime, admin: tuple[FlaskClient, str]
) -> None:
    client, csrf = admin
    assert _create(client, csrf, "ios").status_code == 201
    duplicate = _create(client, csrf, "ios")
    assert duplicate.status_code == 409 and "already exists" in duplicate.get_data(as_text=True)
    bad = _create(client, csrf, "<script>")
    assert bad.status_code == 400 and "new-token-value" not in bad.get_data(as_text=True)
    with runtime.factory() as session:
        assert session.scalars(select(ApiToken.name)).all() == ["ios"]


def test_revoking_asks_first_and_then_the_token_gets_401(
    runtime: Runtime, admin: tuple[FlaskClient, str]
) -> None:
    client, csrf = admin
    plaintext = _SHOWN.search(_create(client, csrf, "kiosk").get_data(as_text=True)).group(1)  # type: ignore[union-attr]
    with runtime.factory() as session:
        token_id = session.scalars(select(ApiToken.id)).one()
    listing = client.get("/admin/tokens").get_data(as_text=True)
    assert f'href="/admin/tokens/{token_id}/revoke"' in listing

    confirm = client.get(f"/admin/tokens/{token_id}/revoke")
    assert confirm.status_code == 200
    page = confirm.get_data(as_text=True)
    assert f'action="/admin/tokens/{token_id}/revoke"' in page
    assert 'name="confirm" value="yes"' in page and "401" in page
    # Without the confirmation field nothing happens: back to the question.
    unconfirmed = client.post(f"/admin/tokens/{token_id}/revoke", data={"csrf_token": csrf})
    assert unconfirmed.status_code == 302
    assert unconfirmed.headers["Location"].endswith(f"/admin/tokens/{token_id}/revoke")
    api = _api_client(runtime)
    assert api.get("/api/v1/classes", headers=_bearer(plaintext)).status_code == 200

    done = client.post(
        f"/admin/tokens/{token_id}/revoke", data={"csrf_token": csrf, "confirm": "yes"}
    )
    assert done.status_code == 302 and done.headers["Location"].endswith("/admin/tokens")
    after = client.get("/admin/tokens").get_data(as_text=True)
    assert "Token kiosk revoked" in after
    assert f'<tr data-token-id="{token_id}" class="muted">' in after
    assert f'href="/admin/tokens/{token_id}/revoke"' not in after
    refused = api.get("/api/v1/classes", headers=_bearer(plaintext))
    assert refused.status_code == 401
    assert refused.get_json()["error"]["code"] == "invalid_token"
    # Revoking again is harmless; an unknown id is a 404.
    assert (
        client.post(
            f"/admin/tokens/{token_id}/revoke", data={"csrf_token": csrf, "confirm": "yes"}
        ).status_code
        == 302
    )
    assert "was revoked on" in client.get(f"/admin/tokens/{token_id}/revoke").get_data(as_text=True)
    assert client.get("/admin/tokens/999/revoke").status_code == 404
    assert (
        client.post("/admin/tokens/999/revoke", data={"csrf_token": csrf, "confirm": "yes"})
    ).status_code == 404


def test_posts_without_the_csrf_token_are_refused(
    runtime: Runtime, admin: tuple[FlaskClient, str]
) -> None:
    client, csrf = admin
    missing = client.post("/admin/tokens", data={"name": "sneaky"})
    assert missing.status_code == 400 and "CSRF" in missing.get_data(as_text=True)
    wrong = client.post("/admin/tokens", data={"name": "sneaky", "csrf_token": "x" + csrf})
    assert wrong.status_code == 400
    with runtime.factory() as session, session.begin():
        token_id = create_token(session, name="kept", actor="t").token.id
    revoke = client.post(f"/admin/tokens/{token_id}/revoke", data={"confirm": "yes"})
    assert revoke.status_code == 400
    with runtime.factory() as session:
        tokens = session.scalars(select(ApiToken)).all()
        assert [(t.name, t.revoked_at) for t in tokens] == [("kept", None)]


def test_reviewers_get_403_and_visitors_the_login_page(runtime: Runtime) -> None:
    _users(runtime)
    with runtime.factory() as session, session.begin():
        token_id = create_token(session, name="kept", actor="t").token.id
    reviewer, csrf = _client(runtime, "ann")
    assert 'href="/admin/tokens"' not in reviewer.get("/").get_data(as_text=True)
    for path in ("/admin/tokens", "/admin/reporters", f"/admin/tokens/{token_id}/revoke"):
        assert reviewer.get(path).status_code == 403, path
    assert _create(reviewer, csrf, "mine").status_code == 403
    assert (
        reviewer.post(
            f"/admin/tokens/{token_id}/revoke", data={"csrf_token": csrf, "confirm": "yes"}
        ).status_code
        == 403
    )
    visitor, _ = _client(runtime, None)
    for path in ("/admin/tokens", "/admin/reporters"):
        response = visitor.get(path)
        assert response.status_code == 302 and "/login" in response.headers["Location"]
    with runtime.factory() as session:
        tokens = session.scalars(select(ApiToken)).all()
        assert [(t.name, t.revoked_at) for t in tokens] == [("kept", None)]


def _report(api: FlaskClient, plaintext: str, seed: int, reporter: str) -> int:
    response = api.post(
        "/api/v1/reports",
        data={
            "image": (io.BytesIO(_jpeg(seed)), "p.jpg"),
            "claimed": "Namsan Tower",
            "reporter_id": reporter,
        },
        headers=_bearer(plaintext),
        content_type="multipart/form-data",
    )
    assert response.status_code == 201, response.get_json()
    report_id: int = response.get_json()["id"]
    return report_id


def _decide(runtime: Runtime, report_ids: list[int], *, agree: bool) -> None:
    with runtime.factory() as session, session.begin():
        reviewer = session.scalars(select(User).where(User.username == "ann")).one()
        for report_id in report_ids:
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
                    action="label" if agree else "not_landmark",
                    class_id=report.claimed_class_id if agree else None,
                    outcome="labelled",
                )
            )


def test_reporters_least_reliable_first_with_the_throttle(settings: Settings) -> None:
    runtime = build_runtime(replace(settings, api_reporter_max_per_hour=2))
    try:
        _users(runtime)
        with runtime.factory() as session, session.begin():
            plaintext = create_token(session, name="phone", actor="t").plaintext
        api = _api_client(runtime)
        wrong = [_report(api, plaintext, seed, "wrong") for seed in (1, 2)]
        good = [_report(api, plaintext, 3, "good")]
        _report(api, plaintext, 4, "new")
        _decide(runtime, wrong, agree=False)
        _decide(runtime, good, agree=True)

        client, _ = _client(runtime, "root")
        page = client.get("/admin/reporters")
        assert page.status_code == 200
        html = page.get_data(as_text=True)
        assert "script" not in html.split("<main", 1)[1] and "style=" not in html
        order = re.findall(r'data-reporter="([^"]+)"', html)
        assert order[0] == "wrong" and set(order) == {"wrong", "good", "new"}
        row = re.search(r'data-reporter="wrong"\s+class="throttled">(.*?)</tr>', html, re.S)
        assert row is not None
        cells = re.findall(r"<td[^>]*>(.*?)</td>", row.group(1), re.S)
        # app, reporter, reports, decided, agreed, reliability (2+0)/(2+2), last hour, throttled
        assert [re.sub(r"<[^>]+>", "", c).strip() for c in cells] == [
            "phone",
            "wrong",
            "2",
            "2",
            "0",
            "0.50",
            "2",
            "throttled",
        ]
        good_row = re.search(r'data-reporter="good"\s+class="">(.*?)</tr>', html, re.S)
        assert good_row is not None and "1.00" in good_row.group(1)
        by_name = client.get("/admin/reporters?sort=reporter").get_data(as_text=True)
        assert re.findall(r'data-reporter="([^"]+)"', by_name) == ["good", "new", "wrong"]
        assert re.search(r'data-sort="reporter"\s+aria-current="page"', by_name)
        # An unknown order falls back to the default rather than failing.
        assert client.get("/admin/reporters?sort=nope").status_code == 200
    finally:
        runtime.dispose()


def test_the_reporters_page_without_reports(
    runtime: Runtime, admin: tuple[FlaskClient, str]
) -> None:
    client, _ = admin
    html = client.get("/admin/reporters").get_data(as_text=True)
    assert "No reports with a reporter id yet." in html
