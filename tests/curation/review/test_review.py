"""Claiming, deciding, consensus and undo, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from sqlalchemy import func, select

from curation.accounts import create_user
from curation.exceptions import Conflict, RejectedInput
from curation.labels import current_label
from curation.learning import bulk_write
from curation.models import (
    AuditEntry,
    ClassStatus,
    DecisionAction,
    ImageSource,
    LandmarkClass,
    NearDuplicateGroup,
    QueueItem,
    QueueOrder,
    User,
)
from curation.review.claims import ClaimFilters, claim_next, release
from curation.review.decisions import DecisionRequest, decide, undo_last
from curation.runtime import Runtime
from tests.factories import image_row

LEASE = timedelta(minutes=10)


def _now() -> datetime:
    return datetime.now(UTC)


def _seed(runtime: Runtime, n: int, *, group_of: int = 1) -> dict[str, int]:
    """n queued images (cold start, priority falling with id); users; two classes."""
    with runtime.factory() as session, session.begin():
        groups = [NearDuplicateGroup() for _ in range(0, n, group_of)]
        session.add_all(groups)
        session.flush()
        for i in range(n):
            image_row(session, i + 1, group_id=groups[i // group_of].id)
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
        users = {
            name: create_user(
                session, username=name, password="correct horse 1", role=role, actor="test"
            ).id
            for name, role in (("ann", "reviewer"), ("bob", "reviewer"), ("root", "admin"))
        }
        for slug, name in (("gyeongbokgung", "Gyeongbokgung"), ("deoksugung", "Deoksugung")):
            landmark = LandmarkClass(slug=slug, display_name=name, status="active")
            session.add(landmark)
            session.flush()
            users[slug] = landmark.id
    return users


def _user(runtime: Runtime, user_id: int) -> User:
    with runtime.factory() as session:
        return session.get_one(User, user_id)


def _claim(runtime: Runtime, user: User, **filters) -> QueueItem | None:
    with runtime.factory() as session, session.begin():
        item = claim_next(session, user, filters=ClaimFilters(**filters), lease=LEASE, now=_now())
        session.expunge_all()
        return item


def _decide(runtime: Runtime, user: User, item_id: int, consensus="disagreements", **request):
    with runtime.factory() as session, session.begin():
        decision = decide(
            session, user, item_id, DecisionRequest.parse(request), consensus=consensus, now=_now()
        )
        return decision.outcome


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def any_runtime(request):
    return request.getfixturevalue("runtime" if request.param == "sqlite" else "pg_runtime")


def test_claims_follow_priority_and_never_hand_out_an_item_twice(any_runtime: Runtime) -> None:
    ids = _seed(any_runtime, 5)
    ann, bob = _user(any_runtime, ids["ann"]), _user(any_runtime, ids["bob"])
    first, second = _claim(any_runtime, ann), _claim(any_runtime, bob)
    assert first is not None and second is not None
    assert (first.image_id, second.image_id) == (1, 2)
    with any_runtime.factory() as session, session.begin():
        release(session, ann, first.id, _now())
    again = _claim(any_runtime, bob)
    assert again is not None and again.image_id == 1


def test_an_expired_lease_returns_the_item_to_line(any_runtime: Runtime) -> None:
    ids = _seed(any_runtime, 2)
    ann, bob = _user(any_runtime, ids["ann"]), _user(any_runtime, ids["bob"])
    with any_runtime.factory() as session, session.begin():
        item = claim_next(session, ann, lease=timedelta(seconds=1), now=_now() - timedelta(hours=1))
        assert item is not None
        item_id = item.id
    taken = _claim(any_runtime, bob)
    assert taken is not None and taken.id == item_id
    with pytest.raises(Conflict, match="not claimed by you"):
        _decide(any_runtime, ann, item_id, action="not_landmark")


def test_concurrent_claimers_get_disjoint_items(any_runtime: Runtime) -> None:
    ids = _seed(any_runtime, 60)
    users = [_user(any_runtime, ids[name]) for name in ("ann", "bob", "root")]
    got: list[int] = []
    lock = threading.Lock()

    def work(user: User) -> None:
        while (item := _claim(any_runtime, user)) is not None:
            with lock:
                got.append(item.id)

    threads = [threading.Thread(target=work, args=(u,)) for u in users for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(got) == list(range(1, 61))


def test_labelling_writes_label_audit_and_takes_the_item_out_of_line(any_runtime) -> None:
    ids = _seed(any_runtime, 3)
    ann = _user(any_runtime, ids["ann"])
    item = _claim(any_runtime, ann)
    assert item is not None
    outcome = _decide(
        any_runtime, ann, item.id, action="label", class_id=ids["deoksugung"], box=[1, 2, 30, 40]
    )
    assert outcome == "labelled"
    with any_runtime.factory() as session:
        label = current_label(session, item.image_id)
        assert label is not None and label.class_id == ids["deoksugung"]
        assert label.box == (1.0, 2.0, 30.0, 40.0) and label.author_id == ann.id
        assert session.get_one(QueueItem, item.id).status == "done"
        assert session.scalar(select(func.count()).where(QueueOrder.image_id == item.image_id)) == 0
        audit = session.scalars(
            select(AuditEntry).where(AuditEntry.action == "review.decide")
        ).one()
        assert audit.actor == "ann" and audit.details["replaced_labels"] == [None]


def test_bad_decisions_are_refused_with_the_reason(any_runtime: Runtime) -> None:
    ids = _seed(any_runtime, 2)
    ann = _user(any_runtime, ids["ann"])
    item = _claim(any_runtime, ann)
    assert item is not None
    with pytest.raises(RejectedInput, match="inside the 320x240 image"):
        _decide(any_runtime, ann, item.id, action="not_landmark", box=[0, 0, 500, 10])
    with pytest.raises(RejectedInput, match="action must be one of"):
        DecisionRequest.parse({"action": "delete"})
    with pytest.raises(RejectedInput, match="no model suggestion"):
        _decide(any_runtime, ann, item.id, action="accept")
    with pytest.raises(RejectedInput, match="class 999 does not exist"):
        _decide(any_runtime, ann, item.id, action="label", class_id=999)


def test_undo_restores_label_state_and_the_claim(any_runtime: Runtime) -> None:
    ids = _seed(any_runtime, 2)
    ann = _user(any_runtime, ids["ann"])
    item = _claim(any_runtime, ann)
    assert item is not None
    _decide(any_runtime, ann, item.id, action="propose", proposed_name="Seoul National University")
    with any_runtime.factory() as session:
        proposed = session.scalars(
            select(LandmarkClass).where(LandmarkClass.display_name == "Seoul National University")
        ).one()
        assert proposed.status == ClassStatus.PROPOSED.value
    with any_runtime.factory() as session, session.begin():
        restored = undo_last(session, ann, lease=LEASE, now=_now())
        assert restored.status == "claimed" and restored.claimed_by == ann.id
    with any_runtime.factory() as session:
        assert current_label(session, item.image_id) is None
        assert session.scalar(select(func.count()).where(QueueOrder.image_id == item.image_id)) == 1
    with any_runtime.factory() as session, session.begin(), pytest.raises(Conflict):
        undo_last(session, ann, lease=LEASE, now=_now())


def test_a_contradicted_report_needs_a_second_reviewer(any_runtime: Runtime) -> None:
    ids = _seed(any_runtime, 1)
    with any_runtime.factory() as session, session.begin():
        session.add(
            ImageSource(
                image_id=1,
                kind="report",
                identity_key="r1",
                claimed_class_name="Gyeongbokgung",
                claimed_class_id=ids["gyeongbokgung"],
            )
        )
    ann, bob, root = (_user(any_runtime, ids[n]) for n in ("ann", "bob", "root"))
    item = _claim(any_runtime, ann)
    assert item is not None
    deoksugung = {"action": "label", "class_id": ids["deoksugung"]}
    assert _decide(any_runtime, ann, item.id, **deoksugung) == "second_review"
    assert _claim(any_runtime, ann) is None  # never the first reviewer again
    second = _claim(any_runtime, bob)
    assert second is not None and second.stage == 2
    assert _decide(any_runtime, bob, second.id, action="not_landmark") == "disputed"
    assert _claim(any_runtime, bob) is None
    # The second reviewer has spoken: the first can no longer take theirs back.
    with any_runtime.factory() as session, session.begin(), pytest.raises(Conflict):
        undo_last(session, ann, lease=LEASE, now=_now())
    with pytest.raises(RejectedInput, match="only admins"):
        _claim(any_runtime, bob, reason="disputed")
    final = _claim(any_runtime, root, reason="disputed")
    assert final is not None
    assert _decide(any_runtime, root, final.id, **deoksugung) == "labelled"
    with any_runtime.factory() as session:
        label = current_label(session, 1)
        assert label is not None and label.class_id == ids["deoksugung"]


def test_apply_to_group_labels_the_open_near_duplicates(any_runtime: Runtime) -> None:
    ids = _seed(any_runtime, 4, group_of=2)
    ann = _user(any_runtime, ids["ann"])
    item = _claim(any_runtime, ann)
    assert item is not None and item.image_id == 1
    ahead = _claim(any_runtime, ann)  # the page claims the next item ahead
    assert ahead is not None and ahead.image_id == 2
    request = {"action": "label", "class_id": ids["gyeongbokgung"], "apply_to_group": True}
    _decide(any_runtime, ann, item.id, **request)
    with any_runtime.factory() as session:
        assert current_label(session, 2) is not None and current_label(session, 3) is None
    with any_runtime.factory() as session, session.begin():
        undo_last(session, ann, lease=LEASE, now=_now())
    with any_runtime.factory() as session:
        assert current_label(session, 2) is None
        statuses = dict(
            session.execute(select(QueueItem.image_id, QueueItem.status)).tuples().all()
        )
    assert statuses == {1: "claimed", 2: "pending", 3: "pending", 4: "pending"}


def test_skip_hands_the_item_to_others_not_back_to_the_skipper(any_runtime: Runtime) -> None:
    ids = _seed(any_runtime, 2)
    ann, bob = _user(any_runtime, ids["ann"]), _user(any_runtime, ids["bob"])
    item = _claim(any_runtime, ann)
    assert item is not None
    assert _decide(any_runtime, ann, item.id, action="skip") == "skipped"
    mine = _claim(any_runtime, ann)
    assert mine is not None and mine.image_id == 2
    theirs = _claim(any_runtime, bob)
    assert theirs is not None and theirs.image_id == 1
    assert DecisionAction.SKIP.value == "skip"
