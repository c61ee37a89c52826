"""Dataset versions in a real headless Chromium: an admin takes two snapshots through
the form (the button shows its loading state while the server works), then picks the
two versions on the list and opens their diff, and runs a leak check. The ``problems``
fixture fails the test on any CSP violation or page error. Screenshots of each step
land in test-output/browser/<test>/."""

from __future__ import annotations

import base64
import json
import re
import time

import pytest

from curation.labels import append_label, current_label
from curation.models import Split
from datasets.versions import load_manifest
from tests.browser.support import BROWSER_PROBLEM, REQUIRE_SERVICES, LiveServer, Screenshots

if BROWSER_PROBLEM is not None:
    if REQUIRE_SERVICES:
        pytest.fail(f"browser tests need a browser: {BROWSER_PROBLEM}", pytrace=False)
    pytest.skip(BROWSER_PROBLEM, allow_module_level=True)

from playwright.sync_api import Page, expect

pytestmark = pytest.mark.slow

FIRST = {"Gyeongbokgung": 10, "Deoksugung": 6, "Changdeokgung": 4}
SNAPSHOT_DELAY_S = 1.5


def label_images(live: LiveServer, counts: dict[str, int], start: int) -> int:
    """Label the seeded photos from position ``start`` on; returns the next position."""
    seeded = live.seeded
    with live.runtime.factory() as session, session.begin():
        for name, count in counts.items():
            for image_id in seeded.image_ids[start : start + count]:
                append_label(
                    session, image_id=image_id, class_id=seeded.classes[name], box=None, origin="t"
                )
            start += count
    return start


def relabel_a_training_image(live: LiveServer) -> int:
    with live.runtime.factory() as session, session.begin():
        manifest = load_manifest(session, "v1")
        image_id = int(manifest.image_ids[manifest.splits == int(Split.TRAIN)][0])
        previous = current_label(session, image_id)
        assert previous is not None
        append_label(
            session,
            image_id=image_id,
            class_id=live.seeded.classes["N Seoul Tower"],
            box=None,
            origin="t",
            supersedes=previous,
        )
    return image_id


# Playwright's locators and evaluate wait while a navigation is pending, so the
# busy form is recorded by a listener of the test's own (into sessionStorage,
# read after the next page loads) and photographed through CDP directly.
RECORD_BUSY_STATE = """() => {
  const form = document.getElementById("snapshot-form");
  form.addEventListener("submit", () => setTimeout(() => {
    const button = document.getElementById("snapshot-submit");
    const note = form.querySelector("[data-busy-status]");
    sessionStorage.setItem("busy-state", JSON.stringify({
      disabled: button.disabled,
      text: button.textContent,
      ariaBusy: form.getAttribute("aria-busy"),
      noteShown: !note.hidden && note.offsetParent !== null,
      readOnly: document.getElementById("snapshot-message").readOnly,
    }));
  }, 50));
}"""


def take_snapshot(page: Page, message: str) -> None:
    page.get_by_label("New version from the labels as they stand now").fill(message)
    page.get_by_role("button", name="Take snapshot").click(no_wait_after=True)


def shot_while_loading(page: Page, shots: Screenshots, step: str) -> None:
    """A screenshot while a navigation is pending (page.screenshot would wait for it)."""
    data = page.context.new_cdp_session(page).send("Page.captureScreenshot", {"format": "png"})
    shots.count += 1
    (shots.folder / f"{shots.count:02d}-{step}.png").write_bytes(base64.b64decode(data["data"]))


def test_an_admin_takes_snapshots_and_compares_them(open_page, live, shots) -> None:
    position = label_images(live, FIRST, 0)
    page = open_page("admin", wait_ready=False)
    page.get_by_role("link", name="Datasets", exact=True).click()
    expect(page).to_have_url(f"{live.url}/datasets")
    expect(page.locator("#no-versions")).to_contain_text("No dataset version yet")
    shots(page, "no-versions")

    # A snapshot that takes a while: the form says so instead of looking stuck.
    live.delays.by_prefix["/datasets/snapshot"] = SNAPSHOT_DELAY_S
    page.evaluate(RECORD_BUSY_STATE)
    take_snapshot(page, "First cut: three palaces")
    time.sleep(SNAPSHOT_DELAY_S / 3)
    shot_while_loading(page, shots, "taking-snapshot")
    expect(page).to_have_url(f"{live.url}/datasets/v1", timeout=10_000)
    live.delays.by_prefix.clear()
    busy = json.loads(page.evaluate("() => sessionStorage.getItem('busy-state')"))
    assert busy == {
        "disabled": True,
        "text": "Taking the snapshot…",
        "ariaBusy": "true",
        "noteShown": True,
        "readOnly": True,
    }
    expect(page.locator(".notice")).to_contain_text("v1 taken: 20 images in 5 classes")
    expect(page.locator("#held-back-none")).to_be_visible()
    expect(page.locator("#items")).to_have_text("20")
    expect(page.locator("#classes tbody tr").first).to_have_attribute("data-slug", "gyeongbokgung")
    shots(page, "v1")

    # More labels and a relabelled photo, then a second version.
    label_images(live, {"Deoksugung": 5}, position)
    relabelled = relabel_a_training_image(live)
    page.get_by_role("link", name="Dataset versions").click()
    take_snapshot(page, "Five more of Deoksugung")
    expect(page).to_have_url(f"{live.url}/datasets/v2")
    expect(page.locator(".notice")).to_contain_text("v2 taken: 25 images")
    expect(page.locator("#parent")).to_have_text("v1")

    # Both versions on the list, newest first; the compare form picks v1 -> v2.
    page.get_by_role("link", name="Dataset versions").click()
    expect(page.locator("#versions tbody tr")).to_have_count(2)
    expect(page.locator("#versions tbody tr").first).to_have_attribute("data-version", "2")
    page.get_by_label("From v1").check()
    page.get_by_label("To v2").check()
    shots(page, "list")
    page.get_by_role("button", name="Compare").click()
    expect(page).to_have_url(re.compile(r"/datasets/diff\?(?=.*\bfrom=v1\b)(?=.*\bto=v2\b)"))
    expect(page.locator("#count-added .big")).to_have_text("5")
    expect(page.locator("#count-removed .big")).to_have_text("0")
    expect(page.locator("#count-relabelled .big")).to_have_text("1")
    row = page.locator(f"#label-changes tr[data-image-id='{relabelled}']")
    expect(row).to_contain_text("n-seoul-tower")
    expect(page.locator("#images-added li")).to_have_count(5)
    shots(page, "diff")

    # The leak check of v2, from its page.
    page.goto("/datasets/v2")
    page.get_by_role("button", name="Check for leaks").click()
    expect(page).to_have_url(f"{live.url}/datasets/v2/leaks?max_distance=10")
    expect(page.get_by_role("heading", name="Leaks in v2")).to_be_visible()
    expect(page.locator("#leaks-clean, #leaks-found")).to_have_count(1)
    shots(page, "leaks")
