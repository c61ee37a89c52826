"""One scoring batch, end to end: embed what is missing, score, queue, close the jobs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import numpy as np

from curation.learning import bulk_write, outbox
from curation.learning.priority import Strategy
from curation.learning.scoring import (
    LearningPaths,
    champion,
    embed_missing,
    load_model,
    score_images,
)
from curation.models import COLD_START_RANKING, COLD_START_STRATEGY
from curation.runtime import Runtime

if TYPE_CHECKING:
    from curation.learning.backbones import LoadedBackbone


@dataclass
class BatchOutcome:
    embedded: int = 0
    scored: int = 0
    failed: dict[int, str] = field(default_factory=dict)
    dead: list[int] = field(default_factory=list)


def process_batch(
    runtime: Runtime,
    backbone: LoadedBackbone,
    image_ids: Sequence[int],
    *,
    strategy: Strategy = Strategy.BALANCED,
    random_share: float = 0.05,
) -> BatchOutcome:
    """Idempotent: running it twice for the same ids changes nothing the second time."""
    paths = LearningPaths.under(runtime.settings.data_dir)
    embedded = embed_missing(runtime.factory, runtime.store, paths, backbone, image_ids)
    good = [i for i in image_ids if i not in embedded.failed]
    outcome = BatchOutcome(embedded=embedded.embedded, failed=dict(embedded.failed))
    with runtime.factory() as session:
        current = champion(session)
        model = load_model(session, paths, current.id) if current is not None else None
    if model is not None and model.space.key == backbone.space_key:
        outcome.scored = score_images(
            runtime.factory, paths, model, good, strategy=strategy, random_share=random_share
        )
    else:
        queue_for_cold_start(runtime, good)
        order_cold_start(runtime, paths, backbone.space_key)
    with runtime.factory() as session, session.begin():
        outbox.mark_done(session, good)
        outcome.dead = outbox.mark_failed(session, outcome.failed) if outcome.failed else []
    return outcome


def queue_for_cold_start(runtime: Runtime, image_ids: Sequence[int]) -> None:
    """Without a model every new image needs a human; the order among them is
    chosen at hand-out time (typical, diverse images first)."""
    ids = np.asarray(sorted(set(image_ids)), dtype=np.int64)
    now = datetime.now(UTC)
    with runtime.factory() as session, session.begin():
        bulk_write.write_ranking(
            session,
            bulk_write.RankingRows(
                ranking=COLD_START_RANKING,
                image_ids=ids,
                priority=np.full(len(ids), 0.5),
                strategy=np.full(len(ids), COLD_START_STRATEGY),
            ),
        )
        bulk_write.open_items(session, ids, now)


# The first labels: this many typical images per active class (TypiClust, the
# same picks ``curation bench al`` starts its default from).
COLD_START_LABELS_PER_CLASS = 2
# Cold-start items are written at 0.5; the typical picks sit just above, in order.
_COLD_START_PRIORITY = 0.5
_COLD_START_SAMPLE = 20_000


def order_cold_start(runtime: Runtime, paths: LearningPaths, space_key: str) -> int:
    """Put typical images of distinct clusters first in the cold-start line; returns how many.

    With no model, claims would otherwise follow arrival order: the first
    hundred crawled photos of one landmark. The pending cold-start items (a
    sample of at most 20,000) are clustered with TypiClust and the most
    typical image of each of ``2 x active classes`` clusters, largest cluster
    first, gets a priority just above the rest. Recomputed after every batch,
    so a later crawl of another landmark gets its share; idempotent.
    """
    from sqlalchemy import func, select, update

    from curation.learning import embedding_store
    from curation.learning.selection import typical_picks
    from curation.models import (
        ClassStatus,
        EmbeddingSpace,
        LandmarkClass,
        QueueItem,
        QueueOrder,
        QueueStatus,
    )

    with runtime.factory() as session:
        space = session.scalars(
            select(EmbeddingSpace).where(EmbeddingSpace.key == space_key)
        ).first()
        if space is None:
            return 0
        active = session.scalar(
            select(func.count())
            .select_from(LandmarkClass)
            .where(LandmarkClass.status == ClassStatus.ACTIVE.value)
        )
        pending = [
            int(i)
            for i in session.scalars(
                select(QueueOrder.image_id)
                .join(QueueItem, QueueItem.image_id == QueueOrder.image_id)
                .where(
                    QueueOrder.ranking == COLD_START_RANKING,
                    QueueItem.status == QueueStatus.PENDING.value,
                )
                .order_by(QueueOrder.image_id)
            )
        ]
        if len(pending) > _COLD_START_SAMPLE:
            spaced = np.linspace(0, len(pending) - 1, _COLD_START_SAMPLE).astype(np.int64)
            pending = [pending[k] for k in spaced]
        ids, vectors = embedding_store.load(session, paths.embeddings, space, image_ids=pending)
    wanted = min(COLD_START_LABELS_PER_CLASS * max(1, int(active or 0)), len(ids))
    picks = (
        typical_picks(vectors, labelled=np.zeros(len(ids), dtype=np.bool_), k=wanted, seed=0)
        if wanted
        else np.zeros(0, dtype=np.int64)
    )
    chosen = [int(ids[k]) for k in picks]
    with runtime.factory() as session, session.begin():
        session.execute(
            update(QueueOrder)
            .where(
                QueueOrder.ranking == COLD_START_RANKING,
                QueueOrder.priority != _COLD_START_PRIORITY,
            )
            .values(priority=_COLD_START_PRIORITY)
        )
        for position, image_id in enumerate(chosen):
            session.execute(
                update(QueueOrder)
                .where(QueueOrder.ranking == COLD_START_RANKING, QueueOrder.image_id == image_id)
                .values(
                    priority=_COLD_START_PRIORITY + 0.1 * (len(chosen) - position) / len(chosen)
                )
            )
    return len(chosen)
