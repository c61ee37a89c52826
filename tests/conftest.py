"""Fixtures: schemas built by the migrations, never by create_all.

* ``migrated_sqlite_template``: one SQLite file migrated to head per run;
  each test that commits gets its own copy (``runtime``).
* ``db_session``: a session inside an outer transaction that is rolled back
  after the test (the domain functions never commit, so nothing leaks).
* ``pg_url``: a fresh PostgreSQL database per test, cloned from a migrated
  template database (marker ``postgres``).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from curation import migrate
from curation.db import make_engine, make_session_factory
from curation.ingest.core import IngestContext
from curation.neardup import NearDuplicateIndex
from curation.runtime import Runtime, build_runtime
from curation.settings import Settings
from curation.store import LocalImageStore

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("CURATION_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
SHARED_WEIGHTS = REPO_ROOT.parent / "shared" / "weights"
POSTGRES_ADMIN_URL = os.environ.get(
    "CURATION_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("CURATION_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
# CI sets this so that a missing server fails the run instead of skipping tests.
REQUIRE_SERVICES = os.environ.get("CURATION_REQUIRE_SERVICES") == "1"


def shared_data(name: str) -> Path:
    folder = SHARED_DATA / name
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent (real photos live in ../shared/data)")
    return folder


def make_settings(data_dir: Path, database_url: str, **overrides: object) -> Settings:
    data_dir.mkdir(parents=True, exist_ok=True)
    settings = Settings(
        environment="test",
        data_dir=data_dir,
        database_url=database_url,
        broker_url="memory://",
        result_backend="cache+memory://",
        secret_key="test-secret",
        ingest_workers=1,
        ingest_commit_every=16,
    )
    return replace(settings, **overrides)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def migrated_sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"
    migrate.upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture
def sqlite_url(migrated_sqlite_template: Path, tmp_path: Path) -> str:
    path = tmp_path / "curation.db"
    shutil.copyfile(migrated_sqlite_template, path)
    return f"sqlite:///{path}"


@pytest.fixture
def settings(tmp_path: Path, sqlite_url: str) -> Settings:
    return make_settings(tmp_path / "var", sqlite_url)


@pytest.fixture
def runtime(settings: Settings) -> Iterator[Runtime]:
    runtime = build_runtime(settings)
    yield runtime
    runtime.dispose()


@pytest.fixture
def db_session(migrated_sqlite_template: Path) -> Iterator[Session]:
    engine = make_engine(f"sqlite:///{migrated_sqlite_template}")
    with engine.connect() as connection:
        outer = connection.begin()
        session = Session(bind=connection, join_transaction_mode="create_savepoint")
        try:
            yield session
        finally:
            session.close()
            outer.rollback()
    engine.dispose()


@pytest.fixture
def store(tmp_path: Path) -> LocalImageStore:
    return LocalImageStore(tmp_path / "images")


@pytest.fixture
def ingest_context(db_session: Session, store: LocalImageStore) -> IngestContext:
    index = NearDuplicateIndex()
    index.refresh(db_session)
    return IngestContext(store=store, index=index, max_distance=6)


# --- PostgreSQL ---------------------------------------------------------------


def _postgres_or_skip() -> None:
    engine = make_engine(POSTGRES_ADMIN_URL)
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as error:
        if REQUIRE_SERVICES:
            raise RuntimeError(f"PostgreSQL is required but unreachable: {error}") from error
        pytest.skip(f"PostgreSQL unreachable at {POSTGRES_ADMIN_URL}")
    finally:
        engine.dispose()


def _admin_execute(statement: str) -> None:
    engine = make_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(text(statement))
    finally:
        engine.dispose()


def _database_url(name: str) -> str:
    base, _, _ = POSTGRES_ADMIN_URL.rpartition("/")
    return f"{base}/{name}"


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    _postgres_or_skip()
    name = f"curation_tpl_{uuid.uuid4().hex[:10]}"
    _admin_execute(f'CREATE DATABASE "{name}"')
    migrate.upgrade(_database_url(name))
    yield name
    _admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_url(pg_template: str) -> Iterator[str]:
    name = f"curation_test_{uuid.uuid4().hex[:10]}"
    _admin_execute(f'CREATE DATABASE "{name}" TEMPLATE "{pg_template}"')
    yield _database_url(name)
    _admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def empty_pg_url() -> Iterator[str]:
    """A new, empty PostgreSQL database (for migration tests)."""
    _postgres_or_skip()
    name = f"curation_empty_{uuid.uuid4().hex[:10]}"
    _admin_execute(f'CREATE DATABASE "{name}"')
    yield _database_url(name)
    _admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_runtime(tmp_path: Path, pg_url: str) -> Iterator[Runtime]:
    runtime = build_runtime(make_settings(tmp_path / "var", pg_url))
    yield runtime
    runtime.dispose()


def session_factory_for(url: str) -> tuple[object, object]:
    engine = make_engine(url)
    return engine, make_session_factory(engine)
