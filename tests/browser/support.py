"""What the browser tests share: the seeded runtime, the live server, screenshots.

The browser is the Debian Chromium (/usr/bin/chromium), driven by Playwright's
sync API; ``playwright install`` is never needed.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select
from werkzeug.serving import BaseWSGIServer, make_server

from curation.accounts import create_user
from curation.ingest.folders import crawl_items
from curation.ingest.records import IngestSummary
from curation.ingest.runner import IngestRunner
from curation.learning import bulk_write
from curation.learning.pipeline import queue_for_cold_start
from curation.models import (
    ClassAlias,
    EmbeddingSpace,
    Image,
    ImageScore,
    ModelStatus,
    ModelVersion,
)
from curation.runtime import Runtime
from curation.taxonomy import find_or_create_class, search_key
from tests.factories import jpeg, near_copy

REPO_ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO_ROOT / "test-output" / "browser"
CHROMIUM = Path(os.environ.get("CURATION_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
REQUIRE_SERVICES = os.environ.get("CURATION_REQUIRE_SERVICES") == "1"

PASSWORD = "correct-horse-battery"
REVIEWERS = ("reviewer1", "reviewer2")
# English display names, each with a Korean alias.
CLASSES = {
    "Gyeongbokgung": "경복궁",
    "Deoksugung": "덕수궁",
    "Changdeokgung": "창덕궁",
    "N Seoul Tower": "N서울타워",
    "Bukchon Hanok Village": "북촌한옥마을",
}
IMAGE_COUNT = 30
IMAGE_SIZE = (640, 480)


def _browser_problem() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (scripts/bootstrap.sh dev)"
    if not CHROMIUM.is_file():
        return f"{CHROMIUM} is absent (apt-get install chromium)"
    return None


BROWSER_PROBLEM = _browser_problem()


# --- data -------------------------------------------------------------------------


@dataclass
class Seeded:
    users: dict[str, int] = field(default_factory=dict)
    classes: dict[str, int] = field(default_factory=dict)
    image_ids: list[int] = field(default_factory=list)


def seed(runtime: Runtime, folder: Path) -> Seeded:
    """Accounts, classes with Korean aliases, and IMAGE_COUNT queued photos (cold start)."""
    seeded = Seeded()
    with runtime.factory() as session, session.begin():
        for username, role in [("admin", "admin"), *((name, "reviewer") for name in REVIEWERS)]:
            user = create_user(
                session, username=username, password=PASSWORD, role=role, actor="test"
            )
            seeded.users[username] = user.id
        for name, korean in CLASSES.items():
            landmark, _ = find_or_create_class(session, name)
            landmark.aliases.append(
                ClassAlias(language="ko", name=korean, search_key=search_key(korean))
            )
            seeded.classes[name] = landmark.id
    folder.mkdir(parents=True, exist_ok=True)
    width, height = IMAGE_SIZE
    for n in range(IMAGE_COUNT - 1):
        (folder / f"photo-{n:02d}.jpg").write_bytes(jpeg(1000 + n, width, height))
    # One near-duplicate pair, so that a group shows up in the queue.
    (folder / "photo-00-copy.jpg").write_bytes(near_copy(1000, width, height))
    summary = IngestSummary()
    IngestRunner(runtime.factory, runtime.store, runtime.settings).run(
        crawl_items(folder, crawler="browser-test", manifest=None, summary=summary),
        actor="test",
        action="test.seed",
        summary=summary,
        parallel=False,
    )
    with runtime.factory() as session:
        seeded.image_ids = list(session.scalars(select(Image.id).order_by(Image.id)))
    assert len(seeded.image_ids) == IMAGE_COUNT, summary
    queue_for_cold_start(runtime, seeded.image_ids)
    return seeded


GUESSES = ("Gyeongbokgung", "Deoksugung", "Changdeokgung")
GUESS_PROBABILITIES = (0.62, 0.25, 0.08)


def seed_model_guesses(runtime: Runtime, seeded: Seeded) -> dict[int, list[int]]:
    """A champion model's ranking of the whole queue, as a scoring run leaves it.

    Every image gets the top three guesses GUESSES (even image ids) or the first
    two swapped (odd ids). Returns image id -> the class ids of its guesses, in order.
    """
    classes = [seeded.classes[name] for name in GUESSES]
    guesses: dict[int, list[int]] = {}
    with runtime.factory() as session, session.begin():
        space = EmbeddingSpace(key="browser-test", backbone="none", weights_id="none", dim=8)
        session.add(space)
        session.flush()
        model = ModelVersion(
            space_id=space.id,
            class_ids=[seeded.classes[name] for name in CLASSES],
            artifact_key="browser-test",
            seed=0,
            status=ModelStatus.CHAMPION.value,
            queue_ranked_at=datetime.now(UTC),
        )
        session.add(model)
        session.flush()
        for image_id in seeded.image_ids:
            order = classes if image_id % 2 == 0 else [classes[1], classes[0], classes[2]]
            guesses[image_id] = order
            session.add(
                ImageScore(
                    model_version_id=model.id,
                    image_id=image_id,
                    top_classes=order,
                    top_probabilities=list(GUESS_PROBABILITIES),
                    entropy=0.9,
                    margin=GUESS_PROBABILITIES[0] - GUESS_PROBABILITIES[1],
                    least_confidence=1 - GUESS_PROBABILITIES[0],
                    novelty=0.1,
                )
            )
        ids = np.asarray(seeded.image_ids, dtype=np.int64)
        bulk_write.write_ranking(
            session,
            bulk_write.RankingRows(
                ranking=model.id,
                image_ids=ids,
                priority=np.linspace(0.9, 0.5, len(ids)),
                strategy=np.full(len(ids), "uncertainty"),
            ),
        )
    return guesses


# --- the live server ----------------------------------------------------------------


class Delays:
    """WSGI middleware: answers to paths starting with a prefix wait that many seconds."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app
        self.by_prefix: dict[str, float] = {}

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        path = environ.get("PATH_INFO", "")
        for prefix, seconds in list(self.by_prefix.items()):
            if path.startswith(prefix):
                time.sleep(seconds)
        return self.app(environ, start_response)


@dataclass
class LiveServer:
    runtime: Runtime
    seeded: Seeded
    server: BaseWSGIServer
    thread: threading.Thread
    delays: Delays

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.thread.join(timeout=10)
        self.server.server_close()


def serve(runtime: Runtime, seeded: Seeded) -> LiveServer:
    from webui import create_app

    app = create_app({"TESTING": False, "SECRET_KEY": "x" * 32}, runtime=runtime)
    delays = Delays(app.wsgi_app)
    app.wsgi_app = delays  # type: ignore[method-assign]
    server = make_server("127.0.0.1", 0, app, threaded=True)
    # A short poll interval: shutdown() waits for the serving loop to notice.
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="live-server", daemon=True
    )
    thread.start()
    return LiveServer(runtime, seeded, server, thread, delays)


# --- screenshots ----------------------------------------------------------------------


class Screenshots:
    """``shot(page, "step")`` saves test-output/browser/<test>/NN-step.png."""

    def __init__(self, test_name: str) -> None:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in test_name)
        self.folder = SCREENSHOTS / safe
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.count = 0

    def __call__(self, page: Any, step: str) -> Path:
        self.count += 1
        path = self.folder / f"{self.count:02d}-{step}.png"
        page.screenshot(path=str(path))
        return path
