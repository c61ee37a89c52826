"""Accounts in the domain layer, and the ``curation users`` commands."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from curation.accounts import (
    authenticate,
    create_user,
    hash_password,
    list_users,
    set_active,
    verify_password,
)
from curation.cli import main
from curation.db import make_engine, make_session_factory
from curation.exceptions import Conflict, NotFound, RejectedInput
from curation.models import AuditEntry, User
from tests.curation.test_cli import Cli

PASSWORD = "correct horse battery"


def _make(session: Session, username: str = "alice", role: str = "reviewer") -> User:
    return create_user(session, username=username, password=PASSWORD, role=role, actor="test")


# --- passwords --------------------------------------------------------------------


def test_hashes_are_salted_scrypt_that_werkzeug_can_check_both_ways() -> None:
    first, second = hash_password(PASSWORD), hash_password(PASSWORD)
    assert first.startswith("scrypt:32768:8:1$")
    assert first != second
    assert PASSWORD not in first
    assert check_password_hash(first, PASSWORD)
    assert verify_password(generate_password_hash(PASSWORD), PASSWORD)
    assert not verify_password(first, PASSWORD + "x")


@pytest.mark.parametrize("stored", ["", "plain", "pbkdf2:sha256:1$salt$abcd", "scrypt:x:8:1$s$ab"])
def test_unreadable_hashes_never_match(stored: str) -> None:
    assert verify_password(stored, PASSWORD) is False


# --- create_user ------------------------------------------------------------------


def test_create_user_stores_a_hash_and_an_audit_entry_without_the_password(
    db_session: Session,
) -> None:
    user = _make(db_session, "Alice.B-2_x", role="admin")
    assert user.id is not None
    assert user.username == "alice.b-2_x"
    assert user.role == "admin"
    assert user.is_active
    assert user.password_hash != PASSWORD
    assert verify_password(user.password_hash, PASSWORD)
    entry = db_session.scalars(select(AuditEntry).where(AuditEntry.action == "user.create")).one()
    assert (entry.actor, entry.entity_type, entry.entity_id) == ("test", "user", user.id)
    assert entry.details == {"username": "alice.b-2_x", "role": "admin"}
    assert PASSWORD not in json.dumps(entry.details)
    assert user.password_hash not in json.dumps(entry.details)


def test_a_user_actor_is_recorded_by_id_and_name(db_session: Session) -> None:
    admin = _make(db_session, "root", role="admin")
    user = create_user(db_session, username="bob", password=PASSWORD, role="reviewer", actor=admin)
    entry = db_session.scalars(
        select(AuditEntry).where(AuditEntry.entity_id == user.id, AuditEntry.entity_type == "user")
    ).one()
    assert (entry.actor_id, entry.actor) == (admin.id, "user:root")


def test_usernames_are_unique_regardless_of_case(db_session: Session) -> None:
    _make(db_session, "alice")
    with pytest.raises(Conflict, match="'alice' is already taken"):
        _make(db_session, "ALICE")
    # The failed attempt left the transaction usable.
    _make(db_session, "carol")
    assert [u.username for u in list_users(db_session)] == ["alice", "carol"]


@pytest.mark.parametrize(
    ("username", "message"),
    [
        ("ab", "username must be 3 to 80 characters long"),
        ("a" * 81, "username must be 3 to 80 characters long"),
        ("al ice", "username may contain only letters"),
        ("alice@example.org", "username may contain only letters"),
        ("ällo", "username may contain only letters"),
    ],
)
def test_bad_usernames_are_refused(db_session: Session, username: str, message: str) -> None:
    with pytest.raises(RejectedInput, match=message):
        _make(db_session, username)


@pytest.mark.parametrize(
    ("username", "password", "message"),
    [
        ("alice", "short", "password must be at least 10 characters long"),
        ("alice", "x" * 1025, "password must be at most 1024 characters long"),
        ("alice_long", "ALICE_LONG", "password must not be the same as the username"),
    ],
)
def test_bad_passwords_are_refused(
    db_session: Session, username: str, password: str, message: str
) -> None:
    with pytest.raises(RejectedInput, match=message):
        create_user(db_session, username=username, password=password, role="admin", actor="t")
    assert list_users(db_session) == []


def test_unknown_roles_are_refused(db_session: Session) -> None:
    with pytest.raises(RejectedInput, match=r"role must be one of: reviewer, admin \(got 'root'\)"):
        _make(db_session, role="root")


# --- authenticate -----------------------------------------------------------------


def test_authenticate_accepts_the_right_password_in_any_username_case(
    db_session: Session,
) -> None:
    user = _make(db_session)
    assert authenticate(db_session, "alice", PASSWORD) is user
    assert authenticate(db_session, "Alice", PASSWORD) is user


@pytest.mark.parametrize(
    ("username", "password"),
    [("alice", "wrong password!"), ("nobody", PASSWORD), ("", ""), ("x" * 500, PASSWORD)],
)
def test_authenticate_refuses_wrong_credentials(
    db_session: Session, username: str, password: str
) -> None:
    _make(db_session)
    assert authenticate(db_session, username, password) is None


def test_authenticate_refuses_inactive_users(db_session: Session) -> None:
    user = _make(db_session)
    set_active(db_session, user.id, False, actor="test")
    assert authenticate(db_session, "alice", PASSWORD) is None
    set_active(db_session, user.id, True, actor="test")
    assert authenticate(db_session, "alice", PASSWORD) is user


# --- set_active ---------------------------------------------------------------------


def test_set_active_is_audited(db_session: Session) -> None:
    user = _make(db_session)
    set_active(db_session, user.id, False, actor="test")
    set_active(db_session, user.id, False, actor="test")  # no change, no entry
    set_active(db_session, user.id, True, actor="test")
    actions = db_session.scalars(
        select(AuditEntry.action).where(AuditEntry.entity_id == user.id).order_by(AuditEntry.id)
    ).all()
    assert actions == ["user.create", "user.deactivate", "user.activate"]


def test_the_last_active_admin_cannot_be_deactivated(db_session: Session) -> None:
    first = _make(db_session, "first", role="admin")
    with pytest.raises(Conflict, match="'first' is the last active admin"):
        set_active(db_session, first.id, False, actor="test")
    _make(db_session, "second", role="admin")
    assert set_active(db_session, first.id, False, actor="test").is_active is False


def test_set_active_on_an_unknown_user_is_not_found(db_session: Session) -> None:
    with pytest.raises(NotFound, match="no user with id 999"):
        set_active(db_session, 999, False, actor="test")


# --- the command line -------------------------------------------------------------


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    cli = Cli(tmp_path)
    assert cli("db", "upgrade").exit_code == 0
    return cli


def _invoke(cli: Cli, *args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(main, list(args), input=input, env=cli.env, catch_exceptions=False)


def _stored_users(cli: Cli) -> list[User]:
    engine = make_engine(cli.database_url)
    try:
        with make_session_factory(engine)() as session:
            return list_users(session)
    finally:
        engine.dispose()


def test_cli_creates_a_user_from_stdin_and_lists_it(cli: Cli) -> None:
    result = _invoke(
        cli,
        "users",
        "create",
        "Admin",
        "--role",
        "admin",
        "--password-stdin",
        input=PASSWORD + "\n",
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "user admin created (admin)"
    [user] = _stored_users(cli)
    assert (user.username, user.role, user.is_active) == ("admin", "admin", True)
    assert verify_password(user.password_hash, PASSWORD)

    listed = _invoke(cli, "users", "list", "--json")
    assert listed.exit_code == 0, listed.output
    [row] = json.loads(listed.stdout)["users"]
    assert {k: row[k] for k in ("username", "role", "is_active")} == {
        "username": "admin",
        "role": "admin",
        "is_active": True,
    }
    assert "admin" in _invoke(cli, "users", "list").stdout


def test_cli_prompts_twice_without_password_stdin(cli: Cli) -> None:
    result = _invoke(
        cli, "users", "create", "bob", "--role", "reviewer", input=f"{PASSWORD}\n{PASSWORD}\n"
    )
    assert result.exit_code == 0, result.output
    assert "Repeat for confirmation" in result.output
    assert PASSWORD not in result.output  # hidden input is not echoed
    [user] = _stored_users(cli)
    assert verify_password(user.password_hash, PASSWORD)


def test_cli_refuses_a_bad_password_with_one_clear_line(cli: Cli) -> None:
    result = _invoke(
        cli, "users", "create", "bob", "--role", "reviewer", "--password-stdin", input="short\n"
    )
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: password must be at least 10 characters long"
    assert _stored_users(cli) == []


def test_cli_refuses_a_taken_username(cli: Cli) -> None:
    args = ("users", "create", "bob", "--role", "reviewer", "--password-stdin")
    assert _invoke(cli, *args, input=PASSWORD + "\n").exit_code == 0
    result = _invoke(cli, *args[:2], "BOB", *args[3:], input=PASSWORD + "\n")
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: username 'bob' is already taken"


def test_cli_refuses_an_unknown_role(cli: Cli) -> None:
    result = _invoke(cli, "users", "create", "bob", "--role", "root", "--password-stdin", input="")
    assert result.exit_code != 0
    assert "'root' is not one of 'reviewer', 'admin'" in result.stderr
