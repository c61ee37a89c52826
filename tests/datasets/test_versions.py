"""Dataset versions: snapshots store changes only, never change, and read back whole."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from curation.exceptions import NotFound, RejectedInput
from curation.labels import append_label, current_label
from curation.models import DatasetEntry, LandmarkClass, NearDuplicateGroup, Split
from curation.runtime import Runtime
from datasets import versions
from datasets.splits import SplitRatios
from datasets.versions import find_version, load_manifest, snapshot
from tests.factories import image_row


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def any_runtime(request):
    return request.getfixturevalue("runtime" if request.param == "sqlite" else "pg_runtime")


def _classes(session, *slugs: str) -> dict[str, int]:
    ids = {}
    for slug in slugs:
        landmark = LandmarkClass(slug=slug, display_name=slug.title(), status="active")
        session.add(landmark)
        session.flush()
        ids[slug] = landmark.id
    return ids


def _images(session, start: int, count: int, class_id: int, *, group_size: int = 1) -> list[int]:
    """``count`` labelled images numbered from ``start``, in groups of ``group_size``."""
    ids = []
    group = None
    for k in range(count):
        if k % group_size == 0:
            group = NearDuplicateGroup()
            session.add(group)
            session.flush()
        image = image_row(session, start + k, group_id=group.id)
        append_label(session, image_id=image.id, class_id=class_id, box=None, origin="test")
        ids.append(image.id)
    return ids


def _snap(runtime: Runtime, message: str = "snapshot", **options):
    with runtime.factory() as session, session.begin():
        result = snapshot(session, author="tester", message=message, **options)
        session.expunge_all()
        return result


def _manifest(runtime: Runtime, ref="latest"):
    with runtime.factory() as session:
        return load_manifest(session, ref)


def test_a_snapshot_holds_every_labelled_image_with_leak_free_splits(any_runtime) -> None:
    with any_runtime.factory() as session, session.begin():
        ids = _classes(session, "gyeongbokgung", "namsan")
        _images(session, 1, 60, ids["gyeongbokgung"], group_size=3)
        _images(session, 100, 40, ids["namsan"], group_size=2)
    result = _snap(any_runtime, "first")
    assert result.version.number == 1 and result.added == 100
    assert result.version.is_full and result.version.item_count == 100
    manifest = _manifest(any_runtime)
    assert len(manifest) == 100 and sum(manifest.split_counts().values()) == 100
    with any_runtime.factory() as session:
        groups = dict(session.execute(text("SELECT id, group_id FROM images")).all())
    by_group: dict[int, set[int]] = {}
    for image_id, split in zip(manifest.image_ids, manifest.splits, strict=True):
        by_group.setdefault(groups[int(image_id)], set()).add(int(split))
    assert all(len(s) == 1 for s in by_group.values())
    assert set(manifest.splits.tolist()) == {0, 1, 2}
    assert {c.slug for c in manifest.classes} == {"gyeongbokgung", "namsan"}


def test_a_second_version_stores_only_what_changed_and_old_images_keep_their_split(
    any_runtime,
) -> None:
    with any_runtime.factory() as session, session.begin():
        ids = _classes(session, "a", "b")
        _images(session, 1, 50, ids["a"])
    _snap(any_runtime)
    first = _manifest(any_runtime)
    with any_runtime.factory() as session, session.begin():
        _images(session, 1000, 10, ids["b"])
        moved = current_label(session, 5)
        append_label(
            session, image_id=5, class_id=ids["a"], box=(1, 2, 30, 40), origin="t", supersedes=moved
        )
    result = _snap(any_runtime, "ten more")
    assert (result.added, result.removed) == (10, 0)
    assert not result.version.is_full
    with any_runtime.factory() as session:
        stored = session.scalar(
            select(func.count())
            .select_from(DatasetEntry)
            .where(DatasetEntry.version_id == result.version.id)
        )
    second = _manifest(any_runtime)
    assert len(second) == 60
    # Stored: the ten new images, plus image 5 unless a held-back test change.
    assert stored == 10 + result.changed
    old = np.isin(second.image_ids, first.image_ids)
    np.testing.assert_array_equal(second.splits[old], first.splits)
    np.testing.assert_array_equal(_manifest(any_runtime, "v1").image_ids, first.image_ids)


def test_a_removed_label_leaves_the_next_version_and_the_old_one_keeps_it(any_runtime) -> None:
    with any_runtime.factory() as session, session.begin():
        ids = _classes(session, "a")
        _images(session, 1, 20, ids["a"])
    _snap(any_runtime)
    manifest = _manifest(any_runtime)
    train_image = int(manifest.image_ids[manifest.splits == Split.TRAIN][0])
    with any_runtime.factory() as session, session.begin():
        head = current_label(session, train_image)
        append_label(
            session, image_id=train_image, class_id=None, box=None, origin="t", supersedes=head
        )
    result = _snap(any_runtime, "junk out")
    assert result.removed == 1
    assert train_image not in _manifest(any_runtime).image_ids
    assert train_image in _manifest(any_runtime, "v1").image_ids


def test_a_test_split_label_changes_only_through_a_double_review(any_runtime) -> None:
    with any_runtime.factory() as session, session.begin():
        ids = _classes(session, "a", "b")
        _images(session, 1, 40, ids["a"])
    _snap(any_runtime)
    manifest = _manifest(any_runtime)
    tested = [int(i) for i in manifest.image_ids[manifest.splits == Split.TEST][:2]]
    assert len(tested) == 2
    with any_runtime.factory() as session, session.begin():
        for image_id, origin in zip(tested, ("review", "class.merge:a"), strict=True):
            head = current_label(session, image_id)
            append_label(
                session,
                image_id=image_id,
                class_id=ids["b"],
                box=None,
                origin=origin,
                supersedes=head,
            )
    result = _snap(any_runtime, "relabel")
    assert result.held_back == [tested[0]]
    after = _manifest(any_runtime)
    classes = dict(zip(after.image_ids.tolist(), after.class_ids.tolist(), strict=True))
    assert classes[tested[0]] == ids["a"]  # a single reviewer's change waits
    assert classes[tested[1]] == ids["b"]  # a lifecycle step (merge) goes through


def test_committed_versions_cannot_be_changed_even_by_sql(any_runtime) -> None:
    with any_runtime.factory() as session, session.begin():
        ids = _classes(session, "a")
        _images(session, 1, 5, ids["a"])
    _snap(any_runtime)
    for statement in (
        "UPDATE dataset_entries SET split = 0",
        "DELETE FROM dataset_entries",
        "UPDATE dataset_versions SET message = 'rewritten'",
        "DELETE FROM dataset_classes",
    ):
        with any_runtime.factory() as session, pytest.raises((DBAPIError, IntegrityError)) as err:
            session.execute(text(statement))
        assert "immutable" in str(err.value)


def test_identical_data_hashes_identically_and_any_change_changes_the_hash(any_runtime) -> None:
    with any_runtime.factory() as session, session.begin():
        ids = _classes(session, "a")
        _images(session, 1, 10, ids["a"])
    first = _snap(any_runtime).version
    again = _snap(any_runtime, "nothing new").version
    assert again.manifest_hash == first.manifest_hash
    with any_runtime.factory() as session, session.begin():
        landmark = session.get_one(LandmarkClass, ids["a"])
        landmark.display_name = "Renamed"
    assert _snap(any_runtime, "renamed").version.manifest_hash != first.manifest_hash


def test_the_manifest_hash_is_the_same_in_sqlite_and_postgres(runtime, pg_runtime) -> None:
    pytest.importorskip("psycopg")
    hashes = []
    for rt in (runtime, pg_runtime):
        with rt.factory() as session, session.begin():
            ids = _classes(session, "a", "b")
            _images(session, 1, 30, ids["a"], group_size=2)
            _images(session, 100, 30, ids["b"])
        hashes.append(_snap(rt).version.manifest_hash)
    assert hashes[0] == hashes[1]


test_the_manifest_hash_is_the_same_in_sqlite_and_postgres = pytest.mark.postgres(
    test_the_manifest_hash_is_the_same_in_sqlite_and_postgres
)


def test_a_checkpoint_every_few_versions_reads_back_the_same(any_runtime, monkeypatch) -> None:
    monkeypatch.setattr(versions, "CHECKPOINT_DEPTH", 3)
    with any_runtime.factory() as session, session.begin():
        ids = _classes(session, "a")
    for k in range(5):
        with any_runtime.factory() as session, session.begin():
            _images(session, 1 + 10 * k, 10, ids["a"])
        result = _snap(any_runtime, f"batch {k}")
    assert result.version.number == 5
    with any_runtime.factory() as session:
        full = [v.number for v in versions.list_versions(session) if v.is_full]
    assert full == [1, 4]
    assert len(_manifest(any_runtime)) == 50
    assert len(_manifest(any_runtime, "v3")) == 30


def test_bad_requests_are_refused_with_the_reason(any_runtime) -> None:
    with any_runtime.factory() as session, session.begin():
        ids = _classes(session, "a")
        _images(session, 1, 5, ids["a"])
    with any_runtime.factory() as session, pytest.raises(NotFound, match="no dataset version"):
        find_version(session, "latest")
    with pytest.raises(RejectedInput, match="message"):
        _snap(any_runtime, "   ")
    _snap(any_runtime, ratios=SplitRatios(0.8, 0.1, 0.1))
    with pytest.raises(RejectedInput, match="fixed by the first version"):
        _snap(any_runtime, ratios=SplitRatios(0.7, 0.15, 0.15))
    with any_runtime.factory() as session:
        with pytest.raises(NotFound, match="v9"):
            find_version(session, "v9")
        with pytest.raises(RejectedInput, match="not a version"):
            find_version(session, "v1; drop table")
