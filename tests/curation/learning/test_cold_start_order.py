"""With no model, claims start with typical images of distinct clusters, not arrival order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from sqlalchemy import delete, select

from curation.accounts import create_user
from curation.learning.pipeline import (
    COLD_START_LABELS_PER_CLASS,
    order_cold_start,
    queue_for_cold_start,
)
from curation.learning.scoring import LearningPaths
from curation.models import COLD_START_RANKING, QueueOrder
from curation.review.claims import claim_next
from curation.runtime import Runtime
from curation.taxonomy import find_or_create_class
from tests.factories import embedded_images

SPACE_KEY = "test:none"


def _seed(runtime: Runtime, sizes: list[int]) -> tuple[list[int], np.ndarray]:
    """Images in len(sizes) tight clusters, arriving cluster by cluster, all queued."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(len(sizes), 16))
    vectors = np.concatenate(
        [c + 0.02 * rng.normal(size=(n, 16)) for c, n in zip(centres, sizes, strict=True)]
    )
    paths = LearningPaths.under(runtime.settings.data_dir)
    with runtime.factory() as session, session.begin():
        for name in ("Gyeongbokgung", "Deoksugung"):
            find_or_create_class(session, name)
        ids, _ = embedded_images(session, paths.embeddings, vectors, key=SPACE_KEY)
    queue_for_cold_start(runtime, ids)
    return ids, np.repeat(np.arange(len(sizes)), sizes)


def test_claims_begin_with_one_typical_image_per_cluster(runtime: Runtime) -> None:
    ids, cluster = _seed(runtime, [30, 20, 10, 5])
    paths = LearningPaths.under(runtime.settings.data_dir)
    picked = order_cold_start(runtime, paths, SPACE_KEY)
    assert picked == COLD_START_LABELS_PER_CLASS * 2  # two active classes
    with runtime.factory() as session, session.begin():
        reviewer = create_user(
            session, username="reviewer", password="pw-123456-long", role="reviewer", actor="test"
        )
    first: list[int] = []
    for _ in range(4):
        with runtime.factory() as session, session.begin():
            user = session.merge(reviewer)
            item = claim_next(session, user, lease=timedelta(minutes=5), now=datetime.now(UTC))
            assert item is not None
            first.append(item.image_id)
    # Arrival order would give four images of the first cluster.
    position = {image_id: k for k, image_id in enumerate(ids)}
    assert sorted(cluster[[position[i] for i in first]].tolist()) == [0, 1, 2, 3]
    # Idempotent, and the rest of the line keeps the cold-start priority.
    assert order_cold_start(runtime, paths, SPACE_KEY) == picked
    with runtime.factory() as session:
        priorities = list(
            session.scalars(
                select(QueueOrder.priority).where(QueueOrder.ranking == COLD_START_RANKING)
            )
        )
        assert sum(p > 0.5 for p in priorities) == picked


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_reordering_leaves_class_split_items_and_handed_out_images_alone(
    database: str, request: pytest.FixtureRequest
) -> None:
    runtime: Runtime = request.getfixturevalue("runtime" if database == "sqlite" else "pg_runtime")
    from curation.learning import bulk_write
    from curation.queue import CLASS_SPLIT_STRATEGY

    ids, _ = _seed(runtime, [30, 20, 10, 5])
    paths = LearningPaths.under(runtime.settings.data_dir)
    # An image put back in line by a class split sorts first, whatever the cold start does.
    with runtime.factory() as session, session.begin():
        session.execute(
            delete(QueueOrder).where(
                QueueOrder.ranking == COLD_START_RANKING, QueueOrder.image_id == ids[-1]
            )
        )
        bulk_write.write_ranking(
            session,
            bulk_write.RankingRows(
                ranking=COLD_START_RANKING,
                image_ids=np.asarray([ids[-1]]),
                priority=np.asarray([1.0]),
                strategy=np.asarray([CLASS_SPLIT_STRATEGY]),
            ),
        )
    first = order_cold_start(runtime, paths, SPACE_KEY)
    again = order_cold_start(runtime, paths, SPACE_KEY)
    assert first == again == COLD_START_LABELS_PER_CLASS * 2
    with runtime.factory() as session:
        split = session.scalar(
            select(QueueOrder.priority).where(
                QueueOrder.ranking == COLD_START_RANKING, QueueOrder.image_id == ids[-1]
            )
        )
        raised = list(
            session.scalars(
                select(QueueOrder.image_id).where(
                    QueueOrder.ranking == COLD_START_RANKING, QueueOrder.priority > 0.5
                )
            )
        )
    assert split == 1.0
    assert ids[-1] in raised and len(raised) == first + 1
    # Deterministic: the same picks twice.
    assert order_cold_start(runtime, paths, SPACE_KEY) == first


def test_nothing_to_order_without_embeddings(runtime: Runtime) -> None:
    paths = LearningPaths.under(runtime.settings.data_dir)
    assert order_cold_start(runtime, paths, "absent:space") == 0
