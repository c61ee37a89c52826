"""Classification metrics on a held-out split: arrays in, numbers out.

Labels are indices into the model's classes, ``-1`` for an item whose true
class the model does not have (it counts as a miss for every metric that
asks whether the prediction was right). Probabilities are (N, C) rows
summing to 1.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray


def _labels(labels: ArrayLike) -> NDArray[np.int64]:
    return np.asarray(labels, dtype=np.int64).reshape(-1)


def _probabilities(probabilities: ArrayLike, n: int) -> NDArray[np.float64]:
    probs = np.asarray(probabilities, dtype=np.float64)
    if probs.ndim != 2 or len(probs) != n:
        raise ValueError(f"probabilities must be (N, C) with N = {n}, got {probs.shape}")
    return probs


def accuracy(labels: ArrayLike, probabilities: ArrayLike) -> float:
    """Share of items whose most probable class is the true one, in [0, 1]; NaN if empty."""
    y = _labels(labels)
    if len(y) == 0:
        return float("nan")
    probs = _probabilities(probabilities, len(y))
    return float(np.mean(probs.argmax(axis=1) == y))


def top_k_accuracy(labels: ArrayLike, probabilities: ArrayLike, *, k: int = 5) -> float:
    """Share of items whose true class is among the k most probable (ties: lower index first)."""
    y = _labels(labels)
    if len(y) == 0:
        return float("nan")
    probs = _probabilities(probabilities, len(y))
    k = min(k, probs.shape[1])
    # Stable sort of the negated rows: among equal probabilities the lower
    # class index ranks first, as argmax does.
    top = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return float(np.mean(np.any(top == y[:, None], axis=1)))


def confusion_matrix(
    labels: ArrayLike, predictions: ArrayLike, *, n_classes: int
) -> NDArray[np.int64]:
    """(C, C) counts: row = true class, column = predicted class. Items labelled -1 are left out."""
    y = _labels(labels)
    p = _labels(predictions)
    keep = y >= 0
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (y[keep], p[keep]), 1)
    return matrix


def per_class_precision_recall(
    labels: ArrayLike, predictions: ArrayLike, *, n_classes: int
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.int64]]:
    """(C,) precision, (C,) recall, (C,) support (true items per class).

    Precision of a class never predicted, and recall of a class with no true
    item, are NaN (undefined, not zero). A prediction for an item of an
    unknown class (-1) counts against the predicted class's precision.
    """
    y = _labels(labels)
    p = _labels(predictions)
    support = np.bincount(y[y >= 0], minlength=n_classes).astype(np.int64)
    predicted = np.bincount(p, minlength=n_classes).astype(np.int64)
    correct = np.bincount(p[p == y], minlength=n_classes).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(predicted > 0, correct / predicted, np.nan)
        recall = np.where(support > 0, correct / support, np.nan)
    return precision, recall, support


def expected_calibration_error(
    labels: ArrayLike, probabilities: ArrayLike, *, n_bins: int = 15
) -> float:
    """ECE of the top-class confidence, equal-width bins on (0, 1], in [0, 1].

    Sum over bins of (items in bin / N) * |accuracy in bin - mean confidence in bin|.
    """
    y = _labels(labels)
    if len(y) == 0:
        return float("nan")
    probs = _probabilities(probabilities, len(y))
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == y).astype(np.float64)
    # Bin b holds confidences in (b/n, (b+1)/n]; a confidence of 0 joins bin 0.
    bins = np.clip(np.ceil(confidence * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    total = 0.0
    for b in np.unique(bins):
        inside = bins == b
        total += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return float(total)


def evaluate(
    labels: ArrayLike, probabilities: ArrayLike, *, class_ids: list[int], top_k: int = 5
) -> dict[str, Any]:
    """Every metric above as a JSON-ready dict; per-class numbers keyed by class id (str).

    ``labels``: (N,) indices into ``class_ids`` or -1; ``probabilities``: (N, C).
    """
    y = _labels(labels)
    n_classes = len(class_ids)
    probs = _probabilities(probabilities, len(y))
    predictions = probs.argmax(axis=1) if len(y) else np.zeros(0, dtype=np.int64)
    precision, recall, support = per_class_precision_recall(y, predictions, n_classes=n_classes)

    def number(value: float) -> float | None:
        return None if np.isnan(value) else round(float(value), 6)

    return {
        "test_images": len(y),
        "unknown_class_images": int(np.sum(y < 0)),
        "accuracy": number(accuracy(y, probs)),
        f"top{top_k}_accuracy": number(top_k_accuracy(y, probs, k=top_k)),
        "expected_calibration_error": number(expected_calibration_error(y, probs)),
        "per_class": {
            str(class_id): {
                "precision": number(precision[i]),
                "recall": number(recall[i]),
                "support": int(support[i]),
            }
            for i, class_id in enumerate(class_ids)
        },
        "confusion_matrix": {
            "class_ids": list(class_ids),
            "counts": confusion_matrix(y, predictions, n_classes=n_classes).tolist(),
        },
    }
