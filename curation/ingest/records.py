"""What an ingestion is asked to record, and what it reports back."""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from curation.geometry import BoxFormat, BoxUnits
from curation.models import SourceKind


@dataclass(frozen=True)
class SourceSpec:
    """Where an image came from. Only the fields of its ``kind`` are set."""

    kind: SourceKind
    original_filename: str | None = None
    reporter_id: str | None = None
    claimed_class_name: str | None = None
    predicted_class_name: str | None = None
    note: str | None = None
    client_report_id: str | None = None
    crawler: str | None = None
    source_url: str | None = None
    dataset_name: str | None = None
    original_path: str | None = None
    original_split: str | None = None
    original_class_name: str | None = None

    def identity_key(self) -> str:
        """Hash of what makes this source the same one when it arrives again."""
        if self.kind is SourceKind.CRAWL:
            parts: tuple[str | None, ...] = (self.crawler, self.source_url, self.original_path)
        elif self.kind is SourceKind.IMPORT:
            parts = (self.dataset_name, self.original_path)
        else:
            parts = (
                self.reporter_id,
                self.claimed_class_name,
                self.predicted_class_name,
                self.note,
                self.client_report_id,
            )
        text = "\x1f".join([self.kind.value, *(p or "" for p in parts)])
        return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class LabelSpec:
    """A label that arrives with an image (from a labelled set).

    ``box`` is on the file as it arrived (before EXIF orientation), written
    in ``box_format`` and ``box_units``.
    """

    class_name: str
    origin: str
    box: tuple[float, float, float, float] | None = None
    box_format: BoxFormat = "xyxy"
    box_units: BoxUnits = "pixels"


@dataclass(frozen=True)
class IngestItem:
    """One file to ingest: read from ``path`` or given as ``data``."""

    name: str
    source: SourceSpec
    path: Path | None = None
    data: bytes | None = None
    label: LabelSpec | None = None
    # Set when the item is refused before its bytes are read (e.g. its
    # JSON annotation is missing): the reason is reported, nothing stored.
    rejected_reason: str | None = None


class Outcome(enum.StrEnum):
    NEW = "new"
    EXACT_DUPLICATE = "exact_duplicate"
    ALREADY_PRESENT = "already_present"


class LabelOutcome(enum.StrEnum):
    ADDED = "added"
    CHANGED = "changed"
    UNCHANGED = "unchanged"
    CONFLICT = "conflict"


@dataclass(frozen=True)
class ItemResult:
    outcome: Outcome
    image_id: int
    near_duplicate: bool = False
    label: LabelOutcome | None = None
    created_class: str | None = None


@dataclass
class IngestSummary:
    files: int = 0
    ingested: int = 0
    exact_duplicates: int = 0
    already_present: int = 0
    near_duplicates: int = 0
    labels_added: int = 0
    labels_changed: int = 0
    classes_created: list[str] = field(default_factory=list)
    rejected: list[dict[str, str]] = field(default_factory=list)
    label_conflicts: list[dict[str, str]] = field(default_factory=list)
    manifest_problems: list[dict[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    def record(self, item: IngestItem, result: ItemResult) -> None:
        if result.outcome is Outcome.NEW:
            self.ingested += 1
        elif result.outcome is Outcome.EXACT_DUPLICATE:
            self.exact_duplicates += 1
        else:
            self.already_present += 1
        self.near_duplicates += int(result.near_duplicate)
        if result.label is LabelOutcome.ADDED:
            self.labels_added += 1
        elif result.label is LabelOutcome.CHANGED:
            self.labels_changed += 1
        elif result.label is LabelOutcome.CONFLICT and item.label is not None:
            self.label_conflicts.append(
                {"path": item.name, "reason": f"already labelled otherwise in {item.label.origin}"}
            )
        if result.created_class:
            self.classes_created.append(result.created_class)

    def reject(self, name: str, reason: str) -> None:
        self.rejected.append({"path": name, "reason": reason})

    def as_dict(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "ingested": self.ingested,
            "exact_duplicates": self.exact_duplicates,
            "already_present": self.already_present,
            "near_duplicates": self.near_duplicates,
            "rejected_count": len(self.rejected),
            "labels_added": self.labels_added,
            "labels_changed": self.labels_changed,
            "classes_created": self.classes_created,
            "rejected": self.rejected,
            "label_conflicts": self.label_conflicts,
            "manifest_problems": self.manifest_problems,
            "seconds": round(self.seconds, 3),
        }
