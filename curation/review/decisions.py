"""Deciding a claimed item, consensus between two reviewers, and undo.

Every decision is a row in ``review_decisions`` and an audit entry (who,
when, what, and the label it replaced). Labels are appended, never
overwritten; an undo appends the label that was current before (or removes
the decision's own label where there was none), and puts the item and its
place in line back as they were.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, exists, or_, select
from sqlalchemy.orm import Session, aliased

from curation.classes import find_or_propose
from curation.exceptions import Conflict, NotFound, RejectedInput
from curation.geometry import Box
from curation.labels import append_label, current_label
from curation.models import (
    AuditEntry,
    ClassStatus,
    DecisionAction,
    DecisionOutcome,
    Image,
    ImageScore,
    ImageSource,
    Label,
    LandmarkClass,
    QueueItem,
    QueueOrder,
    QueueStatus,
    ReviewDecision,
    User,
)
from curation.queue import current_ranking, rankings_present
from curation.review.claims import ADMIN_STAGE, held_item

LABELLING = {
    DecisionAction.ACCEPT,
    DecisionAction.LABEL,
    DecisionAction.NOT_LANDMARK,
    DecisionAction.PROPOSE,
}


@dataclass(frozen=True)
class DecisionRequest:
    action: DecisionAction
    class_id: int | None = None
    box: Box | None = None
    proposed_name: str | None = None
    apply_to_group: bool = False

    @classmethod
    def parse(cls, data: dict[str, Any]) -> DecisionRequest:
        """From untrusted JSON, with an error that names what is wrong."""
        try:
            action = DecisionAction(str(data.get("action")))
        except ValueError:
            allowed = ", ".join(a.value for a in DecisionAction)
            raise RejectedInput(f"action must be one of {allowed}") from None
        class_id = data.get("class_id")
        if action is DecisionAction.LABEL and (
            not isinstance(class_id, int) or isinstance(class_id, bool)
        ):
            raise RejectedInput("a label decision needs class_id, an integer")
        name = data.get("proposed_name")
        if action is DecisionAction.PROPOSE and (not isinstance(name, str) or not name.strip()):
            raise RejectedInput("a proposal needs proposed_name, the new class's name")
        box = _parse_box(data.get("box"))
        group = data.get("apply_to_group", False)
        if not isinstance(group, bool):
            raise RejectedInput("apply_to_group must be true or false")
        return cls(
            action=action,
            class_id=class_id if action is DecisionAction.LABEL else None,
            box=box,
            proposed_name=name.strip() if isinstance(name, str) else None,
            apply_to_group=group,
        )


def _parse_box(raw: Any) -> Box | None:
    if raw is None:
        return None
    if (
        not isinstance(raw, list)
        or len(raw) != 4
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in raw)
    ):
        raise RejectedInput("box must be [x_min, y_min, x_max, y_max] in image pixels")
    x0, y0, x1, y1 = (round(float(v), 1) for v in raw)
    return (x0, y0, x1, y1)


def _check_box(box: Box | None, image: Image) -> None:
    if box is None:
        return
    x0, y0, x1, y1 = box
    if not (0 <= x0 < x1 <= image.width and 0 <= y0 < y1 <= image.height):
        raise RejectedInput(
            f"box {list(box)} must have x_min < x_max and y_min < y_max and lie inside"
            f" the {image.width}x{image.height} image"
        )


def _suggested_class(session: Session, image_id: int) -> int | None:
    ranking = current_ranking(session)
    score = session.get(ImageScore, (ranking, image_id))
    return int(score.top_classes[0]) if score is not None and score.top_classes else None


def _resolve_class(
    session: Session, request: DecisionRequest, image_id: int, user: User
) -> tuple[int | None, bool]:
    """(class id or None for "not a landmark", whether the class was created now)."""
    if request.action in (DecisionAction.ACCEPT, DecisionAction.LABEL):
        class_id = (
            _suggested_class(session, image_id)
            if request.action is DecisionAction.ACCEPT
            else request.class_id
        )
        if class_id is None:
            raise RejectedInput("there is no model suggestion to accept yet: pick a class")
        # FOR SHARE: a merge or split of this class (curation.classes) waits
        # for this decision, or this decision sees the class already retired.
        landmark = session.get(LandmarkClass, class_id, with_for_update={"read": True})
        if landmark is None:
            raise RejectedInput(f"class {class_id} does not exist")
        if landmark.status == ClassStatus.RETIRED.value:
            raise RejectedInput(f"class {landmark.display_name} is retired: pick another class")
        return landmark.id, False
    if request.action is DecisionAction.PROPOSE:
        assert request.proposed_name is not None
        landmark, created = find_or_propose(
            session,
            request.proposed_name,
            actor=user,
            reason=f"proposed while reviewing image {image_id}",
        )
        return landmark.id, created
    return None, False


def _needs_second_review(
    session: Session, consensus: str, image_id: int, class_id: int | None
) -> bool:
    if consensus == "off":
        return False
    if consensus == "all":
        return True
    claims = session.scalars(
        select(ImageSource.claimed_class_id).where(
            ImageSource.image_id == image_id,
            ImageSource.kind == "report",
            ImageSource.claimed_class_id.is_not(None),
        )
    ).all()
    if any(claim != class_id for claim in claims):
        return True
    existing = current_label(session, image_id)
    return existing is not None and existing.class_id != class_id


def _label_summary(label: Label | None) -> dict[str, Any] | None:
    if label is None:
        return None
    return {
        "id": label.id,
        "verdict": label.verdict,
        "class_id": label.class_id,
        "box": list(label.box) if label.box else None,
        "author_id": label.author_id,
        "origin": label.origin,
    }


def _item_state(item: QueueItem) -> dict[str, Any]:
    return {
        "status": item.status,
        "stage": item.stage,
        "first_decision_id": item.first_decision_id,
        "first_reviewer_id": item.first_reviewer_id,
    }


def _take_out_of_line(session: Session, image_id: int) -> list[list[Any]]:
    """Delete the image's queue places (all rankings); return them for an undo.

    A ranking still being written by another transaction is not seen here:
    its row for this image stays, and claims pass over it (the item is no
    longer pending) until the ranking is pruned.
    """
    in_rankings = and_(
        QueueOrder.ranking.in_(rankings_present(session)), QueueOrder.image_id == image_id
    )
    rows = session.execute(
        select(
            QueueOrder.ranking, QueueOrder.image_id, QueueOrder.priority, QueueOrder.strategy
        ).where(in_rankings)
    ).all()
    session.execute(delete(QueueOrder).where(in_rankings))
    return [list(row) for row in rows]


def _label_image(
    session: Session,
    *,
    image_id: int,
    class_id: int | None,
    box: Box | None,
    author: User,
) -> tuple[Label, Label | None]:
    previous = current_label(session, image_id)
    label = append_label(
        session,
        image_id=image_id,
        class_id=class_id,
        box=box,
        origin="review",
        author_id=author.id,
        supersedes=previous,
    )
    return label, previous


def _close(item: QueueItem, now: datetime, status: QueueStatus = QueueStatus.DONE) -> None:
    item.status = status.value
    item.claimed_by = None
    item.lease_expires_at = None
    item.updated_at = now


def decide(
    session: Session,
    user: User,
    item_id: int,
    request: DecisionRequest,
    *,
    consensus: str,
    now: datetime,
) -> ReviewDecision:
    """Apply ``user``'s decision on an item they hold; returns the recorded decision."""
    item = held_item(session, user, item_id, now)
    image = session.get_one(Image, item.image_id)
    _check_box(request.box, image)
    class_id, created = (
        _resolve_class(session, request, image.id, user)
        if request.action in LABELLING
        else (None, False)
    )
    decision = ReviewDecision(
        item_id=item.id,
        image_id=image.id,
        reviewer_id=user.id,
        stage=item.stage,
        action=request.action.value,
        class_id=class_id,
        outcome=DecisionOutcome.SKIPPED.value,
        label_ids=[],
        restore={
            "item": _item_state(item),
            "group": request.apply_to_group,
            "created_class": class_id if created else None,
        },
    )
    if request.box is not None:
        (decision.box_x_min, decision.box_y_min, decision.box_x_max, decision.box_y_max) = (
            request.box
        )
    session.add(decision)
    session.flush()
    replaced: list[dict[str, Any] | None] = []
    first = session.get(ReviewDecision, item.first_decision_id) if item.stage == 2 else None
    if request.action is DecisionAction.SKIP:
        _close(
            item,
            now,
            QueueStatus.DISPUTED if item.stage == ADMIN_STAGE else QueueStatus.PENDING,
        )
    elif item.stage == 1 and _needs_second_review(session, consensus, image.id, class_id):
        decision.outcome = DecisionOutcome.SECOND_REVIEW.value
        item.stage = 2
        item.first_decision_id = decision.id
        item.first_reviewer_id = user.id
        _close(item, now, QueueStatus.PENDING)
    elif item.stage == 2 and (first is None or first.class_id != class_id):
        decision.outcome = DecisionOutcome.DISPUTED.value
        item.stage = ADMIN_STAGE
        _close(item, now, QueueStatus.DISPUTED)
    else:
        if item.stage == 2:
            decision.outcome = DecisionOutcome.AGREED.value
            assert first is not None  # agreed with it
            box = request.box or first.box
            group = request.apply_to_group or bool(first.restore.get("group"))
        else:
            decision.outcome = (
                DecisionOutcome.PROPOSED.value
                if request.action is DecisionAction.PROPOSE
                else DecisionOutcome.LABELLED.value
            )
            box, group = request.box, request.apply_to_group
        replaced = _apply(session, decision, item, user, class_id, box, group, now)
    session.add(
        AuditEntry(
            actor_id=user.id,
            actor=user.username,
            action="review.decide",
            entity_type="image",
            entity_id=image.id,
            details={
                "decision_id": decision.id,
                "item_id": item.id,
                "stage": decision.stage,
                "action": decision.action,
                "class_id": class_id,
                "box": list(request.box) if request.box else None,
                "outcome": decision.outcome,
                "replaced_labels": replaced,
                "label_ids": decision.label_ids,
            },
        )
    )
    return decision


def _apply(
    session: Session,
    decision: ReviewDecision,
    item: QueueItem,
    user: User,
    class_id: int | None,
    box: Box | None,
    group: bool,
    now: datetime,
) -> list[dict[str, Any] | None]:
    """Label the item's image (and its open near-duplicates if asked); close them."""
    targets = [item]
    if group:
        image = session.get_one(Image, item.image_id)
        targets += list(
            session.scalars(
                select(QueueItem)
                .join(Image, Image.id == QueueItem.image_id)
                .where(
                    Image.group_id == image.group_id,
                    QueueItem.id != item.id,
                    # Open ones, and the ones this reviewer holds (the page
                    # claims the next item ahead, often a near-duplicate).
                    or_(
                        QueueItem.status == QueueStatus.PENDING.value,
                        and_(
                            QueueItem.status == QueueStatus.CLAIMED.value,
                            QueueItem.claimed_by == user.id,
                        ),
                    ),
                    QueueItem.stage == 1,
                )
                .with_for_update(skip_locked=True, of=QueueItem)
            )
        )
    label_ids: list[int] = []
    replaced: list[dict[str, Any] | None] = []
    places: list[list[Any]] = []
    group_states: dict[str, Any] = {}
    for target in targets:
        # The box belongs to the reviewed photo; near-duplicates get the class only.
        label, previous = _label_image(
            session,
            image_id=target.image_id,
            class_id=class_id,
            box=box if target is item else None,
            author=user,
        )
        label_ids.append(label.id)
        replaced.append(_label_summary(previous))
        places += _take_out_of_line(session, target.image_id)
        if target is not item:
            group_states[str(target.id)] = _item_state(target)
        _close(target, now)
    decision.label_ids = label_ids
    decision.restore = {
        **decision.restore,
        "queue_order": places,
        "group_items": group_states,
        "replaced": replaced,
    }
    return replaced


def undo_last(session: Session, user: User, *, lease: timedelta, now: datetime) -> QueueItem:
    """Take back ``user``'s last decision; the item comes back claimed by them."""
    decision = session.scalars(
        select(ReviewDecision)
        .where(ReviewDecision.reviewer_id == user.id, ReviewDecision.undone_at.is_(None))
        .order_by(ReviewDecision.id.desc())
        .limit(1)
        .with_for_update()
    ).first()
    if decision is None:
        raise Conflict("nothing to undo")
    item = session.get(QueueItem, decision.item_id, with_for_update=True, populate_existing=True)
    if item is None:
        raise NotFound(f"queue item {decision.item_id} does not exist")
    _check_undoable(item, decision, user)
    newer = aliased(Label)
    restore = decision.restore
    for label_id, previous in zip(decision.label_ids, restore.get("replaced", []), strict=False):
        label = session.get(Label, label_id)
        if label is None:
            continue
        if session.scalar(select(exists().where(newer.supersedes_id == label.id))):
            raise Conflict(
                f"the label this decision wrote on image {label.image_id} was changed since;"
                " it cannot be undone"
            )
        if previous is None:
            session.delete(label)
        else:
            append_label(
                session,
                image_id=label.image_id,
                class_id=previous["class_id"],
                box=_parse_box(previous["box"]),
                origin=f"undo of decision {decision.id}",
                author_id=user.id,
                supersedes=label,
            )
    session.flush()
    for ranking, image_id, priority, strategy in restore.get("queue_order", []):
        if session.get(QueueOrder, (ranking, image_id)) is None:
            session.add(
                QueueOrder(ranking=ranking, image_id=image_id, priority=priority, strategy=strategy)
            )
    for group_item_id, state in restore.get("group_items", {}).items():
        other = session.get(QueueItem, int(group_item_id))
        if other is not None:
            _set_state(other, state, now)
    _set_state(item, restore["item"], now)
    item.status = QueueStatus.CLAIMED.value
    item.claimed_by = user.id
    item.lease_expires_at = now + lease
    decision.undone_at = now
    session.add(
        AuditEntry(
            actor_id=user.id,
            actor=user.username,
            action="review.undo",
            entity_type="image",
            entity_id=decision.image_id,
            details={"decision_id": decision.id, "label_ids": decision.label_ids},
        )
    )
    return item


def _check_undoable(item: QueueItem, decision: ReviewDecision, user: User) -> None:
    outcome = DecisionOutcome(decision.outcome)
    if outcome in (DecisionOutcome.SKIPPED, DecisionOutcome.SECOND_REVIEW):
        # The item went back in line: someone else may hold or have decided it.
        held_by_other = item.status == QueueStatus.CLAIMED.value and item.claimed_by != user.id
        # A second reviewer's verdict (agreed, or disputed: stage 3) ends the
        # first reviewer's say, even though the first decision stays recorded.
        moved_on = (
            outcome is DecisionOutcome.SECOND_REVIEW
            and (item.first_decision_id != decision.id or item.stage != 2)
        ) or item.status == QueueStatus.DONE.value
        if held_by_other or moved_on:
            raise Conflict(
                f"queue item {item.id} has been taken up by another reviewer since;"
                " it cannot be undone"
            )
    elif outcome is DecisionOutcome.DISPUTED and item.status != QueueStatus.DISPUTED.value:
        raise Conflict(f"queue item {item.id} is being resolved by an admin")


def _set_state(item: QueueItem, state: dict[str, Any], now: datetime) -> None:
    # A claim is not restored (its lease is gone): the item goes back in line.
    claimed = state["status"] == QueueStatus.CLAIMED.value
    item.status = QueueStatus.PENDING.value if claimed else state["status"]
    item.stage = state["stage"]
    item.first_decision_id = state["first_decision_id"]
    item.first_reviewer_id = state["first_reviewer_id"]
    item.claimed_by = None
    item.lease_expires_at = None
    item.updated_at = now
