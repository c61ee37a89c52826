"""Reading the review queue: the next items, diverse, with their reasons and sources."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import delete, func, select, text
from sqlalchemy.orm import Session

from curation.labels import current_labels
from curation.learning import embedding_store
from curation.learning.priority import ScoredItems, Strategy, reasons_for
from curation.learning.scoring import LearningPaths, champion
from curation.models import (
    COLD_START_RANKING,
    COLD_START_STRATEGY,
    EmbeddingSpace,
    ImageScore,
    ImageSource,
    LabelVerdict,
    LandmarkClass,
    ModelVersion,
    QueueItem,
    QueueOrder,
    QueueStatus,
)

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


def source_dict(source: ImageSource) -> dict[str, Any]:
    fields = {
        "report": ("reporter_id", "claimed_class_name", "predicted_class_name", "note"),
        "crawl": ("crawler", "source_url", "original_path"),
        "import": ("dataset_name", "original_path", "original_split"),
    }[source.kind]
    return {"kind": source.kind} | {f: getattr(source, f) for f in fields}


COLD_START_REASON = "no model yet: queued to be labelled so a first model can be trained"
RANDOM_CONTROL_REASON = (
    "in the random control share: placed at random so the queue's lift over"
    " random labelling can be measured"
)
# The strategy of images put back in line because their class was split
# (curation.classes.split): each needs one of the new classes.
CLASS_SPLIT_STRATEGY = "class_split"
CLASS_SPLIT_REASON = (
    "its class was split: pick the new class it shows (similar photos come one after another)"
)


def with_control_reason(strategy: str | None, reasons: list[str]) -> list[str]:
    """``reasons``, led by the random-control or class-split one where that placed the item."""
    if strategy == Strategy.RANDOM.value:
        return [RANDOM_CONTROL_REASON, *reasons]
    if strategy == CLASS_SPLIT_STRATEGY:
        return [CLASS_SPLIT_REASON, *reasons]
    return reasons


def current_ranking(session: Session) -> int:
    """The ranking that orders the queue: the newest complete model ranking, else cold start."""
    newest = session.scalar(
        select(ModelVersion.id)
        .where(ModelVersion.queue_ranked_at.is_not(None))
        .order_by(ModelVersion.queue_ranked_at.desc(), ModelVersion.id.desc())
        .limit(1)
    )
    return COLD_START_RANKING if newest is None else int(newest)


def rankings_present(session: Session) -> list[int]:
    """The rankings that have rows in ``queue_order``, in a few index probes.

    The table's key leads with the ranking, so looking up one image's rows
    needs the rankings first: a lookup by image id alone would read the whole
    table (a million rows per ranking). This walks the key's distinct leading
    values (a "loose index scan"), one probe per ranking; there are a handful.
    """
    rows = session.execute(
        text(
            "WITH RECURSIVE present(ranking) AS ("
            " SELECT min(ranking) FROM queue_order"
            " UNION ALL"
            " SELECT (SELECT min(q.ranking) FROM queue_order q WHERE q.ranking > present.ranking)"
            " FROM present WHERE present.ranking IS NOT NULL"
            ") SELECT ranking FROM present WHERE ranking IS NOT NULL"
        )
    )
    return [int(row[0]) for row in rows]


def prune_rankings(session: Session) -> int:
    """Delete the rows of rankings older than the current one; returns how many.

    A superseded ranking orders nothing; rankings newer than the current one
    are being written (or waiting to be completed) and are kept.
    """
    current = current_ranking(session)
    if current == COLD_START_RANKING:
        return 0
    result = session.execute(delete(QueueOrder).where(QueueOrder.ranking < current))
    return int(getattr(result, "rowcount", 0) or 0)


def pending_count(session: Session) -> int:
    """Pending items in line under the current ranking."""
    return int(
        session.scalar(
            select(func.count())
            .select_from(QueueOrder)
            .join(QueueItem, QueueItem.image_id == QueueOrder.image_id)
            .where(
                QueueOrder.ranking == current_ranking(session),
                QueueItem.status == QueueStatus.PENDING.value,
            )
        )
        or 0
    )


def _space_for_diversity(session: Session) -> EmbeddingSpace | None:
    current = champion(session)
    if current is not None:
        return session.get(EmbeddingSpace, current.space_id)
    return embedding_store.newest_shared_space(session)


@dataclass(frozen=True)
class _Ranked:
    image_id: int
    priority: float
    strategy: str


def top_items(
    session: Session, paths: LearningPaths, n: int, *, diverse: bool = False
) -> list[QueueEntry]:
    """The next ``n`` pending items, in the order claims take them.

    That stored order already starts with typical images of distinct clusters
    (cold start) or with diverse batches (a full rescoring's head order,
    :mod:`curation.learning.ordering`). ``diverse`` spreads the batch again
    in embedding space, for items a partial scoring slotted in since.
    """
    ranking = current_ranking(session)
    pool = [
        _Ranked(image_id, priority, strategy)
        for image_id, priority, strategy in session.execute(
            select(QueueOrder.image_id, QueueOrder.priority, QueueOrder.strategy)
            .join(QueueItem, QueueItem.image_id == QueueOrder.image_id)
            .where(QueueOrder.ranking == ranking, QueueItem.status == QueueStatus.PENDING.value)
            .order_by(QueueOrder.priority.desc(), QueueOrder.image_id)
            .limit(n * POOL_FACTOR if diverse else n)
        ).tuples()
    ]
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
    image_ids = [item.image_id for item in chosen]
    sources: dict[int, list[dict[str, Any]]] = {}
    for source in session.scalars(
        select(ImageSource).where(ImageSource.image_id.in_(image_ids)).order_by(ImageSource.id)
    ):
        sources.setdefault(source.image_id, []).append(source_dict(source))
    reasons = item_reasons(session, ranking, image_ids)
    return [
        QueueEntry(
            image_id=item.image_id,
            priority=item.priority,
            strategy=item.strategy,
            reasons=with_control_reason(item.strategy, reasons.get(item.image_id, [])),
            sources=sources.get(item.image_id, []),
        )
        for item in chosen
    ]


def item_reasons(session: Session, ranking: int, image_ids: list[int]) -> dict[int, list[str]]:
    """The reasons, in words, that put each image in line under ``ranking``.

    Rendered from the stored scores when read, so a rescoring writes numbers
    only (a million sentences would cost more than the scoring itself).
    """
    if ranking == COLD_START_RANKING:
        return {image_id: [COLD_START_REASON] for image_id in image_ids}
    version = session.get(ModelVersion, ranking)
    if version is None or not image_ids:
        return {}
    class_ids = list(version.class_ids)
    index_of = {class_id: k for k, class_id in enumerate(class_ids)}
    names = dict(
        session.execute(
            select(LandmarkClass.id, LandmarkClass.display_name).where(
                LandmarkClass.id.in_(class_ids)
            )
        )
        .tuples()
        .all()
    )
    scores = list(
        session.scalars(
            select(ImageScore)
            .where(ImageScore.model_version_id == ranking, ImageScore.image_id.in_(image_ids))
            .order_by(ImageScore.image_id)
        )
    )
    if not scores:
        return {}
    claims = dict(
        session.execute(
            select(ImageSource.image_id, ImageSource.claimed_class_id)
            .where(
                ImageSource.image_id.in_(image_ids),
                ImageSource.kind == "report",
                ImageSource.claimed_class_id.is_not(None),
            )
            .order_by(ImageSource.id)
        )
        .tuples()
        .all()
    )
    labelled = {
        label.image_id: label.class_id
        for label in current_labels(session, [score.image_id for score in scores])
        if label.verdict == LabelVerdict.LANDMARK.value
    }

    def index(class_id: int | None) -> int:
        return index_of.get(class_id, -1) if class_id is not None else -1

    items = ScoredItems(
        image_ids=np.asarray([s.image_id for s in scores], dtype=np.int64),
        top_classes=np.asarray([[index(c) for c in s.top_classes] for s in scores], dtype=np.int64),
        top_probabilities=np.asarray([s.top_probabilities for s in scores], dtype=np.float32),
        margin=np.asarray([s.margin for s in scores], dtype=np.float64),
        novelty=np.asarray([s.novelty for s in scores], dtype=np.float64),
        disagreement=np.asarray(
            [np.nan if s.reporter_disagreement is None else s.reporter_disagreement for s in scores]
        ),
        label_issue=np.asarray(
            [np.nan if s.label_issue is None else s.label_issue for s in scores]
        ),
        claimed=np.asarray([index(claims.get(s.image_id)) for s in scores], dtype=np.int64),
        labelled=np.asarray([index(labelled.get(s.image_id)) for s in scores], dtype=np.int64),
    )
    class_names = [names.get(c, f"class {c}") for c in class_ids]
    return {
        int(items.image_ids[k]): reasons_for(
            items, k, class_names=class_names, n_known=len(class_ids)
        )
        for k in range(len(scores))
    }


def _pick(items: list[_Ranked], matrix: np.ndarray[Any, Any], n: int) -> list[int]:
    from curation.learning.selection import diverse_top, typical_diverse

    if all(item.strategy == COLD_START_STRATEGY for item in items):
        return [int(k) for k in typical_diverse(matrix, k=n)]
    priorities = np.asarray([item.priority for item in items], dtype=np.float64)
    return [int(k) for k in diverse_top(priorities, matrix, k=n)]
