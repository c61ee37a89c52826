"""The whole loop through a real worker: ingest, score, label, snapshot, retrain, gate,
promote, rescore. Generated images, the embedded broker, SQLite.

The worker consumes every queue, as `scripts/start.sh` runs it: the scoring
tasks embed the images, the scheduled-retraining task requests a run and
sends it to the training queue, and the training task snapshots the labels,
trains a head on the new version, passes the gate (no champion yet),
promotes it and rescores the queue from the cached embeddings.
"""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import func, select

from curation.ingest.folders import crawl_items, labelled_tree_items
from curation.ingest.records import IngestSummary
from curation.ingest.runner import IngestRunner
from curation.models import (
    DatasetVersion,
    ImageScore,
    JobStatus,
    ModelVersion,
    ScoringJob,
    TrainingRun,
)
from curation.runtime import build_runtime
from curation.settings import load_settings
from tests.conftest import make_settings
from tests.factories import jpeg
from tests.integration.workerproc import client_app, running_worker, worker_env

pytestmark = pytest.mark.slow

BACKBONE = "mobilenet_0.25"
CLASSES = 3
PER_CLASS = 14
CRAWL = 10


def _write_images(tmp_path: Path) -> tuple[Path, Path]:
    labelled, crawl = tmp_path / "labelled", tmp_path / "crawl"
    for cls in range(CLASSES):
        for i in range(PER_CLASS):
            path = labelled / f"landmark{cls}" / f"{i}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(jpeg(2000 + cls * 100 + i))
    crawl.mkdir()
    for i in range(CRAWL):
        (crawl / f"c{i}.jpg").write_bytes(jpeg(9000 + i))
    return labelled, crawl


def _wait(condition, timeout: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}:\n{log.read_text()[-4000:]}")
        time.sleep(0.5)


def test_ingest_score_snapshot_retrain_promote_rescore_through_a_worker(tmp_path: Path) -> None:
    database_url = f"sqlite:///{tmp_path / 'curation.db'}"
    settings = replace(
        make_settings(tmp_path / "var", database_url), backbone=BACKBONE, backbone_weights="none"
    )
    from curation import migrate

    migrate.upgrade(database_url)
    runtime = build_runtime(settings)
    labelled, crawl = _write_images(tmp_path)
    for items, summary in (
        (lambda s: labelled_tree_items(labelled, dataset_name="seed", summary=s), IngestSummary()),
        (lambda s: crawl_items(crawl, crawler="bot", manifest=None, summary=s), IngestSummary()),
    ):
        IngestRunner(runtime.factory, runtime.store, runtime.settings).run(
            items(summary), actor="test", action="t", summary=summary, parallel=False
        )
        assert not summary.rejected

    env = worker_env(
        data_dir=tmp_path / "var",
        database_url=database_url,
        broker_url=None,
        result_backend=f"db+sqlite:///{tmp_path / 'results.db'}",
    )
    env.update(CURATION_BACKBONE=BACKBONE, CURATION_BACKBONE_WEIGHTS="none")
    saved = {k: os.environ.get(k) for k in env if k.startswith("CURATION_")}
    os.environ.update({k: v for k, v in env.items() if k.startswith("CURATION_")})
    try:
        client_settings = load_settings()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    app = client_app(
        broker_url=client_settings.broker_url,
        result_backend=env["CURATION_RESULT_BACKEND"],
        transport_options=client_settings.broker_transport_options,
    )
    total = CLASSES * PER_CLASS + CRAWL

    def scored() -> int:
        with runtime.factory() as session:
            return int(
                session.scalar(
                    select(func.count())
                    .select_from(ScoringJob)
                    .where(ScoringJob.status == JobStatus.DONE.value)
                )
                or 0
            )

    def run_ended() -> bool:
        with runtime.factory() as session:
            run = session.scalars(select(TrainingRun)).first()
            return run is not None and run.status in ("succeeded", "failed", "cancelled")

    log = tmp_path / "worker.log"
    with running_worker(env, log, queues="default,scoring,training", name="loop"):
        app.send_task("curation.scoring.sweep_outbox", queue="default")
        _wait(lambda: scored() == total, 240, "every image embedded", log)
        app.send_task("curation.retraining.scheduled", queue="default")
        _wait(run_ended, 300, "the training run", log)

    with runtime.factory() as session:
        run = session.scalars(select(TrainingRun)).one()
        assert run.status == "succeeded", run.error
        version = session.get_one(DatasetVersion, run.dataset_version_id)
        assert version.item_count == CLASSES * PER_CLASS  # the labelled images
        model = session.get_one(ModelVersion, run.model_version_id)
        assert model.status == "champion"
        assert model.dataset_version_id == version.id
        test = model.metrics["test"]  # on the version's frozen test split
        assert test["test_images"] == model.metrics["images"]["test"] > 0
        assert {"accuracy", "top5_accuracy", "expected_calibration_error"} <= set(test)
        assert "confusion_matrix" in test
        assert model.queue_ranked_at is not None  # the queue was rescored with it
        rescored = session.scalar(
            select(func.count())
            .select_from(ImageScore)
            .where(ImageScore.model_version_id == model.id)
        )
        assert rescored == total

    # Fine-tune, promote the fine-tuned model, then let the worker take new crawl
    # images: it embeds them with the champion's own backbone too and scores them there.
    from datetime import UTC, datetime

    from curation import registry
    from curation.learning.scoring import LearningPaths
    from datasets.finetune import fine_tune_on_version

    paths = LearningPaths.under(settings.data_dir)
    tuned = fine_tune_on_version(
        runtime.factory, paths, runtime.store, version_ref="latest", backbone=BACKBONE,
        weights="none", blocks=1, epochs=1, patience=1, batch_size=8,
    )  # fmt: skip
    with runtime.factory() as session, session.begin():
        registry.promote_through_gate(
            session, paths, tuned.model_version_id, actor="test", reason="fine-tuned",
            now=datetime.now(UTC), max_class_drop=100, min_new_class_recall=0.0, override=True,
        )  # fmt: skip
    more = tmp_path / "more"
    more.mkdir()
    for i in range(4):
        (more / f"m{i}.jpg").write_bytes(jpeg(9500 + i))
    summary = IngestSummary()
    IngestRunner(runtime.factory, runtime.store, runtime.settings).run(
        crawl_items(more, crawler="bot", manifest=None, summary=summary),
        actor="test", action="t", summary=summary, parallel=False,
    )  # fmt: skip
    assert not summary.rejected

    def scored_by_tuned() -> int:
        with runtime.factory() as session:
            return int(
                session.scalar(
                    select(func.count())
                    .select_from(ImageScore)
                    .where(ImageScore.model_version_id == tuned.model_version_id)
                )
                or 0
            )

    with running_worker(env, log, queues="default,scoring,training", name="loop2"):
        app.send_task("curation.scoring.sweep_outbox", queue="default")
        _wait(lambda: scored() == total + 4, 240, "the new images scored", log)
    assert scored_by_tuned() == 4  # the run re-embedded the rest; nothing rescored them yet
    assert registry.rescore(runtime.factory, paths, tuned.model_version_id) == total + 4
