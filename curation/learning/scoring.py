"""Embed once, train a head, score, and queue: the model in the loop.

Each step reads in a short transaction, computes with no session open, and
writes in another short transaction (a database session is never held across
a decode, an embedding or a training run). Writes are idempotent: a
redelivered task finds its embeddings mapped and its scores present.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import exists, select
from sqlalchemy.orm import Session, aliased, sessionmaker

from curation.exceptions import CurationError, NotFound
from curation.geometry import Box
from curation.learning import embedding_store
from curation.learning.bulk_write import write_scores_and_queue
from curation.learning.head import Head, nearest_class_distance, novelty_from_distance, train_head
from curation.learning.priority import ScoredItems, Strategy, priorities, reasons_for
from curation.models import (
    EmbeddingSpace,
    Image,
    ImageSource,
    Label,
    LabelVerdict,
    LandmarkClass,
    ModelStatus,
    ModelVersion,
    QueueStatus,
)
from curation.store import LocalImageStore

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


def _current_labels(session: Session, image_ids: Sequence[int] | None = None) -> list[Label]:
    newer = aliased(Label)
    query = select(Label).where(~exists().where(newer.supersedes_id == Label.id))
    if image_ids is None:
        return list(session.scalars(query).all())
    ids = list(image_ids)
    labels: list[Label] = []
    for start in range(0, len(ids), 10000):
        labels.extend(session.scalars(query.where(Label.image_id.in_(ids[start : start + 10000]))))
    return labels


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
) -> EmbedOutcome:
    """Embed every (image, crop) of ``image_ids`` not yet cached in ``backbone``'s space.

    The uncropped image is always embedded; where the current label has a
    box, the crop to the box is embedded too. A file that fails to decode is
    reported in ``failed`` and does not stop the others.
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
        labels = {label.image_id: label for label in _current_labels(session, image_ids)}
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
        for label in _current_labels(session)
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
        space_id = space.id
    if len(data.class_ids) < 2:
        raise CurationError(
            f"training needs labelled images of at least 2 classes, found {len(data.class_ids)}"
        )
    head, curves = train_head(
        data.embeddings, data.labels, n_classes=len(data.class_ids), seed=seed
    )
    oos = out_of_sample_probabilities(
        data.embeddings.astype(np.float32), data.labels, n_classes=len(data.class_ids), seed=seed
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
            settings={"head": "softmax", "class_weights": "balanced"},
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


def champion(session: Session) -> ModelVersion | None:
    return session.scalars(
        select(ModelVersion)
        .where(ModelVersion.status == ModelStatus.CHAMPION.value)
        .order_by(ModelVersion.id.desc())
        .limit(1)
    ).first()


# --- scoring -------------------------------------------------------------------


@dataclass(frozen=True)
class LoadedModel:
    version_id: int
    space: EmbeddingSpace
    head: Head
    class_ids: list[int]
    class_names: list[str]
    label_issues: dict[int, tuple[float, bool]]


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
    issues: dict[int, tuple[float, bool]] = {}
    issues_file = paths.models / f"{version.artifact_key}.issues.npz"
    if issues_file.exists():
        with np.load(issues_file) as arrays:
            for image_id, score, flagged in zip(
                arrays["image_ids"], arrays["scores"], arrays["flagged"], strict=True
            ):
                issues[int(image_id)] = (float(score), bool(flagged))
    session.expunge(space)
    return LoadedModel(
        version_id=version.id,
        space=space,
        head=head,
        class_ids=list(version.class_ids),
        class_names=[names.get(c, f"class {c}") for c in version.class_ids],
        label_issues=issues,
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
) -> int:
    """Score cached embeddings with ``model`` and queue what needs a human.

    ``image_ids`` None means every image with an embedding in the model's
    space (a full rescoring). Returns the number of images scored.
    """
    with factory() as session:
        ids, vectors = embedding_store.load(
            session, paths.embeddings, model.space, image_ids=image_ids
        )
        # A full rescoring reads every label and claim once instead of naming
        # a million ids in IN lists.
        wanted = None if image_ids is None else ids.tolist()
        labels = {label.image_id: label for label in _current_labels(session, wanted)}
        claims = _claimed_classes(session, wanted)
    if len(ids) == 0:
        return 0
    items, entropies = _score_arrays(model, ids, vectors, labels, claims)
    priority, chosen = priorities(items, strategy=strategy, random_share=random_share, seed=seed)
    now = datetime.now(UTC)
    score_rows = [
        (
            model.version_id,
            int(items.image_ids[n]),
            [model.class_ids[c] for c in items.top_classes[n].tolist()],
            [round(float(p), 5) for p in items.top_probabilities[n]],
            float(entropies[n]),
            float(items.margin[n]),
            float(1.0 - items.top_probabilities[n][0]),
            float(items.novelty[n]),
            None if items.claimed[n] < 0 else float(items.disagreement[n]),
            None if np.isnan(items.label_issue[n]) else float(items.label_issue[n]),
            now,
        )
        for n in range(len(ids))
    ]
    needs_human = [
        n
        for n in range(len(ids))
        if items.labelled[n] < 0
        or model.label_issues.get(int(items.image_ids[n]), (0.0, False))[1]
        or int(items.image_ids[n]) not in labels
    ]
    queue_rows = [
        (
            int(items.image_ids[n]),
            QueueStatus.PENDING.value,
            float(priority[n]),
            chosen[n],
            reasons_for(items, n, class_names=model.class_names, n_known=len(model.class_ids)),
            model.version_id,
            now,
        )
        for n in needs_human
    ]
    with factory() as session, session.begin():
        write_scores_and_queue(session, score_rows, queue_rows)
    return len(ids)


def _claimed_classes(session: Session, image_ids: list[int] | None) -> dict[int, int | None]:
    query = select(ImageSource.image_id, ImageSource.claimed_class_id).where(
        ImageSource.kind == "report", ImageSource.claimed_class_id.is_not(None)
    )
    if image_ids is None:
        return dict(session.execute(query).tuples().all())
    claims: dict[int, int | None] = {}
    for start in range(0, len(image_ids), 10000):
        chunk = image_ids[start : start + 10000]
        claims.update(session.execute(query.where(ImageSource.image_id.in_(chunk))).tuples().all())
    return claims


def _score_arrays(
    model: LoadedModel,
    ids: NDArray[np.int64],
    vectors: NDArray[np.float16],
    labels: dict[int, Label],
    claims: dict[int, int | None],
) -> tuple[ScoredItems, NDArray[np.float64]]:
    """The scores of every item, and its entropy over all classes (normalised to [0, 1])."""
    from curation.learning.scores import entropy

    probs = model.head.predict_proba(vectors)
    k = min(TOP_K, probs.shape[1])
    top = np.argsort(-probs, axis=1)[:, :k]
    top_p = np.take_along_axis(probs, top, axis=1)
    margin = (top_p[:, 0] - top_p[:, 1]) if k > 1 else np.ones(len(ids))
    novelty = novelty_from_distance(model.head, nearest_class_distance(model.head, vectors))
    index_of = {class_id: n for n, class_id in enumerate(model.class_ids)}
    claimed = np.asarray([index_of.get(claims.get(int(i)) or -1, -1) for i in ids], dtype=np.int64)
    disagreement = np.where(
        claimed >= 0, 1.0 - probs[np.arange(len(ids)), np.maximum(claimed, 0)], np.nan
    )
    labelled = np.asarray(
        [index_of.get(labels[int(i)].class_id or -1, -1) if int(i) in labels else -1 for i in ids],
        dtype=np.int64,
    )
    label_issue = np.asarray(
        [model.label_issues.get(int(i), (np.nan, False))[0] for i in ids], dtype=np.float64
    )
    items = ScoredItems(
        image_ids=ids,
        top_classes=top.astype(np.int64),
        top_probabilities=top_p.astype(np.float32),
        margin=margin.astype(np.float64),
        novelty=novelty,
        disagreement=disagreement.astype(np.float64),
        label_issue=label_issue,
        claimed=claimed,
        labelled=labelled,
    )
    return items, entropy(probs)
