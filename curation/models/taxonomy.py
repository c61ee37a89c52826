"""Landmark classes and their names in several languages."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import CheckConstraint, Float, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from curation.db import Base
from curation.models._columns import created_at_column, in_list


class ClassStatus(enum.StrEnum):
    PROPOSED = "proposed"
    ACTIVE = "active"
    RETIRED = "retired"


class LandmarkClass(Base):
    __tablename__ = "landmark_classes"
    __table_args__ = (
        CheckConstraint(in_list("status", [s.value for s in ClassStatus]), name="status"),
        CheckConstraint("latitude IS NULL OR (latitude BETWEEN -90 AND 90)", name="latitude"),
        CheckConstraint("longitude IS NULL OR (longitude BETWEEN -180 AND 180)", name="longitude"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    slug: Mapped[str] = mapped_column(String(120), unique=True, nullable=False)
    display_name: Mapped[str] = mapped_column(String(200), nullable=False)
    status: Mapped[str] = mapped_column(String(10), nullable=False)
    latitude: Mapped[float | None] = mapped_column(Float)
    longitude: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = created_at_column()

    aliases: Mapped[list[ClassAlias]] = relationship(
        back_populates="landmark_class", order_by="ClassAlias.id", cascade="all, delete-orphan"
    )


class ClassAlias(Base):
    """A name of a class in one language; ``search_key`` is its accent- and space-folded form."""

    __tablename__ = "class_aliases"
    __table_args__ = (UniqueConstraint("class_id", "language", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    class_id: Mapped[int] = mapped_column(
        ForeignKey("landmark_classes.id"), index=True, nullable=False
    )
    language: Mapped[str] = mapped_column(String(16), nullable=False)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    search_key: Mapped[str] = mapped_column(String(200), index=True, nullable=False)

    landmark_class: Mapped[LandmarkClass] = relationship(back_populates="aliases")
