"""Stored images and their near-duplicate groups."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import BigInteger, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from curation.db import Base
from curation.models._columns import created_at_column

if TYPE_CHECKING:
    from curation.models.sources import ImageSource


class NearDuplicateGroup(Base):
    """Images whose perceptual hashes are close; a split keeps a group on one side."""

    __tablename__ = "near_duplicate_groups"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[datetime] = created_at_column()


class Image(Base):
    """One stored image, identified by the SHA-256 of the bytes it arrived as."""

    __tablename__ = "images"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    # 64-bit DCT perceptual hash stored as a signed BIGINT (same bits).
    phash: Mapped[int] = mapped_column(BigInteger, nullable=False)
    width: Mapped[int] = mapped_column(Integer, nullable=False)
    height: Mapped[int] = mapped_column(Integer, nullable=False)
    format: Mapped[str] = mapped_column(String(8), nullable=False)
    byte_size: Mapped[int] = mapped_column(Integer, nullable=False)
    storage_key: Mapped[str] = mapped_column(String(200), unique=True, nullable=False)
    stored_format: Mapped[str] = mapped_column(String(8), nullable=False)
    group_id: Mapped[int] = mapped_column(
        ForeignKey("near_duplicate_groups.id"), index=True, nullable=False
    )
    created_at: Mapped[datetime] = created_at_column()

    group: Mapped[NearDuplicateGroup] = relationship()
    sources: Mapped[list[ImageSource]] = relationship(
        back_populates="image", order_by="ImageSource.id"
    )
