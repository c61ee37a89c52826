"""Labels: never overwritten. A new label points at the one it supersedes."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import CheckConstraint, Float, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from curation.db import Base
from curation.models._columns import created_at_column, in_list


class LabelVerdict(enum.StrEnum):
    LANDMARK = "landmark"
    NOT_A_LANDMARK = "not_a_landmark"


class Label(Base):
    __tablename__ = "labels"
    __table_args__ = (
        CheckConstraint(in_list("verdict", [v.value for v in LabelVerdict]), name="verdict"),
        CheckConstraint(
            "(verdict = 'landmark') = (class_id IS NOT NULL)", name="class_iff_landmark"
        ),
        CheckConstraint(
            "(box_x_min IS NULL AND box_y_min IS NULL AND box_x_max IS NULL AND box_y_max IS NULL)"
            " OR (box_x_min >= 0 AND box_y_min >= 0"
            " AND box_x_max > box_x_min AND box_y_max > box_y_min)",
            name="box_complete_and_ordered",
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id"), index=True, nullable=False)
    verdict: Mapped[str] = mapped_column(String(16), nullable=False)
    class_id: Mapped[int | None] = mapped_column(ForeignKey("landmark_classes.id"), index=True)
    # Box corners in pixels of the stored (orientation-corrected) image.
    box_x_min: Mapped[float | None] = mapped_column(Float)
    box_y_min: Mapped[float | None] = mapped_column(Float)
    box_x_max: Mapped[float | None] = mapped_column(Float)
    box_y_max: Mapped[float | None] = mapped_column(Float)
    author_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    # Who or what produced the label when no user did, e.g. "import:wonders7".
    origin: Mapped[str] = mapped_column(String(200), nullable=False)
    supersedes_id: Mapped[int | None] = mapped_column(ForeignKey("labels.id"), unique=True)
    created_at: Mapped[datetime] = created_at_column()

    @property
    def box(self) -> tuple[float, float, float, float] | None:
        if self.box_x_min is None or self.box_y_min is None:
            return None
        assert self.box_x_max is not None and self.box_y_max is not None
        return (self.box_x_min, self.box_y_min, self.box_x_max, self.box_y_max)
