"""Thin tasks: take ids or plain values, open a session, call one domain function."""

from __future__ import annotations

from typing import Any

from curation.store.gc import DEFAULT_GRACE_SECONDS, collect_orphans
from workers.app import celery_app
from workers.runtime import worker_runtime


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
