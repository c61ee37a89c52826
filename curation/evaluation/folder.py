"""A labelled folder, read once: embeddings, labels and near-duplicate groups.

``root/<class>/.../<file>``: the class is the first path component. Each file
is validated as untrusted input (:func:`curation.validation.decode_untrusted`)
and rejects are collected, not raised. Byte-identical files collapse to one row
(the first path in sorted order); a copy filed under another class is
reported as a reject, since one image cannot carry two true labels.

Embeddings are computed with the platform's own pipeline
(:func:`curation.learning.embed.embed_images`, float16 like the platform's
cache) and cached in ``cache_dir`` as ``.npz``, keyed by the embedding space
and the sorted list of the files' SHA-256: a rerun on the same files skips
TensorFlow entirely.

Near-duplicate groups join rows whose 64-bit pHashes lie within
``max_distance`` bits, transitively (burst shots chain into one group), so a
split by whole groups cannot put a photo in training and its twin in test.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from curation.exceptions import CurationError, RejectedInput
from curation.hashing import perceptual_hash, sha256_hex
from curation.validation import decode_untrusted

# Pair search compares this many rows against all rows at once (a block of
# 1024 x 1M uint64 is 8 GiB; 1024 x 100k is 800 MiB, so the block shrinks with N).
MAX_PAIR_BLOCK_ENTRIES = 1 << 24
CACHE_FORMAT = 1


@dataclass(frozen=True)
class FolderData:
    """The rows of a labelled folder, aligned by position.

    ``relative_paths``: (N,) POSIX paths under the root; ``labels``: (N,) int64
    in 0..C-1 indexing ``class_names`` (sorted folder names); ``embeddings``:
    (N, D) float32; ``group_ids``: (N,) int64 near-duplicate group, numbered
    0..G-1 in order of first row; ``sha256``: (N,) hex digests;
    ``perceptual_hashes``: (N,) uint64 pHashes; ``rejected``: (path, reason)
    for every file left out.
    """

    relative_paths: list[str]
    labels: NDArray[np.int64]
    class_names: list[str]
    embeddings: NDArray[np.float32]
    group_ids: NDArray[np.int64]
    sha256: list[str]
    perceptual_hashes: NDArray[np.uint64] = field(
        default_factory=lambda: np.zeros(0, dtype=np.uint64)
    )
    rejected: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.relative_paths)


def load_labelled_folder(
    root: Path,
    *,
    backbone: str,
    weights: str,
    cache_dir: Path,
    max_distance: int = 10,
    max_bytes: int,
    max_pixels: int,
) -> FolderData:
    """Read, validate, hash, group and embed every image under ``root/<class>/``.

    Files directly under ``root`` (no class folder) and hidden files are
    rejected. Raises ``CurationError`` when no image is left.
    """
    root = Path(root)
    if not root.is_dir():
        raise CurationError(f"{root} is not a folder")
    files = sorted(
        path
        for path in root.rglob("*")
        if path.is_file() and not any(part.startswith(".") for part in path.relative_to(root).parts)
    )
    rejected: list[tuple[str, str]] = []
    rows: list[tuple[str, str, str, int]] = []  # (relative path, class, sha, phash)
    first_of_sha: dict[str, tuple[str, str]] = {}
    for path in files:
        relative = path.relative_to(root).as_posix()
        parts = path.relative_to(root).parts
        if len(parts) < 2:
            rejected.append((relative, "not inside a class folder"))
            continue
        try:
            data = path.read_bytes()
        except OSError as error:
            rejected.append((relative, f"unreadable: {error.strerror or error}"))
            continue
        digest = sha256_hex(data)
        if digest in first_of_sha:
            kept, kept_class = first_of_sha[digest]
            if kept_class != parts[0]:
                reason = f"byte-identical to {kept}, filed under another class ({kept_class})"
            else:
                reason = f"byte-identical to {kept}"
            rejected.append((relative, reason))
            continue
        try:
            decoded = decode_untrusted(data, max_bytes=max_bytes, max_pixels=max_pixels)
        except RejectedInput as error:
            rejected.append((relative, error.reason))
            continue
        first_of_sha[digest] = (relative, parts[0])
        rows.append((relative, parts[0], digest, perceptual_hash(decoded.image)))

    embeddings, failed = _cached_embeddings(
        root, rows, backbone=backbone, weights=weights, cache_dir=cache_dir
    )
    if failed:
        rejected.extend((relative, failed[relative]) for relative, *_ in rows if relative in failed)
        keep = [k for k, row in enumerate(rows) if row[0] not in failed]
        rows = [rows[k] for k in keep]
    if not rows:
        raise CurationError(f"no usable image under {root}")

    class_names = sorted({row[1] for row in rows})
    index = {name: k for k, name in enumerate(class_names)}
    hashes = np.asarray([row[3] for row in rows], dtype=np.uint64)
    return FolderData(
        relative_paths=[row[0] for row in rows],
        labels=np.asarray([index[row[1]] for row in rows], dtype=np.int64),
        class_names=class_names,
        embeddings=embeddings,
        group_ids=near_duplicate_groups(hashes, max_distance=max_distance),
        sha256=[row[2] for row in rows],
        perceptual_hashes=hashes,
        rejected=rejected,
    )


def load_under_settings(root: Path, *, backbone: str, weights: str, cache_dir: Path) -> FolderData:
    """:func:`load_labelled_folder` under the platform's configured limits: the
    near-duplicate distance and the largest image accepted (bytes, pixels)."""
    from curation.settings import load_settings

    settings = load_settings()
    return load_labelled_folder(
        root,
        backbone=backbone,
        weights=weights,
        cache_dir=cache_dir,
        max_distance=settings.near_duplicate_max_distance,
        max_bytes=settings.max_image_bytes,
        max_pixels=settings.max_image_pixels,
    )


def _cached_embeddings(
    root: Path,
    rows: list[tuple[str, str, str, int]],
    *,
    backbone: str,
    weights: str,
    cache_dir: Path,
) -> tuple[NDArray[np.float32], dict[str, str]]:
    """(N, D) float32 embeddings of ``rows`` and {path: reason} of files that failed to decode.

    On a cache miss the rows that failed are absent from the returned array.
    """
    from curation.learning.backbones import file_weights_id, get_spec

    spec = get_spec(backbone)
    if weights in ("imagenet", "none"):
        weights_id = weights
    else:
        path = Path(weights).expanduser()
        weights_id = file_weights_id(path) if path.is_file() else f"missing:{path}"
    space_key = f"{spec.name}:{weights_id}"
    shas = [row[2] for row in rows]
    key = hashlib.sha256(
        "\n".join([f"v{CACHE_FORMAT}", space_key, *sorted(shas)]).encode()
    ).hexdigest()[:24]
    cache_file = Path(cache_dir) / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', spec.name)}-{key}.npz"
    if cache_file.is_file():
        with np.load(cache_file, allow_pickle=False) as cached:
            position = {str(sha): k for k, sha in enumerate(cached["sha256"])}
            failed = {
                str(p): str(r)
                for p, r in zip(cached["failed_paths"], cached["failed_reasons"], strict=True)
            }
            kept = [position[sha] for sha in shas if sha in position]
            vectors = np.asarray(cached["embeddings"][kept], dtype=np.float32)
        return vectors, failed

    from curation.learning.backbones import load_backbone
    from curation.learning.decode import UndecodableImage
    from curation.learning.embed import EmbedInput, embed_images

    loaded = load_backbone(backbone, weights)
    remaining = list(rows)
    failed = {}
    while True:
        try:
            vectors16 = embed_images(
                [EmbedInput(root / relative) for relative, *_ in remaining], loaded
            )
            break
        except UndecodableImage as error:
            bad = Path(error.source).relative_to(root).as_posix()
            failed[bad] = f"cannot decode for the model: {error.reason}"
            remaining = [row for row in remaining if row[0] != bad]
    cache_dir.mkdir(parents=True, exist_ok=True)
    temporary = cache_file.with_suffix(".tmp.npz")
    np.savez(
        temporary,
        sha256=np.asarray([row[2] for row in remaining], dtype=np.str_),
        embeddings=vectors16,
        failed_paths=np.asarray(list(failed), dtype=np.str_),
        failed_reasons=np.asarray(list(failed.values()), dtype=np.str_),
        space_key=np.asarray(space_key),
    )
    temporary.replace(cache_file)
    return vectors16.astype(np.float32), failed


def near_duplicate_groups(hashes: NDArray[np.uint64], *, max_distance: int) -> NDArray[np.int64]:
    """Transitive near-duplicate groups of 64-bit perceptual hashes.

    Parameters
    ----------
    hashes : (N,) uint64 pHashes.
    max_distance : two rows pair when their Hamming distance is <= this (0..64).

    Returns
    -------
    (N,) int64 group ids in 0..G-1, numbered in order of each group's first
    row; rows joined by any chain of pairs share an id.
    """
    values = np.asarray(hashes, dtype=np.uint64)
    if values.ndim != 1:
        raise ValueError(f"hashes must be 1-D (N,), got shape {values.shape}")
    n_rows = values.shape[0]
    parent = np.arange(n_rows, dtype=np.int64)
    rows_per_block = max(1, MAX_PAIR_BLOCK_ENTRIES // max(n_rows, 1))
    firsts: list[NDArray[np.int64]] = []
    seconds: list[NDArray[np.int64]] = []
    for start in range(0, n_rows, rows_per_block):
        block = values[start : start + rows_per_block]
        distance = np.bitwise_count(block[:, None] ^ values[None, :])
        a, b = np.nonzero(distance <= max_distance)
        a = a + start
        later = b > a
        firsts.append(a[later].astype(np.int64))
        seconds.append(b[later].astype(np.int64))
    if firsts:
        first = np.concatenate(firsts)
        second = np.concatenate(seconds)
        # Union-find, vectorised: hook every pair onto the smaller root, then
        # compress paths, until no pair spans two roots.
        while first.size:
            root_a, root_b = parent[first], parent[second]
            spans = root_a != root_b
            if not spans.any():
                break
            low = np.minimum(root_a[spans], root_b[spans])
            high = np.maximum(root_a[spans], root_b[spans])
            np.minimum.at(parent, high, low)
            while True:
                jumped = parent[parent]
                if np.array_equal(jumped, parent):
                    break
                parent = jumped
    _, group_ids = np.unique(parent, return_inverse=True)
    # parent roots are each group's smallest row, so unique() already numbers
    # groups in order of first row.
    return group_ids.astype(np.int64)


def group_split(
    group_ids: NDArray[np.int64],
    labels: NDArray[np.int64],
    *,
    test_share: float,
    seed: int,
) -> NDArray[np.bool_]:
    """Hold out a test set by whole near-duplicate groups, stratified per class.

    Each group belongs to the class most of its rows carry (ties: the lowest
    index). Per class, groups are visited in a seeded random order and taken
    into test while that brings the class's test rows closer to
    ``test_share`` of its rows. A class with at least two groups keeps at
    least one group on each side.

    Parameters
    ----------
    group_ids : (N,) int, group of each row.
    labels : (N,) int >= 0, class of each row.
    test_share : in [0, 1).
    seed : equal inputs and seed give an equal mask.

    Returns
    -------
    (N,) bool, True for test rows; every group lies entirely on one side.
    """
    groups = np.asarray(group_ids, dtype=np.int64)
    classes = np.asarray(labels, dtype=np.int64)
    if groups.ndim != 1 or groups.shape != classes.shape:
        raise ValueError("group_ids and labels must be 1-D arrays of equal length")
    if not 0.0 <= test_share < 1.0:
        raise ValueError(f"test_share must lie in [0, 1), got {test_share}")
    if groups.size == 0 or test_share == 0.0:
        return np.zeros(groups.shape[0], dtype=np.bool_)
    unique_groups, group_of_row = np.unique(groups, return_inverse=True)
    n_classes = int(classes.max()) + 1
    counts = np.zeros((unique_groups.size, n_classes), dtype=np.int64)
    np.add.at(counts, (group_of_row, classes), 1)
    group_class = counts.argmax(axis=1)
    group_size = counts.sum(axis=1)
    rng = np.random.default_rng(seed)
    take = np.zeros(unique_groups.size, dtype=np.bool_)
    for label in range(n_classes):
        members = np.flatnonzero(group_class == label)
        if members.size < 2:
            continue
        target = test_share * group_size[members].sum()
        taken = 0
        for group in rng.permutation(members):
            if take[members].sum() == members.size - 1:
                break
            size = int(group_size[group])
            if abs(taken + size - target) < abs(taken - target):
                take[group] = True
                taken += size
        if not take[members].any():
            # Every group overshoots the target: the smallest one still gives a test set.
            take[members[np.argmin(group_size[members])]] = True
    test: NDArray[np.bool_] = take[group_of_row]
    return test
