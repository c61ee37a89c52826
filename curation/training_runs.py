"""Training runs: request (coalescing), start, heartbeat, finish, fail, cancel, reap.

Domain functions: they take a session and never commit. At most one run is
queued or running at a time, enforced by the database (the partial unique
index of ``training_runs``); a request while one is queued or running is
folded into it. A worker reports progress with :func:`heartbeat` between
epochs, which also tells it whether to stop; :func:`reap_stale` marks a run
whose worker stopped beating as failed, so no crashed run stays "running".
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from curation.exceptions import Conflict, NotFound, RejectedInput
from curation.models import RunStatus, RunTrigger, TrainingRun
from curation.models.training import ACTIVE_STATUSES

FINISHED = (RunStatus.SUCCEEDED.value, RunStatus.FAILED.value, RunStatus.CANCELLED.value)


def get_run(session: Session, run_id: int) -> TrainingRun:
    run = session.get(TrainingRun, run_id)
    if run is None:
        raise NotFound(f"training run {run_id} does not exist")
    return run


def active_run(session: Session) -> TrainingRun | None:
    """The queued or running run, if any."""
    return session.scalars(
        select(TrainingRun).where(TrainingRun.status.in_(ACTIVE_STATUSES))
    ).first()


def list_runs(session: Session, *, limit: int = 50) -> list[TrainingRun]:
    return list(session.scalars(select(TrainingRun).order_by(TrainingRun.id.desc()).limit(limit)))


def _coalesce(session: Session) -> TrainingRun | None:
    # One UPDATE both finds the active run and counts the request: as a write
    # it also takes SQLite's write lock before anything else is read.
    run_id = session.execute(
        update(TrainingRun)
        .where(TrainingRun.status.in_(ACTIVE_STATUSES))
        .values(coalesced=TrainingRun.coalesced + 1)
        .returning(TrainingRun.id)
        .execution_options(synchronize_session=False)
    ).scalar()
    if run_id is None:
        return None
    return session.scalars(
        select(TrainingRun)
        .where(TrainingRun.id == run_id)
        .execution_options(populate_existing=True)
    ).one()


def request_run(
    session: Session,
    *,
    trigger: RunTrigger | str,
    requested_by: str,
    dataset_version_id: int | None = None,
) -> tuple[TrainingRun, bool]:
    """Queue a training run, or fold this request into the queued or running one.

    Returns ``(run, created)``; ``created`` is False when the request was
    coalesced (the run's ``coalesced`` went up by one). Two concurrent
    requests never make two runs: the loser of the insert race hits the
    unique index, and is folded into the winner's run.
    """
    try:
        trigger_value = RunTrigger(trigger).value
    except ValueError:
        raise RejectedInput(
            f"unknown trigger {trigger!r}: use one of {', '.join(t.value for t in RunTrigger)}"
        ) from None
    who = " ".join(requested_by.split())[:200]
    if not who:
        raise RejectedInput("who requests the run must be named")
    existing = _coalesce(session)
    if existing is not None:
        return existing, False
    run = TrainingRun(
        dataset_version_id=dataset_version_id,
        status=RunStatus.QUEUED.value,
        trigger=trigger_value,
        requested_by=who,
        progress=0.0,
        cancel_requested=False,
        coalesced=0,
    )
    try:
        with session.begin_nested():
            session.add(run)
    except IntegrityError:
        # Another transaction queued a run between our UPDATE and INSERT and
        # committed: ours lost the race on the unique index.
        existing = _coalesce(session)
        if existing is None:
            raise
        return existing, False
    return run, True


def start(session: Session, run_id: int, now: datetime) -> TrainingRun:
    """Mark a queued run running (refused for any other status).

    One conditional UPDATE: two workers given the same run (a redelivered
    task) cannot both start it; the second is refused.
    """
    started = session.execute(
        update(TrainingRun)
        .where(TrainingRun.id == run_id, TrainingRun.status == RunStatus.QUEUED.value)
        .values(
            status=RunStatus.RUNNING.value,
            started_at=now,
            heartbeat_at=now,
            progress_message="started",
        )
        .returning(TrainingRun.id)
        .execution_options(synchronize_session=False)
    ).scalar()
    run = get_run(session, run_id)
    session.refresh(run)
    if started is None:
        raise Conflict(f"training run {run_id} is {run.status}, not queued")
    return run


def heartbeat(session: Session, run_id: int, progress: float, message: str, now: datetime) -> bool:
    """Record progress (0 to 1) and a message; return True when the worker must stop.

    The worker must stop when a cancel was requested, or when the run is no
    longer running (reaped as lost, for instance): its result would be
    written for a run that already ended.
    """
    run = get_run(session, run_id)
    if run.status != RunStatus.RUNNING.value:
        return True
    run.progress = min(1.0, max(0.0, float(progress)))
    run.progress_message = message[:2000]
    run.heartbeat_at = now
    session.flush()
    return bool(run.cancel_requested)


def set_dataset_version(session: Session, run_id: int, dataset_version_id: int) -> None:
    """Record which dataset version a run trains on (resolved when it starts)."""
    get_run(session, run_id).dataset_version_id = dataset_version_id


def finish(session: Session, run_id: int, *, model_version_id: int, now: datetime) -> TrainingRun:
    run = _running(session, run_id)
    run.status = RunStatus.SUCCEEDED.value
    run.model_version_id = model_version_id
    run.progress = 1.0
    run.progress_message = "done"
    run.finished_at = now
    session.flush()
    return run


def fail(session: Session, run_id: int, error: str, now: datetime) -> TrainingRun:
    """Mark a queued or running run failed with ``error``; a finished run is left as it is."""
    run = get_run(session, run_id)
    if run.status in FINISHED:
        return run
    run.status = RunStatus.FAILED.value
    run.error = error[:10000]
    run.finished_at = now
    session.flush()
    return run


def cancel_request(session: Session, run_id: int, now: datetime) -> TrainingRun:
    """Cancel a queued run at once; ask a running one to stop at its next heartbeat."""
    run = get_run(session, run_id)
    if run.status == RunStatus.QUEUED.value:
        run.status = RunStatus.CANCELLED.value
        run.cancel_requested = True
        run.finished_at = now
    elif run.status == RunStatus.RUNNING.value:
        run.cancel_requested = True
    else:
        raise Conflict(f"training run {run_id} already ended ({run.status})")
    session.flush()
    return run


def mark_cancelled(session: Session, run_id: int, now: datetime) -> TrainingRun:
    """A running run's worker honoured the cancel request and stopped."""
    run = _running(session, run_id)
    run.status = RunStatus.CANCELLED.value
    run.finished_at = now
    run.progress_message = "cancelled"
    session.flush()
    return run


def reap_stale(session: Session, now: datetime, stale_after: timedelta) -> list[int]:
    """Fail every running run with no heartbeat since ``now - stale_after``; return their ids."""
    cutoff = now - stale_after
    runs = session.scalars(
        select(TrainingRun).where(TrainingRun.status == RunStatus.RUNNING.value)
    ).all()
    reaped = []
    for run in runs:
        last = run.heartbeat_at or run.started_at or run.created_at
        if _aware(last) < _aware(cutoff):
            run.status = RunStatus.FAILED.value
            run.error = f"worker lost (no heartbeat since {_aware(last).isoformat()})"
            run.finished_at = now
            reaped.append(run.id)
    session.flush()
    return reaped


def run_dict(run: TrainingRun) -> dict[str, Any]:
    def iso(value: datetime | None) -> str | None:
        return value.isoformat() if value is not None else None

    return {
        "id": run.id,
        "status": run.status,
        "trigger": run.trigger,
        "requested_by": run.requested_by,
        "dataset_version_id": run.dataset_version_id,
        "progress": run.progress,
        "progress_message": run.progress_message,
        "cancel_requested": run.cancel_requested,
        "coalesced": run.coalesced,
        "model_version_id": run.model_version_id,
        "error": run.error,
        "created_at": iso(run.created_at),
        "started_at": iso(run.started_at),
        "heartbeat_at": iso(run.heartbeat_at),
        "finished_at": iso(run.finished_at),
    }


def _running(session: Session, run_id: int) -> TrainingRun:
    run = get_run(session, run_id)
    if run.status != RunStatus.RUNNING.value:
        raise Conflict(f"training run {run_id} is {run.status}, not running")
    return run


def _aware(value: datetime) -> datetime:
    # SQLite hands back naive datetimes (stored as UTC).
    from datetime import UTC

    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
