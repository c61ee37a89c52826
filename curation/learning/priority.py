"""What a label is worth: one priority per item, and the reasons in words.

Every strategy maps the scores of an item to a priority in [0, 1]. The
default, ``balanced``, takes the strongest of the signals (uncertainty
weighted by how typical the image is, novelty while the model can be
missing a landmark, a likely label error, a reporter's disagreement), so an
item is first in line for whichever reason makes it most useful. A deterministic
share of items (the random control) is queued at a random priority instead,
so the lift of the queue over random labelling can be measured.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from curation.learning.scores import DENSITY_POWER


class Strategy(enum.StrEnum):
    BALANCED = "balanced"
    UNCERTAINTY = "uncertainty"
    LABEL_ERROR = "label_error"
    NOVELTY = "novelty"
    DISAGREEMENT = "disagreement"
    RANDOM = "random"


@dataclass(frozen=True)
class ScoredItems:
    """Scores of N items under one model, aligned by position.

    ``top_classes``/``top_probabilities`` are (N, k), best first;
    ``claimed`` is the class index the reporter named, -1 if none or unknown;
    ``labelled`` is the class index of the current label, -1 if unlabelled;
    ``label_issue`` is NaN where the item has no label.
    """

    image_ids: NDArray[np.int64]
    top_classes: NDArray[np.int64]
    top_probabilities: NDArray[np.float32]
    margin: NDArray[np.float64]
    novelty: NDArray[np.float64]
    disagreement: NDArray[np.float64]
    label_issue: NDArray[np.float64]
    claimed: NDArray[np.int64]
    labelled: NDArray[np.int64]
    # How typical each image is (curation.learning.scores.density); None where
    # it was not computed: uncertainty then counts alone.
    density: NDArray[np.float64] | None = None


def _mix64(values: NDArray[np.uint64]) -> NDArray[np.uint64]:
    """splitmix64's finaliser: a well-spread 64-bit hash, vectorised (wraps by design)."""
    z = values.astype(np.uint64, copy=True)
    z ^= z >> np.uint64(30)
    z *= np.uint64(0xBF58476D1CE4E5B9)
    z ^= z >> np.uint64(27)
    z *= np.uint64(0x94D049BB133111EB)
    z ^= z >> np.uint64(31)
    return z


def in_random_control(
    image_ids: NDArray[np.int64], *, share: float, seed: int
) -> NDArray[np.bool_]:
    """A stable, seed-dependent choice of about ``share`` of the items (by image id).

    A hash of (seed, id), not a random draw: an image stays in or out of the
    control group however often it is rescored.
    """
    salt = _mix64(np.asarray([seed & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64))
    hashed = _mix64(np.asarray(image_ids).astype(np.uint64) ^ salt)
    return (hashed >> np.uint64(32)) < np.uint64(int(share * 2**32))


def _component(items: ScoredItems, strategy: Strategy) -> NDArray[np.float64]:
    if strategy is Strategy.UNCERTAINTY:
        return 1.0 - items.margin
    if strategy is Strategy.NOVELTY:
        return items.novelty
    if strategy is Strategy.LABEL_ERROR:
        return np.nan_to_num(items.label_issue, nan=0.0)
    if strategy is Strategy.DISAGREEMENT:
        return np.where(items.claimed >= 0, np.nan_to_num(items.disagreement, nan=0.0), 0.0)
    raise ValueError(f"no single component for {strategy}")


# Novelty matters only once an image is farther from every known class than
# nearly all training images are from their own: rescale its top 10 percent.
NOVELTY_FLOOR = 0.9
# Below this many training labels per class, "far from every known class" is
# what most images are: novelty then only spent labels on outliers (on porto5
# it cost the default about 0.07 of random's labels at 95%), so ``balanced``
# counts it from here on.
NOVELTY_MIN_LABELS_PER_CLASS = 20


# Far images (novelty at or above NOVELTY_FLOOR) are a small share of the
# unlabelled images when every landmark among them is known: the floor puts
# about a tenth of the training images there, and on porto5 0.2-5% of the
# unlabelled pool lies there once the model has 20 labels per class (2-8% by
# the simulation's two-view novelty, seeds 0-5). Beyond
# this share the pool holds landmarks the class list lacks: 42% of crawl13's
# photos of landmarks wonders7 lacks lie far from its classes, against 17% of
# its photos of landmarks wonders7 has, off-target crawl included (measured).
FAR_SHARE_OF_MISSING_LANDMARKS = 0.2


def balanced_counts_novelty(
    *,
    training_images: int,
    model_classes: int,
    unlearnt_classes: int,
    far_share: Callable[[], float],
) -> bool:
    """Whether ``balanced`` counts novelty: there can be landmarks the model lacks.

    Novelty answers "is this a landmark the model has not learnt?". It pays
    when the answer can be yes: an active class has no place in the model
    (activated after the last training, or brought in by an ingest with its
    labels), or far more unlabelled images lie far from every class than
    training images do (a crawl brought landmarks nobody has named yet).
    Otherwise the far images are odd views of known landmarks: on porto5,
    with self-training, labelling them cost the default 8 and 17 labels to
    99% of the all-labels accuracy (seeds 0-99 and 100-199, standard errors
    3.3 and 4.4). The reasons a reviewer reads still say when an image looks
    like none of the known landmarks, and the ``novelty`` strategy still
    ranks by it alone.

    Parameters
    ----------
    training_images : labelled images the model was trained on.
    model_classes : classes of the model.
    unlearnt_classes : active classes the model has no class for.
    far_share : returns the share of unlabelled images whose novelty is at
        least ``NOVELTY_FLOOR`` (:func:`far_share`); called only when the
        answer depends on it.
    """
    if training_images < NOVELTY_MIN_LABELS_PER_CLASS * model_classes:
        return False
    return unlearnt_classes > 0 or far_share() > FAR_SHARE_OF_MISSING_LANDMARKS


def far_share(novelty: ArrayLike, unlabelled: ArrayLike) -> float:
    """Share of the ``unlabelled`` rows (bool mask) whose novelty reaches ``NOVELTY_FLOOR``."""
    mask = np.asarray(unlabelled, dtype=np.bool_)
    if not mask.any():
        return 0.0
    return float(np.mean(np.asarray(novelty, dtype=np.float64)[mask] >= NOVELTY_FLOOR))


def priorities(
    items: ScoredItems,
    *,
    strategy: Strategy,
    random_share: float = 0.05,
    seed: int = 0,
    novelty_counts: bool = True,
) -> tuple[NDArray[np.float64], NDArray[np.str_]]:
    """(N,) priorities in [0, 1] and (N,) names of the strategy that set each one.

    ``novelty_counts`` False leaves novelty out of ``balanced`` (see
    :func:`balanced_counts_novelty`).
    """
    n = len(items.image_ids)
    if strategy is Strategy.BALANCED:
        uncertainty = _component(items, Strategy.UNCERTAINTY)
        if items.density is not None:
            # A torn model on a common view teaches more than on a lone outlier.
            uncertainty = uncertainty * np.asarray(items.density, dtype=np.float64) ** DENSITY_POWER
        novelty = np.clip((items.novelty - NOVELTY_FLOOR) / (1 - NOVELTY_FLOOR), 0, 1)
        if not novelty_counts:
            novelty = np.zeros_like(novelty)
        components = np.stack(
            [
                uncertainty,
                novelty,
                _component(items, Strategy.LABEL_ERROR),
                _component(items, Strategy.DISAGREEMENT),
            ]
        )
        names = [
            Strategy.UNCERTAINTY,
            Strategy.NOVELTY,
            Strategy.LABEL_ERROR,
            Strategy.DISAGREEMENT,
        ]
        winner = components.argmax(axis=0)
        priority = components.max(axis=0)
        chosen = np.asarray([name.value for name in names])[winner]
    elif strategy is Strategy.RANDOM:
        priority = np.random.default_rng(seed).random(n)
        chosen = np.full(n, Strategy.RANDOM.value)
    else:
        priority = _component(items, strategy)
        chosen = np.full(n, strategy.value)
    if random_share > 0 and strategy is not Strategy.RANDOM:
        control = in_random_control(items.image_ids, share=random_share, seed=seed)
        # A control item takes the priority of a random rank among the others,
        # not a uniform number: scores that mostly sit low (uncertainty times
        # density^6) would otherwise put the control share ahead of nearly
        # everything, and the head of the queue would be random.
        others = priority[~control]
        draws = np.random.default_rng(seed + 1).random(n)
        placed = np.quantile(others, draws) if others.size else draws
        priority = np.where(control, placed, priority)
        chosen = np.where(control, Strategy.RANDOM.value, chosen)
    return np.clip(priority, 0.0, 1.0), chosen.astype(np.str_)


def reasons_for(
    items: ScoredItems, index: int, *, class_names: Sequence[str], n_known: int
) -> list[str]:
    """The reasons a reviewer reads, strongest first, for item ``index``."""
    top = items.top_classes[index]
    probs = items.top_probabilities[index]
    first, p1 = class_names[top[0]], float(probs[0])
    reasons: list[tuple[float, str]] = []
    if items.claimed[index] >= 0 and items.claimed[index] != top[0]:
        claimed = class_names[items.claimed[index]]
        reasons.append(
            (
                float(items.disagreement[index]),
                f"the reporter says {claimed}, the model is {p1:.2f} sure of {first}",
            )
        )
    if not np.isnan(items.label_issue[index]) and items.labelled[index] >= 0:
        given = class_names[items.labelled[index]]
        reasons.append(
            (
                float(items.label_issue[index]),
                f"labelled {given}, but the label looks wrong"
                f" ({float(items.label_issue[index]):.2f}); the model says {first} {p1:.2f}",
            )
        )
    if items.novelty[index] >= NOVELTY_FLOOR:
        reasons.append(
            (
                float(items.novelty[index]),
                f"looks like none of the {n_known} known landmarks"
                f" (farther from every class than {items.novelty[index]:.0%} of training photos)",
            )
        )
    if len(top) > 1:
        second, p2 = class_names[top[1]], float(probs[1])
        if p1 - p2 < 0.3:
            reasons.append(
                (
                    1.0 - (p1 - p2),
                    f"the model is torn between {first} {p1:.2f} and {second} {p2:.2f}",
                )
            )
    if not reasons:
        reasons.append((0.0, f"the model suggests {first} ({p1:.2f})"))
    return [text for _, text in sorted(reasons, key=lambda r: -r[0])]
