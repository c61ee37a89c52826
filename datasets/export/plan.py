"""What an export (or a ``tf.data`` pipeline) reads: a version's rows in their stable order.

:func:`plan_export` joins a :class:`~datasets.manifest.Manifest` with the
stored images' facts (hash, storage key, size, format) in one short read and
returns an :class:`ExportPlan`, a plain value: the session can be closed
before a single pixel is touched.

Order. Rows are sorted by (split, class slug, image SHA-256): train, then
validation, then test; within a split by class slug; within a class by hash.
It depends only on the version's content, never on database ids or on the
order rows were read, so two exports of the same version list the same files
in the same order, and predictions written against one line up with it. It
is also the order in which ``keras.utils.image_dataset_from_directory``
(``shuffle=False``) lists a folder export's split.

Names. A file is named after the first 16 hex digits of its image's SHA-256
plus the stored extension (``.jpg`` or ``.png``): the same image has the same
name in every version and every format, cropped or not. Where two images of
one plan share those 16 digits (about one in 10^10 at a million images) both
get the full 64 digits, so no two rows ever share a path.

Class indices. :func:`class_index` numbers the classes that have at least one
row, in slug order (Python string order, the order Keras gives folders). A
class with no row gets no index: a model could never learn it.

Boxes. A box is clipped to the image; a box with no area left inside it is
dropped (the row is kept as a box-less row) and reported in ``problems``.
The crop window of a box is its clipped corners rounded outwards to whole
pixels (floor of the minimum, ceiling of the maximum), so a crop never cuts
off part of the landmark and is at most one pixel wider each way than the box.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Final, Literal

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import select
from sqlalchemy.orm import Session

from curation.exceptions import NotFound, RejectedInput
from curation.models import ClassStatus, Image, Split
from datasets.manifest import SPLIT_NAMES, Manifest

ClassSelection = Literal["active", "all"]

NAME_DIGITS: Final = 16
_READ_CHUNK: Final = 5000
_SHA256: Final = re.compile(r"[0-9a-f]{64}")
# A slug is used as a folder name: one path component of word characters and
# hyphens (what ``curation.taxonomy.slugify`` produces), never "." or "..",
# never a separator, never hidden.
_SAFE_COMPONENT: Final = re.compile(r"[^\W_][\w-]{0,119}")
_EXTENSIONS: Final = {"jpeg": "jpg", "png": "png"}
# Rounding a corner outwards must not add a pixel for a float that is an
# integer up to representation error (boxes are stored in 1/100 px).
_EPSILON: Final = 1e-6


def safe_component(name: str, *, what: str) -> str:
    """``name`` if it is safe as one path component; ``RejectedInput`` otherwise."""
    if not _SAFE_COMPONENT.fullmatch(name):
        raise RejectedInput(f"{what} {name!r} cannot be used as a file or folder name")
    return name


def select_classes(manifest: Manifest, which: ClassSelection) -> Manifest:
    """The manifest restricted to active classes (``"active"``) or unchanged (``"all"``).

    Rows of a dropped class go too; the class list keeps only the kept classes.
    """
    if which == "all":
        return manifest
    if which != "active":
        raise ValueError(f"unknown class selection {which!r}")
    kept = tuple(c for c in manifest.classes if c.status == ClassStatus.ACTIVE.value)
    kept_ids = np.asarray([c.class_id for c in kept], dtype=np.int64)
    rows = np.isin(manifest.class_ids, kept_ids)
    return Manifest(
        image_ids=manifest.image_ids[rows],
        class_ids=manifest.class_ids[rows],
        boxes=manifest.boxes[rows],
        splits=manifest.splits[rows],
        label_ids=manifest.label_ids[rows],
        classes=kept,
    )


def class_index(manifest: Manifest) -> dict[str, int]:
    """Class slug -> label index, for the classes with at least one row, in slug order.

    Save it with a model trained on the version: index ``i`` of the model's
    output is the class whose slug is ``i``-th here.
    """
    present = set(np.unique(manifest.class_ids).tolist())
    missing = present - {c.class_id for c in manifest.classes}
    if missing:
        raise RejectedInput(f"manifest rows name classes not in its class list: {sorted(missing)}")
    slugs = sorted(c.slug for c in manifest.classes if c.class_id in present)
    folded = [s.casefold() for s in slugs]
    if len(set(folded)) != len(folded):
        # On a case-insensitive disk two such folders would be one.
        raise RejectedInput("two classes have slugs that differ only in letter case")
    return {safe_component(slug, what="class slug"): i for i, slug in enumerate(slugs)}


@dataclass(frozen=True)
class ExportPlan:
    """A version's rows in export order, with what is needed to read each image.

    Every array has one entry per row, shape (n,) unless said. ``boxes``:
    float64 (n, 4) pixel corners (x_min, y_min, x_max, y_max) on the stored
    image, clipped to it, NaN rows where there is no box. ``class_indices``
    index ``class_slugs``. ``splits``: :class:`curation.models.Split` values.
    """

    class_slugs: tuple[str, ...]
    class_names: tuple[str, ...]  # display names, same order
    image_ids: NDArray[np.int64]
    class_indices: NDArray[np.int32]
    splits: NDArray[np.int8]
    boxes: NDArray[np.float64]
    widths: NDArray[np.int64]
    heights: NDArray[np.int64]
    sha256: tuple[str, ...]
    storage_keys: tuple[str, ...]
    stored_formats: tuple[str, ...]  # "jpeg" or "png"
    names: tuple[str, ...]  # file names, unique within the plan
    # What the caller says the rows are (e.g. {"version": "v3", "manifest_hash": ...});
    # written into the export's metadata.
    source: Mapping[str, Any] = field(default_factory=dict)
    # Rows left out, by reason (e.g. {"class_not_active": 12}).
    dropped: Mapping[str, int] = field(default_factory=dict)
    # Rows kept with a caveat, e.g. a box that lies outside its image.
    problems: tuple[Mapping[str, Any], ...] = ()

    def __len__(self) -> int:
        return len(self.names)

    @cached_property
    def has_box(self) -> NDArray[np.bool_]:
        """bool (n,): the row has a box (computed once; the plan never changes)."""
        return ~np.isnan(self.boxes[:, 0])

    def rows_in(self, split: Split | str | int) -> NDArray[np.int64]:
        """Row positions of ``split``, in export order."""
        value = split_value(split)
        return np.flatnonzero(self.splits == value).astype(np.int64)

    def crop_windows(self, *, crop: bool) -> NDArray[np.int64]:
        """(n, 4) int64 (left, top, right, bottom): the pixels each exported image holds.

        The whole image where ``crop`` is false or the row has no box;
        otherwise the box rounded outwards to whole pixels (always at least
        one pixel each way, never outside the image).
        """
        whole = np.stack(
            [np.zeros_like(self.widths), np.zeros_like(self.heights), self.widths, self.heights],
            axis=1,
        )
        if not crop or not len(self):
            return whole
        boxed = self.has_box
        boxes = np.where(boxed[:, None], self.boxes, 0.0)
        windows = np.stack(
            [
                np.floor(boxes[:, 0] + _EPSILON),
                np.floor(boxes[:, 1] + _EPSILON),
                np.ceil(boxes[:, 2] - _EPSILON),
                np.ceil(boxes[:, 3] - _EPSILON),
            ],
            axis=1,
        ).astype(np.int64)
        windows[:, 0:2] = np.clip(windows[:, 0:2], 0, whole[:, 2:4] - 1)
        windows[:, 2:4] = np.clip(windows[:, 2:4], windows[:, 0:2] + 1, whole[:, 2:4])
        return np.where(boxed[:, None], windows, whole)

    def exported_boxes(self, windows: NDArray[np.int64]) -> NDArray[np.float64]:
        """(n, 4) box corners on the exported image (the stored one cut to ``windows``),
        clipped to it, NaN rows where there is no box."""
        offsets = np.concatenate([windows[:, 0:2], windows[:, 0:2]], axis=1).astype(np.float64)
        sizes = (windows[:, 2:4] - windows[:, 0:2]).astype(np.float64)
        limits = np.concatenate([sizes, sizes], axis=1)
        # Clipped again: a corner rounded outwards can sit a hair outside the cut.
        boxes: NDArray[np.float64] = np.clip(self.boxes - offsets, 0.0, limits)
        return boxes

    def detection_boxes(self, windows: NDArray[np.int64]) -> NDArray[np.float64]:
        """Like :meth:`exported_boxes`, with the whole exported image where there is no box."""
        sizes = (windows[:, 2:4] - windows[:, 0:2]).astype(np.float64)
        whole = np.concatenate([np.zeros_like(sizes), sizes], axis=1)
        return np.where(self.has_box[:, None], self.exported_boxes(windows), whole)

    def split_counts(self) -> dict[str, int]:
        counts = np.bincount(self.splits.astype(np.int64), minlength=len(SPLIT_NAMES))
        return {name: int(n) for name, n in zip(SPLIT_NAMES, counts, strict=True)}

    def class_split_counts(self) -> dict[str, dict[str, int]]:
        """slug -> {"train": n, "validation": n, "test": n}, every class of the plan."""
        table = np.zeros((len(self.class_slugs), len(SPLIT_NAMES)), dtype=np.int64)
        np.add.at(table, (self.class_indices, self.splits.astype(np.int64)), 1)
        return {
            slug: dict(zip(SPLIT_NAMES, row.tolist(), strict=True))
            for slug, row in zip(self.class_slugs, table, strict=True)
        }


def plan_export(
    session: Session,
    manifest: Manifest,
    *,
    classes: ClassSelection = "active",
    source: Mapping[str, Any] | None = None,
) -> ExportPlan:
    """Order ``manifest``'s rows for export and look up their images (one short read).

    ``classes``: ``"active"`` keeps only rows of active classes, ``"all"``
    keeps every row. Raises ``NotFound`` if a row's image is gone and
    ``RejectedInput`` for a class slug or image hash unfit for a path.
    """
    selected = select_classes(manifest, classes)
    dropped = {"class_not_active": len(manifest) - len(selected)} if classes == "active" else {}
    index = class_index(selected)
    records = {c.class_id: c for c in selected.classes}
    images = _image_facts(session, selected.image_ids)
    missing = [int(i) for i in selected.image_ids if int(i) not in images]
    if missing:
        raise NotFound(f"{len(missing)} image(s) of the manifest are missing, e.g. id {missing[0]}")

    slug_of = [records[int(c)].slug for c in selected.class_ids]
    facts = [images[int(i)] for i in selected.image_ids]
    order = sorted(
        range(len(selected)),
        key=lambda row: (int(selected.splits[row]), slug_of[row], facts[row][0]),
    )
    take = np.asarray(order, dtype=np.int64)
    ordered = [facts[row] for row in order]
    widths = np.asarray([f[2] for f in ordered], dtype=np.int64).reshape(-1)
    heights = np.asarray([f[3] for f in ordered], dtype=np.int64).reshape(-1)
    shas = tuple(f[0] for f in ordered)
    boxes, problems = _clip_boxes(selected.boxes[take].reshape(-1, 4), widths, heights, shas)
    by_slug = sorted(index, key=index.__getitem__)
    display = {c.slug: c.display_name for c in selected.classes}
    return ExportPlan(
        class_slugs=tuple(by_slug),
        class_names=tuple(display[slug] for slug in by_slug),
        image_ids=selected.image_ids[take].astype(np.int64),
        class_indices=np.asarray([index[slug_of[row]] for row in order], dtype=np.int32),
        splits=selected.splits[take].astype(np.int8),
        boxes=boxes,
        widths=widths,
        heights=heights,
        sha256=shas,
        storage_keys=tuple(f[1] for f in ordered),
        stored_formats=tuple(f[4] for f in ordered),
        names=file_names(shas, (f[4] for f in ordered)),
        source=dict(source or {}),
        dropped=dropped,
        problems=tuple(problems),
    )


def file_names(shas: tuple[str, ...], formats: Iterable[str]) -> tuple[str, ...]:
    """Stable, content-derived, unique names (see the module docstring)."""
    prefixes: dict[str, int] = {}
    for sha in shas:
        prefixes[sha[:NAME_DIGITS]] = prefixes.get(sha[:NAME_DIGITS], 0) + 1
    names = []
    for sha, fmt in zip(shas, formats, strict=True):
        stem = sha if prefixes[sha[:NAME_DIGITS]] > 1 else sha[:NAME_DIGITS]
        names.append(f"{stem}.{_EXTENSIONS[fmt]}")
    if len(set(names)) != len(names):
        raise RejectedInput("the manifest lists one image twice")
    return tuple(names)


_Facts = tuple[str, str, int, int, str]  # sha256, storage key, width, height, stored format


def _image_facts(session: Session, image_ids: NDArray[np.int64]) -> dict[int, _Facts]:
    ids = sorted(set(image_ids.tolist()))
    out: dict[int, _Facts] = {}
    for start in range(0, len(ids), _READ_CHUNK):
        chunk = ids[start : start + _READ_CHUNK]
        rows = session.execute(
            select(
                Image.id,
                Image.sha256,
                Image.storage_key,
                Image.width,
                Image.height,
                Image.stored_format,
            ).where(Image.id.in_(chunk))
        ).tuples()
        for image_id, sha, key, width, height, fmt in rows:
            if not _SHA256.fullmatch(sha):
                raise RejectedInput(f"image {image_id} has a malformed hash {sha!r}")
            if fmt not in _EXTENSIONS:
                raise RejectedInput(f"image {image_id} has an unknown stored format {fmt!r}")
            out[image_id] = (sha, key, width, height, fmt)
    return out


def _clip_boxes(
    boxes: NDArray[np.float64],
    widths: NDArray[np.int64],
    heights: NDArray[np.int64],
    shas: tuple[str, ...],
) -> tuple[NDArray[np.float64], list[dict[str, Any]]]:
    clipped = boxes.copy()
    clipped[:, 0] = np.clip(boxes[:, 0], 0.0, widths)
    clipped[:, 2] = np.clip(boxes[:, 2], 0.0, widths)
    clipped[:, 1] = np.clip(boxes[:, 1], 0.0, heights)
    clipped[:, 3] = np.clip(boxes[:, 3], 0.0, heights)
    boxed = ~np.isnan(boxes[:, 0])
    empty = boxed & ~((clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1]))
    problems = [
        {
            "sha256": shas[row],
            "problem": "box_outside_image",
            "box": [float(v) for v in boxes[row]],
            "size": [int(widths[row]), int(heights[row])],
        }
        for row in np.flatnonzero(empty).tolist()
    ]
    clipped[empty] = np.nan
    return clipped, problems


def split_value(split: Split | str | int) -> int:
    """A split given as a ``Split``, its value or its name -> its value."""
    if isinstance(split, int):
        return int(Split(split))
    try:
        return SPLIT_NAMES.index(split)
    except ValueError:
        raise ValueError(f"unknown split {split!r}; use one of {', '.join(SPLIT_NAMES)}") from None


def format_coordinate(value: float) -> str:
    """A pixel coordinate as written to text files: 1/100 px, fixed notation."""
    if not math.isfinite(value):
        raise ValueError(f"not a finite coordinate: {value}")
    return f"{value:.2f}"
