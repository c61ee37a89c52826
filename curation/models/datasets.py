"""Dataset versions: immutable snapshots stored as changes against a parent, and class history.

A version's rows in ``dataset_entries`` are only what differs from its
parent: an added or changed image (its class, box and split) or a removal (a
tombstone, ``class_id`` NULL). The full manifest of a version is its chain
of ancestors folded newest-first; every ``CHECKPOINT_DEPTH`` versions one
stores everything, so reading a version never walks a long chain.

Database triggers (migration 0006) refuse any UPDATE or DELETE of these
three tables: a committed version cannot change, whatever code runs.
``dataset_entries`` has no foreign keys for the reason ``image_scores`` has
none: a snapshot writes up to a million rows by one binary COPY, and the
rows are read from ``labels`` and ``images`` in the same transaction.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    String,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column

from curation.db import Base
from curation.models._columns import created_at_column, in_list


class Split(enum.IntEnum):
    TRAIN = 0
    VALIDATION = 1
    TEST = 2

    @property
    def label(self) -> str:
        return ("train", "validation", "test")[self.value]


class DatasetVersion(Base):
    __tablename__ = "dataset_versions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # v1, v2, ...: what people type; ``id`` is the same number in practice.
    number: Mapped[int] = mapped_column(Integer, unique=True, nullable=False)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("dataset_versions.id"))
    author_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    author: Mapped[str] = mapped_column(String(200), nullable=False)
    message: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = created_at_column()
    # SHA-256 of the canonical manifest (entries by image content hash, and
    # the class list): equal manifests hash equal in any database.
    manifest_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    item_count: Mapped[int] = mapped_column(Integer, nullable=False)
    class_count: Mapped[int] = mapped_column(Integer, nullable=False)
    split_counts: Mapped[dict[str, int]] = mapped_column(JSON, nullable=False)
    # Split ratios and seed the splits were drawn with.
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    # True: this version stores every entry (a checkpoint), not only changes.
    is_full: Mapped[bool] = mapped_column(Boolean, nullable=False)
    # Versions since the last checkpoint (0 for a checkpoint).
    depth: Mapped[int] = mapped_column(Integer, nullable=False)
    # The newest class change this version includes: the diff against the
    # parent lists the changes after the parent's mark, up to this one.
    class_change_mark: Mapped[int] = mapped_column(Integer, nullable=False)


class DatasetEntry(Base):
    __tablename__ = "dataset_entries"
    __table_args__ = (
        CheckConstraint(
            "(class_id IS NULL AND split IS NULL) OR (class_id IS NOT NULL AND split IN (0, 1, 2))",
            name="tombstone_or_entry",
        ),
    )

    version_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    image_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    class_id: Mapped[int | None] = mapped_column(Integer)  # NULL: removed in this version
    box_x_min: Mapped[float | None] = mapped_column(Float)
    box_y_min: Mapped[float | None] = mapped_column(Float)
    box_x_max: Mapped[float | None] = mapped_column(Float)
    box_y_max: Mapped[float | None] = mapped_column(Float)
    split: Mapped[int | None] = mapped_column(SmallInteger)
    # The label the entry came from: who set it and why, for diffs.
    label_id: Mapped[int | None] = mapped_column(Integer)


class DatasetClass(Base):
    """The class list as it stood when a version was taken (all of it, every version)."""

    __tablename__ = "dataset_classes"

    version_id: Mapped[int] = mapped_column(ForeignKey("dataset_versions.id"), primary_key=True)
    class_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    slug: Mapped[str] = mapped_column(String(120), nullable=False)
    display_name: Mapped[str] = mapped_column(String(200), nullable=False)
    status: Mapped[str] = mapped_column(String(10), nullable=False)
    # [[language, name], ...]
    aliases: Mapped[list[list[str]]] = mapped_column(JSON, nullable=False)
    latitude: Mapped[float | None] = mapped_column(Float)
    longitude: Mapped[float | None] = mapped_column(Float)


class ClassChangeKind(enum.StrEnum):
    PROPOSED = "proposed"
    ACTIVATED = "activated"
    RENAMED = "renamed"
    ALIAS_ADDED = "alias_added"
    MERGED = "merged"
    SPLIT = "split"
    RETIRED = "retired"


class ClassChange(Base):
    """One step in a class's life, in order; a dataset diff lists those between two versions."""

    __tablename__ = "class_changes"
    __table_args__ = (
        CheckConstraint(in_list("kind", [k.value for k in ClassChangeKind]), name="kind"),
        Index("ix_class_changes_class_id_id", "class_id", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    class_id: Mapped[int] = mapped_column(ForeignKey("landmark_classes.id"), nullable=False)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    # What changed, e.g. {"from": "Old name", "to": "New name"} or
    # {"into": 12, "labels_moved": 340}.
    details: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    actor: Mapped[str] = mapped_column(String(200), nullable=False)
    reason: Mapped[str] = mapped_column(Text, nullable=False, default="")
    created_at: Mapped[datetime] = created_at_column()
