"""Reading the review queue: the next items, diverse, with their reasons and sources."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from curation.learning import embedding_store
from curation.learning.scoring import LearningPaths, champion
from curation.models import EmbeddingSpace, ImageSource, QueueItem, QueueStatus

# Candidates considered per slot when picking a diverse batch.
POOL_FACTOR = 5


@dataclass(frozen=True)
class QueueEntry:
    image_id: int
    priority: float
    strategy: str
    reasons: list[str]
    sources: list[dict[str, Any]]

    def as_dict(self) -> dict[str, Any]:
        return {
            "image_id": self.image_id,
            "priority": round(self.priority, 4),
            "strategy": self.strategy,
            "reasons": self.reasons,
            "sources": self.sources,
        }


def _source_dict(source: ImageSource) -> dict[str, Any]:
    fields = {
        "report": ("reporter_id", "claimed_class_name", "predicted_class_name", "note"),
        "crawl": ("crawler", "source_url", "original_path"),
        "import": ("dataset_name", "original_path", "original_split"),
    }[source.kind]
    return {"kind": source.kind} | {f: getattr(source, f) for f in fields}


def _space_for_diversity(session: Session) -> EmbeddingSpace | None:
    current = champion(session)
    if current is not None:
        return session.get(EmbeddingSpace, current.space_id)
    return session.scalars(select(EmbeddingSpace).order_by(EmbeddingSpace.id.desc())).first()


def top_items(
    session: Session, paths: LearningPaths, n: int, *, diverse: bool = True
) -> list[QueueEntry]:
    """The next ``n`` pending items: by priority, then spread out in embedding space.

    With no model yet (cold start) the batch favours typical images of
    distinct clusters over an arbitrary order.
    """
    pool = list(
        session.scalars(
            select(QueueItem)
            .where(QueueItem.status == QueueStatus.PENDING.value)
            .order_by(QueueItem.priority.desc(), QueueItem.id)
            .limit(n * POOL_FACTOR if diverse else n)
        )
    )
    chosen = pool[:n]
    space = _space_for_diversity(session) if diverse and len(pool) > n else None
    if space is not None:
        ids, vectors = embedding_store.load(
            session, paths.embeddings, space, image_ids=[item.image_id for item in pool]
        )
        position = {int(image_id): k for k, image_id in enumerate(ids)}
        with_vectors = [item for item in pool if item.image_id in position]
        if len(with_vectors) > n:
            matrix = np.asarray(
                [vectors[position[item.image_id]] for item in with_vectors], dtype=np.float32
            )
            picks = _pick(with_vectors, matrix, n)
            chosen = [with_vectors[k] for k in picks]
    sources: dict[int, list[dict[str, Any]]] = {}
    for source in session.scalars(
        select(ImageSource)
        .where(ImageSource.image_id.in_([item.image_id for item in chosen]))
        .order_by(ImageSource.id)
    ):
        sources.setdefault(source.image_id, []).append(_source_dict(source))
    return [
        QueueEntry(
            image_id=item.image_id,
            priority=item.priority,
            strategy=item.strategy,
            reasons=list(item.reasons),
            sources=sources.get(item.image_id, []),
        )
        for item in chosen
    ]


def _pick(items: list[QueueItem], matrix: np.ndarray[Any, Any], n: int) -> list[int]:
    from curation.learning.selection import diverse_top, typical_diverse

    if all(item.strategy == "cold_start" for item in items):
        return [int(k) for k in typical_diverse(matrix, k=n)]
    priorities = np.asarray([item.priority for item in items], dtype=np.float64)
    return [int(k) for k in diverse_top(priorities, matrix, k=n)]
