"""The Celery app, built from the same settings as everything else.

Importing this module starts nothing: no database connection, no app context.
"""

from __future__ import annotations

from celery import Celery
from celery.schedules import crontab

from curation.settings import load_settings


def make_celery() -> Celery:
    settings = load_settings()
    app = Celery("curation", include=["workers.tasks"])
    app.conf.update(
        broker_url=settings.broker_url,
        broker_transport_options=settings.broker_transport_options,
        broker_connection_retry_on_startup=True,
        result_backend=settings.result_backend,
        result_expires=3600,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue="default",
        task_routes={
            "curation.scoring.*": {"queue": "scoring"},
            "curation.training.*": {"queue": "training"},
        },
        task_serializer="json",
        accept_content=["json"],
        timezone="UTC",
        beat_schedule={
            "sweep-scoring-outbox": {
                "task": "curation.scoring.sweep_outbox",
                "schedule": 30.0,
            },
            "collect-orphan-files": {
                "task": "curation.store.collect_orphans",
                "schedule": 3600.0,
            },
            "prune-queue-rankings": {
                "task": "curation.queue.prune_rankings",
                "schedule": 3600.0,
            },
            # On the quarter hours, the buckets of curation.dashboard.SNAPSHOT_EVERY
            # (an interval would drift across them); a tick left waiting past
            # the next one is dropped, the next one measures anew.
            "record-queue-snapshot": {
                "task": "curation.dashboard.record_queue_snapshot",
                "schedule": crontab(minute="*/15"),
                "options": {"expires": 900},
            },
        },
    )
    return app


celery_app = make_celery()
