"""Writing scores, queue rankings and new queue items for many images at once.

Everything here is idempotent: rows that exist are kept (a redelivered task
or a second rescoring with the same model changes nothing), and items a
reviewer holds or decided keep their state.

On PostgreSQL, rows go in by binary COPY (``curation.pgcopy``), a million in
a few seconds; a transaction-scoped advisory lock per (table, model version)
lets a writer see which rows already exist and copy only the others, without
a staging table or a conflict check per row. On SQLite one cached INSERT OR
IGNORE runs for many parameter sets (SQLite serialises writers anyway).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import text, update
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from curation import pgcopy
from curation.models import ImageScore, ModelVersion, QueueItem, QueueOrder, QueueStatus

# First halves of the advisory-lock keys; the second half is the model version.
_SCORES_LOCK = 0x5C0E
_RANKING_LOCK = 0x0ADE


@dataclass(frozen=True)
class ScoreRows:
    """Scores of n images under one model version, aligned by position.

    ``top_classes`` holds class ids (n, k); NaN in ``reporter_disagreement``
    or ``label_issue`` means "does not apply" and is stored as NULL.
    """

    model_version_id: int
    image_ids: NDArray[np.int64]
    top_classes: NDArray[np.int64]
    top_probabilities: NDArray[np.float32]
    entropy: NDArray[np.float64]
    margin: NDArray[np.float64]
    least_confidence: NDArray[np.float64]
    novelty: NDArray[np.float64]
    reporter_disagreement: NDArray[np.float64]
    label_issue: NDArray[np.float64]


@dataclass(frozen=True)
class RankingRows:
    """The priority and deciding strategy of n queued images under one ranking."""

    ranking: int
    image_ids: NDArray[np.int64]
    priority: NDArray[np.float64]
    strategy: NDArray[np.str_]


def _is_postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def _raw_cursor(session: Session):  # type: ignore[no-untyped-def]
    raw = session.connection().connection.driver_connection
    assert raw is not None
    return raw.cursor()


def _new_rows(
    session: Session, table: str, key_column: str, key: int, lock: int, image_ids: NDArray[np.int64]
) -> NDArray[np.bool_]:
    """Lock (table, key) for this transaction; mask of ``image_ids`` not yet stored under key."""
    session.execute(text("SELECT pg_advisory_xact_lock(:a, :b)"), {"a": lock, "b": key})
    with _raw_cursor(session) as cursor:
        existing = pgcopy.copy_out_ints(
            cursor,
            f"SELECT image_id::int8 FROM {table} WHERE {key_column} = {int(key)}",  # noqa: S608
            1,
        )[:, 0]
    if len(existing) == 0:
        return np.ones(len(image_ids), dtype=bool)
    return ~np.isin(image_ids, existing)


def write_scores(session: Session, rows: ScoreRows, now: datetime) -> None:
    n = len(rows.image_ids)
    if n == 0:
        return
    if not _is_postgres(session):
        statement = sqlite_insert(ImageScore).on_conflict_do_nothing()
        session.connection().execute(
            statement,
            [
                {
                    "model_version_id": rows.model_version_id,
                    "image_id": int(rows.image_ids[i]),
                    "top_classes": rows.top_classes[i].tolist(),
                    "top_probabilities": [round(float(p), 5) for p in rows.top_probabilities[i]],
                    "entropy": float(rows.entropy[i]),
                    "margin": float(rows.margin[i]),
                    "least_confidence": float(rows.least_confidence[i]),
                    "novelty": float(rows.novelty[i]),
                    "reporter_disagreement": _optional(rows.reporter_disagreement[i]),
                    "label_issue": _optional(rows.label_issue[i]),
                    "created_at": now,
                }
                for i in range(n)
            ],
        )
        return
    keep = _new_rows(
        session,
        "image_scores",
        "model_version_id",
        rows.model_version_id,
        _SCORES_LOCK,
        rows.image_ids,
    )
    if not keep.any():
        return
    columns = [
        pgcopy.Column("model_version_id", "int4", np.int32(rows.model_version_id)),
        pgcopy.Column("image_id", "int4", rows.image_ids[keep]),
        pgcopy.Column("top_classes", "int4[]", rows.top_classes[keep]),
        pgcopy.Column("top_probabilities", "float4[]", rows.top_probabilities[keep]),
        pgcopy.Column("entropy", "float8", rows.entropy[keep]),
        pgcopy.Column("margin", "float8", rows.margin[keep]),
        pgcopy.Column("least_confidence", "float8", rows.least_confidence[keep]),
        pgcopy.Column("novelty", "float8", rows.novelty[keep]),
        _nullable_float("reporter_disagreement", rows.reporter_disagreement[keep]),
        _nullable_float("label_issue", rows.label_issue[keep]),
        pgcopy.Column("created_at", "timestamptz", now),
    ]
    with _raw_cursor(session) as cursor:
        pgcopy.copy_in(cursor, "image_scores", columns, int(keep.sum()))


def write_ranking(session: Session, rows: RankingRows) -> None:
    n = len(rows.image_ids)
    if n == 0:
        return
    if not _is_postgres(session):
        session.connection().execute(
            sqlite_insert(QueueOrder).on_conflict_do_nothing(),
            [
                {
                    "ranking": rows.ranking,
                    "image_id": int(rows.image_ids[i]),
                    "priority": float(rows.priority[i]),
                    "strategy": str(rows.strategy[i]),
                }
                for i in range(n)
            ],
        )
        return
    keep = _new_rows(session, "queue_order", "ranking", rows.ranking, _RANKING_LOCK, rows.image_ids)
    if not keep.any():
        return
    chosen = np.flatnonzero(keep)
    columns = [
        pgcopy.Column("ranking", "int4", np.int32(rows.ranking)),
        pgcopy.Column("image_id", "int4", rows.image_ids[chosen]),
        pgcopy.Column("priority", "float8", rows.priority[chosen]),
        pgcopy.Column("strategy", "text", rows.strategy[chosen]),
    ]
    with _raw_cursor(session) as cursor:
        pgcopy.copy_in(cursor, "queue_order", columns, len(chosen))


def open_items(session: Session, image_ids: NDArray[np.int64], now: datetime) -> None:
    """A pending queue item for each of ``image_ids`` that has none (others keep their state)."""
    if len(image_ids) == 0:
        return
    if _is_postgres(session):
        # One statement, the ids as one array parameter; the anti-join makes
        # a rescoring, where every item exists, insert (and key-check) nothing.
        session.execute(
            text(
                "INSERT INTO queue_items (image_id, status, updated_at)"
                " SELECT t.i, :status, :now FROM unnest(CAST(:ids AS integer[])) AS t(i)"
                " WHERE NOT EXISTS (SELECT 1 FROM queue_items q WHERE q.image_id = t.i)"
                " ON CONFLICT (image_id) DO NOTHING"
            ),
            {"status": QueueStatus.PENDING.value, "now": now, "ids": image_ids.tolist()},
        )
        return
    session.connection().execute(
        sqlite_insert(QueueItem).on_conflict_do_nothing(index_elements=["image_id"]),
        [
            {"image_id": int(i), "status": QueueStatus.PENDING.value, "updated_at": now}
            for i in image_ids.tolist()
        ],
    )


def mark_ranked(session: Session, model_version_id: int, now: datetime) -> None:
    """The version's ranking covers the whole queue: from this commit on, it orders it."""
    session.execute(
        update(ModelVersion).where(ModelVersion.id == model_version_id).values(queue_ranked_at=now)
    )


def _optional(value: float) -> float | None:
    return None if np.isnan(value) else float(value)


def _nullable_float(name: str, values: NDArray[np.float64]) -> pgcopy.Column:
    null = np.isnan(values)
    return pgcopy.Column(name, "float8", np.where(null, 0.0, values), null=null)
