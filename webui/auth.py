"""Sign-in, sign-out, CSRF protection, role checks and the admin's user list.

For other blueprints:

* ``current_user()``: the signed-in, active ``User`` or None (one query per request).
* ``@login_required``: HTML routes redirect to ``/login?next=...``; API routes
  (``/api/...``, ``/review/api/...``) answer a JSON 401.
* ``@role_required("admin")``: as ``login_required``, then 403 for other roles.
  An admin passes every role check.
* ``@csrf_exempt`` on a view or a blueprint: skip the CSRF check (only for
  routes authenticated by something other than the session cookie).

Every POST, PUT, PATCH and DELETE must carry the session's CSRF token, in the
form field ``csrf_token`` or the header ``X-CSRF-Token``. Templates get it from
``csrf_token()``; scripts read ``<meta name="csrf-token">`` from base.html.
"""

from __future__ import annotations

import functools
import hmac
import secrets
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any, ParamSpec, TypeVar
from urllib.parse import urlsplit
from weakref import WeakSet

from flask import (
    Blueprint,
    Flask,
    Response,
    current_app,
    flash,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.typing import ResponseReturnValue

from curation.accounts import authenticate, create_user, list_users, set_active
from curation.exceptions import Conflict, NotFound, RejectedInput
from curation.models import User, UserRole
from webui import runtime_of

P = ParamSpec("P")
T = TypeVar("T")
View = Callable[P, ResponseReturnValue]

blueprint = Blueprint("auth", __name__)

SESSION_LIFETIME = timedelta(hours=12)
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
API_PREFIXES = ("/api/", "/review/api/")

_USER_ID_KEY = "user_id"
_LOGIN_AT_KEY = "login_at"
_CSRF_KEY = "csrf_token"
_G_USER = "curation_user"
_UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_EXEMPT_ATTRIBUTE = "_csrf_exempt"
_exempt_blueprints: WeakSet[Blueprint] = WeakSet()

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; "
        "img-src 'self' data: blob:; object-src 'none'; base-uri 'self'; "
        "form-action 'self'; frame-ancestors 'none'"
    ),
}


# --- the signed-in user -----------------------------------------------------------


def current_user() -> User | None:
    """The signed-in, active user, or None; loaded once per request.

    A session whose user was deactivated or deleted, or that is older than
    ``SESSION_LIFETIME``, is cleared (the person is signed out).
    """
    if _G_USER in g:
        cached: User | None = g.get(_G_USER)
        return cached
    user = _load_user()
    setattr(g, _G_USER, user)
    return user


def _load_user() -> User | None:
    user_id = session.get(_USER_ID_KEY)
    if not isinstance(user_id, int):
        return None
    login_at = session.get(_LOGIN_AT_KEY)
    if not isinstance(login_at, int | float) or time.time() - login_at > _lifetime_seconds():
        session.clear()
        return None
    with runtime_of(current_app).factory() as db:
        user = db.get(User, user_id)
    if user is None or not user.is_active:
        session.clear()
        return None
    return user


def _lifetime_seconds() -> float:
    lifetime = current_app.permanent_session_lifetime
    return lifetime.total_seconds()


def _wants_json() -> bool:
    if request.path.startswith(API_PREFIXES):
        return True
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    return best == "application/json"


def _refuse(status: int, code: str, message: str) -> tuple[Response | str, int]:
    if _wants_json():
        return jsonify({"error": {"code": code, "message": message}}), status
    return render_template("error.html", status=status, code=code, message=message), status


def _login_redirect() -> ResponseReturnValue:
    target = request.full_path if request.query_string else request.path
    return redirect(url_for("auth.login", next=target))


def login_required(view: View[P]) -> View[P]:
    """Only for signed-in, active users (redirect to the login page or JSON 401)."""

    @functools.wraps(view)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> ResponseReturnValue:
        if current_user() is None:
            if _wants_json():
                return _refuse(401, "Unauthorized", "sign in first: no valid session")
            return _login_redirect()
        return view(*args, **kwargs)

    return wrapper


def has_role(user: User, role: str | UserRole) -> bool:
    """Whether ``user`` may act as ``role`` (an admin may act as anyone)."""
    return user.role == UserRole.ADMIN or user.role == UserRole(role)


def role_required(role: str | UserRole) -> Callable[[View[P]], View[P]]:
    """Like ``login_required``, and 403 unless the user has ``role`` (or is an admin)."""
    wanted = UserRole(role)

    def decorator(view: View[P]) -> View[P]:
        @functools.wraps(view)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> ResponseReturnValue:
            user = current_user()
            if user is None:
                if _wants_json():
                    return _refuse(401, "Unauthorized", "sign in first: no valid session")
                return _login_redirect()
            if not has_role(user, wanted):
                return _refuse(403, "Forbidden", f"this needs the {wanted.value} role")
            return view(*args, **kwargs)

        return wrapper

    return decorator


# --- CSRF -----------------------------------------------------------------------


def csrf_token() -> str:
    """The session's CSRF token, made on first use (a new one after each sign-in)."""
    token = session.get(_CSRF_KEY)
    if not isinstance(token, str) or not token:
        token = secrets.token_urlsafe(32)
        session[_CSRF_KEY] = token
    return token


def csrf_exempt(target: T) -> T:
    """Exempt a view function or a whole Blueprint from the CSRF check.

    Only for routes that do not authenticate with the session cookie (an API
    token, say): a cookie-authenticated route without the check can be driven
    by any other site.
    """
    if isinstance(target, Blueprint):
        _exempt_blueprints.add(target)
    else:
        setattr(target, _EXEMPT_ATTRIBUTE, True)
    return target


def _is_exempt(app: Flask) -> bool:
    view = app.view_functions.get(request.endpoint or "")
    if view is not None and getattr(view, _EXEMPT_ATTRIBUTE, False):
        return True
    return any(app.blueprints.get(name) in _exempt_blueprints for name in request.blueprints)


def _csrf_problem() -> str | None:
    sent = request.headers.get(CSRF_HEADER) or request.form.get(CSRF_FIELD)
    if not sent:
        return (
            f"the CSRF token is missing: send it in the form field {CSRF_FIELD!r} "
            f"or the {CSRF_HEADER} header"
        )
    expected = session.get(_CSRF_KEY)
    if not isinstance(expected, str) or not hmac.compare_digest(sent.encode(), expected.encode()):
        return "the CSRF token is wrong or expired: reload the page and try again"
    return None


# --- wiring -----------------------------------------------------------------------


def init_app(app: Flask) -> None:
    """CSRF check before each request, security headers after, template helpers.

    The blueprint (``/login``, ``/logout``, ``/admin/users``) is registered by
    ``create_app`` beside the others.
    """
    app.config.setdefault("PERMANENT_SESSION_LIFETIME", SESSION_LIFETIME)

    @app.before_request
    def _check_csrf() -> ResponseReturnValue | None:
        if request.method not in _UNSAFE_METHODS or _is_exempt(app):
            return None
        problem = _csrf_problem()
        if problem is None:
            return None
        return _refuse(400, "CSRFError", problem)

    @app.after_request
    def _security_headers(response: Response) -> Response:
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    @app.context_processor
    def _template_helpers() -> dict[str, Any]:
        return {"csrf_token": csrf_token, "current_user": current_user}


# --- views ------------------------------------------------------------------------


def safe_next(target: str | None) -> str | None:
    """``target`` if it is a path on this site ("/..." but not "//..."), else None."""
    if not target or not target.startswith("/") or target.startswith("//"):
        return None
    # Browsers read "\" as "/", so "/\evil.example" would leave the site.
    if "\\" in target or any(ord(c) < 0x21 or ord(c) == 0x7F for c in target):
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return None
    return target


@blueprint.route("/login", methods=["GET", "POST"])
def login() -> ResponseReturnValue:
    next_path = safe_next(request.values.get("next"))
    if request.method == "GET":
        if current_user() is not None:
            return redirect(next_path or "/")
        return render_template("login.html", next=next_path, username="", error=None)
    username = request.form.get("username", "").strip()
    password = request.form.get("password", "")
    with runtime_of(current_app).factory() as db:
        user = authenticate(db, username, password)
    if user is None:
        return render_template(
            "login.html", next=next_path, username=username, error="Wrong username or password."
        ), 401
    # A fresh session (and so a fresh CSRF token): nothing set before
    # sign-in, by this browser or planted by someone else, survives it.
    session.clear()
    session.permanent = True
    session[_USER_ID_KEY] = user.id
    session[_LOGIN_AT_KEY] = int(time.time())
    setattr(g, _G_USER, user)
    return redirect(next_path or "/")


@blueprint.post("/logout")
def logout() -> ResponseReturnValue:
    session.clear()
    g.pop(_G_USER, None)
    return redirect(url_for("auth.login"))


def _users_page(
    *, status: int = 200, error: str | None = None, form: dict[str, str] | None = None
) -> tuple[str, int]:
    with runtime_of(current_app).factory() as db:
        users = list_users(db)
    page = render_template(
        "admin_users.html",
        users=users,
        roles=[role.value for role in UserRole],
        error=error,
        form=form or {"username": "", "role": UserRole.REVIEWER.value},
    )
    return page, status


@blueprint.get("/admin/users")
@role_required(UserRole.ADMIN)
def admin_users() -> ResponseReturnValue:
    return _users_page()


@blueprint.post("/admin/users")
@role_required(UserRole.ADMIN)
def admin_create_user() -> ResponseReturnValue:
    admin = current_user()
    assert admin is not None
    form = {
        "username": request.form.get("username", "").strip(),
        "role": request.form.get("role", UserRole.REVIEWER.value),
    }
    try:
        with runtime_of(current_app).factory() as db, db.begin():
            user = create_user(
                db,
                username=form["username"],
                password=request.form.get("password", ""),
                role=form["role"],
                actor=admin,
            )
    except RejectedInput as error:
        return _users_page(status=400, error=f"Not created: {error}.", form=form)
    except Conflict as error:
        return _users_page(status=409, error=f"Not created: {error}.", form=form)
    flash(f"User {user.username} created ({user.role}).")
    return redirect(url_for("auth.admin_users"))


@blueprint.post("/admin/users/<int:user_id>/active")
@role_required(UserRole.ADMIN)
def admin_set_active(user_id: int) -> ResponseReturnValue:
    admin = current_user()
    assert admin is not None
    active = request.form.get("active") == "1"
    try:
        with runtime_of(current_app).factory() as db, db.begin():
            user = set_active(db, user_id, active, actor=admin)
    except NotFound as error:
        return _users_page(status=404, error=f"{error}.")
    except Conflict as error:
        return _users_page(status=409, error=f"Not changed: {error}.")
    flash(f"User {user.username} {'activated' if active else 'deactivated'}.")
    return redirect(url_for("auth.admin_users"))
