"""The Celery app, built from the same settings as everything else.

Importing this module starts nothing: no database connection, no app context.
"""

from __future__ import annotations

from celery import Celery
from celery.schedules import crontab

from curation.settings import load_settings


def _crontab(fields: str) -> crontab:
    """A celery crontab from the five fields of a crontab line (celery orders them otherwise)."""
    minute, hour, day_of_month, month_of_year, day_of_week = fields.split()
    return crontab(
        minute=minute,
        hour=hour,
        day_of_month=day_of_month,
        month_of_year=month_of_year,
        day_of_week=day_of_week,
    )


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
            # Retraining: event triggers checked every five minutes, and the
            # scheduled run (CURATION_RETRAIN_SCHEDULE, nightly by default, or
            # every CURATION_RETRAIN_EVERY_SECONDS). Both only request a run
            # (default queue); the run itself goes to the training queue.
            "check-retraining-triggers": {
                "task": "curation.retraining.check_triggers",
                "schedule": 300.0,
                "options": {"expires": 300},
            },
            "scheduled-retraining": {
                "task": "curation.retraining.scheduled",
                "schedule": float(settings.retrain_every_seconds)
                if settings.retrain_every_seconds
                else _crontab(settings.retrain_schedule),
                "options": {"expires": 3600},
            },
            "record-queue-snapshot": {
                "task": "curation.dashboard.record_queue_snapshot",
                "schedule": crontab(minute="*/15"),
                "options": {"expires": 900},
            },
            # Label Studio sends each webhook once, with no retry: pull what
            # is still out, and put items whose hold ran out back in line.
            "reconcile-labelstudio": {
                "task": "curation.labelstudio.reconcile",
                "schedule": float(settings.labelstudio_reconcile_seconds),
                "options": {"expires": float(settings.labelstudio_reconcile_seconds)},
            },
        },
    )
    return app


celery_app = make_celery()
