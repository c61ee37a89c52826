"""A dataset version's full content, as arrays: what exports, training and diffs read.

Rows are sorted by image id. Boxes are pixel corners of the stored
(orientation-corrected) image, rounded to 1/100 px as stored; NaN where an
entry has no box.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from curation.models import Split

SPLIT_NAMES = tuple(split.label for split in Split)


@dataclass(frozen=True)
class ClassRecord:
    class_id: int
    slug: str
    display_name: str
    status: str
    aliases: tuple[tuple[str, str], ...] = ()  # (language, name)
    latitude: float | None = None
    longitude: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.class_id,
            "slug": self.slug,
            "display_name": self.display_name,
            "status": self.status,
            "aliases": [list(alias) for alias in self.aliases],
            "latitude": self.latitude,
            "longitude": self.longitude,
        }


@dataclass(frozen=True)
class Manifest:
    """(image, class, box, split) rows of one version, and its class list.

    ``image_ids``, ``class_ids``, ``label_ids``: int64, shape (n,), sorted by
    image id; ``boxes``: float64, shape (n, 4) as (x_min, y_min, x_max, y_max),
    NaN rows where there is no box; ``splits``: int8 values of
    :class:`curation.models.Split`; ``classes``: sorted by class id.
    """

    image_ids: NDArray[np.int64]
    class_ids: NDArray[np.int64]
    boxes: NDArray[np.float64]
    splits: NDArray[np.int8]
    label_ids: NDArray[np.int64]
    classes: tuple[ClassRecord, ...]
    _by_id: dict[int, ClassRecord] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._by_id.update({record.class_id: record for record in self.classes})

    def __len__(self) -> int:
        return len(self.image_ids)

    def class_record(self, class_id: int) -> ClassRecord:
        return self._by_id[class_id]

    def in_split(self, split: Split) -> NDArray[np.bool_]:
        mask: NDArray[np.bool_] = self.splits == int(split)
        return mask

    def boxes_by_image(self) -> dict[int, tuple[float, float, float, float]]:
        """image id -> (x0, y0, x1, y1) of every entry with a box."""
        return {
            int(image_id): (float(b[0]), float(b[1]), float(b[2]), float(b[3]))
            for image_id, b in zip(self.image_ids, self.boxes, strict=True)
            if not np.isnan(b).any()
        }

    def split_counts(self) -> dict[str, int]:
        counts = np.bincount(self.splits.astype(np.int64), minlength=len(SPLIT_NAMES))
        return {name: int(count) for name, count in zip(SPLIT_NAMES, counts, strict=True)}

    def per_class_split_counts(self) -> dict[int, dict[str, int]]:
        """class id -> {"train": n, "validation": n, "test": n} for the classes with entries."""
        out: dict[int, dict[str, int]] = {}
        if not len(self):
            return out
        keys = self.class_ids * len(SPLIT_NAMES) + self.splits
        unique, counts = np.unique(keys, return_counts=True)
        for key, count in zip(unique.tolist(), counts.tolist(), strict=True):
            class_id, split = divmod(key, len(SPLIT_NAMES))
            out.setdefault(class_id, dict.fromkeys(SPLIT_NAMES, 0))[SPLIT_NAMES[split]] = count
        return out


def empty_manifest(classes: tuple[ClassRecord, ...] = ()) -> Manifest:
    return Manifest(
        image_ids=np.zeros(0, dtype=np.int64),
        class_ids=np.zeros(0, dtype=np.int64),
        boxes=np.zeros((0, 4), dtype=np.float64),
        splits=np.zeros(0, dtype=np.int8),
        label_ids=np.zeros(0, dtype=np.int64),
        classes=classes,
    )
