"""Apps that call the REST API: their tokens, and the reports they sent.

A token is ``cur_<prefix>_<secret>``: the prefix (unique, stored plain) finds
the row, the secret is stored only as a scrypt hash. ``api_reports`` is the
app-facing side of a report: its id is what the app polls, and it remembers
which app and which of the app's users sent it, so reporter reliability and
the flood throttle are counted per (app, reporter).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, Float, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from curation.db import Base
from curation.models._columns import created_at_column


class ApiToken(Base):
    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True, nullable=False)
    app: Mapped[str] = mapped_column(String(100), nullable=False)
    prefix: Mapped[str] = mapped_column(String(16), unique=True, nullable=False)
    secret_hash: Mapped[str] = mapped_column(String(255), nullable=False)
    created_by: Mapped[str] = mapped_column(String(80), nullable=False)
    created_at: Mapped[datetime] = created_at_column()
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ApiReport(Base):
    """One report received through the API (the image source holds the claim itself)."""

    __tablename__ = "api_reports"
    __table_args__ = (
        Index("ix_api_reports_app_reporter_id_created_at", "app", "reporter_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_id: Mapped[int] = mapped_column(ForeignKey("api_tokens.id"), nullable=False)
    app: Mapped[str] = mapped_column(String(100), nullable=False)
    reporter_id: Mapped[str | None] = mapped_column(String(128))
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id"), index=True, nullable=False)
    source_id: Mapped[int] = mapped_column(ForeignKey("image_sources.id"), nullable=False)
    claimed_class_id: Mapped[int | None] = mapped_column(ForeignKey("landmark_classes.id"))
    # The reporter's reliability when the report arrived (it scaled the priority).
    reliability: Mapped[float] = mapped_column(Float, nullable=False)
    created_at: Mapped[datetime] = created_at_column()
