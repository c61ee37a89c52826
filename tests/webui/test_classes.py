"""The class pages: everyone signed in reads them, admins change classes (CSRF-protected)."""

from __future__ import annotations

import re

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select

from curation import classes
from curation.accounts import create_user
from curation.labels import append_label, current_label
from curation.models import ClassChange, LandmarkClass, QueueItem
from curation.runtime import Runtime
from tests.factories import image_row
from webui import create_app

PASSWORD = "correct horse battery"
_META = re.compile(r'<meta name="csrf-token" content="([^"]+)">')


def _client(runtime: Runtime, username: str) -> tuple[FlaskClient, str]:
    client = create_app({"TESTING": True}, runtime=runtime).test_client()
    token = _META.search(client.get("/login").get_data(as_text=True)).group(1)  # type: ignore[union-attr]
    client.post("/login", data={"username": username, "password": PASSWORD, "csrf_token": token})
    token = _META.search(client.get("/").get_data(as_text=True)).group(1)  # type: ignore[union-attr]
    return client, token


@pytest.fixture
def seeded(runtime: Runtime) -> dict[str, int]:
    """Users ann (reviewer) and root (admin); Gyeongbokgung (3 images), Namsan Tower
    (2 images), Deoksugung (no images)."""
    with runtime.factory() as session, session.begin():
        for name, role in (("ann", "reviewer"), ("root", "admin")):
            create_user(session, username=name, password=PASSWORD, role=role, actor="t")
        ids: dict[str, int] = {}
        n = 0
        for name, aliases, images in (
            ("Gyeongbokgung", [("ko", "경복궁")], 3),
            ("Namsan Tower", [("ko", "남산타워")], 2),
            ("Deoksugung", [], 0),
        ):
            landmark = classes.propose_class(session, name, aliases=aliases, actor="seed")
            ids[landmark.slug] = landmark.id
            for _ in range(images):
                n += 1
                image = image_row(session, n)
                append_label(session, image_id=image.id, class_id=landmark.id, box=None, origin="t")
    return ids


def _class(runtime: Runtime, class_id: int) -> LandmarkClass:
    with runtime.factory() as session:
        landmark = session.get_one(LandmarkClass, class_id)
        _ = landmark.aliases
        return landmark


def _changes(runtime: Runtime) -> int:
    with runtime.factory() as session:
        return int(session.scalar(select(func.count()).select_from(ClassChange)) or 0)


def test_the_list_shows_names_counts_and_history(runtime: Runtime, seeded) -> None:
    ann, _ = _client(runtime, "ann")
    assert 'href="/classes">Classes</a>' in ann.get("/").get_data(as_text=True)
    page = ann.get("/classes")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    row = html.split(f'data-class-id="{seeded["gyeongbokgung"]}"', 1)[1].split("</tr>", 1)[0]
    assert "Gyeongbokgung" in row and "경복궁" in row and '<span class="lang">ko</span>' in row
    assert '<td class="n">3</td>' in row
    assert "proposed as &#39;Gyeongbokgung&#39;" in row and "seed" in row
    main = html.split("<main", 1)[1]
    assert "<script" not in main and "style=" not in main  # the CSP allows neither inline
    assert 'id="propose-form"' not in html and 'id="classes-admins-only"' in html
    detail = ann.get(f"/classes/{seeded['namsan-tower']}").get_data(as_text=True)
    assert "남산타워" in detail and 'id="rename-form"' not in detail
    assert ann.get("/classes/999").status_code == 404
    proposed_only = ann.get("/classes?status=active").get_data(as_text=True)
    assert "No classes with status active yet." in proposed_only
    assert ann.get("/classes?status=gone").status_code == 400
    anonymous = create_app({"TESTING": True}, runtime=runtime).test_client()
    assert anonymous.get("/classes").headers["Location"].startswith("/login?next=")


def test_reviewers_cannot_change_classes(runtime: Runtime, seeded) -> None:
    ann, token = _client(runtime, "ann")
    before = _changes(runtime)
    class_id = seeded["gyeongbokgung"]
    for path, data in (
        ("/classes", {"name": "Sneaky"}),
        (f"/classes/{class_id}/rename", {"name": "Sneaky"}),
        (f"/classes/{class_id}/aliases", {"name": "Sneaky"}),
        (f"/classes/{class_id}/merge", {"into": "deoksugung"}),
        (f"/classes/{class_id}/split", {"into": "A\nB"}),
        (f"/classes/{class_id}/retire", {}),
    ):
        refused = ann.post(path, data={**data, "csrf_token": token})
        assert refused.status_code == 403, path
    assert _changes(runtime) == before
    assert _class(runtime, class_id).status == "proposed"


def test_changes_need_the_csrf_token(runtime: Runtime, seeded) -> None:
    root, _ = _client(runtime, "root")
    refused = root.post(f"/classes/{seeded['deoksugung']}/retire", data={"reason": "x"})
    assert refused.status_code == 400 and "CSRF token is missing" in refused.get_data(as_text=True)
    wrong = root.post(f"/classes/{seeded['deoksugung']}/retire", data={"csrf_token": "nope"})
    assert wrong.status_code == 400
    assert _class(runtime, seeded["deoksugung"]).status == "proposed"


def test_an_admin_proposes_a_class(runtime: Runtime, seeded) -> None:
    root, token = _client(runtime, "root")
    assert 'id="propose-form"' in root.get("/classes").get_data(as_text=True)
    made = root.post(
        "/classes",
        data={
            "csrf_token": token,
            "name": "Bukchon Hanok Village",
            "language": "",
            "aliases": "ko:북촌한옥마을\n\n北村韩屋村\n",
            "latitude": "37.5826",
            "longitude": "126.9836",
            "reason": "reports keep coming",
        },
    )
    assert made.status_code == 302
    page = root.get(made.headers["Location"]).get_data(as_text=True)
    assert "Class Bukchon Hanok Village proposed." in page
    assert "북촌한옥마을" in page and "北村韩屋村" in page and "37.5826" in page
    assert "reports keep coming" in page and "user:root" in page
    with runtime.factory() as session:
        landmark = classes.resolve_class(session, "북촌한옥마을")
        assert landmark.status == "proposed" and landmark.longitude == 126.9836


@pytest.mark.parametrize(
    ("data", "status", "message"),
    [
        ({"name": "gyeongbokgung"}, 409, "already belongs to class Gyeongbokgung"),
        ({"name": "New", "aliases": "ko:남산타워"}, 409, "already belongs to class Namsan Tower"),
        ({"name": "New", "latitude": "north", "longitude": "1"}, 400, "latitude must be a number"),
        ({"name": "New", "latitude": "1"}, 400, "both latitude and longitude"),
        ({"name": ""}, 400, "class name is empty"),
    ],
)
def test_a_refused_proposal_shows_why_and_keeps_the_form(
    runtime: Runtime, seeded, data: dict[str, str], status: int, message: str
) -> None:
    root, token = _client(runtime, "root")
    before = _changes(runtime)
    refused = root.post("/classes", data={**data, "csrf_token": token})
    assert refused.status_code == status
    html = refused.get_data(as_text=True)
    assert "Not proposed:" in html and message in html.replace("&#39;", "'")
    assert f'value="{data["name"]}"' in html  # what was typed is kept
    assert _changes(runtime) == before


def test_an_admin_renames_adds_a_name_merges_splits_and_retires(runtime: Runtime, seeded) -> None:
    root, token = _client(runtime, "root")
    tower, palace, deoksu = seeded["namsan-tower"], seeded["gyeongbokgung"], seeded["deoksugung"]

    def post(path: str, **data: str):  # type: ignore[no-untyped-def]
        return root.post(path, data={**data, "csrf_token": token})

    renamed = post(f"/classes/{tower}/rename", name="N Seoul Tower", reason="official name")
    assert renamed.status_code == 302 and renamed.headers["Location"] == f"/classes/{tower}"
    page = root.get(f"/classes/{tower}").get_data(as_text=True)
    assert "Renamed to N Seoul Tower; the old name stays searchable." in page
    assert "renamed from &#39;Namsan Tower&#39; to &#39;N Seoul Tower&#39;" in page
    with runtime.factory() as session:
        assert classes.resolve_class(session, "Namsan Tower").id == tower

    assert post(f"/classes/{tower}/aliases", name="Seoul Tower", language="en").status_code == 302
    assert "Seoul Tower" in [a.name for a in _class(runtime, tower).aliases]

    merged = post(f"/classes/{deoksu}/merge", into="n seoul tower")
    assert merged.status_code == 302
    assert "Merged into N Seoul Tower: 0 labels moved." in root.get(
        merged.headers["Location"]
    ).get_data(as_text=True)
    assert _class(runtime, deoksu).status == "retired"

    split = post(f"/classes/{palace}/split", into="Geunjeongjeon\r\nGwanghwamun\r\n")
    assert split.status_code == 302
    page = root.get(split.headers["Location"]).get_data(as_text=True)
    assert "Split into Geunjeongjeon, Gwanghwamun: 3 images are back in review" in page
    assert 'id="class-retired"' in page and 'id="rename-form"' not in page
    with runtime.factory() as session:
        items = session.scalars(select(QueueItem)).all()
        assert sorted(i.status for i in items) == ["pending"] * 3
        assert {current_label(session, i.image_id).class_id for i in items} == {palace}  # type: ignore[union-attr]

    retired = post(f"/classes/{tower}/retire", reason="closed for good")
    assert retired.status_code == 302
    assert _class(runtime, tower).status == "retired"
    listing = root.get("/classes?status=retired").get_data(as_text=True)
    for slug in ("namsan-tower", "gyeongbokgung", "deoksugung"):
        assert f'data-slug="{slug}"' in listing


def test_a_refused_change_is_shown_and_nothing_applied(runtime: Runtime, seeded) -> None:
    root, token = _client(runtime, "root")
    palace, deoksu = seeded["gyeongbokgung"], seeded["deoksugung"]
    before = _changes(runtime)

    def post(path: str, **data: str):  # type: ignore[no-untyped-def]
        return root.post(path, data={**data, "csrf_token": token})

    for response, status, message in (
        (post(f"/classes/{palace}/merge", into="경복궁"), 400, "cannot be merged into itself"),
        (post(f"/classes/{palace}/merge", into="Nowhere"), 404, "no class is called"),
        (post(f"/classes/{palace}/merge", into=""), 400, "name the class to merge into"),
        (post(f"/classes/{palace}/split", into="Only one"), 400, "at least 2 new class names"),
        (post(f"/classes/{palace}/rename", name="Deoksugung"), 409, "already belongs"),
        (post(f"/classes/{palace}/aliases", name="경복궁", language="ko"), 409, "already a name"),
        (post("/classes/999/retire"), 404, "999 does not exist"),
    ):
        assert response.status_code == status, message
        html = response.get_data(as_text=True).replace("&#39;", "'")
        assert message in html
    page = post(f"/classes/{palace}/merge", into="경복궁").get_data(as_text=True)
    assert '<p class="error" role="alert" id="class-error">Not changed:' in page
    assert _changes(runtime) == before
    assert post(f"/classes/{deoksu}/retire").status_code == 302
    again = post(f"/classes/{deoksu}/retire")
    assert again.status_code == 409 and "already retired" in again.get_data(as_text=True)
