"""The model pages in a real headless Chromium: the list (the champion highlighted,
the training runs with the active run's progress refreshed by models.js), one model's
metrics, curves and confusion matrix, and a refused promotion. The ``problems``
fixture fails the test on any CSP violation or page error. Screenshots land in
test-output/browser/<test>/."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from curation import training_runs
from tests.browser.support import BROWSER_PROBLEM, REQUIRE_SERVICES, LiveServer, Screenshots
from tests.webui.test_models import train_two_models

if BROWSER_PROBLEM is not None:
    if REQUIRE_SERVICES:
        pytest.fail(f"browser tests need a browser: {BROWSER_PROBLEM}", pytrace=False)
    pytest.skip(BROWSER_PROBLEM, allow_module_level=True)

from playwright.sync_api import expect

pytestmark = pytest.mark.slow


def test_models_page_and_a_model_page(open_page, live: LiveServer, shots: Screenshots) -> None:
    models = train_two_models(live.runtime)
    # A running run at 25%, so that the page shows (and polls) its progress.
    with live.runtime.factory() as session, session.begin():
        run, _ = training_runs.request_run(session, trigger="manual", requested_by="test")
        training_runs.start(session, run.id, datetime.now(UTC))
        training_runs.heartbeat(session, run.id, 0.25, "epoch 5 of 20", datetime.now(UTC))
        run_id = run.id
    page = open_page("admin", wait_ready=False)
    page.goto("/models")
    expect(page.locator(f"#model-{models.good}.champion")).to_be_visible()
    expect(page.locator("#active-run")).to_be_visible()
    expect(page.locator("#active-run [data-field='progress_message']")).to_have_text(
        "epoch 5 of 20"
    )
    shots(page, "models")
    # The worker beats again: the polling module shows the new progress without a reload.
    with live.runtime.factory() as session, session.begin():
        training_runs.heartbeat(session, run_id, 0.6, "epoch 12 of 20", datetime.now(UTC))
    expect(page.locator("#active-run [data-field='progress_message']")).to_have_text(
        "epoch 12 of 20", timeout=8000
    )
    expect(page.locator("#active-run [data-field='percent']")).to_have_text("60.0%")
    shots(page, "progress-refreshed")

    page.goto(f"/models/{models.good}")
    for chart in ("#chart-loss", "#chart-accuracy", "#chart-confusion"):
        expect(page.locator(chart)).to_be_visible()
    expect(page.locator("#per-class-table")).to_contain_text("Class 1 (c1)")
    shots(page, "model-champion")
    page.locator("#chart-confusion").scroll_into_view_if_needed()
    shots(page, "confusion-matrix")

    # The worse model: the gate refuses it, the page says why.
    page.goto(f"/models/{models.bad}")
    page.locator("#promote-reason").fill("looks fine to me")
    with page.expect_navigation():
        page.locator("#promote-submit").click()
    expect(page.locator("#action-error")).to_contain_text("the promotion gate refused it")
    expect(page.locator("#gate-reasons")).to_contain_text("vs champion")
    shots(page, "gate-refused")

    page.goto(f"/models/compare?a={models.good}&b={models.bad}")
    expect(page.locator("#gate-verdict")).to_have_text("Refused")
    shots(page, "compare")
