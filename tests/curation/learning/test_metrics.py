"""Metrics on a held-out split, checked against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from curation.learning.metrics import (
    accuracy,
    confusion_matrix,
    evaluate,
    expected_calibration_error,
    per_class_precision_recall,
    top_k_accuracy,
)

# 5 items, 3 classes. Predictions (argmax): 0, 1, 1, 2, 0. Truth: 0, 1, 2, 2, -1.
PROBS = np.array(
    [
        [0.7, 0.2, 0.1],
        [0.1, 0.8, 0.1],
        [0.2, 0.5, 0.3],
        [0.1, 0.3, 0.6],
        [0.9, 0.05, 0.05],
    ]
)
LABELS = np.array([0, 1, 2, 2, -1])


def test_accuracy_counts_unknown_classes_as_misses() -> None:
    assert accuracy(LABELS, PROBS) == pytest.approx(3 / 5)
    assert math.isnan(accuracy([], np.zeros((0, 3))))


def test_top_k_accuracy() -> None:
    # top-2 rows: {0,1}, {1,0|2}, {1,2}, {2,1}, {0,1|2}: items 0, 1, 2, 3 hit.
    assert top_k_accuracy(LABELS, PROBS, k=2) == pytest.approx(4 / 5)
    assert top_k_accuracy(LABELS, PROBS, k=1) == pytest.approx(3 / 5)
    # k above the class count is every class: all known items hit.
    assert top_k_accuracy(LABELS, PROBS, k=5) == pytest.approx(4 / 5)


def test_confusion_matrix_rows_are_truth() -> None:
    predictions = PROBS.argmax(axis=1)
    expected = np.array([[1, 0, 0], [0, 1, 0], [0, 1, 1]])
    np.testing.assert_array_equal(confusion_matrix(LABELS, predictions, n_classes=3), expected)


def test_per_class_precision_and_recall() -> None:
    precision, recall, support = per_class_precision_recall(
        LABELS, PROBS.argmax(axis=1), n_classes=4
    )
    # Class 0 predicted twice (once for the unknown item), right once.
    np.testing.assert_allclose(precision[:3], [1 / 2, 1 / 2, 1.0])
    np.testing.assert_allclose(recall[:3], [1.0, 1.0, 1 / 2])
    np.testing.assert_array_equal(support, [1, 1, 2, 0])
    assert math.isnan(precision[3]) and math.isnan(recall[3])


def test_expected_calibration_error_by_hand() -> None:
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.4, 0.6]])
    labels = np.array([0, 1, 0, 0])
    # Bins of width 0.5: (0.5, 1] holds all four (confidences .9, .9, .6, .6),
    # accuracy 2/4, mean confidence 0.75 -> ECE 0.25.
    assert expected_calibration_error(labels, probs, n_bins=2) == pytest.approx(0.25)
    # Ten bins: {.9, .9} accuracy 1/2 vs .9 -> .4 * 2/4; {.6, .6} accuracy 1/2 vs .6 -> .1 * 2/4.
    assert expected_calibration_error(labels, probs, n_bins=10) == pytest.approx(0.25)
    perfect = np.eye(3)
    assert expected_calibration_error([0, 1, 2], perfect) == pytest.approx(0.0)


def test_evaluate_is_json_ready_and_keyed_by_class_id() -> None:
    result = evaluate(LABELS, PROBS, class_ids=[10, 20, 30])
    assert result["test_images"] == 5 and result["unknown_class_images"] == 1
    assert result["accuracy"] == pytest.approx(0.6)
    assert result["top5_accuracy"] == pytest.approx(0.8)
    assert result["per_class"]["30"] == {"precision": 1.0, "recall": 0.5, "support": 2}
    assert result["confusion_matrix"]["class_ids"] == [10, 20, 30]
    assert result["confusion_matrix"]["counts"][2] == [0, 1, 1]
    import json

    json.dumps(result)
