"""What the dashboard keeps: the queue's size by reason, measured every few minutes.

The queue itself holds only its present; these rows are its history.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from curation.db import Base
from curation.models.review import ReviewDecision


class QueueSnapshot(Base):
    """How many queued items one reason held at one time.

    ``taken_at`` is the start of the time bucket the count was measured in
    (UTC); the key on (``taken_at``, ``reason``) makes a second measurement in
    the same bucket (a beat task delivered twice) write nothing. Every known
    reason gets a row, zeros included, so an empty queue reads as zero and a
    missing bucket as "not measured". ``ranking`` is the ranking that ordered
    the queue then (a model version id, 0 for the cold start): a change of
    ranking explains a jump between reasons.
    """

    __tablename__ = "queue_snapshots"
    __table_args__ = (UniqueConstraint("taken_at", "reason"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    taken_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    reason: Mapped[str] = mapped_column(String(24), nullable=False)
    ranking: Mapped[int] = mapped_column(Integer, nullable=False)
    pending: Mapped[int] = mapped_column(Integer, nullable=False)
    claimed: Mapped[int] = mapped_column(Integer, nullable=False)
    held: Mapped[int] = mapped_column(Integer, nullable=False)
    disputed: Mapped[int] = mapped_column(Integer, nullable=False)


# The decisions-per-hour chart reads a window of recent decisions; without
# this index it scans every decision ever made. Declared beside the query's
# other storage rather than in review.py, which has no use for it.
Index("ix_review_decisions_created_at", ReviewDecision.created_at)
