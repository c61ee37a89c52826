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
