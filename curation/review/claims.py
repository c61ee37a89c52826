"""Claiming queue items: one reviewer per item, with a lease that lapses.

The claim is one UPDATE whose target is picked by a sub-select in priority
order. On PostgreSQL the sub-select locks the row it picks with FOR UPDATE
SKIP LOCKED, so concurrent claimers walk past each other's rows instead of
queueing behind them or taking the same one. SQLite runs one writer at a
time, and a single UPDATE statement is atomic there: the same statement is
safe without the lock clause (SQLAlchemy leaves it out on SQLite).

An abandoned claim needs no sweeper: an item claimed with an expired lease
is claimable again, by the same statement.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, exists, literal_column, or_, select, update
from sqlalchemy.orm import Session

from curation.exceptions import Conflict, Forbidden, NotFound, RejectedInput
from curation.learning.priority import Strategy
from curation.models import (
    COLD_START_STRATEGY,
    ImageScore,
    ImageSource,
    QueueItem,
    QueueOrder,
    QueueStatus,
    ReviewDecision,
    SourceKind,
    User,
    UserRole,
)
from curation.queue import current_ranking

# Stage 3: a disputed item, resolved by an admin.
ADMIN_STAGE = 3
REASONS = (*(s.value for s in Strategy if s is not Strategy.BALANCED), COLD_START_STRATEGY)
DISPUTED = "disputed"


@dataclass(frozen=True)
class ClaimFilters:
    """Narrow what a claim may pick: by queue reason, by source kind, by class."""

    reason: str | None = None
    source: str | None = None
    class_id: int | None = None

    def __post_init__(self) -> None:
        if self.reason is not None and self.reason not in (*REASONS, DISPUTED):
            raise RejectedInput(
                f"unknown reason filter {self.reason!r}; use one of {', '.join(REASONS)}"
                f" or {DISPUTED}"
            )
        kinds = [k.value for k in SourceKind]
        if self.source is not None and self.source not in kinds:
            raise RejectedInput(
                f"unknown source filter {self.source!r}; use one of {', '.join(kinds)}"
            )


def _top_class_is(session: Session, class_id: int) -> ColumnElement[bool]:
    if session.get_bind().dialect.name == "postgresql":
        expression = "image_scores.top_classes[1]"
    else:
        expression = "json_extract(image_scores.top_classes, '$[0]')"
    first: ColumnElement[int] = literal_column(expression)
    return first == class_id


def _claimable(
    session: Session, user: User, filters: ClaimFilters, now: datetime, ranking: int
) -> ColumnElement[int]:
    item, order = QueueItem, QueueOrder
    if filters.reason == DISPUTED:
        if user.role != UserRole.ADMIN.value:
            raise RejectedInput("only admins resolve disputed items")
        state: ColumnElement[bool] = or_(
            item.status == QueueStatus.DISPUTED.value,
            and_(
                item.status == QueueStatus.CLAIMED.value,
                item.stage == ADMIN_STAGE,
                item.lease_expires_at < now,
            ),
        )
    else:
        lapsed = and_(
            item.status == QueueStatus.CLAIMED.value,
            item.stage < ADMIN_STAGE,
            item.lease_expires_at < now,
        )
        state = or_(item.status == QueueStatus.PENDING.value, lapsed)
    skipped = exists().where(
        ReviewDecision.item_id == item.id,
        ReviewDecision.reviewer_id == user.id,
        ReviewDecision.action == "skip",
        ReviewDecision.undone_at.is_(None),
    )
    query = (
        select(item.id)
        .join(order, and_(order.image_id == item.image_id, order.ranking == ranking))
        .where(state)
        # A second review is never by the first reviewer.
        .where(or_(item.first_reviewer_id.is_(None), item.first_reviewer_id != user.id))
        .where(~skipped)
    )
    if filters.reason is not None and filters.reason != DISPUTED:
        query = query.where(order.strategy == filters.reason)
    if filters.source is not None:
        query = query.where(
            exists().where(
                ImageSource.image_id == item.image_id, ImageSource.kind == filters.source
            )
        )
    if filters.class_id is not None:
        suggested = exists().where(
            ImageScore.model_version_id == ranking,
            ImageScore.image_id == item.image_id,
            _top_class_is(session, filters.class_id),
        )
        claimed = exists().where(
            ImageSource.image_id == item.image_id,
            ImageSource.claimed_class_id == filters.class_id,
        )
        query = query.where(or_(suggested, claimed))
    return (
        query.order_by(order.priority.desc(), order.image_id)
        .limit(1)
        .with_for_update(skip_locked=True, of=item)
        .scalar_subquery()
    )


def claim_next(
    session: Session,
    user: User,
    *,
    filters: ClaimFilters | None = None,
    lease: timedelta,
    now: datetime,
) -> QueueItem | None:
    """Claim the highest-priority open item for ``user``; None when nothing is left.

    Call it in a transaction of its own and commit right away: the row lock
    is held until then.
    """
    ranking = current_ranking(session)
    target = _claimable(session, user, filters or ClaimFilters(), now, ranking)
    claimed_id = session.execute(
        update(QueueItem)
        .where(QueueItem.id == target)
        .values(
            status=QueueStatus.CLAIMED.value,
            claimed_by=user.id,
            lease_expires_at=now + lease,
            updated_at=now,
        )
        .returning(QueueItem.id)
        .execution_options(synchronize_session=False)
    ).scalar()
    if claimed_id is None:
        return None
    item = session.get(QueueItem, claimed_id, populate_existing=True)
    return item


def claim_item(
    session: Session, user: User, item_id: int, *, lease: timedelta, now: datetime
) -> QueueItem:
    """Claim one chosen item for an admin (from the disagreements page, say).

    Reviewers take what is next in line; only an admin may pick. The claim is
    one conditional UPDATE, as in :func:`claim_next`, so two admins opening
    the same item cannot both get it; when it does not apply, the refusal
    says why (decided, or held by whom and until when). Claiming an item one
    already holds renews the lease. The rules of :func:`claim_next` hold: a
    disputed or second-review item is never settled by its first reviewer.
    """
    if user.role != UserRole.ADMIN.value:
        raise Forbidden("only admins open a chosen item; reviewers take the next one in line")
    item = QueueItem
    open_to_user = or_(
        item.status.in_([QueueStatus.PENDING.value, QueueStatus.DISPUTED.value]),
        and_(
            item.status == QueueStatus.CLAIMED.value,
            or_(item.claimed_by == user.id, item.lease_expires_at < now),
        ),
    )
    claimed_id = session.execute(
        update(item)
        .where(
            item.id == item_id,
            open_to_user,
            or_(item.first_reviewer_id.is_(None), item.first_reviewer_id != user.id),
        )
        .values(
            status=QueueStatus.CLAIMED.value,
            claimed_by=user.id,
            lease_expires_at=now + lease,
            updated_at=now,
        )
        .returning(item.id)
        .execution_options(synchronize_session=False)
    ).scalar()
    found = session.get(QueueItem, item_id, populate_existing=True)
    if found is None:
        raise NotFound(f"queue item {item_id} does not exist")
    if claimed_id is not None:
        return found
    if found.status == QueueStatus.DONE.value:
        raise Conflict(f"queue item {item_id} is already decided")
    if found.status == QueueStatus.CLAIMED.value and found.claimed_by != user.id:
        holder = session.get(User, found.claimed_by) if found.claimed_by else None
        until = _aware(found.lease_expires_at) if found.lease_expires_at else None
        raise Conflict(
            f"queue item {item_id} is held by {holder.username if holder else 'someone else'}"
            + (f" until {until:%H:%M:%S} UTC" if until else "")
            + "; open it again once they decide or release it"
        )
    if found.first_reviewer_id == user.id:
        raise Conflict(
            f"you made the first decision on queue item {item_id}; someone else must review it"
        )
    raise Conflict(f"queue item {item_id} cannot be claimed now (status {found.status})")


def held_item(session: Session, user: User, item_id: int, now: datetime) -> QueueItem:
    """The item, locked, if ``user`` holds a live claim on it; else a clear refusal."""
    item = session.get(QueueItem, item_id, with_for_update=True, populate_existing=True)
    if item is None:
        raise NotFound(f"queue item {item_id} does not exist")
    if item.status != QueueStatus.CLAIMED.value or item.claimed_by != user.id:
        raise Conflict(f"queue item {item_id} is not claimed by you")
    lease = item.lease_expires_at
    if lease is not None and _aware(lease) < now:
        raise Conflict(f"your claim on queue item {item_id} expired; claim it again")
    return item


def my_claims(session: Session, user: User, now: datetime) -> list[QueueItem]:
    """The items ``user`` holds a live claim on, oldest claim first."""
    items = session.scalars(
        select(QueueItem)
        .where(QueueItem.status == QueueStatus.CLAIMED.value, QueueItem.claimed_by == user.id)
        .order_by(QueueItem.updated_at, QueueItem.id)
    ).all()
    return [i for i in items if i.lease_expires_at is None or _aware(i.lease_expires_at) >= now]


def renew(session: Session, user: User, item_id: int, *, lease: timedelta, now: datetime) -> None:
    item = held_item(session, user, item_id, now)
    item.lease_expires_at = now + lease
    item.updated_at = now


@dataclass(frozen=True)
class Renewal:
    """What :func:`renew_many` did: new lease ends by item, and why the others were lost."""

    renewed: dict[int, datetime]
    lost: dict[int, str]


def renew_many(
    session: Session, user: User, item_ids: list[int], *, lease: timedelta, now: datetime
) -> Renewal:
    """Extend ``user``'s live claims on ``item_ids``; an item they no longer hold
    (lease lapsed, decided, taken by someone else) is reported, not raised:
    the page drops it and keeps the others."""
    renewed: dict[int, datetime] = {}
    lost: dict[int, str] = {}
    for item_id in dict.fromkeys(item_ids):
        try:
            renew(session, user, item_id, lease=lease, now=now)
        except (Conflict, NotFound) as error:
            lost[item_id] = str(error)
        else:
            renewed[item_id] = now + lease
    return Renewal(renewed=renewed, lost=lost)


def release(session: Session, user: User, item_id: int, now: datetime) -> None:
    """Give a claimed item back to the line without deciding it."""
    item = held_item(session, user, item_id, now)
    item.status = (
        QueueStatus.DISPUTED.value if item.stage == ADMIN_STAGE else QueueStatus.PENDING.value
    )
    item.claimed_by = None
    item.lease_expires_at = None
    item.updated_at = now


def _aware(moment: datetime) -> datetime:
    from datetime import UTC

    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
