"""Push queue items to Label Studio, pull its annotations back as labels.

Push: the top N pending queue items are held (status ``held``: out of the web
queue) in one short transaction, sent as tasks with signed image URLs and the
model's top-k as predictions, then recorded task by task. A failed send puts
them back in line.

Pull: every completed annotation not pulled before becomes a label (origin
``labelstudio:<project>:<annotation id>``, the Label Studio user recorded on
the annotation's row), its item leaves the queue, and the annotation's row
makes a second pull a no-op. A class name the platform does not know (one
added to the config in Label Studio) becomes a proposed class, never an
active one. Network calls happen with no database session open.

Label Studio sends each webhook once, without retry, so a periodic
reconciliation pulls every project with tasks still out and puts items whose
hold has run out back in line.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from curation.classes import propose_class
from curation.exceptions import RejectedInput
from curation.labels import append_label, current_label
from curation.labelstudio.client import LabelStudioApi, LabelStudioError
from curation.labelstudio.config import CHOICES, IMAGE, label_config
from curation.labelstudio.convert import read_answer
from curation.labelstudio.signing import signed_image_url
from curation.learning.scoring import LearningPaths
from curation.models import (
    COLD_START_RANKING,
    AuditEntry,
    ClassStatus,
    Image,
    ImageScore,
    LabelStudioAnnotation,
    LabelStudioTask,
    LandmarkClass,
    QueueItem,
    QueueStatus,
    TaskState,
)
from curation.queue import current_ranking, top_items
from curation.settings import Settings
from curation.taxonomy import find_class

WEBHOOK_PATH = "/integrations/labelstudio/webhook"
SECRET_HEADER = "X-Curation-Webhook-Secret"  # noqa: S105 - a header name
# The key in a task's data that names the platform's image.
IMAGE_KEY = "curation_image_id"
ACTOR = "labelstudio"


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(moment: datetime) -> datetime:
    # SQLite hands back naive datetimes; every stored time is UTC.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@dataclass
class PushResult:
    project: str
    project_id: int
    sent: int
    image_ids: list[int]
    config_updated: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "project": self.project,
            "project_id": self.project_id,
            "sent": self.sent,
            "image_ids": self.image_ids,
            "config_updated": self.config_updated,
        }


@dataclass
class PullResult:
    labels: int = 0
    proposed_classes: list[str] = field(default_factory=list)
    not_applied: dict[str, int] = field(default_factory=dict)  # reason: count
    already_pulled: int = 0
    released: int = 0

    def add(self, other: PullResult) -> None:
        self.labels += other.labels
        self.proposed_classes += other.proposed_classes
        for reason, count in other.not_applied.items():
            self.not_applied[reason] = self.not_applied.get(reason, 0) + count
        self.already_pulled += other.already_pulled
        self.released += other.released

    def as_dict(self) -> dict[str, Any]:
        return {
            "labels": self.labels,
            "proposed_classes": self.proposed_classes,
            "not_applied": self.not_applied,
            "already_pulled": self.already_pulled,
            "released": self.released,
        }


# --- the class list ------------------------------------------------------------------


def class_names(session: Session) -> list[str]:
    """The display names of the living classes (active, then proposed), in id order."""
    rows = session.execute(
        select(LandmarkClass.display_name, LandmarkClass.status)
        .where(LandmarkClass.status != ClassStatus.RETIRED.value)
        .order_by(LandmarkClass.id)
    ).tuples()
    ordered = sorted(rows, key=lambda row: row[1] != ClassStatus.ACTIVE.value)
    return [name for name, _ in ordered]


def resolve_name(
    session: Session, name: str, *, project: str, ls_user: str
) -> tuple[LandmarkClass, bool]:
    """The living class Label Studio's ``name`` means, or a new proposed one (and whether new)."""
    found = find_class(session, name)
    if found is not None and found.status != ClassStatus.RETIRED.value:
        return found, False
    proposed = propose_class(
        session,
        name,
        actor=f"{ACTOR}:{project}",
        reason=f"named in Label Studio project {project!r} by {ls_user}",
    )
    return proposed, True


# --- push ------------------------------------------------------------------------------


def hold_items(session: Session, image_ids: Sequence[int], *, project: str) -> list[int]:
    """Take the still-pending items of ``image_ids`` out of the web queue; returns their images."""
    items = session.scalars(
        select(QueueItem)
        .where(QueueItem.image_id.in_(list(image_ids)))
        .where(QueueItem.status == QueueStatus.PENDING.value)
        .with_for_update()
    ).all()
    for item in items:
        item.status = QueueStatus.HELD.value
        item.claimed_by = None
        item.lease_expires_at = None
    if items:
        session.add(
            AuditEntry(
                actor=ACTOR,
                action="labelstudio.hold",
                entity_type="labelstudio_project",
                details={"project": project, "image_ids": sorted(i.image_id for i in items)},
            )
        )
    return [item.image_id for item in items]


def release_items(session: Session, image_ids: Iterable[int]) -> int:
    """Put held items back in line (a failed send, a hold that ran out); returns how many."""
    items = session.scalars(
        select(QueueItem)
        .where(QueueItem.image_id.in_(list(image_ids)))
        .where(QueueItem.status == QueueStatus.HELD.value)
    ).all()
    for item in items:
        item.status = QueueStatus.PENDING.value
    return len(items)


def build_tasks(
    session: Session,
    image_ids: Sequence[int],
    *,
    settings: Settings,
    expires: int,
    names: Sequence[str],
) -> list[dict[str, Any]]:
    """Label Studio tasks for ``image_ids``: a signed image URL and the model's top-k."""
    ranking = current_ranking(session)
    in_config = set(names)
    display = dict(
        session.execute(select(LandmarkClass.id, LandmarkClass.display_name)).tuples().all()
    )
    scores: dict[int, ImageScore] = {}
    if ranking != COLD_START_RANKING:
        scores = {
            score.image_id: score
            for score in session.scalars(
                select(ImageScore).where(
                    ImageScore.model_version_id == ranking,
                    ImageScore.image_id.in_(list(image_ids)),
                )
            )
        }
    tasks = []
    for image_id in image_ids:
        predictions = []
        score = scores.get(image_id)
        if score is not None:
            for rank, (class_id, probability) in enumerate(
                zip(score.top_classes, score.top_probabilities, strict=False), start=1
            ):
                name = display.get(int(class_id))
                if name is None or name not in in_config:
                    continue
                predictions.append(
                    {
                        "model_version": f"model-{ranking}-top{rank}",
                        "score": round(float(probability), 4),
                        "result": [
                            {
                                "from_name": CHOICES,
                                "to_name": IMAGE,
                                "type": "choices",
                                "value": {"choices": [name]},
                                "score": round(float(probability), 4),
                            }
                        ],
                    }
                )
        url = signed_image_url(settings.public_url, settings.secret_key, image_id, expires)
        tasks.append({"data": {IMAGE: url, IMAGE_KEY: image_id}, "predictions": predictions})
    return tasks


def record_tasks(
    session: Session,
    *,
    project: str,
    project_id: int,
    listed: Iterable[Mapping[str, Any]],
    image_ids: Sequence[int],
    hold_until: datetime,
) -> int:
    """Map the project's new tasks (read back from Label Studio) to their images."""
    wanted = set(image_ids)
    known = set(
        session.scalars(
            select(LabelStudioTask.ls_task_id).where(LabelStudioTask.ls_project_id == project_id)
        )
    )
    added = 0
    for task in listed:
        image_id = (task.get("data") or {}).get(IMAGE_KEY)
        task_id = int(task["id"])
        if image_id not in wanted or task_id in known:
            continue
        session.add(
            LabelStudioTask(
                project_title=project,
                ls_project_id=project_id,
                ls_task_id=task_id,
                image_id=int(image_id),
                state=TaskState.OUT.value,
                hold_until=hold_until,
            )
        )
        added += 1
    session.flush()
    return added


def ensure_project(api: LabelStudioApi, project: str, config: str) -> tuple[int, bool]:
    """The project's id, created or with its config brought up to date; (id, changed)."""
    project_id = api.find_project(project)
    if project_id is None:
        return api.create_project(project, config), True
    if api.get_label_config(project_id).strip() != config.strip():
        api.set_label_config(project_id, config)
        return project_id, True
    return project_id, False


def push(
    factory: sessionmaker[Session],
    api: LabelStudioApi,
    *,
    settings: Settings,
    paths: LearningPaths,
    project: str,
    limit: int,
    now: datetime | None = None,
) -> PushResult:
    """Send the top ``limit`` queue items to the Label Studio project ``project``."""
    if limit < 1:
        raise RejectedInput("--limit must be at least 1")
    if not project.strip():
        raise RejectedInput("the project needs a name")
    now = now or _now()
    hold_until = now + timedelta(seconds=settings.labelstudio_hold_seconds)
    with factory() as session, session.begin():
        names = class_names(session)
        entries = top_items(session, paths, limit)
        held = hold_items(session, [e.image_id for e in entries], project=project)
        # The URL outlives the hold a little, so a task opened just before
        # its hold ran out still shows its image.
        expires = int(hold_until.timestamp()) + 3600
        tasks = build_tasks(session, held, settings=settings, expires=expires, names=names)
    if not held:
        project_id, changed = ensure_project(api, project, label_config(names))
        return PushResult(project, project_id, 0, [], changed)
    try:
        project_id, changed = ensure_project(api, project, label_config(names))
        if settings.labelstudio_webhook_secret:
            api.ensure_webhook(
                project_id,
                settings.public_url.rstrip("/") + WEBHOOK_PATH,
                {SECRET_HEADER: settings.labelstudio_webhook_secret},
            )
        api.import_tasks(project_id, tasks)
        listed = list(api.tasks(project_id))
    except LabelStudioError:
        with factory() as session, session.begin():
            release_items(session, held)
        raise
    with factory() as session, session.begin():
        recorded = record_tasks(
            session,
            project=project,
            project_id=project_id,
            listed=listed,
            image_ids=held,
            hold_until=hold_until,
        )
    return PushResult(project, project_id, recorded, held, changed)


# --- pull ------------------------------------------------------------------------------


def apply_annotations(
    session: Session,
    *,
    project_id: int,
    tasks: Iterable[Mapping[str, Any]],
    users: Mapping[int, str],
    now: datetime,
) -> PullResult:
    """Turn the annotations of ``tasks`` not pulled before into labels."""
    result = PullResult()
    tasks = list(tasks)
    rows = {
        row.ls_task_id: row
        for row in session.scalars(
            select(LabelStudioTask).where(
                LabelStudioTask.ls_project_id == project_id,
                LabelStudioTask.ls_task_id.in_([int(t["id"]) for t in tasks]),
            )
        )
    }
    annotations = [
        (int(task["id"]), annotation)
        for task in tasks
        for annotation in task.get("annotations") or []
    ]
    pulled = set(
        session.scalars(
            select(LabelStudioAnnotation.ls_annotation_id).where(
                LabelStudioAnnotation.ls_project_id == project_id,
                LabelStudioAnnotation.ls_annotation_id.in_([int(a["id"]) for _, a in annotations]),
            )
        )
    )

    def skip(reason: str) -> None:
        result.not_applied[reason] = result.not_applied.get(reason, 0) + 1

    for task_id, annotation in sorted(annotations, key=lambda pair: int(pair[1]["id"])):
        annotation_id = int(annotation["id"])
        if annotation_id in pulled:
            result.already_pulled += 1
            continue
        row = rows.get(task_id)
        if row is None:
            skip("task not sent by this platform")
            continue
        by = annotation.get("completed_by")
        by_id = by.get("id") if isinstance(by, dict) else by
        ls_user = users.get(int(by_id), f"user {by_id}") if by_id is not None else "unknown"
        label_id, outcome = _apply_one(session, row, annotation, ls_user=ls_user, result=result)
        if label_id is None:
            skip(outcome)
        session.add(
            LabelStudioAnnotation(
                ls_project_id=project_id,
                ls_annotation_id=annotation_id,
                task_id=row.id,
                label_id=label_id,
                ls_user=ls_user[:254],
                outcome=outcome[:200],
            )
        )
        pulled.add(annotation_id)
        if label_id is not None:
            result.labels += 1
            row.state = TaskState.RETURNED.value
            row.returned_at = now
            item = session.scalars(
                select(QueueItem).where(QueueItem.image_id == row.image_id)
            ).first()
            if item is not None and item.status in (
                QueueStatus.HELD.value,
                QueueStatus.PENDING.value,
            ):
                item.status = QueueStatus.DONE.value
                item.claimed_by = None
                item.lease_expires_at = None
    session.flush()
    if result.labels or result.proposed_classes:
        session.add(
            AuditEntry(
                actor=ACTOR,
                action="labelstudio.pull",
                entity_type="labelstudio_project",
                entity_id=project_id,
                details=result.as_dict(),
            )
        )
    return result


def _apply_one(
    session: Session,
    row: LabelStudioTask,
    annotation: Mapping[str, Any],
    *,
    ls_user: str,
    result: PullResult,
) -> tuple[int | None, str]:
    if annotation.get("was_cancelled"):
        return None, "skipped in Label Studio"
    image = session.get(Image, row.image_id)
    if image is None:
        return None, "image no longer exists"
    try:
        answer = read_answer(annotation.get("result") or [], width=image.width, height=image.height)
    except RejectedInput as error:
        return None, f"refused: {error}"
    class_id: int | None = None
    if answer.class_name is not None:
        landmark, new = resolve_name(
            session, answer.class_name, project=row.project_title, ls_user=ls_user
        )
        if new:
            result.proposed_classes.append(landmark.slug)
        class_id = landmark.id
    label = append_label(
        session,
        image_id=row.image_id,
        class_id=class_id,
        box=answer.box,
        origin=f"{ACTOR}:{row.project_title}:{annotation['id']}"[:200],
        supersedes=current_label(session, row.image_id),
    )
    return label.id, "labelled"


def release_timed_out(session: Session, *, now: datetime) -> int:
    """Put items whose hold ran out with nothing back in line; returns how many."""
    rows = [
        row
        for row in session.scalars(
            select(LabelStudioTask).where(LabelStudioTask.state == TaskState.OUT.value)
        )
        if _aware(row.hold_until) < now
    ]
    for row in rows:
        row.state = TaskState.TIMED_OUT.value
    return release_items(session, [row.image_id for row in rows]) if rows else 0


def _project_id(session: Session, project: str) -> int | None:
    return session.scalars(
        select(LabelStudioTask.ls_project_id)
        .where(LabelStudioTask.project_title == project)
        .order_by(LabelStudioTask.id.desc())
        .limit(1)
    ).first()


def pull(
    factory: sessionmaker[Session],
    api: LabelStudioApi,
    *,
    project: str | None = None,
    now: datetime | None = None,
) -> PullResult:
    """Pull ``project`` (every project with tasks still out where None), then release.

    Items whose hold ran out go back in line after the pull, so an annotation
    made just in time still counts.
    """
    now = now or _now()
    with factory() as session:
        if project is not None:
            found = _project_id(session, project)
            project_ids = [found] if found is not None else []
            if found is None:
                found = api.find_project(project)
                project_ids = [found] if found is not None else []
            if not project_ids:
                raise RejectedInput(f"no Label Studio project called {project!r}")
        else:
            project_ids = list(
                session.scalars(
                    select(LabelStudioTask.ls_project_id)
                    .where(LabelStudioTask.state == TaskState.OUT.value)
                    .distinct()
                )
            )
    total = PullResult()
    users = api.user_names() if project_ids else {}
    for project_id in project_ids:
        tasks = [task for task in api.tasks(project_id) if task.get("annotations")]
        with factory() as session, session.begin():
            total.add(
                apply_annotations(session, project_id=project_id, tasks=tasks, users=users, now=now)
            )
    with factory() as session, session.begin():
        total.released = release_timed_out(session, now=now)
    return total


def pull_task(factory: sessionmaker[Session], api: LabelStudioApi, task_id: int) -> PullResult:
    """Pull one task's annotations (what a webhook names)."""
    task = api.task(task_id)
    project = task.get("project")
    if isinstance(project, dict):
        project = project.get("id")
    if not isinstance(project, int):
        raise LabelStudioError(f"Label Studio task {task_id} names no project")
    project_id = project
    users = api.user_names()
    with factory() as session, session.begin():
        return apply_annotations(
            session, project_id=project_id, tasks=[task], users=users, now=_now()
        )
