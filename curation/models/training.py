"""Training runs: one row per requested retraining, and the single-run lock."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    String,
    Text,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from curation.db import Base
from curation.models._columns import created_at_column, in_list


class RunStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class RunTrigger(enum.StrEnum):
    MANUAL = "manual"
    SCHEDULE = "schedule"
    LABELS = "labels"
    CLASS_ACTIVATED = "class_activated"


ACTIVE_STATUSES = (RunStatus.QUEUED.value, RunStatus.RUNNING.value)
_ACTIVE = in_list("status", list(ACTIVE_STATUSES))


class TrainingRun(Base):
    """One retraining: requested, queued, running (with a heartbeat), then finished.

    The partial unique index on ``single_run_slot`` (always 1) admits at most
    one row whose status is queued or running: the database itself is the
    single-run lock, on PostgreSQL and SQLite alike. (A column rather than a
    constant expression: SQLite cannot reflect an expression index, so
    ``alembic check`` and batch-mode table copies would not see it.) A
    trigger that arrives while a run is queued or running is folded into it
    (``coalesced`` counts them).
    """

    __tablename__ = "training_runs"
    __table_args__ = (
        CheckConstraint(in_list("status", [s.value for s in RunStatus]), name="status"),
        CheckConstraint(in_list("trigger", [t.value for t in RunTrigger]), name="trigger"),
        CheckConstraint("progress >= 0 AND progress <= 1", name="progress"),
        CheckConstraint("single_run_slot = 1", name="single_run_slot"),
        Index(
            "uq_training_runs_one_active",
            "single_run_slot",
            unique=True,
            postgresql_where=text(_ACTIVE),
            sqlite_where=text(_ACTIVE),
        ),
        Index("ix_training_runs_status_id", "status", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # None until the run starts when "the latest version" was asked for.
    dataset_version_id: Mapped[int | None] = mapped_column(ForeignKey("dataset_versions.id"))
    status: Mapped[str] = mapped_column(String(10), nullable=False)
    trigger: Mapped[str] = mapped_column(String(16), nullable=False)
    requested_by: Mapped[str] = mapped_column(String(200), nullable=False)
    progress: Mapped[float] = mapped_column(Float, nullable=False, default=0.0)
    progress_message: Mapped[str | None] = mapped_column(Text)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    error: Mapped[str | None] = mapped_column(Text)
    model_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))
    # Triggers folded into this run after it was requested.
    coalesced: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    created_at: Mapped[datetime] = created_at_column()
    single_run_slot: Mapped[int] = mapped_column(
        SmallInteger, nullable=False, default=1, server_default="1"
    )
