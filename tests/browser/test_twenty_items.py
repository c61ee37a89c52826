"""A new reviewer labels 20 crawled photos with the keyboard alone, with no page load.

The keys a reviewer uses most, mixed as in a real session: Enter (accept the
model's suggestion), 2 and 3 (another of the top-k), n (not a landmark), and
the class search (/, type, Enter). The figure that matters is how long the
page keeps the reviewer waiting: from the key press to the next photo on
screen. It is written to test-output/browser/twenty-items.json; the rest of a
reviewer's minute is their own looking.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from curation.labels import current_label
from tests.browser.support import BROWSER_PROBLEM, REQUIRE_SERVICES, SCREENSHOTS, seed_model_guesses

if BROWSER_PROBLEM is not None:
    if REQUIRE_SERVICES:
        pytest.fail(f"browser tests need a browser: {BROWSER_PROBLEM}", pytrace=False)
    pytest.skip(BROWSER_PROBLEM, allow_module_level=True)

from playwright.sync_api import expect

from tests.browser.test_review_queue import shown, wait_for_other_item

pytestmark = pytest.mark.slow

# (key, what it does) for each of the 20 items.
SESSION = [
    "Enter", "Enter", "2", "n", "Enter", "search", "3", "Enter", "a", "n",
    "Enter", "2", "Enter", "search", "Enter", "n", "3", "Enter", "2", "Enter",
]  # fmt: skip


def test_twenty_items_with_the_keyboard_alone_and_no_page_load(open_page, live, shots) -> None:
    guesses = seed_model_guesses(live.runtime, live.seeded)
    page = open_page("reviewer1")
    page.evaluate("window.__marker = 1")
    navigations: list[str] = []
    page.on(
        "framenavigated", lambda frame: frame == page.main_frame and navigations.append(frame.url)
    )
    item_id, image_id = shown(page)
    waits_ms: list[float] = []
    expected: dict[int, int | None] = {}
    started = time.perf_counter()
    for key in SESSION:
        top = guesses[image_id]
        if key == "search":
            page.keyboard.press("/")
            page.keyboard.type("덕수")  # a Korean alias, typed in part
            expect(page.locator("#search-results .result").first).to_contain_text("Deoksugung")
            expected[image_id] = live.seeded.classes["Deoksugung"]
            pressed = time.perf_counter()
            page.keyboard.press("Enter")
        else:
            expected[image_id] = {"Enter": top[0], "a": top[0], "2": top[1], "3": top[2]}.get(key)
            pressed = time.perf_counter()
            page.keyboard.press(key)
        item_id, image_id = wait_for_other_item(page, item_id)
        page.wait_for_selector("#viewer-image", state="visible")
        waits_ms.append((time.perf_counter() - pressed) * 1000)
    total_s = time.perf_counter() - started
    shots(page, "after-twenty")
    expect(page.locator("#review-counter")).to_have_text("20")
    assert page.evaluate("window.__marker") == 1, "the page was reloaded"
    assert navigations == [], f"navigated away: {navigations}"
    assert page.evaluate("performance.getEntriesByType('navigation').length") == 1
    with live.runtime.factory() as session:
        for labelled_image, class_id in expected.items():
            label = current_label(session, labelled_image)
            assert label is not None, labelled_image
            assert label.class_id == class_id, labelled_image
    figures = {
        "items": len(waits_ms),
        "keys": SESSION,
        "waiting_for_the_page_ms": {
            "p50": round(float(np.percentile(waits_ms, 50)), 1),
            "p95": round(float(np.percentile(waits_ms, 95)), 1),
            "max": round(max(waits_ms), 1),
            "total": round(sum(waits_ms), 1),
        },
        "whole_scripted_session_s": round(total_s, 2),
    }
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    (SCREENSHOTS / "twenty-items.json").write_text(json.dumps(figures, indent=2))
    # Well inside a minute: what is left of it is the reviewer's own looking.
    assert total_s < 30, figures
