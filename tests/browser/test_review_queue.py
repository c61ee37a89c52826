"""The reviewers' queue page in a real headless Chromium.

Each test gets a fresh SQLite runtime with 30 photos queued for a cold start
(no model yet, so classes are chosen through the class search) and a live
server; screenshots of each step land in test-output/browser/<test>/.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from curation.labels import current_label
from curation.models import Label, QueueItem
from curation.taxonomy import find_class
from tests.browser.support import (
    BROWSER_PROBLEM,
    CLASSES,
    IMAGE_COUNT,
    REQUIRE_SERVICES,
    LiveServer,
    seed_model_guesses,
)

if BROWSER_PROBLEM is not None:
    if REQUIRE_SERVICES:
        pytest.fail(f"browser tests need a browser: {BROWSER_PROBLEM}", pytrace=False)
    pytest.skip(BROWSER_PROBLEM, allow_module_level=True)

from playwright.sync_api import Page, expect

pytestmark = pytest.mark.slow

API = "/review/api"


# --- helpers ------------------------------------------------------------------------


def shown(page: Page) -> tuple[int, int]:
    """(item id, image id) of the item on screen; waits until there is one."""
    page.wait_for_selector("#review[data-state='ready']", state="attached")
    root = page.locator("#review")
    item_id = root.get_attribute("data-item-id") or 0
    image_id = root.get_attribute("data-image-id") or 0
    return int(item_id), int(image_id)


def wait_for_other_item(page: Page, previous: int) -> tuple[int, int]:
    # Selectors, not wait_for_function: the page's CSP forbids the eval() it uses.
    page.wait_for_selector(
        f"#review[data-state='ready']:not([data-item-id='{previous}'])", state="attached"
    )
    return shown(page)


def wait_for_item(page: Page, item_id: int) -> None:
    page.wait_for_selector(f"#review[data-item-id='{item_id}']", state="attached")


def search_and_choose(page: Page, text: str, expected_name: str) -> None:
    page.keyboard.press("/")
    expect(page.locator("#search-input")).to_be_focused()
    page.keyboard.type(text)
    expect(page.locator("#search-results .result").first).to_contain_text(expected_name)
    page.keyboard.press("Enter")


def label_of(live: LiveServer, image_id: int) -> Label | None:
    with live.runtime.factory() as session:
        return current_label(session, image_id)


def post_json(page: Page, path: str, body: dict[str, Any], *, csrf: bool) -> dict[str, Any]:
    """POST from inside the page with fetch(); returns {status, body}."""
    result: dict[str, Any] = page.evaluate(
        """async ([path, body, csrf]) => {
            const headers = {"Content-Type": "application/json"};
            if (csrf) headers["X-CSRF-Token"] =
                document.querySelector('meta[name="csrf-token"]').content;
            const init = {method: "POST", headers, body: JSON.stringify(body)};
            const response = await fetch(path, init);
            return {status: response.status, body: await response.json()};
        }""",
        [path, body, csrf],
    )
    return result


# --- tests --------------------------------------------------------------------------


def test_login_through_the_form_lands_on_the_queue(open_page, live, shots) -> None:
    page = open_page(None)
    page.goto("/review")
    expect(page).to_have_url(f"{live.url}/login?next=/review")
    shots(page, "login-form")
    page.get_by_label("Username").fill("reviewer1")
    page.get_by_label("Password").fill("not-the-password")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_contain_text("Wrong username or password")
    shots(page, "wrong-password")
    page.get_by_label("Password").fill("correct-horse-battery")
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(f"{live.url}/review")
    expect(page.locator("#review")).to_have_attribute("data-user", "reviewer1")
    item_id, image_id = shown(page)
    assert item_id > 0 and image_id in live.seeded.image_ids
    # The next item is claimed ahead and its photo preloaded.
    page.wait_for_selector("#review[data-next-id]:not([data-next-id=''])", state="attached")
    shots(page, "queue")


def test_label_five_items_with_the_keyboard_only(open_page, live, shots) -> None:
    page = open_page("reviewer1")
    page.evaluate("window.__marker = 1")
    navigations: list[str] = []

    def navigated(frame: Any) -> None:
        if frame == page.main_frame:
            navigations.append(frame.url)

    page.on("framenavigated", navigated)
    shots(page, "first-item")
    expected: dict[int, str] = {}
    item_id, image_id = shown(page)
    choices = [("Gyeongbokgung", "gyeongbok"), ("Deoksugung", "deoksu gung")]
    for n in range(5):
        name, typed = choices[n % 2]
        # The next item is claimed ahead and its photo fetched before it is needed.
        page.wait_for_selector("#review:not([data-next-image-id=''])", state="attached")
        next_id = int(page.locator("#review").get_attribute("data-next-id") or 0)
        search_and_choose(page, typed, name)
        expected[image_id] = name
        if n == 0:
            shots(page, "after-first-decision")
        decided_at = page.evaluate("performance.now()")
        item_id, image_id = wait_for_other_item(page, item_id)
        assert item_id == next_id
        fetched_at = page.evaluate(
            "url => performance.getEntriesByName(url).map(entry => entry.startTime)",
            f"{live.url}/images/{image_id}",
        )
        assert fetched_at and min(fetched_at) < decided_at, "the next photo was not preloaded"
    shots(page, "after-five")
    expect(page.locator("#review-counter")).to_have_text("5")
    assert page.evaluate("window.__marker") == 1, "the page was reloaded"
    assert navigations == [], f"navigated away: {navigations}"
    assert page.evaluate("performance.getEntriesByType('navigation').length") == 1
    with live.runtime.factory() as session:
        for labelled_image, name in expected.items():
            label = current_label(session, labelled_image)
            assert label is not None, f"image {labelled_image} has no label"
            assert label.class_id == live.seeded.classes[name]
            assert label.author_id == live.seeded.users["reviewer1"]


def test_box_drawn_with_the_mouse_is_stored_in_image_pixels(open_page, live, shots) -> None:
    page = open_page("reviewer1")
    _, image_id = shown(page)
    width, height = 640, 480
    expect(page.locator("#viewer-image")).to_have_js_property("complete", True)
    # Wheel zooms, dragging pans (outside box mode), 0 resets.
    viewer_box = page.locator("#viewer").bounding_box()
    assert viewer_box
    centre = (viewer_box["x"] + viewer_box["width"] / 2, viewer_box["y"] + viewer_box["height"] / 2)
    page.mouse.move(*centre)
    page.mouse.wheel(0, -300)
    expect(page.locator("#zoom-indicator")).not_to_have_text("100%")
    before = page.locator("#viewer-canvas").bounding_box()
    page.mouse.down()
    page.mouse.move(centre[0] + 60, centre[1] + 40, steps=4)
    page.mouse.up()
    after = page.locator("#viewer-canvas").bounding_box()
    assert before and after
    assert abs(after["x"] - before["x"] - 60) < 2 and abs(after["y"] - before["y"] - 40) < 2
    assert label_of(live, image_id) is None  # clicks and drags decide nothing
    page.keyboard.press("0")
    expect(page.locator("#zoom-indicator")).to_have_text("100%")
    page.keyboard.press("+")  # zoomed in: screen-to-image mapping must still hold
    page.keyboard.press("b")
    expect(page.locator("#mode-indicator")).to_contain_text("box")
    overlay = page.locator("#viewer-overlay").bounding_box()
    viewer = page.locator("#viewer").bounding_box()
    assert overlay and viewer

    def screen(x: float, y: float) -> tuple[float, float]:
        scale_x, scale_y = overlay["width"] / width, overlay["height"] / height
        return overlay["x"] + x * scale_x, overlay["y"] + y * scale_y

    wanted = (200.0, 150.0, 440.0, 330.0)
    start, end = screen(*wanted[:2]), screen(*wanted[2:])
    for x, y in (start, end):  # both corners are on screen at this zoom
        assert viewer["x"] <= x <= viewer["x"] + viewer["width"]
        assert viewer["y"] <= y <= viewer["y"] + viewer["height"]
    page.mouse.move(*start)
    page.mouse.down()
    page.mouse.move(*end, steps=8)
    page.mouse.up()
    expect(page.locator("#box-drawn")).to_have_attribute("visibility", "visible")
    shots(page, "box-drawn")
    page.keyboard.press("0")  # the zoom resets; the box stays where it was drawn
    expect(page.locator("#zoom-indicator")).to_have_text("100%")
    expect(page.locator("#box-readout")).to_have_text("box 200, 150, 440, 330")
    search_and_choose(page, "Gyeongbokgung", "Gyeongbokgung")
    wait_for_other_item(page, int(page.locator("#review").get_attribute("data-item-id") or 0))
    label = label_of(live, image_id)
    assert label is not None and label.box is not None
    for got, want in zip(label.box, wanted, strict=True):
        assert abs(got - want) <= 3, (label.box, wanted)
    shots(page, "next-item")


def test_accept_and_number_keys_use_the_model_guesses(open_page, live, shots) -> None:
    guesses = seed_model_guesses(live.runtime, live.seeded)
    names = {class_id: name for name, class_id in live.seeded.classes.items()}
    page = open_page("reviewer1")
    item_id, image_id = shown(page)
    rows = page.locator("#topk li")
    expect(rows).to_have_count(3)
    for position, class_id in enumerate(guesses[image_id]):
        expect(rows.nth(position)).to_contain_text(f"{position + 1}{names[class_id]}")
    expect(page.locator("#topk li.suggested")).to_contain_text(names[guesses[image_id][0]])
    expect(page.locator("#topk li.suggested")).to_contain_text("62%")
    shots(page, "guesses")
    expected: dict[int, int] = {}
    for key, position in (("Enter", 0), ("2", 1), ("a", 0), ("3", 2)):
        expected[image_id] = guesses[image_id][position]
        page.keyboard.press(key)
        item_id, image_id = wait_for_other_item(page, item_id)
    # Labelled images become the examples shown beside each guess.
    first_image, first_class = next(iter(expected.items()))
    examples = page.locator(f"#topk .strip[data-class-id='{first_class}'] img")
    expect(examples.first).to_be_visible()
    shots(page, "examples")
    with live.runtime.factory() as session:
        for labelled_image, class_id in expected.items():
            label = current_label(session, labelled_image)
            assert label is not None and label.class_id == class_id, labelled_image
    assert first_image in live.seeded.image_ids


def test_apply_to_whole_group_labels_the_near_duplicates(open_page, live, shots) -> None:
    page = open_page("reviewer1")
    for _ in range(IMAGE_COUNT):
        item_id, image_id = shown(page)
        if page.locator("#duplicates").is_visible():
            break
        page.keyboard.press("s")
        wait_for_other_item(page, item_id)
    else:
        pytest.fail("no item with near-duplicates was handed out")
    thumbs = page.locator("#duplicates-strip img")
    group = {int(thumbs.nth(i).get_attribute("data-image-id") or 0) for i in range(thumbs.count())}
    assert group and image_id not in group
    page.keyboard.press("g")
    expect(page.locator("#apply-group")).to_be_checked()
    shots(page, "group")
    search_and_choose(page, "gyeong", "Gyeongbokgung")
    wait_for_other_item(page, item_id)
    expect(page.locator("#last-decision")).to_contain_text("in group")
    with live.runtime.factory() as session:
        for labelled in {image_id, *group}:
            label = current_label(session, labelled)
            assert label is not None and label.class_id == live.seeded.classes["Gyeongbokgung"]
    assert len(CLASSES) >= 3


def test_filters_release_the_item_claimed_ahead_and_claim_anew(open_page, live, shots) -> None:
    guesses = seed_model_guesses(live.runtime, live.seeded)
    deoksugung = live.seeded.classes["Deoksugung"]
    page = open_page("reviewer1")
    root = page.locator("#review")
    item_id, _ = shown(page)
    page.wait_for_selector("#review:not([data-next-id=''])", state="attached")
    ahead = int(root.get_attribute("data-next-id") or 0)
    # Class filter, chosen through the class search: the item on screen stays.
    page.locator("#filter-class").focus()
    page.keyboard.press("Enter")
    expect(page.locator("#search-title")).to_contain_text("Filter")
    page.keyboard.type("deoksu")
    expect(page.locator("#search-results .result").first).to_contain_text("Deoksugung")
    page.keyboard.press("Enter")
    expect(page.locator("#filter-class")).to_have_text("Deoksugung")
    page.wait_for_selector(
        f"#review:not([data-next-id='']):not([data-next-id='{ahead}'])", state="attached"
    )
    assert shown(page)[0] == item_id

    def claimed_by() -> int | None:
        with live.runtime.factory() as session:
            released = session.get(QueueItem, ahead)
            assert released is not None
            return released.claimed_by

    # The page releases the item it held ahead without waiting for the answer:
    # give that request a moment to commit (a loaded machine delays it).
    deadline = time.monotonic() + 10
    while claimed_by() is not None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert claimed_by() is None
    shots(page, "class-filter")
    for _ in range(3):
        page.keyboard.press("n")
        item_id, image_id = wait_for_other_item(page, item_id)
        assert guesses[image_id][0] == deoksugung
        expect(page.locator("#topk li.suggested")).to_contain_text("Deoksugung")
    # A filter that matches nothing: the page says so once the current item is done.
    page.locator("#filter-class-clear").click()
    page.locator("#filter-source").select_option("report")
    page.wait_for_selector("#review[data-next-id='']", state="attached")
    page.locator("#filter-source").press("Escape")
    page.keyboard.press("n")
    expect(page.locator("#review-empty")).to_be_visible()
    expect(root).to_have_attribute("data-state", "empty")
    shots(page, "nothing-left")
    page.locator("#filter-source").select_option("crawl")
    wait_for_other_item(page, item_id)


def test_search_by_korean_alias_and_label_with_it(open_page, live, shots) -> None:
    page = open_page("reviewer1")
    item_id, image_id = shown(page)
    page.keyboard.press("/")
    page.keyboard.type("덕수궁")
    first = page.locator("#search-results .result").first
    expect(first).to_contain_text("Deoksugung")
    expect(first).to_contain_text("덕수궁")
    expect(page.locator("#search-results .result.active")).to_have_count(1)
    shots(page, "korean-search")
    page.keyboard.press("Enter")
    wait_for_other_item(page, item_id)
    label = label_of(live, image_id)
    assert label is not None and label.class_id == live.seeded.classes["Deoksugung"]


def test_search_lists_with_arrow_keys_and_escape_closes(open_page, live, shots) -> None:
    page = open_page("reviewer1")
    item_id, image_id = shown(page)
    page.keyboard.press("/")
    page.keyboard.type("gung")  # Gyeongbokgung, Deoksugung, Changdeokgung
    results = page.locator("#search-results .result")
    expect(results).to_have_count(3)
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowUp")
    active = page.locator("#search-results .result.active")
    expect(active).to_have_attribute("data-index", "1")
    shots(page, "arrows")
    page.keyboard.press("Escape")
    expect(page.locator("#search-panel")).to_be_hidden()
    # Keys work again once the panel is closed, and typing did not decide anything.
    assert shown(page) == (item_id, image_id)
    assert label_of(live, image_id) is None


def test_propose_a_new_class(open_page, live, shots) -> None:
    page = open_page("reviewer1")
    item_id, image_id = shown(page)
    page.keyboard.press("p")
    expect(page.locator("#propose-input")).to_be_focused()
    page.keyboard.type("Seoul National University")
    shots(page, "propose")
    page.keyboard.press("Enter")
    wait_for_other_item(page, item_id)
    with live.runtime.factory() as session:
        proposed = find_class(session, "Seoul National University")
        assert proposed is not None
        assert proposed.status == "proposed"
        label = current_label(session, image_id)
        assert label is not None and label.class_id == proposed.id


def test_undo_brings_the_item_back(open_page, live, shots) -> None:
    page = open_page("reviewer1")
    first_id, first_image = shown(page)
    page.keyboard.press("n")
    second_id, _ = wait_for_other_item(page, first_id)
    expect(page.locator("#review-counter")).to_have_text("1")
    assert label_of(live, first_image) is not None
    shots(page, "decided")
    page.keyboard.press("u")
    wait_for_item(page, first_id)
    expect(page.locator("#review-counter")).to_have_text("0")
    shots(page, "undone")
    with live.runtime.factory() as session:
        item = session.get(QueueItem, first_id)
        assert item is not None and item.claimed_by == live.seeded.users["reviewer1"]
    # Ctrl+Z does the same; the item after it is the one that was current before.
    page.keyboard.press("s")
    wait_for_item(page, second_id)
    page.keyboard.press("Control+z")
    wait_for_item(page, first_id)
    shots(page, "undone-again")


def test_two_reviewers_never_get_the_same_item(open_page, live, shots) -> None:
    one = open_page("reviewer1", wait_ready=False)
    two = open_page("reviewer2", wait_ready=False)
    seen: dict[str, set[int]] = {"reviewer1": set(), "reviewer2": set()}
    pages = {"reviewer1": one, "reviewer2": two}

    def record() -> None:
        for name, page in pages.items():
            item_id, _ = shown(page)
            if page.locator("#review").get_attribute("data-stage") == "1":
                seen[name].add(item_id)
            next_id = page.locator("#review").get_attribute("data-next-id")
            if next_id:
                seen[name].add(int(next_id))

    record()
    for _ in range(5):
        before = {name: shown(page)[0] for name, page in pages.items()}
        # Both decisions (and the claims behind them) are in flight at once.
        one.keyboard.press("n")
        two.keyboard.press("n")
        for name, page in pages.items():
            wait_for_other_item(page, before[name])
        record()
    shots(one, "reviewer1")
    shots(two, "reviewer2")
    assert len(seen["reviewer1"]) >= 6 and len(seen["reviewer2"]) >= 6
    assert seen["reviewer1"].isdisjoint(seen["reviewer2"]), seen


def test_help_overlay_opens_with_question_mark(open_page, live, shots) -> None:
    page = open_page("reviewer1")
    item_id, _ = shown(page)
    help_panel = page.locator("#help-panel")
    expect(help_panel).to_be_hidden()
    page.keyboard.press("?")
    expect(help_panel).to_be_visible()
    for words in ("Accept", "Not a landmark", "Undo", "Box mode", "Skip", "Propose"):
        expect(help_panel).to_contain_text(words)
    shots(page, "help")
    page.keyboard.press("n")  # decision keys do nothing while the help is open
    page.keyboard.press("Escape")
    expect(help_panel).to_be_hidden()
    assert shown(page)[0] == item_id
    page.keyboard.press("?")
    expect(help_panel).to_be_visible()
    page.keyboard.press("?")
    expect(help_panel).to_be_hidden()


def test_server_errors_show_in_a_toast(open_page, live, shots) -> None:
    page = open_page("reviewer2")
    page.keyboard.press("u")  # nothing to undo yet
    toast = page.locator("#toast")
    expect(toast).to_be_visible()
    answer = post_json(page, f"{API}/undo", {}, csrf=True)
    assert answer["status"] == 409
    expect(toast).to_have_text(answer["body"]["error"]["message"])
    shots(page, "toast")


def test_slow_answers_show_the_loading_bar(open_page, live, shots) -> None:
    page = open_page("reviewer1")
    item_id, _ = shown(page)
    live.delays.by_prefix[f"{API}/items/"] = 0.6
    page.keyboard.press("n")
    expect(page.locator("#review-busy")).to_be_visible(timeout=500)
    expect(page.locator("#review")).to_have_attribute("aria-busy", "true")
    shots(page, "loading")
    wait_for_other_item(page, item_id)
    expect(page.locator("#review-busy")).to_be_hidden()
    expect(page.locator("#review")).to_have_attribute("aria-busy", "false")
    live.delays.by_prefix.clear()


def test_post_without_csrf_header_is_refused(open_page, live) -> None:
    page = open_page("reviewer1")
    before = page.locator("#review").get_attribute("data-item-id")
    claim = {"reason": None, "source": None, "class_id": None}
    refused = page.request.post(f"{API}/claim", data=claim)
    assert refused.status == 400
    assert refused.json()["error"]["code"] == "CSRFError"
    in_page = post_json(page, f"{API}/claim", claim, csrf=False)
    assert in_page["status"] == 400 and in_page["body"]["error"]["code"] == "CSRFError"
    allowed = post_json(page, f"{API}/claim", claim, csrf=True)
    assert allowed["status"] == 200 and "item" in allowed["body"]
    assert page.locator("#review").get_attribute("data-item-id") == before


def test_logged_out_api_answers_401(open_page, live) -> None:
    page = open_page(None)
    page.goto("/login")
    answer = page.request.get(f"{API}/mine")
    assert answer.status == 401
    assert "error" in answer.json()
