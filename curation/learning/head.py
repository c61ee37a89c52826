"""The classifier head: softmax over standardised embeddings, trained with Keras.

Trained in Keras (class weights for the long tail, a fixed seed, early
stopping on a held-out share), then kept as plain arrays: mean, scale,
weights, bias. Inference is one affine map and a softmax in NumPy, the same
arithmetic as the Keras layers, so rescoring a million cached embeddings
needs neither TensorFlow nor a GPU.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

# The kernel's L2 penalty. Measured with this Keras head on mobilenet_0.25
# embeddings (bench/head_l2.py: mean of 8 group splits; 30 / 100 / all labels): 3e-2 beats
# 1e-3 at every budget on both real sets, porto5 0.767 / 0.869 / 0.932
# against 0.735 / 0.849 / 0.917 and wonders7 0.779 / 0.882 / 0.928 against
# 0.744 / 0.846 / 0.907 (1e-2 lies between); the L-BFGS probe of `curation
# bench al`, over 3e-4 to 1e-1, peaks at 3e-2 on both sets. A weak penalty
# lets the few labels of a young class pull its weights far out.
HEAD_L2 = 3e-2

# Fewer reference rows than this and the training rows are the reference.
MIN_REFERENCE_ROWS = 2

# Self-training: the head learns a second time from the labelled images and the
# unlabelled ones its first fit is this sure of ...
PSEUDO_LABEL_CONFIDENCE = 0.9
# ... and that lie no farther from their nearest class than this share of the
# training images lie from their own: a confident guess on a logo, a diagram or
# a souvenir of a crawl, far from every landmark, is not learnt.
PSEUDO_LABEL_MAX_NOVELTY = 0.9


@dataclass(frozen=True)
class Head:
    mean: NDArray[np.float32]  # (D,)
    scale: NDArray[np.float32]  # (D,)
    weights: NDArray[np.float32]  # (D, C)
    bias: NDArray[np.float32]  # (C,)
    # Class centroids (C, D), L2-normalised, of the standardised training
    # embeddings, and the cosine distances of the training images to their
    # own centroid (sorted): the reference that novelty is measured against.
    centroids: NDArray[np.float32]
    own_class_distances: NDArray[np.float32]

    @property
    def n_classes(self) -> int:
        return int(self.bias.shape[0])

    def standardise(self, embeddings: NDArray[np.floating]) -> NDArray[np.float32]:
        return ((np.asarray(embeddings, dtype=np.float32) - self.mean) / self.scale).astype(
            np.float32
        )

    def predict_proba(
        self, embeddings: NDArray[np.floating], *, chunk: int = 65536
    ) -> NDArray[np.float32]:
        """(N, D) embeddings -> (N, C) probabilities, rows summing to 1."""
        out = np.empty((len(embeddings), self.n_classes), dtype=np.float32)
        for start in range(0, len(embeddings), chunk):
            logits = self.standardise(embeddings[start : start + chunk]) @ self.weights + self.bias
            out[start : start + chunk] = _softmax_rows(logits)
        return out

    def probabilities_and_distance(
        self, embeddings: NDArray[np.floating]
    ) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        """(N, D) -> ((N, C) probabilities, (N,) cosine distance to the nearest centroid).

        One standardisation and one matrix product serve both (scoring calls
        it on chunks that fit in cache); equal to ``predict_proba`` and
        ``nearest_class_distance``.
        """
        standard = self.standardise(embeddings)
        both = standard @ self._fused_matrix()
        probabilities = _softmax_rows(both[:, : self.n_classes] + self.bias)
        norms = np.maximum(np.linalg.norm(standard, axis=1), 1e-12)
        similarity = both[:, self.n_classes :].max(axis=1) / norms
        return probabilities, (1.0 - similarity).astype(np.float32)

    def _fused_matrix(self) -> NDArray[np.float32]:
        fused: NDArray[np.float32] = np.ascontiguousarray(
            np.concatenate([self.weights, self.centroids.T], axis=1), dtype=np.float32
        )
        return fused

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        np.savez(
            buffer,
            mean=self.mean,
            scale=self.scale,
            weights=self.weights,
            bias=self.bias,
            centroids=self.centroids,
            own_class_distances=self.own_class_distances,
        )
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> Head:
        with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
            return cls(**{name: arrays[name] for name in arrays.files})


def balanced_class_weights(labels: NDArray[np.integer], n_classes: int) -> dict[int, float]:
    """Weights inversely proportional to class frequency (mean weight 1 over samples)."""
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    present = counts > 0
    weights = np.zeros(n_classes)
    weights[present] = len(labels) / (present.sum() * counts[present])
    return {i: float(w) for i, w in enumerate(weights)}


def standardisation(
    embeddings: NDArray[np.floating], reference: NDArray[np.floating] | None = None
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """(D,) mean and (D,) deviation (plus 1e-6) that a head standardises by.

    ``reference`` is (R, D) embeddings of the images the head will score: an
    even sample of its space (:func:`curation.learning.embedding_store.sample`).
    The labelled rows are no fair sample of those: the queue chose them,
    typical images first and torn ones after, so their mean and spread along
    a direction are not the space's, and a penalty on standardised weights
    then favours the wrong directions. ``curation bench al`` on porto5, seeds
    0-299 paired against the labelled rows' statistics: the default strategy
    needs 3.7 fewer labels to reach 95% of the all-labels accuracy (standard
    error 1.1) and 0.4 fewer to 99% (5.0); random and plain margin, whose
    labels are fairer samples, move by less than their noise. On wonders7
    (seeds 0-99) the default needs 1.3 and 3.9 fewer (1.4, 3.1), random 2.3
    and 9.3 more (1.7, 3.7). Without a reference, or one of fewer than
    ``MIN_REFERENCE_ROWS`` rows, the training rows (``embeddings``) are used.
    """
    rows = embeddings
    if reference is not None and len(reference) >= MIN_REFERENCE_ROWS:
        rows = reference
    x = np.asarray(rows, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != np.shape(embeddings)[1]:
        raise ValueError(
            f"reference must be (R, {np.shape(embeddings)[1]}) embeddings, got {x.shape}"
        )
    mean: NDArray[np.float64] = x.mean(axis=0)
    scale: NDArray[np.float64] = x.std(axis=0) + 1e-6
    return mean, scale


def train_head(
    embeddings: NDArray[np.floating],
    labels: NDArray[np.integer],
    *,
    n_classes: int,
    reference: NDArray[np.floating] | None = None,
    seed: int = 0,
    epochs: int = 200,
    l2: float = HEAD_L2,
    learning_rate: float = 1e-2,
    validation_share: float = 0.1,
    validation_data: tuple[NDArray[np.floating], NDArray[np.integer]] | None = None,
    patience: int = 15,
    on_epoch: Callable[[int, dict[str, float]], object] | None = None,
    extra_training: tuple[NDArray[np.floating], NDArray[np.integer]] | None = None,
) -> tuple[Head, dict[str, list[float]]]:
    """Fit the head on (N, D) embeddings and labels in [0, n_classes).

    Early stopping watches ``validation_data`` (embeddings, labels) when
    given (a dataset version's validation split), else a held-out
    ``validation_share`` of the input (from 50 items). ``on_epoch(epoch,
    logs)`` runs after each epoch; an exception it raises (a cancellation)
    stops training and propagates. Returns the head and the training curves
    (loss and accuracy per epoch). ``reference``: see :func:`standardisation`.
    ``extra_training`` (embeddings, labels) joins the training rows only: never
    the validation share, the standardisation or the novelty reference
    (pseudo-labels, :func:`self_train_head`).
    """
    import keras

    x = np.asarray(embeddings, dtype=np.float32)
    y = np.asarray(labels, dtype=np.int64)
    if x.ndim != 2 or len(x) != len(y):
        raise ValueError("embeddings must be (N, D) with one label each")
    if len(x) == 0:
        raise ValueError("no labelled embeddings to train on")
    mean64, scale64 = standardisation(x, reference)
    mean, scale = mean64.astype(np.float32), scale64.astype(np.float32)
    standard = (x - mean) / scale

    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input(shape=(x.shape[1],)),
            keras.layers.Dense(
                n_classes, activation="softmax", kernel_regularizer=keras.regularizers.L2(l2)
            ),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    order = np.random.default_rng(seed).permutation(len(x))
    held_out: tuple[NDArray[np.float32], NDArray[np.int64]] | None
    if validation_data is not None and len(validation_data[1]):
        train = order
        held_out = (
            (np.asarray(validation_data[0], dtype=np.float32) - mean) / scale,
            np.asarray(validation_data[1], dtype=np.int64),
        )
    else:
        n_validation = int(len(x) * validation_share) if len(x) >= 50 else 0
        validation, train = order[:n_validation], order[n_validation:]
        held_out = (standard[validation], y[validation]) if n_validation else None
    monitor = "val_loss" if held_out is not None else "loss"
    callbacks: list[keras.callbacks.Callback] = [
        keras.callbacks.EarlyStopping(monitor=monitor, patience=patience, restore_best_weights=True)
    ]
    if on_epoch is not None:
        report = on_epoch
        callbacks.append(
            keras.callbacks.LambdaCallback(
                on_epoch_end=lambda epoch, logs: report(
                    epoch, {k: float(v) for k, v in (logs or {}).items()}
                )
            )
        )
    fit_x, fit_y = standard[train], y[train]
    if extra_training is not None and len(extra_training[1]):
        fit_x = np.concatenate(
            [fit_x, (np.asarray(extra_training[0], dtype=np.float32) - mean) / scale]
        )
        fit_y = np.concatenate([fit_y, np.asarray(extra_training[1], dtype=np.int64)])
    history = model.fit(
        fit_x,
        fit_y,
        validation_data=held_out,
        epochs=epochs,
        batch_size=min(256, len(fit_y)),
        class_weight=balanced_class_weights(fit_y, n_classes),
        callbacks=callbacks,
        shuffle=True,
        verbose=0,
    )
    kernel, bias = (np.asarray(w, dtype=np.float32) for w in model.layers[-1].get_weights())
    centroids, distances = centroids_and_own_distances(standard, y, n_classes)
    head = Head(
        mean=mean.astype(np.float32),
        scale=scale.astype(np.float32),
        weights=kernel,
        bias=bias,
        centroids=centroids,
        own_class_distances=distances,
    )
    curves = {name: [float(v) for v in values] for name, values in history.history.items()}
    return head, curves


def confident_and_typical(
    probabilities: NDArray[np.floating],
    distance: NDArray[np.floating],
    own_class_distances: NDArray[np.floating],
) -> NDArray[np.bool_]:
    """(N,) which of N unlabelled images a head may learn from as labelled by its guess.

    ``probabilities`` (N, C) and ``distance`` (N,), the cosine distance to the
    nearest class centroid, from a head's first fit; ``own_class_distances``
    the sorted distances of its training images to their own class. See
    :data:`PSEUDO_LABEL_CONFIDENCE` and :data:`PSEUDO_LABEL_MAX_NOVELTY`.
    """
    p = np.asarray(probabilities, dtype=np.float64)
    if p.shape[0] == 0 or len(own_class_distances) == 0:
        return np.zeros(p.shape[0], dtype=np.bool_)
    novelty = novelty_rank(distance, own_class_distances)
    keep: NDArray[np.bool_] = (p.max(axis=1) >= PSEUDO_LABEL_CONFIDENCE) & (
        novelty < PSEUDO_LABEL_MAX_NOVELTY
    )
    return keep


def self_train_head(
    embeddings: NDArray[np.floating],
    labels: NDArray[np.integer],
    *,
    unlabelled: NDArray[np.floating] | None,
    n_classes: int,
    **options: Any,
) -> tuple[Head, dict[str, list[float]], NDArray[np.bool_]]:
    """:func:`train_head`, then once more with the unlabelled images it is sure of.

    The labels reviewers give are the ones the queue chose: torn, unusual
    images, few of the plain ones that make up most of what the head will
    see. Learning those plain ones from the first fit's own confident guesses
    (:func:`confident_and_typical`) brings the head close to one trained on
    everything. ``unlabelled``: (U, D) embeddings of images without a label,
    none of them in (or a near duplicate of) a validation or test image.
    ``options`` go to both fits. Returns the head, the second fit's curves (the
    first's when nothing was sure enough) and (U,) which unlabelled images it
    learnt from their guesses (none with fewer than 2 labelled classes: a
    one-class head is sure of everything).
    """
    head, curves = train_head(embeddings, labels, n_classes=n_classes, **options)
    count = 0 if unlabelled is None else len(unlabelled)
    nothing = np.zeros(count, dtype=np.bool_)
    if unlabelled is None or count == 0 or np.unique(np.asarray(labels)).size < 2:
        return head, curves, nothing
    probabilities, distance = head.probabilities_and_distance(unlabelled)
    keep = confident_and_typical(probabilities, distance, head.own_class_distances)
    if not keep.any():
        return head, curves, nothing
    guessed = (np.asarray(unlabelled)[keep], probabilities[keep].argmax(axis=1))
    second, second_curves = train_head(
        embeddings, labels, n_classes=n_classes, extra_training=guessed, **options
    )
    return second, second_curves, keep


def head_from_dense(
    kernel: NDArray[np.floating],
    bias: NDArray[np.floating],
    embeddings: NDArray[np.floating],
    labels: NDArray[np.integer],
) -> Head:
    """The head of a dense softmax layer trained on raw (D,) features (a fine-tuned model's).

    ``kernel`` (D, C) and ``bias`` (C,) act on raw features; the head keeps
    the standardisation of ``embeddings`` (the training features, (N, D),
    with ``labels`` in [0, C)) like every other head, so novelty's centroids
    are measured in the same standardised space, and folds it into the
    affine map: ``x K + b == ((x - m) / s) (s K) + (b + m K)``.
    """
    x = np.asarray(embeddings, dtype=np.float32)
    y = np.asarray(labels, dtype=np.int64)
    k = np.asarray(kernel, dtype=np.float64)
    b = np.asarray(bias, dtype=np.float64)
    if x.ndim != 2 or len(x) != len(y) or len(x) == 0:
        raise ValueError("embeddings must be (N, D), N >= 1, with one label each")
    if k.shape != (x.shape[1], b.shape[0]):
        raise ValueError(f"kernel {k.shape} does not map {x.shape[1]} features to {b.shape[0]}")
    mean64, scale64 = standardisation(x)
    mean, scale = mean64.astype(np.float32), scale64.astype(np.float32)
    centroids, distances = centroids_and_own_distances((x - mean) / scale, y, b.shape[0])
    return Head(
        mean=mean.astype(np.float32),
        scale=scale.astype(np.float32),
        weights=(scale.astype(np.float64)[:, None] * k).astype(np.float32),
        bias=(b + mean.astype(np.float64) @ k).astype(np.float32),
        centroids=centroids,
        own_class_distances=distances,
    )


def _softmax_rows(logits: NDArray[np.float32]) -> NDArray[np.float32]:
    """Row-wise softmax, in place (shifted by the row maximum so exp cannot overflow)."""
    logits -= logits.max(axis=1, keepdims=True)
    np.exp(logits, out=logits)
    logits /= logits.sum(axis=1, keepdims=True)
    return logits


def _unit(rows: NDArray[np.float32]) -> NDArray[np.float32]:
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    unit: NDArray[np.float32] = (rows / np.maximum(norms, 1e-12)).astype(np.float32)
    return unit


def centroids_and_own_distances(
    standard: NDArray[np.float32], labels: NDArray[np.int64], n_classes: int
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """(C, D) unit class centroids of standardised embeddings and the sorted (N,)
    cosine distances of the images to their own class's (leave-one-out) centroid."""
    unit = _unit(standard)
    sums = np.zeros((n_classes, standard.shape[1]), dtype=np.float32)
    np.add.at(sums, labels, unit)
    counts = np.bincount(labels, minlength=n_classes)
    # Each training image is measured against its class centroid computed
    # without it, as a new image would be: otherwise the reference distances
    # are too small and every new image looks novel.
    alone = counts[labels] <= 1
    leave_one_out = _unit(np.where(alone[:, None], sums[labels], sums[labels] - unit))
    own = 1.0 - np.sum(unit * leave_one_out, axis=1)
    return _unit(sums), np.sort(own).astype(np.float32)


def nearest_class_distance(head: Head, embeddings: NDArray[np.floating]) -> NDArray[np.float32]:
    """(N, D) -> (N,) cosine distance to the nearest class centroid, in [0, 2]."""
    return nearest_centroid_distance(head.standardise(embeddings), head.centroids).astype(
        np.float32
    )


def nearest_centroid_distance(standard: NDArray[Any], centroids: NDArray[Any]) -> NDArray[Any]:
    """(N, D) standardised embeddings, (C, D) unit centroids -> (N,) cosine distance to
    the nearest, in the inputs' precision."""
    unit = standard / np.maximum(np.linalg.norm(standard, axis=1, keepdims=True), 1e-12)
    distance: NDArray[Any] = 1.0 - (unit @ centroids.T).max(axis=1)
    return distance


def novelty_from_distance(head: Head, distance: NDArray[np.float32]) -> NDArray[np.float64]:
    """The share of training images that sit closer to their own class than these do
    to their nearest class: 0.5 is ordinary, near 1 is farther than almost all."""
    return novelty_rank(distance, head.own_class_distances)


def novelty_rank(
    distance: NDArray[np.floating], own_class_distances: NDArray[np.floating]
) -> NDArray[np.float64]:
    """:func:`novelty_from_distance` against sorted own-class distances (0 without any)."""
    if len(own_class_distances) == 0:
        return np.zeros(len(distance))
    ranks = np.searchsorted(own_class_distances, distance, side="left")
    return np.asarray(ranks, dtype=np.float64) / len(own_class_distances)
