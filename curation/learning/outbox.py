"""The scoring outbox: which images still need embedding and scoring.

A job is claimed by stamping ``enqueued_at``; a job whose stamp is older
than ``stale_after`` is claimed again, so a task lost with a broker restart
or a killed worker is retried by the sweeper. A job that fails
``max_attempts`` times is parked as dead (the poison image) and reported,
never retried forever, never blocking the rest of its batch.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from curation.models import JobStatus, ScoringJob

MAX_ATTEMPTS = 3


def claim_due(session: Session, *, limit: int, stale_after: timedelta) -> list[int]:
    """Image ids of up to ``limit`` pending jobs never sent or sent too long ago."""
    now = datetime.now(UTC)
    query = (
        select(ScoringJob)
        .where(ScoringJob.status == JobStatus.PENDING.value)
        .where(or_(ScoringJob.enqueued_at.is_(None), ScoringJob.enqueued_at < now - stale_after))
        .order_by(ScoringJob.id)
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    jobs = list(session.scalars(query))
    for job in jobs:
        job.enqueued_at = now
        job.updated_at = now
    return [job.image_id for job in jobs]


def mark_done(session: Session, image_ids: Iterable[int]) -> None:
    ids = list(image_ids)
    if ids:
        session.execute(
            update(ScoringJob)
            .where(ScoringJob.image_id.in_(ids))
            .values(status=JobStatus.DONE.value, last_error=None, updated_at=datetime.now(UTC))
        )


def mark_failed(
    session: Session, failures: dict[int, str], *, max_attempts: int = MAX_ATTEMPTS
) -> list[int]:
    """Count a failed attempt for each image; return those now parked as dead."""
    dead = []
    for job in session.scalars(select(ScoringJob).where(ScoringJob.image_id.in_(list(failures)))):
        job.attempts += 1
        job.last_error = failures[job.image_id]
        job.updated_at = datetime.now(UTC)
        # Leaving enqueued_at set means the sweeper retries after stale_after.
        if job.attempts >= max_attempts:
            job.status = JobStatus.DEAD.value
            dead.append(job.image_id)
    return dead


def pending_count(session: Session) -> int:
    from sqlalchemy import func

    return (
        session.scalar(
            select(func.count())
            .select_from(ScoringJob)
            .where(ScoringJob.status == JobStatus.PENDING.value)
        )
        or 0
    )


def requeue(session: Session, image_ids: Iterable[int]) -> int:
    """Make each image's scoring job pending again (a fresh one where it has none).

    For images a new champion cannot score yet (its embedding space lacks
    them): the sweeper sends them to a worker, which embeds and scores them.
    Attempts restart from zero; returns how many jobs were requeued.
    """
    ids = sorted(set(int(i) for i in image_ids))
    if not ids:
        return 0
    now = datetime.now(UTC)
    have: set[int] = set()
    for start in range(0, len(ids), 5000):
        chunk = ids[start : start + 5000]
        have.update(
            session.scalars(select(ScoringJob.image_id).where(ScoringJob.image_id.in_(chunk)))
        )
        session.execute(
            update(ScoringJob)
            .where(ScoringJob.image_id.in_(chunk))
            .values(
                status=JobStatus.PENDING.value,
                enqueued_at=None,
                attempts=0,
                last_error=None,
                updated_at=now,
            )
        )
    session.add_all(
        ScoringJob(image_id=i, status=JobStatus.PENDING.value) for i in ids if i not in have
    )
    session.flush()
    return len(ids)
