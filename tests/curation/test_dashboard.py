"""The dashboard's numbers, on SQLite and PostgreSQL: the queue by reason (live and
snapshotted, once per bucket), decisions per reviewer per hour, the long tail of
images per class, and the models' accuracy."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import event, select

from curation.dashboard import (
    MAX_DAYS,
    MAX_HOURS,
    bucket_start,
    decisions_per_reviewer_hour,
    images_per_class,
    live_queue_counts,
    model_accuracy,
    queue_history,
    record_queue_snapshot,
)
from curation.exceptions import RejectedInput
from curation.labels import append_label
from curation.models import (
    EmbeddingSpace,
    LandmarkClass,
    ModelVersion,
    QueueItem,
    QueueOrder,
    QueueSnapshot,
    ReviewDecision,
    User,
)
from curation.review.claims import REASONS
from curation.runtime import Runtime
from tests.factories import image_row

NOW = datetime(2026, 11, 24, 10, 7, 30, tzinfo=UTC)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def any_runtime(request):
    return request.getfixturevalue("runtime" if request.param == "sqlite" else "pg_runtime")


def _user(session, name: str) -> int:
    user = User(username=name, password_hash="x", role="reviewer")
    session.add(user)
    session.flush()
    return user.id


def _model(session, *, status: str, metrics: dict, created_at: datetime, ranked: bool = False):
    space = session.scalars(select(EmbeddingSpace)).first()
    if space is None:
        space = EmbeddingSpace(key="s", backbone="b", weights_id="w", dim=4)
        session.add(space)
        session.flush()
    version = ModelVersion(
        space_id=space.id,
        class_ids=[],
        artifact_key=f"m{created_at.timestamp()}",
        seed=0,
        metrics=metrics,
        status=status,
        created_at=created_at,
        queue_ranked_at=created_at if ranked else None,
    )
    session.add(version)
    session.flush()
    return version.id


# --- the queue by reason --------------------------------------------------------------


def _queue(runtime: Runtime) -> int:
    """Items 1-9 under a model's ranking (the current one) and all of them under the
    cold start (superseded); returns the model's ranking id."""
    with runtime.factory() as session, session.begin():
        model = _model(
            session, status="champion", metrics={}, created_at=NOW - timedelta(days=1), ranked=True
        )
        lease_ok, lapsed = NOW + timedelta(minutes=5), NOW - timedelta(minutes=5)
        # image: (strategy under the model, status, stage, lease)
        items = {
            1: ("uncertainty", "pending", 1, None),
            2: ("uncertainty", "pending", 2, None),
            3: ("uncertainty", "claimed", 1, lease_ok),
            4: ("uncertainty", "claimed", 1, lapsed),  # lapsed: back in line
            5: ("novelty", "held", 1, None),
            6: ("novelty", "disputed", 3, None),
            7: ("novelty", "claimed", 3, lapsed),  # an admin's lapsed claim: disputed again
            8: ("novelty", "claimed", 3, lease_ok),  # an admin holds it
            9: ("label_error", "done", 1, None),  # decided: counted nowhere
        }
        for image_id, (strategy, status, stage, lease) in items.items():
            image_row(session, image_id)
            session.add(
                QueueItem(image_id=image_id, status=status, stage=stage, lease_expires_at=lease)
            )
            session.add(
                QueueOrder(ranking=0, image_id=image_id, priority=0.5, strategy="cold_start")
            )
            session.add(
                QueueOrder(ranking=model, image_id=image_id, priority=0.5, strategy=strategy)
            )
    return model


def test_live_counts_group_by_reason_under_the_current_ranking(any_runtime: Runtime) -> None:
    model = _queue(any_runtime)
    with any_runtime.factory() as session:
        ranking, counts = live_queue_counts(session, NOW)
    assert ranking == model
    by_reason = {c.reason: (c.pending, c.claimed, c.held, c.disputed) for c in counts}
    assert by_reason == {
        "uncertainty": (3, 1, 0, 0),
        "novelty": (0, 1, 1, 2),
        # Every known reason is listed; the superseded cold-start ranking counts nowhere.
        **{reason: (0, 0, 0, 0) for reason in REASONS if reason not in ("uncertainty", "novelty")},
    }
    assert [c.reason for c in counts] == list(REASONS)


def test_live_counts_are_one_grouped_statement(runtime: Runtime) -> None:
    _queue(runtime)
    statements: list[str] = []

    def seen(_conn, _cursor, statement, *_args) -> None:
        statements.append(statement)

    event.listen(runtime.engine, "before_cursor_execute", seen)
    try:
        with runtime.factory() as session:
            live_queue_counts(session, NOW)
    finally:
        event.remove(runtime.engine, "before_cursor_execute", seen)
    # The current ranking, then the counts: no statement per item or per reason.
    assert len(statements) == 2
    assert "GROUP BY" in statements[1]


def test_a_snapshot_is_written_once_per_bucket(any_runtime: Runtime) -> None:
    _queue(any_runtime)
    with any_runtime.factory() as session, session.begin():
        first = record_queue_snapshot(session, NOW)
    assert first.taken_at == datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
    assert first.written == len(REASONS)
    # The queue changes, and the same beat is delivered again in the same bucket.
    with any_runtime.factory() as session, session.begin():
        session.execute(QueueItem.__table__.update().values(status="pending"))
        again = record_queue_snapshot(session, NOW + timedelta(minutes=7))
    assert again.written == 0 and again.taken_at == first.taken_at
    with any_runtime.factory() as session:
        rows = {
            row.reason: row
            for row in session.scalars(select(QueueSnapshot).order_by(QueueSnapshot.reason))
        }
    assert set(rows) == set(REASONS)
    assert (rows["uncertainty"].pending, rows["uncertainty"].claimed) == (3, 1)
    assert rows["cold_start"].pending == 0
    assert {row.ranking for row in rows.values()} == {rows["novelty"].ranking}
    # The next bucket measures again.
    with any_runtime.factory() as session, session.begin():
        later = record_queue_snapshot(session, NOW + timedelta(minutes=8))
    assert later.taken_at == datetime(2026, 11, 24, 10, 15, tzinfo=UTC)
    assert later.written == len(REASONS)
    with any_runtime.factory() as session:
        newest = session.scalars(
            select(QueueSnapshot).where(
                QueueSnapshot.taken_at == later.taken_at, QueueSnapshot.reason == "uncertainty"
            )
        ).one()
    assert newest.pending == 4  # every item pending now, the done one included


def test_history_is_the_window_of_snapshots_then_the_live_count(any_runtime: Runtime) -> None:
    _queue(any_runtime)
    for age in (timedelta(days=8), timedelta(days=2), timedelta(hours=1)):
        with any_runtime.factory() as session, session.begin():
            record_queue_snapshot(session, NOW - age)
    with any_runtime.factory() as session:
        history = queue_history(session, NOW, days=7)
    stored = [p for p in history.points if not p.live]
    times = sorted({p.taken_at for p in stored})
    assert times == [
        bucket_start(NOW - timedelta(days=2)),
        bucket_start(NOW - timedelta(hours=1)),
    ]
    assert all(p.taken_at.tzinfo is not None for p in history.points)
    assert [p.reason for p in history.live] == list(REASONS)
    assert all(p.taken_at == NOW for p in history.live)
    assert history.points[-len(REASONS) :] == history.live
    assert history.reasons == list(REASONS)
    assert history.start == NOW - timedelta(days=7)


@pytest.mark.parametrize("days", [0, -1, MAX_DAYS + 1, True, 1.5])
def test_history_refuses_a_bad_window(db_session, days) -> None:
    with pytest.raises(RejectedInput, match="days must be a whole number from 1 to"):
        queue_history(db_session, NOW, days=days)


def test_an_unknown_reason_is_listed_after_the_known_ones(db_session) -> None:
    image_row(db_session, 1)
    db_session.add(QueueItem(image_id=1, status="pending"))
    db_session.add(QueueOrder(ranking=0, image_id=1, priority=1.0, strategy="zz_future"))
    db_session.flush()
    _, counts = live_queue_counts(db_session, NOW)
    assert [c.reason for c in counts] == [*REASONS, "zz_future"]
    assert counts[-1].pending == 1 and counts[-1].total == 1


def test_bucket_start_reads_any_offset_as_utc() -> None:
    seoul = timezone(timedelta(hours=9))
    assert bucket_start(datetime(2026, 11, 24, 19, 29, 59, tzinfo=seoul)) == datetime(
        2026, 11, 24, 10, 15, tzinfo=UTC
    )
    assert bucket_start(datetime(2026, 11, 24, 10, 30)) == datetime(
        2026, 11, 24, 10, 30, tzinfo=UTC
    )
    assert bucket_start(NOW, timedelta(hours=1)) == datetime(2026, 11, 24, 10, tzinfo=UTC)


# --- decisions per reviewer per hour ----------------------------------------------------


def _decisions(runtime: Runtime) -> None:
    with runtime.factory() as session, session.begin():
        ann, bob = _user(session, "ann"), _user(session, "bob")
        image_row(session, 1)
        item = QueueItem(image_id=1, status="done")
        session.add(item)
        session.flush()

        def add(reviewer: int, at: datetime, action: str = "accept", undone: bool = False) -> None:
            session.add(
                ReviewDecision(
                    item_id=item.id,
                    image_id=1,
                    reviewer_id=reviewer,
                    stage=1,
                    action=action,
                    outcome="skipped" if action == "skip" else "labelled",
                    created_at=at,
                    undone_at=at + timedelta(seconds=5) if undone else None,
                )
            )

        hour = datetime(2026, 11, 24, 10, tzinfo=UTC)
        add(ann, hour + timedelta(minutes=1))  # the current hour
        add(ann, hour + timedelta(minutes=2), "skip")
        add(ann, hour + timedelta(minutes=3), undone=True)  # taken back: not counted
        add(bob, hour + timedelta(minutes=59, seconds=59))
        add(bob, hour - timedelta(hours=1))  # 09:00 exactly
        add(bob, hour - timedelta(hours=1, seconds=1))  # 08:59:59
        add(ann, hour - timedelta(hours=23))  # the first hour of a 24-hour window
        add(ann, hour - timedelta(hours=23, seconds=1))  # just before it


def test_decisions_are_counted_per_reviewer_per_hour(any_runtime: Runtime) -> None:
    _decisions(any_runtime)
    with any_runtime.factory() as session:
        activity = decisions_per_reviewer_hour(session, NOW, hours=24)
    assert len(activity.hours) == 24
    assert activity.hours[0] == datetime(2026, 11, 23, 11, tzinfo=UTC)
    assert activity.hours[-1] == datetime(2026, 11, 24, 10, tzinfo=UTC)
    cells = {(row.hour.hour, row.reviewer): (row.decisions, row.skips) for row in activity.rows}
    assert cells == {
        (11, "ann"): (1, 0),
        (8, "bob"): (1, 0),
        (9, "bob"): (1, 0),  # 09:00 exactly
        (10, "ann"): (2, 1),  # the undone one left out; the skip counted and shown
        (10, "bob"): (1, 0),
    }
    assert activity.reviewers == ["ann", "bob"]  # most decisions first, then by name
    assert activity.total == 6
    table = activity.per_reviewer()
    assert table["ann"][0] == 1 and table["ann"][-1] == 2 and sum(table["ann"]) == 3
    assert table["bob"][-2] == 1 and sum(table["bob"]) == 3


def test_a_one_hour_window_is_the_current_hour(any_runtime: Runtime) -> None:
    _decisions(any_runtime)
    with any_runtime.factory() as session:
        activity = decisions_per_reviewer_hour(session, NOW, hours=1)
    assert activity.hours == [datetime(2026, 11, 24, 10, tzinfo=UTC)]
    assert {row.reviewer: row.decisions for row in activity.rows} == {"ann": 2, "bob": 1}


def test_no_decisions_is_an_empty_window(db_session) -> None:
    activity = decisions_per_reviewer_hour(db_session, NOW)
    assert len(activity.hours) == 24 and activity.rows == [] and activity.reviewers == []
    assert activity.total == 0 and activity.per_reviewer() == {}


@pytest.mark.parametrize("hours", [0, -3, MAX_HOURS + 1, True, "24"])
def test_decisions_refuse_a_bad_window(db_session, hours) -> None:
    with pytest.raises(RejectedInput, match=f"hours must be a whole number from 1 to {MAX_HOURS}"):
        decisions_per_reviewer_hour(db_session, NOW, hours=hours)


# --- images per class -----------------------------------------------------------------


def test_images_per_class_counts_each_image_once_by_its_current_label(any_runtime) -> None:
    with any_runtime.factory() as session, session.begin():
        classes = {}
        for name, status in (
            ("Gyeongbokgung", "active"),
            ("Deoksugung", "active"),
            ("Namsan", "proposed"),
            ("Old Tower", "retired"),
            ("Achasan", "active"),
        ):
            landmark = LandmarkClass(
                slug=name.lower().replace(" ", "-"), display_name=name, status=status
            )
            session.add(landmark)
            session.flush()
            classes[name] = landmark.id
        for n in range(1, 9):
            image_row(session, n)

        def label(image: int, name: str | None, supersedes=None):
            return append_label(
                session,
                image_id=image,
                class_id=classes[name] if name else None,
                box=None,
                origin="test",
                supersedes=supersedes,
            )

        # Image 1 moved from Deoksugung to Gyeongbokgung: it counts once, there.
        label(1, "Gyeongbokgung", supersedes=label(1, "Deoksugung"))
        label(2, "Gyeongbokgung")
        label(3, "Gyeongbokgung")
        label(4, "Deoksugung")
        label(5, "Namsan")
        # Two current labels (two imports, neither superseding): the newest counts.
        label(6, "Deoksugung")
        label(6, "Namsan")
        label(7, None)  # not a landmark
        # Image 8 has no label.
    with any_runtime.factory() as session:
        tail = images_per_class(session)
    assert [(c.name, c.images, c.status) for c in tail.classes] == [
        ("Gyeongbokgung", 3, "active"),
        ("Namsan", 2, "proposed"),
        ("Deoksugung", 1, "active"),
        ("Achasan", 0, "active"),  # the empty classes too, by name
        ("Old Tower", 0, "retired"),
    ]
    assert (tail.total_images, tail.labelled, tail.not_landmark, tail.unlabelled) == (8, 6, 1, 1)
    assert tail.empty_classes == 2


def test_no_classes_is_an_empty_tail(db_session) -> None:
    tail = images_per_class(db_session)
    assert tail.classes == [] and tail.total_images == 0 and tail.unlabelled == 0


# --- the models' accuracy -------------------------------------------------------------


def test_accuracy_per_model_version_with_the_champion_marked(any_runtime: Runtime) -> None:
    with any_runtime.factory() as session, session.begin():
        day = timedelta(days=1)
        old = _model(
            session,
            status="retired",
            metrics={"cross_validated_accuracy": 0.61, "training_images": 120},
            created_at=NOW - 3 * day,
        )
        champion = _model(
            session,
            status="champion",
            metrics={
                "cross_validated_accuracy": 0.7,
                "test_accuracy": 0.74,  # the frozen test split wins over cross-validation
                "top5_accuracy": 0.93,
                "training_images": 480,
            },
            created_at=NOW - 2 * day,
        )
        nothing = _model(session, status="candidate", metrics={}, created_at=NOW - day)
        odd = _model(
            session,
            status="candidate",
            metrics={"accuracy": 87.5, "top5_accuracy": True, "training_images": "many"},
            created_at=NOW - timedelta(hours=1),
        )
    with any_runtime.factory() as session:
        history = model_accuracy(session)
    assert [m.version_id for m in history.models] == [old, champion, nothing, odd]
    first, best, empty, weird = history.models
    assert (first.accuracy, first.accuracy_metric, first.top5, first.training_images) == (
        0.61,
        "cross_validated_accuracy",
        None,
        120,
    )
    assert (best.accuracy, best.accuracy_metric, best.top5, best.top5_metric) == (
        0.74,
        "test_accuracy",
        0.93,
        "top5_accuracy",
    )
    # Missing, out of range (a percentage?) or not a number: no accuracy, said so.
    assert empty.accuracy is None and empty.top5 is None
    assert weird.accuracy is None and weird.top5 is None and weird.training_images is None
    assert history.current is not None and history.current.version_id == champion
    assert best.is_champion and not first.is_champion
    assert [m.version_id for m in history.measured] == [old, champion]
    assert best.created_at == NOW - 2 * day


def test_no_models_is_an_empty_history(db_session) -> None:
    history = model_accuracy(db_session)
    assert history.models == [] and history.current is None and history.measured == []
