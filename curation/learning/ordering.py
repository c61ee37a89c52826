"""The order in which reviewers meet the head of a ranking, batch by batch.

Reviewers claim the highest priority first, one item at a time. Left at that,
the top of a ranking is twenty burst shots of the one view the model finds
hardest, and a label teaches the model almost nothing the previous one did
not. A full rescoring therefore orders the first ``ORDERED_BATCHES`` batches
of ``ORDER_BATCH`` items before it writes the ranking:

* while the labels are few (under ``TYPICAL_LABELS_PER_CLASS`` per class of
  the model) the gap is filled first with typical images of clusters that no
  label covers yet (TypiClust), largest cluster first;
* then, batch by batch, ``diverse_top`` picks from the ``POOL_FACTOR`` times
  larger pool of the highest priorities left.

:func:`claim_keys` then rewrites the priorities so that the claim order
(priority descending) is that order; the head keeps its own priority values,
only reassigned. ``curation bench al`` simulates exactly this function, so the
figures it reports are the live queue's.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from curation.learning.selection import diverse_top, typical_picks

IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]

TYPICAL_LABELS_PER_CLASS = 6
ORDER_BATCH = 20
ORDERED_BATCHES = 50
POOL_FACTOR = 5
# TypiClust clusters the labelled images with a sample of the candidates:
# k-means over a million crawled images is minutes, over this many seconds.
TYPICAL_SAMPLE_ROWS = 5_000


def typical_phase_picks(
    embeddings: ArrayLike,
    *,
    candidates: ArrayLike,
    labelled: ArrayLike,
    n_classes: int,
    seed: int = 0,
    limit: int = ORDER_BATCH * ORDERED_BATCHES,
) -> IntArray:
    """Typical candidates of uncovered clusters, as many as the labels lack of 6 per class.

    Parameters
    ----------
    embeddings : (N, D) float, every image of the space.
    candidates : (N,) bool, the images in line for review.
    labelled : (N,) bool, the images with a landmark label.
    n_classes : classes of the model.

    Returns
    -------
    (K,) int64 candidate rows, K = min(6 * n_classes - labelled, unlabelled
    candidates (at most ``TYPICAL_SAMPLE_ROWS`` of them are read), ``limit``),
    possibly 0.
    """
    in_line = np.asarray(candidates, dtype=np.bool_)
    known = np.asarray(labelled, dtype=np.bool_)
    open_rows = np.flatnonzero(in_line & ~known)
    if open_rows.size > TYPICAL_SAMPLE_ROWS:
        open_rows = open_rows[
            np.linspace(0, open_rows.size - 1, TYPICAL_SAMPLE_ROWS).astype(np.int64)
        ]
    wanted = min(TYPICAL_LABELS_PER_CLASS * n_classes - int(known.sum()), open_rows.size, limit)
    if wanted <= 0:
        return np.zeros(0, dtype=np.int64)
    rows = np.concatenate([np.flatnonzero(known), open_rows])
    picks = typical_picks(
        np.asarray(embeddings)[rows],
        labelled=np.arange(rows.size) < int(known.sum()),
        k=wanted,
        seed=seed,
    )
    return rows[picks].astype(np.int64)


def head_order(
    priority: ArrayLike,
    embeddings: ArrayLike,
    *,
    candidates: ArrayLike,
    labelled: ArrayLike,
    n_classes: int,
    length: int = ORDER_BATCH * ORDERED_BATCHES,
    batch: int = ORDER_BATCH,
    seed: int = 0,
) -> IntArray:
    """The first ``length`` candidates, in the order reviewers should see them.

    Parameters
    ----------
    priority : (N,) float >= 0, the ranking's priorities (only candidates' are read).
    embeddings : (N, D) float.
    candidates, labelled : (N,) bool (see :func:`typical_phase_picks`).
    n_classes : classes of the model.
    length : items to order; batch : items per diverse batch.

    Returns
    -------
    (min(length, candidates),) int64 distinct candidate rows, in claim order.
    """
    weights = np.asarray(priority, dtype=np.float64)
    vectors = np.asarray(embeddings)
    in_line = np.asarray(candidates, dtype=np.bool_)
    if weights.ndim != 1 or len({weights.shape[0], vectors.shape[0], in_line.shape[0]}) != 1:
        raise ValueError("priority, embeddings and candidates must have one row per image")
    order = list(
        typical_phase_picks(
            vectors,
            candidates=in_line,
            labelled=labelled,
            n_classes=n_classes,
            seed=seed,
            limit=length,
        )
    )
    taken = np.zeros(weights.shape[0], dtype=np.bool_)
    taken[order] = True
    rows = np.flatnonzero(in_line & ~taken)
    by_priority = rows[np.lexsort((rows, -weights[rows]))]
    next_row = 0
    leftover: list[int] = []
    while len(order) < length and (leftover or next_row < by_priority.size):
        room = batch * POOL_FACTOR - len(leftover)
        pool = np.asarray(
            leftover + by_priority[next_row : next_row + room].tolist(), dtype=np.int64
        )
        next_row += room
        # diverse_top reads the pool in priority order.
        pool = pool[np.lexsort((pool, -weights[pool]))]
        size = min(batch, length - len(order), pool.size)
        chosen = diverse_top(
            np.clip(weights[pool], 0.0, None), vectors[pool], k=size, pool_factor=POOL_FACTOR
        )
        order.extend(int(row) for row in pool[chosen])
        keep = np.ones(pool.size, dtype=np.bool_)
        keep[chosen] = False
        leftover = pool[keep].tolist()
    return np.asarray(order, dtype=np.int64)


def claim_keys(priority: ArrayLike, *, candidates: ArrayLike, order: ArrayLike) -> FloatArray:
    """Priorities under which "highest first" claims ``order`` first, in that order.

    The ordered rows take the head's own priority values, largest first, made
    strictly decreasing (ties would otherwise fall back to image id) and
    positive; every other candidate is capped just below the last of them,
    those above it in their own priority order. Rows outside the
    candidates keep their priority.

    Returns
    -------
    (N,) float64 in [0, 1].
    """
    keys = np.asarray(priority, dtype=np.float64).copy()
    head = np.asarray(order, dtype=np.int64)
    if head.size == 0:
        return keys
    in_line = np.asarray(candidates, dtype=np.bool_)
    values = np.sort(keys[in_line])[::-1][: head.size]
    # A head of zeros still has to sort above the rest (capped at 0 below).
    values = _strictly_decreasing(np.maximum(values, np.arange(head.size, 0, -1) * 1e-9))
    floor = float(np.nextafter(values[-1], -np.inf))
    rest = in_line.copy()
    rest[head] = False
    # Candidates the head passed over (leftovers of its pools) keep their
    # order among themselves: a strictly decreasing chain from the floor down.
    above = np.flatnonzero(rest & (keys >= floor))
    above = above[np.lexsort((above, -keys[above]))]
    keys[above] = _strictly_decreasing(np.full(above.size, floor))
    keys[head] = values
    clipped: FloatArray = np.clip(keys, 0.0, 1.0)
    return clipped


def _strictly_decreasing(values: FloatArray) -> FloatArray:
    """``values`` (non-increasing) with every tie nudged one float below the value before it."""
    result = np.asarray(values, dtype=np.float64).copy()
    for k in range(1, result.size):
        if result[k] >= result[k - 1]:
            result[k] = np.nextafter(result[k - 1], -np.inf)
    return result
