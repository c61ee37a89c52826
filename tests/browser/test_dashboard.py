"""The dashboard in a real headless Chromium: signed in through the form, reached
from the nav, four SVG charts under the strict CSP (the ``problems`` fixture
fails a test on any CSP violation or page error), the data tables, the window
form, a CSV download, and a bad window's 400 page. Screenshots of each step
land in test-output/browser/<test>/."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta

import pytest

from curation.labels import append_label
from curation.models import (
    EmbeddingSpace,
    LandmarkClass,
    ModelVersion,
    QueueItem,
    QueueSnapshot,
    ReviewDecision,
)
from curation.review.claims import REASONS
from tests.browser.support import BROWSER_PROBLEM, CLASSES, REQUIRE_SERVICES, LiveServer

if BROWSER_PROBLEM is not None:
    if REQUIRE_SERVICES:
        pytest.fail(f"browser tests need a browser: {BROWSER_PROBLEM}", pytrace=False)
    pytest.skip(BROWSER_PROBLEM, allow_module_level=True)

from playwright.sync_api import Page, expect

pytestmark = pytest.mark.slow

# How many of the seeded photos each class gets: a head and a long tail.
TAIL = {"Gyeongbokgung": 12, "Deoksugung": 6, "Changdeokgung": 3, "N Seoul Tower": 1}


def seed_history(live: LiveServer) -> None:
    """Two days of queue snapshots, a day of decisions, labels with a long tail,
    a proposed and a retired class, and four model versions."""
    now = datetime.now(UTC)
    seeded = live.seeded
    with live.runtime.factory() as session, session.begin():
        images = iter(seeded.image_ids)
        for name, count in TAIL.items():
            for _ in range(count):
                append_label(
                    session,
                    image_id=next(images),
                    class_id=seeded.classes[name],
                    box=None,
                    origin="test",
                )
        append_label(session, image_id=next(images), class_id=None, box=None, origin="test")
        session.add(LandmarkClass(slug="namsan", display_name="남산 (proposed)", status="proposed"))
        session.add(LandmarkClass(slug="old-gate", display_name="Old gate", status="retired"))
        # Queue snapshots every 15 minutes for two days, a gap where the beat was down.
        start = (now - timedelta(days=2)).replace(minute=0, second=0, microsecond=0)
        for step in range(0, 2 * 96):
            if 60 <= step < 70:
                continue
            taken_at = start + timedelta(minutes=15 * step)
            for k, reason in enumerate(REASONS):
                pending = max(0, 40 - step // 6 - 6 * k) if reason != "random" else 2
                session.add(
                    QueueSnapshot(
                        taken_at=taken_at,
                        reason=reason,
                        ranking=0,
                        pending=pending,
                        claimed=1 if pending else 0,
                        held=0,
                        disputed=0,
                    )
                )
        item = session.query(QueueItem).first()
        assert item is not None
        reviewers = [seeded.users["reviewer1"], seeded.users["reviewer2"], seeded.users["admin"]]
        for hour in range(24):
            for k, reviewer in enumerate(reviewers):
                for n in range((hour * (k + 2)) % 7):
                    session.add(
                        ReviewDecision(
                            item_id=item.id,
                            image_id=item.image_id,
                            reviewer_id=reviewer,
                            stage=1,
                            action="skip" if n == 3 else "accept",
                            outcome="skipped" if n == 3 else "labelled",
                            created_at=now - timedelta(hours=hour, minutes=n * 3),
                        )
                    )
        space = EmbeddingSpace(key="dash", backbone="b", weights_id="w", dim=4)
        session.add(space)
        session.flush()
        for k, (status, metrics) in enumerate(
            [
                ("retired", {"cross_validated_accuracy": 0.52, "training_images": 40}),
                ("retired", {"cross_validated_accuracy": 0.66, "top5_accuracy": 0.9}),
                ("champion", {"test_accuracy": 0.781, "top5_accuracy": 0.955}),
                ("candidate", {"cross_validated_accuracy": 0.74, "top5_accuracy": 0.94}),
            ]
        ):
            session.add(
                ModelVersion(
                    space_id=space.id,
                    class_ids=[],
                    artifact_key=f"dash-{k}",
                    seed=0,
                    metrics=metrics,
                    status=status,
                    created_at=now - timedelta(days=4 - k),
                )
            )


def open_dashboard(open_page, username: str = "reviewer1") -> Page:
    page: Page = open_page(username, wait_ready=False)
    page.get_by_role("link", name="Dashboard").click()
    page.wait_for_url("**/dashboard")
    expect(page.get_by_role("heading", name="Dashboard", level=1)).to_be_visible()
    return page


def test_the_dashboard_draws_four_charts_with_tables(open_page, live, shots) -> None:
    seed_history(live)
    page = open_dashboard(open_page)
    for chart, title in (
        ("#chart-queue", "Queue size by reason over time"),
        ("#chart-decisions", "Decisions per reviewer per hour"),
        ("#chart-classes", "Images per class"),
        ("#chart-accuracy", "Model accuracy by version"),
    ):
        svg = page.locator(chart)
        expect(svg).to_be_visible()
        expect(svg).to_have_attribute("role", "img")
        expect(page.locator(f"{chart} > title")).to_have_text(title)
        box = svg.bounding_box()
        assert box is not None and box["width"] > 600 and box["height"] > 200
    # The charts are drawn, and styled by dashboard.css (not black default fills).
    assert page.locator("#chart-queue path.line").count() >= 5
    assert page.locator("#chart-decisions rect.bar").count() > 30
    assert page.locator("#chart-classes rect.bar").count() == len(CLASSES) + 2
    assert page.locator("#chart-accuracy circle.dot.champion").count() == 2
    fill = page.locator("#chart-classes rect.bar.status-active").first.evaluate(
        "element => getComputedStyle(element).fill"
    )
    assert fill == "rgb(0, 114, 178)"
    expect(page.locator("#card-model .big")).to_have_text("78.1%")
    expect(page.locator("#card-classes .big")).to_contain_text("4")
    shots(page, "dashboard")
    page.screenshot(path=str(shots.folder / "dashboard-full.png"), full_page=True)
    # The tables behind the charts open with the keyboard.
    summary = page.locator("#classes details summary")
    summary.focus()
    page.keyboard.press("Enter")
    table = page.locator("#classes table.data")
    expect(table).to_be_visible()
    expect(table.locator("tbody tr").first).to_contain_text("Gyeongbokgung")
    expect(table.locator("tbody tr").last).to_contain_text("0")
    expect(table).to_contain_text("남산 (proposed)")
    table.scroll_into_view_if_needed()
    shots(page, "classes-table")


def test_the_window_form_and_a_csv_download(open_page, live, shots) -> None:
    seed_history(live)
    page = open_dashboard(open_page)
    page.get_by_label("Decisions over the last").fill("6")
    page.get_by_label("Queue over the last").fill("1")
    page.get_by_role("button", name="Show").click()
    page.wait_for_url("**/dashboard?hours=6&days=1")
    expect(page.locator("#card-decisions h2")).to_have_text("Decisions, last 6 h")
    assert page.locator("#chart-decisions g.column").count() == 6
    shots(page, "six-hours")
    link = page.locator("#decisions a.download")
    expect(link).to_have_attribute("href", "/dashboard/decisions.csv?hours=6")
    with page.expect_download() as download_info:
        link.click()
    download = download_info.value
    assert download.suggested_filename.startswith("decisions-per-reviewer-per-hour-")
    assert download.suggested_filename.endswith(".csv")
    text = download.path().read_text(encoding="utf-8-sig")
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert rows[0] == ["hour_start", "reviewer", "decisions", "skips"]
    assert {row[1] for row in rows[1:]} <= {"reviewer1", "reviewer2", "admin"}
    assert len({row[0] for row in rows[1:]}) <= 6


def test_a_bad_window_shows_a_clear_error_page(open_page, live, shots) -> None:
    page = open_dashboard(open_page)
    response = page.goto("/dashboard?hours=500")
    assert response is not None and response.status == 400
    expect(page.get_by_role("alert")).to_have_text(
        "Hours must be a whole number from 1 to 168, not 500."
    )
    shots(page, "bad-window")


def test_an_empty_dashboard_says_what_is_missing(open_page, live, shots) -> None:
    with live.runtime.factory() as session, session.begin():
        session.query(QueueItem).delete()
    page = open_dashboard(open_page)
    expect(page.locator("#queue .empty")).to_contain_text("the queue is empty")
    expect(page.locator("#decisions .empty")).to_contain_text("No decisions in the last 24 hours")
    expect(page.locator("#accuracy .empty")).to_contain_text("No model trained yet")
    # The classes exist (the seed made them) with no image yet: all at zero, on the chart.
    expect(page.locator("#chart-classes")).to_be_visible()
    shots(page, "empty")
