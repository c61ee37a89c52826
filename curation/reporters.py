"""Reports that apps send through the API, and how far each reporter is trusted.

Reliability is computed from review decisions rather than kept in counters:
a report's outcome is the latest settling decision (labelled, agreed,
proposed; not undone) on its image, so an undo or a second review changes
the reporter's record without any bookkeeping, and nothing outside this
module has to remember to update a count. The reads are per (app, reporter)
through ``ix_api_reports_app_reporter_id_created_at``.

reliability = (agreed + PRIOR) / (decided + PRIOR): a new reporter starts at
1 (full priority), and each rejected report lowers it; the queue priority of
an image reported through the API is multiplied by ``max(reliability,
MIN_WEIGHT)`` when it is scored (:func:`priority_weights`).

The flood throttle counts a reporter's reports in the last hour (the same
index); over the limit, :class:`ReporterThrottled` (HTTP 429). Both are shown
to admins by :func:`reporter_summaries`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from curation.classes import find_or_propose
from curation.exceptions import Conflict, CurationError, NotFound
from curation.ingest.core import IngestContext
from curation.ingest.reports import ingest_report
from curation.models import (
    ApiReport,
    ApiToken,
    ClassStatus,
    DecisionOutcome,
    ImageSource,
    LandmarkClass,
    QueueItem,
    ReviewDecision,
)

PRIOR = 2.0
MAX_ID = 2**31 - 1  # ids beyond this cannot exist (and overflow SQLite's binding)
MIN_WEIGHT = 0.05
THROTTLE_WINDOW = timedelta(hours=1)
_SETTLING = (
    DecisionOutcome.LABELLED.value,
    DecisionOutcome.AGREED.value,
    DecisionOutcome.PROPOSED.value,
)


class ReporterThrottled(CurationError):
    """A reporter sent more reports in the last hour than the limit allows."""

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class Record:
    reports: int
    decided: int
    agreed: int
    last_hour: int

    @property
    def reliability(self) -> float:
        return (self.agreed + PRIOR) / (self.decided + PRIOR)


def _decisions(session: Session, image_ids: Sequence[int]) -> dict[int, ReviewDecision]:
    """The latest settling, not undone decision of each image that has one."""
    latest: dict[int, ReviewDecision] = {}
    ids = list(image_ids)
    for start in range(0, len(ids), 5000):
        rows = session.scalars(
            select(ReviewDecision)
            .where(
                ReviewDecision.image_id.in_(ids[start : start + 5000]),
                ReviewDecision.undone_at.is_(None),
                ReviewDecision.outcome.in_(_SETTLING),
            )
            .order_by(ReviewDecision.id)
        )
        for decision in rows:
            latest[decision.image_id] = decision
    return latest


def reporter_record(
    session: Session, app: str, reporter_id: str | None, *, now: datetime | None = None
) -> Record:
    """The reporter's counts; an anonymous report (no reporter id) has a blank record."""
    if reporter_id is None:
        return Record(0, 0, 0, 0)
    now = now or datetime.now(UTC)
    reports = session.execute(
        select(ApiReport.image_id, ApiReport.claimed_class_id, ApiReport.created_at).where(
            ApiReport.app == app, ApiReport.reporter_id == reporter_id
        )
    ).all()
    decisions = _decisions(session, [r.image_id for r in reports])
    decided = agreed = last_hour = 0
    for image_id, claimed, created_at in reports:
        if _aware(created_at) >= now - THROTTLE_WINDOW:
            last_hour += 1
        decision = decisions.get(image_id)
        if decision is None:
            continue
        decided += 1
        agreed += int(claimed is not None and decision.class_id == claimed)
    return Record(len(reports), decided, agreed, last_hour)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@dataclass(frozen=True)
class ReportReceipt:
    report: ApiReport
    claimed_class: LandmarkClass | None
    proposed: bool  # the typed name matched nothing and became a proposed class


def submit_report(
    session: Session,
    context: IngestContext,
    token: ApiToken,
    *,
    image_bytes: bytes,
    claimed_class_name: str,
    predicted_class_name: str | None,
    reporter_id: str | None,
    note: str | None,
    max_bytes: int,
    max_pixels: int,
    max_per_hour: int,
) -> ReportReceipt:
    """Ingest one report from an app, as ``curation ingest report`` does, and record it.

    The typed name is matched against class slugs, names and aliases in any
    language; a name that matches no living class becomes a proposed class.
    Raises ReporterThrottled past ``max_per_hour`` reports of this reporter,
    RejectedInput for a bad image or field. Never commits.
    """
    reporter = reporter_id.strip() if reporter_id and reporter_id.strip() else None
    record = reporter_record(session, token.app, reporter)
    if reporter is not None and record.last_hour >= max_per_hour:
        raise ReporterThrottled(
            f"reporter {reporter!r} sent {record.last_hour} reports in the last hour"
            f" (the limit is {max_per_hour})",
            retry_after=int(THROTTLE_WINDOW.total_seconds()),
        )
    result = ingest_report(
        session,
        context,
        image_bytes=image_bytes,
        claimed_class_name=claimed_class_name,
        predicted_class_name=predicted_class_name,
        reporter_id=reporter,
        note=note,
        max_bytes=max_bytes,
        max_pixels=max_pixels,
    )
    source = session.get_one(ImageSource, result.source_id)
    existing = session.scalar(
        select(ApiReport).where(ApiReport.source_id == source.id, ApiReport.token_id == token.id)
    )
    proposed = False
    claimed = (
        session.get(LandmarkClass, source.claimed_class_id) if source.claimed_class_id else None
    )
    if claimed is None or claimed.status == ClassStatus.RETIRED.value:
        assert source.claimed_class_name is not None
        try:
            with session.begin_nested():
                claimed, proposed = find_or_propose(
                    session,
                    source.claimed_class_name,
                    actor=f"app:{token.app}",
                    reason=f"named in a report from app {token.app}",
                )
        except Conflict:
            claimed = None  # the name is held by a retired class: left for a reviewer
        source.claimed_class_id = claimed.id if claimed is not None else None
    if existing is not None:
        return ReportReceipt(existing, claimed, proposed)
    report = ApiReport(
        token_id=token.id,
        app=token.app,
        reporter_id=reporter,
        image_id=result.image_id,
        source_id=source.id,
        claimed_class_id=claimed.id if claimed is not None else None,
        reliability=record.reliability,
    )
    session.add(report)
    session.flush()
    return ReportReceipt(report, claimed, proposed)


def report_status(session: Session, token: ApiToken, report_id: int) -> dict[str, object]:
    """What became of a report, for the app that sent it; NotFound for another app's."""
    report = session.get(ApiReport, report_id) if 0 < report_id <= MAX_ID else None
    if report is None or report.app != token.app:
        raise NotFound(f"no report with id {report_id}")
    claimed = (
        session.get(LandmarkClass, report.claimed_class_id) if report.claimed_class_id else None
    )
    decision = _decisions(session, [report.image_id]).get(report.image_id)
    item_status = session.scalar(
        select(QueueItem.status).where(QueueItem.image_id == report.image_id)
    )
    outcome: dict[str, object] | None = None
    if decision is not None:
        landmark = session.get(LandmarkClass, decision.class_id) if decision.class_id else None
        if landmark is None:
            verdict = "not_landmark"
        elif claimed is not None and landmark.id == claimed.id:
            verdict = "confirmed"
        else:
            verdict = "corrected"
        outcome = {"verdict": verdict, "class": _class_ref(landmark)}
        status = "decided"
    elif item_status is not None:
        status = "in_review" if item_status in ("claimed", "held", "disputed") else "queued"
    else:
        status = "received"  # not scored yet
    return {
        "id": report.id,
        "status": status,
        "claimed_class": _class_ref(claimed),
        "proposed_class": claimed is not None and claimed.status == ClassStatus.PROPOSED.value,
        "outcome": outcome,
        "created_at": _aware(report.created_at).isoformat(),
    }


def _class_ref(landmark: LandmarkClass | None) -> dict[str, object] | None:
    if landmark is None:
        return None
    return {"slug": landmark.slug, "display_name": landmark.display_name, "status": landmark.status}


def priority_weights(session: Session, image_ids: NDArray[np.int64] | None) -> dict[int, float]:
    """The priority factor of each image reported through the API (others: absent, i.e. 1).

    An image reported by several reporters takes the most trusted one's factor.
    """
    query = select(ApiReport.image_id, func.max(ApiReport.reliability)).group_by(ApiReport.image_id)
    weights: dict[int, float] = {}
    if image_ids is None:
        rows = session.execute(query).tuples().all()
    else:
        ids = [int(i) for i in image_ids]
        rows = []
        for start in range(0, len(ids), 5000):
            part = ids[start : start + 5000]
            rows.extend(session.execute(query.where(ApiReport.image_id.in_(part))).tuples())
    for image_id, reliability in rows:
        weights[int(image_id)] = max(float(reliability), MIN_WEIGHT)
    return weights


@dataclass(frozen=True)
class ReporterSummary:
    app: str
    reporter_id: str
    record: Record
    throttled: bool


def reporter_summaries(
    session: Session, *, max_per_hour: int, limit: int = 200
) -> list[ReporterSummary]:
    """Reporters with the most reports first: counts, reliability, throttled now or not."""
    pairs = session.execute(
        select(ApiReport.app, ApiReport.reporter_id, func.count())
        .where(ApiReport.reporter_id.is_not(None))
        .group_by(ApiReport.app, ApiReport.reporter_id)
        .order_by(func.count().desc(), ApiReport.app, ApiReport.reporter_id)
        .limit(limit)
    ).all()
    out = []
    for app, reporter_id, _ in pairs:
        record = reporter_record(session, app, reporter_id)
        out.append(ReporterSummary(app, reporter_id, record, record.last_hour >= max_per_hour))
    return out
