"""Scores, rankings and queue items written in bulk, on SQLite and on PostgreSQL (binary COPY)."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
from sqlalchemy import func, select

from curation.learning import bulk_write
from curation.models import (
    EmbeddingSpace,
    ImageScore,
    ModelVersion,
    NearDuplicateGroup,
    QueueItem,
    QueueOrder,
)
from curation.queue import current_ranking, prune_rankings
from curation.runtime import Runtime
from tests.factories import image_row


def _seed(runtime: Runtime, n: int, versions: int = 1) -> list[int]:
    with runtime.factory() as session, session.begin():
        group = NearDuplicateGroup()
        space = EmbeddingSpace(key="s", backbone="b", weights_id="none", dim=2)
        session.add_all([group, space])
        session.flush()
        for i in range(n):
            image_row(session, i + 1, group_id=group.id)
        made = [
            ModelVersion(
                space_id=space.id,
                class_ids=[1, 2, 3],
                artifact_key="x",
                seed=0,
                settings={},
                metrics={},
                status="champion",
            )
            for _ in range(versions)
        ]
        session.add_all(made)
        session.flush()
        return [version.id for version in made]


def _scores(version: int, ids: np.ndarray) -> bulk_write.ScoreRows:
    n = len(ids)
    disagreement = np.where(ids % 3 == 0, 0.75, np.nan)
    return bulk_write.ScoreRows(
        model_version_id=version,
        image_ids=ids.astype(np.int64),
        top_classes=np.tile(np.asarray([2, 1, 3], dtype=np.int64), (n, 1)),
        top_probabilities=np.tile(np.asarray([0.6, 0.3, 0.1], dtype=np.float32), (n, 1)),
        entropy=np.full(n, 0.8),
        margin=np.full(n, 0.3),
        least_confidence=np.full(n, 0.4),
        novelty=ids / 100.0,
        reporter_disagreement=disagreement,
        label_issue=np.full(n, np.nan),
    )


def _ranking(version: int, ids: np.ndarray, priority: float) -> bulk_write.RankingRows:
    strategies = np.where(ids % 2 == 0, "uncertainty", "random")
    return bulk_write.RankingRows(
        ranking=version,
        image_ids=ids.astype(np.int64),
        priority=np.full(len(ids), priority),
        strategy=strategies,
    )


def _write(runtime: Runtime, scores, ranking, *, complete: bool) -> None:
    now = datetime.now(UTC)
    with runtime.factory() as session, session.begin():
        bulk_write.write_scores(session, scores, now)
        bulk_write.write_ranking(session, ranking)
        bulk_write.open_items(session, ranking.image_ids, now)
        if complete:
            bulk_write.mark_ranked(session, ranking.ranking, now)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def any_runtime(request):
    return request.getfixturevalue("runtime" if request.param == "sqlite" else "pg_runtime")


def test_scores_round_trip_with_arrays_and_nulls(any_runtime: Runtime) -> None:
    (version,) = _seed(any_runtime, 9)
    ids = np.arange(1, 10)
    _write(any_runtime, _scores(version, ids), _ranking(version, ids, 0.4), complete=True)
    with any_runtime.factory() as session:
        rows = {s.image_id: s for s in session.scalars(select(ImageScore))}
        order = {o.image_id: o for o in session.scalars(select(QueueOrder))}
    assert sorted(rows) == list(range(1, 10))
    assert rows[3].top_classes == [2, 1, 3]
    assert rows[3].top_probabilities == pytest.approx([0.6, 0.3, 0.1], abs=1e-6)
    assert rows[3].reporter_disagreement == pytest.approx(0.75)
    assert rows[4].reporter_disagreement is None
    assert rows[4].label_issue is None
    assert rows[7].novelty == pytest.approx(0.07)
    assert order[2].strategy == "uncertainty" and order[3].strategy == "random"
    assert order[5].priority == pytest.approx(0.4)


def test_writes_are_idempotent_and_spare_claimed_items(any_runtime: Runtime) -> None:
    first, second = _seed(any_runtime, 50, versions=2)
    ids = np.arange(1, 51)
    _write(any_runtime, _scores(first, ids), _ranking(first, ids, 0.3), complete=True)
    with any_runtime.factory() as session, session.begin():
        assert session.scalar(select(func.count()).select_from(QueueItem)) == 50
        assert current_ranking(session) == first
        session.scalars(select(QueueItem).where(QueueItem.image_id == 1)).one().status = "claimed"
    # A rescoring by a new model, delivered twice; the second time overlaps
    # a partial first write (a worker killed after its first batch).
    _write(any_runtime, _scores(second, ids[:20]), _ranking(second, ids[:20], 0.9), complete=False)
    with any_runtime.factory() as session:
        assert current_ranking(session) == first  # an incomplete ranking orders nothing
    for _ in range(2):
        _write(any_runtime, _scores(second, ids), _ranking(second, ids, 0.9), complete=True)
    with any_runtime.factory() as session, session.begin():
        assert current_ranking(session) == second
        per_version = dict(
            session.execute(
                select(ImageScore.model_version_id, func.count()).group_by(
                    ImageScore.model_version_id
                )
            )
            .tuples()
            .all()
        )
        assert per_version == {first: 50, second: 50}
        statuses = dict(
            session.execute(select(QueueItem.image_id, QueueItem.status)).tuples().all()
        )
        assert statuses[1] == "claimed" and len(statuses) == 50
        assert prune_rankings(session) == 50
    with any_runtime.factory() as session:
        left = session.execute(
            select(QueueOrder.ranking, func.count()).group_by(QueueOrder.ranking)
        )
        assert dict(left.tuples().all()) == {second: 50}
