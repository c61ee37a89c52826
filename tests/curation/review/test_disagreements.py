"""Disagreements for admins, claiming a chosen item, renewing leases: SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from curation.accounts import create_user
from curation.exceptions import Conflict, Forbidden, NotFound, RejectedInput
from curation.learning import bulk_write
from curation.models import ImageSource, LandmarkClass, NearDuplicateGroup, QueueItem, User
from curation.review import disagreements
from curation.review.claims import ClaimFilters, claim_item, claim_next, renew_many
from curation.review.decisions import DecisionRequest, decide, undo_last
from curation.review.disagreements import DisagreementState, list_disagreements, open_counts
from curation.runtime import Runtime
from tests.factories import image_row

LEASE = timedelta(minutes=10)
USERS = (("ann", "reviewer"), ("bob", "reviewer"), ("root", "admin"), ("boss", "admin"))


def _now() -> datetime:
    return datetime.now(UTC)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def any_runtime(request):
    return request.getfixturevalue("runtime" if request.param == "sqlite" else "pg_runtime")


def _seed(runtime: Runtime, n: int) -> dict[str, int]:
    """n queued images (priority falling with id), four people, two classes; image 1
    was reported by a user who says it shows Gyeongbokgung."""
    with runtime.factory() as session, session.begin():
        for i in range(n):
            group = NearDuplicateGroup()
            session.add(group)
            session.flush()
            image_row(session, i + 1, group_id=group.id)
        ids = np.arange(1, n + 1, dtype=np.int64)
        bulk_write.write_ranking(
            session,
            bulk_write.RankingRows(
                ranking=0,
                image_ids=ids,
                priority=1.0 - ids / (n + 1),
                strategy=np.full(n, "cold_start"),
            ),
        )
        bulk_write.open_items(session, ids, _now())
        found = {
            name: create_user(
                session, username=name, password="correct horse 1", role=role, actor="test"
            ).id
            for name, role in USERS
        }
        for slug, name in (("gyeongbokgung", "Gyeongbokgung"), ("deoksugung", "Deoksugung")):
            landmark = LandmarkClass(slug=slug, display_name=name, status="active")
            session.add(landmark)
            session.flush()
            found[slug] = landmark.id
        session.add(
            ImageSource(
                image_id=1,
                kind="report",
                identity_key="r1",
                reporter_id="app-user-7",
                claimed_class_name="Gyeongbokgung",
                claimed_class_id=found["gyeongbokgung"],
                predicted_class_name="Deoksugung",
            )
        )
    return found


def _user(runtime: Runtime, user_id: int) -> User:
    with runtime.factory() as session:
        return session.get_one(User, user_id)


def _claim(runtime: Runtime, user: User, **filters) -> QueueItem:
    with runtime.factory() as session, session.begin():
        item = claim_next(session, user, filters=ClaimFilters(**filters), lease=LEASE, now=_now())
        assert item is not None
        session.expunge_all()
        return item


def _claim_item(runtime: Runtime, user: User, item_id: int) -> QueueItem:
    with runtime.factory() as session, session.begin():
        item = claim_item(session, user, item_id, lease=LEASE, now=_now())
        session.expunge_all()
        return item


def _decide(runtime: Runtime, user: User, item_id: int, consensus="disagreements", **request):
    with runtime.factory() as session, session.begin():
        decision = decide(
            session, user, item_id, DecisionRequest.parse(request), consensus=consensus, now=_now()
        )
        return decision.outcome


def _page(runtime: Runtime, state: str, **options) -> disagreements.DisagreementPage:
    with runtime.factory() as session:
        return list_disagreements(session, state, now=_now(), **options)


def _dispute(runtime: Runtime, ids: dict[str, int]) -> int:
    """ann labels the next item Deoksugung (a second review, as consensus is "all"),
    bob says it is no landmark: disputed. Returns the item id."""
    ann, bob = _user(runtime, ids["ann"]), _user(runtime, ids["bob"])
    item = _claim(runtime, ann)
    deoksugung = {"action": "label", "class_id": ids["deoksugung"]}
    assert _decide(runtime, ann, item.id, consensus="all", **deoksugung) == "second_review"
    second = _claim(runtime, bob)
    assert second.id == item.id
    assert _decide(runtime, bob, item.id, action="not_landmark") == "disputed"
    return item.id


def test_a_dispute_from_report_to_resolution(any_runtime: Runtime) -> None:
    ids = _seed(any_runtime, 3)
    ann, bob, root, boss = (_user(any_runtime, ids[n]) for n in ("ann", "bob", "root", "boss"))
    item = _claim(any_runtime, ann)
    assert item.image_id == 1
    # ann contradicts the reporter: a second reviewer must confirm.
    assert (
        _decide(any_runtime, ann, item.id, action="label", class_id=ids["deoksugung"])
        == "second_review"
    )
    waiting = _page(any_runtime, "second_review")
    assert [r.item_id for r in waiting.rows] == [item.id] and waiting.next_cursor is None
    row = waiting.rows[0]
    assert row.state is DisagreementState.SECOND_REVIEW and row.stage == 2
    assert row.first is not None and row.first.reviewer == "ann"
    assert (row.first.action, row.first.class_name) == ("label", "Deoksugung")
    assert row.first.decided_at.tzinfo is not None
    assert row.second is None and row.resolution is None and row.held_by is None
    assert row.report is not None
    assert row.report.claimed_class_name == "Gyeongbokgung"
    assert row.report.claimed_class_id == ids["gyeongbokgung"]
    assert row.report.reporter_id == "app-user-7"
    assert _page(any_runtime, "disputed").rows == []

    second = _claim(any_runtime, bob)
    assert _decide(any_runtime, bob, second.id, action="not_landmark") == "disputed"
    assert _page(any_runtime, "second_review").rows == []
    disputed = _page(any_runtime, DisagreementState.DISPUTED).rows
    assert [r.item_id for r in disputed] == [item.id]
    assert disputed[0].first is not None and disputed[0].first.reviewer == "ann"
    assert disputed[0].second is not None and disputed[0].second.reviewer == "bob"
    assert (disputed[0].second.action, disputed[0].second.class_name) == ("not_landmark", None)
    assert disputed[0].second.outcome == "disputed"
    with any_runtime.factory() as session:
        assert open_counts(session) == {"disputed": 1, "second_review": 0}

    # An admin opens the item from the list; the list says who holds it.
    with pytest.raises(Forbidden, match="only admins"):
        _claim_item(any_runtime, bob, item.id)
    held = _claim_item(any_runtime, root, item.id)
    assert held.status == "claimed" and held.claimed_by == root.id and held.stage == 3
    row = _page(any_runtime, "disputed").rows[0]
    assert row.held_by == "root" and row.held_until is not None
    with pytest.raises(Conflict, match="held by root until"):
        _claim_item(any_runtime, boss, item.id)
    again = _claim_item(any_runtime, root, item.id)  # one's own claim: renewed
    assert again.claimed_by == root.id

    assert (
        _decide(any_runtime, root, item.id, action="label", class_id=ids["gyeongbokgung"])
        == "labelled"
    )
    assert _page(any_runtime, "disputed").rows == []
    history = _page(any_runtime, "resolved").rows
    assert [r.item_id for r in history] == [item.id]
    resolved = history[0]
    assert resolved.state is DisagreementState.RESOLVED and resolved.item_status == "done"
    assert resolved.first is not None and resolved.first.reviewer == "ann"
    assert resolved.second is not None and resolved.second.reviewer == "bob"
    assert resolved.resolution is not None and resolved.resolution.reviewer == "root"
    assert resolved.resolution.class_name == "Gyeongbokgung"
    assert resolved.report is not None and resolved.held_by is None
    with pytest.raises(Conflict, match="already decided"):
        _claim_item(any_runtime, boss, item.id)
    with pytest.raises(NotFound):
        _claim_item(any_runtime, boss, 999)


def test_pages_follow_the_cursor_and_undone_disputes_move_back(any_runtime: Runtime) -> None:
    ids = _seed(any_runtime, 6)
    items = [_dispute(any_runtime, ids) for _ in range(5)]
    first = _page(any_runtime, "disputed", limit=2)
    assert [r.item_id for r in first.rows] == items[:2] and first.next_cursor == items[1]
    second = _page(any_runtime, "disputed", limit=2, after=first.next_cursor)
    third = _page(any_runtime, "disputed", limit=2, after=second.next_cursor)
    assert [r.item_id for r in second.rows + third.rows] == items[2:]
    assert third.next_cursor is None
    # bob takes back his last disagreement: that item waits for a second review again.
    bob = _user(any_runtime, ids["bob"])
    with any_runtime.factory() as session, session.begin():
        undo_last(session, bob, lease=LEASE, now=_now())
    with any_runtime.factory() as session, session.begin():
        restored = session.get_one(QueueItem, items[-1])
        assert restored.stage == 2
    assert items[-1] not in [r.item_id for r in _page(any_runtime, "disputed").rows]
    waiting = _page(any_runtime, "second_review").rows
    assert [r.item_id for r in waiting] == [items[-1]] and waiting[0].held_by == "bob"
    # Settle three; the history comes newest dispute first, page by page.
    root = _user(any_runtime, ids["root"])
    for item_id in items[:3]:
        _claim_item(any_runtime, root, item_id)
        assert _decide(any_runtime, root, item_id, action="not_landmark") == "labelled"
    history = _page(any_runtime, "resolved", limit=2)
    rest = _page(any_runtime, "resolved", limit=2, after=history.next_cursor)
    assert [r.item_id for r in history.rows + rest.rows] == items[:3][::-1]
    assert rest.next_cursor is None
    assert all(r.resolution is not None for r in history.rows + rest.rows)


def test_refusals_and_limits(any_runtime: Runtime) -> None:
    ids = _seed(any_runtime, 2)
    root = _user(any_runtime, ids["root"])
    with pytest.raises(RejectedInput, match="unknown state"):
        _page(any_runtime, "argued")
    with pytest.raises(RejectedInput, match="at least 1"):
        _page(any_runtime, "disputed", limit=0)
    assert _page(any_runtime, "disputed", limit=10_000).limit == disagreements.MAX_PAGE
    # A second review is never by the first reviewer, chosen or not.
    item = _claim(any_runtime, root)
    assert _decide(any_runtime, root, item.id, consensus="all", action="not_landmark") == (
        "second_review"
    )
    with pytest.raises(Conflict, match="you made the first decision"):
        _claim_item(any_runtime, root, item.id)
    # An admin may open any open item, a pending one too.
    boss = _user(any_runtime, ids["boss"])
    other = _claim_item(any_runtime, boss, 2)
    assert other.claimed_by == boss.id and other.stage == 1


def test_renew_many_extends_live_claims_and_reports_lost_ones(any_runtime: Runtime) -> None:
    ids = _seed(any_runtime, 3)
    ann, bob = _user(any_runtime, ids["ann"]), _user(any_runtime, ids["bob"])
    kept = _claim(any_runtime, ann)
    with any_runtime.factory() as session, session.begin():
        lapsed = claim_next(
            session, ann, lease=timedelta(seconds=1), now=_now() - timedelta(hours=1)
        )
        assert lapsed is not None
        lapsed_id = lapsed.id
    taken = _claim(any_runtime, bob)  # the lapsed item goes to the next claimer
    assert taken.id == lapsed_id
    later = _now() + timedelta(minutes=5)
    with any_runtime.factory() as session, session.begin():
        done = renew_many(session, ann, [kept.id, lapsed_id, 999, kept.id], lease=LEASE, now=later)
    assert done.renewed == {kept.id: later + LEASE}
    assert set(done.lost) == {lapsed_id, 999}
    assert "not claimed by you" in done.lost[lapsed_id]
    with any_runtime.factory() as session:
        renewed = session.get_one(QueueItem, kept.id)
        assert renewed.lease_expires_at is not None
        assert abs(_aware(renewed.lease_expires_at) - (later + LEASE)) < timedelta(seconds=1)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
