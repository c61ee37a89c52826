"""Thin tasks: take ids or plain values, open a session, call one domain function.

Queues, time limits, retries and acknowledgement are declared here, where
each task is defined. Every task is idempotent, so at-least-once delivery
(``acks_late``, a redelivery after a killed worker) never doubles a result.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from curation.learning import outbox
from curation.store.gc import DEFAULT_GRACE_SECONDS, collect_orphans
from workers.app import celery_app
from workers.runtime import worker_backbone, worker_runtime


@celery_app.task(name="curation.store.collect_orphans", acks_late=True, time_limit=3600)
def collect_orphan_files(grace_seconds: float = DEFAULT_GRACE_SECONDS) -> dict[str, Any]:
    """Remove stored files left behind by a crash between writing and committing."""
    runtime = worker_runtime()
    with runtime.factory() as session:
        removed = collect_orphans(session, runtime.store, grace_seconds=grace_seconds)
    return {"removed": len(removed)}


@celery_app.task(name="curation.system.ping", acks_late=True, time_limit=60)
def ping() -> dict[str, Any]:
    """Round trip through the broker and the database, for health checks."""
    from sqlalchemy import func, select

    from curation.models import Image

    runtime = worker_runtime()
    with runtime.factory() as session:
        images = session.scalar(select(func.count()).select_from(Image)) or 0
    return {"ok": True, "images": images}


@celery_app.task(
    name="curation.scoring.score_batch",
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=(OSError,),
    retry_backoff=True,
    retry_backoff_max=300,
    max_retries=5,
    soft_time_limit=1800,
    time_limit=1900,
)
def score_batch(image_ids: list[int]) -> dict[str, Any]:
    """Embed, score and queue a batch; a poison image is parked, the rest go on."""
    from curation.learning.pipeline import process_batch
    from curation.learning.priority import Strategy

    runtime = worker_runtime()
    outcome = process_batch(
        runtime,
        worker_backbone(),
        image_ids,
        strategy=Strategy(runtime.settings.queue_strategy),
        random_share=runtime.settings.queue_random_share,
    )
    return {
        "embedded": outcome.embedded,
        "scored": outcome.scored,
        "failed": len(outcome.failed),
        "dead": outcome.dead,
    }


@celery_app.task(name="curation.scoring.sweep_outbox", acks_late=True, time_limit=300)
def sweep_outbox(limit: int = 5000) -> dict[str, Any]:
    """Send pending scoring jobs: new ones, and those whose task was lost."""
    runtime = worker_runtime()
    settings = runtime.settings
    with runtime.factory() as session, session.begin():
        due = outbox.claim_due(
            session, limit=limit, stale_after=timedelta(seconds=settings.scoring_stale_seconds)
        )
    # Sent after the commit that stamped them: a worker never looks for a
    # job whose claim is not visible yet.
    size = settings.scoring_batch_size
    for start in range(0, len(due), size):
        score_batch.delay(due[start : start + size])
    return {"sent": len(due)}


@celery_app.task(name="curation.queue.prune_rankings", acks_late=True, time_limit=1800)
def prune_queue_rankings() -> dict[str, Any]:
    """Drop the rows of queue rankings a newer complete ranking has replaced."""
    from curation.queue import prune_rankings

    runtime = worker_runtime()
    with runtime.factory() as session, session.begin():
        removed = prune_rankings(session)
    return {"removed": removed}


@celery_app.task(name="curation.dashboard.record_queue_snapshot", acks_late=True, time_limit=300)
def snapshot_queue() -> dict[str, Any]:
    """Store the queue's size by reason for the dashboard; once per 15-minute bucket."""
    from datetime import UTC, datetime

    from curation.dashboard import record_queue_snapshot

    runtime = worker_runtime()
    with runtime.factory() as session, session.begin():
        result = record_queue_snapshot(session, datetime.now(UTC))
    return {"taken_at": result.taken_at.isoformat(), "written": result.written}
