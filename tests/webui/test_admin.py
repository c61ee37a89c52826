"""The admins' disagreements page and its JSON; claiming a chosen item; batch lease renewal."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from flask.testing import FlaskClient

from curation.accounts import create_user
from curation.learning import bulk_write
from curation.models import ImageSource, LandmarkClass, NearDuplicateGroup, QueueItem, User
from curation.review.claims import claim_next
from curation.review.decisions import DecisionRequest, decide
from curation.runtime import Runtime
from tests.factories import image_row
from webui import create_app

PASSWORD = "correct horse battery"
_META = re.compile(r'<meta name="csrf-token" content="([^"]+)">')
LEASE = timedelta(minutes=10)


def _seed(runtime: Runtime) -> dict[str, int]:
    """Three queued images; image 1, reported as Gyeongbokgung, is disputed (ann
    labelled it Deoksugung, bob said not a landmark); image 2 waits for a second review."""
    now = datetime.now(UTC)
    with runtime.factory() as session, session.begin():
        for i in (1, 2, 3):
            group = NearDuplicateGroup()
            session.add(group)
            session.flush()
            image_row(session, i, group_id=group.id)
        ids = np.asarray([1, 2, 3], dtype=np.int64)
        bulk_write.write_ranking(
            session,
            bulk_write.RankingRows(
                ranking=0,
                image_ids=ids,
                priority=np.asarray([0.9, 0.5, 0.1]),
                strategy=np.full(3, "cold_start"),
            ),
        )
        bulk_write.open_items(session, ids, now)
        users = {
            name: create_user(session, username=name, password=PASSWORD, role=role, actor="t").id
            for name, role in (
                ("ann", "reviewer"),
                ("bob", "reviewer"),
                ("root", "admin"),
                ("boss", "admin"),
            )
        }
        classes = {}
        for slug, name in (("gyeongbokgung", "Gyeongbokgung"), ("deoksugung", "Deoksugung")):
            landmark = LandmarkClass(slug=slug, display_name=name, status="active")
            session.add(landmark)
            session.flush()
            classes[slug] = landmark.id
        session.add(
            ImageSource(
                image_id=1,
                kind="report",
                identity_key="r1",
                claimed_class_name="Gyeongbokgung",
                claimed_class_id=classes["gyeongbokgung"],
            )
        )
    ann, bob = _user(runtime, users["ann"]), _user(runtime, users["bob"])
    label = DecisionRequest.parse({"action": "label", "class_id": classes["deoksugung"]})
    not_landmark = DecisionRequest.parse({"action": "not_landmark"})
    # Item 1: ann labels, bob disagrees. Item 2: ann's first decision waits for a second.
    for reviewer, request, image_id, outcome in (
        (ann, label, 1, "second_review"),
        (bob, not_landmark, 1, "disputed"),
        (ann, label, 2, "second_review"),
    ):
        with runtime.factory() as session, session.begin():
            item = claim_next(session, reviewer, lease=LEASE, now=now)
            assert item is not None and item.image_id == image_id
            decision = decide(session, reviewer, item.id, request, consensus="all", now=now)
            assert decision.outcome == outcome
    return users | classes


def _user(runtime: Runtime, user_id: int) -> User:
    with runtime.factory() as session:
        return session.get_one(User, user_id)


def _client(runtime: Runtime, username: str) -> tuple[FlaskClient, str]:
    client = create_app({"TESTING": True}, runtime=runtime).test_client()
    token = _META.search(client.get("/login").get_data(as_text=True)).group(1)  # type: ignore[union-attr]
    client.post("/login", data={"username": username, "password": PASSWORD, "csrf_token": token})
    token = _META.search(client.get("/").get_data(as_text=True)).group(1)  # type: ignore[union-attr]
    return client, token


@pytest.fixture
def seeded(runtime: Runtime) -> dict[str, int]:
    return _seed(runtime)


def test_admin_sees_the_disagreements_page(runtime: Runtime, seeded: dict[str, int]) -> None:
    root, _ = _client(runtime, "root")
    home = root.get("/").get_data(as_text=True)
    assert 'href="/admin/disagreements">Disagreements</a>' in home
    page = root.get("/admin/disagreements")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert '<tr data-item-id="1" data-image-id="1">' in html
    assert "Gyeongbokgung" in html  # what the reporter claimed
    assert "Deoksugung" in html and "not a landmark" in html
    assert 'href="/review?item=1&amp;reason=disputed"' in html
    assert 'src="/images/1/thumb"' in html
    assert "script" not in html.split("<main", 1)[1]  # no inline script under the CSP
    waiting = root.get("/admin/disagreements?state=second_review").get_data(as_text=True)
    assert 'data-item-id="2"' in waiting and 'data-item-id="1"' not in waiting
    resolved = root.get("/admin/disagreements?state=resolved").get_data(as_text=True)
    assert "No dispute has been resolved yet." in resolved
    bad = root.get("/admin/disagreements?state=argued")
    assert bad.status_code == 400 and "unknown state" in bad.get_data(as_text=True).lower()


def test_reviewers_get_403_and_strangers_the_login(runtime: Runtime, seeded) -> None:
    ann, _ = _client(runtime, "ann")
    assert 'href="/admin/disagreements"' not in ann.get("/").get_data(as_text=True)
    assert ann.get("/admin/disagreements").status_code == 403
    refused = ann.get("/api/v1/admin/disagreements")
    assert refused.status_code == 403 and refused.get_json()["error"]["code"] == "Forbidden"
    anonymous = create_app({"TESTING": True}, runtime=runtime).test_client()
    page = anonymous.get("/admin/disagreements?state=resolved")
    assert page.status_code == 302
    assert page.headers["Location"].startswith("/login?next=")
    assert anonymous.get("/api/v1/admin/disagreements").status_code == 401


def test_json_contract(runtime: Runtime, seeded: dict[str, int]) -> None:
    root, _ = _client(runtime, "root")
    answer = root.get("/api/v1/admin/disagreements")
    assert answer.status_code == 200
    data = answer.get_json()
    assert set(data) == {"state", "items", "next_cursor", "limit", "counts"}
    assert data["state"] == "disputed" and data["next_cursor"] is None and data["limit"] == 50
    assert data["counts"] == {"disputed": 1, "second_review": 1}
    [row] = data["items"]
    assert row["item_id"] == 1 and row["image_id"] == 1 and row["stage"] == 3
    assert row["thumb_url"] == "/images/1/thumb" and row["image_url"] == "/images/1"
    assert row["review_url"] == "/review?item=1&reason=disputed"
    assert row["first"]["reviewer"] == "ann" and row["first"]["action"] == "label"
    assert row["first"]["class_name"] == "Deoksugung"
    assert datetime.fromisoformat(row["first"]["decided_at"]).tzinfo is not None
    assert row["second"]["reviewer"] == "bob" and row["second"]["action"] == "not_landmark"
    assert row["report"]["claimed_class_name"] == "Gyeongbokgung"
    assert row["resolution"] is None and row["held_by"] is None
    waiting = root.get("/api/v1/admin/disagreements?state=second_review&limit=1").get_json()
    assert [r["item_id"] for r in waiting["items"]] == [2] and waiting["items"][0][
        "review_url"
    ] is None
    bad = root.get("/api/v1/admin/disagreements?after=x")
    assert bad.status_code == 400 and "after" in bad.get_json()["error"]["message"]


def test_an_admin_claims_the_chosen_item_and_decides_it(runtime: Runtime, seeded) -> None:
    root, root_token = _client(runtime, "root")
    boss, boss_token = _client(runtime, "boss")
    ann, ann_token = _client(runtime, "ann")
    refused = ann.post(
        "/review/api/claim", json={"item_id": 1}, headers={"X-CSRF-Token": ann_token}
    )
    assert refused.status_code == 403 and "only admins" in refused.get_json()["error"]["message"]
    claimed = root.post(
        "/review/api/claim", json={"item_id": 1}, headers={"X-CSRF-Token": root_token}
    )
    assert claimed.status_code == 200
    item = claimed.get_json()["item"]
    assert item["item_id"] == 1 and item["stage"] == 3
    assert item["first_decision"] == {"action": "label", "class_name": "Deoksugung"}
    taken = boss.post(
        "/review/api/claim", json={"item_id": 1}, headers={"X-CSRF-Token": boss_token}
    )
    assert taken.status_code == 409 and "held by root" in taken.get_json()["error"]["message"]
    listed = root.get("/api/v1/admin/disagreements").get_json()["items"][0]
    assert listed["held_by"] == "root" and listed["held_until"]
    html = boss.get("/admin/disagreements").get_data(as_text=True)
    assert 'held by <span class="who">root</span>' in html and "/review?item=1" not in html
    decided = root.post(
        "/review/api/items/1/decide",
        json={"action": "label", "class_id": seeded["gyeongbokgung"]},
        headers={"X-CSRF-Token": root_token},
    )
    assert decided.status_code == 200 and decided.get_json()["decision"]["outcome"] == "labelled"
    history = root.get("/api/v1/admin/disagreements?state=resolved").get_json()["items"]
    assert [r["item_id"] for r in history] == [1]
    assert history[0]["resolution"]["reviewer"] == "root"
    assert history[0]["resolution"]["class_name"] == "Gyeongbokgung"
    gone = boss.post("/review/api/claim", json={"item_id": 1}, headers={"X-CSRF-Token": boss_token})
    assert gone.status_code == 409 and "already decided" in gone.get_json()["error"]["message"]
    missing = boss.post(
        "/review/api/claim", json={"item_id": 99}, headers={"X-CSRF-Token": boss_token}
    )
    assert missing.status_code == 404


def test_renew_many_contract(runtime: Runtime, seeded) -> None:
    ann, token = _client(runtime, "ann")
    headers = {"X-CSRF-Token": token}
    page = ann.get("/review").get_data(as_text=True)
    assert 'data-lease-seconds="600"' in page
    item = ann.post("/review/api/claim", json={}, headers=headers).get_json()["item"]
    with runtime.factory() as session:
        before = session.get_one(QueueItem, item["item_id"]).lease_expires_at
    answer = ann.post("/review/api/renew", json={"item_ids": [item["item_id"], 1]}, headers=headers)
    assert answer.status_code == 200
    data = answer.get_json()
    assert set(data["renewed"]) == {str(item["item_id"])}
    assert datetime.fromisoformat(data["renewed"][str(item["item_id"])]).tzinfo is not None
    assert data["lost"] == [{"item_id": 1, "message": "queue item 1 is not claimed by you"}]
    with runtime.factory() as session:
        after = session.get_one(QueueItem, item["item_id"]).lease_expires_at
    assert before is not None and after is not None and after >= before
    for body in ({}, {"item_ids": "1"}, {"item_ids": [True]}, {"item_ids": list(range(21))}):
        bad = ann.post("/review/api/renew", json=body, headers=headers)
        assert bad.status_code == 400 and "item_ids" in bad.get_json()["error"]["message"]
    assert ann.post("/review/api/renew", json={"item_ids": []}).status_code == 400  # no CSRF
    anonymous = create_app({"TESTING": True}, runtime=runtime).test_client()
    assert anonymous.post("/review/api/renew", json={"item_ids": []}).status_code in (400, 401)
