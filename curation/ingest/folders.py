"""Turn folders on disk into ingestion items.

Walks are sorted (stable order, stable reports), never follow symbolic links,
and skip hidden files. Stored files are named by hash; the paths read here are
recorded only as provenance.
"""

from __future__ import annotations

import csv
import os
import unicodedata
from collections.abc import Iterator
from pathlib import Path

from curation.exceptions import RejectedInput
from curation.ingest.records import IngestItem, IngestSummary, LabelSpec, SourceSpec
from curation.models import SourceKind
from curation.validation import validate_relative_path, validate_source_url

SPLIT_NAMES = {
    "train": "train",
    "training": "train",
    "val": "validation",
    "valid": "validation",
    "validation": "validation",
    "dev": "validation",
    "test": "test",
    "testing": "test",
}
ANNOTATION_SUFFIXES = {".json"}


def walk_files(root: Path) -> Iterator[Path]:
    """Every regular file and symbolic link under ``root``, sorted, hidden ones skipped."""
    for directory, subdirs, files in os.walk(root, followlinks=False):
        subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith("."):
                yield Path(directory) / name


def relative_name(root: Path, path: Path) -> str:
    return unicodedata.normalize("NFC", path.relative_to(root).as_posix())


def _require_folder(root: Path) -> None:
    if not root.exists():
        raise RejectedInput(f"folder not found: {root}")
    if not root.is_dir():
        raise RejectedInput(f"not a folder: {root}")


def _symlink_rejection(path: Path) -> str | None:
    return "symbolic links are not followed" if path.is_symlink() else None


def crawl_items(
    root: Path,
    *,
    crawler: str,
    manifest: Path | None,
    summary: IngestSummary,
) -> Iterator[IngestItem]:
    """Items for a folder of crawled images; ``manifest`` maps file paths to source URLs."""
    _require_folder(root)
    urls = read_manifest(manifest, root, summary) if manifest is not None else {}
    seen: set[str] = set()
    skip = {manifest.resolve()} if manifest is not None else set()
    for path in walk_files(root):
        if path.resolve() in skip:
            continue
        name = relative_name(root, path)
        seen.add(name)
        source = SourceSpec(
            kind=SourceKind.CRAWL,
            crawler=crawler,
            source_url=urls.get(name),
            original_path=name,
            original_filename=path.name,
        )
        yield IngestItem(
            name=name, source=source, path=path, rejected_reason=_symlink_rejection(path)
        )
    for missing in sorted(set(urls) - seen):
        summary.manifest_problems.append(
            {"path": missing, "reason": "listed in the manifest but not found in the folder"}
        )


def read_manifest(manifest: Path, root: Path, summary: IngestSummary) -> dict[str, str]:
    """Read a CSV with columns ``path`` (or ``filename``) and ``url`` (or ``source_url``)."""
    if not manifest.is_file():
        raise RejectedInput(f"manifest not found: {manifest}")
    try:
        return _read_manifest_rows(manifest, summary)
    except UnicodeDecodeError:
        raise RejectedInput(f"manifest {manifest.name} is not UTF-8 text") from None
    except csv.Error as error:
        raise RejectedInput(f"manifest {manifest.name}: {error}") from None


def _read_manifest_rows(manifest: Path, summary: IngestSummary) -> dict[str, str]:
    urls: dict[str, str] = {}
    with manifest.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        fields = {f.strip().lower(): f for f in reader.fieldnames or []}
        path_field = fields.get("path") or fields.get("filename") or fields.get("file")
        url_field = fields.get("url") or fields.get("source_url")
        if path_field is None or url_field is None:
            raise RejectedInput(
                "manifest needs a 'path' (or 'filename') column"
                " and a 'url' (or 'source_url') column"
            )
        for line, row in enumerate(reader, start=2):
            raw_path, raw_url = (
                (row.get(path_field) or "").strip(),
                (row.get(url_field) or "").strip(),
            )
            try:
                path = validate_relative_path(raw_path)
                url = validate_source_url(raw_url)
            except RejectedInput as problem:
                summary.manifest_problems.append(
                    {"path": f"{manifest.name}:{line}", "reason": problem.reason}
                )
                continue
            urls[path] = url
    return urls


def labelled_tree_items(
    root: Path, *, dataset_name: str, summary: IngestSummary
) -> Iterator[IngestItem]:
    """Items for ``root/<class>/...`` or ``root/<split>/<class>/...``.

    The split layout is the one ``image_dataset_from_directory`` and
    splitfolders use; it is recognised when every top-level folder is a
    split name. The original split is kept as provenance only: the platform
    makes its own leak-free splits.
    """
    _require_folder(root)
    top = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    split_layout = bool(top) and all(p.name.lower() in SPLIT_NAMES for p in top)
    origin = f"import:{dataset_name}"
    for path in walk_files(root):
        name = relative_name(root, path)
        parts = name.split("/")
        split: str | None = None
        if split_layout and len(parts) > 1:  # a file beside the split folders has none
            split = SPLIT_NAMES[parts[0].lower()]
            parts = parts[1:]
        source = SourceSpec(
            kind=SourceKind.IMPORT,
            dataset_name=dataset_name,
            original_path=name,
            original_split=split,
            original_filename=path.name,
            original_class_name=parts[0] if len(parts) > 1 else None,
        )
        if len(parts) < 2:
            yield IngestItem(
                name=name,
                source=source,
                path=path,
                rejected_reason="not inside a class folder",
            )
            continue
        yield IngestItem(
            name=name,
            source=source,
            path=path,
            label=LabelSpec(class_name=parts[0], origin=origin),
            rejected_reason=_symlink_rejection(path),
        )
