"""The dashboard through Flask: sign-in, the page's SVG charts and tables, the CSV
downloads (content, file names, formula injection), and the window parameters."""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime, timedelta

import pytest
from flask.testing import FlaskClient

from curation.accounts import create_user
from curation.dashboard import record_queue_snapshot
from curation.labels import append_label
from curation.models import (
    EmbeddingSpace,
    LandmarkClass,
    ModelVersion,
    QueueItem,
    QueueOrder,
    ReviewDecision,
)
from curation.runtime import Runtime
from tests.factories import image_row
from webui import create_app
from webui.dashboard import csv_cell

PASSWORD = "correct horse battery"
_META = re.compile(r'<meta name="csrf-token" content="([^"]+)">')
# Class names as people type them, some of them hostile.
CLASS_NAMES = {
    "gyeongbokgung": "Gyeongbokgung",
    "formula": '=HYPERLINK("http://evil.example","click")',
    "at": "@SUM(A1:A9)",
    "plus": "+1+2",
    "tab": "\tTabbed",
    "korean": "경복궁",
    "markup": "<script>alert(1)</script>",
}
CSV_NAMES = ("queue", "decisions", "classes", "accuracy")


def _client(runtime: Runtime, username: str | None = "ann") -> FlaskClient:
    client = create_app({"TESTING": True}, runtime=runtime).test_client()
    if username is not None:
        token = _META.search(client.get("/login").get_data(as_text=True)).group(1)  # type: ignore[union-attr]
        response = client.post(
            "/login", data={"username": username, "password": PASSWORD, "csrf_token": token}
        )
        assert response.status_code == 302
    return client


def _account(runtime: Runtime) -> None:
    with runtime.factory() as session, session.begin():
        create_user(session, username="ann", password=PASSWORD, role="reviewer", actor="test")


def _seed(runtime: Runtime) -> dict[str, int]:
    """Classes (some named like formulas), labels, a queue with a snapshot, decisions
    by ann and by "-2-1" (a username that a spreadsheet reads as a formula), a model."""
    now = datetime.now(UTC)
    ids: dict[str, int] = {}
    with runtime.factory() as session, session.begin():
        ann = create_user(session, username="ann", password=PASSWORD, role="reviewer", actor="t")
        minus = create_user(session, username="-2-1", password=PASSWORD, role="reviewer", actor="t")
        for key, name in CLASS_NAMES.items():
            landmark = LandmarkClass(slug=key, display_name=name, status="active")
            session.add(landmark)
            session.flush()
            ids[key] = landmark.id
        for n in range(1, 7):
            image_row(session, n)
        for image, key in ((1, "gyeongbokgung"), (2, "gyeongbokgung"), (3, "formula")):
            append_label(session, image_id=image, class_id=ids[key], box=None, origin="test")
        for image, strategy in ((4, "cold_start"), (5, "cold_start"), (6, "cold_start")):
            session.add(QueueItem(image_id=image, status="pending"))
            session.add(QueueOrder(ranking=0, image_id=image, priority=0.5, strategy=strategy))
        session.flush()
        record_queue_snapshot(session, now - timedelta(hours=1))
        item = session.query(QueueItem).filter_by(image_id=4).one()
        for reviewer, action, age in (
            (ann.id, "accept", timedelta(minutes=5)),
            (ann.id, "skip", timedelta(minutes=6)),
            (minus.id, "label", timedelta(hours=2)),
            (minus.id, "label", timedelta(hours=30)),  # outside the default 24 hours
        ):
            session.add(
                ReviewDecision(
                    item_id=item.id,
                    image_id=4,
                    reviewer_id=reviewer,
                    stage=1,
                    action=action,
                    outcome="skipped" if action == "skip" else "labelled",
                    created_at=now - age,
                )
            )
        space = EmbeddingSpace(key="s", backbone="b", weights_id="w", dim=4)
        session.add(space)
        session.flush()
        for status, accuracy in (("retired", 0.5), ("champion", 0.8125)):
            session.add(
                ModelVersion(
                    space_id=space.id,
                    class_ids=[],
                    artifact_key=f"a-{status}",
                    seed=0,
                    metrics={"cross_validated_accuracy": accuracy, "training_images": 40},
                    status=status,
                )
            )
    return ids


def _rows(body: bytes) -> list[list[str]]:
    assert body.startswith("\ufeff".encode())  # so that Excel reads UTF-8
    return list(csv.reader(io.StringIO(body.decode("utf-8-sig"), newline="")))


# --- sign-in ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/dashboard", *(f"/dashboard/{n}.csv" for n in CSV_NAMES)])
def test_the_dashboard_needs_a_signed_in_user(runtime: Runtime, path: str) -> None:
    client = _client(runtime, None)
    response = client.get(path)
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login?next=")
    refused = client.get(path, headers={"Accept": "application/json"})
    assert refused.status_code == 401


def test_the_nav_links_to_the_dashboard(runtime: Runtime) -> None:
    _account(runtime)
    page = _client(runtime).get("/").get_data(as_text=True)
    assert '<a href="/dashboard">Dashboard</a>' in page


# --- the page -----------------------------------------------------------------------------


def test_the_page_draws_four_svg_charts_with_tables_and_downloads(runtime: Runtime) -> None:
    _seed(runtime)
    response = _client(runtime).get("/dashboard")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    for chart in ("chart-queue", "chart-decisions", "chart-classes", "chart-accuracy"):
        assert f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" id="{chart}"' in page
        assert f'aria-labelledby="{chart}-title {chart}-desc"' in page
    assert page.count("<details>") == 4 and page.count('<table class="data">') == 4
    for name in CSV_NAMES:
        assert f'href="/dashboard/{name}.csv' in page
    assert 'href="/dashboard/decisions.csv?hours=24"' in page
    assert 'href="/dashboard/queue.csv?days=7"' in page
    # The strict CSP: nothing inline to run or to style.
    assert "<script" not in page.replace("&lt;script", "")
    assert "style=" not in page and "<style" not in page
    assert "Content-Security-Policy" in response.headers
    # User input is escaped, in the SVG and in the tables.
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    # Tooltips and headline numbers.
    assert "<title>Gyeongbokgung (active): 2 images</title>" in page
    assert "cold_start, now (live): 3 pending" in page
    assert "81.2%" in page  # the champion's accuracy, in the card
    assert "-2-1" in page and "ann" in page


def test_an_empty_platform_shows_empty_states(runtime: Runtime) -> None:
    _account(runtime)
    page = _client(runtime).get("/dashboard").get_data(as_text=True)
    assert "No pending items in this window" in page
    assert "No snapshots in this window yet" in page
    assert "No decisions in the last 24 hours" in page
    assert "No classes yet" in page
    assert "No model trained yet" in page
    assert "no champion model yet" in page
    assert '<svg xmlns="http://www.w3.org/2000/svg"' not in page


def test_models_without_accuracy_say_so(runtime: Runtime) -> None:
    _account(runtime)
    with runtime.factory() as session, session.begin():
        space = EmbeddingSpace(key="s", backbone="b", weights_id="w", dim=4)
        session.add(space)
        session.flush()
        session.add(
            ModelVersion(
                space_id=space.id, class_ids=[], artifact_key="a", seed=0, status="champion"
            )
        )
    page = _client(runtime).get("/dashboard").get_data(as_text=True)
    assert "1 model version, none with a recorded accuracy" in page
    assert "recorded no accuracy" in page


def test_a_window_in_the_query_changes_the_page(runtime: Runtime) -> None:
    _seed(runtime)
    page = _client(runtime).get("/dashboard?hours=48&days=1").get_data(as_text=True)
    assert "Decisions, last 48 h" in page
    assert 'href="/dashboard/decisions.csv?hours=48"' in page
    assert 'href="/dashboard/queue.csv?days=1"' in page
    assert 'name="hours" value="48"' in page


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("hours=0", "hours must be a whole number from 1 to 168, not 0"),
        ("hours=169", "hours must be a whole number from 1 to 168, not 169"),
        ("hours=abc", "hours must be a whole number from 1 to 168, not &#39;abc&#39;"),
        ("hours=1.5", "hours must be a whole number from 1 to 168, not &#39;1.5&#39;"),
        ("hours=-3", "hours must be a whole number from 1 to 168, not &#39;-3&#39;"),
        ("days=0", "days must be a whole number from 1 to 31, not 0"),
        ("days=99999999", "days must be a whole number from 1 to 31"),
    ],
)
def test_a_bad_window_is_a_clear_400(runtime: Runtime, query: str, message: str) -> None:
    _account(runtime)
    client = _client(runtime)
    for path in ("/dashboard", "/dashboard/decisions.csv", "/dashboard/queue.csv"):
        name = query.split("=")[0]
        if (path.endswith("decisions.csv") and name != "hours") or (
            path.endswith("queue.csv") and name != "days"
        ):
            continue
        response = client.get(f"{path}?{query}")
        assert response.status_code == 400, path
        body = response.get_data(as_text=True)
        assert message[1:] in body  # the page capitalises the first letter
    refused = client.get(f"/dashboard?{query}", headers={"Accept": "application/json"})
    assert refused.status_code == 400
    assert refused.get_json()["error"]["message"].startswith(query.split("=")[0])


# --- CSV ------------------------------------------------------------------------------------


def test_each_csv_downloads_with_a_file_name_and_a_header(runtime: Runtime) -> None:
    _seed(runtime)
    client = _client(runtime)
    stems = {
        "queue": "queue-size-by-reason",
        "decisions": "decisions-per-reviewer-per-hour",
        "classes": "images-per-class",
        "accuracy": "model-accuracy",
    }
    for name, stem in stems.items():
        response = client.get(f"/dashboard/{name}.csv")
        assert response.status_code == 200
        assert response.headers["Content-Type"] == "text/csv; charset=utf-8"
        disposition = response.headers["Content-Disposition"]
        assert re.fullmatch(rf'attachment; filename="{stem}-\d{{8}}T\d{{4}}Z\.csv"', disposition)
        assert response.headers["Cache-Control"] == "no-store"
        assert b"\r\n" in response.data  # RFC 4180 line ends
        assert len(_rows(response.data)) >= 2


def test_the_classes_csv_lists_every_class_and_defuses_formulas(runtime: Runtime) -> None:
    ids = _seed(runtime)
    rows = _rows(_client(runtime).get("/dashboard/classes.csv").data)
    assert rows[0] == ["rank", "class_id", "slug", "name", "status", "images"]
    by_id = {int(row[1]): row for row in rows[1:]}
    assert len(by_id) == len(CLASS_NAMES)
    assert rows[1][3:] == ["Gyeongbokgung", "active", "2"]
    assert by_id[ids["formula"]][3] == "'" + CLASS_NAMES["formula"]
    assert by_id[ids["formula"]][5] == "1"
    assert by_id[ids["at"]][3] == "'@SUM(A1:A9)"
    assert by_id[ids["plus"]][3] == "'+1+2"
    assert by_id[ids["tab"]][3] == "'\tTabbed"
    assert by_id[ids["korean"]][3] == "경복궁"  # untouched
    assert by_id[ids["markup"]][3] == "<script>alert(1)</script>"  # a CSV is not HTML
    assert [row[5] for row in rows[1:]] == sorted((row[5] for row in rows[1:]), reverse=True)


def test_the_decisions_csv_counts_per_hour_and_defuses_usernames(runtime: Runtime) -> None:
    _seed(runtime)
    client = _client(runtime)
    rows = _rows(client.get("/dashboard/decisions.csv").data)
    assert rows[0] == ["hour_start", "reviewer", "decisions", "skips"]
    # ann's two decisions, 5 and 6 minutes ago, may fall in two hours.
    totals: dict[str, list[int]] = {}
    for _, reviewer, decisions, skips in rows[1:]:
        total = totals.setdefault(reviewer, [0, 0])
        total[0] += int(decisions)
        total[1] += int(skips)
    assert totals == {"ann": [2, 1], "'-2-1": [1, 0]}
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:00:00Z", row[0]) for row in rows[1:])
    wider = _rows(client.get("/dashboard/decisions.csv?hours=48").data)
    assert sum(int(row[2]) for row in wider[1:]) == 4


def test_the_queue_csv_has_the_snapshot_and_the_live_count(runtime: Runtime) -> None:
    _seed(runtime)
    rows = _rows(_client(runtime).get("/dashboard/queue.csv").data)
    assert rows[0] == [
        "taken_at",
        "live",
        "ranking",
        "reason",
        "pending",
        "claimed",
        "held",
        "disputed",
        "open",
    ]
    cold = [row for row in rows[1:] if row[3] == "cold_start"]
    assert [row[1] for row in cold] == ["no", "yes"]
    assert all(row[4] == "3" and row[8] == "3" for row in cold)


def test_the_accuracy_csv_marks_the_current_model(runtime: Runtime) -> None:
    _seed(runtime)
    rows = _rows(_client(runtime).get("/dashboard/accuracy.csv").data)
    assert rows[0][:5] == ["model_version", "status", "current", "created_at", "accuracy"]
    assert [(row[1], row[2], row[4], row[5]) for row in rows[1:]] == [
        ("retired", "no", "0.5", "cross_validated_accuracy"),
        ("champion", "yes", "0.8125", "cross_validated_accuracy"),
    ]
    assert rows[1][6] == "" and rows[1][8] == "40"  # no top-5 recorded


def test_an_unknown_csv_is_404(runtime: Runtime) -> None:
    _account(runtime)
    assert _client(runtime).get("/dashboard/passwords.csv").status_code == 404


@pytest.mark.parametrize(
    ("value", "cell"),
    [
        ("=1+1", "'=1+1"),
        ("+1", "'+1"),
        ("-1", "'-1"),
        ("@x", "'@x"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ("\uff1d1+1", "'\uff1d1+1"),  # a full-width equals sign
        ("a=b", "a=b"),
        ("", ""),
        (None, ""),
        (-1, -1),  # a number this code wrote, not text someone typed
        (True, "yes"),
        (datetime(2026, 11, 24, 19, 0, tzinfo=UTC), "2026-11-24T19:00:00Z"),
    ],
)
def test_csv_cells(value: object, cell: object) -> None:
    assert csv_cell(value) == cell
