"""Scores and queue priorities written in bulk, on SQLite and on PostgreSQL (COPY)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

from curation.learning.bulk_write import write_scores_and_queue
from curation.models import (
    EmbeddingSpace,
    ImageScore,
    ModelVersion,
    NearDuplicateGroup,
    QueueItem,
)
from curation.runtime import Runtime
from tests.factories import image_row


def _seed(runtime: Runtime, n: int) -> int:
    with runtime.factory() as session, session.begin():
        group = NearDuplicateGroup()
        space = EmbeddingSpace(key="s", backbone="b", weights_id="none", dim=2)
        session.add_all([group, space])
        session.flush()
        for i in range(n):
            image_row(session, i + 1, group_id=group.id)
        version = ModelVersion(
            space_id=space.id,
            class_ids=[1, 2],
            artifact_key="x",
            seed=0,
            settings={},
            metrics={},
            status="champion",
        )
        session.add(version)
        session.flush()
        return version.id


def _rows(version: int, n: int, priority: float) -> tuple[list[tuple], list[tuple]]:
    now = datetime.now(UTC)
    scores = [
        (version, i + 1, [1, 2], [0.6, 0.4], 0.97, 0.2, 0.4, 0.5, None, None, now) for i in range(n)
    ]
    queue = [(i + 1, "pending", priority, "uncertainty", ["torn"], version, now) for i in range(n)]
    return scores, queue


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def any_runtime(request):
    return request.getfixturevalue("runtime" if request.param == "sqlite" else "pg_runtime")


def test_bulk_write_is_idempotent_and_spares_claimed_items(any_runtime: Runtime) -> None:
    version = _seed(any_runtime, 50)
    scores, queue = _rows(version, 50, 0.3)
    with any_runtime.factory() as session, session.begin():
        write_scores_and_queue(session, scores, queue)
    with any_runtime.factory() as session, session.begin():
        assert session.scalar(select(func.count()).select_from(QueueItem)) == 50
        session.scalars(select(QueueItem).where(QueueItem.image_id == 1)).one().status = "claimed"
    scores, queue = _rows(version, 50, 0.9)  # a rescoring, delivered twice
    for _ in range(2):
        with any_runtime.factory() as session, session.begin():
            write_scores_and_queue(session, scores, queue)
    with any_runtime.factory() as session:
        assert session.scalar(select(func.count()).select_from(ImageScore)) == 50
        priorities = dict(
            session.execute(select(QueueItem.image_id, QueueItem.priority)).tuples().all()
        )
        item_one = session.scalars(select(QueueItem).where(QueueItem.image_id == 1)).one()
        reasons = session.scalar(select(QueueItem.reasons).where(QueueItem.image_id == 2))
    assert len(priorities) == 50
    assert item_one.priority == pytest.approx(0.3)  # claimed: kept what its reviewer saw
    assert all(p == pytest.approx(0.9) for i, p in priorities.items() if i != 1)
    assert reasons == ["torn"]
