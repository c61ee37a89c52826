"""Near-duplicate search over packed 64-bit perceptual hashes.

One query is a vectorised XOR and popcount over every stored hash (about 2 ms
for a million hashes on one core), never a Python loop over rows. The index
maps hashes to image ids only; groups are read from the database, so a group
merge never makes the index stale, and :meth:`refresh` picks up images other
processes committed (ids only grow).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import select
from sqlalchemy.orm import Session

from curation.models import Image

# How far below the largest id seen a refresh looks again for late commits.
REFRESH_LOOKBACK_IDS = 5000


class NearDuplicateIndex:
    def __init__(self, capacity: int = 1024) -> None:
        self._hashes: NDArray[np.uint64] = np.zeros(capacity, dtype=np.uint64)
        self._ids: NDArray[np.int64] = np.zeros(capacity, dtype=np.int64)
        self._size = 0

    def __len__(self) -> int:
        return self._size

    @property
    def max_image_id(self) -> int:
        return int(self._ids[: self._size].max()) if self._size else 0

    @classmethod
    def from_arrays(
        cls, hashes: NDArray[np.uint64], image_ids: NDArray[np.int64]
    ) -> NearDuplicateIndex:
        index = cls(capacity=max(1024, len(hashes) * 2))
        index._append(hashes, image_ids)
        return index

    def refresh(self, session: Session) -> None:
        """Add the images committed since the last refresh.

        Ids are handed out at insert but become visible at commit, so on
        PostgreSQL a concurrent writer's smaller id can appear after a larger
        one was seen. Re-reading a window below the largest id seen, and
        skipping ids already held, catches those late commits.
        """
        low = max(0, self.max_image_id - REFRESH_LOOKBACK_IDS)
        rows = session.execute(
            select(Image.id, Image.phash).where(Image.id > low).order_by(Image.id)
        ).all()
        if not rows:
            return
        ids = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
        signed = np.fromiter((row[1] for row in rows), dtype=np.int64, count=len(rows))
        held = self._ids[: self._size]
        fresh = ~np.isin(ids, held[held > low])
        if fresh.any():
            self._append(signed[fresh].view(np.uint64), ids[fresh])

    def add(self, phash_unsigned: int, image_id: int) -> None:
        self._append(
            np.array([phash_unsigned], dtype=np.uint64), np.array([image_id], dtype=np.int64)
        )

    def _append(self, hashes: NDArray[np.uint64], ids: NDArray[np.int64]) -> None:
        needed = self._size + len(hashes)
        if needed > len(self._hashes):
            capacity = max(needed, 2 * len(self._hashes))
            self._hashes = np.resize(self._hashes, capacity)
            self._ids = np.resize(self._ids, capacity)
        self._hashes[self._size : needed] = hashes
        self._ids[self._size : needed] = ids
        self._size = needed

    def discard_after(self, image_id: int) -> None:
        """Forget entries above ``image_id`` (their transaction rolled back)."""
        keep = self._ids[: self._size] <= image_id
        count = int(keep.sum())
        self._hashes[:count] = self._hashes[: self._size][keep]
        self._ids[:count] = self._ids[: self._size][keep]
        self._size = count

    def matching_image_ids(self, phash_unsigned: int, *, max_distance: int) -> list[int]:
        """Ids of images whose hash lies within ``max_distance`` bits of ``phash_unsigned``."""
        if self._size == 0:
            return []
        distances = np.bitwise_count(self._hashes[: self._size] ^ np.uint64(phash_unsigned))
        return [int(i) for i in self._ids[: self._size][distances <= max_distance]]


def group_ids_of(session: Session, image_ids: NDArray[np.int64]) -> NDArray[np.int64]:
    """The near-duplicate group of each of ``image_ids`` (same order), for group-wise folds."""
    wanted = np.asarray(image_ids, dtype=np.int64)
    groups = groups_by_image(session, wanted.tolist())
    return np.asarray([groups[int(i)] for i in wanted], dtype=np.int64)


def groups_by_image(session: Session, image_ids: list[int]) -> dict[int, int]:
    """{image id: near-duplicate group id} of those of ``image_ids`` that exist."""
    groups: dict[int, int] = {}
    for start in range(0, len(image_ids), 10000):
        chunk = image_ids[start : start + 10000]
        groups.update(
            (int(i), int(g))
            for i, g in session.execute(select(Image.id, Image.group_id).where(Image.id.in_(chunk)))
        )
    return groups
