"""One retraining at a time, with two real beat processes and a real worker.

Both beats fire the scheduled retraining every second; a worker runs the
request tasks. The database admits one queued run: every other request is
folded into it. Then a training worker takes the run; with nothing labelled
it fails (no embeddings to train on), and the run ends failed with its error,
never left running.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sqlalchemy import select

from curation.db import make_engine, make_session_factory
from curation.models import TrainingRun
from tests.integration.workerproc import running_beat, running_worker, worker_env

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


def _runs(url: str) -> list[TrainingRun]:
    engine = make_engine(url)
    try:
        with make_session_factory(engine)() as session:
            return list(session.scalars(select(TrainingRun).order_by(TrainingRun.id)))
    finally:
        engine.dispose()


def _wait(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)


def test_two_beats_make_one_run_and_a_failing_run_ends_failed(tmp_path: Path, pg_url: str):
    env = worker_env(
        data_dir=tmp_path / "var",
        database_url=pg_url,
        broker_url=None,  # the embedded filesystem broker, under the data folder
        result_backend=f"db+sqlite:///{tmp_path / 'results.db'}",
    )
    env["CURATION_RETRAIN_EVERY_SECONDS"] = "1"
    with running_worker(env, tmp_path / "requests.log", queues="default", name="requests"):
        with running_beat(env, tmp_path / "beat-a"), running_beat(env, tmp_path / "beat-b"):
            _wait(lambda: sum(r.coalesced for r in _runs(pg_url)) >= 4, 60, "coalesced requests")
        time.sleep(2)  # the last requests drain
        runs = _runs(pg_url)
        assert len(runs) == 1, [(r.id, r.status) for r in runs]
        (run,) = runs
        assert run.status == "queued" and run.trigger == "schedule"
        assert run.coalesced >= 4
        logs = [(tmp_path / f"beat-{n}" / "beat.log").read_text() for n in "ab"]
        assert all("curation.retraining.scheduled" in log for log in logs)

    # The queued run's task waits in the training queue; a training worker takes it.
    with running_worker(env, tmp_path / "training.log", queues="training", name="training"):
        _wait(lambda: _runs(pg_url)[0].status not in ("queued", "running"), 120, "the run")
    (run,) = _runs(pg_url)
    assert run.status == "failed"
    assert run.error and "no embeddings" in run.error  # nothing was ever scored
    assert run.finished_at is not None
