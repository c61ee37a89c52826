"""Scoring through a real worker process that is SIGKILLed mid-batch and restarted.

Every image must end with exactly one score for the model version and one
embedding per crop: at-least-once delivery (acks_late, the outbox sweeper)
with idempotent writes. Runs on Redis with PostgreSQL and on the embedded
filesystem broker with SQLite.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import func, select

from curation.ingest.folders import crawl_items, labelled_tree_items
from curation.ingest.records import IngestSummary
from curation.ingest.runner import IngestRunner
from curation.learning.backbones import load_backbone
from curation.learning.pipeline import process_batch
from curation.learning.scoring import LearningPaths, load_model, score_images, train_model
from curation.models import ImageEmbedding, ImageScore, JobStatus, ScoringJob
from curation.runtime import Runtime, build_runtime
from tests.conftest import REDIS_URL, make_settings
from tests.factories import jpeg
from tests.integration.test_worker_process import _redis_or_skip
from tests.integration.workerproc import client_app, worker_env

pytestmark = pytest.mark.slow

BACKBONE = "mobilenet_0.25"
# On Redis a batch of 4 takes ~45 ms once the model is loaded, so the crawl
# must be long enough that the worker cannot finish it between the test
# noticing the first crawl batch and the kill (48 images once finished first
# on CI). The embedded broker polls about once a second, so 48 leave it ample.
REDIS_CRAWL_IMAGES = 160
EMBEDDED_CRAWL_IMAGES = 48


def _ingest(runtime: Runtime, root: Path, *, labelled: bool) -> None:
    summary = IngestSummary()
    items = (
        labelled_tree_items(root, dataset_name="seed", summary=summary)
        if labelled
        else crawl_items(root, crawler="bot", manifest=None, summary=summary)
    )
    IngestRunner(runtime.factory, runtime.store, runtime.settings).run(
        items, actor="test", action="t", summary=summary, parallel=False
    )
    assert not summary.rejected


def _prepare(tmp_path: Path, database_url: str, crawl_images: int) -> tuple[Runtime, int]:
    """A champion model trained on labelled images, and a crawl waiting in the outbox."""
    settings = replace(
        make_settings(tmp_path / "var", database_url), backbone=BACKBONE, backbone_weights="none"
    )
    runtime = build_runtime(settings)
    labelled = tmp_path / "labelled"
    for cls in range(2):
        for i in range(6):
            path = labelled / f"class{cls}" / f"{i}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(jpeg(1000 + cls * 100 + i))
    _ingest(runtime, labelled, labelled=True)
    with runtime.factory() as session:
        seed_ids = list(session.scalars(select(ScoringJob.image_id)))
    backbone = load_backbone(BACKBONE, "none")
    process_batch(runtime, backbone, seed_ids)
    paths = LearningPaths.under(settings.data_dir)
    version = train_model(runtime.factory, paths, space_key=backbone.space_key)
    with runtime.factory() as session:
        model = load_model(session, paths, version)
    assert score_images(runtime.factory, paths, model) == 12  # as `curation train` does
    crawl = tmp_path / "crawl"
    crawl.mkdir()
    for i in range(crawl_images):
        (crawl / f"c{i:03}.jpg").write_bytes(jpeg(5000 + i))
    _ingest(runtime, crawl, labelled=False)
    return runtime, version


def _start(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    handle = log.open("ab")
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "workers.app",
            "worker",
            "--loglevel=INFO",
            "-Q",
            "default,scoring",
            "--concurrency",
            "1",
            "--without-gossip",
            "--without-mingle",
        ],
        env=env,
        stdout=handle,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _done(runtime: Runtime) -> int:
    with runtime.factory() as session:
        return (
            session.scalar(
                select(func.count())
                .select_from(ScoringJob)
                .where(ScoringJob.status == JobStatus.DONE.value)
            )
            or 0
        )


def _wait_for(predicate, timeout: float, what: str, log: Path, *, every: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out waiting for {what}\n{log.read_text(errors='replace')[-4000:]}"
            )
        time.sleep(every)


def _kill_mid_batch_and_recover(
    tmp_path: Path, database_url: str, broker_url: str | None, backend: str, crawl_images: int
) -> None:
    runtime, version = _prepare(tmp_path, database_url, crawl_images)
    total = 12 + crawl_images
    env = worker_env(
        data_dir=tmp_path / "var",
        database_url=database_url,
        broker_url=broker_url,
        result_backend=backend,
    )
    env.update(
        CURATION_BACKBONE=BACKBONE,
        CURATION_BACKBONE_WEIGHTS="none",
        CURATION_SCORING_BATCH_SIZE="4",
        CURATION_SCORING_STALE_SECONDS="3",
    )
    settings_env = {k: v for k, v in env.items() if k.startswith("CURATION_")}
    old = {k: os.environ.get(k) for k in settings_env}
    os.environ.update(settings_env)
    try:
        from curation.settings import load_settings

        client_settings = load_settings()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    app = client_app(
        broker_url=client_settings.broker_url,
        result_backend=backend,
        transport_options=client_settings.broker_transport_options,
    )
    log = tmp_path / "worker.log"
    worker = _start(env, log)
    try:
        app.send_task("curation.scoring.sweep_outbox", queue="default")
        # Poll tightly: the kill must land while most of the crawl is still queued.
        _wait_for(lambda: _done(runtime) >= 12 + 4, 180, "the first batch", log, every=0.01)
        os.killpg(worker.pid, signal.SIGKILL)  # the whole worker, mid-run
        worker.wait(timeout=30)
        assert _done(runtime) < total, "the worker finished before it could be killed"
        time.sleep(3.5)  # let the stamps of the lost batches go stale
        worker = _start(env, log)
        app.send_task("curation.scoring.sweep_outbox", queue="default")
        _wait_for(lambda: _done(runtime) == total, 240, "every job to finish", log)
    finally:
        if worker.poll() is None:
            # A warm shutdown waits for the batch in hand (often a redundant
            # resend); the assertions below do not need a graceful stop.
            os.killpg(worker.pid, signal.SIGTERM)
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait(timeout=30)
    with runtime.factory() as session:
        scores = session.execute(
            select(ImageScore.image_id, func.count())
            .where(ImageScore.model_version_id == version)
            .group_by(ImageScore.image_id)
        ).all()
        mappings = session.execute(
            select(ImageEmbedding.image_id, ImageEmbedding.crop_key, func.count()).group_by(
                ImageEmbedding.image_id, ImageEmbedding.crop_key
            )
        ).all()
    assert len(scores) == total and all(n == 1 for _, n in scores)
    assert len(mappings) == total and all(n == 1 for _, _, n in mappings)
    runtime.dispose()


@pytest.mark.postgres
@pytest.mark.redis
def test_killed_worker_on_redis_loses_nothing_and_duplicates_nothing(
    tmp_path: Path, pg_url: str
) -> None:
    _redis_or_skip()
    import redis

    redis.Redis.from_url(REDIS_URL).flushdb()
    _kill_mid_batch_and_recover(tmp_path, pg_url, REDIS_URL, REDIS_URL, REDIS_CRAWL_IMAGES)


def test_killed_worker_on_embedded_broker_loses_nothing(tmp_path: Path, sqlite_url: str) -> None:
    _kill_mid_batch_and_recover(
        tmp_path,
        sqlite_url,
        None,
        f"db+sqlite:///{tmp_path / 'results.db'}",
        EMBEDDED_CRAWL_IMAGES,
    )
