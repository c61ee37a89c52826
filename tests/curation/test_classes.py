"""The class lifecycle (curation.classes) on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from curation import classes
from curation.accounts import create_user
from curation.exceptions import ConfigurationError, Conflict, NotFound, RejectedInput
from curation.labels import append_label, current_label
from curation.learning import bulk_write, embedding_store
from curation.models import (
    AuditEntry,
    ClassAlias,
    ClassChange,
    ImageSource,
    Label,
    LandmarkClass,
    NearDuplicateGroup,
    QueueItem,
    QueueOrder,
    User,
)
from curation.queue import CLASS_SPLIT_REASON, CLASS_SPLIT_STRATEGY, current_ranking
from curation.review.claims import claim_next
from curation.review.decisions import DecisionRequest, decide
from curation.review.views import item_view, search_classes
from curation.runtime import Runtime
from curation.settings import load_settings
from curation.taxonomy import find_class
from tests.factories import image_row

ACTOR = "test"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def any_runtime(request: pytest.FixtureRequest) -> Runtime:
    runtime: Runtime = request.getfixturevalue(
        "runtime" if request.param == "sqlite" else "pg_runtime"
    )
    return runtime


@pytest.fixture
def db(any_runtime: Runtime) -> Iterator[Session]:
    """A session whose work is committed only where a test commits it."""
    with any_runtime.factory() as session:
        yield session


def _class(session: Session, name: str, status: str = "active") -> LandmarkClass:
    landmark = classes.propose_class(session, name, actor=ACTOR)
    landmark.status = status
    session.flush()
    return landmark


def _images(
    session: Session, first: int, count: int, class_id: int | None, *, group_id: int | None = None
) -> list[int]:
    """``count`` images numbered from ``first``, each labelled ``class_id`` (None: unlabelled)."""
    ids = []
    for n in range(first, first + count):
        image = image_row(session, n, group_id=group_id)
        if class_id is not None:
            append_label(
                session,
                image_id=image.id,
                class_id=class_id,
                box=(1.0, 2.0, 30.0, 40.0),
                origin="import:test",
            )
        ids.append(image.id)
    return ids


def _changes(session: Session, class_id: int) -> list[tuple[str, dict]]:
    return [(c.kind, c.details) for c in classes.class_history(session, class_id)]


def _count(session: Session, model: type) -> int:
    return int(session.scalar(select(func.count()).select_from(model)) or 0)


def _nothing_written(session: Session, before: dict[str, int]) -> None:
    after = {
        "classes": _count(session, LandmarkClass),
        "aliases": _count(session, ClassAlias),
        "changes": _count(session, ClassChange),
        "labels": _count(session, Label),
        "audit": _count(session, AuditEntry),
    }
    assert after == before


def _snapshot(session: Session) -> dict[str, int]:
    return {
        "classes": _count(session, LandmarkClass),
        "aliases": _count(session, ClassAlias),
        "changes": _count(session, ClassChange),
        "labels": _count(session, Label),
        "audit": _count(session, AuditEntry),
    }


# --- propose ---------------------------------------------------------------------


def test_propose_creates_a_proposed_class_with_names_location_and_history(db: Session) -> None:
    landmark = classes.propose_class(
        db,
        "Gyeongbokgung",
        aliases=[("ko", "경복궁"), (None, "景福宮"), ("EN", "Gyeongbok Palace")],
        latitude=37.5796,
        longitude=126.977,
        actor=ACTOR,
        reason="seen in reports",
    )
    assert (landmark.slug, landmark.display_name, landmark.status) == (
        "gyeongbokgung",
        "Gyeongbokgung",
        "proposed",
    )
    assert (landmark.latitude, landmark.longitude) == (37.5796, 126.977)
    assert [(a.language, a.name) for a in landmark.aliases] == [
        ("en", "Gyeongbokgung"),
        ("ko", "경복궁"),
        ("zh", "景福宮"),
        ("en", "Gyeongbok Palace"),
    ]
    for name in ("경복궁", "gyeongbok palace", "GYEONGBOKGUNG", "景福宮"):
        assert find_class(db, name) is landmark
    [(kind, details)] = _changes(db, landmark.id)
    assert kind == "proposed"
    assert details["display_name"] == "Gyeongbokgung" and details["latitude"] == 37.5796
    assert ["ko", "경복궁"] in details["aliases"]
    change = classes.class_history(db, landmark.id)[0]
    assert (change.actor, change.reason) == ("test", "seen in reports")
    audit = db.scalars(select(AuditEntry).where(AuditEntry.action == "class.propose")).one()
    assert audit.entity_id == landmark.id and audit.actor == "test"


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"name": "  "}, RejectedInput, "class name is empty"),
        ({"name": "!!!"}, RejectedInput, "no letters or digits"),
        ({"name": "x" * 201}, RejectedInput, "longer than 200"),
        ({"name": "Gyeongbokgung palace"}, Conflict, "already belongs to class Gyeongbokgung"),
        ({"name": "New", "aliases": [("ko", "경복궁")]}, Conflict, "'경복궁' already belongs"),
        ({"name": "gyeongbokgung-palace"}, Conflict, "already belongs"),
        ({"name": "New", "language": "english!"}, RejectedInput, "not a language code"),
        ({"name": "New", "latitude": 37.0}, RejectedInput, "both latitude and longitude"),
        ({"name": "New", "latitude": 91, "longitude": 0}, RejectedInput, "latitude must lie"),
        ({"name": "New", "latitude": 0, "longitude": -181}, RejectedInput, "longitude must"),
        (
            {"name": "New", "latitude": float("nan"), "longitude": 0},
            RejectedInput,
            "latitude must lie",
        ),
        ({"name": "New", "reason": "x" * 2001}, RejectedInput, "reason is longer"),
    ],
)
def test_propose_refusals_write_nothing(
    db: Session, kwargs: dict, error: type[Exception], message: str
) -> None:
    classes.propose_class(db, "Gyeongbokgung Palace", aliases=[("ko", "경복궁")], actor=ACTOR)
    before = _snapshot(db)
    kwargs = dict(kwargs)
    name = kwargs.pop("name")
    with pytest.raises(error, match=message):
        classes.propose_class(db, name, actor=ACTOR, **kwargs)
    _nothing_written(db, before)


def test_a_retired_class_name_can_be_given_to_a_new_class(db: Session) -> None:
    old = classes.propose_class(db, "Namsan Tower", actor=ACTOR)
    classes.retire(db, old.id, actor=ACTOR)
    new = classes.propose_class(db, "Namsan Tower", actor=ACTOR)
    assert new.id != old.id and new.slug == "namsan-tower-2"
    assert find_class(db, "namsan tower") is new


def test_aliases_are_added_and_refused_clearly(db: Session) -> None:
    palace = classes.propose_class(db, "Gyeongbokgung", actor=ACTOR)
    tower = classes.propose_class(db, "N Seoul Tower", actor=ACTOR)
    alias = classes.add_alias(db, palace.id, "경복궁", actor=ACTOR)
    assert (alias.language, alias.name) == ("ko", "경복궁")
    assert find_class(db, "경복궁") is palace
    assert _changes(db, palace.id)[-1] == ("alias_added", {"language": "ko", "name": "경복궁"})
    before = _snapshot(db)
    with pytest.raises(Conflict, match="already a name of class Gyeongbokgung"):
        classes.add_alias(db, palace.id, "경복궁", language="ko", actor=ACTOR)
    with pytest.raises(Conflict, match="already belongs to class N Seoul Tower"):
        classes.add_alias(db, palace.id, "n-seoul tower", actor=ACTOR)
    with pytest.raises(NotFound, match="class 999 does not exist"):
        classes.add_alias(db, 999, "Nowhere", actor=ACTOR)
    _nothing_written(db, before)
    classes.retire(db, tower.id, actor=ACTOR)
    with pytest.raises(Conflict, match="is retired"):
        classes.add_alias(db, tower.id, "남산타워", actor=ACTOR)


# --- rename ----------------------------------------------------------------------


def test_rename_keeps_the_old_name_searchable(db: Session) -> None:
    landmark = classes.propose_class(db, "Seoul Tower", aliases=[("ko", "남산타워")], actor=ACTOR)
    _class(db, "Deoksugung")
    renamed = classes.rename(db, landmark.id, "N Seoul Tower", actor=ACTOR, reason="official")
    assert renamed.display_name == "N Seoul Tower" and renamed.slug == "seoul-tower"
    assert find_class(db, "Seoul Tower") is landmark
    assert find_class(db, "n seoul tower") is landmark
    assert [c["id"] for c in search_classes(db, "seoul tower")] == [landmark.id]
    [found] = search_classes(db, "Seoul Tow")
    assert found["display_name"] == "N Seoul Tower"
    assert {"language": "en", "name": "Seoul Tower"} in found["aliases"]
    kind, details = _changes(db, landmark.id)[-1]
    assert kind == "renamed" and (details["from"], details["to"]) == (
        "Seoul Tower",
        "N Seoul Tower",
    )
    assert classes.class_history(db, landmark.id)[-1].reason == "official"


def test_rename_refusals(db: Session) -> None:
    landmark = classes.propose_class(db, "Seoul Tower", actor=ACTOR)
    classes.propose_class(db, "Deoksugung", actor=ACTOR)
    before = _snapshot(db)
    with pytest.raises(RejectedInput, match="already called 'Seoul Tower'"):
        classes.rename(db, landmark.id, "  Seoul   Tower ", actor=ACTOR)
    with pytest.raises(Conflict, match="'deoksugung' already belongs to class Deoksugung"):
        classes.rename(db, landmark.id, "deoksugung", actor=ACTOR)
    with pytest.raises(RejectedInput, match="class name is empty"):
        classes.rename(db, landmark.id, "", actor=ACTOR)
    with pytest.raises(NotFound):
        classes.rename(db, 12345, "Anything", actor=ACTOR)
    _nothing_written(db, before)
    # A change of case only is a rename (the folded key is the class's own).
    classes.rename(db, landmark.id, "SEOUL TOWER", actor=ACTOR)
    assert find_class(db, "Seoul Tower") is landmark


# --- merge -----------------------------------------------------------------------


def test_merge_moves_current_labels_keeps_history_and_retires_the_source(
    any_runtime: Runtime,
) -> None:
    with any_runtime.factory() as session, session.begin():
        source = classes.propose_class(
            session, "Gyeongbok Palace", aliases=[("ko", "경복궁")], actor=ACTOR
        )
        into = _class(session, "Gyeongbokgung")
        other = _class(session, "Deoksugung")
        moved = _images(session, 1, 3, source.id)
        kept = _images(session, 10, 1, into.id)
        # Image 20 was labelled the source once, then relabelled: not moved.
        [relabelled] = _images(session, 20, 1, source.id)
        append_label(
            session,
            image_id=relabelled,
            class_id=other.id,
            box=None,
            origin="review",
            supersedes=current_label(session, relabelled),
        )
        session.add(
            ImageSource(
                image_id=moved[0],
                kind="report",
                identity_key="r1",
                claimed_class_name="gyeongbok palace",
                claimed_class_id=source.id,
            )
        )
        ids = {"source": source.id, "into": into.id, "other": other.id}
        old_labels = {i: current_label(session, i).id for i in moved}  # type: ignore[union-attr]
    with any_runtime.factory() as session, session.begin():
        result = classes.merge(
            session, ids["source"], ids["into"], actor=ACTOR, reason="same palace"
        )
        assert (result.labels_moved, result.claims_moved) == (3, 1)
        assert result.aliases_added == [("en", "Gyeongbok Palace"), ("ko", "경복궁")]
    with any_runtime.factory() as session:
        for image_id in moved:
            label = current_label(session, image_id)
            assert label is not None and label.class_id == ids["into"]
            assert label.origin == "class.merge:gyeongbok-palace"
            assert label.supersedes_id == old_labels[image_id]
            assert label.box == (1.0, 2.0, 30.0, 40.0)
            old = session.get_one(Label, old_labels[image_id])
            assert old.class_id == ids["source"]  # history kept
        assert current_label(session, kept[0]).class_id == ids["into"]  # type: ignore[union-attr]
        assert current_label(session, relabelled).class_id == ids["other"]  # type: ignore[union-attr]
        assert session.get_one(LandmarkClass, ids["source"]).status == "retired"
        assert find_class(session, "경복궁").id == ids["into"]  # type: ignore[union-attr]
        assert find_class(session, "Gyeongbok Palace").id == ids["into"]  # type: ignore[union-attr]
        assert [c["id"] for c in search_classes(session, "gyeongbok")] == [ids["into"]]
        claim = session.scalars(select(ImageSource)).one()
        assert claim.claimed_class_id == ids["into"]
        assert claim.claimed_class_name == "gyeongbok palace"
        kind, details = _changes(session, ids["source"])[-1]
        assert kind == "merged" and details["into"] == ids["into"]
        assert details["labels_moved"] == 3
        kind, details = _changes(session, ids["into"])[-1]
        assert kind == "merged" and details["from"] == ids["source"]
        assert details["from_slug"] == "gyeongbok-palace"
        counts = {c.slug: c.images for c in classes.list_classes(session)}
        assert counts == {"gyeongbok-palace": 0, "gyeongbokgung": 4, "deoksugung": 1}


def test_merge_refusals_change_nothing(any_runtime: Runtime) -> None:
    with any_runtime.factory() as session, session.begin():
        a = _class(session, "Alpha")
        b = _class(session, "Beta")
        gone = _class(session, "Gamma", status="retired")
        _images(session, 1, 2, a.id)
        ids = (a.id, b.id, gone.id)
    a_id, b_id, gone_id = ids
    with any_runtime.factory() as session:
        before = _snapshot(session)
        with pytest.raises(RejectedInput, match="cannot be merged into itself"):
            classes.merge(session, a_id, a_id, actor=ACTOR)
        with pytest.raises(NotFound, match="class 999 does not exist"):
            classes.merge(session, a_id, 999, actor=ACTOR)
        with pytest.raises(Conflict, match=r"class Gamma \(gamma\) is retired"):
            classes.merge(session, a_id, gone_id, actor=ACTOR)
        with pytest.raises(Conflict, match="is retired"):
            classes.merge(session, gone_id, b_id, actor=ACTOR)
        _nothing_written(session, before)
        assert session.get_one(LandmarkClass, a_id).status == "active"


# --- split -----------------------------------------------------------------------


def _queue(session: Session, image_ids: Sequence[int], priority: float = 0.5) -> None:
    ids = np.asarray(image_ids, dtype=np.int64)
    bulk_write.write_ranking(
        session,
        bulk_write.RankingRows(
            ranking=0,
            image_ids=ids,
            priority=np.full(len(ids), priority),
            strategy=np.full(len(ids), "cold_start"),
        ),
    )
    bulk_write.open_items(session, ids, datetime.now(UTC))


def _line(session: Session) -> list[tuple[int, str]]:
    """(image id, strategy) of the pending items in claim order."""
    return [
        (image_id, strategy)
        for image_id, strategy in session.execute(
            select(QueueOrder.image_id, QueueOrder.strategy)
            .join(QueueItem, QueueItem.image_id == QueueOrder.image_id)
            .where(QueueOrder.ranking == current_ranking(session), QueueItem.status == "pending")
            .order_by(QueueOrder.priority.desc(), QueueOrder.image_id)
        ).tuples()
    ]


def test_split_reopens_images_grouped_by_embedding_clusters(
    any_runtime: Runtime, tmp_path: Path
) -> None:
    root = tmp_path / "embeddings"
    with any_runtime.factory() as session, session.begin():
        tower = _class(session, "Seoul Tower")
        images = _images(session, 1, 7, tower.id)
        waiting = _images(session, 50, 2, None)
        _queue(session, waiting)
        # Images 1..6 were reviewed earlier (done), image 7 is held by ann now.
        _queue(session, images)
        session.query(QueueItem).filter(QueueItem.image_id.in_(images[:6])).update(
            {"status": "done"}
        )
        ann = create_user(
            session, username="ann", password="correct horse 1", role="reviewer", actor="t"
        )
        session.query(QueueItem).filter(QueueItem.image_id == images[6]).update(
            {"status": "claimed", "claimed_by": ann.id, "stage": 2}
        )
        session.execute(QueueOrder.__table__.delete().where(QueueOrder.image_id.in_(images[:6])))
        # Odd images look like one thing, even images like another; 4 odd, 3 even.
        space = embedding_store.get_or_create_space(
            session, key="test-space", backbone="test", weights_id="none", dim=4
        )
        rng = np.random.default_rng(0)
        vectors = np.asarray(
            [[1, 0, 0, 0] if i % 2 else [0, 1, 0, 0] for i in images], dtype=np.float32
        ) + rng.normal(0, 0.05, size=(7, 4)).astype(np.float32)
        embedding_store.record(session, root, space, [(i, "full") for i in images], vectors)
        tower_id = tower.id
    with any_runtime.factory() as session, session.begin():
        result = classes.split(
            session,
            tower_id,
            ["N Seoul Tower", "Namsan Observatory"],
            actor=ACTOR,
            reason="two landmarks",
            embeddings_dir=root,
        )
        assert result.images_reopened == 7
        assert result.cluster_sizes == [4, 3] and result.grouped_by == "embeddings"
        new_ids = [c.id for c in result.new_classes]
    with any_runtime.factory() as session:
        line = _line(session)
        split_part = [image_id for image_id, strategy in line if strategy == CLASS_SPLIT_STRATEGY]
        assert [image_id for image_id, _ in line[:7]] == split_part  # ahead of the rest
        # Odd images first (the larger cluster), each nearest its centre first.
        assert sorted(split_part[:4]) == [1, 3, 5, 7] and sorted(split_part[4:]) == [2, 4, 6]
        assert [image_id for image_id, _ in line[7:]] == waiting
        for image_id in images:
            item = session.scalars(select(QueueItem).where(QueueItem.image_id == image_id)).one()
            assert (item.status, item.stage, item.claimed_by) == ("pending", 1, None)
            label = current_label(session, image_id)
            assert label is not None and label.class_id == tower_id  # labels untouched
        assert session.get_one(LandmarkClass, tower_id).status == "retired"
        for new_id, name in zip(new_ids, ["N Seoul Tower", "Namsan Observatory"], strict=True):
            landmark = session.get_one(LandmarkClass, new_id)
            assert (landmark.display_name, landmark.status) == (name, "proposed")
            kind, details = _changes(session, new_id)[0]
            assert kind == "proposed" and details["split_from"]["id"] == tower_id
        kind, details = _changes(session, tower_id)[-1]
        assert kind == "split"
        assert [part["name"] for part in details["into"]] == ["N Seoul Tower", "Namsan Observatory"]
        assert details["images_reopened"] == 7 and details["clusters"] == 2
        assert details["largest_clusters"] == [4, 3] and details["grouped_by"] == "embeddings"
        assert classes.class_history(session, tower_id)[-1].reason == "two landmarks"
        item = session.scalars(select(QueueItem).where(QueueItem.image_id == 1)).one()
        assert item_view(session, item)["reasons"][0] == CLASS_SPLIT_REASON
    # Reviewers now claim them in that order.
    with any_runtime.factory() as session, session.begin():
        reviewer = session.scalars(select(User)).one()
        now = datetime.now(UTC)
        claimed = [
            claim_next(session, reviewer, lease=timedelta(minutes=5), now=now) for _ in range(3)
        ]
        assert [c.image_id for c in claimed if c is not None] == split_part[:3]


def test_split_without_embeddings_groups_near_duplicates(any_runtime: Runtime) -> None:
    with any_runtime.factory() as session, session.begin():
        tower = _class(session, "Seoul Tower")
        small, big = NearDuplicateGroup(), NearDuplicateGroup()
        session.add_all([small, big])
        session.flush()
        # Images 1, 3 in one group, 2, 4, 5 in another: the bigger group comes first.
        for n, group in ((1, small), (2, big), (3, small), (4, big), (5, big)):
            _images(session, n, 1, tower.id, group_id=group.id)
        tower_id = tower.id
    with any_runtime.factory() as session, session.begin():
        result = classes.split(session, tower_id, ["A Tower", "B Tower"], actor=ACTOR)
        assert result.grouped_by == "near_duplicates" and result.cluster_sizes == [3, 2]
    with any_runtime.factory() as session:
        assert [i for i, _ in _line(session)] == [2, 4, 5, 1, 3]


def test_a_class_without_images_splits_too(db: Session) -> None:
    tower = _class(db, "Seoul Tower")
    result = classes.split(db, tower.id, ["Seoul Tower", "Namsan"], actor=ACTOR)
    assert result.images_reopened == 0 and result.grouped_by == "none"
    # The split class's own name passes to a new class.
    assert find_class(db, "seoul tower") is result.new_classes[0]


def test_split_refusals_write_nothing(db: Session) -> None:
    tower = _class(db, "Seoul Tower")
    _class(db, "Deoksugung")
    gone = _class(db, "Old", status="retired")
    _images(db, 1, 2, tower.id)
    before = _snapshot(db)
    with pytest.raises(RejectedInput, match="at least 2 new class names"):
        classes.split(db, tower.id, ["Only One"], actor=ACTOR)
    with pytest.raises(RejectedInput, match="'b tower' is given twice"):
        classes.split(db, tower.id, ["B Tower", "b tower"], actor=ACTOR)
    with pytest.raises(Conflict, match="'deoksugung' already belongs to class Deoksugung"):
        classes.split(db, tower.id, ["New", "deoksugung"], actor=ACTOR)
    with pytest.raises(RejectedInput, match="class name is empty"):
        classes.split(db, tower.id, ["New", " "], actor=ACTOR)
    with pytest.raises(Conflict, match="is retired"):
        classes.split(db, gone.id, ["X", "Y"], actor=ACTOR)
    with pytest.raises(NotFound):
        classes.split(db, 999, ["X", "Y"], actor=ACTOR)
    _nothing_written(db, before)
    assert _count(db, QueueItem) == 0


def test_split_order_follows_near_duplicates_and_is_deterministic() -> None:
    groups = np.asarray([7, 7, 8, 9, 9, 10])
    vectors = np.asarray([[1, 0], [0.9, 0.1], [0, 1]], dtype=np.float32)  # rows 0, 2, 3
    has_vector = np.asarray([True, False, True, True, False, False])
    order, cluster, grouped_by = classes.split_order(groups, vectors, has_vector, k=2, seed=3)
    assert grouped_by == "embeddings"
    # Rows 0, 2 cluster together, row 1 follows its near-duplicate row 0, row 4
    # follows row 3, row 5 has nothing to follow and forms its own group.
    groups_in_order = [sorted(order[cluster == c].tolist()) for c in np.unique(cluster)]
    assert groups_in_order == [[0, 1, 2], [3, 4], [5]]
    assert cluster.tolist() == sorted(cluster.tolist())
    again = classes.split_order(groups, vectors, has_vector, k=2, seed=3)
    assert np.array_equal(again[0], order)
    empty = classes.split_order(np.zeros(0, dtype=np.int64), None, None, k=2)
    assert empty[0].size == 0 and empty[2] == "none"


# --- retire, activate -----------------------------------------------------------------


def test_retire_hides_a_class_from_the_review_search(db: Session) -> None:
    tower = _class(db, "Seoul Tower")
    _images(db, 1, 2, tower.id)
    assert [c["id"] for c in search_classes(db, "seoul")] == [tower.id]
    classes.retire(db, tower.id, actor=ACTOR, reason="not a landmark")
    assert search_classes(db, "seoul") == []
    assert search_classes(db, "") == []
    kind, details = _changes(db, tower.id)[-1]
    assert kind == "retired" and details == {"from_status": "active", "labelled_images": 2}
    with pytest.raises(Conflict, match="already retired"):
        classes.retire(db, tower.id, actor=ACTOR)
    with pytest.raises(NotFound):
        classes.retire(db, 999, actor=ACTOR)


def test_a_reviewer_cannot_label_with_a_retired_class(any_runtime: Runtime) -> None:
    with any_runtime.factory() as session, session.begin():
        tower = _class(session, "Seoul Tower")
        [image_id] = _images(session, 1, 1, None)
        _queue(session, [image_id])
        create_user(session, username="ann", password="correct horse 1", role="reviewer", actor="t")
        classes.retire(session, tower.id, actor=ACTOR)
        tower_id = tower.id
    with any_runtime.factory() as session, session.begin():
        ann = session.scalars(select(User)).one()
        item = claim_next(session, ann, lease=timedelta(minutes=5), now=datetime.now(UTC))
        assert item is not None
        request = DecisionRequest.parse({"action": "label", "class_id": tower_id})
        with pytest.raises(RejectedInput, match="Seoul Tower is retired"):
            decide(session, ann, item.id, request, consensus="off", now=datetime.now(UTC))


def test_a_reviewers_proposal_is_recorded_in_the_class_history(any_runtime: Runtime) -> None:
    with any_runtime.factory() as session, session.begin():
        retired = _class(session, "Old Gate", status="retired")
        images = _images(session, 1, 2, None)
        _queue(session, images)
        create_user(session, username="ann", password="correct horse 1", role="reviewer", actor="t")
        retired_id = retired.id
    for expected_new in (True, False):
        with any_runtime.factory() as session, session.begin():
            ann = session.scalars(select(User)).one()
            item = claim_next(session, ann, lease=timedelta(minutes=5), now=datetime.now(UTC))
            assert item is not None
            request = DecisionRequest.parse({"action": "propose", "proposed_name": "old gate"})
            decision = decide(
                session, ann, item.id, request, consensus="off", now=datetime.now(UTC)
            )
            assert decision.class_id != retired_id  # a retired name makes a new class
            assert (decision.restore["created_class"] is not None) is expected_new
    with any_runtime.factory() as session:
        [proposed] = classes.list_classes(session, "proposed")
        assert proposed.display_name == "old gate" and proposed.images == 2
        [change] = classes.class_history(session, proposed.id)
        assert change.kind == "proposed" and change.actor == "user:ann"
        assert change.actor_id is not None and change.reason.startswith("proposed while reviewing")


def test_activate_ready_applies_both_thresholds(db: Session) -> None:
    ready = _class(db, "Ready", status="proposed")
    few_train = _class(db, "Few Train", status="proposed")
    few_test = _class(db, "Few Test", status="proposed")
    uncounted = _class(db, "Uncounted", status="proposed")
    active = _class(db, "Active")
    counts = {
        ready.id: (20, 5),
        few_train.id: (19, 50),
        few_test.id: (200, 4),
        active.id: (100, 100),
    }
    activated = classes.activate_ready(db, counts, min_train=20, min_test=5, actor="snapshot v3")
    assert activated == [ready]
    assert [c.status for c in (ready, few_train, few_test, uncounted, active)] == [
        "active",
        "proposed",
        "proposed",
        "proposed",
        "active",
    ]
    kind, details = _changes(db, ready.id)[-1]
    assert kind == "activated" and details == {
        "train": 20,
        "test": 5,
        "min_train": 20,
        "min_test": 5,
    }
    assert classes.class_history(db, ready.id)[-1].actor == "snapshot v3"
    assert len(classes.class_history(db, active.id)) == 1  # only its proposal
    # Lower thresholds activate the rest (a class left out counts as no images).
    later = classes.activate_ready(db, counts, min_train=0, min_test=0, actor=ACTOR)
    assert later == [few_train, few_test, uncounted]
    assert classes.activate_ready(db, counts, min_train=0, min_test=0, actor=ACTOR) == []


@pytest.mark.parametrize(
    ("counts", "min_train", "min_test", "message"),
    [
        ({}, -1, 5, "min_train must be a whole number"),
        ({}, 20, 2.5, "min_test must be a whole number"),
        ({1: (3, -1)}, 20, 5, "counts of class 1"),
        ({1: (3,)}, 20, 5, "counts of class 1"),
    ],
)
def test_activate_ready_refuses_bad_numbers(
    db: Session, counts: dict, min_train: object, min_test: object, message: str
) -> None:
    _class(db, "Ready", status="proposed")
    with pytest.raises(RejectedInput, match=message):
        classes.activate_ready(
            db,
            counts,
            min_train=min_train,  # type: ignore[arg-type]
            min_test=min_test,  # type: ignore[arg-type]
            actor=ACTOR,
        )
    assert _count(db, ClassChange) == 1


# --- listing and history --------------------------------------------------------------


def test_list_classes_counts_current_labels_and_filters_by_status(db: Session) -> None:
    palace = classes.propose_class(db, "Gyeongbokgung", aliases=[("ko", "경복궁")], actor=ACTOR)
    tower = _class(db, "seoul tower")
    _images(db, 1, 3, palace.id)
    [moved] = _images(db, 10, 1, palace.id)
    append_label(
        db,
        image_id=moved,
        class_id=tower.id,
        box=None,
        origin="review",
        supersedes=current_label(db, moved),
    )
    listed = classes.list_classes(db)
    assert [(c.display_name, c.status, c.images) for c in listed] == [
        ("Gyeongbokgung", "proposed", 3),
        ("seoul tower", "active", 1),
    ]
    assert listed[0].aliases == [("en", "Gyeongbokgung"), ("ko", "경복궁")]
    assert listed[0].as_dict()["aliases"][1] == {"language": "ko", "name": "경복궁"}
    assert [c.slug for c in classes.list_classes(db, "active")] == ["seoul-tower"]
    assert classes.list_classes(db, "retired") == []
    with pytest.raises(RejectedInput, match="status must be one of proposed, active, retired"):
        classes.list_classes(db, "gone")


def test_history_is_in_order_and_described(db: Session) -> None:
    palace = classes.propose_class(db, "Gyeongbok Palace", actor=ACTOR)
    classes.add_alias(db, palace.id, "경복궁", actor=ACTOR)
    classes.rename(db, palace.id, "Gyeongbokgung", actor=ACTOR)
    classes.activate_ready(db, {palace.id: (30, 9)}, min_train=20, min_test=5, actor=ACTOR)
    other = classes.propose_class(db, "Gyeongbokgung Annex", actor=ACTOR)
    classes.merge(db, other.id, palace.id, actor=ACTOR)
    history = classes.class_history(db, palace.id)
    assert [c.kind for c in history] == [
        "proposed",
        "alias_added",
        "renamed",
        "activated",
        "merged",
    ]
    assert [classes.describe_change(c) for c in history] == [
        "proposed as 'Gyeongbok Palace'",
        "alias '경복궁' (ko) added",
        "renamed from 'Gyeongbok Palace' to 'Gyeongbokgung'",
        "activated with 30 training and 9 test images",
        "absorbed gyeongbokgung-annex: 0 labels moved",
    ]
    assert classes.change_as_dict(history[2])["details"]["to"] == "Gyeongbokgung"
    assert classes.class_histories(db)[other.id][-1].kind == "merged"
    with pytest.raises(NotFound):
        classes.class_history(db, 999)
    assert classes.resolve_class(db, "gyeongbok palace") is palace
    with pytest.raises(NotFound, match="no class is called 'Nowhere'"):
        classes.resolve_class(db, " Nowhere ")


# --- settings -----------------------------------------------------------------------


def test_activation_thresholds_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CURATION_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("CURATION_CLASS_MIN_TRAIN_IMAGES", raising=False)
    monkeypatch.delenv("CURATION_CLASS_MIN_TEST_IMAGES", raising=False)
    defaults = load_settings()
    assert (defaults.class_min_train_images, defaults.class_min_test_images) == (20, 5)
    monkeypatch.setenv("CURATION_CLASS_MIN_TRAIN_IMAGES", "50")
    monkeypatch.setenv("CURATION_CLASS_MIN_TEST_IMAGES", "0")
    chosen = load_settings()
    assert (chosen.class_min_train_images, chosen.class_min_test_images) == (50, 0)
    monkeypatch.setenv("CURATION_CLASS_MIN_TRAIN_IMAGES", "0")
    with pytest.raises(ConfigurationError, match="CLASS_MIN_TRAIN_IMAGES must be at least 1"):
        load_settings()
    monkeypatch.setenv("CURATION_CLASS_MIN_TRAIN_IMAGES", "20")
    monkeypatch.setenv("CURATION_CLASS_MIN_TEST_IMAGES", "five")
    with pytest.raises(ConfigurationError, match="CLASS_MIN_TEST_IMAGES must be a whole number"):
        load_settings()
