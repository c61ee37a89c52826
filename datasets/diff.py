"""What changed between two dataset versions: images, labels, boxes, splits and classes.

Both manifests are read whole (arrays) and aligned by image id; only the
changed rows are looked up further (who set the new label, and why), so a
diff of two million-item versions costs two reads and a few array passes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import select
from sqlalchemy.orm import Session

from curation.models import ClassChange, DatasetVersion, Label, ReviewDecision, User
from datasets.manifest import SPLIT_NAMES, ClassRecord, Manifest
from datasets.versions import load_manifest, version_dict

# Rows listed per kind of change; the counts are always complete.
DEFAULT_LIMIT = 1000


@dataclass(frozen=True)
class LabelChange:
    image_id: int
    from_class: str
    to_class: str
    by: str
    why: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "image_id": self.image_id,
            "from": self.from_class,
            "to": self.to_class,
            "by": self.by,
            "why": self.why,
        }


@dataclass(frozen=True)
class VersionDiff:
    old: DatasetVersion
    new: DatasetVersion
    added: NDArray[np.int64]
    removed: NDArray[np.int64]
    relabelled: int
    label_changes: list[LabelChange]
    boxes_changed: NDArray[np.int64]
    split_moves: list[tuple[int, str, str]]
    n_split_moves: int
    classes_added: list[ClassRecord]
    classes_removed: list[ClassRecord]
    classes_renamed: list[tuple[ClassRecord, ClassRecord]]
    classes_status: list[tuple[ClassRecord, str, str]]
    class_changes: list[dict[str, Any]] = field(default_factory=list)
    limit: int = DEFAULT_LIMIT

    def as_dict(self) -> dict[str, Any]:
        limit = self.limit
        return {
            "from": version_dict(self.old),
            "to": version_dict(self.new),
            "counts": {
                "added": len(self.added),
                "removed": len(self.removed),
                "relabelled": self.relabelled,
                "boxes_changed": len(self.boxes_changed),
                "split_moves": self.n_split_moves,
            },
            "added": self.added[:limit].tolist(),
            "removed": self.removed[:limit].tolist(),
            "label_changes": [c.as_dict() for c in self.label_changes],
            "boxes_changed": self.boxes_changed[:limit].tolist(),
            "split_moves": [{"image_id": i, "from": a, "to": b} for i, a, b in self.split_moves],
            "classes": {
                "added": [c.as_dict() for c in self.classes_added],
                "removed": [c.as_dict() for c in self.classes_removed],
                "renamed": [
                    {"id": a.class_id, "slug": b.slug, "from": a.display_name, "to": b.display_name}
                    for a, b in self.classes_renamed
                ],
                "status": [
                    {"id": c.class_id, "slug": c.slug, "from": a, "to": b}
                    for c, a, b in self.classes_status
                ],
                "history": self.class_changes,
            },
            "listed_per_kind": limit,
        }

    def as_text(self) -> str:
        lines = [
            f"v{self.old.number} -> v{self.new.number}"
            f"  ({self.old.item_count} -> {self.new.item_count} images)",
            f"  images added: {len(self.added)}, removed: {len(self.removed)},"
            f" relabelled: {self.relabelled}, boxes changed: {len(self.boxes_changed)},"
            f" split moves: {self.n_split_moves}",
        ]
        for c in self.classes_added:
            lines.append(f"  + class {c.slug} ({c.display_name}, {c.status})")
        for c in self.classes_removed:
            lines.append(f"  - class {c.slug} ({c.display_name})")
        for a, b in self.classes_renamed:
            lines.append(f"  ~ class {b.slug}: renamed {a.display_name!r} -> {b.display_name!r}")
        for record, before, after in self.classes_status:
            lines.append(f"  ~ class {record.slug}: {before} -> {after}")
        for step in self.class_changes:
            reason = f" ({step['reason']})" if step["reason"] else ""
            lines.append(
                f"  * {step['kind']} {step['slug']} by {step['actor']}{reason} {step['details']}"
            )
        for label in self.label_changes:
            lines.append(
                f"  label image {label.image_id}: {label.from_class} -> {label.to_class}"
                f" by {label.by} ({label.why})"
            )
        if self.relabelled > len(self.label_changes):
            lines.append(f"  ... {self.relabelled - len(self.label_changes)} more label changes")
        for image_id, split_from, split_to in self.split_moves:
            lines.append(f"  split image {image_id}: {split_from} -> {split_to}")
        return "\n".join(lines)


def _align(old: Manifest, new: Manifest) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Positions in ``old`` and ``new`` of the images both hold."""
    _common, at_old, at_new = np.intersect1d(
        old.image_ids, new.image_ids, assume_unique=True, return_indices=True
    )
    return at_old.astype(np.int64), at_new.astype(np.int64)


def diff_versions(
    session: Session, old: DatasetVersion, new: DatasetVersion, *, limit: int = DEFAULT_LIMIT
) -> VersionDiff:
    a, b = load_manifest(session, old), load_manifest(session, new)
    at_a, at_b = _align(a, b)
    added = np.setdiff1d(b.image_ids, a.image_ids, assume_unique=True)
    removed = np.setdiff1d(a.image_ids, b.image_ids, assume_unique=True)
    class_changed = a.class_ids[at_a] != b.class_ids[at_b]
    box_a, box_b = a.boxes[at_a], b.boxes[at_b]
    box_changed = ~np.all((box_a == box_b) | (np.isnan(box_a) & np.isnan(box_b)), axis=1)
    split_changed = a.splits[at_a] != b.splits[at_b]
    relabelled = np.flatnonzero(class_changed)
    moved = np.flatnonzero(split_changed)

    names_a = {c.class_id: c.slug for c in a.classes}
    names_b = {c.class_id: c.slug for c in b.classes}
    shown = relabelled[:limit]
    why = _label_reasons(session, b.label_ids[at_b[shown]])
    label_changes = [
        LabelChange(
            image_id=int(b.image_ids[at_b[k]]),
            from_class=names_a.get(int(a.class_ids[at_a[k]]), str(a.class_ids[at_a[k]])),
            to_class=names_b.get(int(b.class_ids[at_b[k]]), str(b.class_ids[at_b[k]])),
            by=why.get(int(b.label_ids[at_b[k]]), ("unknown", ""))[0],
            why=why.get(int(b.label_ids[at_b[k]]), ("", "unknown"))[1],
        )
        for k in shown
    ]
    split_moves = [
        (
            int(b.image_ids[at_b[k]]),
            SPLIT_NAMES[int(a.splits[at_a[k]])],
            SPLIT_NAMES[int(b.splits[at_b[k]])],
        )
        for k in moved[:limit]
    ]
    old_classes = {c.class_id: c for c in a.classes}
    new_classes = {c.class_id: c for c in b.classes}
    both = sorted(old_classes.keys() & new_classes.keys())
    return VersionDiff(
        old=old,
        new=new,
        added=added,
        removed=removed,
        relabelled=len(relabelled),
        label_changes=label_changes,
        boxes_changed=b.image_ids[at_b[box_changed & ~class_changed]],
        split_moves=split_moves,
        n_split_moves=len(moved),
        classes_added=[new_classes[c] for c in sorted(new_classes.keys() - old_classes.keys())],
        classes_removed=[old_classes[c] for c in sorted(old_classes.keys() - new_classes.keys())],
        classes_renamed=[
            (old_classes[c], new_classes[c])
            for c in both
            if old_classes[c].display_name != new_classes[c].display_name
        ],
        classes_status=[
            (new_classes[c], old_classes[c].status, new_classes[c].status)
            for c in both
            if old_classes[c].status != new_classes[c].status
        ],
        class_changes=_class_history(session, old, new, {**old_classes, **new_classes}),
        limit=limit,
    )


def _label_reasons(session: Session, label_ids: NDArray[np.int64]) -> dict[int, tuple[str, str]]:
    """label id -> (who, why): the reviewer and their decision, or the label's origin."""
    ids = sorted({int(i) for i in label_ids if i >= 0})
    if not ids:
        return {}
    out: dict[int, tuple[str, str]] = {}
    rows = session.execute(
        select(Label.id, Label.origin, User.username)
        .outerjoin(User, User.id == Label.author_id)
        .where(Label.id.in_(ids))
    ).all()
    for label_id, origin, username in rows:
        out[int(label_id)] = (username or origin, origin)
    wanted = set(ids)
    images = session.scalars(select(Label.image_id).where(Label.id.in_(ids))).all()
    decisions = session.execute(
        select(ReviewDecision.label_ids, ReviewDecision.action, ReviewDecision.outcome).where(
            ReviewDecision.undone_at.is_(None), ReviewDecision.image_id.in_(sorted(set(images)))
        )
    )
    for label_ids_of_decision, action, outcome in decisions:
        for label_id in label_ids_of_decision or []:
            if label_id in wanted and label_id in out:
                out[label_id] = (out[label_id][0], f"review: {action}, {outcome}")
    return out


def _class_history(
    session: Session,
    old: DatasetVersion,
    new: DatasetVersion,
    classes: dict[int, ClassRecord],
) -> list[dict[str, Any]]:
    low, high = sorted((old.class_change_mark, new.class_change_mark))
    changes = session.scalars(
        select(ClassChange)
        .where(ClassChange.id > low, ClassChange.id <= high)
        .order_by(ClassChange.id)
    )
    return [
        {
            "kind": change.kind,
            "class_id": change.class_id,
            "slug": classes[change.class_id].slug
            if change.class_id in classes
            else str(change.class_id),
            "details": change.details,
            "actor": change.actor,
            "reason": change.reason,
            "at": change.created_at.isoformat(),
        }
        for change in changes
    ]
