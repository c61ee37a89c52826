from __future__ import annotations

import numpy as np
import pytest

from curation.learning.head import (
    Head,
    balanced_class_weights,
    confident_and_typical,
    head_from_dense,
    nearest_class_distance,
    novelty_from_distance,
    self_train_head,
    standardisation,
    train_head,
)


def _blobs(seed: int = 0, per_class: int = 40, dim: int = 16, classes: int = 3):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 6, size=(classes + 1, dim))
    x = np.concatenate([centres[c] + rng.normal(0, 1, (per_class, dim)) for c in range(classes)])
    y = np.repeat(np.arange(classes), per_class)
    novel = centres[classes] + rng.normal(0, 1, (per_class, dim))
    return x.astype(np.float32), y, novel.astype(np.float32)


@pytest.fixture(scope="module")
def trained():
    x, y, novel = _blobs()
    head, curves = train_head(x, y, n_classes=3, seed=7, epochs=40)
    return x, y, novel, head, curves


def test_balanced_class_weights_favour_the_rare_class() -> None:
    weights = balanced_class_weights(np.array([0, 0, 0, 1]), 3)
    assert weights == {0: 4 / 6, 1: 2.0, 2: 0.0}


def test_head_learns_separable_classes_and_is_reproducible(trained) -> None:
    x, y, _, head, curves = trained
    again, _ = train_head(x, y, n_classes=3, seed=7, epochs=40)
    probs = head.predict_proba(x)
    assert probs.shape == (120, 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert (probs.argmax(axis=1) == y).mean() > 0.95
    np.testing.assert_allclose(head.weights, again.weights)
    assert "loss" in curves and len(curves["loss"]) >= 1


def test_head_round_trips_through_bytes(trained) -> None:
    x, _, _, head, _ = trained
    restored = Head.from_bytes(head.to_bytes())
    np.testing.assert_array_equal(restored.predict_proba(x), head.predict_proba(x))


def test_novelty_is_high_for_an_unknown_landmark(trained) -> None:
    x, _, novel, head, _ = trained
    known = novelty_from_distance(head, nearest_class_distance(head, x))
    unknown = novelty_from_distance(head, nearest_class_distance(head, novel))
    assert np.median(known) < 0.7
    assert np.median(unknown) > 0.95
    assert np.all((unknown >= 0) & (unknown <= 1))


def test_fused_scoring_equals_the_separate_computations(trained) -> None:
    x, _, novel, head, _ = trained
    both = np.concatenate([x, novel])
    probs, distance = head.probabilities_and_distance(both)
    np.testing.assert_allclose(probs, head.predict_proba(both), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(distance, nearest_class_distance(head, both), atol=1e-5)


def test_a_dense_layer_becomes_a_head_that_answers_as_the_layer() -> None:
    """A fine-tuned classifier's softmax over raw features, folded into a standardising head."""
    rng = np.random.default_rng(4)
    features = np.abs(rng.normal(3.0, 2.0, (60, 8))).astype(np.float32)  # ReLU-like, off-centre
    labels = np.arange(60) % 3
    kernel = rng.normal(0.0, 0.5, (8, 3)).astype(np.float32)
    bias = rng.normal(0.0, 0.5, 3).astype(np.float32)
    head = head_from_dense(kernel, bias, features, labels)
    logits = features.astype(np.float64) @ kernel + bias
    expected = np.exp(logits - logits.max(axis=1, keepdims=True))
    expected /= expected.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(head.predict_proba(features), expected, atol=1e-5)
    # Standardised like a trained head: the centroids and distances novelty reads.
    np.testing.assert_allclose(head.standardise(features).mean(axis=0), 0.0, atol=1e-4)
    assert head.centroids.shape == (3, 8) and head.own_class_distances.shape == (60,)
    with pytest.raises(ValueError, match="does not map"):
        head_from_dense(kernel[:5], bias, features, labels)


def test_a_head_standardises_by_its_reference_not_by_the_rows_the_queue_chose() -> None:
    x, y, novel = _blobs(seed=3)
    space = np.concatenate([x, novel])
    # The queue's picks: the rows nearest their class mean, a narrow, biased sample.
    chosen = np.concatenate(
        [
            np.flatnonzero(y == c)[
                np.argsort(np.linalg.norm(x[y == c] - x[y == c].mean(axis=0), axis=1))[:8]
            ]
            for c in range(3)
        ]
    )
    head, _ = train_head(x[chosen], y[chosen], n_classes=3, reference=space, seed=1, epochs=20)
    np.testing.assert_allclose(head.mean, space.astype(np.float64).mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(head.scale, space.astype(np.float64).std(axis=0) + 1e-6, rtol=1e-5)
    plain, _ = train_head(x[chosen], y[chosen], n_classes=3, seed=1, epochs=20)
    np.testing.assert_allclose(plain.scale, x[chosen].std(axis=0) + 1e-6, rtol=1e-5)
    assert not np.allclose(plain.scale, head.scale, rtol=0.05)


def test_standardisation_falls_back_to_the_training_rows_and_refuses_a_wrong_width() -> None:
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    mean, scale = standardisation(x, x[:1])  # one reference row: no spread to measure
    np.testing.assert_allclose(mean, x.mean(axis=0))
    np.testing.assert_allclose(scale, x.std(axis=0) + 1e-6)
    with pytest.raises(ValueError, match=r"reference must be \(R, 3\)"):
        standardisation(x, np.zeros((5, 4)))


def test_confident_and_typical_needs_both() -> None:
    own = np.linspace(0.1, 0.5, 11)  # the training images' distances to their own class
    probabilities = np.array([[0.95, 0.05], [0.6, 0.4], [0.97, 0.03], [0.99, 0.01]])
    distance = np.array([0.2, 0.2, 0.9, 0.45])  # the third is farther than every training image
    assert confident_and_typical(probabilities, distance, own).tolist() == [
        True,
        False,
        False,
        True,
    ]
    assert confident_and_typical(probabilities[:0], distance[:0], own).shape == (0,)


def test_self_training_learns_the_plain_unlabelled_images_and_not_an_unknown_landmark() -> None:
    x, y, novel = _blobs(seed=5, per_class=60)
    few = np.concatenate([np.flatnonzero(y == c)[:3] for c in range(3)])
    rest = np.setdiff1d(np.arange(len(y)), few)
    unlabelled = np.concatenate([x[rest], novel])
    head, curves, learnt = self_train_head(
        x[few], y[few], unlabelled=unlabelled, n_classes=3, seed=2, epochs=40
    )
    first, first_curves, none = self_train_head(
        x[few], y[few], unlabelled=None, n_classes=3, seed=2, epochs=40
    )
    assert none.shape == (0,) and "loss" in first_curves and "loss" in curves
    probabilities, distance = first.probabilities_and_distance(unlabelled)
    chosen = confident_and_typical(probabilities, distance, first.own_class_distances)
    assert np.array_equal(learnt, chosen) and chosen.sum() > len(rest) // 2
    assert not np.allclose(head.weights, first.weights, atol=1e-3)  # the second fit saw them
    assert not chosen[len(rest) :].any()  # the unknown landmark's images stay unlearnt
    assert (head.predict_proba(x).argmax(axis=1) == y).mean() >= 0.95
    np.testing.assert_allclose(head.centroids, first.centroids)  # novelty: labelled rows only


def test_a_one_class_head_learns_nothing_from_its_guesses() -> None:
    x, y, _ = _blobs(seed=6)
    _, _, learnt = self_train_head(
        x[y == 0], y[y == 0], unlabelled=x[y != 0], n_classes=3, seed=1, epochs=5
    )
    assert learnt.shape == (int((y != 0).sum()),) and not learnt.any()
