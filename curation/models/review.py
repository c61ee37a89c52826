"""Reviewers' decisions on queue items: what was decided, by whom, and how to take it back."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, CheckConstraint, DateTime, Float, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from curation.db import Base
from curation.models._columns import created_at_column, in_list


class DecisionAction(enum.StrEnum):
    ACCEPT = "accept"  # the model's suggestion
    LABEL = "label"  # a class the reviewer picked
    NOT_LANDMARK = "not_landmark"
    PROPOSE = "propose"  # a new class, named from this image
    SKIP = "skip"


class DecisionOutcome(enum.StrEnum):
    LABELLED = "labelled"
    SECOND_REVIEW = "second_review"  # waits for a second reviewer
    AGREED = "agreed"  # a second reviewer confirmed: labelled
    DISPUTED = "disputed"  # a second reviewer disagreed: an admin decides
    PROPOSED = "proposed"  # labelled with a newly proposed class
    SKIPPED = "skipped"


class ReviewDecision(Base):
    """One decision on one queue item.

    ``label_ids`` are the labels it wrote (the item's image, then the
    near-duplicates it was applied to); ``restore`` holds what an undo puts
    back (the queue place, the item's stage). Undone decisions stay, marked.
    """

    __tablename__ = "review_decisions"
    __table_args__ = (
        CheckConstraint(in_list("action", [a.value for a in DecisionAction]), name="action"),
        CheckConstraint(in_list("outcome", [o.value for o in DecisionOutcome]), name="outcome"),
        Index("ix_review_decisions_reviewer_id_id", "reviewer_id", "id"),
        Index("ix_review_decisions_item_id", "item_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("queue_items.id"), nullable=False)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id"), nullable=False)
    reviewer_id: Mapped[int] = mapped_column(ForeignKey("users.id"), nullable=False)
    stage: Mapped[int] = mapped_column(Integer, nullable=False)
    action: Mapped[str] = mapped_column(String(16), nullable=False)
    class_id: Mapped[int | None] = mapped_column(ForeignKey("landmark_classes.id"))
    box_x_min: Mapped[float | None] = mapped_column(Float)
    box_y_min: Mapped[float | None] = mapped_column(Float)
    box_x_max: Mapped[float | None] = mapped_column(Float)
    box_y_max: Mapped[float | None] = mapped_column(Float)
    outcome: Mapped[str] = mapped_column(String(16), nullable=False)
    label_ids: Mapped[list[int]] = mapped_column(JSON, nullable=False, default=list)
    restore: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    undone_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = created_at_column()

    @property
    def box(self) -> tuple[float, float, float, float] | None:
        if self.box_x_min is None or self.box_y_min is None:
            return None
        assert self.box_x_max is not None and self.box_y_max is not None
        return (self.box_x_min, self.box_y_min, self.box_x_max, self.box_y_max)
