"""The label-error evaluation: flip bookkeeping, metrics, grouped folds, real photos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from curation.evaluation import label_errors as le
from curation.learning.scores import grouped_fold_ids
from tests.conftest import SHARED_WEIGHTS, shared_data


def test_flips_move_the_requested_share_to_another_class() -> None:
    labels = np.repeat(np.arange(4), 50)
    noisy, flipped = le.flip_labels(labels, n_classes=4, noise=0.1, seed=3)
    assert flipped.size == 20 and np.all(np.diff(flipped) > 0)
    changed = np.flatnonzero(noisy != labels)
    np.testing.assert_array_equal(changed, flipped)
    again, same = le.flip_labels(labels, n_classes=4, noise=0.1, seed=3)
    np.testing.assert_array_equal(again, noisy)
    np.testing.assert_array_equal(same, flipped)


def test_recall_curve_and_flag_metrics() -> None:
    truth = np.array([True, False, True, False, False])
    scores = np.array([0.9, 0.8, 0.5, 0.5, 0.1])
    curve = le.recall_curve(truth, scores)
    # The tie at 0.5 is broken against the error.
    np.testing.assert_allclose(curve, [0, 0.5, 0.5, 0.5, 1.0, 1.0])
    assert le.recall_at_share(curve, 0.4) == 0.5
    assert le.recall_at_share(curve, 0.8) == 1.0
    precision, recall, f1 = le.precision_recall_f1(truth, np.array([1, 1, 0, 0, 0], bool))
    assert (precision, recall) == (0.5, 0.5) and f1 == pytest.approx(0.5)
    assert le.precision_recall_f1(truth, np.zeros(5, bool)) == (1.0, 0.0, 0.0)


def test_grouped_folds_never_split_a_group() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, size=300)
    groups = rng.integers(0, 80, size=300)
    folds = grouped_fold_ids(labels, groups, n_folds=5, seed=1)
    assert folds.min() >= 0
    for group in np.unique(groups):
        assert np.unique(folds[groups == group]).size == 1
    # Every class keeps members in several folds.
    for label in range(3):
        assert np.unique(folds[labels == label]).size >= 4


def test_a_class_inside_one_group_is_dealt_by_row() -> None:
    labels = np.array([0, 0, 0, 1, 1, 1])
    groups = np.array([0, 1, 2, 7, 7, 7])
    folds = grouped_fold_ids(labels, groups, n_folds=3, seed=0)
    assert np.unique(folds[3:]).size == 3


def test_flips_are_found_on_separable_blobs() -> None:
    rng = np.random.default_rng(5)
    centres = rng.normal(size=(4, 16)) * 4
    labels = np.repeat(np.arange(4), 60)
    embeddings = centres[labels] + rng.normal(size=(240, 16))
    groups = np.arange(240) // 2  # pairs of near-duplicates
    report = le.evaluate(embeddings, labels, group_ids=groups, noise=0.1, seeds=[0, 1])
    summary = report.summary()
    mean = summary["mean"]
    assert isinstance(mean, dict)
    assert mean["top_share_recall"] >= 0.95
    assert mean["precision"] >= 0.85 and mean["recall"] >= 0.8


@pytest.mark.slow
@pytest.mark.shared_data
@pytest.mark.parametrize("name", ["wonders7", "porto5"])
def test_real_flips_are_ranked_and_flagged(name: str, tmp_path: Path) -> None:
    from curation.evaluation.folder import load_labelled_folder

    root = shared_data(name)
    weights = SHARED_WEIGHTS / "mobilenet_2_5_224_tf_no_top.h5"
    if not weights.exists():
        pytest.skip(f"{weights} is absent")
    data = load_labelled_folder(
        root,
        backbone="mobilenet_0.25",
        weights=str(weights),
        cache_dir=tmp_path / "cache",
        max_bytes=50 << 20,
        max_pixels=100_000_000,
    )
    report = le.evaluate(data.embeddings, data.labels, group_ids=data.group_ids, noise=0.1)
    mean = report.summary()["mean"]
    assert isinstance(mean, dict)
    assert mean["top_share_recall"] >= 0.95, mean
    assert mean["precision"] >= 0.85, mean
    assert mean["recall"] >= 0.8, mean
