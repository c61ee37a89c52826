"""Per-image scores for the review queue: uncertainty, disagreement, label issues, novelty.

Arrays in, arrays out. ``probs`` is always an (N, C) array of predicted class
probabilities whose rows sum to 1; class indices run 0..C-1 in the order of the
columns. Embeddings are (N, D) in any float dtype (the cache keeps float16);
they are compared by cosine, so their scale does not matter. Every returned
score is float64.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
BoolArray = NDArray[np.bool_]
EmbeddingArray = NDArray[np.float32]

QualityMethod = Literal["self_confidence", "normalized_margin", "confidence_weighted_entropy"]
IssueFilter = Literal[
    "prune_by_noise_rate",
    "prune_by_class",
    "both",
    "confident_learning",
    "predicted_neq_given",
]

# float32 softmax outputs sum to 1 only within rounding; this accepts them and
# still catches logits or unnormalised scores passed by mistake.
PROBABILITY_SUM_TOLERANCE = 1e-4

# A label is flagged as a likely error when the out-of-sample model gives it
# less than 12% (issue score >= 0.88). Chosen on wonders7 and porto5 with 10% of
# the labels flipped, 3 seeds (curation bench label-errors): mean precision
# 0.885 / 0.958, recall 0.914 / 0.861. At 0.86 wonders7's precision fell to
# 0.83; at 0.90 porto5's recall fell to 0.82.
LIKELY_LABEL_ERROR = 0.88

# Similarity blocks are capped at this many entries (128 MiB of float64) so that
# scoring a million images against a large labelled set never builds an N x M matrix.
MAX_SIMILARITY_BLOCK_ENTRIES = 1 << 24


# ---------------------------------------------------------------------------
# Uncertainty


def entropy(probs: ArrayLike) -> FloatArray:
    """Shannon entropy of each row, normalised to [0, 1] by dividing by log(C).

    Parameters
    ----------
    probs : (N, C) predicted probabilities, rows summing to 1.

    Returns
    -------
    (N,) float64 in [0, 1]: 0 for a one-hot row, 1 for the uniform row. Dividing
    by log(C) makes the value comparable across class lists of different sizes
    (the raw entropy of a uniform row grows with log C). With C == 1 every row is
    certain and scores 0.
    """
    p = _as_probabilities(probs)
    n_classes = p.shape[1]
    if n_classes == 1:
        return np.zeros(p.shape[0], dtype=np.float64)
    # 0 * log(0) is taken as 0; clipping the argument avoids log(0) warnings.
    p_log_p = p * np.log(np.clip(p, np.finfo(np.float64).tiny, None))
    raw = 0.0 - p_log_p.sum(axis=1)  # 0.0 - x, not -x: a one-hot row gives 0, not -0
    normalised: FloatArray = np.clip(raw / math.log(n_classes), 0.0, 1.0)
    return normalised


def margin(probs: ArrayLike) -> FloatArray:
    """Top-1 probability minus top-2 probability of each row.

    Parameters
    ----------
    probs : (N, C) predicted probabilities, rows summing to 1.

    Returns
    -------
    (N,) float64 in [0, 1]. This is a *confidence*: 0 means the two best classes
    tie (most uncertain), 1 a one-hot row. Use ``1 - margin`` as an uncertainty
    priority. With C == 1 the missing second class counts as 0, so the margin is 1.
    """
    p = _as_probabilities(probs)
    n_classes = p.shape[1]
    if n_classes == 1:
        return np.ones(p.shape[0], dtype=np.float64)
    top_two = np.partition(p, n_classes - 2, axis=1)[:, -2:]
    return np.clip(top_two[:, 1] - top_two[:, 0], 0.0, 1.0)


def least_confidence(probs: ArrayLike) -> FloatArray:
    """One minus the largest probability of each row.

    Parameters
    ----------
    probs : (N, C) predicted probabilities, rows summing to 1.

    Returns
    -------
    (N,) float64 in [0, 1 - 1/C]: 0 for a one-hot row, 1 - 1/C for the uniform row.
    """
    p = _as_probabilities(probs)
    uncertainty: FloatArray = np.clip(1.0 - p.max(axis=1), 0.0, 1.0)
    return uncertainty


def top_k(probs: ArrayLike, *, k: int) -> tuple[IntArray, FloatArray]:
    """The k most probable classes of each row, most probable first.

    Parameters
    ----------
    probs : (N, C) predicted probabilities, rows summing to 1.
    k : 1 <= k <= C.

    Returns
    -------
    indices : (N, k) int64 class indices in 0..C-1.
    values : (N, k) float64 probabilities, non-increasing along each row.
        Equal probabilities are ordered by class index; when a tie straddles the
        k-th place, which of the tied classes is kept is unspecified.
    """
    p = _as_probabilities(probs)
    n_rows, n_classes = p.shape
    if not 1 <= k <= n_classes:
        raise ValueError(f"k must lie in 1..{n_classes}, got {k}")
    # argpartition keeps this O(N C) for large class lists; only k columns get sorted.
    if k < n_classes:
        candidates = np.argpartition(-p, k - 1, axis=1)[:, :k].astype(np.int64)
    else:
        candidates = np.broadcast_to(np.arange(n_classes, dtype=np.int64), (n_rows, n_classes))
    candidate_values = np.take_along_axis(p, candidates, axis=1)
    order = np.lexsort((candidates, -candidate_values), axis=-1)
    indices = np.take_along_axis(candidates, order, axis=1)
    values = np.take_along_axis(candidate_values, order, axis=1)
    return indices, values


# ---------------------------------------------------------------------------
# Disagreement with a reporter


def reporter_disagreement(probs: ArrayLike, claimed: ArrayLike) -> tuple[FloatArray, IntArray]:
    """How strongly the model believes a reporter's claimed class is wrong.

    Parameters
    ----------
    probs : (N, C) predicted probabilities, rows summing to 1.
    claimed : (N,) int class index the reporter claims, or -1 when the claim is
        unknown or names a class that is not in the class list.

    Returns
    -------
    disagreement : (N,) float64, ``1 - probs[i, claimed[i]]`` in [0, 1] (the
        model's probability that the claim is wrong), and NaN where
        ``claimed == -1``. NaN, not 0, because the model has no opinion on a class
        it does not know; 0 would read as "the model agrees". A claim outside the
        class list is a novelty signal, not a disagreement: combine the two
        explicitly (``np.isnan``) when building a priority.
    preferred : (N,) int64, the class the model prefers (arg max; the lowest index
        on ties), for every row including unknown claims.
    """
    p = _as_probabilities(probs)
    n_rows, n_classes = p.shape
    claims = _as_class_indices(claimed, n_rows=n_rows, n_classes=n_classes, allow_unknown=True)
    preferred = p.argmax(axis=1).astype(np.int64)
    disagreement = np.full(n_rows, np.nan, dtype=np.float64)
    known_rows = np.flatnonzero(claims >= 0)
    disagreement[known_rows] = np.clip(1.0 - p[known_rows, claims[known_rows]], 0.0, 1.0)
    return disagreement, preferred


# ---------------------------------------------------------------------------
# Label issues (confident learning, by cleanlab)


def label_issue_scores(
    labels: ArrayLike,
    out_of_sample_probs: ArrayLike,
    *,
    quality_method: QualityMethod = "self_confidence",
    filter_by: IssueFilter | Literal["threshold"] = "threshold",
    threshold: float = LIKELY_LABEL_ERROR,
    n_jobs: int = 1,
) -> tuple[FloatArray, BoolArray]:
    """Score how likely each given label is wrong, and flag the likely issues.

    The score is one minus ``cleanlab.rank.get_label_quality_scores``. By
    default a label is flagged when its score is at least ``threshold``
    (:data:`LIKELY_LABEL_ERROR`); any of cleanlab's ``find_label_issues``
    rules can be asked for instead with ``filter_by``.

    Why a threshold by default: on real photos with 10% of the labels flipped
    (``curation bench label-errors``), cleanlab's ``prune_by_noise_rate``
    flagged the flips with precision 0.81 to 0.85 and ``both`` missed up to a
    third of them on some seeds, while ``score >= 0.88`` kept mean precision
    and recall above 0.86 on both sets. The rule also reads plainly in the
    review queue: "the model gives the given label less than 12%".

    Parameters
    ----------
    labels : (N,) int given labels in 0..C-1.
    out_of_sample_probs : (N, C) predicted probabilities, rows summing to 1, from a
        model that never trained on the row it predicts (for example
        :func:`out_of_sample_probabilities`). In-sample probabilities echo the
        given labels back, including the wrong ones, and hide the issues.
    quality_method : cleanlab's label-quality method. With the default
        ``"self_confidence"`` the score is exactly ``1 - p[label]``, the model's
        probability that the label is wrong.
    filter_by : ``"threshold"`` (flag ``score >= threshold``) or one of
        cleanlab's rules for flagging issues.
    threshold : in [0, 1], used only with ``filter_by="threshold"``.
    n_jobs : processes cleanlab may use. 1 by default because cleanlab otherwise
        starts a multiprocessing pool, which a daemonic Celery prefork worker is
        not allowed to do.

    Returns
    -------
    issue_scores : (N,) float64 in [0, 1], higher means more likely mislabelled.
    is_issue : (N,) bool, True where cleanlab flags the label as an issue.
    """
    # cleanlab and scikit-learn are imported where used: they take seconds to
    # import, and the per-image scores of the scoring hot path need only NumPy.
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    p = _as_probabilities(out_of_sample_probs)
    n_rows, n_classes = p.shape
    given = _as_class_indices(labels, n_rows=n_rows, n_classes=n_classes, allow_unknown=False)
    if n_rows == 0:
        return np.zeros(0, dtype=np.float64), np.zeros(0, dtype=np.bool_)
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must lie in [0, 1], got {threshold}")
    quality = np.asarray(
        get_label_quality_scores(given, p, method=quality_method), dtype=np.float64
    )
    scores = np.clip(1.0 - quality, 0.0, 1.0)
    if filter_by == "threshold":
        return scores, scores >= threshold
    is_issue = np.asarray(
        find_label_issues(given, p, filter_by=filter_by, n_jobs=n_jobs), dtype=np.bool_
    )
    return scores, is_issue


def out_of_sample_probabilities(
    embeddings: ArrayLike,
    labels: ArrayLike,
    *,
    n_classes: int | None = None,
    group_ids: ArrayLike | None = None,
    n_folds: int = 5,
    seed: int = 0,
    inverse_regularization: float = 0.01,
    n_neighbours: int = 10,
    neighbour_weight: float = 0.5,
    max_iter: int = 1000,
) -> FloatArray:
    """K-fold cross-validated class probabilities from embeddings.

    Each fold is predicted by models fitted on the other folds only, so every
    row comes from a model that did not see it (see the exception below). The
    prediction blends two views of the training folds:

    * a multinomial logistic regression (scikit-learn ``LogisticRegression``,
      inputs standardised on the training folds, ``class_weight="balanced"``)
      with strong L2 (``inverse_regularization`` 0.01 by default): with noisy
      labels a weakly regularised model fits the wrong labels of the training
      folds and the flips it should expose look less wrong (on real photos
      with 10% flips, C = 1 put 83 to 97% of the flips in the top 15% of the
      ranking, C = 0.01 put 94 to 100%);
    * the class shares among the ``n_neighbours`` most cosine-similar training
      rows (add-half smoothed so no class is ever exactly 0): a local vote
      that a few wrong labels far away cannot move, weighted by
      ``neighbour_weight``.

    Folds are stratified and, with ``group_ids``, grouped: a near-duplicate
    group never straddles folds, so a burst shot of a mislabelled photo cannot
    vote for the wrong label of its twin, nor a correctly labelled twin leak
    the right label, from the training side. Groups are dealt per class (the
    class most of a group's rows carry), largest first, each to the fold
    holding fewest rows of that class so far. A class whose rows all lie in one
    group is dealt row by row (a grouped fold would remove the class from its
    own training set).

    A class with a single member cannot be held out without vanishing from the
    training set, which would force its probability to 0 and flag every new
    class as a label issue. Such rows are therefore trained on in every fold
    and get the mean prediction of the fold models: they are *in-sample* and
    their label-issue score is not evidence of anything.

    Parameters
    ----------
    embeddings : (N, D) float, finite.
    labels : (N,) int in 0..C-1; at least two distinct classes must be present.
    n_classes : C; defaults to ``labels.max() + 1``. Columns of classes with no
        labelled row stay 0.
    group_ids : (N,) int near-duplicate group of each row, or None (every row
        its own group).
    n_folds : >= 2. Folds left empty (fewer rows than folds) are skipped.
    seed : shuffles the fold assignment.
    inverse_regularization : scikit-learn's ``C``; smaller means stronger L2.
    n_neighbours : neighbours in the neighbour vote (capped at the training
        rows); 0 turns the vote off.
    neighbour_weight : in [0, 1], the vote's share of the blend.
    max_iter : iterations for the lbfgs solver.

    Returns
    -------
    (N, C) float64 probabilities, rows summing to 1, column j for class j.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    features = _as_embeddings(embeddings).astype(np.float64)
    n_rows = features.shape[0]
    if n_classes is None:
        raw = np.asarray(labels)
        n_classes = int(raw.max()) + 1 if raw.size else 0
    given = _as_class_indices(labels, n_rows=n_rows, n_classes=n_classes, allow_unknown=False)
    if n_folds < 2:
        raise ValueError(f"n_folds must be at least 2, got {n_folds}")
    if n_neighbours < 0:
        raise ValueError(f"n_neighbours must be >= 0, got {n_neighbours}")
    if not 0.0 <= neighbour_weight <= 1.0:
        raise ValueError(f"neighbour_weight must lie in [0, 1], got {neighbour_weight}")
    class_sizes = np.bincount(given, minlength=n_classes)
    if np.count_nonzero(class_sizes) < 2:
        raise ValueError("at least two classes need labelled rows to train a classifier")
    groups = _as_group_ids(group_ids, n_rows=n_rows)

    fold_of_row = grouped_fold_ids(given, groups, n_folds=n_folds, seed=seed)
    singleton_rows = np.flatnonzero(fold_of_row < 0)
    probabilities = np.zeros((n_rows, n_classes), dtype=np.float64)
    singleton_sum = np.zeros((singleton_rows.size, n_classes), dtype=np.float64)
    unit = normalize_rows(features) if n_neighbours > 0 and neighbour_weight > 0 else None
    fitted_folds = 0

    def fit_predict(train: IntArray, predict: IntArray) -> FloatArray:
        model = make_pipeline(
            StandardScaler(),
            LogisticRegression(
                C=inverse_regularization, class_weight="balanced", max_iter=max_iter
            ),
        )
        model.fit(features[train], given[train])
        classes = np.asarray(model.classes_, dtype=np.int64)
        result = np.zeros((predict.size, n_classes), dtype=np.float64)
        result[:, classes] = np.asarray(model.predict_proba(features[predict]), dtype=np.float64)
        if unit is None:
            return result
        votes = _neighbour_votes(
            unit[predict], unit[train], given[train], n_neighbours=n_neighbours
        )
        present = np.zeros(n_classes, dtype=np.bool_)
        present[classes] = True
        # Smoothing only over the classes the fold trained on: a class absent
        # from the training folds stays 0, as in the regression.
        # Balanced, like the regression: a vote counts in inverse proportion to
        # its class's share of the training rows, so a small class is not
        # outvoted by the sheer size of its neighbours.
        train_sizes = np.bincount(given[train], minlength=n_classes)
        weights = np.where(present, train.size / (classes.size * np.maximum(train_sizes, 1)), 0.0)
        votes = np.pad(votes, ((0, 0), (0, n_classes - votes.shape[1]))) * weights
        votes += 0.5 * present
        votes /= votes.sum(axis=1, keepdims=True)
        blended: FloatArray = (1.0 - neighbour_weight) * result + neighbour_weight * votes
        return blended

    for fold in range(n_folds):
        held_out = np.flatnonzero(fold_of_row == fold)
        if held_out.size == 0:
            continue
        train = np.flatnonzero(fold_of_row != fold)
        predicted = fit_predict(train, np.concatenate([held_out, singleton_rows]))
        probabilities[held_out] = predicted[: held_out.size]
        singleton_sum += predicted[held_out.size :]
        fitted_folds += 1

    if singleton_rows.size:
        if fitted_folds == 0:
            # Every class is a singleton: no fold could be held out, fit once on all rows.
            everything = np.arange(n_rows, dtype=np.int64)
            singleton_sum = fit_predict(everything, singleton_rows)
            fitted_folds = 1
        probabilities[singleton_rows] = singleton_sum / fitted_folds
    return probabilities


def grouped_fold_ids(
    labels: ArrayLike, group_ids: ArrayLike | None = None, *, n_folds: int, seed: int
) -> IntArray:
    """Stratified folds that keep every group whole.

    Parameters
    ----------
    labels : (N,) int >= 0.
    group_ids : (N,) int, or None for one group per row.
    n_folds : >= 2.
    seed : equal inputs and seed give equal folds.

    Returns
    -------
    (N,) int64 fold in 0..n_folds-1 of each row, or -1 for the members of
    single-member classes (they cannot be held out; see
    :func:`out_of_sample_probabilities`). Rows of one group share a fold,
    except in a class whose rows all lie in one group, which is dealt row by
    row. Each class's rows are spread over the folds as evenly as its groups
    allow.
    """
    given = np.asarray(labels, dtype=np.int64)
    n_rows = given.shape[0]
    groups = _as_group_ids(group_ids, n_rows=n_rows)
    if n_folds < 2:
        raise ValueError(f"n_folds must be at least 2, got {n_folds}")
    folds = np.full(n_rows, -1, dtype=np.int64)
    if n_rows == 0:
        return folds
    n_classes = int(given.max()) + 1
    class_sizes = np.bincount(given, minlength=n_classes)
    eligible = class_sizes[given] >= 2
    # A class inside a single group would vanish from its own training set:
    # its rows become groups of their own.
    _, group_index = np.unique(groups, return_inverse=True)
    pairs = np.unique(np.stack([given, group_index]), axis=1)
    groups_per_class = np.bincount(pairs[0], minlength=n_classes)
    key = np.where(
        groups_per_class[given] >= 2, group_index, group_index.max() + 1 + np.arange(n_rows)
    )
    key[~eligible] = -1
    rows = np.flatnonzero(eligible)
    if rows.size == 0:
        return folds
    unique_keys, unit_of_row = np.unique(key[rows], return_inverse=True)
    n_units = unique_keys.size
    counts = np.zeros((n_units, n_classes), dtype=np.int64)
    np.add.at(counts, (unit_of_row, given[rows]), 1)
    unit_class = counts.argmax(axis=1)
    unit_size = counts.sum(axis=1)
    rng = np.random.default_rng(seed)
    # Shuffle, then sort (stably) by class and by size, largest first.
    shuffled = rng.permutation(n_units)
    order = shuffled[np.lexsort((-unit_size[shuffled], unit_class[shuffled]))]
    fold_of_unit = np.empty(n_units, dtype=np.int64)
    load = np.zeros((n_classes, n_folds), dtype=np.int64)
    offset = rng.integers(n_folds)  # which fold wins ties first
    tie_break = (np.arange(n_folds) - offset) % n_folds
    for unit_id in order.tolist():
        label = unit_class[unit_id]
        fold = int(np.lexsort((tie_break, load[label]))[0])
        fold_of_unit[unit_id] = fold
        load[label, fold] += unit_size[unit_id]
        tie_break = np.roll(tie_break, 1)
    folds[rows] = fold_of_unit[unit_of_row]
    return folds


def _neighbour_votes(
    queries: EmbeddingArray, points: EmbeddingArray, point_labels: IntArray, *, n_neighbours: int
) -> FloatArray:
    """(Q, max label + 1) counts of each class among each query's nearest points, in blocks."""
    n_queries, n_points = queries.shape[0], points.shape[0]
    n_labels = int(point_labels.max()) + 1 if point_labels.size else 0
    votes = np.zeros((n_queries, n_labels), dtype=np.float64)
    k = min(n_neighbours, n_points)
    if k == 0:
        return votes
    rows_per_block = max(1, MAX_SIMILARITY_BLOCK_ENTRIES // max(1, n_points))
    for start in range(0, n_queries, rows_per_block):
        stop = min(start + rows_per_block, n_queries)
        similarity = queries[start:stop] @ points.T
        nearest = (
            np.argpartition(-similarity, k - 1, axis=1)[:, :k]
            if k < n_points
            else np.broadcast_to(np.arange(n_points), (stop - start, n_points))
        )
        block_rows = np.repeat(np.arange(start, stop), k)
        np.add.at(votes, (block_rows, point_labels[nearest].ravel()), 1.0)
    return votes


def _as_group_ids(group_ids: ArrayLike | None, *, n_rows: int) -> IntArray:
    if group_ids is None:
        return np.arange(n_rows, dtype=np.int64)
    values = np.asarray(group_ids)
    if values.size == 0:
        values = values.astype(np.int64)
    if values.shape != (n_rows,):
        raise ValueError(f"group_ids must have shape ({n_rows},), got {values.shape}")
    if not np.issubdtype(values.dtype, np.integer):
        raise ValueError(f"group_ids must be integers, got dtype {values.dtype}")
    return values.astype(np.int64)


# ---------------------------------------------------------------------------
# Novelty (a landmark the class list lacks)


def class_centroids(embeddings: ArrayLike, labels: ArrayLike, *, n_classes: int) -> FloatArray:
    """Mean direction of each class in embedding space.

    Parameters
    ----------
    embeddings : (N, D) float, finite.
    labels : (N,) int in 0..n_classes-1.
    n_classes : C.

    Returns
    -------
    (C, D) float64. Row j is the mean of class j's L2-normalised embeddings,
    itself L2-normalised (unit length). A class with no rows, or whose
    members cancel out, gets an all-zero row.
    """
    unit = normalize_rows(embeddings)
    given = _as_class_indices(
        labels, n_rows=unit.shape[0], n_classes=n_classes, allow_unknown=False
    )
    sums = np.zeros((n_classes, unit.shape[1]), dtype=np.float64)
    np.add.at(sums, given, unit.astype(np.float64))
    return _normalized_float64(sums)


def novelty(
    embeddings: ArrayLike,
    *,
    class_centroids: ArrayLike,
    labelled_embeddings: ArrayLike,
    labelled_labels: ArrayLike,
    n_neighbours: int = 10,
) -> FloatArray:
    """How far each image lies from every known class, calibrated on the labelled images.

    The question is "is this a landmark the class list lacks?", which low
    confidence does not answer: a softmax spreads its mass over known classes
    even for an image of none of them. Novelty is measured in embedding space
    instead, with cosine distance (1 - cosine similarity, in [0, 2]):

    * centroid view: distance to the nearest class centroid. The reference is
      each labelled image's distance to its own class's centroid computed
      *without it* (leave one out), because a query image is not part of any
      centroid either; classes with a single labelled image give no reference.
    * neighbour view (``n_neighbours > 0``): mean distance to the
      ``n_neighbours`` nearest labelled images. The reference is each labelled
      image's mean distance to its nearest *other* labelled images. This view
      keeps a class photographed in several distinct ways (day and night,
      inside and outside) from looking novel just because its centroid lies
      between the modes.

    In each view the score is the fraction of reference distances strictly
    smaller than the image's distance: 0.99 reads "farther from the known
    classes than 99 % of labelled images are from their own". The two views are
    combined with the minimum, so an image is novel only if both agree. A typical
    image of a known class scores about 0.5 (a little less with both views), not
    0: read the score as a tail fraction and set the threshold high (0.95).

    Parameters
    ----------
    embeddings : (N, D) float, the images to score.
    class_centroids : (C, D) float, normally
        ``class_centroids(labelled_embeddings, labelled_labels, n_classes=C)``;
        all-zero rows (classes without images) are ignored.
    labelled_embeddings : (M, D) float, the labelled images the classes come from.
    labelled_labels : (M,) int in 0..C-1.
    n_neighbours : neighbours in the neighbour view (capped at M - 1); 0 uses the
        centroid view alone, which costs O(N C D) instead of O(N M D).

    Returns
    -------
    (N,) float64 in [0, 1], higher is more novel, in steps of 1 / (number of
    reference distances).
    """
    queries = normalize_rows(embeddings)
    centroids = normalize_rows(class_centroids)
    labelled = normalize_rows(labelled_embeddings)
    n_classes, dimension = centroids.shape
    if queries.shape[1] != dimension or labelled.shape[1] != dimension:
        raise ValueError(
            "embeddings, class_centroids and labelled_embeddings must share one dimension, "
            f"got {queries.shape[1]}, {dimension} and {labelled.shape[1]}"
        )
    given = _as_class_indices(
        labelled_labels, n_rows=labelled.shape[0], n_classes=n_classes, allow_unknown=False
    )
    if n_neighbours < 0:
        raise ValueError(f"n_neighbours must be >= 0, got {n_neighbours}")
    known_centroids = centroids[np.linalg.norm(centroids, axis=1) > 0]
    if known_centroids.shape[0] == 0:
        raise ValueError("class_centroids has no non-zero row")

    reference = _leave_one_out_centroid_distances(labelled, given, n_classes=n_classes)
    if reference.size == 0:
        raise ValueError("novelty needs a class with at least two labelled images")
    query_distance = _nearest_distances(queries, known_centroids, n_nearest=1)
    score = _fraction_smaller(reference, query_distance)

    n_nearest = min(n_neighbours, labelled.shape[0] - 1)
    if n_nearest > 0:
        neighbour_reference = _nearest_distances(
            labelled, labelled, n_nearest=n_nearest, exclude_self=True
        )
        neighbour_distance = _nearest_distances(queries, labelled, n_nearest=n_nearest)
        score = np.minimum(score, _fraction_smaller(neighbour_reference, neighbour_distance))
    return score


# Representativeness: how many photos look like this one. The neighbourhood
# and the power were chosen on porto5 (curation bench al; README, issue 6):
# margin alone spends early labels on lone outliers, and weighting it by
# density^6 over 10 neighbours took the labels needed for 95% of the
# all-labels accuracy from about 0.77 of random's to about 0.55.
DENSITY_NEIGHBOURS = 10
DENSITY_POWER = 6
# The reference is a sample: density against 1M rows would cost O(N^2 D).
# Its size keeps N x M near 2.6e8 (4,096 rows up to 64k images, 256 at 1M):
# a full rescoring of a million items spends about two seconds here.
DENSITY_REFERENCE_ROWS = 4096
DENSITY_MIN_REFERENCE_ROWS = 256
DENSITY_WORK = 256 * 1_000_000
# An identical embedding is the image itself (exact duplicates are merged at
# ingest), not a neighbour.
_SELF_SIMILARITY = 1.0 - 1e-5


def density_reference(embeddings: ArrayLike, *, max_rows: int | None = None) -> EmbeddingArray:
    """At most ``max_rows`` evenly spaced rows of ``embeddings``, L2-normalised.

    The sample :func:`density` reads a population against; by default as
    large as keeps the work of scoring the whole population bounded
    (``DENSITY_WORK``).
    """
    rows = embeddings if hasattr(embeddings, "shape") else np.asarray(embeddings)
    n_rows = int(rows.shape[0])
    if max_rows is None:
        max_rows = max(
            DENSITY_MIN_REFERENCE_ROWS, min(DENSITY_REFERENCE_ROWS, DENSITY_WORK // max(1, n_rows))
        )
    if n_rows > max_rows:
        # Index first: a memory-mapped million rows is never converted whole.
        rows = rows[np.linspace(0, n_rows - 1, max_rows).astype(np.int64)]  # type: ignore[index]
    return normalize_rows(rows)


def density(
    embeddings: ArrayLike,
    *,
    reference: ArrayLike,
    population: int,
    n_neighbours: int = DENSITY_NEIGHBOURS,
) -> FloatArray:
    """How typical each image is: mean cosine similarity to its nearest reference images.

    Parameters
    ----------
    embeddings : (N, D) float, the images to score.
    reference : (M, D) float, a sample of the population (see
        :func:`density_reference`); a row identical to the query (the image
        itself) is skipped.
    population : how many images the reference was drawn from (>= M). With a
        sample, the neighbourhood is scaled down with it (``n_neighbours * M /
        population``, at least 3), so it spans about the same share of the
        population.
    n_neighbours : neighbourhood in the whole population.

    Returns
    -------
    (N,) float64 in [0, 1]: near 1 for an image with many near-twins (a common
    view), lower for a lone outlier; negative similarities count as 0.
    """
    queries = embeddings if hasattr(embeddings, "shape") else np.asarray(embeddings)
    if len(queries.shape) != 2:
        raise ValueError(f"embeddings must be 2-D (N, D), got shape {queries.shape}")
    n_queries, dimension = (int(v) for v in queries.shape)
    points = normalize_rows(reference)
    if points.shape[0] == 0 or dimension != points.shape[1]:
        raise ValueError(f"reference must be (M >= 1, {dimension}), got {points.shape}")
    if population < points.shape[0]:
        raise ValueError(
            f"population ({population}) is smaller than the reference ({points.shape[0]})"
        )
    scaled = round(n_neighbours * points.shape[0] / population)
    k = max(1, min(points.shape[0] - 1, max(min(3, n_neighbours), scaled)))
    result = np.empty(n_queries, dtype=np.float64)
    rows_per_block = max(1, MAX_SIMILARITY_BLOCK_ENTRIES // points.shape[0])
    for start in range(0, n_queries, rows_per_block):
        # Block by block, from float16 or a memmap: no float32 copy of all N rows.
        block = np.asarray(queries[start : start + rows_per_block], dtype=np.float32)  # type: ignore[index]
        if not np.isfinite(block).all():
            raise ValueError("embeddings must be finite")
        lengths = np.sqrt(np.einsum("ij,ij->i", block, block))
        similarity = (block @ points.T) / np.where(lengths > 0, lengths, 1.0)[:, None]
        similarity[similarity >= _SELF_SIMILARITY] = -np.inf
        nearest = -np.partition(-similarity, k - 1, axis=1)[:, :k]
        nearest[~np.isfinite(nearest)] = 0.0  # fewer than k others: count the gap as unlike
        result[start : start + rows_per_block] = nearest.astype(np.float64).mean(axis=1)
    clipped: FloatArray = np.clip(result, 0.0, 1.0)
    return clipped


def _leave_one_out_centroid_distances(
    unit: EmbeddingArray, labels: IntArray, *, n_classes: int
) -> FloatArray:
    """Cosine distance of each row to its class centroid without it, for classes of >= 2 rows."""
    class_sizes = np.bincount(labels, minlength=n_classes)
    rows = np.flatnonzero(class_sizes[labels] >= 2)
    unit64 = unit.astype(np.float64)
    sums = np.zeros((n_classes, unit.shape[1]), dtype=np.float64)
    np.add.at(sums, labels, unit64)
    # The centroid without row i points along (class sum - row i); its length
    # does not matter for the cosine.
    without_self = sums[labels[rows]] - unit64[rows]
    lengths = np.linalg.norm(without_self, axis=1)
    similarity = np.einsum("ij,ij->i", unit64[rows], without_self) / np.where(
        lengths > 0, lengths, 1.0
    )
    distances: FloatArray = np.clip(1.0 - similarity, 0.0, 2.0)
    return distances


def _nearest_distances(
    queries: EmbeddingArray,
    points: EmbeddingArray,
    *,
    n_nearest: int,
    exclude_self: bool = False,
) -> FloatArray:
    """Mean cosine distance of each query to its ``n_nearest`` nearest points, in blocks.

    With ``exclude_self`` the queries are the points themselves and row i skips point i.
    """
    n_queries, n_points = queries.shape[0], points.shape[0]
    distances = np.empty(n_queries, dtype=np.float64)
    rows_per_block = max(1, MAX_SIMILARITY_BLOCK_ENTRIES // max(1, n_points))
    for start in range(0, n_queries, rows_per_block):
        stop = min(start + rows_per_block, n_queries)
        similarity = queries[start:stop] @ points.T
        if exclude_self:
            block_rows = np.arange(stop - start)
            similarity[block_rows, start + block_rows] = -np.inf
        if n_nearest < n_points:
            nearest = -np.partition(-similarity, n_nearest - 1, axis=1)[:, :n_nearest]
        else:
            nearest = similarity
        distances[start:stop] = 1.0 - nearest.astype(np.float64).mean(axis=1)
    return np.clip(distances, 0.0, 2.0)


def _fraction_smaller(reference: FloatArray, distances: FloatArray) -> FloatArray:
    """For each distance, the fraction of ``reference`` strictly below it, in [0, 1]."""
    ordered = np.sort(reference)
    return np.searchsorted(ordered, distances, side="left").astype(np.float64) / ordered.size


# ---------------------------------------------------------------------------
# Shared array checks


def normalize_rows(embeddings: ArrayLike) -> EmbeddingArray:
    """L2-normalise each row; cosine similarity is then a dot product.

    Parameters
    ----------
    embeddings : (N, D) float, finite.

    Returns
    -------
    (N, D) float32 rows of unit length; all-zero rows stay zero. float32 holds
    every bit of the float16 cache and halves the memory traffic of float64.
    """
    values = _as_embeddings(embeddings)
    lengths = np.linalg.norm(values, axis=1, keepdims=True)
    return (values / np.where(lengths > 0, lengths, 1.0)).astype(np.float32)


def _normalized_float64(values: FloatArray) -> FloatArray:
    lengths = np.linalg.norm(values, axis=1, keepdims=True)
    return values / np.where(lengths > 0, lengths, 1.0)


def _as_embeddings(embeddings: ArrayLike) -> NDArray[np.floating[Any]]:
    values = np.asarray(embeddings)
    if values.ndim != 2:
        raise ValueError(f"embeddings must be 2-D (N, D), got shape {values.shape}")
    if not np.issubdtype(values.dtype, np.floating):
        values = values.astype(np.float64)
    elif values.dtype == np.float16:
        # float16 overflows in the squared norms; float32 is exact for every float16.
        values = values.astype(np.float32)
    if not np.isfinite(values).all():
        raise ValueError("embeddings must be finite")
    return values


def _as_probabilities(probs: ArrayLike) -> FloatArray:
    values = np.asarray(probs, dtype=np.float64)
    if values.ndim != 2 or values.shape[1] == 0:
        raise ValueError(f"probs must be 2-D (N, C) with C >= 1, got shape {values.shape}")
    if not np.isfinite(values).all() or (values < 0).any() or (values > 1).any():
        raise ValueError("probs must be finite and lie in [0, 1]")
    if not np.allclose(values.sum(axis=1), 1.0, rtol=0.0, atol=PROBABILITY_SUM_TOLERANCE):
        raise ValueError("each row of probs must sum to 1")
    return values


def _as_class_indices(
    indices: ArrayLike, *, n_rows: int, n_classes: int, allow_unknown: bool
) -> IntArray:
    values = np.asarray(indices)
    if values.size == 0:
        values = values.astype(np.int64)
    if values.shape != (n_rows,):
        raise ValueError(f"class indices must have shape ({n_rows},), got {values.shape}")
    if not np.issubdtype(values.dtype, np.integer):
        raise ValueError(f"class indices must be integers, got dtype {values.dtype}")
    lowest = -1 if allow_unknown else 0
    if values.size and (values.min() < lowest or values.max() >= n_classes):
        raise ValueError(f"class indices must lie in {lowest}..{n_classes - 1}")
    return values.astype(np.int64)
