"""Disagreements between reviewers, for admins: the open ones and their history.

A row is one queue item in one of three states:

* ``disputed``: a second reviewer disagreed with the first; an admin decides
  (stage 3, not done: waiting, or held by an admin now).
* ``second_review``: a first decision waits for a second reviewer (stage 2).
* ``resolved``: a dispute an admin has settled; the row is the (not undone)
  disputing decision, with what the admin decided after it.

Each row carries both reviewers' decisions (who, when, what), the class a
user's report claimed where the image came from one, and who holds the item
now. Pages are keyset-paginated (``after`` is the ``cursor`` of the last row
seen), so a deep page costs what the first does; the page size is capped.

Plain data out (ids, names, datetimes in UTC); the web layer adds URLs.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from curation.exceptions import RejectedInput
from curation.models import (
    DecisionOutcome,
    ImageSource,
    LandmarkClass,
    QueueItem,
    QueueStatus,
    ReviewDecision,
    SourceKind,
    User,
)
from curation.review.claims import ADMIN_STAGE

SECOND_STAGE = 2
DEFAULT_PAGE = 50
MAX_PAGE = 200
# What an admin's settling decision can be (a skip settles nothing).
SETTLING = (DecisionOutcome.LABELLED.value, DecisionOutcome.PROPOSED.value)


class DisagreementState(enum.StrEnum):
    DISPUTED = "disputed"
    SECOND_REVIEW = "second_review"
    RESOLVED = "resolved"

    @classmethod
    def parse(cls, raw: str | None) -> DisagreementState:
        """From untrusted input; None or "" is ``disputed``."""
        if not raw:
            return cls.DISPUTED
        try:
            return cls(raw)
        except ValueError:
            allowed = ", ".join(s.value for s in cls)
            raise RejectedInput(f"unknown state {raw!r}; use one of {allowed}") from None


@dataclass(frozen=True)
class DecisionSummary:
    """One reviewer's decision: ``class_name`` is None for "not a landmark" and skips."""

    decision_id: int
    reviewer_id: int
    reviewer: str
    action: str
    class_id: int | None
    class_name: str | None
    outcome: str
    decided_at: datetime


@dataclass(frozen=True)
class ReportClaim:
    """What the user who reported the photo said it shows."""

    claimed_class_name: str | None
    claimed_class_id: int | None
    predicted_class_name: str | None
    reporter_id: str | None
    note: str | None


@dataclass(frozen=True)
class Disagreement:
    state: DisagreementState
    item_id: int
    image_id: int
    item_status: str
    stage: int
    first: DecisionSummary | None
    second: DecisionSummary | None  # the disputing decision (disputed, resolved)
    resolution: DecisionSummary | None  # the admin's (resolved)
    report: ReportClaim | None
    held_by: str | None  # who holds a live claim on the item now
    held_until: datetime | None
    cursor: int  # pass as ``after`` to continue after this row


@dataclass(frozen=True)
class DisagreementPage:
    state: DisagreementState
    rows: list[Disagreement]
    next_cursor: int | None  # None on the last page
    limit: int


def open_counts(session: Session) -> dict[str, int]:
    """How many items are disputed and how many wait for a second review."""
    by_stage = dict(
        session.execute(
            select(QueueItem.stage, func.count())
            .where(
                QueueItem.stage.in_([SECOND_STAGE, ADMIN_STAGE]),
                QueueItem.status != QueueStatus.DONE.value,
            )
            .group_by(QueueItem.stage)
        )
        .tuples()
        .all()
    )
    return {
        DisagreementState.DISPUTED.value: int(by_stage.get(ADMIN_STAGE, 0)),
        DisagreementState.SECOND_REVIEW.value: int(by_stage.get(SECOND_STAGE, 0)),
    }


def list_disagreements(
    session: Session,
    state: DisagreementState | str,
    *,
    now: datetime,
    after: int | None = None,
    limit: int = DEFAULT_PAGE,
) -> DisagreementPage:
    """One page of disagreements in ``state``.

    Open states (disputed, second review) come oldest item first; the
    history (resolved) newest dispute first.
    """
    state = DisagreementState.parse(state) if isinstance(state, str) else state
    if limit < 1:
        raise RejectedInput("limit must be at least 1")
    limit = min(limit, MAX_PAGE)
    if state is DisagreementState.RESOLVED:
        rows = _resolved(session, after, limit + 1, now)
    else:
        stage = ADMIN_STAGE if state is DisagreementState.DISPUTED else SECOND_STAGE
        rows = _open(session, state, stage, after, limit + 1, now)
    more = len(rows) > limit
    rows = rows[:limit]
    return DisagreementPage(
        state=state,
        rows=rows,
        next_cursor=rows[-1].cursor if more and rows else None,
        limit=limit,
    )


# --- the queries ------------------------------------------------------------------------


def _open(
    session: Session,
    state: DisagreementState,
    stage: int,
    after: int | None,
    limit: int,
    now: datetime,
) -> list[Disagreement]:
    query = select(QueueItem).where(
        QueueItem.stage == stage, QueueItem.status != QueueStatus.DONE.value
    )
    if after is not None:
        query = query.where(QueueItem.id > after)
    items = list(session.scalars(query.order_by(QueueItem.id).limit(limit)))
    disputing = (
        _latest_by_item(
            session,
            [i.id for i in items],
            ReviewDecision.outcome == DecisionOutcome.DISPUTED.value,
        )
        if state is DisagreementState.DISPUTED
        else {}
    )
    firsts = _decisions(session, [i.first_decision_id for i in items if i.first_decision_id])
    context = _Context.load(
        session,
        decisions=[*firsts.values(), *disputing.values()],
        holders=[i.claimed_by for i in items if i.claimed_by],
        image_ids=[i.image_id for i in items],
    )
    return [
        context.row(
            state,
            item,
            first=firsts.get(item.first_decision_id or 0),
            second=disputing.get(item.id),
            resolution=None,
            cursor=item.id,
            now=now,
        )
        for item in items
    ]


def _resolved(session: Session, after: int | None, limit: int, now: datetime) -> list[Disagreement]:
    query = (
        select(ReviewDecision, QueueItem)
        .join(QueueItem, QueueItem.id == ReviewDecision.item_id)
        .where(
            ReviewDecision.outcome == DecisionOutcome.DISPUTED.value,
            ReviewDecision.undone_at.is_(None),
            QueueItem.stage == ADMIN_STAGE,
            QueueItem.status == QueueStatus.DONE.value,
        )
    )
    if after is not None:
        query = query.where(ReviewDecision.id < after)
    pairs = session.execute(query.order_by(ReviewDecision.id.desc()).limit(limit)).tuples().all()
    items = [item for _, item in pairs]
    settling = _latest_by_item(
        session,
        [i.id for i in items],
        ReviewDecision.stage == ADMIN_STAGE,
        ReviewDecision.outcome.in_(SETTLING),
    )
    firsts = _decisions(session, [i.first_decision_id for i in items if i.first_decision_id])
    context = _Context.load(
        session,
        decisions=[*firsts.values(), *settling.values(), *(d for d, _ in pairs)],
        holders=[],
        image_ids=[i.image_id for i in items],
    )
    return [
        context.row(
            DisagreementState.RESOLVED,
            item,
            first=firsts.get(item.first_decision_id or 0),
            second=dispute,
            resolution=settling.get(item.id),
            cursor=dispute.id,
            now=now,
        )
        for dispute, item in pairs
    ]


def _decisions(session: Session, ids: Iterable[int]) -> dict[int, ReviewDecision]:
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    return {
        d.id: d
        for d in session.scalars(select(ReviewDecision).where(ReviewDecision.id.in_(wanted)))
    }


def _latest_by_item(
    session: Session, item_ids: Sequence[int], *conditions: ColumnElement[bool]
) -> dict[int, ReviewDecision]:
    """Per item, its newest decision (not undone) that meets ``conditions``."""
    if not item_ids:
        return {}
    latest: dict[int, ReviewDecision] = {}
    for decision in session.scalars(
        select(ReviewDecision)
        .where(
            ReviewDecision.item_id.in_(item_ids),
            ReviewDecision.undone_at.is_(None),
            *conditions,
        )
        .order_by(ReviewDecision.id)
    ):
        latest[decision.item_id] = decision
    return latest


def _aware(moment: datetime) -> datetime:
    # SQLite hands back naive datetimes; every stored time is UTC.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@dataclass(frozen=True)
class _Context:
    """Names of the people and classes a page mentions, and the photos' reports."""

    usernames: dict[int, str]
    class_names: dict[int, str]
    reports: dict[int, ImageSource]

    @classmethod
    def load(
        cls,
        session: Session,
        *,
        decisions: Sequence[ReviewDecision],
        holders: Sequence[int],
        image_ids: Sequence[int],
    ) -> _Context:
        user_ids = sorted({d.reviewer_id for d in decisions} | set(holders))
        class_ids = sorted({d.class_id for d in decisions if d.class_id is not None})
        usernames = (
            dict(
                session.execute(select(User.id, User.username).where(User.id.in_(user_ids)))
                .tuples()
                .all()
            )
            if user_ids
            else {}
        )
        class_names = (
            dict(
                session.execute(
                    select(LandmarkClass.id, LandmarkClass.display_name).where(
                        LandmarkClass.id.in_(class_ids)
                    )
                )
                .tuples()
                .all()
            )
            if class_ids
            else {}
        )
        reports: dict[int, ImageSource] = {}
        if image_ids:
            for source in session.scalars(
                select(ImageSource)
                .where(
                    ImageSource.image_id.in_(sorted(set(image_ids))),
                    ImageSource.kind == SourceKind.REPORT.value,
                )
                .order_by(ImageSource.id)
            ):
                reports.setdefault(source.image_id, source)  # the first report
        return cls(usernames, class_names, reports)

    def summary(self, decision: ReviewDecision | None) -> DecisionSummary | None:
        if decision is None:
            return None
        return DecisionSummary(
            decision_id=decision.id,
            reviewer_id=decision.reviewer_id,
            reviewer=self.usernames.get(decision.reviewer_id, f"user {decision.reviewer_id}"),
            action=decision.action,
            class_id=decision.class_id,
            class_name=(
                self.class_names.get(decision.class_id, f"class {decision.class_id}")
                if decision.class_id is not None
                else None
            ),
            outcome=decision.outcome,
            decided_at=_aware(decision.created_at),
        )

    def row(
        self,
        state: DisagreementState,
        item: QueueItem,
        *,
        first: ReviewDecision | None,
        second: ReviewDecision | None,
        resolution: ReviewDecision | None,
        cursor: int,
        now: datetime,
    ) -> Disagreement:
        report = self.reports.get(item.image_id)
        lease = _aware(item.lease_expires_at) if item.lease_expires_at else None
        held = (
            item.status == QueueStatus.CLAIMED.value
            and item.claimed_by is not None
            and (lease is None or lease >= now)
        )
        return Disagreement(
            state=state,
            item_id=item.id,
            image_id=item.image_id,
            item_status=item.status,
            stage=item.stage,
            first=self.summary(first),
            second=self.summary(second),
            resolution=self.summary(resolution),
            report=(
                ReportClaim(
                    claimed_class_name=report.claimed_class_name,
                    claimed_class_id=report.claimed_class_id,
                    predicted_class_name=report.predicted_class_name,
                    reporter_id=report.reporter_id,
                    note=report.note,
                )
                if report is not None
                else None
            ),
            held_by=(
                self.usernames.get(item.claimed_by, f"user {item.claimed_by}")
                if held and item.claimed_by is not None
                else None
            ),
            held_until=lease if held else None,
            cursor=cursor,
        )
