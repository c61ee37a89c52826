"""The active-learning simulation: mechanics on synthetic blobs, the target on porto5."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from curation.evaluation import active_learning as al
from curation.evaluation.folder import group_split, near_duplicate_groups
from tests.conftest import SHARED_WEIGHTS, shared_data


def blobs(n_per_class: int = 60, n_classes: int = 4, dim: int = 16, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_classes, dim)) * 3
    labels = np.repeat(np.arange(n_classes), n_per_class)
    points = centres[labels] + rng.normal(size=(labels.size, dim))
    return points.astype(np.float32), labels.astype(np.int64)


def view_of(points, labels, labelled, *, seed=0, round_index=0):
    probe = al.fit_probe(points[labelled], labels[labelled], n_classes=int(labels.max()) + 1)
    return al.RoundView(
        embeddings=points,
        labelled=labelled,
        labels=np.where(labelled, labels, -1),
        probabilities=probe.predict_proba(points),
        n_classes=int(labels.max()) + 1,
        round_index=round_index,
        seed=seed,
    )


@pytest.mark.parametrize("name", list(al.STRATEGIES))
def test_strategies_pick_distinct_unlabelled_rows_deterministically(name: str) -> None:
    points, labels = blobs()
    spec = al.STRATEGIES[name]
    start = spec.start(points, labels, 2, 7)
    assert start.size == 8 and np.unique(start).size == 8
    labelled = np.zeros(labels.size, dtype=bool)
    labelled[start] = True
    first = spec.pick(view_of(points, labels, labelled, seed=7), 10)
    again = spec.pick(view_of(points, labels, labelled, seed=7), 10)
    assert np.array_equal(first, again)
    assert first.size == 10 and np.unique(first).size == 10
    assert not labelled[first].any()


def test_simulation_is_deterministic_and_ends_with_every_label() -> None:
    points, labels = blobs()
    test = np.zeros(labels.size, dtype=bool)
    test[::5] = True
    runs = [
        al.simulate(
            points,
            labels,
            pool=~test,
            test=test,
            strategy=al.STRATEGIES[al.DEFAULT_STRATEGY],
            start_per_class=2,
            batch=30,
            seed=3,
        )
        for _ in range(2)
    ]
    (budgets, accuracy, batches), (budgets2, accuracy2, batches2) = runs
    assert all(np.array_equal(a, b) for a, b in zip(batches, batches2, strict=True))
    assert np.array_equal(budgets, budgets2) and np.array_equal(accuracy, accuracy2)
    assert budgets[0] == 8 and budgets[-1] == (~test).sum()
    assert np.all(np.diff(budgets) > 0) and np.all(np.diff(budgets)[:-1] == 30)
    chosen = np.concatenate(batches)
    assert np.unique(chosen).size == chosen.size
    assert not test[chosen].any()
    full = al.fit_probe(points[~test], labels[~test], n_classes=4)
    assert accuracy[-1] == np.mean(full.predict_proba(points[test]).argmax(1) == labels[test])


def test_seeds_in_worker_processes_give_the_same_curves(monkeypatch) -> None:
    points, labels = blobs(n_per_class=40)
    groups = np.arange(labels.size)
    settings = dict(
        group_ids=groups,
        strategies=["random", al.DEFAULT_STRATEGY],
        seeds=[0, 1, 2],
        start_per_class=2,
        batch=25,
    )
    seen: list[tuple[str, int]] = []
    pools: list[int] = []

    class CountedPool(al.ProcessPoolExecutor):
        def __init__(self, workers, **kwargs):
            pools.append(workers)
            super().__init__(workers, **kwargs)

    monkeypatch.setattr(al, "ProcessPoolExecutor", CountedPool)
    alone = al.run_benchmark(points, labels, **settings)
    assert pools == []
    side_by_side = al.run_benchmark(
        points, labels, jobs=2, progress=lambda name, k: seen.append((name, k)), **settings
    )
    assert pools == [2]
    assert np.array_equal(alone.accuracy, side_by_side.accuracy)
    assert np.array_equal(alone.full_accuracy, side_by_side.full_accuracy)
    assert np.array_equal(alone.budgets, side_by_side.budgets)
    assert alone.accuracy.shape == (2, 3, alone.budgets.size)
    assert seen == [(name, k) for k in range(3) for name in settings["strategies"]]
    with pytest.raises(ValueError, match="jobs"):
        al.run_benchmark(points, labels, jobs=0, **settings)
    with pytest.raises(ValueError, match="one seed"):
        al.run_benchmark(points, labels, **{**settings, "seeds": []})


def test_labels_to_reach_interpolates() -> None:
    budgets = np.array([10, 30, 50])
    accuracy = np.array([0.5, 0.7, 0.9])
    assert al.labels_to_reach(budgets, accuracy, 0.8) == pytest.approx(40.0)
    assert al.labels_to_reach(budgets, accuracy, 0.4) == 10.0
    assert al.labels_to_reach(budgets, accuracy, 0.95) == math.inf
    # The first crossing counts, even if the curve dips again afterwards.
    assert al.labels_to_reach(budgets, np.array([0.5, 0.9, 0.7]), 0.8) == pytest.approx(25.0)


def test_ratio_to_random_is_mean_labels_over_randoms_mean() -> None:
    budgets = np.array([10, 20, 30, 40])
    random = [[0.0, 0.5, 0.95, 1.0], [0.0, 0.5, 0.5, 1.0]]  # reaches 95% at 30 and 39
    fast = [[0.95, 1.0, 1.0, 1.0], [0.0, 1.0, 1.0, 1.0]]  # at 10 and 19.5
    curves = al.Curves(
        strategies=["random", "fast"],
        seeds=[0, 1],
        budgets=budgets,
        accuracy=np.asarray([random, fast]),
        full_accuracy=np.asarray([1.0, 1.0]),
        pool_size=40,
        test_size=10,
    )
    summary = al.summarise(curves)
    assert summary["labels_needed"]["fast"]["0.95"] == pytest.approx([10.0, 19.5])
    assert summary["labels_needed"]["random"]["0.95"] == pytest.approx([30.0, 39.0])
    assert summary["ratio_to_random"]["fast"]["0.95"] == pytest.approx(29.5 / 69.0)
    assert summary["mean_seed_ratio"]["fast"]["0.95"] == pytest.approx((10 / 30 + 19.5 / 39) / 2)
    assert summary["ratio_to_random"]["random"]["0.99"] == pytest.approx(1.0)
    # Two seeds resampled in pairs: each draw is seed 0, seed 1, or both.
    low, high = summary["ratio_interval"]["fast"]["0.95"]
    assert low == pytest.approx(10 / 30) and high == pytest.approx(19.5 / 39)
    assert summary["ratio_interval"]["random"]["0.95"] == pytest.approx([1.0, 1.0])
    gap = al.shortfall(curves, strategy="fast", against=["random"])
    assert gap.max() <= 0


def test_group_split_keeps_groups_whole_and_stratifies() -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 100)
    # groups of 1 to 6 rows within each class
    group_ids = np.concatenate(
        [np.repeat(np.arange(40) + 100 * c, rng.integers(1, 7, 40))[:100] for c in range(3)]
    )
    for seed in range(5):
        test = group_split(group_ids, labels, test_share=0.25, seed=seed)
        for group in np.unique(group_ids):
            assert np.unique(test[group_ids == group]).size == 1
        for c in range(3):
            share = test[labels == c].mean()
            assert 0.15 <= share <= 0.35
    assert np.array_equal(
        group_split(group_ids, labels, test_share=0.25, seed=1),
        group_split(group_ids, labels, test_share=0.25, seed=1),
    )


def test_near_duplicate_groups_are_transitive() -> None:
    base = np.uint64(0)
    one = np.uint64((1 << 8) - 1)  # 8 bits from base
    two = np.uint64((1 << 16) - 1)  # 8 bits from one, 16 from base
    far = np.uint64((1 << 64) - 1)
    groups = near_duplicate_groups(
        np.asarray([far, base, two, one], dtype=np.uint64), max_distance=10
    )
    assert groups.tolist() == [0, 1, 1, 1]
    alone = near_duplicate_groups(np.asarray([base, two], dtype=np.uint64), max_distance=10)
    assert alone.tolist() == [0, 1]


# ---------------------------------------------------------------------------
# The target, on real photos

# Mean accuracy over 3 seeds moves by one test image in ~280 per seed (0.0036);
# "at least as good at every budget" allows one image's worth of noise on average.
EVERY_BUDGET_TOLERANCE = 0.01


@pytest.mark.slow
@pytest.mark.shared_data
def test_default_beats_random_on_porto5(tmp_path: Path) -> None:
    from curation.cli import main

    porto5 = shared_data("porto5")
    weights = SHARED_WEIGHTS / "mobilenet_2_5_224_tf_no_top.h5"
    if not weights.exists():
        pytest.skip(f"{weights} is absent")
    result = CliRunner().invoke(
        main,
        [
            "bench",
            "al",
            "--data",
            str(porto5),
            "--seeds",
            "8",
            "--start-per-class",
            "2",
            "--batch",
            "20",
            "--strategies",
            f"random,uncertainty,{al.DEFAULT_STRATEGY}",
            "--backbone",
            "mobilenet_0.25",
            "--weights",
            str(weights),
            "--cache-dir",
            str(tmp_path / "cache"),
            "--out",
            str(tmp_path / "out"),
            "--json",
        ],
        env={"CURATION_DATA_DIR": str(tmp_path / "var")},
    )
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out" / "al.json").read_text())
    assert (tmp_path / "out" / "al.png").stat().st_size > 0
    ratios = report["ratio_to_random"][al.DEFAULT_STRATEGY]
    margin_only = report["ratio_to_random"]["uncertainty"]
    # Issue 6 asks for at most 0.55 and 0.45. Measured (the head standardised
    # by the pool and self-trained, novelty left out while no landmark can be
    # missing; seeds 0-7): 0.513 and 0.324, largest shortfall +0.0080 at 190
    # labels (standard error 0.0035); over 400 seeds 0.502 [0.480, 0.525] and
    # 0.357 [0.342, 0.374], shortfall +0.0010; every 100-seed slice meets both.
    # Before self-training seeds 0-9 gave 0.543 and 0.530.
    assert ratios["0.95"] <= 0.55, ratios
    assert ratios["0.99"] <= 0.45, ratios
    for share in ("0.95", "0.99"):
        assert ratios[share] < margin_only[share], (ratios, margin_only)
    shortfall = report["default_shortfall_vs_best_simple"]
    assert shortfall["against"] == ["random", "uncertainty"]
    assert shortfall["max"] <= EVERY_BUDGET_TOLERANCE, shortfall


def test_bench_al_runs_the_seeds_asked_for_and_reports_the_shortfalls_error(
    tmp_path: Path,
) -> None:
    """``--first-seed`` moves the seeds (to judge a tuned strategy on fresh ones);
    the shortfall comes with its paired standard error. Generated images, random weights."""
    from PIL import Image

    from curation.cli import main

    rng = np.random.default_rng(0)
    for c, colour in enumerate([(200, 40, 40), (40, 200, 40), (40, 40, 200)]):
        folder = tmp_path / "data" / f"class {c}"
        folder.mkdir(parents=True)
        for k in range(8):
            pixels = np.clip(rng.normal(colour, 60, size=(48, 48, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{k}.png")
    result = CliRunner().invoke(
        main,
        [
            "bench",
            "al",
            "--data",
            str(tmp_path / "data"),
            "--seeds",
            "2",
            "--first-seed",
            "5",
            "--jobs",
            "1",
            "--batch",
            "4",
            "--strategies",
            f"uncertainty,{al.DEFAULT_STRATEGY}",
            "--backbone",
            "mobilenet_0.25",
            "--weights",
            "none",
            "--cache-dir",
            str(tmp_path / "cache"),
            "--out",
            str(tmp_path / "out"),
        ],
        env={"CURATION_DATA_DIR": str(tmp_path / "var")},
    )
    assert result.exit_code == 0, result.output
    assert "standard error over seeds" in result.output
    report = json.loads((tmp_path / "out" / "al.json").read_text())
    assert report["seeds"] == [5, 6]
    shortfall = report["default_shortfall_vs_best_simple"]
    assert len(shortfall["standard_error"]) == len(report["budgets"])
    assert all(math.isfinite(error) and error >= 0 for error in shortfall["standard_error"])
    assert shortfall["at_labels"] in report["budgets"]


def test_shortfall_standard_error_is_paired_by_seed() -> None:
    # The default trails by exactly 0.1 under both seeds although the seeds
    # differ by 0.4: paired, the gap has no spread at all.
    curves = al.Curves(
        strategies=["random", "default"],
        seeds=[0, 1],
        budgets=np.array([10, 20]),
        accuracy=np.asarray([[[0.5, 0.9], [0.9, 0.9]], [[0.4, 0.9], [0.8, 0.9]]]),
        full_accuracy=np.asarray([0.9, 0.9]),
        pool_size=20,
        test_size=10,
    )
    gap = al.shortfall(curves, strategy="default", against=["random"])
    error = al.shortfall_standard_error(curves, strategy="default", against=["random"])
    np.testing.assert_allclose(gap, [0.1, 0.0])
    np.testing.assert_allclose(error, [0.0, 0.0], atol=1e-12)
    one_seed = al.Curves(
        strategies=curves.strategies,
        seeds=[0],
        budgets=curves.budgets,
        accuracy=curves.accuracy[:, :1],
        full_accuracy=curves.full_accuracy[:1],
        pool_size=20,
        test_size=10,
    )
    assert np.isnan(
        al.shortfall_standard_error(one_seed, strategy="default", against=["random"])
    ).all()


def test_the_probe_is_standardised_by_and_self_trained_on_the_pool_as_a_head_on_its_space(
    monkeypatch,
) -> None:
    points, labels = blobs()
    test = np.zeros(labels.size, dtype=bool)
    test[::5] = True
    real = al.fit_probe
    references, unlabelled = [], []

    def recording(*args, **kwargs):
        references.append(kwargs.get("reference"))
        unlabelled.append(kwargs.get("unlabelled"))
        return real(*args, **kwargs)

    monkeypatch.setattr(al, "fit_probe", recording)
    budgets, _, _ = al.simulate(
        points,
        labels,
        pool=~test,
        test=test,
        strategy=al.STRATEGIES["random"],
        start_per_class=2,
        batch=60,
        seed=0,
    )
    assert len(references) == budgets.size
    assert all(np.array_equal(r, points[~test]) for r in references)
    # Self-trained on the rest of the pool, as the head on the rest of its space.
    assert [len(u) for u in unlabelled] == [(~test).sum() - b for b in budgets]
    few = real(points[:12], labels[:12], n_classes=4, reference=points[~test])
    np.testing.assert_allclose(few.mean, points[~test].astype(np.float64).mean(axis=0))
    np.testing.assert_allclose(few.scale, points[~test].astype(np.float64).std(axis=0) + 1e-6)


def test_the_probe_learns_the_rows_it_is_sure_of_as_self_train_head_does() -> None:
    from curation.learning.head import centroids_and_own_distances, confident_and_typical

    points, labels = blobs(seed=4)
    few = np.concatenate([np.flatnonzero(labels == c)[:2] for c in range(4)])
    rest = np.setdiff1d(np.arange(labels.size), few)
    once = al.fit_probe(points[few], labels[few], n_classes=4, reference=points)
    twice = al.fit_probe(
        points[few], labels[few], n_classes=4, reference=points, unlabelled=points[rest]
    )
    standard = (points[few] - once.mean) / once.scale
    centroids, own = centroids_and_own_distances(standard.astype(np.float32), labels[few], 4)
    others = (points[rest] - once.mean) / once.scale
    unit = others / np.linalg.norm(others, axis=1, keepdims=True)
    sure = confident_and_typical(
        once.predict_proba(points[rest]), 1 - (unit @ centroids.T).max(axis=1), own
    )
    guessed = once.predict_proba(points[rest]).argmax(axis=1)
    by_hand = al._fit_standardised(
        np.concatenate([points[few], points[rest][sure]]).astype(np.float64),
        np.concatenate([labels[few], guessed[sure]]),
        mean=once.mean,
        scale=once.scale,
        n_classes=4,
        l2=al.HEAD_L2,
    )
    assert 0 < sure.sum() < rest.size
    np.testing.assert_allclose(twice.weights, by_hand.weights, rtol=1e-6, atol=1e-9)
    assert not np.allclose(twice.weights, once.weights)


@pytest.mark.parametrize("class_2_labelled", [True, False])
def test_the_default_pick_counts_novelty_only_while_a_class_has_no_label(
    class_2_labelled: bool,
) -> None:
    """The simulation mirrors the live rule. Far rows are under a fifth of the
    unlabelled ones either way, so only a class without a label turns novelty
    on: then the rows far from the known classes lead the picks; with every
    class learnt, the six far rows wait."""
    points, labels = blobs(n_per_class=60, n_classes=3)
    keep = np.concatenate([np.flatnonzero(labels < 2), np.flatnonzero(labels == 2)[:8]])
    points, labels = points[keep], labels[keep]
    dim = points.shape[1]
    far = np.random.default_rng(1).normal(size=(6, dim)).astype(np.float32) * 0.1
    far += 40.0 * np.eye(1, dim, dim - 1, dtype=np.float32)
    points = np.concatenate([points, far])
    labels = np.concatenate([labels, np.zeros(6, dtype=np.int64)])
    far_rows = np.arange(labels.size - 6, labels.size)
    labelled = np.zeros(labels.size, dtype=bool)
    per_class = {0: 27, 1: 27, 2: 6} if class_2_labelled else {0: 20, 1: 20}
    for c, count in per_class.items():
        labelled[np.flatnonzero(labels == c)[:count]] = True
    # The model is sure of every row, so uncertainty alone barely orders them.
    probabilities = np.full((labels.size, 3), 0.01)
    probabilities[np.arange(labels.size), labels] = 0.98
    view = al.RoundView(
        embeddings=points,
        labelled=labelled,
        labels=np.where(labelled, labels, -1),
        probabilities=probabilities,
        n_classes=3,
        round_index=0,
        seed=0,
    )
    picks = al.pick_default(view, 10)
    if class_2_labelled:
        assert not np.isin(far_rows, picks).any(), picks
    else:
        novel = np.concatenate([far_rows, np.flatnonzero(labels == 2)])
        assert np.isin(picks, novel).sum() >= 5, picks  # 7 measured; 0 with novelty off
