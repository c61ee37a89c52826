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
