"""Engine and session factory; the declarative base with a constraint naming convention.

Domain functions take a ``Session`` and never commit: the caller owns the
transaction (``with session.begin():``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import MetaData, create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

# Named constraints let Alembic's batch mode rebuild SQLite tables and let
# downgrades drop constraints by name on PostgreSQL.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def _configure_sqlite(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets the web app read while a worker writes; foreign keys are off
    # by default in SQLite and must be switched on per connection.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _begin_before_savepoint(connection: Any, _name: str | None) -> None:
    """Open the transaction before a SAVEPOINT that would otherwise open it.

    pysqlite sends BEGIN only before a write. A SAVEPOINT sent first opens the
    transaction itself, and its RELEASE then commits: the rows of every item
    recorded so far would survive the rollback of their chunk.
    """
    dbapi_connection = connection.connection.dbapi_connection
    if not dbapi_connection.in_transaction:
        dbapi_connection.execute("BEGIN")


def make_engine(database_url: str, **kwargs: Any) -> Engine:
    if database_url.startswith("sqlite"):
        engine = create_engine(database_url, **kwargs)
        event.listen(engine, "connect", _configure_sqlite)
        event.listen(engine, "savepoint", _begin_before_savepoint)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(database_url, **kwargs)


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)


@contextmanager
def write_transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A unit of work that reads and then writes, safe beside other writers on SQLite.

    SQLite (WAL) starts a transaction as a reader; one that has read and then
    writes after another connection committed cannot wait for the lock (its
    snapshot is stale) and fails at once with "database is locked", whatever
    the busy timeout. ``BEGIN IMMEDIATE`` takes the write lock first, waiting
    up to the busy timeout. PostgreSQL needs nothing of this.
    """
    with factory() as session, session.begin():
        connection = session.connection()
        if connection.dialect.name == "sqlite":
            raw = connection.connection.dbapi_connection
            if raw is not None and not raw.in_transaction:
                raw.execute("BEGIN IMMEDIATE")
        yield session


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One short unit of work: commit on success, roll back on any error."""
    with factory() as session, session.begin():
        yield session
