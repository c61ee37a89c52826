"""Embeddings, model versions, per-(image, model) scores, the review queue and its outbox."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ARRAY,
    JSON,
    REAL,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from curation.db import Base
from curation.models._columns import created_at_column, in_list


class EmbeddingSpace(Base):
    """One backbone with one set of weights: embeddings are comparable only within a space."""

    __tablename__ = "embedding_spaces"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(200), unique=True, nullable=False)
    backbone: Mapped[str] = mapped_column(String(64), nullable=False)
    weights_id: Mapped[str] = mapped_column(String(100), nullable=False)
    dim: Mapped[int] = mapped_column(Integer, nullable=False)
    created_at: Mapped[datetime] = created_at_column()


class ImageEmbedding(Base):
    """Where an image's vector lies in its space's float16 file.

    ``crop_key`` is "full" or the bounding box it was cropped to, so a new box
    means a new embedding and the uncropped one is kept.
    """

    __tablename__ = "image_embeddings"
    __table_args__ = (UniqueConstraint("space_id", "image_id", "crop_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    space_id: Mapped[int] = mapped_column(ForeignKey("embedding_spaces.id"), nullable=False)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id"), index=True, nullable=False)
    crop_key: Mapped[str] = mapped_column(String(80), nullable=False)
    row: Mapped[int] = mapped_column(Integer, nullable=False)
    created_at: Mapped[datetime] = created_at_column()


class ModelStatus(enum.StrEnum):
    CANDIDATE = "candidate"
    CHAMPION = "champion"
    RETIRED = "retired"


class ModelVersion(Base):
    """A classifier head over one embedding space, with the classes of its outputs in order."""

    __tablename__ = "model_versions"
    __table_args__ = (
        CheckConstraint(in_list("status", [s.value for s in ModelStatus]), name="status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    space_id: Mapped[int] = mapped_column(ForeignKey("embedding_spaces.id"), nullable=False)
    class_ids: Mapped[list[int]] = mapped_column(JSON, nullable=False)
    artifact_key: Mapped[str] = mapped_column(String(200), nullable=False)
    seed: Mapped[int] = mapped_column(Integer, nullable=False)
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    status: Mapped[str] = mapped_column(String(10), nullable=False)
    created_at: Mapped[datetime] = created_at_column()
    # Set by the transaction that wrote this version's ranking of the whole
    # queue: the newest ranked version orders the queue.
    queue_ranked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The dataset version it was trained on (None: trained from the current
    # labels), and the run that trained it. No foreign key to training_runs:
    # the run points here with one, and a cycle of keys would complicate
    # every create and drop.
    dataset_version_id: Mapped[int | None] = mapped_column(ForeignKey("dataset_versions.id"))
    training_run_id: Mapped[int | None] = mapped_column(Integer)
    # Why its status last changed (a promotion's gate summary, a rollback's reason).
    status_reason: Mapped[str | None] = mapped_column(Text)


# Lists of numbers: native arrays on PostgreSQL (fixed-width in binary COPY,
# so a million score rows are written as a few numpy buffers), JSON elsewhere.
IntList = JSON().with_variant(ARRAY(Integer), "postgresql")
RealList = JSON().with_variant(ARRAY(REAL), "postgresql")


class ImageScore(Base):
    """Scores of one image under one model version; the key makes rescoring idempotent.

    No foreign keys, on purpose: scores are derived data written a million
    rows at a time, and PostgreSQL checks a foreign key with a trigger per row
    (19 s per million rows for the two keys here, measured). Rows are written
    only for images read from ``image_embeddings`` (whose keys are checked)
    and for a model version read in the same run; images and model versions
    are never deleted.
    """

    __tablename__ = "image_scores"

    model_version_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    image_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    top_classes: Mapped[list[int]] = mapped_column(IntList, nullable=False)
    top_probabilities: Mapped[list[float]] = mapped_column(RealList, nullable=False)
    entropy: Mapped[float] = mapped_column(Float, nullable=False)
    margin: Mapped[float] = mapped_column(Float, nullable=False)
    least_confidence: Mapped[float] = mapped_column(Float, nullable=False)
    novelty: Mapped[float] = mapped_column(Float, nullable=False)
    reporter_disagreement: Mapped[float | None] = mapped_column(Float)
    label_issue: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = created_at_column()


class QueueStatus(enum.StrEnum):
    PENDING = "pending"
    CLAIMED = "claimed"
    HELD = "held"  # out in Label Studio
    DONE = "done"
    DISPUTED = "disputed"  # two reviewers disagreed: an admin decides


class QueueItem(Base):
    """One image that needs a human: its state and who holds it.

    Its place in line is in ``queue_order`` (under the current ranking), and
    the reasons are rendered from its scores when read.
    """

    __tablename__ = "queue_items"
    __table_args__ = (
        CheckConstraint(in_list("status", [s.value for s in QueueStatus]), name="status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id"), unique=True, nullable=False)
    status: Mapped[str] = mapped_column(String(8), nullable=False)
    claimed_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # 1: first review; 2: a second reviewer must confirm ``first_decision_id``.
    stage: Mapped[int] = mapped_column(Integer, nullable=False, default=1, server_default="1")
    first_decision_id: Mapped[int | None] = mapped_column(Integer)
    first_reviewer_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    updated_at: Mapped[datetime] = created_at_column()


COLD_START_RANKING = 0
# The strategy of items queued before any model (hand-out order: typical, diverse).
COLD_START_STRATEGY = "cold_start"


class QueueOrder(Base):
    """The priority of each queued image under one ranking.

    A ranking is a model version's scoring of the queue (its id), or 0 for
    the cold start before any model. A new model writes a new ranking next to
    the old one (append-only, one COPY) instead of updating a million queue
    rows in place (measured: 21 to 36 s per million on PostgreSQL); it becomes
    current in the transaction that completes it. No foreign keys, for the
    same reason as ``image_scores``.
    """

    __tablename__ = "queue_order"
    __table_args__ = (Index("ix_queue_order_ranking_priority", "ranking", "priority"),)

    ranking: Mapped[int] = mapped_column(Integer, primary_key=True)
    image_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    priority: Mapped[float] = mapped_column(Float, nullable=False)
    strategy: Mapped[str] = mapped_column(String(24), nullable=False)


class JobStatus(enum.StrEnum):
    PENDING = "pending"
    DONE = "done"
    DEAD = "dead"  # failed too often: parked, never blocks its batch


class ScoringJob(Base):
    """The outbox: an image waiting to be embedded and scored.

    Written in the transaction that stores the image, so a task lost with a
    broker restart is found again by the sweeper; attempts and the last error
    park a poison image as dead instead of retrying it forever.
    """

    __tablename__ = "scoring_jobs"
    __table_args__ = (
        CheckConstraint(in_list("status", [s.value for s in JobStatus]), name="status"),
        Index("ix_scoring_jobs_status_enqueued_at", "status", "enqueued_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id"), unique=True, nullable=False)
    status: Mapped[str] = mapped_column(String(8), nullable=False)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    enqueued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = created_at_column()
