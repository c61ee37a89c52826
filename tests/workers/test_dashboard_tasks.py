"""The queue-snapshot beat task: scheduled on the quarter hours, thin, idempotent."""

from __future__ import annotations

from datetime import timedelta

import pytest
from celery.schedules import crontab
from sqlalchemy import func, select

from curation.dashboard import SNAPSHOT_EVERY
from curation.models import QueueSnapshot
from curation.review.claims import REASONS
from curation.runtime import Runtime


@pytest.fixture
def tasks(monkeypatch, tmp_path, runtime: Runtime):
    monkeypatch.setenv("CURATION_DATA_DIR", str(tmp_path))
    import workers.tasks

    monkeypatch.setattr(workers.tasks, "worker_runtime", lambda: runtime)
    return workers.tasks


def test_the_beat_records_a_snapshot_every_bucket(tasks) -> None:
    entry = tasks.celery_app.conf.beat_schedule["record-queue-snapshot"]
    assert entry["task"] == "curation.dashboard.record_queue_snapshot"
    assert entry["task"] in tasks.celery_app.tasks
    schedule = entry["schedule"]
    assert isinstance(schedule, crontab)
    assert schedule.minute == {0, 15, 30, 45}
    assert timedelta(minutes=15) == SNAPSHOT_EVERY  # the same buckets
    assert entry["options"]["expires"] <= SNAPSHOT_EVERY.total_seconds()


def test_a_task_delivered_twice_writes_the_bucket_once(tasks, runtime: Runtime) -> None:
    first = tasks.snapshot_queue()
    again = tasks.snapshot_queue()
    assert first["written"] == len(REASONS)
    # A second delivery in the same bucket writes nothing (or, right at a quarter
    # hour, measures the next bucket once).
    assert again["written"] in (0, len(REASONS))
    with runtime.factory() as session:
        rows = session.scalar(select(func.count()).select_from(QueueSnapshot))
        buckets = session.scalar(select(func.count(func.distinct(QueueSnapshot.taken_at))))
    assert rows == len(REASONS) * buckets
