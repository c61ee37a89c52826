"""One scoring batch, end to end: embed what is missing, score, queue, close the jobs."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy import case, func, or_, select, text, update

from curation.db import write_transaction
from curation.exceptions import ConfigurationError
from curation.learning import bulk_write, embedding_store, outbox
from curation.learning.priority import Strategy
from curation.learning.scoring import (
    LearningPaths,
    champion,
    embed_missing,
    load_model,
    score_images,
)
from curation.learning.selection import typical_picks
from curation.learning.tuned import backbone_for_space, is_tuned_space
from curation.models import (
    COLD_START_RANKING,
    COLD_START_STRATEGY,
    EmbeddingSpace,
    QueueItem,
    QueueOrder,
    QueueStatus,
)
from curation.queue import current_ranking
from curation.runtime import Runtime
from curation.taxonomy import count_active_classes

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

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
    """Idempotent: running it twice for the same ids changes nothing the second time.

    Images are always embedded with the configured ``backbone`` (the space
    the next heads train in); when the champion is a fine-tuned model, also
    with its backbone, into its own space, where it scores them.
    """
    paths = LearningPaths.under(runtime.settings.data_dir)
    embedded = embed_missing(runtime.factory, runtime.store, paths, backbone, image_ids)
    good = [i for i in image_ids if i not in embedded.failed]
    outcome = BatchOutcome(embedded=embedded.embedded, failed=dict(embedded.failed))
    with runtime.factory() as session:
        current = champion(session)
        model = load_model(session, paths, current.id) if current is not None else None
    tuned_champion = model is not None and is_tuned_space(model.space.key)
    if model is not None and tuned_champion:
        good = _embed_for_champion(runtime, paths, model.space, good, outcome)
    if model is not None and (model.space.key == backbone.space_key or tuned_champion):
        outcome.scored = score_images(
            runtime.factory, paths, model, good, strategy=strategy, random_share=random_share
        )
    else:
        queue_for_cold_start(runtime, good)
        if good:
            order_cold_start(runtime, paths, backbone.space_key)
    with runtime.factory() as session, session.begin():
        # Locked: a promotion retiring this champion waits for this commit, so
        # its search for images its space lacks sees these jobs done.
        now_champion = champion(session, lock=True)
        if (now_champion.id if now_champion else None) != (current.id if current else None):
            # A promotion committed while this batch ran: it may have needed these
            # images in its own space (and requeued them before this batch had
            # embedded them in the base one). Done again, under the new champion.
            outbox.requeue(session, good)
        else:
            outbox.mark_done(session, good)
        outcome.dead = outbox.mark_failed(session, outcome.failed) if outcome.failed else []
    return outcome


def _embed_for_champion(
    runtime: Runtime,
    paths: LearningPaths,
    space: EmbeddingSpace,
    image_ids: list[int],
    outcome: BatchOutcome,
) -> list[int]:
    """Embed ``image_ids`` into a fine-tuned champion's space; return those that made it.

    Failures are added to ``outcome.failed`` (a champion whose classifier file
    is gone or unreadable fails every image, with that message, and they are
    parked as dead after the usual attempts: a promotion or rollback requeues
    them).
    """
    if not image_ids:
        return image_ids
    try:
        with runtime.factory() as session:
            tuned = backbone_for_space(session, paths.models, space)
        if tuned is None or tuned.space_key != space.key:
            raise ConfigurationError(
                f"the fine-tuned classifier of space {space.key} no longer matches it"
                f" (its file hashes to {tuned.space_key if tuned else 'nothing'})"
            )
    except Exception as error:  # a missing, corrupt or replaced classifier file
        message = f"cannot embed for the champion: {type(error).__name__}: {error}"
        outcome.failed.update({i: message[:500] for i in image_ids})
        return []
    more = embed_missing(runtime.factory, runtime.store, paths, tuned, image_ids)
    outcome.embedded += more.embedded
    outcome.failed.update(more.failed)
    return [i for i in image_ids if i not in more.failed]


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
# Pending and already handed-out cold-start images read, each at most: the
# ordering runs after every batch and must stay well under a second.
_COLD_START_SAMPLE = 2_000
# Serialises concurrent orderings on PostgreSQL (pg_advisory_xact_lock key).
_COLD_START_LOCK = 0x0C01D


def order_cold_start(runtime: Runtime, paths: LearningPaths, space_key: str) -> int:
    """Put typical images of distinct clusters first in the cold-start line; returns how many.

    With no model, claims would otherwise follow arrival order: the first
    hundred crawled photos of one landmark. A sample of the pending
    cold-start images is clustered with TypiClust, the images already handed
    out counting as covered, and the most typical image of each of ``2 x
    active classes`` uncovered clusters, largest first, gets a priority just
    above the rest. Recomputed after every batch, so a later crawl of another
    landmark gets its share. Best effort: the images are queued already, and
    a failure here leaves the line in arrival order instead of failing the
    batch.
    """
    try:
        return _order_cold_start(runtime, paths, space_key)
    except Exception:  # the batch's images are queued; only their order is lost
        logger.exception("cold-start ordering failed; the line stays in arrival order")
        return 0


def _cold_start_sample(session: Session, *, pending: bool) -> list[int]:
    """Ids of cold-start images, pending or already handed out: at most about
    ``_COLD_START_SAMPLE``, spread over the line by id in SQL, so a line of a
    million crawled images is never read whole after every batch."""
    pending_status = QueueItem.status == QueueStatus.PENDING.value
    of_line = (
        QueueOrder.ranking == COLD_START_RANKING,
        QueueOrder.strategy == COLD_START_STRATEGY,
        pending_status if pending else ~pending_status,
    )
    joined = select(QueueOrder.image_id).join(QueueItem, QueueItem.image_id == QueueOrder.image_id)
    count = int(
        session.scalar(select(func.count()).select_from(joined.where(*of_line).subquery())) or 0
    )
    step = max(1, count // _COLD_START_SAMPLE)
    query = joined.where(*of_line, QueueOrder.image_id % step == 0)
    return [int(i) for i in session.scalars(query.order_by(QueueOrder.image_id))]


def _order_cold_start(runtime: Runtime, paths: LearningPaths, space_key: str) -> int:
    with runtime.factory() as session:
        space = session.scalars(
            select(EmbeddingSpace).where(EmbeddingSpace.key == space_key)
        ).first()
        if space is None or current_ranking(session) != COLD_START_RANKING:
            return 0
        active = count_active_classes(session)
        open_ids, open_vectors = embedding_store.load(
            session, paths.embeddings, space, image_ids=_cold_start_sample(session, pending=True)
        )
        _, seen_vectors = embedding_store.load(
            session, paths.embeddings, space, image_ids=_cold_start_sample(session, pending=False)
        )
    wanted = min(COLD_START_LABELS_PER_CLASS * max(1, active), len(open_ids))
    chosen: list[int] = []
    if wanted:
        vectors = np.concatenate([seen_vectors, open_vectors])
        covered = np.arange(len(vectors)) < len(seen_vectors)
        picks = typical_picks(vectors, labelled=covered, k=wanted, seed=0)
        chosen = [int(open_ids[k - len(seen_vectors)]) for k in picks]
    in_line = (
        QueueOrder.ranking == COLD_START_RANKING,
        QueueOrder.strategy == COLD_START_STRATEGY,
    )
    raised = {
        image_id: _COLD_START_PRIORITY + 0.1 * (len(chosen) - position) / len(chosen)
        for position, image_id in enumerate(chosen)
    }
    with write_transaction(runtime.factory) as session:
        if session.get_bind().dialect.name == "postgresql":
            session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _COLD_START_LOCK})
        # One statement: the previous picks back to the line's priority, the new ones above it.
        session.execute(
            update(QueueOrder)
            .where(
                *in_line,
                or_(QueueOrder.priority != _COLD_START_PRIORITY, QueueOrder.image_id.in_(raised)),
            )
            .values(
                priority=case(raised, value=QueueOrder.image_id, else_=_COLD_START_PRIORITY)
                if raised
                else _COLD_START_PRIORITY
            )
        )
    return len(chosen)
