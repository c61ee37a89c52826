"""An admin settles a dispute from the disagreements page, in a real headless Chromium."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from curation.labels import current_label
from curation.models import ImageSource, QueueItem, User
from curation.review.claims import claim_next
from curation.review.decisions import DecisionRequest, decide
from curation.runtime import Runtime
from tests.browser.support import BROWSER_PROBLEM, REQUIRE_SERVICES, Seeded

if BROWSER_PROBLEM is not None:
    if REQUIRE_SERVICES:
        pytest.fail(f"browser tests need a browser: {BROWSER_PROBLEM}", pytrace=False)
    pytest.skip(BROWSER_PROBLEM, allow_module_level=True)

from playwright.sync_api import expect

pytestmark = pytest.mark.slow


def make_dispute(runtime: Runtime, seeded: Seeded) -> tuple[int, int]:
    """A user reported the top photo as Gyeongbokgung; reviewer1 labels it Deoksugung,
    reviewer2 says it is no landmark. Returns (item id, image id)."""
    now = datetime.now(UTC)
    lease = timedelta(minutes=10)
    with runtime.factory() as session:
        one = session.get_one(User, seeded.users["reviewer1"])
        two = session.get_one(User, seeded.users["reviewer2"])
    steps = (
        (one, {"action": "label", "class_id": seeded.classes["Deoksugung"]}, "second_review"),
        (two, {"action": "not_landmark"}, "disputed"),
    )
    item_id = image_id = 0
    for reviewer, request, outcome in steps:
        with runtime.factory() as session, session.begin():
            item = claim_next(session, reviewer, lease=lease, now=now)
            assert item is not None and item_id in (0, item.id)
            item_id, image_id = item.id, item.image_id
            if outcome == "second_review":
                session.add(
                    ImageSource(
                        image_id=image_id,
                        kind="report",
                        identity_key="browser-report",
                        reporter_id="app-user-1",
                        claimed_class_name="Gyeongbokgung",
                        claimed_class_id=seeded.classes["Gyeongbokgung"],
                    )
                )
                session.flush()
            decided = decide(
                session,
                reviewer,
                item.id,
                DecisionRequest.parse(request),
                consensus="disagreements",
                now=now,
            )
            assert decided.outcome == outcome
    return item_id, image_id


def test_an_admin_opens_a_disputed_item_and_decides_it(open_page, live, shots) -> None:
    item_id, image_id = make_dispute(live.runtime, live.seeded)
    page = open_page("admin")
    page.get_by_role("link", name="Disagreements").click()
    expect(page).to_have_url(f"{live.url}/admin/disagreements")
    row = page.locator(f"#disagreements tr[data-item-id='{item_id}']")
    expect(row).to_contain_text("Gyeongbokgung")  # what the reporter said
    expect(row).to_contain_text("reviewer1")
    expect(row).to_contain_text("Deoksugung")
    expect(row).to_contain_text("reviewer2")
    expect(row).to_contain_text("not a landmark")
    expect(row.locator("img")).to_have_js_property("complete", True)
    expect(page.locator(".tabs a[data-state='disputed'] .count")).to_have_text("1")
    shots(page, "disagreements")
    row.get_by_role("link", name="Decide").click()
    # The review page claims this very item and shows it, with the dispute spelled out.
    page.wait_for_selector(f"#review[data-item-id='{item_id}']", state="attached")
    expect(page.locator("#stage-banner")).to_contain_text("Disputed")
    expect(page.locator("#stage-banner")).to_contain_text("Deoksugung")
    expect(page.locator("#reporter-claimed")).to_have_text("Gyeongbokgung")
    expect(page.locator("#filter-reason")).to_have_value("disputed")
    expect(page).to_have_url(f"{live.url}/review?reason=disputed")  # ?item= is dropped
    shots(page, "review-disputed")
    page.keyboard.press("/")
    page.keyboard.type("gyeong")
    expect(page.locator("#search-results .result").first).to_contain_text("Gyeongbokgung")
    page.keyboard.press("Enter")
    expect(page.locator("#last-decision")).to_contain_text(f"item {item_id} labelled")
    with live.runtime.factory() as session:
        label = current_label(session, image_id)
        assert label is not None and label.class_id == live.seeded.classes["Gyeongbokgung"]
        assert label.author_id == live.seeded.users["admin"]
        assert session.get_one(QueueItem, item_id).status == "done"
    page.goto("/admin/disagreements?state=resolved")
    resolved = page.locator(f"#disagreements tr[data-item-id='{item_id}']")
    expect(resolved).to_contain_text("admin")
    expect(resolved).to_contain_text("Gyeongbokgung")
    expect(page.locator("#disagreements tbody tr")).to_have_count(1)
    shots(page, "resolved")


def test_a_reviewer_cannot_open_the_page_or_a_chosen_item(open_page, live, shots) -> None:
    item_id, _ = make_dispute(live.runtime, live.seeded)
    page = open_page("reviewer1")
    expect(page.get_by_role("link", name="Disagreements")).to_have_count(0)
    answer = page.goto("/admin/disagreements")
    assert answer is not None and answer.status == 403
    page.goto(f"/review?item={item_id}")
    page.wait_for_selector("#review[data-ready='true']", state="attached")
    expect(page.locator("#toast")).to_contain_text("only admins")
    assert page.locator("#review").get_attribute("data-item-id") != str(item_id)
    shots(page, "refused")
