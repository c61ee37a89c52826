"""Which images to show reviewers: diverse, typical, or at random (the control group).

Arrays in, arrays out. Embeddings are (N, D) in any float dtype and are compared
by cosine distance (1 - cosine similarity, in [0, 2]) after L2 normalisation,
so twenty near-identical photos of one tower sit at distance ~0 from each other
and a diverse pick takes one of them. Every function returns row indices into
the arrays it was given.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from curation.learning.scores import (
    MAX_SIMILARITY_BLOCK_ENTRIES,
    BoolArray,
    EmbeddingArray,
    FloatArray,
    IntArray,
    _nearest_distances,
    normalize_rows,
)

# Above this many images the cold start clusters with mini-batches: full
# k-means costs O(N k D) per iteration and would take minutes on a large crawl.
FULL_KMEANS_MAX_IMAGES = 10_000
KMEANS_RESTARTS = 3


def k_center_greedy(
    embeddings: ArrayLike,
    *,
    k: int,
    already_selected: ArrayLike | None = None,
    seed: int = 0,
) -> IntArray:
    """Farthest-point selection: each pick is the image farthest from every image picked so far.

    Greedy k-center (Gonzalez; Sener and Savarese's core-set selection): keep,
    for every image, its cosine distance to the nearest selected image, pick the
    largest, update. Each pick costs one (N, D) matrix-vector product; no N x N
    matrix is built. An image whose twin is already selected is at distance ~0
    and comes last.

    Parameters
    ----------
    embeddings : (N, D) float, finite.
    k : number of images to pick, 0 <= k <= N - len(already_selected).
    already_selected : (S,) int row indices already chosen (for example already
        labelled or already queued); they are never returned and count as
        covered. None or empty for a fresh start.
    seed : chooses the first pick when nothing is already selected (the
        farthest point from an empty set is undefined).

    Returns
    -------
    (k,) int64 distinct row indices in the order picked.
    """
    points = normalize_rows(embeddings)
    n_rows = points.shape[0]
    selected_before = _as_row_indices(already_selected, n_rows=n_rows)
    available = n_rows - selected_before.size
    if not 0 <= k <= available:
        raise ValueError(f"k must lie in 0..{available}, got {k}")

    nearest_selected_distance = np.full(n_rows, np.inf, dtype=np.float64)
    if selected_before.size:
        rows_per_block = max(1, MAX_SIMILARITY_BLOCK_ENTRIES // n_rows)
        for start in range(0, selected_before.size, rows_per_block):
            block = selected_before[start : start + rows_per_block]
            similarity = points @ points[block].T
            np.minimum(
                nearest_selected_distance,
                1.0 - similarity.max(axis=1),
                out=nearest_selected_distance,
            )
        # -inf, not 0: float32 rounding can leave a covered row a hair above 0.
        nearest_selected_distance[selected_before] = -np.inf

    picks = np.empty(k, dtype=np.int64)
    for position in range(k):
        if position == 0 and selected_before.size == 0:
            pick = int(np.random.default_rng(seed).integers(n_rows))
        else:
            pick = int(np.argmax(nearest_selected_distance))
        picks[position] = pick
        _cover(nearest_selected_distance, points, pick)
    return picks


def diverse_top(
    priorities: ArrayLike,
    embeddings: ArrayLike,
    *,
    k: int,
    pool_factor: int = 5,
) -> IntArray:
    """The k images to show next: high priority, and not k views of the same thing.

    Rule: the pool is the ``k * pool_factor`` highest-priority images (ties by
    row index). The first pick is the pool's highest priority; each next pick
    maximises ``priority * distance``, where distance is the cosine distance
    to the nearest image already picked. An image as urgent as another but twice
    as far from what is already shown wins; a near-duplicate of a pick scores ~0
    whatever its priority, so it waits for a later batch.

    Parameters
    ----------
    priorities : (N,) float, finite, >= 0 (the scores of
        :mod:`curation.learning.scores` all are); a priority of 0 is only picked
        when nothing with a positive priority is left in the pool.
    embeddings : (N, D) float, finite; only the pool's rows are read.
    k : 0 <= k <= N.
    pool_factor : >= 1; larger trades priority for diversity.

    Returns
    -------
    (k,) int64 row indices in the order to show them: the order picked, so every
    prefix of the list is itself spread out (a reviewer who stops after ten
    still saw ten different things).
    """
    weights = np.asarray(priorities, dtype=np.float64)
    if weights.ndim != 1:
        raise ValueError(f"priorities must be 1-D (N,), got shape {weights.shape}")
    if not np.isfinite(weights).all() or (weights < 0).any():
        raise ValueError("priorities must be finite and >= 0 (NaN scores need a decision first)")
    n_rows = weights.shape[0]
    vectors = np.asarray(embeddings)
    if vectors.ndim != 2 or vectors.shape[0] != n_rows:
        raise ValueError(f"embeddings must have shape ({n_rows}, D), got {vectors.shape}")
    if not 0 <= k <= n_rows:
        raise ValueError(f"k must lie in 0..{n_rows}, got {k}")
    if pool_factor < 1:
        raise ValueError(f"pool_factor must be >= 1, got {pool_factor}")

    pool_size = min(n_rows, k * pool_factor)
    pool = np.argsort(-weights, kind="stable")[:pool_size].astype(np.int64)
    pool_weights = weights[pool]
    points = normalize_rows(vectors[pool])

    nearest_picked_distance = np.full(pool_size, np.inf, dtype=np.float64)
    picked = np.zeros(pool_size, dtype=np.bool_)
    order = np.empty(k, dtype=np.int64)
    for position in range(k):
        if position == 0:
            choice = 0  # the pool is sorted: row 0 has the highest priority
        else:
            # Clipped at 0: picked rows hold -inf and float32 rounding can dip below 0.
            gain = pool_weights * np.maximum(nearest_picked_distance, 0.0)
            gain[picked] = -np.inf
            choice = int(np.argmax(gain))
        order[position] = choice
        picked[choice] = True
        _cover(nearest_picked_distance, points, choice)
    return pool[order]


def typical_diverse(embeddings: ArrayLike, *, k: int, seed: int = 0) -> IntArray:
    """For a cold start: one typical image from each of k clusters.

    The L2-normalised embeddings are clustered by k-means into k clusters
    (``KMeans`` up to 10,000 images, ``MiniBatchKMeans`` above, both seeded with
    ``seed`` and restarted 3 times); each cluster contributes the member closest
    to its centre, the most typical image of that group. Reviewers thus label
    common views first and in many different places at once.

    Parameters
    ----------
    embeddings : (N, D) float, finite.
    k : number of clusters, 0 <= k <= N.
    seed : k-means seed; equal inputs and seed give equal output.

    Returns
    -------
    (k,) int64 row indices, one per cluster, largest cluster first (ties by
    row index). Fewer than k when the embeddings hold fewer than k distinct
    points and some clusters stay empty.
    """
    # Imported here: scikit-learn takes seconds to import and only the cold start needs it.
    from sklearn.cluster import KMeans, MiniBatchKMeans

    points = normalize_rows(embeddings)
    n_rows = points.shape[0]
    if not 0 <= k <= n_rows:
        raise ValueError(f"k must lie in 0..{n_rows}, got {k}")
    if k == 0:
        return np.zeros(0, dtype=np.int64)

    if n_rows <= FULL_KMEANS_MAX_IMAGES:
        clustering = KMeans(n_clusters=k, n_init=KMEANS_RESTARTS, random_state=seed)
    else:
        clustering = MiniBatchKMeans(n_clusters=k, n_init=KMEANS_RESTARTS, random_state=seed)
    cluster_of_row = np.asarray(clustering.fit_predict(points), dtype=np.int64)
    centres = np.asarray(clustering.cluster_centers_, dtype=np.float32)

    distance_to_centre = np.linalg.norm(points - centres[cluster_of_row], axis=1)
    # Sorted by cluster, then distance, then row: the first row of each cluster is its
    # most typical member.
    rows = np.lexsort((np.arange(n_rows), distance_to_centre, cluster_of_row))
    first_of_cluster = np.ones(n_rows, dtype=np.bool_)
    first_of_cluster[1:] = cluster_of_row[rows][1:] != cluster_of_row[rows][:-1]
    representatives = rows[first_of_cluster].astype(np.int64)
    sizes = np.bincount(cluster_of_row, minlength=k)[cluster_of_row[representatives]]
    return representatives[np.lexsort((representatives, -sizes))]


# TypiClust's neighbourhood for typicality (Hacohen et al. use 20).
TYPICALITY_NEIGHBOURS = 20


def typical_picks(
    embeddings: ArrayLike,
    *,
    labelled: ArrayLike,
    k: int,
    seed: int,
    n_neighbours: int = TYPICALITY_NEIGHBOURS,
) -> IntArray:
    """TypiClust (Hacohen et al., 2022): the most typical row of each uncovered cluster.

    The pool's L2-normalised embeddings are clustered by k-means into
    ``labelled.sum() + k`` clusters; clusters holding no labelled row are
    visited largest first, and each gives its unlabelled row of highest
    typicality, the inverse mean cosine distance to its ``n_neighbours``
    nearest rows in the cluster. Dense, common views come first, and not two
    from one cluster.

    Parameters
    ----------
    embeddings : (N, D) float.
    labelled : (N,) bool, rows already labelled (never returned).
    k : rows to pick, 0 <= k <= number of unlabelled rows.
    seed : k-means seed.

    Returns
    -------
    (k,) int64 distinct unlabelled rows; when fewer clusters are uncovered
    than ``k``, the rest are the unlabelled rows farthest from every pick and
    every labelled row (k-center greedy).
    """
    from sklearn.cluster import KMeans
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

    points = normalize_rows(embeddings)
    mask = np.asarray(labelled, dtype=np.bool_)
    unlabelled = np.flatnonzero(~mask)
    if not 0 <= k <= unlabelled.size:
        raise ValueError(f"k must lie in 0..{unlabelled.size}, got {k}")
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    n_clusters = min(int(mask.sum()) + k, points.shape[0])
    with threadpool_limits(1):
        cluster = np.asarray(
            KMeans(n_clusters=n_clusters, n_init=1, random_state=seed).fit_predict(points),
            dtype=np.int64,
        )
    covered = np.zeros(n_clusters, dtype=np.bool_)
    covered[cluster[mask]] = True
    sizes = np.bincount(cluster, minlength=n_clusters)
    picks: list[int] = []
    for c in np.lexsort((np.arange(n_clusters), -sizes)):
        if covered[c]:
            continue
        members = np.flatnonzero((cluster == c) & ~mask)
        if members.size == 0:
            continue
        picks.append(int(members[np.argmax(_typicality(points[members], n_neighbours))]))
        if len(picks) == k:
            break
    if len(picks) < k:
        taken = np.concatenate([np.flatnonzero(mask), np.asarray(picks, dtype=np.int64)])
        picks.extend(
            int(row)
            for row in k_center_greedy(points, k=k - len(picks), already_selected=taken, seed=seed)
        )
    return np.asarray(picks, dtype=np.int64)


def _typicality(points: EmbeddingArray, n_neighbours: int) -> FloatArray:
    """(M,) inverse mean cosine distance of each row to its nearest others (in blocks)."""
    neighbours = min(n_neighbours, points.shape[0] - 1)
    if neighbours <= 0:
        return np.ones(points.shape[0])
    distance = _nearest_distances(points, points, n_nearest=neighbours, exclude_self=True)
    typicality: FloatArray = 1.0 / (distance + 1e-6)
    return typicality


def random_control(n: int, *, share: float, seed: int) -> BoolArray:
    """A uniformly random control group, to measure what the smart selection adds.

    Parameters
    ----------
    n : number of items, >= 0.
    share : fraction to put in the control group, in [0, 1].
    seed : equal (n, share, seed) give the same mask under one NumPy version
        (NumPy does not promise its random streams across versions). Changing n
        redraws every member, so draw over a fixed list of items.

    Returns
    -------
    (n,) bool with exactly ``round(share * n)`` True (Python's ``round``,
    which takes halves to the even integer).
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"share must lie in [0, 1], got {share}")
    count = round(share * n)
    mask = np.zeros(n, dtype=np.bool_)
    mask[np.random.default_rng(seed).choice(n, size=count, replace=False)] = True
    return mask


def _cover(nearest_distance: FloatArray, points: EmbeddingArray, pick: int) -> None:
    """Update, in place, each row's distance to its nearest pick after picking ``pick``."""
    distance_to_pick = 1.0 - points @ points[pick]
    np.minimum(nearest_distance, distance_to_pick, out=nearest_distance)
    nearest_distance[pick] = -np.inf


def _as_row_indices(indices: ArrayLike | None, *, n_rows: int) -> IntArray:
    if indices is None:
        return np.zeros(0, dtype=np.int64)
    values = np.asarray(indices)
    if values.size == 0:
        return np.zeros(0, dtype=np.int64)
    if values.ndim != 1 or not np.issubdtype(values.dtype, np.integer):
        raise ValueError("already_selected must be a 1-D array of integer row indices")
    if values.min() < 0 or values.max() >= n_rows:
        raise ValueError(f"already_selected must lie in 0..{n_rows - 1}")
    return np.unique(values).astype(np.int64)
