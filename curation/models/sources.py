"""Where an image came from: a user report, a crawl, or an imported labelled set.

An exact duplicate is one image with several sources. ``identity_key`` is a
hash of what identifies the source, so ingesting the same input twice adds
nothing the second time.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import CheckConstraint, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from curation.db import Base
from curation.models._columns import created_at_column, in_list

if TYPE_CHECKING:
    from curation.models.images import Image


class SourceKind(enum.StrEnum):
    REPORT = "report"
    CRAWL = "crawl"
    IMPORT = "import"


class ImageSource(Base):
    __tablename__ = "image_sources"
    __table_args__ = (
        UniqueConstraint("image_id", "identity_key"),
        CheckConstraint(in_list("kind", [k.value for k in SourceKind]), name="kind"),
        CheckConstraint(
            "kind != 'report' OR claimed_class_name IS NOT NULL", name="report_has_claim"
        ),
        CheckConstraint("kind != 'crawl' OR crawler IS NOT NULL", name="crawl_has_crawler"),
        CheckConstraint("kind != 'import' OR dataset_name IS NOT NULL", name="import_has_dataset"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id"), index=True, nullable=False)
    kind: Mapped[str] = mapped_column(String(8), nullable=False)
    identity_key: Mapped[str] = mapped_column(String(64), nullable=False)
    original_filename: Mapped[str | None] = mapped_column(String(255))
    # A user's "wrong prediction" report.
    reporter_id: Mapped[str | None] = mapped_column(String(128), index=True)
    claimed_class_name: Mapped[str | None] = mapped_column(String(200))
    claimed_class_id: Mapped[int | None] = mapped_column(ForeignKey("landmark_classes.id"))
    predicted_class_name: Mapped[str | None] = mapped_column(String(200))
    predicted_class_id: Mapped[int | None] = mapped_column(ForeignKey("landmark_classes.id"))
    note: Mapped[str | None] = mapped_column(Text)
    # A crawl.
    crawler: Mapped[str | None] = mapped_column(String(100))
    source_url: Mapped[str | None] = mapped_column(String(2048))
    # An import of a labelled set.
    dataset_name: Mapped[str | None] = mapped_column(String(200))
    original_path: Mapped[str | None] = mapped_column(String(1024))
    original_split: Mapped[str | None] = mapped_column(String(16))
    original_class_name: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = created_at_column()

    image: Mapped[Image] = relationship(back_populates="sources")
