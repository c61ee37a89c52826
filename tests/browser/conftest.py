"""Fixtures of the browser tests: one Chromium per run; per test a fresh SQLite
runtime (a copy of one seeded once per run) served on a free port, and pages
signed in through the login form."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from curation.runtime import Runtime, build_runtime
from tests.browser.support import (
    BROWSER_PROBLEM,
    CHROMIUM,
    CHROMIUM_ARGS,
    PASSWORD,
    REQUIRE_SERVICES,
    LiveServer,
    Screenshots,
    Seeded,
    seed,
    serve,
)
from tests.conftest import make_settings

VIEWPORT = {"width": 1400, "height": 900}
TIMEOUT_MS = 10_000


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if BROWSER_PROBLEM is not None:
        if REQUIRE_SERVICES:
            pytest.fail(f"browser tests need a browser: {BROWSER_PROBLEM}")
        pytest.skip(BROWSER_PROBLEM)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@dataclass(frozen=True)
class SeededTemplate:
    database: Path
    data_dir: Path
    seeded: Seeded


@pytest.fixture(scope="session")
def seeded_template(
    tmp_path_factory: pytest.TempPathFactory, migrated_sqlite_template: Path
) -> SeededTemplate:
    """Accounts, classes and queued photos, made once (seeding costs about a second:
    scrypt hashes and ingestion); each test works on its own copy."""
    folder = tmp_path_factory.mktemp("seeded")
    database = folder / "curation.db"
    shutil.copyfile(migrated_sqlite_template, database)
    runtime = build_runtime(make_settings(folder / "var", f"sqlite:///{database}"))
    try:
        seeded = seed(runtime, folder / "photos")
    finally:
        runtime.dispose()
    return SeededTemplate(database, folder / "var", seeded)


@pytest.fixture
def runtime(seeded_template: SeededTemplate, tmp_path: Path) -> Iterator[Runtime]:
    """A fresh SQLite runtime per test: a copy of the seeded database and image store."""
    database = tmp_path / "curation.db"
    shutil.copyfile(seeded_template.database, database)
    shutil.copytree(seeded_template.data_dir, tmp_path / "var")
    runtime = build_runtime(make_settings(tmp_path / "var", f"sqlite:///{database}"))
    yield runtime
    runtime.dispose()


@pytest.fixture
def live(runtime: Runtime, seeded_template: SeededTemplate) -> Iterator[LiveServer]:
    server = serve(runtime, seeded_template.seeded)
    yield server
    server.stop()


@pytest.fixture
def shots(request: pytest.FixtureRequest) -> Screenshots:
    return Screenshots(request.node.name)


class Problems:
    """JavaScript errors and Content-Security-Policy violations seen by any page."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def watch(self, page: Any) -> None:
        page.on("pageerror", lambda error: self.seen.append(f"page error: {error}"))
        page.on("console", self._console)

    def _console(self, message: Any) -> None:
        if message.type == "error" and "Content Security Policy" in message.text:
            self.seen.append(f"CSP: {message.text}")


@pytest.fixture
def problems() -> Iterator[Problems]:
    watched = Problems()
    yield watched
    assert watched.seen == [], "the page reported errors"


@pytest.fixture
def open_page(browser: Any, live: LiveServer, problems: Problems) -> Iterator[Callable[..., Any]]:
    """``open_page("reviewer1")``: a new browser context signed in through the login
    form (keyboard only), on /review with its first item loaded."""
    contexts: list[Any] = []

    def open_(username: str | None, *, wait_ready: bool = True) -> Any:
        context = browser.new_context(viewport=VIEWPORT, base_url=live.url)
        context.set_default_timeout(TIMEOUT_MS)
        contexts.append(context)
        page = context.new_page()
        problems.watch(page)
        if username is not None:
            login(page, username)
            if wait_ready:
                wait_ready_page(page)
        return page

    yield open_
    for context in contexts:
        context.close()


def login(page: Any, username: str, password: str = PASSWORD) -> None:
    """Sign in through the form, starting from /review (which sends us to /login)."""
    page.goto("/review")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    with page.expect_navigation():
        page.get_by_label("Password").press("Enter")


def wait_ready_page(page: Any) -> None:
    page.wait_for_selector("#review[data-ready='true']", state="attached")
