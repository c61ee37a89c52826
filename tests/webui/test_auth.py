"""Sign-in, sign-out, CSRF, role checks, security headers and the admin's user page."""

from __future__ import annotations

import json
import re

import pytest
from flask import Blueprint, Flask, jsonify
from flask.testing import FlaskClient
from sqlalchemy import select
from werkzeug.security import check_password_hash

from curation.accounts import create_user, set_active
from curation.models import AuditEntry, User
from curation.runtime import Runtime
from webui import create_app
from webui.auth import csrf_exempt, current_user, login_required, role_required, safe_next

PASSWORD = "correct horse battery"
_META = re.compile(r'<meta name="csrf-token" content="([^"]+)">')


def _add_user(runtime: Runtime, username: str, role: str = "reviewer") -> int:
    with runtime.factory() as session, session.begin():
        user = create_user(session, username=username, password=PASSWORD, role=role, actor="test")
        return user.id


def _probe_blueprint() -> Blueprint:
    """Routes as other blueprints will write them."""
    probe = Blueprint("probe", __name__)

    @probe.get("/review/api/whoami")
    @login_required
    def whoami() -> object:
        user = current_user()
        assert user is not None
        return jsonify({"username": user.username})

    @probe.post("/review/api/echo")
    @login_required
    def echo() -> object:
        return jsonify({"ok": True})

    @probe.post("/api/v1/admin-only")
    @role_required("admin")
    def admin_only() -> object:
        return jsonify({"ok": True})

    @probe.get("/review/page")
    @login_required
    def page() -> str:
        return "a review page"

    @probe.post("/api/v1/token-authenticated")
    @csrf_exempt
    def token_authenticated() -> object:
        return jsonify({"ok": True})

    return probe


@pytest.fixture
def app(runtime: Runtime) -> Flask:
    app = create_app({"TESTING": True}, runtime=runtime)
    app.register_blueprint(_probe_blueprint())
    return app


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def _csrf(client: FlaskClient, path: str = "/login") -> str:
    match = _META.search(client.get(path).get_data(as_text=True))
    assert match, "no csrf-token meta tag"
    return match.group(1)


def _login(client: FlaskClient, username: str, password: str = PASSWORD, **extra: str):
    form = {"username": username, "password": password, "csrf_token": _csrf(client), **extra}
    return client.post("/login", data=form)


def _cookie(client: FlaskClient) -> str | None:
    cookie = client.get_cookie("curation_session")
    return cookie.value if cookie else None


# --- signing in and out -------------------------------------------------------------


def test_login_page_has_a_form_with_the_csrf_token(client: FlaskClient) -> None:
    page = client.get("/login")
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    token = _META.search(html)
    assert token
    assert f'name="csrf_token" value="{token.group(1)}"' in html
    assert 'name="password" type="password"' in html


def test_login_with_the_right_password_signs_in(runtime: Runtime, client: FlaskClient) -> None:
    user_id = _add_user(runtime, "alice")
    response = _login(client, "ALICE")
    assert response.status_code == 302
    assert response.headers["Location"] == "/"
    with client.session_transaction() as session:
        assert session["user_id"] == user_id
        assert session.permanent
    assert client.get("/review/api/whoami").get_json() == {"username": "alice"}
    assert "alice" in client.get("/").get_data(as_text=True)


def test_the_session_cookie_is_named_and_lasts_twelve_hours(
    runtime: Runtime, app: Flask, client: FlaskClient
) -> None:
    _add_user(runtime, "alice")
    response = _login(client, "alice")
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith("curation_session=")
    assert "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie
    assert "Expires=" in cookie
    assert app.permanent_session_lifetime.total_seconds() == 12 * 3600


@pytest.mark.parametrize(
    ("username", "password"), [("alice", "wrong password!"), ("nobody", PASSWORD)]
)
def test_wrong_credentials_get_one_generic_message(
    runtime: Runtime, client: FlaskClient, username: str, password: str
) -> None:
    _add_user(runtime, "alice")
    response = _login(client, username, password)
    assert response.status_code == 401
    html = response.get_data(as_text=True)
    assert "Wrong username or password." in html
    assert password not in html
    with client.session_transaction() as session:
        assert "user_id" not in session


def test_login_replaces_the_session_to_prevent_fixation(
    runtime: Runtime, client: FlaskClient
) -> None:
    _add_user(runtime, "alice")
    old_token = _csrf(client)
    with client.session_transaction() as session:
        session["planted"] = "by someone else"
    before = _cookie(client)
    _login(client, "alice")
    assert _cookie(client) != before
    with client.session_transaction() as session:
        assert "planted" not in session
    new_token = _csrf(client, "/")
    assert new_token != old_token
    # The token from before sign-in no longer works.
    assert client.post("/review/api/echo", headers={"X-CSRF-Token": old_token}).status_code == 400
    assert client.post("/review/api/echo", headers={"X-CSRF-Token": new_token}).status_code == 200


@pytest.mark.parametrize(
    "target",
    [
        "//evil.example/x",
        "https://evil.example/",
        "/\\evil.example",
        "javascript:alert(1)",
        "evil.example",
        "/\x00/x",
        "/ //evil.example",
    ],
)
def test_login_refuses_to_redirect_off_the_site(
    runtime: Runtime, client: FlaskClient, target: str
) -> None:
    _add_user(runtime, "alice")
    response = _login(client, "alice", next=target)
    assert response.status_code == 302
    assert response.headers["Location"] == "/"
    assert safe_next(target) is None


def test_login_follows_a_local_next_path(runtime: Runtime, client: FlaskClient) -> None:
    _add_user(runtime, "alice")
    response = _login(client, "alice", next="/review/page?batch=3")
    assert response.headers["Location"] == "/review/page?batch=3"


def test_logout_needs_post_and_the_csrf_token(runtime: Runtime, client: FlaskClient) -> None:
    _add_user(runtime, "alice")
    _login(client, "alice")
    assert client.get("/logout").status_code == 405
    refused = client.post("/logout")
    assert refused.status_code == 400
    assert "CSRF token is missing" in refused.get_data(as_text=True)
    assert client.get("/review/api/whoami").status_code == 200

    response = client.post("/logout", data={"csrf_token": _csrf(client, "/")})
    assert response.status_code == 302
    assert response.headers["Location"] == "/login"
    assert client.get("/review/api/whoami").status_code == 401


def test_inactive_users_cannot_log_in_and_are_signed_out(
    runtime: Runtime, client: FlaskClient
) -> None:
    _add_user(runtime, "root", role="admin")
    user_id = _add_user(runtime, "alice")
    _login(client, "alice")
    assert client.get("/review/api/whoami").status_code == 200
    with runtime.factory() as session, session.begin():
        set_active(session, user_id, False, actor="test")
    assert client.get("/review/api/whoami").status_code == 401
    with client.session_transaction() as session:
        assert "user_id" not in session
    response = _login(client, "alice")
    assert response.status_code == 401
    assert "Wrong username or password." in response.get_data(as_text=True)


def test_sessions_expire_twelve_hours_after_sign_in(runtime: Runtime, client: FlaskClient) -> None:
    _add_user(runtime, "alice")
    _login(client, "alice")
    with client.session_transaction() as session:
        session["login_at"] -= 12 * 3600 + 1
    assert client.get("/review/api/whoami").status_code == 401


# --- login_required, role_required ------------------------------------------------


def test_anonymous_api_calls_get_a_json_401(client: FlaskClient) -> None:
    response = client.get("/review/api/whoami")
    assert response.status_code == 401
    assert response.get_json() == {
        "error": {"code": "Unauthorized", "message": "sign in first: no valid session"}
    }


def test_anonymous_pages_redirect_to_login_with_next(client: FlaskClient) -> None:
    response = client.get("/review/page?batch=3")
    assert response.status_code == 302
    assert response.headers["Location"] == "/login?next=/review/page?batch%3D3"
    admin = client.get("/admin/users")
    assert admin.headers["Location"] == "/login?next=/admin/users"


def test_public_routes_stay_public(client: FlaskClient) -> None:
    assert client.get("/").status_code == 200
    assert client.get("/healthz").status_code == 200
    assert client.get("/api/v1/stats").status_code == 200


def test_reviewers_get_403_from_admin_routes(runtime: Runtime, client: FlaskClient) -> None:
    _add_user(runtime, "alice")
    _login(client, "alice")
    page = client.get("/admin/users")
    assert page.status_code == 403
    assert "This needs the admin role." in page.get_data(as_text=True)
    token = _csrf(client, "/")
    api = client.post("/api/v1/admin-only", headers={"X-CSRF-Token": token})
    assert api.status_code == 403
    assert api.get_json() == {
        "error": {"code": "Forbidden", "message": "this needs the admin role"}
    }
    assert "/admin/users" not in client.get("/").get_data(as_text=True)


def test_admins_pass_role_checks(runtime: Runtime, client: FlaskClient) -> None:
    _add_user(runtime, "root", role="admin")
    _login(client, "root")
    token = _csrf(client, "/")
    assert client.post("/api/v1/admin-only", headers={"X-CSRF-Token": token}).status_code == 200
    assert client.get("/review/page").status_code == 200
    assert "/admin/users" in client.get("/").get_data(as_text=True)


# --- CSRF -------------------------------------------------------------------------


def test_posts_without_a_csrf_token_are_refused(runtime: Runtime, client: FlaskClient) -> None:
    _add_user(runtime, "alice")
    _login(client, "alice")
    missing = client.post("/review/api/echo", json={})
    assert missing.status_code == 400
    assert missing.get_json()["error"]["code"] == "CSRFError"
    assert "CSRF token is missing" in missing.get_json()["error"]["message"]
    wrong = client.post("/review/api/echo", headers={"X-CSRF-Token": "forged"})
    assert wrong.status_code == 400
    assert "CSRF token is wrong" in wrong.get_json()["error"]["message"]
    for method in (client.put, client.patch, client.delete):
        assert method("/review/api/echo").status_code == 400


def test_the_csrf_token_is_accepted_in_the_header_or_the_form(
    runtime: Runtime, client: FlaskClient
) -> None:
    _add_user(runtime, "alice")
    _login(client, "alice")
    token = _csrf(client, "/")
    assert client.post("/review/api/echo", headers={"X-CSRF-Token": token}).status_code == 200
    assert client.post("/review/api/echo", data={"csrf_token": token}).status_code == 200


def test_login_itself_needs_the_csrf_token(runtime: Runtime, client: FlaskClient) -> None:
    _add_user(runtime, "alice")
    response = client.post("/login", data={"username": "alice", "password": PASSWORD})
    assert response.status_code == 400
    assert "CSRF token is missing" in response.get_data(as_text=True)


def test_csrf_exempt_views_skip_the_check(client: FlaskClient) -> None:
    assert client.post("/api/v1/token-authenticated").status_code == 200


def test_a_blueprint_can_be_exempted(runtime: Runtime) -> None:
    exempt = csrf_exempt(Blueprint("exempt_probe", __name__))

    @exempt.post("/api/v1/exempt-probe")
    def probe() -> object:
        return jsonify({"ok": True})

    app = create_app({"TESTING": True}, runtime=runtime)
    app.register_blueprint(exempt)
    assert app.test_client().post("/api/v1/exempt-probe").status_code == 200


# --- headers ------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/login", "/healthz", "/no/such/page"])
def test_every_response_has_the_security_headers(client: FlaskClient, path: str) -> None:
    headers = client.get(path).headers
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["Referrer-Policy"] == "same-origin"
    policy = headers["Content-Security-Policy"]
    assert "script-src 'self';" in policy
    assert "style-src 'self';" in policy
    assert "img-src 'self' data: blob:;" in policy
    assert "frame-ancestors 'none'" in policy


def test_pages_use_no_inline_styles_or_scripts(runtime: Runtime, client: FlaskClient) -> None:
    _add_user(runtime, "root", role="admin")
    _login(client, "root")
    for path in ("/", "/login", "/admin/users"):
        html = client.get(path).get_data(as_text=True)
        assert "<style" not in html and "style=" not in html and "<script>" not in html
    assert client.get("/static/base.css").status_code == 200


# --- the admin's user page ----------------------------------------------------------


def test_admins_create_users_with_hashed_passwords(runtime: Runtime, client: FlaskClient) -> None:
    root_id = _add_user(runtime, "root", role="admin")
    _login(client, "root")
    token = _csrf(client, "/admin/users")
    form = {"username": "Bob", "password": "bob's long password", "role": "reviewer"}
    response = client.post("/admin/users", data=form | {"csrf_token": token})
    assert response.status_code == 302
    assert response.headers["Location"] == "/admin/users"
    listing = client.get("/admin/users").get_data(as_text=True)
    assert "User bob created (reviewer)." in listing
    assert "bob's long password" not in listing

    with runtime.factory() as session:
        bob = session.scalars(select(User).where(User.username == "bob")).one()
        assert bob.role == "reviewer"
        assert bob.password_hash != form["password"]
        assert form["password"] not in bob.password_hash
        assert check_password_hash(bob.password_hash, form["password"])
        entries = session.scalars(select(AuditEntry)).all()
        dumped = json.dumps([[e.actor, e.action, e.details] for e in entries])
        assert form["password"] not in dumped
        assert bob.password_hash not in dumped
        entry = next(e for e in entries if e.entity_id == bob.id and e.action == "user.create")
        assert (entry.actor_id, entry.actor) == (root_id, "user:root")

    client.post("/logout", data={"csrf_token": _csrf(client, "/")})
    assert _login(client, "bob", form["password"]).status_code == 302


@pytest.mark.parametrize(
    ("form", "status", "message"),
    [
        (
            {"username": "bob", "password": "short", "role": "reviewer"},
            400,
            "Not created: password must be at least 10 characters long.",
        ),
        (
            {"username": "root", "password": PASSWORD, "role": "reviewer"},
            409,
            "Not created: username &#39;root&#39; is already taken.",
        ),
        (
            {"username": "bob", "password": PASSWORD, "role": "owner"},
            400,
            "Not created: role must be one of: reviewer, admin",
        ),
    ],
)
def test_admin_form_errors_are_shown(
    runtime: Runtime, client: FlaskClient, form: dict[str, str], status: int, message: str
) -> None:
    _add_user(runtime, "root", role="admin")
    _login(client, "root")
    token = _csrf(client, "/admin/users")
    response = client.post("/admin/users", data=form | {"csrf_token": token})
    assert response.status_code == status
    html = response.get_data(as_text=True)
    assert message in html
    assert form["password"] not in html


def test_admins_deactivate_and_reactivate_users(runtime: Runtime, client: FlaskClient) -> None:
    root_id = _add_user(runtime, "root", role="admin")
    bob_id = _add_user(runtime, "bob")
    _login(client, "root")
    token = _csrf(client, "/admin/users")
    off = client.post(f"/admin/users/{bob_id}/active", data={"active": "0", "csrf_token": token})
    assert off.status_code == 302
    assert "User bob deactivated." in client.get("/admin/users").get_data(as_text=True)
    last = client.post(f"/admin/users/{root_id}/active", data={"active": "0", "csrf_token": token})
    assert last.status_code == 409
    assert "last active admin" in last.get_data(as_text=True)
    missing = client.post("/admin/users/999/active", data={"active": "1", "csrf_token": token})
    assert missing.status_code == 404
    on = client.post(f"/admin/users/{bob_id}/active", data={"active": "1", "csrf_token": token})
    assert on.status_code == 302
    with runtime.factory() as session:
        assert session.get_one(User, bob_id).is_active
