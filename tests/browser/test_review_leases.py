"""The review page renews the leases of the items it holds, in a real headless Chromium.

The runtime here has a 3-second lease, so the page renews every second; a
page that did not would lose its items within a few seconds.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from curation.labels import current_label
from curation.models import QueueItem
from curation.runtime import Runtime, build_runtime
from tests.browser.support import BROWSER_PROBLEM, REQUIRE_SERVICES
from tests.conftest import make_settings

if BROWSER_PROBLEM is not None:
    if REQUIRE_SERVICES:
        pytest.fail(f"browser tests need a browser: {BROWSER_PROBLEM}", pytrace=False)
    pytest.skip(BROWSER_PROBLEM, allow_module_level=True)

from playwright.sync_api import Page, expect

pytestmark = pytest.mark.slow

LEASE_SECONDS = 3


@pytest.fixture
def runtime(seeded_template, tmp_path: Path) -> Iterator[Runtime]:
    """The conftest's fresh runtime, with a short lease."""
    database = tmp_path / "curation.db"
    shutil.copyfile(seeded_template.database, database)
    shutil.copytree(seeded_template.data_dir, tmp_path / "var")
    settings = make_settings(tmp_path / "var", f"sqlite:///{database}")
    runtime = build_runtime(replace(settings, review_lease_seconds=LEASE_SECONDS))
    yield runtime
    runtime.dispose()


def held(page: Page) -> tuple[int, int]:
    page.wait_for_selector("#review[data-state='ready']:not([data-next-id=''])", state="attached")
    root = page.locator("#review")
    return int(root.get_attribute("data-item-id") or 0), int(
        root.get_attribute("data-next-id") or 0
    )


def claim_of(runtime: Runtime, item_id: int) -> tuple[int | None, datetime | None]:
    with runtime.factory() as session:
        item = session.get_one(QueueItem, item_id)
        lease = item.lease_expires_at
        return item.claimed_by, lease.replace(tzinfo=UTC) if lease and not lease.tzinfo else lease


def test_the_page_keeps_its_items_past_many_lease_lengths(open_page, live, shots) -> None:
    page = open_page("reviewer1")
    reviewer = live.seeded.users["reviewer1"]
    expect(page.locator("#review")).to_have_attribute("data-lease-seconds", str(LEASE_SECONDS))
    item_id, next_id = held(page)
    renewals: list[str] = []
    page.on("request", lambda r: renewals.append(r.url) if r.url.endswith("/renew") else None)
    page.wait_for_timeout(3500 * LEASE_SECONDS)  # time.sleep would stall the event pump
    assert len(renewals) >= 3, renewals
    for held_id in (item_id, next_id):
        claimed_by, lease = claim_of(live.runtime, held_id)
        assert claimed_by == reviewer
        assert lease is not None and lease > datetime.now(UTC)
    expect(page.locator("#toast")).to_be_hidden()
    shots(page, "still-held")
    image_id = int(page.locator("#review").get_attribute("data-image-id") or 0)
    page.keyboard.press("n")
    page.wait_for_selector(f"#review[data-item-id='{next_id}']", state="attached")
    expect(page.locator("#last-decision")).to_contain_text(f"item {item_id} labelled")
    expect(page.locator("#toast")).to_be_hidden()
    with live.runtime.factory() as session:
        label = current_label(session, image_id)
        assert label is not None and label.verdict == "not_a_landmark"
        assert label.author_id == reviewer
    shots(page, "decided")


def test_a_lost_lease_drops_the_item_with_a_toast(open_page, live, shots) -> None:
    page = open_page("reviewer1")
    item_id, next_id = held(page)
    # Someone else ends up with the item on screen (say the page slept past its lease).
    with live.runtime.factory() as session, session.begin():
        item = session.get_one(QueueItem, item_id)
        item.claimed_by = live.seeded.users["reviewer2"]
    toast = page.locator("#toast")
    expect(toast).to_be_visible(timeout=3 * LEASE_SECONDS * 1000)
    expect(toast).to_contain_text(f"Your claim on item {item_id} was lost")
    page.wait_for_selector(f"#review[data-item-id='{next_id}']", state="attached")
    shots(page, "lost")
    # The page goes on as usual: it claims ahead again and decides.
    page.wait_for_selector(
        f"#review:not([data-next-id='']):not([data-next-id='{next_id}'])", state="attached"
    )
    page.keyboard.press("n")
    page.wait_for_selector(
        f"#review[data-state='ready']:not([data-item-id='{next_id}'])", state="attached"
    )
    claimed_by, _ = claim_of(live.runtime, item_id)
    assert claimed_by == live.seeded.users["reviewer2"]
