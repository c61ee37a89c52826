"""How well the platform's label-issue scoring finds wrong labels.

Flip a share of the labels of a labelled set at random (the flipped rows are
the ground truth), score the noisy labels exactly as training does
(:func:`curation.learning.scores.out_of_sample_probabilities`, then
:func:`curation.learning.scores.label_issue_scores`), and measure:

* the ranking: the share of the flips among the top ``share`` of rows by issue
  score (recall at k), for every k;
* the flagged set (the platform's "likely error" rule): precision, recall, F1.

Arrays in, arrays out; ``curation bench label-errors`` reads a folder and
writes the report.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike, NDArray

from curation.learning.scores import label_issue_scores, out_of_sample_probabilities

TOP_SHARE = 0.15


@dataclass(frozen=True)
class SeedResult:
    """One seed: which rows were flipped, their scores, and the figures."""

    seed: int
    flipped: NDArray[np.int64]  # (F,) row indices, sorted
    issue_scores: NDArray[np.float64]  # (N,)
    flagged: NDArray[np.bool_]  # (N,)
    recall_curve: NDArray[np.float64]  # (N + 1,) recall among the top k rows, k = 0..N
    top_share_recall: float
    precision: float
    recall: float
    f1: float


@dataclass(frozen=True)
class LabelErrorReport:
    noise: float
    top_share: float
    grouped: bool
    seeds: list[SeedResult]

    def summary(self) -> dict[str, object]:
        """Mean over seeds and per seed, as plain JSON-ready values."""
        keys = ("top_share_recall", "precision", "recall", "f1")
        per_seed = [
            {
                "seed": r.seed,
                "flipped": int(r.flipped.size),
                "flagged": int(r.flagged.sum()),
                **{k: float(getattr(r, k)) for k in keys},
            }
            for r in self.seeds
        ]
        return {
            "noise": self.noise,
            "top_share": self.top_share,
            "grouped_folds": self.grouped,
            "mean": {k: float(np.mean([getattr(r, k) for r in self.seeds])) for k in keys},
            "min": {k: float(np.min([getattr(r, k) for r in self.seeds])) for k in keys},
            "per_seed": per_seed,
        }


def flip_labels(
    labels: ArrayLike, *, n_classes: int, noise: float, seed: int
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Move ``round(noise * N)`` labels, chosen uniformly, to another class uniformly.

    Parameters
    ----------
    labels : (N,) int in 0..n_classes-1, the true labels.
    n_classes : C >= 2.
    noise : in [0, 1], the share of rows flipped.
    seed : equal inputs and seed give equal flips.

    Returns
    -------
    noisy : (N,) int64, equal to ``labels`` except at ``flipped``, where it differs.
    flipped : (F,) int64 sorted row indices, F = round(noise * N).
    """
    true = np.asarray(labels, dtype=np.int64)
    if true.ndim != 1:
        raise ValueError(f"labels must be 1-D (N,), got shape {true.shape}")
    if n_classes < 2:
        raise ValueError(f"flipping needs at least 2 classes, got {n_classes}")
    if true.size and (true.min() < 0 or true.max() >= n_classes):
        raise ValueError(f"labels must lie in 0..{n_classes - 1}")
    if not 0.0 <= noise <= 1.0:
        raise ValueError(f"noise must lie in [0, 1], got {noise}")
    rng = np.random.default_rng(seed)
    count = round(noise * true.size)
    flipped = np.sort(rng.choice(true.size, size=count, replace=False)).astype(np.int64)
    noisy = true.copy()
    # Adding 1..C-1 modulo C picks each other class with equal probability.
    noisy[flipped] = (true[flipped] + rng.integers(1, n_classes, size=count)) % n_classes
    return noisy, flipped


def recall_curve(is_error: ArrayLike, scores: ArrayLike) -> NDArray[np.float64]:
    """Share of the errors among the k highest-scored rows, for k = 0..N.

    Parameters
    ----------
    is_error : (N,) bool ground truth.
    scores : (N,) float, higher means more likely an error. Ties are broken
        against the errors (the pessimistic order), so equal scores earn nothing.

    Returns
    -------
    (N + 1,) float64 in [0, 1], non-decreasing, starting at 0 (all 1.0 when
    there is no error).
    """
    truth = np.asarray(is_error, dtype=np.bool_)
    values = np.asarray(scores, dtype=np.float64)
    if truth.shape != values.shape or truth.ndim != 1:
        raise ValueError("is_error and scores must be 1-D arrays of equal length")
    n_errors = int(truth.sum())
    if n_errors == 0:
        return np.ones(truth.size + 1, dtype=np.float64)
    # lexsort: last key first; clean rows before errors among equal scores.
    order = np.lexsort((truth, -values))
    found = np.concatenate([[0], np.cumsum(truth[order])])
    curve: NDArray[np.float64] = found / n_errors
    return curve


def recall_at_share(curve: ArrayLike, share: float) -> float:
    """Recall among the top ``ceil(share * N)`` rows of a :func:`recall_curve`."""
    values = np.asarray(curve, dtype=np.float64)
    n_rows = values.size - 1
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"share must lie in [0, 1], got {share}")
    return float(values[int(np.ceil(share * n_rows - 1e-9))])


def precision_recall_f1(is_error: ArrayLike, flagged: ArrayLike) -> tuple[float, float, float]:
    """Precision, recall and F1 of a flagged set against the ground truth.

    Parameters
    ----------
    is_error, flagged : (N,) bool.

    Returns
    -------
    (precision, recall, f1), each in [0, 1]. An empty flagged set has precision
    1 (it makes no false claim); with no error, recall is 1; F1 is 0 when
    precision and recall are both 0.
    """
    truth = np.asarray(is_error, dtype=np.bool_)
    flags = np.asarray(flagged, dtype=np.bool_)
    if truth.shape != flags.shape:
        raise ValueError("is_error and flagged must have equal shapes")
    hits = int((truth & flags).sum())
    precision = hits / int(flags.sum()) if flags.any() else 1.0
    recall = hits / int(truth.sum()) if truth.any() else 1.0
    total = precision + recall
    return precision, recall, (2 * precision * recall / total if total else 0.0)


def evaluate(
    embeddings: ArrayLike,
    labels: ArrayLike,
    *,
    group_ids: ArrayLike | None = None,
    noise: float = 0.1,
    seeds: list[int] | None = None,
    top_share: float = TOP_SHARE,
    n_folds: int = 5,
) -> LabelErrorReport:
    """Flip labels, score them with the platform's label-issue scoring, measure.

    Parameters
    ----------
    embeddings : (N, D) float.
    labels : (N,) int, the true labels (the folder's).
    group_ids : (N,) int near-duplicate groups: the cross-validation keeps each
        group in one fold. None scores with row-wise folds (for comparison).
    noise : share of labels flipped.
    seeds : one flip and one fold assignment per seed; default [0, 1, 2].
    top_share : the share of the ranking whose recall is reported.
    n_folds : cross-validation folds.

    Returns
    -------
    A :class:`LabelErrorReport` with one :class:`SeedResult` per seed.
    """
    features = np.asarray(embeddings)
    true = np.asarray(labels, dtype=np.int64)
    n_classes = int(true.max()) + 1
    results = []
    for seed in seeds if seeds is not None else [0, 1, 2]:
        noisy, flipped = flip_labels(true, n_classes=n_classes, noise=noise, seed=seed)
        probs = out_of_sample_probabilities(
            features,
            noisy,
            n_classes=n_classes,
            group_ids=group_ids,
            n_folds=n_folds,
            seed=seed,
        )
        scores, flagged = label_issue_scores(noisy, probs)
        truth = np.zeros(true.size, dtype=np.bool_)
        truth[flipped] = True
        curve = recall_curve(truth, scores)
        precision, recall, f1 = precision_recall_f1(truth, flagged)
        results.append(
            SeedResult(
                seed=seed,
                flipped=flipped,
                issue_scores=scores,
                flagged=flagged,
                recall_curve=curve,
                top_share_recall=recall_at_share(curve, top_share),
                precision=precision,
                recall=recall,
                f1=f1,
            )
        )
    return LabelErrorReport(
        noise=noise, top_share=top_share, grouped=group_ids is not None, seeds=results
    )


def plot_recall(report: LabelErrorReport, path: Path, *, title: str) -> None:
    """PNG of the recall of the flips against the share of the ranking reviewed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4.5))
    for result in report.seeds:
        curve = result.recall_curve
        share = np.arange(curve.size) / max(curve.size - 1, 1)
        axes.plot(share, curve, linewidth=1.2, label=f"seed {result.seed}")
    axes.plot([0, 1], [0, 1], color="grey", linestyle=":", label="random order")
    axes.axvline(report.top_share, color="black", linestyle="--", linewidth=0.8)
    axes.axvline(report.noise, color="grey", linestyle="--", linewidth=0.8)
    axes.set_xlabel("share of the ranking reviewed (highest issue score first)")
    axes.set_ylabel("share of the flipped labels found")
    axes.set_xlim(0, 0.5)
    axes.set_ylim(0, 1.01)
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right")
    axes.set_title(title)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
