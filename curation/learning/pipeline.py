"""One scoring batch, end to end: embed what is missing, score, queue, close the jobs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sqlalchemy import select

from curation.learning import outbox
from curation.learning.priority import Strategy
from curation.learning.scoring import (
    LearningPaths,
    champion,
    embed_missing,
    load_model,
    score_images,
)
from curation.models import QueueItem, QueueStatus
from curation.runtime import Runtime

if TYPE_CHECKING:
    from curation.learning.backbones import LoadedBackbone

COLD_START_REASON = "no model yet: queued to be labelled so a first model can be trained"


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
        _queue_for_cold_start(runtime, good)
    with runtime.factory() as session, session.begin():
        outbox.mark_done(session, good)
        outcome.dead = outbox.mark_failed(session, outcome.failed) if outcome.failed else []
    return outcome


def _queue_for_cold_start(runtime: Runtime, image_ids: Sequence[int]) -> None:
    """Without a model every new image needs a human; the order among them is
    chosen at hand-out time (typical, diverse images first)."""
    now = datetime.now(UTC)
    with runtime.factory() as session, session.begin():
        queued = set(
            session.scalars(select(QueueItem.image_id).where(QueueItem.image_id.in_(image_ids)))
        )
        for image_id in image_ids:
            if image_id not in queued:
                session.add(
                    QueueItem(
                        image_id=image_id,
                        status=QueueStatus.PENDING.value,
                        priority=0.5,
                        strategy="cold_start",
                        reasons=[COLD_START_REASON],
                        updated_at=now,
                    )
                )
