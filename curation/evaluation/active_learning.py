"""Simulated active learning: how many labels each selection strategy needs.

Reviewers are simulated and answer with the true label. Every run starts from
``start_per_class`` labels per class (how they are chosen is the strategy's
own cold start: stratified random, or typical images first), then repeats:
train the model on the labelled rows, measure accuracy on a held-out test set,
let the strategy choose the next ``batch`` rows, reveal their labels. The last
round labels the whole pool, so every curve ends at the all-labels accuracy.

The model is the platform's head (:mod:`curation.learning.head`) fitted to
convergence instead of by Adam with early stopping: multinomial logistic
regression on embeddings standardised by the pool's mean and deviation (as
the platform's head is by its space's, :func:`curation.learning.head.standardisation`),
L2 penalty ``l2 * ||W||^2`` on the mean class-balanced
cross-entropy, bias unpenalised; fitted a second time with the unlabelled
pool rows the first fit is sure of, as the head is self-trained on its space
(:func:`curation.learning.head.self_train_head`). Keras would take seconds per fit and a run
fits the model thousands of times; scikit-learn's L-BFGS on the same
objective takes tens of milliseconds.

Arrays in, arrays out: the pool is (N, D) embeddings with (N,) labels; every
index returned by a strategy is a row of the pool.
"""

from __future__ import annotations

import math
import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

from curation.learning.head import (
    HEAD_L2,
    centroids_and_own_distances,
    confident_and_typical,
    nearest_centroid_distance,
    standardisation,
)
from curation.learning.ordering import ORDER_BATCH, TYPICAL_LABELS_PER_CLASS, head_order
from curation.learning.priority import (
    ScoredItems,
    Strategy,
    balanced_counts_novelty,
    far_share,
    priorities,
)
from curation.learning.scores import (
    class_centroids,
    density,
    density_reference,
    entropy,
    margin,
    novelty,
)
from curation.learning.selection import diverse_top, typical_picks

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
BoolArray = NDArray[np.bool_]

TARGET_SHARES: Final = (0.95, 0.99)
DEFAULT_STRATEGY: Final = "default"


# ---------------------------------------------------------------------------
# The model


@dataclass(frozen=True)
class LinearProbe:
    """A fitted softmax head: standardisation, then an affine map over C classes."""

    mean: FloatArray  # (D,)
    scale: FloatArray  # (D,)
    weights: FloatArray  # (D, C); columns of classes absent from training are 0
    bias: FloatArray  # (C,); -inf for classes absent from training

    def predict_proba(self, embeddings: NDArray[np.floating[Any]]) -> FloatArray:
        """(N, D) -> (N, C) probabilities; an absent class gets probability 0."""
        logits = ((np.asarray(embeddings, dtype=np.float64) - self.mean) / self.scale) @ (
            self.weights
        ) + self.bias
        logits -= logits.max(axis=1, keepdims=True)
        np.exp(logits, out=logits)
        logits /= logits.sum(axis=1, keepdims=True)
        return logits


def fit_probe(
    embeddings: NDArray[np.floating[Any]],
    labels: NDArray[np.integer[Any]],
    *,
    n_classes: int,
    l2: float = HEAD_L2,
    reference: NDArray[np.floating[Any]] | None = None,
    unlabelled: NDArray[np.floating[Any]] | None = None,
) -> LinearProbe:
    """Fit the platform's head objective to convergence.

    Parameters
    ----------
    embeddings : (M, D) float, the labelled rows, M >= 1.
    labels : (M,) int in 0..n_classes-1.
    n_classes : C; classes without a labelled row get probability 0.
    l2 : penalty on the kernel, as in ``train_head``.
    reference : (R, D) the rows standardisation is measured on (the pool, as
        a head's space), as in ``train_head``; None: the labelled rows.
    unlabelled : (U, D) rows without a label: fitted a second time with those
        the first fit is sure of, as ``self_train_head`` does; None: one fit.

    Returns
    -------
    The fitted probe. Deterministic: L-BFGS from zeros.
    """
    x = np.asarray(embeddings, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    if x.ndim != 2 or x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise ValueError("embeddings must be (M, D), M >= 1, with one label each")
    mean, scale = standardisation(x, reference)
    probe = _fit_standardised(x, y, mean=mean, scale=scale, n_classes=n_classes, l2=l2)
    if unlabelled is None or len(unlabelled) == 0 or np.unique(y).size < 2:
        return probe
    rest = np.asarray(unlabelled, dtype=np.float64)
    centroids, own = centroids_and_own_distances(
        ((x - mean) / scale).astype(np.float32), y, n_classes
    )
    distance = nearest_centroid_distance((rest - mean) / scale, centroids.astype(np.float64))
    probabilities = probe.predict_proba(rest)
    keep = confident_and_typical(probabilities, distance, own)
    if not keep.any():
        return probe
    return _fit_standardised(
        np.concatenate([x, rest[keep]]),
        np.concatenate([y, probabilities[keep].argmax(axis=1)]),
        mean=mean,
        scale=scale,
        n_classes=n_classes,
        l2=l2,
    )


def _fit_standardised(
    x: FloatArray, y: IntArray, *, mean: FloatArray, scale: FloatArray, n_classes: int, l2: float
) -> LinearProbe:
    """One L-BFGS fit of the head objective on (x - mean) / scale."""
    from sklearn.linear_model import LogisticRegression

    present = np.unique(y)
    weights = np.zeros((x.shape[1], n_classes), dtype=np.float64)
    bias = np.full(n_classes, -np.inf, dtype=np.float64)
    if present.size == 1:
        bias[present[0]] = 0.0
        return LinearProbe(mean=mean, scale=scale, weights=weights, bias=bias)
    # sklearn minimises 0.5 ||W||^2 + C sum_i w_i CE_i; dividing by C M gives the
    # head's mean loss plus l2 ||W||^2 when C = 1 / (2 l2 M).
    model = LogisticRegression(
        C=1.0 / (2.0 * l2 * x.shape[0]), class_weight="balanced", max_iter=1000
    )
    with threadpool_limits(1):  # tiny problems: BLAS threads only contend
        model.fit((x - mean) / scale, y)
    coef = np.asarray(model.coef_, dtype=np.float64)
    intercept = np.asarray(model.intercept_, dtype=np.float64)
    if present.size == 2:  # sklearn keeps one logit for two classes
        coef = np.stack([-coef[0] / 2, coef[0] / 2])
        intercept = np.asarray([-intercept[0] / 2, intercept[0] / 2])
    weights[:, present] = coef.T
    bias[present] = intercept
    return LinearProbe(mean=mean, scale=scale, weights=weights, bias=bias)


# ---------------------------------------------------------------------------
# Strategies


@dataclass(frozen=True)
class RoundView:
    """What a strategy sees in one round.

    ``embeddings``: (N, D) pool; ``labelled``: (N,) bool; ``labels``: (N,) int,
    the revealed class where labelled and -1 elsewhere; ``probabilities``:
    (N, C) from the model trained on the labelled rows; ``round_index``: 0 for
    the first batch after the start.
    """

    embeddings: NDArray[np.float32]
    labelled: BoolArray
    labels: IntArray
    probabilities: FloatArray
    n_classes: int
    round_index: int
    seed: int


Picker = Callable[[RoundView, int], IntArray]
"""(view, batch) -> (batch,) distinct unlabelled pool rows."""
ColdStart = Callable[[NDArray[np.float32], IntArray, int, int], IntArray]
"""(embeddings, true labels, per_class, seed) -> the rows labelled before round 0."""


def _top(score: FloatArray, view: RoundView, batch: int) -> IntArray:
    """The ``batch`` unlabelled rows with the highest score (ties by row)."""
    candidates = np.flatnonzero(~view.labelled)
    order = np.lexsort((candidates, -score[candidates]))
    return candidates[order[:batch]].astype(np.int64)


def _diverse(score: FloatArray, view: RoundView, batch: int, pool_factor: int = 5) -> IntArray:
    """The live queue's pick: top priorities spread out by ``diverse_top``."""
    candidates = np.flatnonzero(~view.labelled)
    chosen = diverse_top(
        np.clip(score[candidates], 0.0, None),
        view.embeddings[candidates],
        k=min(batch, candidates.size),
        pool_factor=pool_factor,
    )
    return candidates[chosen].astype(np.int64)


def pick_random(view: RoundView, batch: int) -> IntArray:
    candidates = np.flatnonzero(~view.labelled)
    rng = np.random.default_rng([view.seed, view.round_index, 1])
    return np.sort(rng.choice(candidates, size=min(batch, candidates.size), replace=False))


def pick_margin(view: RoundView, batch: int) -> IntArray:
    """Plain margin sampling: the smallest top-1 minus top-2 probability."""
    return _top(1.0 - margin(view.probabilities), view, batch)


def pick_entropy(view: RoundView, batch: int) -> IntArray:
    return _top(entropy(view.probabilities), view, batch)


def _novelty(view: RoundView) -> FloatArray:
    labelled = np.flatnonzero(view.labelled)
    vectors = view.embeddings
    centroids = class_centroids(vectors[labelled], view.labels[labelled], n_classes=view.n_classes)
    return novelty(
        vectors,
        class_centroids=centroids,
        labelled_embeddings=vectors[labelled],
        labelled_labels=view.labels[labelled],
    )


def pick_novelty(view: RoundView, batch: int) -> IntArray:
    return _top(_novelty(view), view, batch)


def _scored_pool(view: RoundView, *, with_density: bool) -> ScoredItems:
    """The pool as the live scoring sees it: no reports, no labels among unlabelled images."""
    n_rows = view.labelled.shape[0]
    return ScoredItems(
        image_ids=np.arange(n_rows, dtype=np.int64),
        top_classes=np.zeros((n_rows, 1), dtype=np.int64),
        top_probabilities=np.zeros((n_rows, 1), dtype=np.float32),
        margin=margin(view.probabilities),
        novelty=_novelty(view),
        disagreement=np.full(n_rows, np.nan),
        label_issue=np.full(n_rows, np.nan),
        claimed=np.full(n_rows, -1, dtype=np.int64),
        labelled=np.full(n_rows, -1, dtype=np.int64),
        density=density(
            view.embeddings, reference=density_reference(view.embeddings), population=n_rows
        )
        if with_density
        else None,
    )


def pick_balanced(view: RoundView, batch: int) -> IntArray:
    """``balanced`` without density (no reports, no random control), then ``diverse_top``."""
    items = _scored_pool(view, with_density=False)
    priority, _ = priorities(items, strategy=Strategy.BALANCED, random_share=0.0)
    return _diverse(priority, view, batch)


def pick_margin_diverse(view: RoundView, batch: int) -> IntArray:
    return _diverse(1.0 - margin(view.probabilities), view, batch)


def pick_typiclust_margin(view: RoundView, batch: int) -> IntArray:
    """TypiClust while labels are few, then margin with ``diverse_top`` (no density)."""
    if view.labelled.sum() < TYPICAL_LABELS_PER_CLASS * view.n_classes:
        return typical_picks(view.embeddings, labelled=view.labelled, k=batch, seed=view.seed)
    return pick_margin_diverse(view, batch)


def start_random(
    embeddings: NDArray[np.float32], labels: IntArray, per_class: int, seed: int
) -> IntArray:
    """``per_class`` random rows of every class (fewer where a class has fewer)."""
    rng = np.random.default_rng([seed, 0])
    rows = [
        rng.choice(members, size=min(per_class, members.size), replace=False)
        for members in (np.flatnonzero(labels == c) for c in range(int(labels.max()) + 1))
        if members.size
    ]
    return np.sort(np.concatenate(rows)).astype(np.int64)


def start_typical(
    embeddings: NDArray[np.float32], labels: IntArray, per_class: int, seed: int
) -> IntArray:
    """The live queue's cold start: one typical image of each of ``per_class * C`` clusters.

    Label-blind, as on the platform: the classes it happens to miss are learnt
    later, from the rounds.
    """
    from curation.learning.selection import typical_diverse

    n_classes = int(np.unique(labels).size)
    return np.sort(typical_diverse(embeddings, k=per_class * n_classes, seed=seed))


def start_typiclust(
    embeddings: NDArray[np.float32], labels: IntArray, per_class: int, seed: int
) -> IntArray:
    """``per_class * C`` typical picks from an empty start (label-blind)."""
    n_classes = int(np.unique(labels).size)
    nothing = np.zeros(embeddings.shape[0], dtype=np.bool_)
    return np.sort(typical_picks(embeddings, labelled=nothing, k=per_class * n_classes, seed=seed))


def pick_default(view: RoundView, batch: int) -> IntArray:
    """The live queue's default, through the live code: what the next ``batch`` claims get.

    The ``balanced`` ranking with density-weighted uncertainty (no reports, so
    no disagreement; no label errors among unlabelled images; no random
    control share, which is a measuring device), then the head order a full
    rescoring writes (:func:`curation.learning.ordering.head_order`): typical
    images of uncovered clusters while the labels lack 6 per class, then
    batches spread out by ``diverse_top``. The model knows the classes that
    have a label, as a trained head does; novelty counts while it lacks one of
    the folder's classes or far images abound
    (:func:`curation.learning.priority.balanced_counts_novelty`).
    """
    items = _scored_pool(view, with_density=True)
    known_classes = int(np.unique(view.labels[view.labelled]).size)
    priority, _ = priorities(
        items,
        strategy=Strategy.BALANCED,
        random_share=0.0,
        # Every class of the folder is an active class of the platform's list.
        novelty_counts=balanced_counts_novelty(
            training_images=int(view.labelled.sum()),
            model_classes=known_classes,
            unlearnt_classes=view.n_classes - known_classes,
            far_share=lambda: far_share(items.novelty, ~view.labelled),
        ),
    )
    return head_order(
        priority,
        view.embeddings,
        candidates=~view.labelled,
        labelled=view.labelled,
        n_classes=known_classes,
        length=batch,
        batch=ORDER_BATCH,
        seed=view.seed,
    )


@dataclass(frozen=True)
class StrategySpec:
    """A strategy as simulated: its cold start and its per-round pick."""

    name: str
    start: ColdStart
    pick: Picker
    description: str


STRATEGIES: dict[str, StrategySpec] = {
    spec.name: spec
    for spec in (
        StrategySpec("random", start_random, pick_random, "uniform random batches"),
        StrategySpec(
            "uncertainty", start_random, pick_margin, "plain margin sampling (top-B by 1 - margin)"
        ),
        StrategySpec("entropy", start_random, pick_entropy, "top-B by normalised entropy"),
        StrategySpec("novelty", start_random, pick_novelty, "top-B by novelty"),
        StrategySpec(
            "max_signal",
            start_typical,
            pick_balanced,
            "the queue before density weighting and head ordering: typical cold start,"
            " max of the signals, diverse_top",
        ),
        StrategySpec(
            DEFAULT_STRATEGY,
            start_typiclust,
            pick_default,
            "the live queue's default: TypiClust cold start, typical images of uncovered clusters"
            " up to 6 labels per class, then uncertainty x density^6 (or novelty, while a class"
            " has no label or far images abound)"
            " in diverse batches",
        ),
        StrategySpec(
            "typiclust_margin",
            start_typiclust,
            pick_typiclust_margin,
            "TypiClust up to 6 labels per class, then plain margin with diverse_top",
        ),
        StrategySpec(
            "margin_diverse",
            start_typical,
            pick_margin_diverse,
            "typical cold start, then margin with diverse_top",
        ),
    )
}
SIMPLE_STRATEGIES: Final = ("random", "uncertainty")


# ---------------------------------------------------------------------------
# The simulation


@dataclass(frozen=True)
class Curves:
    """Accuracy against labels, for every strategy and seed.

    ``budgets``: (R,) number of labelled rows at each evaluation, increasing,
    ending at the pool size; ``accuracy``: (S, K, R) test accuracy in [0, 1]
    for S strategies and K seeds; ``full_accuracy``: (K,) accuracy of the model
    trained on the whole pool (equal to the last column).
    """

    strategies: list[str]
    seeds: list[int]
    budgets: IntArray
    accuracy: FloatArray
    full_accuracy: FloatArray
    pool_size: int
    test_size: int
    extra: dict[str, Any] = field(default_factory=dict)


def budgets_for(*, pool_size: int, start: int, batch: int) -> IntArray:
    """(R,) labels after each round: start, start + batch, ..., pool_size."""
    if batch < 1 or not 0 < start <= pool_size:
        raise ValueError("need batch >= 1 and 0 < start <= pool_size")
    steps = list(range(start, pool_size, batch))
    return np.asarray([*steps, pool_size], dtype=np.int64)


def simulate(
    embeddings: NDArray[np.floating[Any]],
    labels: NDArray[np.integer[Any]],
    *,
    pool: BoolArray,
    test: BoolArray,
    strategy: StrategySpec,
    start_per_class: int,
    batch: int,
    seed: int,
    n_classes: int | None = None,
    max_labels: int | None = None,
) -> tuple[IntArray, FloatArray, list[IntArray]]:
    """Run one strategy with one seed.

    Parameters
    ----------
    embeddings : (N, D) float.
    labels : (N,) int in 0..C-1, the true labels (the simulated reviewers' answers).
    pool, test : (N,) bool, disjoint: the rows that may be labelled, and the
        rows accuracy is measured on.
    start_per_class : labels per class before the first round (the strategy's
        cold start decides which; a label-blind start picks that many times C).
    batch : rows labelled per round.
    max_labels : stop once this many are labelled (the whole pool by default).

    Returns
    -------
    budgets : (R,) labels at each evaluation.
    accuracy : (R,) test accuracy after training on that many labels.
    batches : R - 1 arrays of the pool rows (indices into the N rows) each round labelled.
    """
    x = np.asarray(embeddings, dtype=np.float32)
    y = np.asarray(labels, dtype=np.int64)
    pool_rows = np.flatnonzero(pool)
    test_rows = np.flatnonzero(test)
    if np.intersect1d(pool_rows, test_rows).size:
        raise ValueError("pool and test must be disjoint")
    classes = int(n_classes if n_classes is not None else y.max() + 1)
    vectors = x[pool_rows]
    truth = y[pool_rows]
    labelled = np.zeros(pool_rows.size, dtype=np.bool_)
    labelled[strategy.start(vectors, truth, start_per_class, seed)] = True
    limit = pool_rows.size if max_labels is None else min(max_labels, pool_rows.size)
    budgets: list[int] = []
    accuracy: list[float] = []
    batches: list[IntArray] = []
    round_index = 0
    while True:
        rows = np.flatnonzero(labelled)
        probe = fit_probe(
            vectors[rows],
            truth[rows],
            n_classes=classes,
            reference=vectors,
            unlabelled=vectors[~labelled],
        )
        predicted = probe.predict_proba(x[test_rows]).argmax(axis=1)
        budgets.append(int(rows.size))
        accuracy.append(float(np.mean(predicted == y[test_rows])) if test_rows.size else math.nan)
        if rows.size >= limit:
            break
        size = min(batch, limit - rows.size)
        view = RoundView(
            embeddings=vectors,
            labelled=labelled.copy(),
            labels=np.where(labelled, truth, -1),
            probabilities=probe.predict_proba(vectors),
            n_classes=classes,
            round_index=round_index,
            seed=seed,
        )
        chosen = np.asarray(strategy.pick(view, size), dtype=np.int64)
        if chosen.size != size or np.unique(chosen).size != size or labelled[chosen].any():
            raise RuntimeError(
                f"strategy {strategy.name} must pick {size} distinct unlabelled rows"
            )
        labelled[chosen] = True
        batches.append(pool_rows[chosen])
        round_index += 1
    return np.asarray(budgets, dtype=np.int64), np.asarray(accuracy), batches


def labels_to_reach(budgets: IntArray, accuracy: FloatArray, target: float) -> float:
    """Labels at which the curve first reaches ``target``, linearly interpolated.

    Parameters
    ----------
    budgets : (R,) increasing label counts.
    accuracy : (R,) accuracy at each.
    target : accuracy to reach.

    Returns
    -------
    The interpolated label count where the curve first crosses ``target``
    (``budgets[0]`` if it starts there), or ``inf`` if it never does.
    """
    b = np.asarray(budgets, dtype=np.float64)
    a = np.asarray(accuracy, dtype=np.float64)
    reached = np.flatnonzero(a >= target)
    if reached.size == 0:
        return math.inf
    k = int(reached[0])
    if k == 0:
        return float(b[0])
    low, high = a[k - 1], a[k]
    return float(b[k - 1] + (b[k] - b[k - 1]) * (target - low) / (high - low))


def interpolate_curve(budgets: IntArray, accuracy: FloatArray, grid: IntArray) -> FloatArray:
    """(R,) curve at ``budgets`` -> (G,) at ``grid`` (linear; flat beyond the ends)."""
    return np.interp(np.asarray(grid, dtype=np.float64), budgets, accuracy)


def summarise(curves: Curves, *, shares: Sequence[float] = TARGET_SHARES) -> dict[str, Any]:
    """Labels needed per strategy and seed, and their ratio to random.

    Returns a dict: ``labels_needed[strategy][share]`` is a list over seeds;
    ``ratio_to_random[strategy][share]`` is the mean over seeds of the labels
    needed divided by random's mean over seeds; ``mean_seed_ratio`` the mean
    of the per-seed ratios; ``ratio_interval`` a 95% bootstrap interval of
    ``ratio_to_random`` over the seeds (:func:`ratio_interval`).
    """
    result: dict[str, Any] = {
        "labels_needed": {},
        "ratio_to_random": {},
        "mean_seed_ratio": {},
        "ratio_interval": {},
    }
    needed: dict[str, dict[str, FloatArray]] = {}
    for s, name in enumerate(curves.strategies):
        needed[name] = {}
        for share in shares:
            per_seed = np.asarray(
                [
                    labels_to_reach(curves.budgets, curves.accuracy[s, k], share * full)
                    for k, full in enumerate(curves.full_accuracy)
                ]
            )
            needed[name][f"{share:g}"] = per_seed
    for name in curves.strategies:
        result["labels_needed"][name] = {
            key: [float(v) for v in values] for key, values in needed[name].items()
        }
        if "random" not in needed:
            continue
        result["ratio_to_random"][name] = {
            key: float(np.mean(values) / np.mean(needed["random"][key]))
            for key, values in needed[name].items()
        }
        result["mean_seed_ratio"][name] = {
            key: float(np.mean(values / needed["random"][key]))
            for key, values in needed[name].items()
        }
        result["ratio_interval"][name] = {
            key: ratio_interval(values, needed["random"][key])
            for key, values in needed[name].items()
        }
    return result


BOOTSTRAP_DRAWS: Final = 2000


def ratio_interval(
    needed: FloatArray, random_needed: FloatArray, *, draws: int = BOOTSTRAP_DRAWS
) -> list[float]:
    """A 95% interval of ``mean(needed) / mean(random_needed)`` over the seeds.

    Paired bootstrap: the same resampled seeds for both (each seed's test split
    and start are shared by the strategies), a fixed generator, so the
    interval is reproducible. With one seed it is the point itself. It says
    how far the ratio would move with other seeds: a few dozen test images
    and labels make it wide.
    """
    mine = np.asarray(needed, dtype=np.float64)
    theirs = np.asarray(random_needed, dtype=np.float64)
    if mine.size < 2:
        point = float(np.mean(mine) / np.mean(theirs))
        return [point, point]
    picks = np.random.default_rng(0).integers(0, mine.size, size=(draws, mine.size))
    with np.errstate(invalid="ignore", divide="ignore"):
        ratios = mine[picks].mean(axis=1) / theirs[picks].mean(axis=1)
    # A seed that never reaches the share counts inf labels: a draw where
    # neither did (inf / inf) is unbounded too, and the quantiles are order
    # statistics, so an inf bound stays inf instead of turning into NaN.
    ratios = np.where(np.isnan(ratios), np.inf, ratios)
    low, high = np.quantile(ratios, [0.025, 0.975], method="inverted_cdf")
    return [float(low), float(high)]


@dataclass(frozen=True)
class _SeedRun:
    """One seed of :func:`run_benchmark`: every strategy's curve on its own budgets."""

    full_accuracy: float
    curves: list[tuple[IntArray, FloatArray]]
    pool_size: int
    test_size: int


def _run_seed(
    seed: int,
    *,
    x: NDArray[np.float32],
    y: IntArray,
    group_ids: IntArray,
    fixed_test: BoolArray | None,
    strategies: Sequence[str],
    start_per_class: int,
    batch: int,
    test_share: float,
    n_classes: int,
    max_labels: int | None,
) -> _SeedRun:
    """Every strategy under one seed, on that seed's pool and test set."""
    from curation.evaluation.folder import group_split

    if fixed_test is None:
        test = group_split(group_ids, y, test_share=test_share, seed=seed)
    else:
        test = fixed_test
    pool = ~test
    probe = fit_probe(x[pool], y[pool], n_classes=n_classes, reference=x[pool])
    full = float(np.mean(probe.predict_proba(x[test]).argmax(axis=1) == y[test]))
    curves = []
    for name in strategies:
        budgets, curve, _ = simulate(
            x,
            y,
            pool=pool,
            test=test,
            strategy=STRATEGIES[name],
            start_per_class=start_per_class,
            batch=batch,
            seed=seed,
            n_classes=n_classes,
            max_labels=max_labels,
        )
        curves.append((budgets, curve))
    return _SeedRun(full, curves, pool_size=int(pool.sum()), test_size=int(test.sum()))


# The seed runner of this worker process, set once by ``_start_worker`` (the
# arrays travel to each worker once, not with every seed).
_worker_seed_run: Callable[[int], _SeedRun] | None = None


def _start_worker(run_seed: Callable[[int], _SeedRun]) -> None:
    """Worker initialiser: one thread per process, as many processes as jobs.

    The variables reach OpenMP (scikit-learn's k-means), which is loaded
    later and reads them then; ``threadpool_limits`` reaches the BLAS that
    NumPy has already loaded.
    """
    global _worker_seed_run
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = "1"
    threadpool_limits(1)
    _worker_seed_run = run_seed


def _seed_in_worker(seed: int) -> _SeedRun:
    assert _worker_seed_run is not None, "the worker was started without its initialiser"
    return _worker_seed_run(seed)


def run_benchmark(
    embeddings: NDArray[np.floating[Any]],
    labels: NDArray[np.integer[Any]],
    *,
    group_ids: NDArray[np.integer[Any]],
    strategies: Sequence[str],
    seeds: Sequence[int],
    start_per_class: int,
    batch: int,
    test_share: float = 0.25,
    test_embeddings: NDArray[np.floating[Any]] | None = None,
    test_labels: NDArray[np.integer[Any]] | None = None,
    max_labels: int | None = None,
    jobs: int = 1,
    progress: Callable[[str, int], object] | None = None,
) -> Curves:
    """Every strategy under every seed, on one pool and test set per seed.

    Without ``test_embeddings`` each seed holds out its own test set of about
    ``test_share`` of the rows by whole near-duplicate groups, stratified by
    class (:func:`curation.evaluation.folder.group_split`); the rest is the
    pool. With them, the whole folder is the pool and the given rows are the
    test set for every seed.

    Parameters
    ----------
    embeddings : (N, D) float; labels : (N,) int in 0..C-1; group_ids : (N,) int.
    strategies : names in :data:`STRATEGIES`; ``"random"`` is needed for ratios.
    seeds : one run per seed and strategy.
    test_embeddings, test_labels : (T, D) and (T,) in the same class indices.
    jobs : seeds run side by side in this many worker processes (spawned, so
        a parent that has loaded TensorFlow is never forked); every seed is
        deterministic on its own, so the result does not depend on ``jobs``.
    progress : ``progress(strategy, seed_index)`` for every strategy once its
        seed is done, seeds in order.

    Returns
    -------
    :class:`Curves`, every curve on the budgets of the first strategy of the first seed.
    """
    unknown = [name for name in strategies if name not in STRATEGIES]
    if unknown:
        raise ValueError(f"unknown strategies {unknown}; known: {', '.join(STRATEGIES)}")
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}")
    if not seeds or not strategies:
        raise ValueError("need at least one seed and one strategy")
    x = np.asarray(embeddings, dtype=np.float32)
    y = np.asarray(labels, dtype=np.int64)
    n_classes = int(y.max()) + 1
    fixed_test: BoolArray | None = None
    if test_embeddings is not None and test_labels is not None:
        x = np.concatenate([x, np.asarray(test_embeddings, dtype=np.float32)])
        y = np.concatenate([y, np.asarray(test_labels, dtype=np.int64)])
        n_classes = max(n_classes, int(y.max()) + 1)
        fixed_test = np.arange(x.shape[0]) >= len(labels)
    one_seed = partial(
        _run_seed,
        x=x,
        y=y,
        group_ids=np.asarray(group_ids, dtype=np.int64),
        fixed_test=fixed_test,
        strategies=list(strategies),
        start_per_class=start_per_class,
        batch=batch,
        test_share=test_share,
        n_classes=n_classes,
        max_labels=max_labels,
    )
    runs: list[_SeedRun] = []

    def record(k: int, run: _SeedRun) -> None:
        runs.append(run)
        if progress is not None:
            for name in strategies:
                progress(name, k)

    workers = min(jobs, len(seeds))
    if workers <= 1:
        # One thread, as in a worker: k-means sums per thread, so its last
        # bits (and a tie in a pick) could otherwise depend on the thread count.
        import sklearn.cluster  # noqa: F401 (loaded first, so the limit reaches its OpenMP)

        with threadpool_limits(1):
            for k, seed in enumerate(seeds):
                record(k, one_seed(seed))
    else:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(
            workers, mp_context=context, initializer=_start_worker, initargs=(one_seed,)
        ) as pool:
            for k, run in enumerate(pool.map(_seed_in_worker, seeds)):
                record(k, run)
    grid = runs[0].curves[0][0]
    accuracy = np.asarray(
        [[interpolate_curve(*run.curves[s], grid) for run in runs] for s in range(len(strategies))]
    )
    return Curves(
        strategies=list(strategies),
        seeds=list(seeds),
        budgets=grid,
        accuracy=accuracy,
        full_accuracy=np.asarray([run.full_accuracy for run in runs]),
        pool_size=runs[-1].pool_size,
        test_size=runs[-1].test_size,
    )


def shortfall(curves: Curves, *, strategy: str, against: Sequence[str]) -> FloatArray:
    """(R,) how far the mean curve of ``strategy`` lies below the best of ``against``.

    At each budget: max over ``against`` of its mean accuracy over seeds,
    minus the mean accuracy of ``strategy``; <= 0 where it is at least as good.
    """
    gap: FloatArray = _paired_gaps(curves, strategy=strategy, against=against).mean(axis=0)
    return gap


def shortfall_standard_error(
    curves: Curves, *, strategy: str, against: Sequence[str]
) -> FloatArray:
    """(R,) the standard error of :func:`shortfall` over the seeds (NaN with one seed).

    Paired by seed (each seed's test split is shared by every strategy): the
    deviation over seeds of the per-seed gap, over the square root of the
    seeds. A shortfall of one or two standard errors is what other seeds
    could undo; the bench prints both.
    """
    gaps = _paired_gaps(curves, strategy=strategy, against=against)
    if gaps.shape[0] < 2:
        return np.full(gaps.shape[1], math.nan)
    error: FloatArray = gaps.std(axis=0, ddof=1) / math.sqrt(gaps.shape[0])
    return error


def _paired_gaps(curves: Curves, *, strategy: str, against: Sequence[str]) -> FloatArray:
    """(K, R) per seed: the accuracy of the best of ``against`` (the best by its
    mean over seeds, budget by budget) minus that of ``strategy``."""
    accuracy = curves.accuracy
    rivals = [curves.strategies.index(name) for name in against]
    best = np.asarray(rivals)[np.argmax(accuracy[rivals].mean(axis=1), axis=0)]  # (R,)
    budgets = np.arange(accuracy.shape[2])
    gaps: FloatArray = accuracy[best, :, budgets].T - accuracy[curves.strategies.index(strategy)]
    return gaps


def plot_curves(curves: Curves, path: Any, *, title: str = "") -> None:
    """Write a PNG of mean accuracy (over seeds) against labels, one line per strategy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 5), dpi=120)
    mean = curves.accuracy.mean(axis=1)
    spread = curves.accuracy.std(axis=1)
    for s, name in enumerate(curves.strategies):
        width = 2.5 if name == DEFAULT_STRATEGY else 1.2
        axes.plot(curves.budgets, mean[s], label=name, linewidth=width)
        axes.fill_between(curves.budgets, mean[s] - spread[s], mean[s] + spread[s], alpha=0.12)
    full = float(curves.full_accuracy.mean())
    for share in TARGET_SHARES:
        axes.axhline(share * full, color="grey", linestyle=":", linewidth=1)
        axes.annotate(
            f"{share:.0%} of all labels",
            # At the left, where the curves are still low: at the right the
            # 99% line runs through them and hid its own label.
            (curves.budgets[0], share * full),
            ha="left",
            va="bottom",
            fontsize=8,
            color="grey",
        )
    axes.set_xscale("log")
    axes.set_xlabel("labels")
    axes.set_ylabel(f"test accuracy (mean of {len(curves.seeds)} seeds)")
    axes.set_title(title or "active learning: accuracy against labels")
    axes.legend(loc="lower right", fontsize=8)
    axes.grid(True, alpha=0.3)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
