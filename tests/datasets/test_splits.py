"""Split assignment: leak-free by group, stable, stratified, deterministic (property-based)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from curation.exceptions import RejectedInput
from curation.models import Split
from datasets.splits import NONE, SplitRatios, assign_splits

RATIOS = SplitRatios(0.7, 0.15, 0.15)


@st.composite
def datasets(draw):
    n = draw(st.integers(min_value=1, max_value=300))
    groups = draw(st.lists(st.integers(1, max(1, n // 2)), min_size=n, max_size=n))
    classes = draw(st.lists(st.integers(1, 6), min_size=n, max_size=n))
    return np.asarray(groups, dtype=np.int64), np.asarray(classes, dtype=np.int64)


def _fresh(groups, classes, seed=0):
    return assign_splits(
        group_ids=groups,
        class_ids=classes,
        inherited=np.full(len(groups), NONE, dtype=np.int8),
        ratios=RATIOS,
        seed=seed,
    )


def _straddling_groups(groups, splits) -> int:
    return sum(len(set(splits[groups == g].tolist())) > 1 for g in np.unique(groups))


@settings(max_examples=60, deadline=None)
@given(datasets())
def test_no_group_ever_straddles_splits(data) -> None:
    groups, classes = data
    splits = _fresh(groups, classes)
    assert set(splits.tolist()) <= {0, 1, 2}
    assert _straddling_groups(groups, splits) == 0


@settings(max_examples=60, deadline=None)
@given(datasets(), datasets())
def test_adding_images_never_moves_old_ones(old, new) -> None:
    (old_groups, old_classes), (new_groups, new_classes) = old, new
    first = _fresh(old_groups, old_classes)
    # New images in new groups (ids offset) and some joining old groups.
    groups = np.r_[old_groups, new_groups + 1000]
    classes = np.r_[old_classes, new_classes]
    inherited = np.r_[first, np.full(len(new_groups), NONE, dtype=np.int8)]
    second = assign_splits(
        group_ids=groups, class_ids=classes, inherited=inherited, ratios=RATIOS, seed=0
    )
    np.testing.assert_array_equal(second[: len(first)], first)
    assert _straddling_groups(groups, second) == 0


@settings(max_examples=40, deadline=None)
@given(datasets())
def test_the_result_does_not_depend_on_row_order(data) -> None:
    groups, classes = data
    permutation = np.random.default_rng(len(groups)).permutation(len(groups))
    straight = _fresh(groups, classes)
    shuffled = _fresh(groups[permutation], classes[permutation])
    np.testing.assert_array_equal(shuffled, straight[permutation])


def test_merged_groups_take_the_strictest_split_so_test_never_shrinks() -> None:
    groups = np.array([1, 1, 1], dtype=np.int64)  # images 0 and 1 were two groups, merged
    inherited = np.array([Split.TRAIN, Split.TEST, NONE], dtype=np.int8)
    splits = assign_splits(
        group_ids=groups,
        class_ids=np.array([5, 5, 5]),
        inherited=inherited,
        ratios=RATIOS,
        seed=0,
    )
    assert splits.tolist() == [Split.TEST] * 3


def test_each_class_is_stratified_to_the_ratios() -> None:
    n_per_class = 1000
    classes = np.repeat(np.arange(1, 6), n_per_class)
    groups = np.arange(len(classes))
    splits = _fresh(groups, classes)
    for c in range(1, 6):
        counts = np.bincount(splits[classes == c], minlength=3)
        assert abs(counts[Split.TEST] - 150) <= 1
        assert abs(counts[Split.VALIDATION] - 150) <= 1


def test_new_images_fill_the_splits_a_class_is_short_of() -> None:
    # A class whose first 100 images all went to train: the next 100 make up
    # for validation and test first.
    classes = np.full(200, 3)
    groups = np.arange(200)
    inherited = np.r_[np.zeros(100, dtype=np.int8), np.full(100, NONE, dtype=np.int8)]
    splits = assign_splits(
        group_ids=groups, class_ids=classes, inherited=inherited, ratios=RATIOS, seed=0
    )
    counts = np.bincount(splits, minlength=3)
    assert counts[Split.TEST] == 30 and counts[Split.VALIDATION] == 30


def test_another_seed_draws_other_splits() -> None:
    classes = np.repeat(np.arange(3), 200)
    groups = np.arange(600)
    assert not np.array_equal(_fresh(groups, classes, 0), _fresh(groups, classes, 1))


@pytest.mark.parametrize(
    ("text", "expected"),
    [("70/15/15", (0.7, 0.15, 0.15)), ("0.8,0.1,0.1", (0.8, 0.1, 0.1))],
)
def test_ratios_parse(text: str, expected: tuple[float, float, float]) -> None:
    ratios = SplitRatios.parse(text)
    assert (ratios.train, ratios.validation, ratios.test) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["70/15", "a/b/c", "60/20/30", "0/50/50", "-1,1,1"])
def test_bad_ratios_are_refused_with_a_reason(text: str) -> None:
    with pytest.raises(RejectedInput):
        SplitRatios.parse(text)
