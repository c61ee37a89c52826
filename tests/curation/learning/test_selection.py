"""Diverse, typical and random selection on synthetic embeddings."""

from __future__ import annotations

import math

import numpy as np
import pytest

# scikit-learn and SciPy take about 2 s to import; importing them at collection
# keeps that one-off cost out of the timing of whichever test runs first.
import sklearn.cluster  # noqa: F401
from numpy.typing import NDArray

from curation.learning.selection import (
    diverse_top,
    k_center_greedy,
    random_control,
    typical_diverse,
)

DIMENSION = 8


def _tight_cluster_and_four_others() -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """20 near-identical photos along axis 0, then 4 looser clusters of 5 along axes 1..4."""
    rng = np.random.default_rng(5)
    axes = np.eye(DIMENSION)
    near_identical = axes[0] + rng.normal(scale=1e-4, size=(20, DIMENSION))
    others = [axes[c] + rng.normal(scale=0.05, size=(5, DIMENSION)) for c in range(1, 5)]
    embeddings = np.vstack([near_identical, *others])
    cluster_of_row = np.concatenate([np.zeros(20), np.repeat(np.arange(1, 5), 5)]).astype(np.int64)
    return embeddings, cluster_of_row


def _at_angles(degrees: list[float]) -> NDArray[np.float64]:
    radians = np.deg2rad(degrees)
    return np.stack([np.cos(radians), np.sin(radians)], axis=1)


# --- k-center greedy ----------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_k_center_greedy_covers_every_cluster_before_repeating_one(seed: int) -> None:
    embeddings, cluster_of_row = _tight_cluster_and_four_others()
    picks = k_center_greedy(embeddings, k=5, seed=seed)
    assert sorted(cluster_of_row[picks].tolist()) == [0, 1, 2, 3, 4]


def test_k_center_greedy_takes_one_of_the_near_identical_photos_until_the_rest_is_used() -> None:
    embeddings, cluster_of_row = _tight_cluster_and_four_others()
    # 1 of the 20 near-identical photos plus all 20 looser ones: no second twin yet.
    picks = k_center_greedy(embeddings, k=21, seed=0)
    assert len(set(picks.tolist())) == 21
    assert (cluster_of_row[picks] == 0).sum() == 1


def test_k_center_greedy_treats_already_selected_rows_as_covered() -> None:
    embeddings, cluster_of_row = _tight_cluster_and_four_others()
    already = np.array([3, 20])  # one twin and one member of cluster 1
    picks = k_center_greedy(embeddings, k=3, already_selected=already, seed=0)
    assert not set(picks.tolist()) & set(already.tolist())
    assert sorted(cluster_of_row[picks].tolist()) == [2, 3, 4]


def test_k_center_greedy_is_the_farthest_point_rule() -> None:
    # From 0 degrees: 180 is farthest (distance 2); then 90 (1 from both picks)
    # beats 45 (1 - cos 45 = 0.29 from 0 degrees).
    embeddings = _at_angles([0, 45, 90, 180])
    for seed in range(5):  # the seed only matters when nothing is selected yet
        picks = k_center_greedy(embeddings, k=3, already_selected=[0], seed=seed)
        assert picks.tolist() == [3, 2, 1]


def test_k_center_greedy_is_deterministic_for_a_seed() -> None:
    embeddings, _ = _tight_cluster_and_four_others()
    first = k_center_greedy(embeddings, k=8, seed=3)
    np.testing.assert_array_equal(k_center_greedy(embeddings, k=8, seed=3), first)


def test_k_center_greedy_never_builds_an_n_by_n_matrix() -> None:
    # 60,000 x 60,000 float32 would need 14 GB; picks one matrix-vector product at a time.
    embeddings = np.random.default_rng(0).normal(size=(60_000, 16)).astype(np.float16)
    picks = k_center_greedy(embeddings, k=10, seed=0)
    assert len(set(picks.tolist())) == 10


def test_k_center_greedy_refuses_more_picks_than_rows_left() -> None:
    embeddings, _ = _tight_cluster_and_four_others()
    with pytest.raises(ValueError):
        k_center_greedy(embeddings, k=39, already_selected=[0, 1])


# --- diverse top --------------------------------------------------------------


def test_diverse_top_weighs_priority_by_distance_to_what_is_picked() -> None:
    # A (priority 1.0) at 0 degrees, B (0.8) at 90, C (0.9) at 30.
    # After A: B gains 0.8 * (1 - cos 90) = 0.8, C gains 0.9 * (1 - cos 30) = 0.12.
    embeddings = _at_angles([0, 90, 30])
    priorities = np.array([1.0, 0.8, 0.9])
    assert diverse_top(priorities, embeddings, k=3).tolist() == [0, 1, 2]
    # With a pool of k * 1 = 2 only A and C (the two highest priorities) compete.
    assert diverse_top(priorities, embeddings, k=2, pool_factor=1).tolist() == [0, 2]


def test_diverse_top_shows_one_of_twenty_urgent_twins() -> None:
    embeddings, cluster_of_row = _tight_cluster_and_four_others()
    priorities = np.where(cluster_of_row == 0, 0.9, 0.5)
    priorities[7] = 1.0
    order = diverse_top(priorities, embeddings, k=5, pool_factor=10)
    assert order[0] == 7  # the highest priority comes first
    assert sorted(cluster_of_row[order].tolist()) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("bad", [[0.5, np.nan, 0.1], [0.5, -0.1, 0.1]], ids=["nan", "negative"])
def test_diverse_top_refuses_priorities_it_cannot_weigh(bad: list[float]) -> None:
    with pytest.raises(ValueError):
        diverse_top(np.array(bad), _at_angles([0, 10, 20]), k=2)


# --- typical diverse ----------------------------------------------------------


def test_typical_diverse_returns_the_most_typical_member_of_each_cluster() -> None:
    rng = np.random.default_rng(2)
    sizes = [8, 30, 12, 20]
    centres = np.eye(DIMENSION)[:4] * 10
    blobs = [
        centre + rng.normal(size=(size, DIMENSION))
        for centre, size in zip(centres, sizes, strict=True)
    ]
    embeddings = np.vstack(blobs)
    starts = np.cumsum([0, *sizes[:-1]])

    picks = typical_diverse(embeddings, k=4, seed=0)

    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    expected_by_blob = {}
    for blob, (start, size) in enumerate(zip(starts, sizes, strict=True)):
        members = unit[start : start + size]
        nearest = np.argmin(np.linalg.norm(members - members.mean(axis=0), axis=1))
        expected_by_blob[blob] = int(start + nearest)
    # Largest cluster first: blob 1 (30), blob 3 (20), blob 2 (12), blob 0 (8).
    assert picks.tolist() == [expected_by_blob[b] for b in (1, 3, 2, 0)]
    np.testing.assert_array_equal(typical_diverse(embeddings, k=4, seed=0), picks)


def test_typical_diverse_of_nothing() -> None:
    assert typical_diverse(np.ones((3, 2)), k=0).tolist() == []
    with pytest.raises(ValueError):
        typical_diverse(np.ones((3, 2)), k=4)


# --- random control -----------------------------------------------------------


@pytest.mark.parametrize(("n", "share"), [(101, 0.1), (5, 0.5), (40, 0.0), (40, 1.0), (0, 0.3)])
def test_random_control_has_exactly_the_rounded_share(n: int, share: float) -> None:
    mask = random_control(n, share=share, seed=1)
    assert mask.shape == (n,) and mask.dtype == np.bool_
    assert mask.sum() == round(share * n)


def test_random_control_halves_round_to_even() -> None:
    assert random_control(5, share=0.5, seed=0).sum() == 2  # round(2.5) == 2
    assert random_control(7, share=0.5, seed=0).sum() == 4  # round(3.5) == 4


def test_random_control_is_deterministic_for_a_seed() -> None:
    first = random_control(1000, share=0.05, seed=42)
    np.testing.assert_array_equal(random_control(1000, share=0.05, seed=42), first)
    assert not np.array_equal(random_control(1000, share=0.05, seed=43), first)
    assert math.isclose(first.mean(), 0.05)


@pytest.mark.parametrize("share", [-0.1, 1.5])
def test_random_control_refuses_a_share_outside_zero_to_one(share: float) -> None:
    with pytest.raises(ValueError):
        random_control(10, share=share, seed=0)
