from __future__ import annotations

import multiprocessing
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from curation.learning import embedding_store as es
from curation.models import ImageEmbedding
from tests.factories import image_row


def _images(session: Session, n: int) -> list[int]:
    first = image_row(session, 0)
    return [first.id] + [image_row(session, i, group_id=first.group_id).id for i in range(1, n)]


def test_record_then_load_returns_vectors_by_image(db_session: Session, tmp_path: Path) -> None:
    ids = _images(db_session, 3)
    space = es.get_or_create_space(db_session, key="m:none", backbone="m", weights_id="none", dim=4)
    vectors = np.arange(12, dtype=np.float32).reshape(3, 4)
    es.record(db_session, tmp_path, space, [(i, es.FULL) for i in ids], vectors)
    loaded_ids, loaded = es.load(db_session, tmp_path, space)
    assert loaded_ids.tolist() == ids
    assert loaded.dtype == np.float16
    np.testing.assert_array_equal(loaded, vectors.astype(np.float16))
    assert es.space_file(tmp_path, space).path.stat().st_size == 3 * 4 * 2


def test_recording_twice_keeps_the_first_mapping(db_session: Session, tmp_path: Path) -> None:
    ids = _images(db_session, 2)
    space = es.get_or_create_space(db_session, key="m:none", backbone="m", weights_id="none", dim=2)
    keys = [(i, es.FULL) for i in ids]
    es.record(db_session, tmp_path, space, keys, np.ones((2, 2)))
    es.record(db_session, tmp_path, space, keys, np.full((2, 2), 7.0))  # a redelivered task
    count = db_session.scalar(select(func.count()).select_from(ImageEmbedding))
    assert count == 2
    _, loaded = es.load(db_session, tmp_path, space)
    np.testing.assert_array_equal(loaded, np.ones((2, 2), dtype=np.float16))
    assert es.missing(db_session, space, [*keys, (ids[0], "box:0,0,5,5")]) == [
        (ids[0], "box:0,0,5,5")
    ]


def test_partial_row_from_a_crash_is_padded(tmp_path: Path) -> None:
    store = es.EmbeddingFile(tmp_path / "1.f16", dim=4)
    assert store.append(np.ones((1, 4))) == 0
    with store.path.open("ab") as handle:
        handle.write(b"\x01\x02\x03")  # a torn write
    assert store.append(np.full((2, 4), 2.0)) == 2
    matrix = store.matrix()
    assert matrix.shape == (4, 4)
    np.testing.assert_array_equal(matrix[2:], np.full((2, 4), 2.0, dtype=np.float16))


def _append_many(path: str, value: float) -> list[int]:
    store = es.EmbeddingFile(Path(path), dim=8)
    return [store.append(np.full((3, 8), value)) for _ in range(50)]


def test_concurrent_appends_from_processes_never_interleave(tmp_path: Path) -> None:
    path = tmp_path / "1.f16"
    with multiprocessing.get_context("fork").Pool(2) as pool:
        starts = pool.starmap(_append_many, [(str(path), 1.0), (str(path), 2.0)])
    matrix = es.EmbeddingFile(path, dim=8).matrix()
    assert matrix.shape == (300, 8)
    for value, firsts in zip((1.0, 2.0), starts, strict=True):
        for first in firsts:
            np.testing.assert_array_equal(
                matrix[first : first + 3], np.full((3, 8), value, np.float16)
            )


def test_crop_key_rounds_boxes() -> None:
    assert es.crop_key(None) == "full"
    assert es.crop_key((1.4, 2.6, 10.0, 20.49)) == "box:1,3,10,20"


def test_sample_reads_full_images_only_and_counts_them(db_session: Session, tmp_path: Path) -> None:
    ids = _images(db_session, 6)
    space = es.get_or_create_space(db_session, key="m:none", backbone="m", weights_id="none", dim=4)
    full = np.ones((6, 4), dtype=np.float32)
    crops = np.full((3, 4), 7.0, dtype=np.float32)
    # Interleaved: full rows and box crops share the file.
    es.record(db_session, tmp_path, space, [(i, es.FULL) for i in ids[:3]], full[:3])
    es.record(db_session, tmp_path, space, [(i, "box:1,1,9,9") for i in ids[:3]], crops)
    es.record(db_session, tmp_path, space, [(i, es.FULL) for i in ids[3:]], full[3:])
    vectors, count = es.sample(db_session, tmp_path, space)
    assert count == 6
    assert vectors.shape == (6, 4)
    assert (vectors == 1.0).all()  # no crop row
    empty = es.get_or_create_space(db_session, key="e:none", backbone="e", weights_id="none", dim=4)
    vectors, count = es.sample(db_session, tmp_path, empty)
    assert count == 0 and vectors.shape == (0, 4)


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_missing_images_lookup_and_requeue_across_spaces(
    database: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """What a champion in a new space (a fine-tuned backbone's) still lacks, how the gate
    reads a split's crops there, and the outbox taking the lacking images back."""
    from curation.learning import outbox
    from curation.models import JobStatus, ScoringJob

    runtime = request.getfixturevalue("runtime" if database == "sqlite" else "pg_runtime")
    with runtime.factory() as session, session.begin():
        ids = _images(session, 4)
        base = es.get_or_create_space(session, key="m:none", backbone="m", weights_id="none", dim=2)
        tuned = es.get_or_create_space(
            session, key="m:tuned:ab", backbone="m", weights_id="tuned:ab", dim=2
        )
        whole = [(i, es.FULL) for i in ids]
        es.record(session, tmp_path, base, whole, np.ones((4, 2)))
        # The tuned space has images 0 and 1 whole, and a crop of image 2 only.
        crop = es.crop_key((1.0, 2.0, 3.0, 4.0))
        es.record(session, tmp_path, tuned, [*whole[:2], (ids[2], crop)],
                  np.asarray([[1, 0], [2, 0], [3, 0]], np.float32))  # fmt: skip
        # Images 0-2 went through the workers; image 3 died of a champion whose classifier
        # could not be loaded (the base space holds it), another image could not be decoded.
        done, dead = JobStatus.DONE.value, JobStatus.DEAD.value
        session.add_all(ScoringJob(image_id=i, status=done, attempts=1) for i in ids[:3])
        session.add(ScoringJob(image_id=ids[3], status=dead, attempts=3))
        broken = image_row(session, 98).id
        session.add(ScoringJob(image_id=broken, status=dead, attempts=3))
        session.flush()
        assert es.images_missing_from(session, tuned) == [ids[2], ids[3]]
        assert es.images_missing_from(session, base) == []
        assert es.image_ids_in(session, "m:tuned:ab") == ids[:2]
        assert es.newest_shared_space(session).key == "m:none"
        vectors, found = es.lookup(
            session, tmp_path, tuned, [ids[1], ids[2], ids[0], ids[3]], [crop, crop, "full", crop]
        )
        # Image 1 falls back to its whole image; image 3 is in neither form.
        assert found.tolist() == [True, True, True, False]
        assert vectors[:, 0].tolist() == [2.0, 3.0, 1.0, 0.0]
        newcomer = image_row(session, 99).id  # no scoring job yet
        assert outbox.requeue(session, [ids[2], ids[3], newcomer]) == 3
    with runtime.factory() as session:
        jobs = {j.image_id: j for j in session.scalars(select(ScoringJob))}
    assert [jobs[i].status for i in ids] == ["done", "done", "pending", "pending"]
    requeued = [jobs[ids[2]], jobs[ids[3]], jobs[newcomer]]
    assert all(j.status == "pending" and j.attempts == 0 and j.enqueued_at is None
               for j in requeued)  # fmt: skip


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_leftovers_of_a_killed_fine_tuning_run_are_collected(
    database: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """A fine-tuned space no model uses goes, with its vectors, once idle and no run is
    running; a model's own space and files stay."""
    from datetime import UTC, datetime

    from curation.learning.tuned import collect_orphan_spaces
    from curation.models import ModelVersion, RunStatus, RunTrigger, TrainingRun

    runtime = request.getfixturevalue("runtime" if database == "sqlite" else "pg_runtime")
    embeddings, models = tmp_path / "embeddings", tmp_path / "models"
    models.mkdir()
    with runtime.factory() as session, session.begin():
        ids = _images(session, 2)
        kept = es.get_or_create_space(
            session, key="m:tuned:aa", backbone="m", weights_id="tuned:aa", dim=2
        )
        left = es.get_or_create_space(
            session, key="m:tuned:bb", backbone="m", weights_id="tuned:bb", dim=2
        )
        for space in (kept, left):
            es.record(session, embeddings, space, [(i, es.FULL) for i in ids], np.ones((2, 2)))
        session.add(
            ModelVersion(
                space_id=kept.id, class_ids=[1], artifact_key="head.npz", seed=0,
                settings={"backbone_artifact": "kept.keras"}, metrics={}, status="candidate",
            )
        )  # fmt: skip
        run = TrainingRun(
            status=RunStatus.RUNNING.value, trigger=RunTrigger.MANUAL.value, requested_by="t",
            started_at=datetime.now(UTC), heartbeat_at=datetime.now(UTC),
        )  # fmt: skip
        session.add(run)
    for name in ("kept.keras", "left.keras"):
        (models / name).write_bytes(b"x")

    def collect(grace: float, *, dry_run: bool = False) -> list[str]:
        with runtime.factory() as session, session.begin():
            return collect_orphan_spaces(
                session, embeddings, models, grace_seconds=grace, dry_run=dry_run
            )

    assert collect(0.0) == []  # a run is running: the space may be its own
    with runtime.factory() as session, session.begin():
        session.get_one(TrainingRun, run.id).status = RunStatus.FAILED.value
    assert collect(3600.0) == []  # written to a moment ago
    assert collect(0.0, dry_run=True) == ["m:tuned:bb", "left.keras"]
    assert collect(0.0) == ["m:tuned:bb", "left.keras"]
    with runtime.factory() as session:
        keys = set(session.scalars(select(es.EmbeddingSpace.key)))
        rows = session.scalar(select(func.count()).select_from(ImageEmbedding))
    assert keys == {"m:tuned:aa"} and rows == 2
    assert sorted(p.name for p in models.iterdir()) == ["kept.keras"]
    assert sorted(p.name for p in embeddings.iterdir()) == [f"{kept.id}.f16"]
