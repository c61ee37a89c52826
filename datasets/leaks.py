"""Finding leaks: the same photo, or a near-duplicate of it, on both sides of a split.

Two checks, both usable on a platform version and on an imported folder:

* by perceptual hash: every pair of images in different splits whose 64-bit
  pHashes are within ``max_distance`` bits (XOR and popcount over arrays,
  never a Python loop over pairs); "exact" when the bytes are identical;
* by near-duplicate group (platform versions): a group with members in two
  splits.

A folder's split is read from its paths: a directory named train, val(idation)
or test, or a file name starting with one of those and ``_`` or ``-`` (as
``porto5``'s ``test_12.jpg``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import select
from sqlalchemy.orm import Session

from curation.exceptions import RejectedInput
from curation.hashing import perceptual_hash, sha256_hex, to_unsigned64
from curation.ingest.folders import relative_name, walk_files
from curation.models import DatasetVersion, Image
from curation.validation import decode_untrusted
from datasets.manifest import SPLIT_NAMES
from datasets.versions import load_manifest

# Pairs compared at most by the hash check of a version; above it, the group
# check (complete for images the platform grouped at ingest) stands alone.
MAX_PAIRS = 4_000_000_000
_BLOCK = 2048
_SPLIT_WORDS = {
    "train": 0,
    "training": 0,
    "val": 1,
    "valid": 1,
    "validation": 1,
    "dev": 1,
    "test": 2,
    "testing": 2,
}
_PREFIX = re.compile(r"^(train|training|val|valid|validation|dev|test|testing)[_-]", re.I)


@dataclass(frozen=True)
class Leak:
    a: str
    b: str
    split_a: str
    split_b: str
    distance: int
    kind: str  # "exact" (same bytes), "near-duplicate" or "group"
    # The platform's image ids, for a version's leaks (None for a folder's).
    a_image_id: int | None = None
    b_image_id: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "a": self.a,
            "b": self.b,
            "image_ids": None if self.a_image_id is None else [self.a_image_id, self.b_image_id],
            "splits": [self.split_a, self.split_b],
            "distance": self.distance,
            "kind": self.kind,
        }


@dataclass
class LeakReport:
    subject: str
    items: int
    split_counts: dict[str, int]
    leaks: list[Leak] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def images_involved(self) -> int:
        return len({leak.a for leak in self.leaks} | {leak.b for leak in self.leaks})

    def as_dict(self, *, limit: int = 1000) -> dict[str, Any]:
        kinds: dict[str, int] = {}
        for leak in self.leaks:
            kinds[leak.kind] = kinds.get(leak.kind, 0) + 1
        return {
            "subject": self.subject,
            "items": self.items,
            "splits": self.split_counts,
            "leaking_pairs": len(self.leaks),
            "images_involved": self.images_involved,
            "by_kind": kinds,
            "pairs": [leak.as_dict() for leak in self.leaks[:limit]],
            "skipped": self.skipped,
            "notes": self.notes,
            "clean": not self.leaks,
        }

    def as_text(self, *, limit: int = 50) -> str:
        splits = ", ".join(f"{k} {v}" for k, v in self.split_counts.items())
        lines = [f"{self.subject}: {self.items} images ({splits})"]
        if not self.leaks:
            lines.append("no leaks: no image has a duplicate or near-duplicate in another split")
        else:
            lines.append(
                f"LEAKS: {len(self.leaks)} pairs across splits,"
                f" {self.images_involved} images involved"
            )
            for leak in self.leaks[:limit]:
                lines.append(
                    f"  {leak.split_a}:{leak.a}  ~  {leak.split_b}:{leak.b}"
                    f"  ({leak.kind}, distance {leak.distance})"
                )
            if len(self.leaks) > limit:
                lines.append(f"  ... {len(self.leaks) - limit} more")
        lines.extend(f"note: {note}" for note in self.notes)
        lines.extend(f"skipped {s['path']}: {s['reason']}" for s in self.skipped)
        return "\n".join(lines)


def cross_split_pairs(
    hashes: NDArray[np.uint64], splits: NDArray[np.int8], *, max_distance: int
) -> Iterator[tuple[int, int, int]]:
    """(i, j, distance) for every pair in different splits within ``max_distance`` bits.

    ``hashes``: uint64 pHashes, shape (n,); ``splits``: shape (n,). i < j
    in split order (the first index is in the lower split number).
    """
    for low in range(3):
        for high in range(low + 1, 3):
            left = np.flatnonzero(splits == low)
            right = np.flatnonzero(splits == high)
            if not len(left) or not len(right):
                continue
            right_hashes = hashes[right]
            for start in range(0, len(left), _BLOCK):
                block = left[start : start + _BLOCK]
                distance = np.bitwise_count(hashes[block][:, None] ^ right_hashes[None, :])
                rows, cols = np.nonzero(distance <= max_distance)
                for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
                    yield int(block[r]), int(right[c]), int(distance[r, c])


# --- a folder -----------------------------------------------------------------------


def split_of_path(relative: str) -> int | None:
    """The split a folder path names (directory or file-name prefix), or None."""
    parts = relative.split("/")
    for part in parts[:-1]:
        if part.lower() in _SPLIT_WORDS:
            return _SPLIT_WORDS[part.lower()]
    match = _PREFIX.match(parts[-1])
    return _SPLIT_WORDS[match.group(1).lower()] if match else None


def check_folder(root: Path, *, max_distance: int, max_bytes: int, max_pixels: int) -> LeakReport:
    """Leaks across the splits a folder's paths name (e.g. an imported set)."""
    if not root.is_dir():
        raise RejectedInput(f"not a folder: {root}")
    names: list[str] = []
    hashes: list[int] = []
    digests: list[str] = []
    splits: list[int] = []
    skipped: list[dict[str, str]] = []
    for path in walk_files(root):
        relative = relative_name(root, path)
        if path.is_symlink():
            skipped.append({"path": relative, "reason": "symbolic links are not followed"})
            continue
        split = split_of_path(relative)
        if split is None:
            skipped.append({"path": relative, "reason": "its path names no split"})
            continue
        data = path.read_bytes()
        try:
            decoded = decode_untrusted(data, max_bytes=max_bytes, max_pixels=max_pixels)
        except RejectedInput as error:
            skipped.append({"path": relative, "reason": str(error)})
            continue
        names.append(relative)
        hashes.append(perceptual_hash(decoded.image))
        digests.append(sha256_hex(data))
        splits.append(split)
    split_array = np.asarray(splits, dtype=np.int8)
    report = LeakReport(
        subject=str(root),
        items=len(names),
        split_counts=_counts(split_array),
        skipped=skipped,
    )
    if not names:
        raise RejectedInput(
            f"no images with a split in their path under {root}"
            " (expected train/, validation/, test/ folders or train_/test_ file names)"
        )
    for i, j, distance in cross_split_pairs(
        np.asarray(hashes, dtype=np.uint64), split_array, max_distance=max_distance
    ):
        report.leaks.append(
            Leak(
                a=names[i],
                b=names[j],
                split_a=SPLIT_NAMES[splits[i]],
                split_b=SPLIT_NAMES[splits[j]],
                distance=distance,
                kind="exact" if digests[i] == digests[j] else "near-duplicate",
            )
        )
    return report


# --- a platform version -------------------------------------------------------------


def check_version(
    session: Session, version: DatasetVersion, *, max_distance: int, max_pairs: int = MAX_PAIRS
) -> LeakReport:
    """Leaks in a dataset version: near-duplicate groups across splits, and a hash check."""
    manifest = load_manifest(session, version)
    rows = session.execute(
        select(Image.id, Image.phash, Image.group_id, Image.sha256).where(
            Image.id.in_(manifest.image_ids.tolist())
        )
        if len(manifest) <= 30000
        else select(Image.id, Image.phash, Image.group_id, Image.sha256)
    ).all()
    by_id = {int(r[0]): r for r in rows}
    ids = manifest.image_ids
    phash = np.array([to_unsigned64(by_id[int(i)][1]) for i in ids], dtype=np.uint64)
    groups = np.array([by_id[int(i)][2] for i in ids], dtype=np.int64)
    shas = [by_id[int(i)][3] for i in ids]
    report = LeakReport(
        subject=f"dataset v{version.number}", items=len(ids), split_counts=_counts(manifest.splits)
    )
    seen: set[tuple[int, int]] = set()
    order = np.lexsort((manifest.splits, groups))
    g, s = groups[order], manifest.splits[order]
    starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
    for start, end in zip(starts, np.r_[starts[1:], len(g)], strict=True):
        if s[start] == s[end - 1]:
            continue
        members = order[start:end]
        for a in members:
            for b in members:
                if manifest.splits[a] < manifest.splits[b] and (int(a), int(b)) not in seen:
                    seen.add((int(a), int(b)))
                    report.leaks.append(_version_leak(ids, manifest.splits, a, b, phash, "group"))
    counts = np.bincount(manifest.splits.astype(np.int64), minlength=3)
    pairs = int(counts[0] * counts[1] + counts[0] * counts[2] + counts[1] * counts[2])
    if pairs > max_pairs:
        report.notes.append(
            f"hash check skipped: {pairs} cross-split pairs (limit {max_pairs});"
            " the near-duplicate group check above covers every image grouped at ingest"
        )
        return report
    for i, j, distance in cross_split_pairs(phash, manifest.splits, max_distance=max_distance):
        if (i, j) in seen:
            continue
        kind = "exact" if shas[i] == shas[j] else "near-duplicate"
        report.leaks.append(_version_leak(ids, manifest.splits, i, j, phash, kind, distance))
    return report


def _version_leak(
    ids: NDArray[np.int64],
    splits: NDArray[np.int8],
    a: int,
    b: int,
    phash: NDArray[np.uint64],
    kind: str,
    distance: int | None = None,
) -> Leak:
    if distance is None:
        distance = int(np.bitwise_count(phash[a] ^ phash[b]))
    return Leak(
        a=f"image {int(ids[a])}",
        b=f"image {int(ids[b])}",
        split_a=SPLIT_NAMES[int(splits[a])],
        split_b=SPLIT_NAMES[int(splits[b])],
        distance=distance,
        kind=kind,
        a_image_id=int(ids[a]),
        b_image_id=int(ids[b]),
    )


def _counts(splits: NDArray[np.int8]) -> dict[str, int]:
    counts = np.bincount(splits.astype(np.int64), minlength=3)
    return {name: int(c) for name, c in zip(SPLIT_NAMES, counts, strict=True)}
