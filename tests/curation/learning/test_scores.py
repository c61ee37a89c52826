"""Uncertainty, disagreement, label-issue and novelty scores on hand-made and synthetic arrays."""

from __future__ import annotations

import math

# cleanlab, scikit-learn, SciPy and pandas take about 2 s to import; importing them
# at collection keeps that one-off cost out of the timing of whichever test runs first.
import cleanlab.filter  # noqa: F401
import numpy as np
import pytest
from numpy.typing import ArrayLike, NDArray

from curation.learning.scores import (
    class_centroids,
    entropy,
    label_issue_scores,
    least_confidence,
    margin,
    novelty,
    out_of_sample_probabilities,
    reporter_disagreement,
    top_k,
)

TWO_ROWS = [[0.5, 0.5], [1.0, 0.0]]
THREE_CLASS = [[0.7, 0.2, 0.1], [0.25, 0.25, 0.25, 0.25]]


def _blobs(
    rng: np.random.Generator, centres: NDArray[np.float64], per_blob: int
) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """Isotropic Gaussian blobs of unit spread around ``centres``, labelled by blob."""
    points = np.vstack(
        [centre + rng.normal(size=(per_blob, centres.shape[1])) for centre in centres]
    )
    return points, np.repeat(np.arange(len(centres), dtype=np.int64), per_blob)


def _auc(negatives: NDArray[np.float64], positives: NDArray[np.float64]) -> float:
    """Probability that a random positive scores above a random negative (ties count half)."""
    above = (positives[:, None] > negatives[None, :]).mean()
    tied = (positives[:, None] == negatives[None, :]).mean()
    return float(above + tied / 2)


def _at_angles(degrees: list[float]) -> NDArray[np.float64]:
    radians = np.deg2rad(degrees)
    return np.stack([np.cos(radians), np.sin(radians)], axis=1)


# --- uncertainty --------------------------------------------------------------


def test_uncertainty_scores_of_a_tie_and_a_certain_row() -> None:
    np.testing.assert_allclose(entropy(TWO_ROWS), [1.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(margin(TWO_ROWS), [0.0, 1.0], atol=1e-12)
    np.testing.assert_allclose(least_confidence(TWO_ROWS), [0.5, 0.0], atol=1e-12)


def test_entropy_is_normalised_by_log_of_the_class_count() -> None:
    skewed = -(0.7 * math.log(0.7) + 0.2 * math.log(0.2) + 0.1 * math.log(0.1)) / math.log(3)
    np.testing.assert_allclose(entropy([THREE_CLASS[0]]), [skewed], rtol=1e-12)
    np.testing.assert_allclose(entropy([THREE_CLASS[1]]), [1.0], rtol=1e-12)


def test_margin_and_least_confidence_of_larger_rows() -> None:
    np.testing.assert_allclose(margin([THREE_CLASS[0]]), [0.5], atol=1e-12)
    np.testing.assert_allclose(margin([THREE_CLASS[1]]), [0.0], atol=1e-12)
    np.testing.assert_allclose(least_confidence([THREE_CLASS[0]]), [0.3], atol=1e-12)
    np.testing.assert_allclose(least_confidence([THREE_CLASS[1]]), [0.75], atol=1e-12)


def test_single_class_is_certain() -> None:
    np.testing.assert_array_equal(entropy([[1.0], [1.0]]), [0.0, 0.0])
    np.testing.assert_array_equal(margin([[1.0]]), [1.0])


@pytest.mark.parametrize(
    "bad",
    [[[0.5, 0.6]], [[-0.1, 1.1]], [0.5, 0.5], [[np.nan, 1.0]], [[2.0, -1.0]]],
    ids=["sum", "negative", "1-d", "nan", "outside"],
)
def test_probabilities_are_checked(bad: ArrayLike) -> None:
    with pytest.raises(ValueError):
        entropy(bad)


def test_top_k_sorts_descending() -> None:
    indices, values = top_k([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3]], k=2)
    np.testing.assert_array_equal(indices, [[1, 2], [0, 2]])
    np.testing.assert_allclose(values, [[0.6, 0.3], [0.5, 0.3]])
    assert indices.dtype == np.int64


def test_top_k_of_every_class_breaks_ties_by_index() -> None:
    indices, values = top_k([[0.25, 0.5, 0.25]], k=3)
    np.testing.assert_array_equal(indices, [[1, 0, 2]])
    np.testing.assert_allclose(values, [[0.5, 0.25, 0.25]])
    # Long enough for NumPy's unstable sorts to reorder equal values.
    uniform = np.full((1, 64), 1 / 64)
    np.testing.assert_array_equal(top_k(uniform, k=64)[0], [np.arange(64)])


@pytest.mark.parametrize("k", [0, 4])
def test_top_k_refuses_k_outside_the_class_count(k: int) -> None:
    with pytest.raises(ValueError):
        top_k([[0.1, 0.6, 0.3]], k=k)


# --- disagreement with a reporter ---------------------------------------------


def test_reporter_disagreement_is_one_minus_the_claimed_probability() -> None:
    probs = [[0.1, 0.6, 0.3], [0.2, 0.2, 0.6], [0.7, 0.2, 0.1]]
    disagreement, preferred = reporter_disagreement(probs, [1, 0, -1])
    np.testing.assert_allclose(disagreement[:2], [0.4, 0.8], atol=1e-12)
    assert np.isnan(disagreement[2])  # unknown claim: no opinion, not agreement
    np.testing.assert_array_equal(preferred, [1, 2, 0])


@pytest.mark.parametrize("claimed", [[3], [-2], [0.5]], ids=["too-large", "below-minus-1", "float"])
def test_reporter_claims_are_checked(claimed: list[float]) -> None:
    with pytest.raises(ValueError):
        reporter_disagreement([[0.1, 0.6, 0.3]], claimed)


# --- label issues -------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:May not flag all label issues")  # a one-member class
def test_label_issue_score_is_the_probability_the_label_is_wrong() -> None:
    probs = [[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.1, 0.9]]
    scores, flagged = label_issue_scores([0, 1, 1, 1], probs)
    np.testing.assert_allclose(scores, [0.1, 0.8, 0.3, 0.1], atol=1e-12)
    assert flagged.dtype == np.bool_ and flagged.shape == (4,)


def test_flipped_labels_rank_first_and_are_flagged() -> None:
    rng = np.random.default_rng(7)
    centres = rng.normal(size=(3, 16)) * 4
    embeddings, true_labels = _blobs(rng, centres, per_blob=20)
    flipped = np.array([1, 5, 22, 27, 43, 48])
    given = true_labels.copy()
    given[flipped] = (true_labels[flipped] + 1) % 3

    probs = out_of_sample_probabilities(embeddings, given, n_folds=5, seed=0)
    scores, flagged = label_issue_scores(given, probs)

    assert set(np.argsort(-scores)[: flipped.size].tolist()) == set(flipped.tolist())
    assert flagged[flipped].sum() >= 4
    assert flagged.sum() - flagged[flipped].sum() <= 2


def test_out_of_sample_probabilities_align_with_label_indices() -> None:
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(3, 6)) * 4
    embeddings, labels = _blobs(rng, centres, per_blob=12)
    probs = out_of_sample_probabilities(embeddings, labels, n_classes=4, seed=1)

    assert probs.shape == (36, 4)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-9)
    np.testing.assert_array_equal(probs[:, 3], 0.0)  # a class with no rows
    assert (probs.argmax(axis=1) == labels).mean() > 0.95


def test_out_of_sample_probabilities_handle_classes_smaller_than_the_folds() -> None:
    rng = np.random.default_rng(4)
    centres = rng.normal(size=(4, 6)) * 4
    embeddings, labels = _blobs(rng, centres, per_blob=10)
    # Shrink class 2 to two members and class 3 to a single member.
    keep = np.concatenate([np.arange(20), [20, 21], [30]])
    embeddings, labels = embeddings[keep], labels[keep]

    probs = out_of_sample_probabilities(embeddings, labels, n_folds=5, seed=0)

    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-9)
    # Every fold's training set kept every class, so no column is ever forced to 0.
    assert (probs > 0).all()
    # The two-member class is held out one member at a time and still recognised.
    assert (probs[[20, 21]].argmax(axis=1) == 2).all()


def test_out_of_sample_probabilities_need_two_classes() -> None:
    with pytest.raises(ValueError):
        out_of_sample_probabilities(np.ones((4, 2)), [0, 0, 0, 0])


# --- novelty ------------------------------------------------------------------


def test_class_centroids_are_unit_mean_directions() -> None:
    embeddings = np.array([[2.0, 0.0], [0.0, 5.0], [0.0, 1.0], [3.0, 0.0]])
    centroids = class_centroids(embeddings, [0, 0, 1, 1], n_classes=3)
    half = math.sqrt(0.5)
    np.testing.assert_allclose(centroids, [[half, half], [half, half], [0.0, 0.0]], atol=1e-7)


def test_novelty_is_the_fraction_of_labelled_images_closer_to_their_class() -> None:
    # Class 0 at 0, 20 and 40 degrees, class 1 at 90, 110 and 130. Leave-one-out
    # distances to the own centroid: 1 - cos 30 for the outer members, 0 for the
    # middle ones, so the reference is {0, 0, 0.134, 0.134, 0.134, 0.134}.
    labelled = _at_angles([0, 20, 40, 90, 110, 130])
    labels = np.array([0, 0, 0, 1, 1, 1])
    centroids = class_centroids(labelled, labels, n_classes=2)
    # 10 degrees lies 1 - cos 10 = 0.015 from class 0's centroid (20 degrees) and
    # 45 degrees 1 - cos 25 = 0.094: both above the two zeros only. (Against
    # in-sample distances, 0.06 for the outer members, 45 degrees would score 1.)
    # 65 and 250 degrees lie farther than every reference.
    scores = novelty(
        _at_angles([10, 45, 65, 250]),
        class_centroids=centroids,
        labelled_embeddings=labelled,
        labelled_labels=labels,
        n_neighbours=0,
    )
    np.testing.assert_allclose(scores, [2 / 6, 2 / 6, 1.0, 1.0])


@pytest.mark.parametrize("n_neighbours", [0, 5])
def test_images_of_an_unknown_landmark_are_more_novel(n_neighbours: int) -> None:
    rng = np.random.default_rng(11)
    centres = rng.normal(size=(4, 16)) * 3
    labelled, labels = _blobs(rng, centres[:3], per_blob=20)
    held_out_known, _ = _blobs(rng, centres[:3], per_blob=10)
    unknown, _ = _blobs(rng, centres[3:], per_blob=15)

    scores = novelty(
        np.vstack([held_out_known, unknown]),
        class_centroids=class_centroids(labelled, labels, n_classes=3),
        labelled_embeddings=labelled,
        labelled_labels=labels,
        n_neighbours=n_neighbours,
    )

    assert ((scores >= 0) & (scores <= 1)).all()
    known_scores, unknown_scores = scores[: len(held_out_known)], scores[len(held_out_known) :]
    assert _auc(known_scores, unknown_scores) > 0.9
    # Calibrated: held-out images of known classes look like the labelled ones.
    assert 0.2 < np.median(known_scores) < 0.8


def test_novelty_needs_a_class_with_two_images() -> None:
    labelled = _at_angles([0, 90])
    labels = np.array([0, 1])
    with pytest.raises(ValueError):
        novelty(
            _at_angles([45]),
            class_centroids=class_centroids(labelled, labels, n_classes=2),
            labelled_embeddings=labelled,
            labelled_labels=labels,
        )
