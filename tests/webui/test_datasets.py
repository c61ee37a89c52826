"""The dataset pages and their JSON: list, one version, diff, leaks, snapshots by admins."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select

from curation.accounts import create_user
from curation.classes import rename
from curation.hashing import to_signed64
from curation.labels import append_label, current_label
from curation.models import ClassChange, DatasetVersion, Image, LandmarkClass, Split
from curation.runtime import Runtime, build_runtime
from curation.settings import Settings
from datasets.versions import load_manifest, snapshot
from tests.factories import image_row
from webui import create_app

PASSWORD = "correct horse battery"
_META = re.compile(r'<meta name="csrf-token" content="([^"]+)">')
# Far-apart perceptual hashes: no two images are near-duplicates unless a test makes them.
_HASHES = np.random.default_rng(7).integers(0, 2**63, size=500, dtype=np.int64)


@pytest.fixture
def runtime(settings: Settings) -> Iterator[Runtime]:
    # Low activation thresholds, so that a proposed class becomes active in a snapshot.
    runtime = build_runtime(replace(settings, class_min_train_images=2, class_min_test_images=1))
    yield runtime
    runtime.dispose()


def _seed(runtime: Runtime) -> dict[str, int]:
    """root (admin), ann (reviewer); 40 images of gyeongbokgung, 20 of namsan, 20 of the
    proposed class seokchon-lake, each in its own near-duplicate group."""
    with runtime.factory() as session, session.begin():
        ids = {
            name: create_user(session, username=name, password=PASSWORD, role=role, actor="t").id
            for name, role in (("root", "admin"), ("ann", "reviewer"))
        }
        for slug, status, first, count in (
            ("gyeongbokgung", "active", 1, 40),
            ("namsan", "active", 41, 20),
            ("seokchon-lake", "proposed", 61, 20),
        ):
            landmark = LandmarkClass(slug=slug, display_name=slug.title(), status=status)
            session.add(landmark)
            session.flush()
            ids[slug] = landmark.id
            for n in range(first, first + count):
                image = image_row(session, n, phash_unsigned=int(_HASHES[n]))
                append_label(
                    session, image_id=image.id, class_id=landmark.id, box=None, origin="test"
                )
    return ids


def _client(runtime: Runtime, username: str | None) -> tuple[FlaskClient, str]:
    client = create_app({"TESTING": True}, runtime=runtime).test_client()
    token = _META.search(client.get("/login").get_data(as_text=True)).group(1)  # type: ignore[union-attr]
    if username is None:
        return client, token
    client.post("/login", data={"username": username, "password": PASSWORD, "csrf_token": token})
    token = _META.search(client.get("/").get_data(as_text=True)).group(1)  # type: ignore[union-attr]
    return client, token


def _snap(runtime: Runtime, message: str) -> int:
    with runtime.factory() as session, session.begin():
        return snapshot(session, author="cli:tester", message=message).version.number


def _images_in(runtime: Runtime, ref: str, split: Split) -> list[int]:
    with runtime.factory() as session:
        manifest = load_manifest(session, ref)
    return [int(i) for i in manifest.image_ids[manifest.splits == int(split)]]


def _versions(runtime: Runtime) -> int:
    with runtime.factory() as session:
        return session.scalar(select(func.count()).select_from(DatasetVersion)) or 0


def _other_class(seeded: dict[str, int], class_id: int | None) -> int:
    return seeded["namsan" if class_id == seeded["gyeongbokgung"] else "gyeongbokgung"]


@pytest.fixture
def seeded(runtime: Runtime) -> dict[str, int]:
    return _seed(runtime)


# --- snapshots ------------------------------------------------------------------------------


def test_an_admin_takes_a_snapshot_through_the_form(runtime: Runtime, seeded) -> None:
    root, token = _client(runtime, "root")
    page = root.get("/datasets").get_data(as_text=True)
    assert 'id="snapshot-form"' in page and "No dataset version yet." in page
    assert 'src="/static/datasets.js"' in page and "<script" not in page.split("<main", 1)[1]
    taken = root.post("/datasets/snapshot", data={"message": "first cut", "csrf_token": token})
    assert taken.status_code == 302 and taken.headers["Location"] == "/datasets/v1"
    html = root.get("/datasets/v1").get_data(as_text=True)
    assert "v1 taken: 80 images in 3 classes (80 added, 0 removed, 0 changed)." in html
    # The proposed class had enough images: the snapshot activated it, as the CLI would.
    assert 'id="activated-classes"' in html and "seokchon-lake" in html
    assert 'id="held-back-none"' in html
    # Shown once: a reload no longer carries the snapshot's report.
    again = root.get("/datasets/v1").get_data(as_text=True)
    assert 'id="just-taken"' not in again and "v1 taken" not in again
    with runtime.factory() as session:
        version = session.scalars(select(DatasetVersion)).one()
        assert (version.author, version.author_id) == ("root", seeded["root"])
        assert version.message == "first cut" and version.item_count == 80
        assert session.get_one(LandmarkClass, seeded["seokchon-lake"]).status == "active"
        change = session.scalars(select(ClassChange).where(ClassChange.kind == "activated")).one()
        assert (change.actor, change.actor_id) == ("user:root", seeded["root"])


def test_a_reviewer_may_look_but_not_take_a_snapshot(runtime: Runtime, seeded) -> None:
    _snap(runtime, "first")
    ann, token = _client(runtime, "ann")
    assert 'href="/datasets">Datasets</a>' in ann.get("/").get_data(as_text=True)
    page = ann.get("/datasets")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "Only admins take snapshots." in html and 'id="snapshot-form"' not in html
    assert ann.get("/datasets/v1").status_code == 200
    refused = ann.post("/datasets/snapshot", data={"message": "mine", "csrf_token": token})
    assert refused.status_code == 403 and "admin role" in refused.get_data(as_text=True)
    assert _versions(runtime) == 1


def test_strangers_are_sent_to_the_login(runtime: Runtime, seeded) -> None:
    anonymous, token = _client(runtime, None)
    for path in ("/datasets", "/datasets/v1", "/datasets/diff?from=v1&to=v1", "/datasets/v1/leaks"):
        answer = anonymous.get(path)
        assert answer.status_code == 302 and answer.headers["Location"].startswith("/login?next=")
    for path in ("/api/v1/datasets", "/api/v1/datasets/v1", "/api/v1/datasets/diff"):
        answer = anonymous.get(path)
        assert answer.status_code == 401 and answer.get_json()["error"]["code"] == "Unauthorized"
    posted = anonymous.post("/datasets/snapshot", data={"message": "x", "csrf_token": token})
    assert posted.status_code == 302 and _versions(runtime) == 0


def test_a_snapshot_needs_the_csrf_token_and_a_message(runtime: Runtime, seeded) -> None:
    root, token = _client(runtime, "root")
    missing = root.post("/datasets/snapshot", data={"message": "no token"})
    assert missing.status_code == 400 and "CSRF token is missing" in missing.get_data(as_text=True)
    wrong = root.post("/datasets/snapshot", data={"message": "x", "csrf_token": "forged"})
    assert wrong.status_code == 400 and "wrong or expired" in wrong.get_data(as_text=True)
    blank = root.post("/datasets/snapshot", data={"message": "   ", "csrf_token": token})
    assert blank.status_code == 400
    html = blank.get_data(as_text=True)
    assert 'id="snapshot-error"' in html and "needs a message" in html
    long = root.post("/datasets/snapshot", data={"message": "x" * 2001, "csrf_token": token})
    assert long.status_code == 400 and "longer than 2000" in long.get_data(as_text=True)
    assert _versions(runtime) == 0
    # The form's address, opened by hand, is the list.
    assert root.get("/datasets/snapshot").headers["Location"] == "/datasets"


def test_test_split_changes_without_a_double_review_are_held_back(runtime: Runtime, seeded) -> None:
    _snap(runtime, "first")
    [moved, *_] = _images_in(runtime, "v1", Split.TEST)
    with runtime.factory() as session, session.begin():
        previous = current_label(session, moved)
        assert previous is not None
        other = _other_class(seeded, previous.class_id)
        append_label(
            session, image_id=moved, class_id=other, box=None, origin="test", supersedes=previous
        )
    root, token = _client(runtime, "root")
    taken = root.post("/datasets/snapshot", data={"message": "second", "csrf_token": token})
    assert taken.headers["Location"] == "/datasets/v2"
    html = root.get("/datasets/v2").get_data(as_text=True)
    assert "1 test-split label change held back." in html
    assert f'href="/images/{moved}"' in html and f'src="/images/{moved}/thumb"' in html


# --- pages ------------------------------------------------------------------------------


def _two_versions(runtime: Runtime, seeded: dict[str, int]) -> dict[str, Any]:
    """v1; then a train image relabelled, five images added, a class renamed; v2."""
    _snap(runtime, "first")
    relabelled = _images_in(runtime, "v1", Split.TRAIN)[0]
    with runtime.factory() as session, session.begin():
        previous = current_label(session, relabelled)
        assert previous is not None
        target = _other_class(seeded, previous.class_id)
        append_label(
            session,
            image_id=relabelled,
            class_id=target,
            box=None,
            origin="review",
            author_id=seeded["ann"],
            supersedes=previous,
        )
        added = []
        for n in range(200, 205):
            image = image_row(session, n, phash_unsigned=int(_HASHES[n]))
            append_label(
                session, image_id=image.id, class_id=seeded["namsan"], box=None, origin="test"
            )
            added.append(image.id)
        rename(
            session, seeded["namsan"], "N Seoul Tower", actor="admin:kim", reason="official name"
        )
    _snap(runtime, "second")
    return {"relabelled": relabelled, "target": target, "added": added}


def test_the_list_shows_every_version_newest_first(runtime: Runtime, seeded, monkeypatch) -> None:
    _two_versions(runtime, seeded)
    root, _ = _client(runtime, "root")
    html = root.get("/datasets").get_data(as_text=True)
    rows = re.findall(r'<tr data-version="(\d+)">', html)
    assert rows == ["2", "1"]
    with runtime.factory() as session:
        v1, v2 = session.scalars(select(DatasetVersion).order_by(DatasetVersion.number)).all()
    row2 = html.split('<tr data-version="2">', 1)[1].split("</tr>", 1)[0]
    assert "second" in row2 and "cli:tester" in row2
    assert ">85<" in row2 and ">3<" in row2  # images, classes
    for name in ("train", "validation", "test"):
        assert f'split-{name}">{v2.split_counts[name]}<' in row2
    assert f'<code class="hash" title="{v2.manifest_hash}">{v2.manifest_hash[:12]}</code>' in row2
    assert "changes" in row2 and 'href="/datasets/diff?from=v1&amp;to=v2"' in row2
    row1 = html.split('<tr data-version="1">', 1)[1]
    assert "checkpoint" in row1 and v1.manifest_hash[:12] in row1
    # The compare form: "to" the newest, "from" the one before, by default.
    assert re.search(r'name="to" value="v2"[^>]*\s+checked', html)
    assert re.search(r'name="from" value="v1"[^>]*\s+checked', html)
    # Paginated: one version a page here.
    monkeypatch.setattr("webui.datasets.PAGE_SIZE", 1)
    first = root.get("/datasets").get_data(as_text=True)
    assert re.findall(r'<tr data-version="(\d+)">', first) == ["2"]
    assert 'href="/datasets?before=2" rel="next"' in first
    older = root.get("/datasets?before=2").get_data(as_text=True)
    assert re.findall(r'<tr data-version="(\d+)">', older) == ["1"]
    assert 'rel="next"' not in older and 'href="/datasets">Newest versions' in older
    assert root.get("/datasets?before=two").status_code == 400


def test_the_version_page_shows_images_per_class_and_split(runtime: Runtime, seeded) -> None:
    _two_versions(runtime, seeded)
    root, _ = _client(runtime, "root")
    page = root.get("/datasets/v2")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    with runtime.factory() as session:
        manifest = load_manifest(session, "v2")
        version = session.scalars(select(DatasetVersion).where(DatasetVersion.number == 2)).one()
    per_class = manifest.per_class_split_counts()
    for slug in ("gyeongbokgung", "namsan", "seokchon-lake"):
        row = html.split(f'data-slug="{slug}"', 1)[1].split("</tr>", 1)[0]
        counts = per_class[seeded[slug]]
        for name in ("train", "validation", "test"):
            assert f'split-{name}">{counts[name]}<' in row
        assert f'class="n total">{sum(counts.values())}<' in row
    assert "N Seoul Tower" in html  # the class list as it stood in v2
    # The long tail: most images first.
    order = re.findall(r'<tr data-class-id="\d+" data-slug="([^"]+)"', html)
    assert order == ["gyeongbokgung", "namsan", "seokchon-lake"]
    assert f'id="items">{version.item_count}<' in html
    assert '<a href="/datasets/v1">v1</a>' in html  # the parent
    assert 'href="/datasets/diff?from=v1&amp;to=v2"' in html
    assert 'action="/datasets/v2/leaks"' in html
    first = root.get("/datasets/v1").get_data(as_text=True)
    assert "none: the first version" in first and 'id="diff-parent"' not in first
    # Other spellings lead to the one address of a version.
    assert root.get("/datasets/latest").headers["Location"] == "/datasets/v2"
    assert root.get("/datasets/2").headers["Location"] == "/datasets/v2"


def test_bad_and_unknown_versions(runtime: Runtime, seeded) -> None:
    _snap(runtime, "first")
    root, _ = _client(runtime, "root")
    bad = root.get("/datasets/v1x")
    assert bad.status_code == 400
    assert "is not a version: use v&lt;number&gt;, &lt;number&gt; or latest" in bad.get_data(
        as_text=True
    )
    unknown = root.get("/datasets/v9")
    assert unknown.status_code == 404
    assert "Dataset version v9 does not exist" in unknown.get_data(as_text=True)
    assert root.get("/datasets/v9/leaks").status_code == 404
    assert root.get("/datasets/diff?from=v1&to=v9").status_code == 404
    assert root.get("/datasets/diff?from=first&to=v1").status_code == 400
    no_parent = root.get("/datasets/diff?to=v1")
    assert no_parent.status_code == 400 and "no parent" in no_parent.get_data(as_text=True)
    for limit in ("-1", "ten", "10001", "1.5"):
        answer = root.get(f"/datasets/diff?from=v1&to=v1&limit={limit}")
        assert answer.status_code == 400, limit
        text = answer.get_data(as_text=True).lower()
        assert "limit must be a whole number from 0 to 10000" in text
    assert root.get("/datasets/v1/leaks?max_distance=65").status_code == 400


def test_the_diff_page(runtime: Runtime, seeded) -> None:
    changed = _two_versions(runtime, seeded)
    root, _ = _client(runtime, "root")
    page = root.get("/datasets/diff?from=v1&to=v2")
    assert page.status_code == 200
    html = page.get_data(as_text=True)

    def count(name: str) -> str:
        return html.split(f'id="count-{name}"><span class="big">', 1)[1].split("<", 1)[0]

    assert (count("added"), count("removed"), count("relabelled")) == ("5", "0", "1")
    assert count("classes") == "1"  # namsan renamed
    # The renamed class and its history: who and why.
    renamed = html.split('<tr class="renamed"', 1)[1].split("</tr>", 1)[0]
    assert "Namsan → N Seoul Tower" in renamed
    history = html.split('<tr data-kind="renamed">', 1)[1].split("</tr>", 1)[0]
    assert "renamed from &#39;Namsan&#39; to &#39;N Seoul Tower&#39;" in history
    assert "admin:kim" in history and "official name" in history
    # The label change: from, to, by whom.
    label = html.split(f'<tr data-image-id="{changed["relabelled"]}">', 1)[1].split("</tr>", 1)[0]
    assert "ann" in label and "review" in label
    slugs = {seeded["gyeongbokgung"]: "gyeongbokgung", seeded["namsan"]: "namsan"}
    assert f'class="slug">{slugs[changed["target"]]}<' in label
    assert all(f'href="/images/{n}"' in html for n in changed["added"])
    assert "more" not in html.split('id="images-added"', 1)[1].split("</ul>", 1)[1][:60]
    # Truncated lists say how many they left out.
    short = root.get("/datasets/diff?from=v1&to=v2&limit=2").get_data(as_text=True)
    listed = re.findall(r'<li><a href="/images/(\d+)">', short.split('id="images-added"')[1])
    assert [int(i) for i in listed] == changed["added"][:2]
    assert '<p class="muted more" data-more="3">… and 3 more images added not listed' in short
    # "from" left out: the parent of "to"; "to" left out: the latest.
    assert root.get("/datasets/diff?to=v2").status_code == 200
    assert "What changed from" in root.get("/datasets/diff").get_data(as_text=True)


def test_the_leak_check_page(runtime: Runtime, seeded) -> None:
    _snap(runtime, "first")
    root, _ = _client(runtime, "root")
    clean = root.get("/datasets/v1/leaks")
    assert clean.status_code == 200
    assert 'id="leaks-clean"' in clean.get_data(as_text=True)
    train = _images_in(runtime, "v1", Split.TRAIN)[0]
    test = _images_in(runtime, "v1", Split.TEST)[0]
    with runtime.factory() as session, session.begin():
        session.get_one(Image, test).phash = to_signed64(int(_HASHES[train]))
    html = root.get("/datasets/v1/leaks").get_data(as_text=True)
    assert 'id="leaks-found"' in html and "1 leaking pair" in html
    row = html.split(f'<tr data-a="{train}" data-b="{test}"', 1)[1].split("</tr>", 1)[0]
    assert f'src="/images/{train}/thumb"' in row and f'src="/images/{test}/thumb"' in row
    assert "near-duplicate" in row and 'class="n">0<' in row
    data = root.get("/api/v1/datasets/v1/leaks").get_json()
    assert data["clean"] is False and data["leaking_pairs"] == 1
    assert data["pairs"][0]["a"] == f"image {train}" and data["version"] == "v1"
    # Distance 0 still catches the identical hashes.
    assert root.get("/api/v1/datasets/v1/leaks?max_distance=0").get_json()["leaking_pairs"] == 1


# --- JSON -----------------------------------------------------------------------------------


def test_json_contracts(runtime: Runtime, seeded) -> None:
    changed = _two_versions(runtime, seeded)
    ann, _ = _client(runtime, "ann")
    listing = ann.get("/api/v1/datasets")
    assert listing.status_code == 200
    data = listing.get_json()
    assert set(data) == {"versions", "total", "limit", "next"}
    assert data["total"] == 2 and data["next"] is None and data["limit"] == 50
    assert [v["version"] for v in data["versions"]] == ["v2", "v1"]
    v2 = data["versions"][0]
    assert v2["parent_version"] == "v1" and v2["items"] == 85 and v2["classes"] == 3
    assert v2["stored_as"] == "changes" and len(v2["manifest_hash"]) == 64
    assert v2["links"]["page"] == "/datasets/v2"
    assert v2["links"]["diff_from_parent"] == "/api/v1/datasets/diff?from=v1&to=v2"
    assert data["versions"][1]["parent_version"] is None

    one = ann.get("/api/v1/datasets/latest").get_json()
    assert one["version"] == "v2" and one["class_count"] == 3
    by_slug = {c["slug"]: c for c in one["classes"]}
    assert by_slug["namsan"]["display_name"] == "N Seoul Tower"
    assert sum(sum(c["images"].values()) for c in one["classes"]) == 85
    assert set(by_slug["namsan"]["images"]) == {"train", "validation", "test"}

    diff = ann.get("/api/v1/datasets/diff?from=v1&to=v2&limit=3").get_json()
    assert diff["counts"] == {
        "added": 5,
        "removed": 0,
        "relabelled": 1,
        "boxes_changed": 0,
        "split_moves": diff["counts"]["split_moves"],
    }
    assert diff["added"] == changed["added"][:3] and diff["listed_per_kind"] == 3
    [label] = diff["label_changes"]
    assert label["image_id"] == changed["relabelled"] and label["by"] == "ann"
    assert diff["classes"]["renamed"][0]["to"] == "N Seoul Tower"
    assert diff["classes"]["history"][0]["actor"] == "admin:kim"
    assert ann.get("/api/v1/datasets/diff?from=v1&to=v2").get_json()["listed_per_kind"] == 1000

    for path, status, code in (
        ("/api/v1/datasets/vv2", 400, "RejectedInput"),
        ("/api/v1/datasets/v7", 404, "NotFound"),
        ("/api/v1/datasets/diff?from=v1&to=v7", 404, "NotFound"),
        ("/api/v1/datasets/diff?from=v1&to=x", 400, "RejectedInput"),
        ("/api/v1/datasets/diff?from=v1&to=v2&limit=lots", 400, "RejectedInput"),
        ("/api/v1/datasets?before=0", 400, "RejectedInput"),
    ):
        answer = ann.get(path)
        assert answer.status_code == status, path
        error = answer.get_json()["error"]
        assert error["code"] == code and error["message"], path
    assert "v7 does not exist" in ann.get("/api/v1/datasets/v7").get_json()["error"]["message"]
