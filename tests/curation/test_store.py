"""The content-addressed image store and its orphan collector."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from curation.models import Image, NearDuplicateGroup
from curation.store import LocalImageStore
from curation.store.base import storage_key
from curation.store.gc import collect_orphans
from tests.curation.helpers import stored_files

SHA_A = "ab" * 32
SHA_B = "cd" * 32
KEY_A = storage_key(SHA_A, "jpg")
KEY_B = storage_key(SHA_B, "png")


def test_storage_key_fans_out_by_hash() -> None:
    assert f"ab/ab/{SHA_A}.jpg" == KEY_A
    assert f"cd/cd/{SHA_B}.png" == KEY_B


@pytest.mark.parametrize(
    ("sha", "extension"),
    [
        ("ab" * 31, "jpg"),
        ("AB" * 32, "jpg"),
        ("zz" * 32, "jpg"),
        ("../" + "a" * 61, "jpg"),
        (SHA_A, "gif"),
        (SHA_A, "jpg/../x"),
        (SHA_A, ""),
    ],
)
def test_storage_key_refuses_anything_else(sha: str, extension: str) -> None:
    with pytest.raises(ValueError):
        storage_key(sha, extension)


def test_put_get_exists_delete(store: LocalImageStore) -> None:
    assert not store.exists(KEY_A)
    assert store.put(KEY_A, b"first") is True
    assert store.exists(KEY_A)
    assert store.get(KEY_A) == b"first"
    assert store.put(KEY_A, b"second") is False  # content-addressed: never overwritten
    assert store.get(KEY_A) == b"first"
    store.delete(KEY_A)
    assert not store.exists(KEY_A)
    store.delete(KEY_A)  # deleting a missing key is not an error
    assert stored_files(store) == []


def test_put_leaves_no_temporary_file(store: LocalImageStore) -> None:
    store.put(KEY_A, b"x" * 10_000)
    store.put(KEY_A, b"x" * 10_000)
    assert stored_files(store) == [KEY_A]


@pytest.mark.parametrize(
    "key",
    [
        "../../etc/passwd",
        f"ab/ab/../../{SHA_A}.jpg",
        f"/ab/ab/{SHA_A}.jpg",
        f"ab/ab/{SHA_A}.exe",
        f"ab/ab/{SHA_A}.jpg\n",
        "ab/ab/.incoming-x",
    ],
)
def test_path_for_refuses_keys_that_are_not_storage_keys(store: LocalImageStore, key: str) -> None:
    with pytest.raises(ValueError):
        store.path_for(key)
    with pytest.raises(ValueError):
        store.put(key, b"x")


def test_keys_lists_only_well_formed_keys_sorted(store: LocalImageStore) -> None:
    store.put(KEY_B, b"b")
    store.put(KEY_A, b"a")
    (store.root / "ab" / "ab" / ".incoming-leftover").write_bytes(b"x")
    (store.root / "ab" / "ab" / "notes.txt").write_bytes(b"x")
    assert list(store.keys()) == [KEY_A, KEY_B]


def test_age_seconds(store: LocalImageStore) -> None:
    store.put(KEY_A, b"a")
    assert 0 <= store.age_seconds(KEY_A) < 60
    old = time.time() - 7200
    os.utime(store.path_for(KEY_A), (old, old))
    assert store.age_seconds(KEY_A) >= 7199


def _age(store: LocalImageStore, key: str, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(store.path_for(key), (then, then))


def test_collect_orphans_keeps_referenced_and_young_files(
    db_session: Session, tmp_path: Path
) -> None:
    store = LocalImageStore(tmp_path / "images")
    group = NearDuplicateGroup()
    db_session.add(group)
    db_session.flush()
    db_session.add(
        Image(
            sha256=SHA_A,
            phash=0,
            width=1,
            height=1,
            format="jpeg",
            byte_size=1,
            storage_key=KEY_A,
            stored_format="jpeg",
            group_id=group.id,
        )
    )
    db_session.flush()
    young_orphan = storage_key("ef" * 32, "jpg")
    for key in (KEY_A, KEY_B, young_orphan):
        store.put(key, b"data")
    _age(store, KEY_A, 7200)
    _age(store, KEY_B, 7200)

    assert collect_orphans(db_session, store, dry_run=True) == [KEY_B]
    assert store.exists(KEY_B)

    assert collect_orphans(db_session, store) == [KEY_B]
    assert sorted(store.keys()) == sorted([KEY_A, young_orphan])

    assert collect_orphans(db_session, store, grace_seconds=0) == [young_orphan]
    assert list(store.keys()) == [KEY_A]
