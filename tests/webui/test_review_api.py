"""The review JSON API through Flask: auth, CSRF, ownership of claims, errors."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import numpy as np
from flask.testing import FlaskClient

from curation.accounts import create_user
from curation.learning import bulk_write
from curation.models import ClassAlias, LandmarkClass, NearDuplicateGroup
from curation.runtime import Runtime
from curation.taxonomy import search_key
from tests.factories import image_row
from webui import create_app

PASSWORD = "correct horse battery"
_META = re.compile(r'<meta name="csrf-token" content="([^"]+)">')


def _seed(runtime: Runtime) -> int:
    with runtime.factory() as session, session.begin():
        group = NearDuplicateGroup()
        session.add(group)
        session.flush()
        for i in (1, 2, 3):
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
        bulk_write.open_items(session, ids, datetime.now(UTC))
        for name in ("ann", "bob"):
            create_user(session, username=name, password=PASSWORD, role="reviewer", actor="t")
        landmark = LandmarkClass(slug="deoksugung", display_name="Deoksugung", status="active")
        landmark.aliases.append(
            ClassAlias(language="ko", name="덕수궁", search_key=search_key("덕수궁"))
        )
        session.add(landmark)
        session.flush()
        return landmark.id


def _client(runtime: Runtime, username: str) -> tuple[FlaskClient, str]:
    client = create_app({"TESTING": True}, runtime=runtime).test_client()
    token = _META.search(client.get("/login").get_data(as_text=True)).group(1)  # type: ignore[union-attr]
    client.post("/login", data={"username": username, "password": PASSWORD, "csrf_token": token})
    token = _META.search(client.get("/").get_data(as_text=True)).group(1)  # type: ignore[union-attr]
    return client, token


def test_claim_decide_undo_round_trip(runtime: Runtime) -> None:
    class_id = _seed(runtime)
    client, token = _client(runtime, "ann")
    headers = {"X-CSRF-Token": token}
    item = client.post("/review/api/claim", json={}, headers=headers).get_json()["item"]
    assert item["image_id"] == 1 and item["reasons"] and item["image_url"] == "/images/1"
    assert client.get(item["thumb_url"]).status_code == 404  # a row without its file
    found = client.get("/review/api/classes?q=덕수궁").get_json()["classes"]
    assert [c["id"] for c in found] == [class_id]
    decided = client.post(
        f"/review/api/items/{item['item_id']}/decide",
        json={"action": "label", "class_id": class_id, "box": [1, 1, 20, 20]},
        headers=headers,
    )
    assert decided.status_code == 200, decided.get_json()
    assert decided.get_json()["decision"]["outcome"] == "labelled"
    assert decided.get_json()["decision"]["applied_to"] == [1]
    examples = client.get(f"/review/api/classes/{class_id}/examples").get_json()["images"]
    assert [e["image_id"] for e in examples] == [1]
    undone = client.post("/review/api/undo", json={}, headers=headers)
    assert undone.status_code == 200 and undone.get_json()["item"]["image_id"] == 1
    mine = client.get("/review/api/mine").get_json()["items"]
    assert [m["image_id"] for m in mine] == [1]


def test_refusals_name_the_problem(runtime: Runtime) -> None:
    _seed(runtime)
    ann, ann_token = _client(runtime, "ann")
    bob, bob_token = _client(runtime, "bob")
    item = ann.post("/review/api/claim", json={}, headers={"X-CSRF-Token": ann_token}).get_json()
    item_id = item["item"]["item_id"]
    # No CSRF token: refused before anything happens.
    assert ann.post("/review/api/claim", json={}).status_code == 400
    # Deciding an item someone else holds.
    theirs = bob.post(
        f"/review/api/items/{item_id}/decide",
        json={"action": "not_landmark"},
        headers={"X-CSRF-Token": bob_token},
    )
    assert theirs.status_code == 409
    assert "not claimed by you" in theirs.get_json()["error"]["message"]
    # A reviewer calling an admin page.
    assert bob.get("/admin/users").status_code == 403
    # Bad input.
    bad = ann.post(
        f"/review/api/items/{item_id}/decide",
        json={"action": "label", "class_id": "x"},
        headers={"X-CSRF-Token": ann_token},
    )
    assert bad.status_code == 400 and "class_id" in bad.get_json()["error"]["message"]
    filters = ann.post(
        "/review/api/claim", json={"source": "ftp"}, headers={"X-CSRF-Token": ann_token}
    )
    assert filters.status_code == 400 and "source" in filters.get_json()["error"]["message"]
    # Logged out: JSON 401, images too.
    anonymous = create_app({"TESTING": True}, runtime=runtime).test_client()
    assert anonymous.get("/review/api/mine").status_code == 401
    assert anonymous.get("/images/1").status_code in (302, 401)
