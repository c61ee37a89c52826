"""Transactions on SQLite behave as on PostgreSQL: a savepoint's RELEASE commits nothing."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select, text

from curation.models import NearDuplicateGroup
from curation.runtime import Runtime


def _groups(runtime: Runtime) -> int:
    with runtime.factory() as session:
        return session.scalar(select(func.count()).select_from(NearDuplicateGroup)) or 0


def test_rollback_undoes_a_released_savepoint_opened_first(runtime: Runtime) -> None:
    with pytest.raises(RuntimeError), runtime.factory() as session, session.begin():
        session.execute(text("SELECT 1"))  # a read: pysqlite opens no transaction for it
        with session.begin_nested():
            session.add(NearDuplicateGroup())
        raise RuntimeError("the chunk fails after its first item")
    assert _groups(runtime) == 0


def test_rolled_back_savepoint_keeps_the_rest_of_the_transaction(runtime: Runtime) -> None:
    with runtime.factory() as session, session.begin():
        with session.begin_nested():
            session.add(NearDuplicateGroup())
        with pytest.raises(RuntimeError), session.begin_nested():
            session.add(NearDuplicateGroup())
            session.flush()
            raise RuntimeError("one bad item")
        with session.begin_nested():
            session.add(NearDuplicateGroup())
    assert _groups(runtime) == 2


def test_plain_transactions_still_commit(runtime: Runtime) -> None:
    with runtime.factory() as session, session.begin():
        session.add(NearDuplicateGroup())
    assert _groups(runtime) == 1


def test_read_then_write_units_of_work_never_fail_on_a_busy_sqlite(sqlite_url: str) -> None:
    """Each unit reads, then writes, while others commit: BEGIN IMMEDIATE waits
    for the lock instead of failing with "database is locked".

    The savepoint matters: it opens the transaction before the read (see
    ``_begin_before_savepoint``), as ingestion's per-file savepoints do, so
    the read takes a snapshot that another writer's commit makes stale.
    """
    import threading

    from sqlalchemy import func, select

    from curation.db import make_engine, make_session_factory, write_transaction
    from curation.models import AuditEntry

    engine = make_engine(sqlite_url)
    factory = make_session_factory(engine)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(15):
                with write_transaction(factory) as session, session.begin_nested():
                    seen = session.scalar(select(func.count()).select_from(AuditEntry))
                    session.add(
                        AuditEntry(actor="t", action="t", entity_type="t", details={"seen": seen})
                    )
        except BaseException as error:  # collected, asserted below
            errors.append(error)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with factory() as session:
        total = session.scalar(select(func.count()).select_from(AuditEntry))
    engine.dispose()
    assert errors == []
    assert total == 6 * 15
