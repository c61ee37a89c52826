"""Retraining on a schedule and on events: when to ask for a run, and running one.

The single-run rule lives in the database: ``training_runs`` admits at most
one queued or running run (a partial unique index), and a request while one
is queued or running is folded into it (:func:`curation.training_runs.request_run`).
So two beat processes firing the same schedule, or two workers receiving the
same task (at-least-once delivery), still make one run. A worker that dies
mid-run stops beating; :func:`curation.training_runs.reap_stale` marks the run
failed on the next trigger check, which frees the slot: the lock survives a
crash without anyone cleaning up by hand.

Event triggers, checked by a beat task every few minutes:

* ``class_activated``: a class became active since the last run was requested
  (a snapshot gave a proposed class enough images);
* ``labels``: at least ``retrain_after_labels`` labels were written since then.

Counting from the last *request* rather than the last model keeps a failing
run from being retried in a hot loop: the next one waits for new labels, the
schedule, or a person.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from curation import training_runs
from curation.learning.priority import Strategy
from curation.learning.scoring import LearningPaths
from curation.models import (
    ClassChange,
    ClassChangeKind,
    Label,
    RunStatus,
    RunTrigger,
    TrainingRun,
)
from curation.settings import Settings
from datasets.activation import class_activation
from datasets.training import GateSettings, TrainingOptions, TrainingOutcome, train_and_promote
from datasets.versions import latest_version, snapshot


@dataclass(frozen=True)
class TriggerCheck:
    trigger: RunTrigger | None
    new_labels: int
    classes_activated: int
    since: datetime | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "trigger": None if self.trigger is None else self.trigger.value,
            "new_labels": self.new_labels,
            "classes_activated": self.classes_activated,
            "since": None if self.since is None else self.since.isoformat(),
        }


def due_trigger(session: Session, *, after_labels: int) -> TriggerCheck:
    """Which event, if any, calls for a retraining now."""
    since = session.scalar(select(func.max(TrainingRun.created_at)))
    labels = select(func.count()).select_from(Label)
    activated = (
        select(func.count())
        .select_from(ClassChange)
        .where(ClassChange.kind == ClassChangeKind.ACTIVATED.value)
    )
    if since is not None:
        labels = labels.where(Label.created_at > since)
        activated = activated.where(ClassChange.created_at > since)
    new_labels = int(session.scalar(labels) or 0)
    classes_activated = int(session.scalar(activated) or 0)
    trigger: RunTrigger | None = None
    if classes_activated:
        trigger = RunTrigger.CLASS_ACTIVATED
    elif new_labels >= after_labels:
        trigger = RunTrigger.LABELS
    return TriggerCheck(trigger, new_labels, classes_activated, since)


def request_if_due(
    session: Session, settings: Settings, now: datetime
) -> tuple[TriggerCheck, TrainingRun | None]:
    """Reap lost runs, then request a run if an event calls for one.

    Returns the check and the run to send to a worker: a newly queued run, or
    None when nothing is due or the request was folded into an existing run.
    """
    training_runs.reap_stale(session, now, timedelta(seconds=settings.training_stale_seconds))
    check = due_trigger(session, after_labels=settings.retrain_after_labels)
    if check.trigger is None:
        return check, None
    run, created = training_runs.request_run(
        session, trigger=check.trigger, requested_by=f"trigger:{check.trigger.value}"
    )
    return check, run if created else None


def request_scheduled(session: Session, settings: Settings, now: datetime) -> TrainingRun | None:
    """The nightly run: requested (or folded into the current one) whatever changed."""
    training_runs.reap_stale(session, now, timedelta(seconds=settings.training_stale_seconds))
    run, created = training_runs.request_run(
        session, trigger=RunTrigger.SCHEDULE, requested_by="schedule"
    )
    return run if created else None


def _labels_changed_since_latest(session: Session) -> bool:
    version = latest_version(session)
    if version is None:
        return True
    newer_label = session.scalar(
        select(func.count()).select_from(Label).where(Label.created_at > version.created_at)
    )
    newer_change = session.scalar(
        select(func.count())
        .select_from(ClassChange)
        .where(ClassChange.id > version.class_change_mark)
    )
    return bool(newer_label) or bool(newer_change)


def _version_to_train_on(
    session: Session, settings: Settings, run_id: int, trigger: str, now: datetime
) -> int:
    """A new snapshot when the labels or classes changed since the latest version, else it."""
    latest = latest_version(session)
    if latest is not None and not _labels_changed_since_latest(session):
        return latest.id
    taken = snapshot(
        session,
        author=f"retraining run {run_id}",
        message=f"Automatic snapshot for training run {run_id} ({trigger})",
        activate=class_activation(
            min_train=settings.class_min_train_images,
            min_test=settings.class_min_test_images,
            actor=f"retraining run {run_id}",
        ),
        now=now,
    )
    return taken.version.id


def run_retraining(
    factory: sessionmaker[Session],
    paths: LearningPaths,
    settings: Settings,
    run_id: int,
    *,
    space_key: str,
) -> TrainingOutcome | None:
    """Run queued run ``run_id``: snapshot the labels if they changed, train, gate, promote.

    Returns None when the run is not queued any more (a redelivered task, or
    a second worker): the run that holds the slot is someone else's.
    """
    now = datetime.now(UTC)
    try:
        with factory() as session, session.begin():
            run = training_runs.get_run(session, run_id)
            if run.status != RunStatus.QUEUED.value:
                return None
            trigger = run.trigger
            if run.dataset_version_id is None:
                training_runs.set_dataset_version(
                    session, run_id, _version_to_train_on(session, settings, run_id, trigger, now)
                )
    except Exception as error:
        with factory() as session, session.begin():
            training_runs.fail(session, run_id, f"snapshot: {type(error).__name__}: {error}", now)
        raise
    return train_and_promote(
        factory,
        paths,
        run_id=run_id,
        space_key=space_key,
        actor=f"retraining:{trigger}",
        gate=GateSettings.of(settings),
        strategy=Strategy(settings.queue_strategy),
        random_share=settings.queue_random_share,
        options=TrainingOptions(self_training=settings.self_training),
    )
