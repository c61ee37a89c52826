"""Reviewer and admin accounts: creation, password checks, activation.

Passwords are hashed with scrypt from the standard library, written in the
format of ``werkzeug.security.generate_password_hash`` (``scrypt:N:r:p$salt$hex``)
so that either side can check the other's hashes; the domain layer does not
import werkzeug (see tests/test_layers.py).

Usernames are stored lower-cased, so the database's unique constraint makes
them unique regardless of case.

Like every domain function, these take a ``Session`` and never commit.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
import secrets
import string

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from curation.exceptions import Conflict, NotFound, RejectedInput
from curation.models import AuditEntry
from curation.models.accounts import User, UserRole

USERNAME_MIN_LENGTH = 3
USERNAME_MAX_LENGTH = 80
PASSWORD_MIN_LENGTH = 10
# Long enough for any passphrase; short enough that nobody feeds megabytes to scrypt.
PASSWORD_MAX_LENGTH = 1024

_USERNAME_CHARS = re.compile(r"[A-Za-z0-9._-]+")

# werkzeug's defaults for "scrypt": about 32 MiB and some tens of milliseconds a hash.
_SCRYPT_N = 2**15
_SCRYPT_R = 8
_SCRYPT_P = 1
_SALT_LENGTH = 16
_SALT_CHARS = string.ascii_letters + string.digits

Actor = User | str
"""Who acts: a signed-in user, or a plain name such as ``"cli"``."""


# --- passwords ------------------------------------------------------------------


def _scrypt_hex(password: str, salt: str, n: int, r: int, p: int) -> str:
    return hashlib.scrypt(
        password.encode(), salt=salt.encode(), n=n, r=r, p=p, maxmem=132 * n * r * p
    ).hex()


def hash_password(password: str) -> str:
    """A salted scrypt hash, in werkzeug's ``scrypt:N:r:p$salt$hex`` format."""
    salt = "".join(secrets.choice(_SALT_CHARS) for _ in range(_SALT_LENGTH))
    digest = _scrypt_hex(password, salt, _SCRYPT_N, _SCRYPT_R, _SCRYPT_P)
    return f"scrypt:{_SCRYPT_N}:{_SCRYPT_R}:{_SCRYPT_P}${salt}${digest}"


def verify_password(stored_hash: str, password: str) -> bool:
    """Whether ``password`` matches ``stored_hash``; False for any hash it cannot read."""
    try:
        method, salt, expected = stored_hash.split("$", 2)
        name, n, r, p = method.split(":")
        if name != "scrypt":
            return False
        actual = _scrypt_hex(password, salt, int(n), int(r), int(p))
    except ValueError:
        return False
    return hmac.compare_digest(actual, expected)


@functools.cache
def _dummy_hash() -> str:
    # Checked when the username is unknown, so that a miss costs as long as a hit.
    return hash_password(secrets.token_urlsafe(16))


# --- validation -----------------------------------------------------------------


def normalize_username(username: str) -> str:
    """The stored form of ``username``, or RejectedInput saying what is wrong with it."""
    if not USERNAME_MIN_LENGTH <= len(username) <= USERNAME_MAX_LENGTH:
        raise RejectedInput(
            f"username must be {USERNAME_MIN_LENGTH} to {USERNAME_MAX_LENGTH} characters long"
        )
    if not _USERNAME_CHARS.fullmatch(username):
        raise RejectedInput(
            "username may contain only letters a-z, digits and the characters . _ -"
        )
    return username.lower()


def check_password_rules(password: str, *, username: str) -> None:
    """RejectedInput naming the first rule that ``password`` breaks."""
    if len(password) < PASSWORD_MIN_LENGTH:
        raise RejectedInput(f"password must be at least {PASSWORD_MIN_LENGTH} characters long")
    if len(password) > PASSWORD_MAX_LENGTH:
        raise RejectedInput(f"password must be at most {PASSWORD_MAX_LENGTH} characters long")
    if password.casefold() == username.casefold():
        raise RejectedInput("password must not be the same as the username")


def _parse_role(role: str) -> UserRole:
    try:
        return UserRole(role)
    except ValueError:
        allowed = ", ".join(r.value for r in UserRole)
        raise RejectedInput(f"role must be one of: {allowed} (got {role!r})") from None


def _audit(
    session: Session, actor: Actor, action: str, user: User, details: dict[str, object]
) -> None:
    session.add(
        AuditEntry(
            actor_id=actor.id if isinstance(actor, User) else None,
            actor=f"user:{actor.username}" if isinstance(actor, User) else actor,
            action=action,
            entity_type="user",
            entity_id=user.id,
            details=details,
        )
    )


# --- queries and commands -------------------------------------------------------


def find_user(session: Session, username: str) -> User | None:
    """The user called ``username`` (any case), or None."""
    return session.scalar(select(User).where(func.lower(User.username) == username.lower()))


def list_users(session: Session) -> list[User]:
    """Every account, by username."""
    return list(session.scalars(select(User).order_by(User.username)))


def create_user(session: Session, *, username: str, password: str, role: str, actor: Actor) -> User:
    """Add an account and an audit entry ``user.create`` (which never holds the password).

    RejectedInput for a bad username, password or role; Conflict when the
    username is taken (in any case).
    """
    name = normalize_username(username)
    check_password_rules(password, username=name)
    parsed_role = _parse_role(role)
    if find_user(session, name) is not None:
        raise Conflict(f"username {name!r} is already taken")
    user = User(
        username=name,
        password_hash=hash_password(password),
        role=parsed_role.value,
        is_active=True,
    )
    try:
        # A savepoint, so that losing a race to the same name leaves the
        # caller's transaction usable.
        with session.begin_nested():
            session.add(user)
            session.flush()
    except IntegrityError:
        raise Conflict(f"username {name!r} is already taken") from None
    _audit(session, actor, "user.create", user, {"username": name, "role": parsed_role.value})
    return user


def authenticate(session: Session, username: str, password: str) -> User | None:
    """The active user with these credentials, or None.

    One scrypt check runs whatever the outcome (against a dummy hash when the
    user is unknown), so timing does not reveal which usernames exist.
    """
    user = find_user(session, username) if len(username) <= USERNAME_MAX_LENGTH else None
    if user is None:
        verify_password(_dummy_hash(), password)
        return None
    if not verify_password(user.password_hash, password) or not user.is_active:
        return None
    return user


def set_active(session: Session, user_id: int, active: bool, actor: Actor) -> User:
    """Activate or deactivate an account (audited as ``user.activate``/``user.deactivate``).

    NotFound for an unknown id; Conflict when it would leave no active admin.
    """
    user = session.get(User, user_id)
    if user is None:
        raise NotFound(f"no user with id {user_id}")
    if user.is_active == active:
        return user
    if not active and user.role == UserRole.ADMIN:
        other_admins = session.scalar(
            select(func.count())
            .select_from(User)
            .where(User.role == UserRole.ADMIN.value, User.is_active, User.id != user.id)
        )
        if not other_admins:
            raise Conflict(f"{user.username!r} is the last active admin and cannot be deactivated")
    user.is_active = active
    session.flush()
    action = "user.activate" if active else "user.deactivate"
    _audit(session, actor, action, user, {"username": user.username})
    return user
