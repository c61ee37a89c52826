"""Density, the head order of a ranking, and the claim keys that enforce it."""

from __future__ import annotations

import numpy as np
import pytest

from curation.learning.ordering import (
    ORDER_BATCH,
    TYPICAL_LABELS_PER_CLASS,
    claim_keys,
    head_order,
    typical_phase_picks,
)
from curation.learning.scores import density, density_reference


def _blobs(rng: np.random.Generator, sizes: list[int], spread: float) -> np.ndarray:
    centres = rng.normal(size=(len(sizes), 32))
    return np.concatenate(
        [c + spread * rng.normal(size=(n, 32)) for c, n in zip(centres, sizes, strict=True)]
    ).astype(np.float32)


def test_density_is_high_in_a_crowd_and_low_for_a_loner() -> None:
    rng = np.random.default_rng(0)
    crowd = _blobs(rng, [200], 0.05)
    loner = rng.normal(size=(1, 32)).astype(np.float32)
    points = np.concatenate([crowd, loner])
    values = density(points, reference=density_reference(points), population=len(points))
    assert values.shape == (201,)
    assert values[:200].min() > 0.9
    assert values[200] < 0.5
    assert ((values >= 0) & (values <= 1)).all()


def test_density_skips_the_image_itself_and_scales_with_a_sample() -> None:
    rng = np.random.default_rng(1)
    points = rng.normal(size=(50, 16)).astype(np.float32)
    # Alone with itself, an image is not dense.
    assert density(points[:1], reference=points[:1], population=1)[0] == 0.0
    sample = density_reference(points, max_rows=10)
    assert sample.shape == (10, 16)
    values = density(points, reference=sample, population=50)
    assert values.shape == (50,)
    with pytest.raises(ValueError, match="population"):
        density(points, reference=points, population=10)
    with pytest.raises(ValueError, match="reference"):
        density(points, reference=np.zeros((0, 16)), population=5)


def test_typical_phase_fills_the_gap_to_six_labels_per_class_from_uncovered_clusters() -> None:
    rng = np.random.default_rng(2)
    points = _blobs(rng, [100, 100, 100, 5], 0.05)
    labelled = np.zeros(len(points), dtype=bool)
    labelled[:3] = True  # three labels, all in the first cluster
    candidates = ~labelled
    picks = typical_phase_picks(points, candidates=candidates, labelled=labelled, n_classes=2)
    assert picks.size == TYPICAL_LABELS_PER_CLASS * 2 - 3
    assert candidates[picks].all()
    # The large uncovered clusters come before anything else.
    clusters = np.repeat(np.arange(4), [100, 100, 100, 5])
    assert {1, 2} <= set(clusters[picks[:3]].tolist())
    enough = np.zeros(len(points), dtype=bool)
    enough[: TYPICAL_LABELS_PER_CLASS * 2] = True
    none = typical_phase_picks(points, candidates=~enough, labelled=enough, n_classes=2)
    assert none.size == 0


def test_head_order_spreads_each_batch_over_the_pool_of_top_priorities() -> None:
    rng = np.random.default_rng(3)
    # 40 near-identical burst shots with the top priorities, then 200 others.
    burst = _blobs(rng, [40], 0.001)
    others = _blobs(rng, [50, 50, 50, 50], 0.2)
    points = np.concatenate([burst, others])
    priority = np.concatenate([np.full(40, 0.9), rng.uniform(0.5, 0.8, 200)])
    labelled = np.zeros(len(points), dtype=bool)
    labelled[40:100] = True  # plenty of labels: no typical phase for 2 classes
    candidates = ~labelled
    order = head_order(
        priority, points, candidates=candidates, labelled=labelled, n_classes=2, length=60
    )
    assert order.size == 60 and np.unique(order).size == 60
    assert candidates[order].all()
    # Plain priority order would hand out 20 burst shots; the first batch holds few.
    assert (order[:ORDER_BATCH] < 40).sum() <= 3
    assert order[0] < 40  # the highest priority still comes first


def test_claim_keys_make_highest_first_follow_the_order() -> None:
    rng = np.random.default_rng(4)
    priority = rng.random(500)
    priority[:100] = 0.0  # many ties, some in the head
    candidates = np.ones(500, dtype=bool)
    candidates[450:] = False
    order = rng.permutation(np.flatnonzero(candidates))[:120]
    keys = claim_keys(priority, candidates=candidates, order=order)
    claim_order = np.lexsort((np.arange(500), -keys))
    claim_order = claim_order[candidates[claim_order]]
    assert (claim_order[:120] == order).all()
    assert ((keys >= 0) & (keys <= 1)).all()
    np.testing.assert_array_equal(keys[~candidates], priority[~candidates])
    # The head keeps the head's own values (up to the tie-breaking nudges).
    top = np.sort(priority[candidates])[::-1][:120]
    np.testing.assert_allclose(np.sort(keys[order])[::-1], np.maximum(top, 0), atol=1e-6)


def test_claim_keys_keep_the_passed_over_candidates_in_priority_order() -> None:
    priority = np.asarray([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.1])
    candidates = np.ones(7, dtype=bool)
    order = np.asarray([4, 0])  # the head took a low one; 1, 2 and 3 were passed over
    keys = claim_keys(priority, candidates=candidates, order=order)
    claim_order = np.lexsort((np.arange(7), -keys))
    assert claim_order.tolist() == [4, 0, 1, 2, 3, 5, 6]
