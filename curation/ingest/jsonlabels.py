"""Images that each come with a JSON file beside them giving class and box.

The seed landmark app's data came this way from AI-Hub. The mapping says
which keys hold the class name and the box, and how the box is written, so
other vendors' per-image JSON imports too. Keys are dotted paths; a number
picks a list element (``annotations.0.bbox``). Several candidate paths may be
given: the first one present wins.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from curation.exceptions import RejectedInput
from curation.geometry import BoxFormat, BoxUnits
from curation.ingest.folders import relative_name, walk_files
from curation.ingest.records import IngestItem, IngestSummary, LabelSpec, SourceSpec
from curation.models import SourceKind

MAX_JSON_BYTES = 2 * 1024 * 1024
_MISSING = object()


@dataclass(frozen=True)
class JsonMapping:
    class_keys: tuple[str, ...]
    box_keys: tuple[str, ...] = ()
    box_format: BoxFormat = "xywh"
    box_units: BoxUnits = "pixels"
    # When the box is an object rather than a list: its four keys, in the
    # order of ``box_format`` (x, y, width, height or x_min, y_min, x_max, y_max).
    box_fields: tuple[str, str, str, str] | None = None
    box_required: bool = False
    notes: str = field(default="", compare=False)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> JsonMapping:
        def keys(name: str) -> tuple[str, ...]:
            value = raw.get(name, [])
            if isinstance(value, str):
                return (value,)
            if isinstance(value, list) and all(isinstance(v, str) for v in value):
                return tuple(value)
            raise RejectedInput(f"mapping: {name!r} must be a string or a list of strings")

        unknown = set(raw) - {
            "class_key",
            "box_key",
            "box_format",
            "box_units",
            "box_fields",
            "box_required",
            "notes",
        }
        if unknown:
            raise RejectedInput(f"mapping: unknown keys {sorted(unknown)}")
        class_keys = keys("class_key")
        if not class_keys:
            raise RejectedInput("mapping: 'class_key' is required")
        box_format = raw.get("box_format", "xywh")
        box_units = raw.get("box_units", "pixels")
        if box_format not in ("xywh", "xyxy"):
            raise RejectedInput("mapping: 'box_format' must be 'xywh' or 'xyxy'")
        if box_units not in ("pixels", "normalized"):
            raise RejectedInput("mapping: 'box_units' must be 'pixels' or 'normalized'")
        box_fields = raw.get("box_fields")
        if box_fields is not None and (
            not isinstance(box_fields, list)
            or len(box_fields) != 4
            or not all(isinstance(f, str) for f in box_fields)
        ):
            raise RejectedInput("mapping: 'box_fields' must be a list of four key names")
        return cls(
            class_keys=class_keys,
            box_keys=keys("box_key"),
            box_format=box_format,
            box_units=box_units,
            box_fields=cast(tuple[str, str, str, str], tuple(box_fields)) if box_fields else None,
            box_required=bool(raw.get("box_required", False)),
        )

    @classmethod
    def load(cls, path: Path) -> JsonMapping:
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise RejectedInput(f"mapping file {path.name}: {error}") from None
        if not isinstance(raw, dict):
            raise RejectedInput(f"mapping file {path.name} must hold a JSON object")
        return cls.from_dict(raw)


# The AI-Hub preset. The landmark set's own schema could not be checked from
# this workplace, so it tries the keys AI-Hub's image sets are known to use in
# their COCO-like per-image files, then common alternatives; a site whose
# files differ passes --mapping with its own keys (see the README).
PRESETS: dict[str, JsonMapping] = {
    "aihub": JsonMapping(
        class_keys=(
            "annotations.0.category_name",
            "annotations.0.landmark_name",
            "annotations.0.label",
            "annotation.category_name",
            "landmark_name",
            "class_name",
            "category_name",
            "label",
        ),
        box_keys=("annotations.0.bbox", "annotation.bbox", "bbox"),
        box_format="xywh",
        box_units="pixels",
    ),
    "coco-like": JsonMapping(
        class_keys=("annotations.0.category_name", "category_name"),
        box_keys=("annotations.0.bbox",),
        box_format="xywh",
        box_units="pixels",
    ),
}


def lookup(document: Any, dotted: str) -> Any:
    value = document
    for part in dotted.split("."):
        if isinstance(value, dict):
            value = value.get(part, _MISSING)
        elif isinstance(value, list) and part.isdigit():
            index = int(part)
            value = value[index] if index < len(value) else _MISSING
        else:
            return _MISSING
        if value is _MISSING:
            return _MISSING
    return value


def _first(document: Any, keys: Sequence[str]) -> tuple[str, Any] | None:
    for key in keys:
        value = lookup(document, key)
        if value is not _MISSING and value is not None:
            return key, value
    return None


def parse_annotation(
    raw: bytes, mapping: JsonMapping
) -> tuple[str, tuple[float, float, float, float] | None]:
    """Return the class name and the box (in the mapping's own convention, not yet in pixels)."""
    if len(raw) > MAX_JSON_BYTES:
        raise RejectedInput(f"JSON annotation larger than {MAX_JSON_BYTES} bytes")
    try:
        document = json.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise RejectedInput("malformed JSON annotation: not UTF-8 text") from None
    except json.JSONDecodeError as error:
        raise RejectedInput(
            f"malformed JSON annotation: {error.msg} at line {error.lineno}"
        ) from None
    except RecursionError:  # "[[[[..." a million deep: refuse the file, not the batch
        raise RejectedInput("malformed JSON annotation: nested too deeply") from None
    found = _first(document, mapping.class_keys)
    if found is None or not isinstance(found[1], str) or not found[1].strip():
        raise RejectedInput(
            f"JSON annotation has no class name under {' or '.join(mapping.class_keys)}"
        )
    class_name = found[1].strip()
    box_found = _first(document, mapping.box_keys) if mapping.box_keys else None
    if box_found is None:
        if mapping.box_required:
            raise RejectedInput(f"JSON annotation has no box under {' or '.join(mapping.box_keys)}")
        return class_name, None
    key, value = box_found
    if isinstance(value, dict) and mapping.box_fields is not None:
        value = [value.get(f) for f in mapping.box_fields]
    if isinstance(value, str):
        value = [p for p in value.replace(",", " ").split()]
    if not isinstance(value, list) or len(value) != 4:
        raise RejectedInput(f"JSON annotation box under {key!r} is not four numbers")
    try:
        numbers = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise RejectedInput(f"JSON annotation box under {key!r} is not four numbers") from None
    if any(n != n or n in (float("inf"), float("-inf")) for n in numbers):
        raise RejectedInput(f"JSON annotation box under {key!r} holds a non-finite number")
    return class_name, cast(tuple[float, float, float, float], numbers)


def json_labelled_items(
    root: Path,
    *,
    dataset_name: str,
    mapping: JsonMapping,
    summary: IngestSummary,
) -> Iterator[IngestItem]:
    """Items for a folder where ``photo.jpg`` sits beside ``photo.json``."""
    if not root.is_dir():
        raise RejectedInput(f"folder not found: {root}")
    origin = f"import:{dataset_name}"
    for path in walk_files(root):
        if path.suffix.lower() in {".json"}:
            if not _has_image_beside(path):
                summary.manifest_problems.append(
                    {
                        "path": relative_name(root, path),
                        "reason": "JSON annotation without an image beside it",
                    }
                )
            continue
        name = relative_name(root, path)
        source = SourceSpec(
            kind=SourceKind.IMPORT,
            dataset_name=dataset_name,
            original_path=name,
            original_filename=path.name,
        )
        annotation = _annotation_path(path)
        if annotation is None:
            yield IngestItem(
                name=name,
                source=source,
                path=path,
                rejected_reason=f"no JSON annotation beside it (expected {path.stem}.json)",
            )
            continue
        try:
            class_name, box_values = parse_annotation(annotation.read_bytes(), mapping)
        except RejectedInput as problem:
            yield IngestItem(name=name, source=source, path=path, rejected_reason=problem.reason)
            continue
        yield IngestItem(
            name=name,
            source=source,
            path=path,
            label=LabelSpec(
                class_name=class_name,
                origin=origin,
                box=box_values,
                box_format=mapping.box_format,
                box_units=mapping.box_units,
            ),
        )


def _has_image_beside(annotation: Path) -> bool:
    stem = annotation.with_suffix("")
    if stem.suffix and stem.exists():  # photo.jpg.json
        return True
    return any(
        p.suffix.lower() != ".json"
        for p in annotation.parent.glob(glob_escape(annotation.stem) + ".*")
    )


def glob_escape(text: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in text)


def _annotation_path(image: Path) -> Path | None:
    for candidate in (image.with_suffix(".json"), image.with_name(image.name + ".json")):
        if candidate.is_file() and not candidate.is_symlink():
            return candidate
    return None
