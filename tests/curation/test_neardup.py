"""The in-memory near-duplicate index over packed 64-bit hashes."""

from __future__ import annotations

import numpy as np
from sqlalchemy.orm import Session

from curation.models import Image
from curation.neardup import NearDuplicateIndex
from tests.factories import image_row


def _flip(value: int, *bits: int) -> int:
    for bit in bits:
        value ^= 1 << bit
    return value


BASE = 0xF0F0_1234_5678_9ABC  # >= 2**63: exercises the unsigned path


def test_empty_index_matches_nothing() -> None:
    index = NearDuplicateIndex()
    assert len(index) == 0
    assert index.max_image_id == 0
    assert index.matching_image_ids(BASE, max_distance=64) == []


def test_matches_within_distance_and_not_beyond() -> None:
    index = NearDuplicateIndex()
    index.add(BASE, 1)
    index.add(_flip(BASE, 0, 7, 63), 2)  # distance 3
    index.add(_flip(BASE, 1, 2, 3, 4, 5, 6, 8), 3)  # distance 7
    index.add(BASE ^ (2**64 - 1), 4)  # distance 64
    assert index.matching_image_ids(BASE, max_distance=0) == [1]
    assert index.matching_image_ids(BASE, max_distance=3) == [1, 2]
    assert index.matching_image_ids(BASE, max_distance=6) == [1, 2]
    assert index.matching_image_ids(BASE, max_distance=7) == [1, 2, 3]
    assert index.matching_image_ids(BASE, max_distance=64) == [1, 2, 3, 4]
    assert index.matching_image_ids(_flip(BASE, 63), max_distance=0) == []
    assert index.max_image_id == 4


def test_index_grows_past_its_capacity() -> None:
    index = NearDuplicateIndex(capacity=2)
    for image_id in range(1, 51):
        index.add(_flip(0, image_id % 64), image_id)
    assert len(index) == 50
    assert index.matching_image_ids(_flip(0, 5), max_distance=0) == [5]
    assert index.max_image_id == 50


def test_from_arrays() -> None:
    hashes = np.array([BASE, _flip(BASE, 1), 7], dtype=np.uint64)
    ids = np.array([10, 11, 12], dtype=np.int64)
    index = NearDuplicateIndex.from_arrays(hashes, ids)
    assert len(index) == 3
    assert index.matching_image_ids(BASE, max_distance=1) == [10, 11]
    assert index.matching_image_ids(7, max_distance=0) == [12]


def test_discard_after_forgets_later_ids_only() -> None:
    index = NearDuplicateIndex()
    for image_id in range(1, 6):
        index.add(BASE, image_id)
    index.discard_after(3)
    assert len(index) == 3
    assert index.max_image_id == 3
    assert index.matching_image_ids(BASE, max_distance=0) == [1, 2, 3]
    index.add(BASE, 9)  # adding after a discard still works
    assert index.matching_image_ids(BASE, max_distance=0) == [1, 2, 3, 9]
    index.discard_after(0)
    assert len(index) == 0
    assert index.matching_image_ids(BASE, max_distance=64) == []


def _insert_image(session: Session, n: int, phash_unsigned: int) -> Image:
    return image_row(session, n, phash_unsigned=phash_unsigned)


def test_refresh_reads_signed_rows_and_then_only_new_ones(db_session: Session) -> None:
    first = _insert_image(db_session, 1, BASE)  # stored negative
    second = _insert_image(db_session, 2, 12345)
    assert db_session.get(Image, first.id).phash < 0  # type: ignore[union-attr]
    index = NearDuplicateIndex()
    index.refresh(db_session)
    assert len(index) == 2
    assert index.matching_image_ids(BASE, max_distance=0) == [first.id]
    assert index.matching_image_ids(_flip(12345, 3), max_distance=1) == [second.id]

    index.refresh(db_session)  # nothing new: nothing added twice
    assert len(index) == 2

    third = _insert_image(db_session, 3, _flip(BASE, 10))
    index.refresh(db_session)
    assert len(index) == 3
    assert index.max_image_id == third.id
    assert index.matching_image_ids(BASE, max_distance=1) == [first.id, third.id]


def test_refresh_after_discard_reloads_committed_rows(db_session: Session) -> None:
    rows = [_insert_image(db_session, n, _flip(BASE, n)) for n in (1, 2, 3)]
    index = NearDuplicateIndex()
    index.refresh(db_session)
    index.discard_after(rows[0].id)
    assert len(index) == 1
    index.refresh(db_session)
    assert sorted(index.matching_image_ids(BASE, max_distance=1)) == [r.id for r in rows]
