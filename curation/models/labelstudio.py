"""What was sent to Label Studio and what came back: the two-way sync's memory.

A task row maps one Label Studio task to the image (and queue item) it shows;
an annotation row maps one Label Studio annotation to the label it became.
The unique annotation key is what makes a pull idempotent: an annotation that
has a row was applied already, however often it is read again.
"""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import CheckConstraint, DateTime, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from curation.db import Base
from curation.models._columns import created_at_column, in_list


class TaskState(enum.StrEnum):
    OUT = "out"  # sent; its queue item is held out of the web queue
    RETURNED = "returned"  # an annotation came back
    TIMED_OUT = "timed_out"  # nothing came back in time: the item went back in line


class LabelStudioTask(Base):
    __tablename__ = "labelstudio_tasks"
    __table_args__ = (
        UniqueConstraint("ls_project_id", "ls_task_id"),
        CheckConstraint(in_list("state", [s.value for s in TaskState]), name="state"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_title: Mapped[str] = mapped_column(String(200), nullable=False)
    ls_project_id: Mapped[int] = mapped_column(Integer, nullable=False)
    ls_task_id: Mapped[int] = mapped_column(Integer, nullable=False)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id"), index=True, nullable=False)
    state: Mapped[str] = mapped_column(String(10), nullable=False, index=True)
    sent_at: Mapped[datetime] = created_at_column()
    hold_until: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    returned_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class LabelStudioAnnotation(Base):
    __tablename__ = "labelstudio_annotations"
    __table_args__ = (UniqueConstraint("ls_project_id", "ls_annotation_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ls_project_id: Mapped[int] = mapped_column(Integer, nullable=False)
    ls_annotation_id: Mapped[int] = mapped_column(Integer, nullable=False)
    task_id: Mapped[int] = mapped_column(
        ForeignKey("labelstudio_tasks.id"), index=True, nullable=False
    )
    # None where the annotation made no label (cancelled, or nothing chosen).
    label_id: Mapped[int | None] = mapped_column(ForeignKey("labels.id"), unique=True)
    # The Label Studio user who annotated (their e-mail, or "user <id>").
    ls_user: Mapped[str] = mapped_column(String(254), nullable=False)
    outcome: Mapped[str] = mapped_column(String(200), nullable=False)
    pulled_at: Mapped[datetime] = created_at_column()
