"""Embed once, train a head, score, and queue: the model in the loop.

Each step reads in a short transaction, computes with no session open, and
writes in another short transaction (a database session is never held across
a decode, an embedding or a training run). Writes are idempotent: a
redelivered task finds its embeddings mapped and its scores present.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from curation.exceptions import CurationError, NotFound
from curation.geometry import Box
from curation.labels import current_labels, is_current, judged_images
from curation.learning import bulk_write, embedding_store
from curation.learning.head import (
    Head,
    nearest_class_distance,
    novelty_from_distance,
    self_train_head,
)
from curation.learning.ordering import claim_keys, head_order
from curation.learning.priority import (
    ScoredItems,
    Strategy,
    balanced_counts_novelty,
    far_share,
    priorities,
)
from curation.models import (
    EmbeddingSpace,
    Image,
    ImageSource,
    Label,
    LabelVerdict,
    LandmarkClass,
    ModelStatus,
    ModelVersion,
    QueueOrder,
)
from curation.neardup import group_ids_of
from curation.store import LocalImageStore
from curation.taxonomy import count_active_classes

if TYPE_CHECKING:
    from curation.learning.backbones import LoadedBackbone

TOP_K = 5


@dataclass(frozen=True)
class LearningPaths:
    embeddings: Path
    models: Path

    @classmethod
    def under(cls, data_dir: Path) -> LearningPaths:
        return cls(embeddings=data_dir / "embeddings", models=data_dir / "models")


@dataclass
class EmbedOutcome:
    embedded: int = 0
    already_cached: int = 0
    failed: dict[int, str] = field(default_factory=dict)


# --- what to embed -------------------------------------------------------------


def _crops(label: Label | None) -> list[tuple[str, Box | None]]:
    crops: list[tuple[str, Box | None]] = [(embedding_store.FULL, None)]
    if label is not None and label.box is not None:
        crops.append((embedding_store.crop_key(label.box), label.box))
    return crops


def embed_missing(
    factory: sessionmaker[Session],
    store: LocalImageStore,
    paths: LearningPaths,
    backbone: LoadedBackbone,
    image_ids: Sequence[int],
    *,
    batch_size: int = 32,
    on_batch: Callable[[int], object] | None = None,
    boxes: Mapping[int, Box] | None = None,
) -> EmbedOutcome:
    """Embed every (image, crop) of ``image_ids`` not yet cached in ``backbone``'s space.

    The uncropped image is always embedded; where the current label has a
    box, the crop to the box is embedded too, and so is the crop to
    ``boxes[image_id]`` where given (a dataset version's box, which a later
    label may have moved). A file that fails to decode is reported in
    ``failed`` and does not stop the others.
    """
    from curation.learning.embed import EmbedInput, embed_images

    outcome = EmbedOutcome()
    with factory() as session, session.begin():
        space = embedding_store.get_or_create_space(
            session,
            key=backbone.space_key,
            backbone=backbone.spec.name,
            weights_id=backbone.weights_id,
            dim=backbone.spec.dim,
        )
        labels = {label.image_id: label for label in current_labels(session, image_ids)}
        keys = dict(
            session.execute(select(Image.id, Image.storage_key).where(Image.id.in_(image_ids)))
            .tuples()
            .all()
        )
        plan = {
            (image_id, key): box
            for image_id in image_ids
            if image_id in keys
            for key, box in _crops(labels.get(image_id))
        }
        for image_id, box in (boxes or {}).items():
            if image_id in keys:
                plan[(image_id, embedding_store.crop_key(box))] = box
        todo = embedding_store.missing(session, space, list(plan))
        space_id = space.id
    outcome.already_cached = len(plan) - len(todo)
    # Large chunks keep decoding overlapped with the model; each chunk's
    # embeddings are recorded in their own short transaction.
    chunk_size = batch_size * 16
    for start in range(0, len(todo), chunk_size):
        chunk = todo[start : start + chunk_size]
        inputs = [EmbedInput(path=store.path_for(keys[i]), box=plan[(i, c)]) for i, c in chunk]
        try:
            vectors = embed_images(inputs, backbone, batch_size=batch_size)
            good = list(chunk)
        except Exception:
            # One poison file must not sink its batch: embed one by one.
            good, rows = [], []
            for pair, single in zip(chunk, inputs, strict=True):
                try:
                    rows.append(embed_images([single], backbone, batch_size=1)[0])
                    good.append(pair)
                except Exception as error:
                    outcome.failed[pair[0]] = f"{type(error).__name__}: {error}"[:500]
            vectors = np.stack(rows) if rows else np.zeros((0, backbone.spec.dim), np.float16)
        with factory() as session, session.begin():
            space = session.get_one(EmbeddingSpace, space_id)
            embedding_store.record(session, paths.embeddings, space, good, vectors)
        outcome.embedded += len(good)
        if on_batch:
            on_batch(len(chunk))
    return outcome


# --- training ------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingData:
    image_ids: NDArray[np.int64]
    embeddings: NDArray[np.float16]
    labels: NDArray[np.int64]  # indices into class_ids
    class_ids: list[int]


def labelled_embeddings(
    session: Session, paths: LearningPaths, space: EmbeddingSpace
) -> TrainingData:
    """The current landmark labels with a cached embedding (the box crop where there is one)."""
    labels = [
        label
        for label in current_labels(session)
        if label.verdict == LabelVerdict.LANDMARK.value and label.class_id is not None
    ]
    full_ids, full = embedding_store.load(session, paths.embeddings, space)
    row_of = {int(i): n for n, i in enumerate(full_ids)}
    crops: dict[int, NDArray[np.float16]] = {}
    for label in labels:
        if label.box is not None:
            ids, vectors = embedding_store.load(
                session,
                paths.embeddings,
                space,
                image_ids=[label.image_id],
                crop=embedding_store.crop_key(label.box),
            )
            if len(ids):
                crops[label.image_id] = vectors[0]
    usable = [label for label in labels if label.image_id in crops or label.image_id in row_of]
    class_ids = sorted({label.class_id for label in usable if label.class_id is not None})
    index_of = {class_id: n for n, class_id in enumerate(class_ids)}
    matrix = np.zeros((len(usable), space.dim), dtype=np.float16)
    for n, label in enumerate(usable):
        matrix[n] = crops.get(label.image_id, full[row_of.get(label.image_id, 0)])
    return TrainingData(
        image_ids=np.asarray([label.image_id for label in usable], dtype=np.int64),
        embeddings=matrix,
        labels=np.asarray([index_of[label.class_id or 0] for label in usable], dtype=np.int64),
        class_ids=class_ids,
    )


def train_model(
    factory: sessionmaker[Session],
    paths: LearningPaths,
    *,
    space_key: str,
    seed: int = 0,
    promote: bool = True,
    self_training: bool = True,
    epochs: int = 200,
) -> int:
    """Train a head from the current labels; return the new model version's id.

    Also computes, on out-of-sample probabilities (cross-validation), how
    likely each training label is to be wrong; scoring reads it back.
    """
    from curation.learning.scores import label_issue_scores, out_of_sample_probabilities

    with factory() as session:
        space = session.scalars(
            select(EmbeddingSpace).where(EmbeddingSpace.key == space_key)
        ).first()
        if space is None:
            raise NotFound(f"no embeddings in space {space_key}: run scoring first")
        data = labelled_embeddings(session, paths, space)
        # Standardised by the space it will score (curation.learning.head.standardisation),
        # and self-trained on its sampled images that no reviewer has judged.
        sampled_ids, reference, _ = embedding_store.sample_images(session, paths.embeddings, space)
        judged = judged_images(session, sampled_ids.tolist())
        unjudged = np.asarray([int(i) not in judged for i in sampled_ids], dtype=np.bool_)
        unlabelled = reference[unjudged] if self_training else None
        # Folds by near-duplicate group: a burst twin in the training folds
        # would otherwise give a flipped label's right answer away.
        groups = group_ids_of(session, data.image_ids)
        space_id = space.id
    if len(data.class_ids) < 2:
        raise CurationError(
            f"training needs labelled images of at least 2 classes, found {len(data.class_ids)}"
        )
    head, curves, learnt = self_train_head(
        data.embeddings,
        data.labels,
        unlabelled=unlabelled,
        n_classes=len(data.class_ids),
        reference=reference,
        seed=seed,
        epochs=epochs,
    )
    oos = out_of_sample_probabilities(
        data.embeddings.astype(np.float32),
        data.labels,
        n_classes=len(data.class_ids),
        group_ids=groups,
        seed=seed,
    )
    issue_scores, issue_mask = label_issue_scores(data.labels, oos)
    artifact = f"{uuid.uuid4().hex}.npz"
    paths.models.mkdir(parents=True, exist_ok=True)
    (paths.models / artifact).write_bytes(head.to_bytes())
    np.savez(
        paths.models / f"{artifact}.issues.npz",
        image_ids=data.image_ids,
        scores=np.asarray(issue_scores, dtype=np.float64),
        flagged=np.asarray(issue_mask, dtype=bool),
    )
    accuracy = float((oos.argmax(axis=1) == data.labels).mean())
    with factory() as session, session.begin():
        if promote:
            for champion in session.scalars(
                select(ModelVersion).where(ModelVersion.status == ModelStatus.CHAMPION.value)
            ):
                champion.status = ModelStatus.RETIRED.value
        version = ModelVersion(
            space_id=space_id,
            class_ids=data.class_ids,
            artifact_key=artifact,
            seed=seed,
            settings={
                "head": "softmax",
                "class_weights": "balanced",
                "self_training": {
                    "candidates": 0 if unlabelled is None else len(unlabelled),
                    "learnt_from_guesses": int(learnt.sum()),
                },
            },
            metrics={
                "training_images": len(data.labels),
                "cross_validated_accuracy": accuracy,
                "label_issues_flagged": int(np.sum(issue_mask)),
                "curves": curves,
            },
            status=ModelStatus.CHAMPION.value if promote else ModelStatus.CANDIDATE.value,
        )
        session.add(version)
        session.flush()
        return version.id


def champion(session: Session, *, lock: bool = False) -> ModelVersion | None:
    """The current champion; ``lock`` takes FOR SHARE on its row (PostgreSQL; SQLite
    serialises writers anyway), so a promotion retiring it waits for this transaction."""
    query = (
        select(ModelVersion)
        .where(ModelVersion.status == ModelStatus.CHAMPION.value)
        .order_by(ModelVersion.id.desc())
        .limit(1)
    )
    return session.scalars(query.with_for_update(read=True) if lock else query).first()


# --- scoring -------------------------------------------------------------------


@dataclass(frozen=True)
class LoadedModel:
    version_id: int
    space: EmbeddingSpace
    head: Head
    class_ids: list[int]
    class_names: list[str]
    # Confident learning on the training labels, sorted by image id.
    label_issue_ids: NDArray[np.int64]
    label_issue_scores: NDArray[np.float64]
    label_issue_flags: NDArray[np.bool_]


def load_model(session: Session, paths: LearningPaths, version_id: int) -> LoadedModel:
    version = session.get(ModelVersion, version_id)
    if version is None:
        raise NotFound(f"model version {version_id} does not exist")
    space = session.get_one(EmbeddingSpace, version.space_id)
    head = Head.from_bytes((paths.models / version.artifact_key).read_bytes())
    names = dict(
        session.execute(
            select(LandmarkClass.id, LandmarkClass.display_name).where(
                LandmarkClass.id.in_(version.class_ids)
            )
        )
        .tuples()
        .all()
    )
    issue_ids = np.zeros(0, dtype=np.int64)
    issue_scores = np.zeros(0, dtype=np.float64)
    issue_flags = np.zeros(0, dtype=bool)
    issues_file = paths.models / f"{version.artifact_key}.issues.npz"
    if issues_file.exists():
        with np.load(issues_file) as arrays:
            order = np.argsort(arrays["image_ids"], kind="stable")
            issue_ids = arrays["image_ids"][order].astype(np.int64)
            issue_scores = arrays["scores"][order].astype(np.float64)
            issue_flags = arrays["flagged"][order].astype(bool)
    session.expunge(space)
    return LoadedModel(
        version_id=version.id,
        space=space,
        head=head,
        class_ids=list(version.class_ids),
        class_names=[names.get(c, f"class {c}") for c in version.class_ids],
        label_issue_ids=issue_ids,
        label_issue_scores=issue_scores,
        label_issue_flags=issue_flags,
    )


def score_images(
    factory: sessionmaker[Session],
    paths: LearningPaths,
    model: LoadedModel,
    image_ids: Sequence[int] | None = None,
    *,
    strategy: Strategy = Strategy.BALANCED,
    random_share: float = 0.05,
    seed: int = 0,
    timings: dict[str, float] | None = None,
    read_ids: list[NDArray[np.int64]] | None = None,
) -> int:
    """Score cached embeddings with ``model`` and queue what needs a human.

    ``image_ids`` None means every image with an embedding in the model's
    space: a full rescoring, whose ranking then orders the queue (in the
    same transaction). Returns the number of images scored; ``timings``,
    if given, receives the seconds each phase took, and ``read_ids`` the
    (sorted) ids of the images scored.
    """
    clock = _PhaseClock(timings)
    with factory() as session:
        ids, vectors = embedding_store.load(
            session, paths.embeddings, model.space, image_ids=image_ids
        )
        # A full rescoring reads every label and claim once instead of naming
        # a million ids in IN lists.
        wanted = None if image_ids is None else ids.tolist()
        labels = _label_classes(session, wanted)
        claims = _claimed_classes(session, wanted)
        # Imported here: curation.reporters reaches this module through curation.classes.
        from curation.reporters import priority_weights

        reporter_weights = priority_weights(session, None if image_ids is None else ids)
        unlearnt_classes = count_active_classes(session, besides=model.class_ids)
        # A full rescoring reads density (and the far share) against the
        # vectors it holds; a partial one against a sample of the space.
        population: tuple[NDArray[np.float16], int] | None = None
        sample_ids = np.zeros(0, dtype=np.int64)
        if image_ids is not None:
            sample_ids, sample_vectors, space_size = embedding_store.sample_images(
                session, paths.embeddings, model.space
            )
            population = (sample_vectors, space_size)
    if read_ids is not None:  # before any return: a caller diffs against what was read
        read_ids.append(ids)
    if len(ids) == 0:
        if image_ids is None:
            with factory() as session, session.begin():
                bulk_write.mark_ranked(session, model.version_id, datetime.now(UTC))
        return 0
    clock.lap("read")
    items, entropies = _score_arrays(model, ids, vectors, labels, claims)
    items = dataclasses.replace(items, density=_density(vectors, population))
    training_images = len(model.head.own_class_distances)
    has_label = _lookup(ids, labels[0], np.ones(len(labels[0]), dtype=bool), False)
    priority, chosen = priorities(
        items,
        strategy=strategy,
        random_share=random_share,
        seed=seed,
        novelty_counts=strategy is Strategy.BALANCED
        and balanced_counts_novelty(
            training_images=training_images,
            model_classes=model.head.n_classes,
            unlearnt_classes=unlearnt_classes,
            far_share=lambda: _far_share(
                factory, model, items.novelty, ~has_label, population, sample_ids
            ),
        ),
    )
    if reporter_weights:
        # A report from a reporter whose reports reviewers mostly rejected waits longer.
        priority = priority * np.asarray([reporter_weights.get(int(i), 1.0) for i in ids])
    clock.lap("score")
    flagged = _lookup(ids, model.label_issue_ids, model.label_issue_flags, False)
    needs_human = (items.labelled < 0) | flagged | ~has_label
    if image_ids is None and strategy is not Strategy.RANDOM:
        # A full rescoring sees the whole pool: it decides the order of the
        # head (curation.learning.ordering); a partial one only slots new items in.
        # Images a reviewer already labelled (a "not a landmark" verdict, a
        # class the model lacks) stay in the ranking but are not handed out
        # again unless flagged; they count as covering their cluster.
        head = head_order(
            priority,
            vectors,
            candidates=needs_human & (flagged | ~has_label),
            labelled=has_label,
            n_classes=model.head.n_classes,
            seed=seed,
        )
        priority = claim_keys(priority, candidates=needs_human, order=head)
        clock.lap("order")
    scores = bulk_write.ScoreRows(
        model_version_id=model.version_id,
        image_ids=ids,
        top_classes=np.asarray(model.class_ids, dtype=np.int64)[items.top_classes],
        top_probabilities=items.top_probabilities,
        entropy=entropies,
        margin=items.margin,
        least_confidence=1.0 - items.top_probabilities[:, 0].astype(np.float64),
        novelty=items.novelty,
        reporter_disagreement=np.where(items.claimed >= 0, items.disagreement, np.nan),
        label_issue=items.label_issue,
    )
    ranking = bulk_write.RankingRows(
        ranking=model.version_id,
        image_ids=ids[needs_human],
        priority=priority[needs_human],
        strategy=chosen[needs_human],
    )
    now = datetime.now(UTC)
    with factory() as session, session.begin():
        bulk_write.write_scores(session, scores, now)
        clock.lap("write_scores")
        if image_ids is None:
            # Rows a partial scoring wrote into this ranking first would keep
            # their raw priorities (writes insert new rows only) and break the
            # head's order: a full rescoring writes the whole ranking anew.
            session.execute(delete(QueueOrder).where(QueueOrder.ranking == model.version_id))
        bulk_write.write_ranking(session, ranking)
        clock.lap("write_ranking")
        bulk_write.open_items(session, ranking.image_ids, now)
        clock.lap("open_items")
        if image_ids is None:
            bulk_write.mark_ranked(session, model.version_id, now)
    clock.lap("commit")
    return len(ids)


def _density(
    vectors: NDArray[np.float16], population: tuple[NDArray[np.float16], int] | None
) -> NDArray[np.float64]:
    """How typical each scored image is, against a sample of the model's embedding space.

    ``population`` None: the vectors are the whole space (a full rescoring);
    else (a sample of the space's images, how many it holds in all).
    """
    from curation.learning.scores import density, density_reference

    if population is None:
        return density(vectors, reference=density_reference(vectors), population=len(vectors))
    sample, size = population
    if size == 0 or len(sample) == 0:
        return np.ones(len(vectors))
    return density(vectors, reference=density_reference(sample), population=size)


class _PhaseClock:
    def __init__(self, timings: dict[str, float] | None) -> None:
        self.timings = timings
        self.last = time.perf_counter()

    def lap(self, phase: str) -> None:
        now = time.perf_counter()
        if self.timings is not None:
            self.timings[phase] = round(now - self.last, 3)
        self.last = now


# (image ids, class ids or -1 where the label is "not a landmark"), sorted by image id.
LabelClasses = tuple[NDArray[np.int64], NDArray[np.int64]]


def _label_classes(session: Session, image_ids: list[int] | None) -> LabelClasses:
    """The class of each image's current label (-1 for "not a landmark")."""
    query = select(Label.image_id, Label.class_id, Label.verdict).where(is_current())
    rows: list[tuple[int, int | None, str]] = []
    if image_ids is None:
        rows.extend(session.execute(query).tuples())
    else:
        for start in range(0, len(image_ids), 10000):
            chunk = image_ids[start : start + 10000]
            rows.extend(session.execute(query.where(Label.image_id.in_(chunk))).tuples())
    rows.sort()
    ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    classes = np.fromiter(
        (r[1] if r[1] is not None and r[2] == LabelVerdict.LANDMARK.value else -1 for r in rows),
        dtype=np.int64,
        count=len(rows),
    )
    return ids, classes


def _claimed_classes(session: Session, image_ids: list[int] | None) -> LabelClasses:
    """The class each reporter claimed, by image (the last report wins)."""
    query = select(ImageSource.image_id, ImageSource.claimed_class_id).where(
        ImageSource.kind == "report", ImageSource.claimed_class_id.is_not(None)
    )
    claims: dict[int, int] = {}
    if image_ids is None:
        claims.update(session.execute(query.order_by(ImageSource.id)).tuples().all())  # type: ignore[arg-type]
    else:
        for start in range(0, len(image_ids), 10000):
            chunk = image_ids[start : start + 10000]
            claims.update(
                session.execute(  # type: ignore[arg-type]
                    query.where(ImageSource.image_id.in_(chunk)).order_by(ImageSource.id)
                )
                .tuples()
                .all()
            )
    ids = np.asarray(sorted(claims), dtype=np.int64)
    return ids, np.asarray([claims[int(i)] for i in ids], dtype=np.int64)


def _lookup(
    ids: NDArray[np.int64], keys: NDArray[np.int64], values: NDArray[Any], default: Any
) -> NDArray[Any]:
    """``values`` at the position of each of ``ids`` in sorted ``keys``, else ``default``."""
    if len(keys) == 0:
        return np.full(len(ids), default, dtype=values.dtype)
    position = np.clip(np.searchsorted(keys, ids), 0, len(keys) - 1)
    found = keys[position] == ids
    return np.where(found, values[position], default)


def _class_indices(class_ids: NDArray[np.int64], model: LoadedModel) -> NDArray[np.int64]:
    """Model output index of each class id; -1 for classes the model does not know."""
    known = np.asarray(model.class_ids, dtype=np.int64)
    order = np.argsort(known)
    return _lookup(class_ids, known[order], order.astype(np.int64), -1)


# Rows scored at a time: small enough for the intermediate arrays to stay in
# cache, large enough for the matrix products to run at full speed.
SCORING_CHUNK = 16384


def _top_k(probs: NDArray[np.float32], k: int) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """Indices and values of the k largest of each row, best first (ties: lowest index)."""
    rows = np.arange(len(probs))
    work = probs.copy()
    top = np.empty((len(probs), k), dtype=np.int64)
    values = np.empty((len(probs), k), dtype=np.float32)
    # k argmax passes beat a partition of every row for the k <= 5 used here.
    for j in range(k):
        best = work.argmax(axis=1)
        top[:, j] = best
        values[:, j] = probs[rows, best]
        work[rows, best] = -1.0
    return top, values


def _far_share(
    factory: sessionmaker[Session],
    model: LoadedModel,
    novelty: NDArray[np.float64],
    unlabelled: NDArray[np.bool_],
    population: tuple[NDArray[np.float16], int] | None,
    sample_ids: NDArray[np.int64],
) -> float:
    """Share of the space's images without a label that lie far from every class.

    A full rescoring (``population`` None) reads it off the images it scored
    (``novelty``, with ``unlabelled`` the images without any current label:
    a "not a landmark" verdict is a label); a partial one (a batch of new
    images) off the sample of the space that density reads, less its labelled
    images (read here, only when the decision depends on it), so both
    measure the same thing and a small batch of odd photos does not turn
    novelty on by itself.
    """
    if population is None:
        return far_share(novelty, unlabelled)
    sample, _ = population
    if len(sample) == 0:
        return 0.0
    with factory() as session:
        labelled_ids = _label_classes(session, sample_ids.tolist())[0]
    sample_novelty = novelty_from_distance(model.head, nearest_class_distance(model.head, sample))
    return far_share(sample_novelty, ~np.isin(sample_ids, labelled_ids))


def _score_arrays(
    model: LoadedModel,
    ids: NDArray[np.int64],
    vectors: NDArray[np.float16],
    labels: LabelClasses,
    claims: LabelClasses,
) -> tuple[ScoredItems, NDArray[np.float64]]:
    """The scores of every item, and its entropy over all classes (normalised to [0, 1])."""
    from curation.learning.scores import entropy

    n = len(ids)
    k = min(TOP_K, model.head.n_classes)
    claimed = _class_indices(_lookup(ids, claims[0], claims[1], -1), model)
    top = np.empty((n, k), dtype=np.int64)
    top_p = np.empty((n, k), dtype=np.float32)
    entropies = np.empty(n, dtype=np.float64)
    distance = np.empty(n, dtype=np.float32)
    disagreement = np.full(n, np.nan)
    for start in range(0, n, SCORING_CHUNK):
        part = slice(start, start + SCORING_CHUNK)
        probs, distance[part] = model.head.probabilities_and_distance(vectors[part])
        top[part], top_p[part] = _top_k(probs, k)
        entropies[part] = entropy(probs)
        rows = np.flatnonzero(claimed[part] >= 0)
        disagreement[start + rows] = 1.0 - probs[rows, claimed[part][rows]]
    margin = (top_p[:, 0] - top_p[:, 1]).astype(np.float64) if k > 1 else np.ones(n)
    labelled = _class_indices(_lookup(ids, labels[0], labels[1], -1), model)
    label_issue = _lookup(ids, model.label_issue_ids, model.label_issue_scores, np.nan)
    items = ScoredItems(
        image_ids=ids,
        top_classes=top,
        top_probabilities=top_p,
        margin=margin,
        novelty=novelty_from_distance(model.head, distance),
        disagreement=disagreement,
        label_issue=label_issue.astype(np.float64),
        claimed=claimed,
        labelled=labelled,
    )
    return items, entropies
