"""Training runs: coalescing, the database's single-run lock, heartbeats, cancel, reaping."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from curation import training_runs as runs
from curation.exceptions import Conflict, RejectedInput
from curation.models import RunStatus, TrainingRun

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def any_runtime(request):
    return request.getfixturevalue("runtime" if request.param == "sqlite" else "pg_runtime")


def test_a_request_while_one_is_queued_or_running_is_folded_into_it(db_session) -> None:
    first, created = runs.request_run(db_session, trigger="manual", requested_by="ann")
    assert created and first.status == "queued" and first.coalesced == 0
    again, created = runs.request_run(db_session, trigger="labels", requested_by="beat")
    assert not created and again.id == first.id and again.coalesced == 1
    runs.start(db_session, first.id, T0)
    during, created = runs.request_run(db_session, trigger="schedule", requested_by="beat")
    assert not created and during.id == first.id and during.coalesced == 2
    runs.finish(db_session, first.id, model_version_id=None, now=T0)  # type: ignore[arg-type]
    after, created = runs.request_run(db_session, trigger="class_activated", requested_by="x")
    assert created and after.id != first.id


def test_unknown_trigger_and_anonymous_requests_are_rejected(db_session) -> None:
    with pytest.raises(RejectedInput, match="unknown trigger"):
        runs.request_run(db_session, trigger="whenever", requested_by="ann")
    with pytest.raises(RejectedInput):
        runs.request_run(db_session, trigger="manual", requested_by="  ")


def test_the_unique_index_admits_one_active_run_only(any_runtime) -> None:
    def add(status: str) -> None:
        with any_runtime.factory() as session, session.begin():
            session.add(TrainingRun(status=status, trigger="manual", requested_by="t"))

    add("succeeded")
    add("failed")
    add("queued")
    for status in ("queued", "running"):
        with pytest.raises(IntegrityError):
            add(status)
    add("cancelled")  # finished runs are not limited
    with any_runtime.factory() as session:
        assert len(session.scalars(select(TrainingRun)).all()) == 4


def test_two_concurrent_requests_make_one_run(any_runtime) -> None:
    first_inserted = threading.Event()
    results: dict[str, tuple[int, bool]] = {}
    errors: list[BaseException] = []

    def first() -> None:
        try:
            with any_runtime.factory() as session, session.begin():
                run, created = runs.request_run(session, trigger="manual", requested_by="a")
                results["a"] = (run.id, created)
                first_inserted.set()
                # Hold the uncommitted insert while the other request runs.
                threading.Event().wait(0.5)
        except BaseException as error:  # pragma: no cover (reported below)
            errors.append(error)
            first_inserted.set()

    def second() -> None:
        try:
            first_inserted.wait(10)
            with any_runtime.factory() as session, session.begin():
                run, created = runs.request_run(session, trigger="labels", requested_by="b")
                results["b"] = (run.id, created)
        except BaseException as error:  # pragma: no cover
            errors.append(error)

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors, errors
    assert results["a"][1] is True and results["b"] == (results["a"][0], False)
    with any_runtime.factory() as session:
        (only,) = session.scalars(select(TrainingRun)).all()
        assert only.coalesced == 1


def test_start_heartbeat_cancel_and_the_worker_stops(db_session) -> None:
    run, _ = runs.request_run(db_session, trigger="manual", requested_by="ann")
    runs.start(db_session, run.id, T0)
    with pytest.raises(Conflict, match="not queued"):
        runs.start(db_session, run.id, T0)
    assert runs.heartbeat(db_session, run.id, 0.4, "epoch 3", T0 + timedelta(seconds=5)) is False
    assert run.progress == pytest.approx(0.4) and run.progress_message == "epoch 3"
    runs.cancel_request(db_session, run.id, T0)
    assert run.status == "running" and run.cancel_requested
    assert runs.heartbeat(db_session, run.id, 0.5, "epoch 4", T0) is True
    runs.mark_cancelled(db_session, run.id, T0)
    assert run.status == RunStatus.CANCELLED.value
    with pytest.raises(Conflict, match="already ended"):
        runs.cancel_request(db_session, run.id, T0)


def test_a_queued_run_is_cancelled_at_once(db_session) -> None:
    run, _ = runs.request_run(db_session, trigger="manual", requested_by="ann")
    runs.cancel_request(db_session, run.id, T0)
    assert run.status == "cancelled" and run.finished_at is not None
    assert runs.active_run(db_session) is None


def test_fail_records_the_error_and_frees_the_lock(db_session) -> None:
    run, _ = runs.request_run(db_session, trigger="manual", requested_by="ann")
    runs.start(db_session, run.id, T0)
    runs.fail(db_session, run.id, "ValueError: boom", T0)
    assert run.status == "failed" and run.error == "ValueError: boom"
    _, created = runs.request_run(db_session, trigger="manual", requested_by="ann")
    assert created


def test_reap_stale_fails_a_run_whose_worker_stopped_beating(db_session) -> None:
    run, _ = runs.request_run(db_session, trigger="manual", requested_by="ann")
    runs.start(db_session, run.id, T0)
    runs.heartbeat(db_session, run.id, 0.2, "epoch 1", T0 + timedelta(minutes=1))
    assert runs.reap_stale(db_session, T0 + timedelta(minutes=5), timedelta(minutes=10)) == []
    assert run.status == "running"
    reaped = runs.reap_stale(db_session, T0 + timedelta(minutes=12), timedelta(minutes=10))
    assert reaped == [run.id]
    assert run.status == "failed" and run.error is not None
    assert run.error.startswith("worker lost (no heartbeat since 2026-11-01T12:01:00")
    # The worker, if it was only slow, learns at its next beat that it must stop.
    assert runs.heartbeat(db_session, run.id, 0.3, "epoch 2", T0) is True
    assert runs.run_dict(run)["status"] == "failed"
