"""When retraining is due, and the single-run rule on both databases."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from curation import training_runs
from curation.labels import append_label
from curation.models import ClassChange, LandmarkClass, NearDuplicateGroup, RunTrigger
from datasets.retraining import due_trigger, request_if_due, request_scheduled
from tests.factories import image_row


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def any_runtime(request):
    return request.getfixturevalue("runtime" if request.param == "sqlite" else "pg_runtime")


def _label(session, n: int, class_id: int) -> None:
    group = NearDuplicateGroup()
    session.add(group)
    session.flush()
    image = image_row(session, n, group_id=group.id)
    append_label(session, image_id=image.id, class_id=class_id, box=None, origin="t")


def test_enough_new_labels_or_an_activated_class_call_for_a_run(any_runtime) -> None:
    settings = replace(any_runtime.settings, retrain_after_labels=5)
    now = datetime.now(UTC)
    with any_runtime.factory() as session, session.begin():
        landmark = LandmarkClass(slug="a", display_name="A", status="active")
        session.add(landmark)
        session.flush()
        for n in range(4):
            _label(session, n + 1, landmark.id)
        check, run = request_if_due(session, settings, now)
        assert check.trigger is None and check.new_labels == 4 and run is None
        _label(session, 5, landmark.id)
        check, run = request_if_due(session, settings, now)
        assert check.trigger is RunTrigger.LABELS and run is not None
        # Counted from the last request: the same labels do not fire again.
        assert due_trigger(session, after_labels=5).trigger is None
        training_runs.fail(session, run.id, "test", now)
    with any_runtime.factory() as session, session.begin():
        session.add(ClassChange(class_id=landmark.id, kind="activated", actor="t", details={}))
        session.flush()
        check, run = request_if_due(session, settings, datetime.now(UTC))
        assert check.trigger is RunTrigger.CLASS_ACTIVATED and run is not None


def test_a_request_while_one_is_queued_is_folded_into_it(any_runtime) -> None:
    now = datetime.now(UTC)
    with any_runtime.factory() as session, session.begin():
        first = request_scheduled(session, any_runtime.settings, now)
        assert first is not None
        assert request_scheduled(session, any_runtime.settings, now) is None
        run, created = training_runs.request_run(session, trigger="manual", requested_by="ann")
        assert not created and run.id == first.id and run.coalesced == 2


def test_a_run_whose_worker_died_is_failed_and_frees_the_slot(any_runtime) -> None:
    settings = any_runtime.settings
    start = datetime.now(UTC) - timedelta(hours=2)
    with any_runtime.factory() as session, session.begin():
        run = request_scheduled(session, settings, start)
        assert run is not None
        training_runs.start(session, run.id, start)
        run_id = run.id
    with any_runtime.factory() as session, session.begin():
        again = request_scheduled(session, settings, datetime.now(UTC))
        assert again is not None and again.id != run_id
        lost = training_runs.get_run(session, run_id)
        assert lost.status == "failed" and "worker lost" in (lost.error or "")
