"""Train/validation/test assignment: by near-duplicate group, stable, stratified per class.

* Leak-free: a near-duplicate group never straddles splits. Every member of
  a group gets the group's split.
* Stable: an image keeps the split it had in the parent version. A group that
  already has members keeps their split for its newcomers; when groups merged
  (a new photo bridged two of them), the merged group takes the strictest of
  its members' splits (test, then validation, then train), so nothing leaves
  the test split and no training photo near-duplicates a test photo.
* Stratified: new groups of each class fill the splits towards the ratios,
  counting what the class already has. Groups are laid out in an order drawn
  from a hash of (seed, group id), and each falls in the split whose share of
  the class's new images its midpoint lands in; so the result depends only on
  the data and the seed, never on insertion order.

Arrays in, arrays out.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from curation.exceptions import RejectedInput
from curation.models import Split

NONE = -1


@dataclass(frozen=True)
class SplitRatios:
    train: float = 0.7
    validation: float = 0.15
    test: float = 0.15

    def __post_init__(self) -> None:
        values = (self.train, self.validation, self.test)
        if any(not np.isfinite(v) or v < 0 for v in values):
            raise RejectedInput(f"split ratios must be non-negative numbers, got {values}")
        if abs(sum(values) - 1.0) > 1e-6:
            raise RejectedInput(f"split ratios must add up to 1, got {sum(values):.4f}")
        if self.train <= 0:
            raise RejectedInput("the train ratio must be above 0")

    @classmethod
    def parse(cls, text: str) -> SplitRatios:
        """ "70/15/15" or "0.7,0.15,0.15" (train, validation, test)."""
        parts = text.replace("/", ",").split(",")
        try:
            values = [float(p) for p in parts]
        except ValueError:
            raise RejectedInput(f"split ratios {text!r} are not numbers") from None
        if len(values) != 3:
            raise RejectedInput(f"give three split ratios (train, validation, test), got {text!r}")
        total = sum(values)
        if total > 1.5:  # percentages
            values = [v / 100 for v in values]
        return cls(*values)

    def as_array(self) -> NDArray[np.float64]:
        return np.array([self.train, self.validation, self.test], dtype=np.float64)


def group_order_keys(group_ids: NDArray[np.int64], seed: int) -> NDArray[np.uint64]:
    """A stable pseudo-random key per group id (SplitMix64 of the id, salted by the seed)."""
    salt = int.from_bytes(hashlib.sha256(f"splits:{seed}".encode()).digest()[:8], "little")
    with np.errstate(over="ignore"):
        z = group_ids.astype(np.uint64) + np.uint64(salt)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def assign_splits(
    *,
    group_ids: NDArray[np.int64],
    class_ids: NDArray[np.int64],
    inherited: NDArray[np.int8],
    ratios: SplitRatios,
    seed: int,
) -> NDArray[np.int8]:
    """The split of each image.

    ``group_ids``, ``class_ids``: shape (n,); ``inherited``: the split each
    image had in the parent version, or -1 for an image new to the dataset.
    Returns int8 values of :class:`Split`, shape (n,).
    """
    n = len(group_ids)
    out = np.full(n, NONE, dtype=np.int8)
    if n == 0:
        return out
    groups, group_of = np.unique(group_ids, return_inverse=True)
    # The strictest inherited split of each group (test > validation > train).
    group_split = np.full(len(groups), NONE, dtype=np.int8)
    np.maximum.at(group_split, group_of, inherited)
    out[:] = group_split[group_of]
    new_group = group_split == NONE
    if not new_group.any():
        return out
    group_class = _majority_class(group_of, class_ids, len(groups))
    group_size = np.bincount(group_of, minlength=len(groups))
    # What each class already has per split (images placed by inheritance).
    placed = out != NONE
    n_classes_key, class_index = np.unique(class_ids, return_inverse=True)
    have = np.zeros((len(n_classes_key), 3), dtype=np.float64)
    np.add.at(have, (class_index[placed], out[placed].astype(np.int64)), 1.0)
    group_class_index = np.searchsorted(n_classes_key, group_class)
    new_ids = np.flatnonzero(new_group)
    keys = group_order_keys(groups[new_ids], seed)
    # Per class, new groups in key order; the class's new images fill splits.
    order = np.lexsort((keys, group_class_index[new_ids]))
    new_ids = new_ids[order]
    cls = group_class_index[new_ids]
    sizes = group_size[new_ids].astype(np.float64)
    new_total = np.bincount(cls, weights=sizes, minlength=len(n_classes_key)).astype(np.float64)
    quota = _quotas(have, new_total, ratios.as_array())  # (classes, 3) new images per split
    starts = np.cumsum(sizes) - sizes
    class_start = np.zeros(len(n_classes_key))
    first = np.r_[True, cls[1:] != cls[:-1]]
    class_start[cls[first]] = starts[first]
    midpoint = starts - class_start[cls] + sizes / 2
    bounds = np.cumsum(quota, axis=1)  # (classes, 3)
    split = (midpoint[:, None] >= bounds[cls][:, :2]).sum(axis=1)
    # Fill test first, then validation: a small class gets its test photos
    # before its validation ones (order test, validation, train along the line).
    split_of_slot = np.array([Split.TEST, Split.VALIDATION, Split.TRAIN], dtype=np.int8)
    group_split[new_ids] = split_of_slot[split]
    return group_split[group_of]


def _majority_class(
    group_of: NDArray[np.int64], class_ids: NDArray[np.int64], n_groups: int
) -> NDArray[np.int64]:
    """Each group's most common class (the smallest id on a tie)."""
    order = np.lexsort((class_ids, group_of))
    g, c = group_of[order], class_ids[order]
    boundary = np.r_[True, (g[1:] != g[:-1]) | (c[1:] != c[:-1])]
    run_starts = np.flatnonzero(boundary)
    run_counts = np.diff(np.r_[run_starts, len(g)])
    run_group, run_class = g[run_starts], c[run_starts]
    # Largest count first within each group, then smallest class id.
    pick = np.lexsort((run_class, -run_counts, run_group))
    first = np.r_[True, run_group[pick][1:] != run_group[pick][:-1]]
    out = np.zeros(n_groups, dtype=np.int64)
    out[run_group[pick][first]] = run_class[pick][first]
    return out


def _quotas(
    have: NDArray[np.float64], new_total: NDArray[np.float64], ratios: NDArray[np.float64]
) -> NDArray[np.float64]:
    """New images per (class, slot) with slots ordered (test, validation, train).

    Each class's target is ``ratios`` of its final size; a split already above
    its target gets nothing new, and the rest is shared by the deficits.
    """
    total = have.sum(axis=1) + new_total
    target = ratios[None, :] * total[:, None]
    deficit = np.clip(target - have, 0.0, None)  # (classes, 3) in Split order
    scale = np.divide(
        new_total, deficit.sum(axis=1), out=np.zeros_like(new_total), where=deficit.sum(axis=1) > 0
    )
    quota = deficit * np.minimum(scale, 1.0)[:, None]
    # Whatever the deficits leave goes to train.
    quota[:, Split.TRAIN] += new_total - quota.sum(axis=1)
    slots: NDArray[np.float64] = quota[:, [Split.TEST, Split.VALIDATION, Split.TRAIN]]
    return slots
