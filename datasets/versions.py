"""Dataset versions: take a snapshot of the labels, read one back, find one.

A snapshot reads every image's current label and near-duplicate group in
one query (no image file is opened), draws the splits (:mod:`datasets.splits`),
and writes only the entries that differ from the parent version, by one
binary COPY on PostgreSQL. Reading a version folds its chain of ancestors
back to the nearest checkpoint (a version that stores everything).

The frozen test split: an image in the parent's test split keeps its class
and box there unless the new label came through a double-reviewed decision
(a second reviewer agreed, or an admin resolved a dispute) or a class
lifecycle step (merge, split, retire); any other change waits, and the
snapshot reports it as held back.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from curation.exceptions import NotFound, RejectedInput
from curation.models import (
    ClassChange,
    ClassStatus,
    DatasetClass,
    DatasetVersion,
    Image,
    Label,
    LandmarkClass,
    ReviewDecision,
    Split,
)
from curation.pgcopy import Column, copy_in
from datasets.manifest import SPLIT_NAMES, ClassRecord, Manifest, empty_manifest
from datasets.rows import box_columns, boxes_from_ints, boxes_to_ints, int_rows
from datasets.splits import NONE, SplitRatios, assign_splits

# Every this many versions, one stores every entry, so a read folds at most
# this many deltas.
CHECKPOINT_DEPTH = 16
# A delta this large relative to the version is stored as a checkpoint.
CHECKPOINT_SHARE = 0.5
LIFECYCLE_ORIGIN_PREFIX = "class."


@dataclass(frozen=True)
class SnapshotResult:
    version: DatasetVersion
    added: int
    removed: int
    changed: int
    # Test-split images whose label changed without a double review: kept
    # as they were; listed so an admin can send them to a second reviewer.
    held_back: list[int] = field(default_factory=list)
    activated: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            **version_dict(self.version),
            "added": self.added,
            "removed": self.removed,
            "changed": self.changed,
            "held_back_test_changes": self.held_back,
            "activated_classes": self.activated,
        }


def version_dict(version: DatasetVersion) -> dict[str, Any]:
    return {
        "version": f"v{version.number}",
        "id": version.id,
        "parent": None if version.parent_id is None else version.parent_id,
        "author": version.author,
        "message": version.message,
        "created_at": version.created_at.isoformat(),
        "manifest_hash": version.manifest_hash,
        "items": version.item_count,
        "classes": version.class_count,
        "splits": version.split_counts,
        "settings": version.settings,
        "stored_as": "checkpoint" if version.is_full else "changes",
    }


# --- finding versions ---------------------------------------------------------------


def find_version(session: Session, ref: str | int) -> DatasetVersion:
    """A version by number ("v3", "3", 3) or "latest"; a clear NotFound otherwise."""
    if isinstance(ref, str) and ref.strip().lower() == "latest":
        version = latest_version(session)
        if version is None:
            raise NotFound("there is no dataset version yet; take one with `dataset snapshot`")
        return version
    match = re.fullmatch(r"v?(\d{1,9})", str(ref).strip().lower())
    if match is None:
        raise RejectedInput(f"{ref!r} is not a version: use v<number>, <number> or latest")
    number = int(match.group(1))
    version = session.scalars(select(DatasetVersion).where(DatasetVersion.number == number)).first()
    if version is None:
        raise NotFound(f"dataset version v{number} does not exist")
    return version


def latest_version(session: Session) -> DatasetVersion | None:
    return session.scalars(
        select(DatasetVersion).order_by(DatasetVersion.number.desc()).limit(1)
    ).first()


def list_versions(session: Session) -> list[DatasetVersion]:
    return list(session.scalars(select(DatasetVersion).order_by(DatasetVersion.number)))


# --- reading a version --------------------------------------------------------------


def _chain(session: Session, version: DatasetVersion) -> list[int]:
    """Version ids from ``version`` back to its checkpoint, newest first."""
    chain = [version.id]
    current = version
    while not current.is_full:
        assert current.parent_id is not None  # only a checkpoint has no parent
        parent = session.get(DatasetVersion, current.parent_id)
        assert parent is not None
        chain.append(parent.id)
        current = parent
    return chain


def load_classes(session: Session, version_id: int) -> tuple[ClassRecord, ...]:
    rows = session.scalars(
        select(DatasetClass)
        .where(DatasetClass.version_id == version_id)
        .order_by(DatasetClass.class_id)
    )
    return tuple(
        ClassRecord(
            class_id=row.class_id,
            slug=row.slug,
            display_name=row.display_name,
            status=row.status,
            aliases=tuple((language, name) for language, name in row.aliases),
            latitude=row.latitude,
            longitude=row.longitude,
        )
        for row in rows
    )


def load_manifest(session: Session, version: DatasetVersion | int | str) -> Manifest:
    """The full content of a version: its chain of changes folded, newest first."""
    if not isinstance(version, DatasetVersion):
        version = find_version(session, version)
    chain = _chain(session, version)
    ids = ", ".join(str(int(v)) for v in chain)
    rows = int_rows(
        session,
        "SELECT CAST(version_id AS BIGINT), CAST(image_id AS BIGINT),"  # noqa: S608 (ints)
        " CAST(COALESCE(class_id, -1) AS BIGINT), " + box_columns("") + ","
        " CAST(COALESCE(split, -1) AS BIGINT), CAST(COALESCE(label_id, -1) AS BIGINT)"
        f" FROM dataset_entries WHERE version_id IN ({ids})",
        9,
    )
    classes = load_classes(session, version.id)
    if not len(rows):
        return empty_manifest(classes)
    depth = np.searchsorted(-np.asarray(chain), -rows[:, 0])  # 0 for the newest version
    order = np.lexsort((depth, rows[:, 1]))
    rows = rows[order]
    newest = np.r_[True, rows[1:, 1] != rows[:-1, 1]]
    rows = rows[newest]
    rows = rows[rows[:, 2] != NONE]  # tombstones: removed in that version
    return Manifest(
        image_ids=rows[:, 1].copy(),
        class_ids=rows[:, 2].copy(),
        boxes=boxes_from_ints(rows[:, 3:7]),
        splits=rows[:, 7].astype(np.int8),
        label_ids=rows[:, 8].copy(),
        classes=classes,
    )


# --- taking a snapshot --------------------------------------------------------------


@dataclass(frozen=True)
class _State:
    """Every image that belongs in the dataset now: its current label and its group."""

    image_ids: NDArray[np.int64]
    label_ids: NDArray[np.int64]
    class_ids: NDArray[np.int64]
    boxes: NDArray[np.int64]  # centi-pixels, -1 for none
    group_ids: NDArray[np.int64]


def _current_state(session: Session) -> _State:
    # Every chain head (a label no newer label supersedes), newest per image;
    # an image whose newest head is "not a landmark" or names a retired
    # class is not in the dataset.
    rows = int_rows(
        session,
        "SELECT CAST(l.image_id AS BIGINT), CAST(l.id AS BIGINT),"  # noqa: S608 (constants)
        " CAST(COALESCE(l.class_id, -1) AS BIGINT), " + box_columns("l.") + ","
        " CAST(i.group_id AS BIGINT)"
        " FROM labels l JOIN images i ON i.id = l.image_id"
        " WHERE NOT EXISTS (SELECT 1 FROM labels n WHERE n.supersedes_id = l.id)",
        8,
    )
    if len(rows):
        rows = rows[np.lexsort((-rows[:, 1], rows[:, 0]))]
        rows = rows[np.r_[True, rows[1:, 0] != rows[:-1, 0]]]
    retired = np.array(
        session.scalars(
            select(LandmarkClass.id).where(LandmarkClass.status == ClassStatus.RETIRED.value)
        ).all(),
        dtype=np.int64,
    )
    keep = (rows[:, 2] != NONE) & ~np.isin(rows[:, 2], retired)
    rows = rows[keep]
    return _State(
        image_ids=rows[:, 0].copy(),
        label_ids=rows[:, 1].copy(),
        class_ids=rows[:, 2].copy(),
        boxes=rows[:, 3:7].copy(),
        group_ids=rows[:, 7].copy(),
    )


def _class_records(session: Session) -> tuple[ClassRecord, ...]:
    classes = session.scalars(select(LandmarkClass).order_by(LandmarkClass.id)).all()
    return tuple(
        ClassRecord(
            class_id=c.id,
            slug=c.slug,
            display_name=c.display_name,
            status=c.status,
            aliases=tuple(sorted((a.language, a.name) for a in c.aliases)),
            latitude=c.latitude,
            longitude=c.longitude,
        )
        for c in classes
    )


def _authoritative_labels(session: Session, label_ids: NDArray[np.int64]) -> set[int]:
    """Of ``label_ids``, those a double review or a class lifecycle step wrote."""
    if not len(label_ids):
        return set()
    wanted = {int(i) for i in label_ids}
    lifecycle = {
        int(i)
        for i in session.scalars(
            select(Label.id).where(
                Label.origin.startswith(LIFECYCLE_ORIGIN_PREFIX), Label.id.in_(sorted(wanted))
            )
        )
    }
    reviewed: set[int] = set()
    decisions = session.scalars(
        select(ReviewDecision.label_ids).where(
            ReviewDecision.undone_at.is_(None),
            (ReviewDecision.outcome == "agreed") | (ReviewDecision.stage == 3),
        )
    )
    for ids in decisions:
        reviewed.update(int(i) for i in ids or [] if int(i) in wanted)
    return lifecycle | reviewed


def snapshot(
    session: Session,
    *,
    author: str,
    message: str,
    author_id: int | None = None,
    ratios: SplitRatios | None = None,
    seed: int | None = None,
    now: datetime | None = None,
    activate: Any = None,
) -> SnapshotResult:
    """Commit-ready new version of the dataset as the labels stand; the caller commits.

    ``ratios`` and ``seed`` default to the parent's (a version's splits are
    drawn with the same rule as its parent's, or stability would mean
    nothing). ``activate``: a callable (session, per-class split counts)
    returning the slugs of the proposed classes it made active; those
    classes are marked active in this version's class list.
    """
    timings: dict[str, float] = {}
    clock = _Clock(timings)
    message = message.strip()
    if not message:
        raise RejectedInput("a dataset version needs a message saying what changed")
    # One snapshot at a time: two would pick the same number (the unique
    # number refuses the second on commit anyway; the lock makes it wait).
    _lock_snapshots(session)
    parent = latest_version(session)
    if parent is not None:
        ratios = ratios or SplitRatios(**parent.settings["ratios"])
        seed = parent.settings["seed"] if seed is None else seed
        if seed != parent.settings["seed"] or ratios != SplitRatios(**parent.settings["ratios"]):
            raise RejectedInput(
                "split ratios and seed are fixed by the first version"
                f" ({parent.settings['ratios']}, seed {parent.settings['seed']}):"
                " changing them would move images between splits"
            )
    ratios = ratios or SplitRatios()
    seed = 0 if seed is None else seed
    previous = load_manifest(session, parent) if parent is not None else empty_manifest()
    clock.lap("read_parent")
    state = _current_state(session)
    clock.lap("read_labels")

    inherited = np.full(len(state.image_ids), NONE, dtype=np.int8)
    # Where each current image sits in the parent (only meaningful where known).
    position = np.zeros(len(state.image_ids), dtype=np.int64)
    known = np.zeros(len(state.image_ids), dtype=bool)
    if len(previous.image_ids):
        position = np.minimum(
            np.searchsorted(previous.image_ids, state.image_ids), len(previous.image_ids) - 1
        )
        known = previous.image_ids[position] == state.image_ids
    inherited[known] = previous.splits[position[known]]
    class_ids = state.class_ids.copy()
    boxes = state.boxes.copy()
    label_ids = state.label_ids.copy()

    # The frozen test split: changes there need a double review.
    previous_boxes = boxes_to_ints(previous.boxes)
    was_test = known & (inherited == int(Split.TEST))
    at = position[was_test]
    changed_in_test = (previous.class_ids[at] != class_ids[was_test]) | np.any(
        previous_boxes[at] != boxes[was_test], axis=1
    )
    candidates = np.flatnonzero(was_test)[changed_in_test]
    allowed = _authoritative_labels(session, label_ids[candidates])
    held_back = [int(i) for i in candidates if int(label_ids[i]) not in allowed]
    if held_back:
        held = np.asarray(held_back, dtype=np.int64)
        class_ids[held] = previous.class_ids[position[held]]
        boxes[held] = previous_boxes[position[held]]
        label_ids[held] = previous.label_ids[position[held]]
    clock.lap("frozen_test")

    splits = assign_splits(
        group_ids=state.group_ids,
        class_ids=class_ids,
        inherited=inherited,
        ratios=ratios,
        seed=seed,
    )
    clock.lap("splits")

    records = _class_records(session)
    manifest = Manifest(
        image_ids=state.image_ids,
        class_ids=class_ids,
        boxes=boxes_from_ints(boxes),
        splits=splits,
        label_ids=label_ids,
        classes=records,
    )
    activated: list[str] = []
    if activate is not None:
        activated = list(activate(session, manifest.per_class_split_counts()))
        if activated:
            records = _class_records(session)
    # Trailing removals (images in the parent, gone now) become tombstones.
    in_now = np.isin(previous.image_ids, state.image_ids, assume_unique=True)
    removed_ids = previous.image_ids[~in_now]
    changed = ~known
    at = position[known]
    changed[known] = (
        (previous.class_ids[at] != class_ids[known])
        | np.any(previous_boxes[at] != boxes[known], axis=1)
        | (previous.splits[at] != splits[known])
        | (previous.label_ids[at] != label_ids[known])
    )
    n_changed_existing = int(np.count_nonzero(changed & known))
    delta_size = int(np.count_nonzero(changed)) + len(removed_ids)
    depth = 0 if parent is None else parent.depth + 1
    is_full = (
        parent is None
        or depth >= CHECKPOINT_DEPTH
        or delta_size > CHECKPOINT_SHARE * max(len(state.image_ids), 1)
    )
    if is_full:
        depth = 0
    clock.lap("compare")

    number = 1 if parent is None else parent.number + 1
    mark = session.scalar(select(func.max(ClassChange.id))) or 0
    version = DatasetVersion(
        number=number,
        parent_id=None if parent is None else parent.id,
        author=author,
        author_id=author_id,
        message=message,
        created_at=now or datetime.now(UTC),
        manifest_hash=_manifest_hash(session, state.image_ids, class_ids, boxes, splits, records),
        item_count=len(state.image_ids),
        class_count=len(records),
        split_counts={
            name: int(np.count_nonzero(splits == s)) for s, name in enumerate(SPLIT_NAMES)
        },
        settings={
            "ratios": {"train": ratios.train, "validation": ratios.validation, "test": ratios.test},
            "seed": seed,
        },
        is_full=is_full,
        depth=depth,
        class_change_mark=int(mark),
    )
    session.add(version)
    session.flush()
    clock.lap("hash")
    for record in records:
        session.add(
            DatasetClass(
                version_id=version.id,
                class_id=record.class_id,
                slug=record.slug,
                display_name=record.display_name,
                status=record.status,
                aliases=[list(alias) for alias in record.aliases],
                latitude=record.latitude,
                longitude=record.longitude,
            )
        )
    write = np.ones(len(state.image_ids), dtype=bool) if is_full else changed
    _write_entries(
        session,
        version.id,
        image_ids=state.image_ids[write],
        class_ids=class_ids[write],
        boxes=boxes[write],
        splits=splits[write],
        label_ids=label_ids[write],
        removed=np.zeros(0, dtype=np.int64) if is_full else removed_ids,
    )
    session.flush()
    clock.lap("write")
    return SnapshotResult(
        version=version,
        added=int(np.count_nonzero(~known)),
        removed=len(removed_ids),
        changed=n_changed_existing,
        held_back=[int(state.image_ids[i]) for i in held_back],
        activated=activated,
        timings=timings,
    )


def _lock_snapshots(session: Session) -> None:
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(hashtext('dataset_snapshot'))"))


def _write_entries(
    session: Session,
    version_id: int,
    *,
    image_ids: NDArray[np.int64],
    class_ids: NDArray[np.int64],
    boxes: NDArray[np.int64],
    splits: NDArray[np.int8],
    label_ids: NDArray[np.int64],
    removed: NDArray[np.int64],
) -> None:
    n, k = len(image_ids), len(removed)
    all_ids = np.concatenate([image_ids, removed])
    tomb = np.r_[np.zeros(n, dtype=bool), np.ones(k, dtype=bool)]
    no_box = np.r_[boxes[:, 0] < 0, np.ones(k, dtype=bool)]
    box_values = np.vstack([boxes, np.zeros((k, 4), dtype=np.int64)]).astype(np.float64) / 100
    labels = np.r_[label_ids, np.full(k, -1, dtype=np.int64)]
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        columns = [
            Column("version_id", "int4", np.full(n + k, version_id, dtype=np.int64)),
            Column("image_id", "int4", all_ids),
            Column("class_id", "int4", np.r_[class_ids, np.zeros(k, dtype=np.int64)], tomb),
            *(
                Column(f"box_{corner}", "float8", box_values[:, j], no_box)
                for j, corner in enumerate(("x_min", "y_min", "x_max", "y_max"))
            ),
            Column("split", "int2", np.r_[splits.astype(np.int64), np.zeros(k, np.int64)], tomb),
            Column("label_id", "int4", labels, labels < 0),
        ]
        raw = connection.connection.driver_connection
        with raw.cursor() as cursor:  # type: ignore[union-attr]
            copy_in(cursor, "dataset_entries", columns, n + k)
        return
    rows = [
        {
            "v": version_id,
            "i": int(all_ids[r]),
            "c": None if tomb[r] else int(class_ids[r]),
            "x0": None if no_box[r] else float(box_values[r, 0]),
            "y0": None if no_box[r] else float(box_values[r, 1]),
            "x1": None if no_box[r] else float(box_values[r, 2]),
            "y1": None if no_box[r] else float(box_values[r, 3]),
            "s": None if tomb[r] else int(splits[r]),
            "l": None if labels[r] < 0 else int(labels[r]),
        }
        for r in range(n + k)
    ]
    if rows:
        connection.execute(
            text(
                "INSERT INTO dataset_entries (version_id, image_id, class_id, box_x_min,"
                " box_y_min, box_x_max, box_y_max, split, label_id)"
                " VALUES (:v, :i, :c, :x0, :y0, :x1, :y1, :s, :l)"
            ),
            rows,
        )


def _manifest_hash(
    session: Session,
    image_ids: NDArray[np.int64],
    class_ids: NDArray[np.int64],
    boxes: NDArray[np.int64],
    splits: NDArray[np.int8],
    classes: tuple[ClassRecord, ...],
) -> str:
    """SHA-256 of the manifest in a canonical form that names images by content.

    Entries are ordered by the image's SHA-256 and carry the class slug, the
    box in centi-pixels and the split; then the class list. The same data in
    another database hashes the same.
    """
    digest = hashlib.sha256()
    digest.update(b"landmark-curation manifest 1\n")
    if len(image_ids):
        shas = _image_shas(session, image_ids)
        slugs = {c.class_id: c.slug for c in classes}
        slug_index = {cid: i for i, cid in enumerate(sorted(slugs, key=lambda c: slugs[c]))}
        class_index = np.array([slug_index[int(c)] for c in class_ids], dtype=np.int64)
        order = np.argsort(shas, kind="stable")
        record = np.zeros(
            len(image_ids),
            dtype=[("sha", "S64"), ("cls", "<i8"), ("box", "<i8", (4,)), ("split", "i1")],
        )
        record["sha"] = shas[order]
        record["cls"] = class_index[order]
        record["box"] = boxes[order]
        record["split"] = splits[order]
        digest.update(record.tobytes())
        digest.update("\n".join(sorted(slugs.values())).encode())
    for c in sorted(classes, key=lambda c: c.slug):
        digest.update(repr((c.slug, c.display_name, c.status, c.aliases)).encode())
    return digest.hexdigest()


def _image_shas(session: Session, image_ids: NDArray[np.int64]) -> NDArray[np.bytes_]:
    """The SHA-256 hex of each image, aligned with ``image_ids`` (sorted ascending)."""
    rows = session.execute(select(Image.id, Image.sha256).order_by(Image.id)).all()
    ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    shas = np.array([r[1] for r in rows], dtype="S64")
    return shas[np.searchsorted(ids, image_ids)]


class _Clock:
    def __init__(self, timings: dict[str, float]) -> None:
        import time

        self._time = time.perf_counter
        self._last = self._time()
        self._timings = timings

    def lap(self, name: str) -> None:
        now = self._time()
        self._timings[name] = round(now - self._last, 3)
        self._last = now
