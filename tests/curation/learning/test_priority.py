from __future__ import annotations

import numpy as np

from curation.learning.priority import (
    ScoredItems,
    Strategy,
    in_random_control,
    priorities,
    reasons_for,
)

NAMES = ["Gyeongbokgung", "Deoksugung", "N Seoul Tower"]


def _items() -> ScoredItems:
    return ScoredItems(
        image_ids=np.array([1, 2, 3, 4]),
        top_classes=np.array([[0, 1, 2], [2, 0, 1], [0, 1, 2], [1, 0, 2]]),
        top_probabilities=np.array(
            [[0.41, 0.38, 0.21], [0.93, 0.05, 0.02], [0.5, 0.3, 0.2], [0.9, 0.05, 0.05]],
            dtype=np.float32,
        ),
        margin=np.array([0.03, 0.88, 0.2, 0.85]),
        novelty=np.array([0.5, 0.4, 0.99, 0.3]),
        disagreement=np.array([np.nan, 0.95, np.nan, np.nan]),
        label_issue=np.array([np.nan, np.nan, np.nan, 0.9]),
        claimed=np.array([-1, 1, -1, -1]),
        labelled=np.array([-1, -1, -1, 2]),
    )


def test_single_strategies_use_their_own_signal() -> None:
    items = _items()
    p, chosen = priorities(items, strategy=Strategy.UNCERTAINTY, random_share=0)
    np.testing.assert_allclose(p, [0.97, 0.12, 0.8, 0.15])
    assert set(chosen) == {"uncertainty"}
    p, _ = priorities(items, strategy=Strategy.DISAGREEMENT, random_share=0)
    np.testing.assert_allclose(p, [0, 0.95, 0, 0])
    p, _ = priorities(items, strategy=Strategy.LABEL_ERROR, random_share=0)
    np.testing.assert_allclose(p, [0, 0, 0, 0.9])


def test_balanced_takes_the_strongest_reason() -> None:
    p, chosen = priorities(_items(), strategy=Strategy.BALANCED, random_share=0)
    assert list(chosen) == ["uncertainty", "disagreement", "novelty", "label_error"]
    np.testing.assert_allclose(p, [0.97, 0.95, 0.9, 0.9], atol=1e-9)


def test_random_control_is_stable_and_about_its_share() -> None:
    ids = np.arange(20000)
    mask = in_random_control(ids, share=0.05, seed=3)
    assert abs(mask.mean() - 0.05) < 0.01
    np.testing.assert_array_equal(mask, in_random_control(ids, share=0.05, seed=3))
    assert not np.array_equal(mask, in_random_control(ids, share=0.05, seed=4))


def test_reasons_read_like_sentences() -> None:
    items = _items()
    assert reasons_for(items, 0, class_names=NAMES, n_known=3)[0] == (
        "the model is torn between Gyeongbokgung 0.41 and Deoksugung 0.38"
    )
    assert reasons_for(items, 1, class_names=NAMES, n_known=3)[0] == (
        "the reporter says Deoksugung, the model is 0.93 sure of N Seoul Tower"
    )
    assert reasons_for(items, 2, class_names=NAMES, n_known=3)[0].startswith(
        "looks like none of the 3 known landmarks"
    )
    assert (
        "labelled N Seoul Tower, but the label looks wrong"
        in reasons_for(items, 3, class_names=NAMES, n_known=3)[0]
    )


def test_top_k_matches_a_full_sort_best_first() -> None:
    from curation.learning.scoring import _top_k

    rng = np.random.default_rng(5)
    probs = rng.dirichlet(np.ones(12), size=300).astype(np.float32)
    top, values = _top_k(probs, 5)
    expected = np.argsort(-probs, axis=1, kind="stable")[:, :5]
    np.testing.assert_array_equal(top, expected)
    np.testing.assert_array_equal(values, np.take_along_axis(probs, expected, axis=1))
    tied = np.asarray([[0.25, 0.25, 0.5]], dtype=np.float32)
    assert _top_k(tied, 3)[0].tolist() == [[2, 0, 1]]  # ties: the lower index first


def test_balanced_weights_uncertainty_by_density_and_can_leave_novelty_out() -> None:
    import dataclasses

    from curation.learning.scores import DENSITY_POWER

    items = dataclasses.replace(_items(), density=np.array([0.5, 1.0, 1.0, 1.0]))
    p, chosen = priorities(items, strategy=Strategy.BALANCED, random_share=0)
    # Item 1 is the most uncertain but a lone outlier: its uncertainty shrinks.
    assert p[0] == np.float64(0.97 * 0.5**DENSITY_POWER)
    assert chosen[0] == "uncertainty"
    assert chosen[2] == "novelty"
    p, chosen = priorities(items, strategy=Strategy.BALANCED, random_share=0, novelty_counts=False)
    np.testing.assert_allclose(p[2], 0.8)  # its uncertainty, novelty left out
    assert chosen[2] == "uncertainty"
    # Plain uncertainty ignores density.
    p, _ = priorities(items, strategy=Strategy.UNCERTAINTY, random_share=0)
    np.testing.assert_allclose(p, [0.97, 0.12, 0.8, 0.15])


def test_random_control_keeps_its_share_at_the_head_of_a_low_scoring_queue() -> None:
    rng = np.random.default_rng(5)
    n = 20_000
    items = ScoredItems(
        image_ids=np.arange(1, n + 1),
        top_classes=np.zeros((n, 2), dtype=np.int64),
        top_probabilities=np.full((n, 2), 0.5, dtype=np.float32),
        margin=1.0 - rng.uniform(0.0, 0.3, n),  # uncertainty at most 0.3
        novelty=np.full(n, 0.5),
        disagreement=np.full(n, np.nan),
        label_issue=np.full(n, np.nan),
        claimed=np.full(n, -1),
        labelled=np.full(n, -1),
    )
    p, chosen = priorities(items, strategy=Strategy.BALANCED, random_share=0.05, seed=3)
    top = np.argsort(-p, kind="stable")[:1000]
    share = float(np.mean(chosen[top] == "random"))
    # Uniform control priorities would fill all of the top 1000.
    assert 0.02 <= share <= 0.09, share
    assert p.max() <= 0.3 + 1e-12
