"""A new landmark enters cleanly: proposed, labelled in the review queue, activated by a
snapshot, shown in the diff, and found in the queue's class search by either name."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from curation.accounts import create_user
from curation.classes import propose_class
from curation.labels import append_label
from curation.learning import bulk_write
from curation.models import LandmarkClass, NearDuplicateGroup, User
from curation.review.claims import claim_next
from curation.review.decisions import DecisionRequest, decide
from curation.review.views import search_classes
from datasets.activation import class_activation
from datasets.diff import diff_versions
from datasets.versions import find_version, snapshot
from tests.factories import image_row

SNU = "Seoul National University"
SNU_KO = "서울대학교"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def any_runtime(request):
    return request.getfixturevalue("runtime" if request.param == "sqlite" else "pg_runtime")


def _now() -> datetime:
    return datetime.now(UTC)


def test_seoul_national_university_enters_through_the_queue_and_a_snapshot(any_runtime) -> None:
    with any_runtime.factory() as session, session.begin():
        palace = LandmarkClass(slug="gyeongbokgung", display_name="Gyeongbokgung", status="active")
        session.add(palace)
        session.flush()
        for n in range(1, 41):  # the existing dataset
            group = NearDuplicateGroup()
            session.add(group)
            session.flush()
            image = image_row(session, n, group_id=group.id)
            append_label(
                session, image_id=image.id, class_id=palace.id, box=None, origin="import:t"
            )
        # 40 crawled photos of the campus wait in the queue.
        groups = [NearDuplicateGroup() for _ in range(40)]
        session.add_all(groups)
        session.flush()
        ids = np.array(
            [image_row(session, 100 + k, group_id=groups[k].id).id for k in range(40)],
            dtype=np.int64,
        )
        bulk_write.write_ranking(
            session,
            bulk_write.RankingRows(
                ranking=0,
                image_ids=ids,
                priority=1.0 - (ids - 99) / 100,
                strategy=np.full(40, "cold_start"),
            ),
        )
        bulk_write.open_items(session, ids, _now())
        reviewer = create_user(
            session, username="ann", password="correct horse 1", role="reviewer", actor="test"
        )
        admin = create_user(
            session, username="root", password="correct horse 1", role="admin", actor="test"
        )
    with any_runtime.factory() as session, session.begin():
        v1 = snapshot(session, author="test", message="before the campus").version

    with any_runtime.factory() as session, session.begin():
        admin_user = session.get_one(User, admin.id)
        snu = propose_class(
            session,
            SNU,
            aliases=[("ko", SNU_KO)],
            actor=admin_user,
            reason="every university in Seoul",
        )
        snu_id = snu.id
    assert snu.status == "proposed"

    # A reviewer finds the class by its Korean name and labels the 40 photos.
    ann = _user(any_runtime, reviewer.id)
    for _ in range(40):
        with any_runtime.factory() as session, session.begin():
            found = search_classes(session, "서울대")
            assert [c["id"] for c in found] == [snu_id]
            item = claim_next(session, ann, lease=timedelta(minutes=10), now=_now())
            assert item is not None
            decide(
                session,
                ann,
                item.id,
                DecisionRequest.parse({"action": "label", "class_id": snu_id}),
                consensus="disagreements",
                now=_now(),
            )

    with any_runtime.factory() as session, session.begin():
        result = snapshot(
            session,
            author="root",
            message="Seoul National University",
            activate=class_activation(min_train=20, min_test=3, actor="test"),
        )
        v2 = result.version
    assert result.added == 40
    assert result.activated == ["seoul-national-university"]

    with any_runtime.factory() as session:
        difference = diff_versions(session, find_version(session, "v1"), v2).as_dict()
        assert v1.number == 1
        assert [c["display_name"] for c in difference["classes"]["added"]] == [SNU]
        added = difference["classes"]["added"][0]
        assert added["status"] == "active" and ["ko", SNU_KO] in added["aliases"]
        kinds = [(h["slug"], h["kind"]) for h in difference["classes"]["history"]]
        assert kinds == [
            ("seoul-national-university", "proposed"),
            ("seoul-national-university", "activated"),
        ]
        assert difference["counts"]["added"] == 40
        # The queue's class search finds it by either name, folded.
        for query in ("seoul national", "SeoulNationalUniversity", SNU_KO, "서울 대학교"):
            assert [c["id"] for c in search_classes(session, query)] == [snu_id], query


def _user(runtime, user_id: int) -> User:
    with runtime.factory() as session:
        user = session.get_one(User, user_id)
        session.expunge(user)
        return user
