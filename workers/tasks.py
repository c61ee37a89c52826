"""Thin tasks: take ids or plain values, open a session, call one domain function.

Queues, time limits, retries and acknowledgement are declared here, where
each task is defined. Every task is idempotent, so at-least-once delivery
(``acks_late``, a redelivery after a killed worker) never doubles a result.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from curation.learning import outbox
from curation.store.gc import DEFAULT_GRACE_SECONDS, collect_everything
from workers.app import celery_app
from workers.runtime import worker_backbone, worker_runtime

# Registered on this app alone. Celery's default (shared) also hands each task
# to every app built later, so an app made after this module is re-imported
# (the tests do) would hold the first import's functions under these names.
task = partial(celery_app.task, shared=False)


@task(name="curation.store.collect_orphans", acks_late=True, time_limit=3600)
def collect_orphan_files(grace_seconds: float = DEFAULT_GRACE_SECONDS) -> dict[str, Any]:
    """Remove stored files left behind by a crash between writing and committing, and
    what a fine-tuning run killed outright left (a half-filled space, its classifier)."""
    runtime = worker_runtime()
    removed, spaces = collect_everything(
        runtime.factory, runtime.store, runtime.settings.data_dir, grace_seconds=grace_seconds
    )
    return {"removed": len(removed), "fine_tuning_leftovers": spaces}


@task(name="curation.system.ping", acks_late=True, time_limit=60)
def ping() -> dict[str, Any]:
    """Round trip through the broker and the database, for health checks."""
    from sqlalchemy import func, select

    from curation.models import Image

    runtime = worker_runtime()
    with runtime.factory() as session:
        images = session.scalar(select(func.count()).select_from(Image)) or 0
    return {"ok": True, "images": images}


@task(
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


@task(name="curation.scoring.sweep_outbox", acks_late=True, time_limit=300)
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


@task(name="curation.queue.prune_rankings", acks_late=True, time_limit=1800)
def prune_queue_rankings() -> dict[str, Any]:
    """Drop the rows of queue rankings a newer complete ranking has replaced."""
    from curation.queue import prune_rankings

    runtime = worker_runtime()
    with runtime.factory() as session, session.begin():
        removed = prune_rankings(session)
    return {"removed": removed}


@task(name="curation.dashboard.record_queue_snapshot", acks_late=True, time_limit=300)
def snapshot_queue() -> dict[str, Any]:
    """Store the queue's size by reason for the dashboard; once per 15-minute bucket."""
    from datetime import UTC, datetime

    from curation.dashboard import record_queue_snapshot

    runtime = worker_runtime()
    with runtime.factory() as session, session.begin():
        result = record_queue_snapshot(session, datetime.now(UTC))
    return {"taken_at": result.taken_at.isoformat(), "written": result.written}


# --- retraining -----------------------------------------------------------------------
# The single-run rule is the database's (training_runs admits one queued or
# running run): a second beat, a second worker or a redelivered task folds
# into the run that holds the slot, and finds nothing to do.


def _send_after_commit(run_id: int | None) -> None:
    # Called after the commit that queued the run: the worker never looks
    # for a run that is not visible yet.
    if run_id is not None:
        retrain.delay(run_id)


@task(name="curation.retraining.check_triggers", acks_late=True, time_limit=300)
def check_retraining_triggers() -> dict[str, Any]:
    """Reap lost runs; queue a run if enough labels came in or a class became active."""
    from datetime import UTC, datetime

    from datasets.retraining import request_if_due

    runtime = worker_runtime()
    with runtime.factory() as session, session.begin():
        check, run = request_if_due(session, runtime.settings, datetime.now(UTC))
        run_id = None if run is None else run.id
    _send_after_commit(run_id)
    return check.as_dict() | {"queued_run": run_id}


@task(name="curation.retraining.scheduled", acks_late=True, time_limit=300)
def scheduled_retraining() -> dict[str, Any]:
    """The scheduled run (nightly by default), folded into one already queued or running."""
    from datetime import UTC, datetime

    from datasets.retraining import request_scheduled

    runtime = worker_runtime()
    with runtime.factory() as session, session.begin():
        run = request_scheduled(session, runtime.settings, datetime.now(UTC))
        run_id = None if run is None else run.id
    _send_after_commit(run_id)
    return {"queued_run": run_id}


@task(
    name="curation.training.retrain",
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=6 * 3600,
    time_limit=6 * 3600 + 300,
)
def retrain(run_id: int) -> dict[str, Any]:
    """Snapshot, train, gate, promote and rescore for queued run ``run_id``.

    Whatever goes wrong, the run ends failed with the error (the training
    code records its own failures; this catches what comes before it), so the
    single-run slot is never held by a run nobody is working on.
    """
    from datetime import UTC, datetime

    from curation import training_runs
    from curation.learning.backbones import configured_space_key
    from curation.learning.scoring import LearningPaths
    from datasets.retraining import run_retraining

    runtime = worker_runtime()
    settings = runtime.settings
    try:
        outcome = run_retraining(
            runtime.factory,
            LearningPaths.under(settings.data_dir),
            settings,
            run_id,
            space_key=configured_space_key(settings.backbone, settings.backbone_weights),
        )
    except Exception as error:
        with runtime.factory() as session, session.begin():
            training_runs.fail(
                session, run_id, f"{type(error).__name__}: {error}", datetime.now(UTC)
            )
        raise
    if outcome is None:
        return {"run": run_id, "skipped": "not queued (another delivery or worker has it)"}
    return {
        "run": run_id,
        "model_version": outcome.model_version_id,
        "promoted": outcome.promoted,
    }


@task(
    name="curation.training.rescore",
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=3600,
    time_limit=3900,
)
def rescore(model_version_id: int) -> dict[str, Any]:
    """Rescore every cached embedding with ``model_version_id``, sent after the commit
    that promoted it (or rolled back to it) on the web.

    Skipped when the model is no longer the champion by the time this runs: a
    later promotion sent its own rescore, which must not be overwritten.
    """
    from curation import registry
    from curation.learning.priority import Strategy
    from curation.learning.scoring import LearningPaths

    runtime = worker_runtime()
    settings = runtime.settings
    with runtime.factory() as session:
        champion = registry.current_champion(session)
    if champion is None or champion.id != model_version_id:
        return {"model_version": model_version_id, "skipped": "no longer the champion"}
    rescored = registry.rescore(
        runtime.factory,
        LearningPaths.under(settings.data_dir),
        model_version_id,
        strategy=Strategy(settings.queue_strategy),
        random_share=settings.queue_random_share,
    )
    return {"model_version": model_version_id, "rescored": rescored}


@task(
    name="curation.labelstudio.pull_task",
    acks_late=True,
    autoretry_for=(OSError,),
    retry_backoff=True,
    max_retries=5,
    time_limit=300,
)
def labelstudio_pull_task(task_id: int) -> dict[str, Any]:
    """Pull one Label Studio task's annotations (a webhook named it); idempotent."""
    from curation.labelstudio.client import connect
    from curation.labelstudio.sync import pull_task

    runtime = worker_runtime()
    return pull_task(runtime.factory, connect(runtime.settings), task_id).as_dict()


@task(name="curation.labelstudio.reconcile", acks_late=True, time_limit=1800)
def labelstudio_reconcile() -> dict[str, Any]:
    """Pull every project with tasks out and release expired holds (webhooks are not retried)."""
    from curation.labelstudio.client import connect
    from curation.labelstudio.sync import pull, release_timed_out

    runtime = worker_runtime()
    settings = runtime.settings
    if not settings.labelstudio_url or not settings.labelstudio_token:
        with runtime.factory() as session, session.begin():
            released = release_timed_out(session, now=datetime.now(UTC))
        return {"configured": False, "released": released}
    return pull(runtime.factory, connect(settings)).as_dict()
