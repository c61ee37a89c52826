"""Train a classifier head on a dataset version, judge it, and promote it if it passes.

Lives in the datasets layer because it reads a version's manifest (the
domain package may not import this one); everything it writes goes through
domain functions (:mod:`curation.training_runs`, :mod:`curation.registry`).

The head is fitted on the train split's cached embeddings (the crop to the
label's box where the entry has one), stops early on the validation split,
and is measured on the frozen test split, which is also kept beside the
model so the promotion gate can judge any later challenger on it. No
session stays open while Keras trains: read, close, train, write.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from curation import registry, training_runs
from curation.exceptions import CurationError, NotFound, RejectedInput
from curation.labels import judged_images
from curation.learning import embedding_store
from curation.learning.head import HEAD_L2, MIN_REFERENCE_ROWS, Head, self_train_head
from curation.learning.metrics import evaluate
from curation.learning.priority import Strategy
from curation.learning.scoring import LearningPaths
from curation.models import (
    EmbeddingSpace,
    ModelStatus,
    ModelVersion,
    RunStatus,
    RunTrigger,
    Split,
)
from curation.neardup import group_ids_of
from curation.settings import Settings
from datasets.manifest import Manifest
from datasets.versions import find_version, load_manifest


class TrainingCancelled(CurationError):
    """The run was cancelled (or reaped) while training; nothing was written."""


class FineTuningNotHere(CurationError):
    """Fine-tuning options given to the head training: they belong to
    :func:`datasets.finetune.fine_tune_on_version`, which reads pixels."""


@dataclass(frozen=True)
class TrainingOptions:
    epochs: int = 200
    patience: int = 15
    l2: float = HEAD_L2
    learning_rate: float = 1e-2
    # Confident learning on the train split (out-of-sample, scikit-learn), so
    # the queue's label-error strategy has scores under the new model.
    label_issues: bool = True
    # Self-training: a second fit that also learns the unlabelled images of
    # the space the first is sure of (curation.learning.head.self_train_head).
    self_training: bool = True
    # Fine-tuning the top backbone blocks (with augmentation and a choice of
    # trainable BatchNorm): run by datasets.finetune.fine_tune_on_version on
    # the version's pixels, never by the head training here.
    fine_tune_blocks: int = 0
    augment: bool = False
    trainable_batchnorm: bool = False

    @property
    def fine_tuning(self) -> bool:
        return self.fine_tune_blocks > 0

    def check(self) -> None:
        """Refuse options that only make sense together (augmentation and trainable
        BatchNorm apply to fine-tuning, which needs at least one block)."""
        if self.fine_tune_blocks < 0:
            raise RejectedInput("fine_tune_blocks cannot be negative")
        if self.fine_tuning and not self.self_training:
            raise RejectedInput(
                "--no-self-training applies to the head training: fine-tuning does not self-train"
            )
        if (self.augment or self.trainable_batchnorm) and not self.fine_tuning:
            raise RejectedInput(
                "augmentation and trainable BatchNorm apply only to fine-tuning:"
                " give the number of backbone blocks to fine-tune (--fine-tune-blocks N)"
            )


@dataclass
class TrainingOutcome:
    model_version_id: int
    dataset_version: str
    run_id: int | None
    classes: int
    images: dict[str, int]
    # Entries of the version with no embedding in the space: not trained or
    # measured on; embed them (``curation score``) and train again.
    missing_embeddings: list[int]
    # Boxed entries whose crop was never embedded: their full image was used.
    full_image_for_box: int
    test_metrics: dict[str, Any]
    seconds: float
    gate: registry.GateResult | None = None
    promoted: bool = False
    rescored: int | None = None
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k != "gate"}
        out["missing_embeddings"] = len(self.missing_embeddings)
        out["missing_embedding_image_ids"] = self.missing_embeddings[:100]
        out["gate"] = self.gate.as_dict() if self.gate else None
        return out


@dataclass(frozen=True)
class VersionEmbeddings:
    """A version's entries that have an embedding: (n,) ids, class ids, splits; (n, D) vectors."""

    image_ids: NDArray[np.int64]
    class_ids: NDArray[np.int64]
    splits: NDArray[np.int8]
    embeddings: NDArray[np.float16]
    missing: list[int]
    full_image_for_box: int
    # (n,) the crop each entry is meant to be seen as (its box's, else the whole
    # image), even where the vector fell back to the whole image: another
    # embedding space uses that crop where it has it (the gate across spaces).
    crop_keys: NDArray[np.str_]


def version_embeddings(
    session: Session,
    paths: LearningPaths,
    space: EmbeddingSpace,
    manifest: Manifest,
    *,
    crop: bool = True,
) -> VersionEmbeddings:
    """The cached embedding of each entry: the crop to its box where it has one.

    An entry with a box whose crop was not embedded falls back to its full
    image (counted); one with no embedding at all is reported in ``missing``.
    ``crop=False`` reads every entry whole (a model trained without crops).
    """
    ids = manifest.image_ids.tolist()
    boxes = manifest.boxes_by_image() if crop else {}
    meant = [embedding_store.crop_key(boxes.get(image_id)) for image_id in ids]
    rows, fell_back = embedding_store.rows_for(session, space, ids, meant)
    index = np.flatnonzero(rows >= 0).astype(np.int64)
    missing = [ids[n] for n in np.flatnonzero(rows < 0)]
    fallback = int(fell_back.sum())
    crops = [meant[n] for n in index]
    matrix = embedding_store.space_file(paths.embeddings, space).matrix()
    vectors = (
        np.asarray(matrix[rows[index]]) if len(index) else np.zeros((0, space.dim), np.float16)
    )
    return VersionEmbeddings(
        image_ids=manifest.image_ids[index],
        class_ids=manifest.class_ids[index],
        splits=manifest.splits[index],
        embeddings=vectors,
        missing=missing,
        full_image_for_box=fallback,
        crop_keys=np.asarray(crops, dtype=np.str_),
    )


def pseudo_label_candidates(
    session: Session, image_ids: NDArray[np.int64], manifest: Manifest
) -> NDArray[np.bool_]:
    """(N,) which of the sampled ``image_ids`` a head may learn from by its own guess.

    Not one with a current label of any verdict (a reviewer's "not a
    landmark" is never turned into a landmark), not one of the version, and
    not a near duplicate of its validation or test images: the frozen test
    split stays unseen.
    """
    if image_ids.size == 0:
        return np.zeros(0, dtype=np.bool_)
    judged = judged_images(session, image_ids.tolist())
    held_out = manifest.image_ids[
        manifest.in_split(Split.VALIDATION) | manifest.in_split(Split.TEST)
    ]
    held_groups = set(group_ids_of(session, held_out).tolist()) if held_out.size else set()
    in_version = set(manifest.image_ids.tolist())
    groups = group_ids_of(session, image_ids)
    return np.asarray(
        [
            int(i) not in judged and int(i) not in in_version and int(g) not in held_groups
            for i, g in zip(image_ids, groups, strict=True)
        ],
        dtype=np.bool_,
    )


def _standardised_by(reference: NDArray[np.float16], space_images: int) -> dict[str, Any]:
    """What a head's standardisation was measured on, for its model's settings."""
    if len(reference) >= MIN_REFERENCE_ROWS:
        return {"source": "space", "images": space_images, "sampled": len(reference)}
    return {"source": "training images", "images": 0, "sampled": 0}


def _now() -> datetime:
    return datetime.now(UTC)


class _Heartbeat:
    """Reports progress at most once a second; raises when the run must stop."""

    def __init__(
        self,
        factory: sessionmaker[Session],
        run_id: int | None,
        epochs: int,
        on_progress: Callable[[float, str], object] | None = None,
    ) -> None:
        self.factory, self.run_id, self.epochs = factory, run_id, epochs
        self.on_progress = on_progress
        self.last = 0.0
        # Self-training fits the head twice; Keras counts each fit's epochs from 0.
        self.fits, self.fit, self.previous_epoch = 1, 0, -1

    def beat(self, progress: float, message: str, *, force: bool = False) -> None:
        if self.on_progress is not None:  # a terminal's progress bar: every beat
            self.on_progress(progress, message)
        if self.run_id is None:
            return
        if not force and time.monotonic() - self.last < 1.0:
            return
        self.last = time.monotonic()
        with self.factory() as session, session.begin():
            stop = training_runs.heartbeat(session, self.run_id, progress, message, _now())
        if stop:
            raise TrainingCancelled(f"training run {self.run_id} was cancelled")

    def on_epoch(self, epoch: int, logs: dict[str, float]) -> None:
        if epoch <= self.previous_epoch:
            self.fit = min(self.fit + 1, self.fits - 1)
        self.previous_epoch = epoch
        loss = logs.get("val_loss", logs.get("loss", float("nan")))
        done = (self.fit + min(1.0, (epoch + 1) / self.epochs)) / self.fits
        which = f"fit {self.fit + 1} of {self.fits}, " if self.fits > 1 else ""
        self.beat(0.1 + 0.8 * done, f"{which}epoch {epoch + 1}: loss {loss:.4f}")


@contextmanager
def running_as(factory: sessionmaker[Session], run_id: int | None) -> Iterator[int | None]:
    """Train under run ``run_id``: start it if queued, and end it as the training ends.

    Yields the dataset version the run is pinned to (None without a run or
    pin). A :class:`TrainingCancelled` marks the run cancelled; any other
    error marks it failed with the error; success is recorded by
    :func:`record_candidate` inside the training itself.
    """
    pinned: int | None = None
    if run_id is not None:
        with factory() as session, session.begin():
            run = training_runs.get_run(session, run_id)
            if run.status == RunStatus.QUEUED.value:
                training_runs.start(session, run_id, _now())
            elif run.status != RunStatus.RUNNING.value:
                raise CurationError(f"training run {run_id} is {run.status}: nothing to train")
            pinned = run.dataset_version_id
    try:
        yield pinned
    except TrainingCancelled:
        if run_id is not None:
            with factory() as session, session.begin():
                if training_runs.get_run(session, run_id).status == RunStatus.RUNNING.value:
                    training_runs.mark_cancelled(session, run_id, _now())
        raise
    except BaseException as error:
        if run_id is not None:
            with factory() as session, session.begin():
                training_runs.fail(session, run_id, f"{type(error).__name__}: {error}", _now())
        raise


def record_candidate(session: Session, model: ModelVersion, run_id: int | None) -> int:
    """Write a trained candidate and end its run as succeeded; returns the model's id.

    Refused (:class:`TrainingCancelled`) when the run ended while training
    (cancelled, or reaped as lost): its result must not land after the fact.
    """
    session.add(model)
    session.flush()
    finish_run(session, run_id, model.id, doing="training")
    return model.id


def finish_run(session: Session, run_id: int | None, model_version_id: int, *, doing: str) -> None:
    """End run ``run_id`` (if any) as succeeded with ``model_version_id``, in the
    transaction that writes the model.

    Refused (:class:`TrainingCancelled`) when the run ended while ``doing``
    its work (cancelled, or reaped as lost): its result must not land after the fact.
    """
    if run_id is None:
        return
    if training_runs.get_run(session, run_id).status != RunStatus.RUNNING.value:
        raise TrainingCancelled(f"training run {run_id} ended while {doing}")
    training_runs.finish(session, run_id, model_version_id=model_version_id, now=_now())


def train_on_version(
    factory: sessionmaker[Session],
    paths: LearningPaths,
    *,
    version_ref: str | int = "latest",
    space_key: str,
    run_id: int | None = None,
    seed: int = 0,
    options: TrainingOptions | None = None,
    on_progress: Callable[[float, str], object] | None = None,
) -> TrainingOutcome:
    """Train a head on dataset version ``version_ref`` and write it as a candidate.

    With ``run_id``, the run is started if queued, beats its progress between
    epochs (a cancel request stops it: :class:`TrainingCancelled`), and ends
    succeeded with the model, failed with the error, or cancelled.
    """
    options = options or TrainingOptions()
    options.check()
    if options.fine_tuning:
        raise FineTuningNotHere(
            "fine-tuning backbone blocks trains on pixels, not cached embeddings:"
            " use datasets.finetune.fine_tune_on_version (`curation train --fine-tune-blocks N`)"
        )
    started = time.perf_counter()
    with running_as(factory, run_id) as pinned:
        outcome = _train(
            factory, paths, pinned or version_ref, space_key, run_id, seed, options, on_progress
        )
    outcome.seconds = round(time.perf_counter() - started, 3)
    return outcome


def _train(
    factory: sessionmaker[Session],
    paths: LearningPaths,
    version_ref: str | int,
    space_key: str,
    run_id: int | None,
    seed: int,
    options: TrainingOptions,
    on_progress: Callable[[float, str], object] | None = None,
) -> TrainingOutcome:
    from curation.models import DatasetVersion

    beat = _Heartbeat(factory, run_id, options.epochs, on_progress)
    # Read: the version's manifest and its cached embeddings; then close.
    with factory() as session, session.begin():
        if isinstance(version_ref, int):  # a run's pinned version, by id
            found = session.get(DatasetVersion, version_ref)
            if found is None:
                raise NotFound(f"dataset version id {version_ref} does not exist")
            version = found
        else:
            version = find_version(session, version_ref)
        version_id, version_name = version.id, f"v{version.number}"
        if run_id is not None:
            training_runs.set_dataset_version(session, run_id, version_id)
        space = session.scalars(
            select(EmbeddingSpace).where(EmbeddingSpace.key == space_key)
        ).first()
        if space is None:
            raise NotFound(f"no embeddings in space {space_key}: run `curation score` first")
        space_id = space.id
        manifest = load_manifest(session, version)
        data = version_embeddings(session, paths, space, manifest)
        # The head standardises by the space it will score, not by the
        # labelled rows the queue chose (curation.learning.head.standardisation).
        sampled_ids, reference, space_images = embedding_store.sample_images(
            session, paths.embeddings, space
        )
        candidates = unlabelled = None
        if options.self_training:
            allowed = pseudo_label_candidates(session, sampled_ids, manifest)
            candidates, unlabelled = sampled_ids[allowed], reference[allowed]
    beat.beat(0.05, f"{version_name}: {len(data.image_ids)} images with embeddings", force=True)
    if unlabelled is not None and len(unlabelled):
        beat.fits = 2  # the second fit learns the unlabelled images the first is sure of

    train = data.splits == int(Split.TRAIN)
    validation = data.splits == int(Split.VALIDATION)
    test = data.splits == int(Split.TEST)
    class_ids = sorted({int(c) for c in data.class_ids[train]})
    if len(class_ids) < 2:
        raise CurationError(
            f"{version_name}: training needs embedded train-split images of at least 2 classes,"
            f" found {len(class_ids)} ({len(data.missing)} entries have no embedding)"
        )
    known = np.asarray(class_ids, dtype=np.int64)
    position = np.clip(np.searchsorted(known, data.class_ids), 0, len(known) - 1)
    index = np.where(known[position] == data.class_ids, position, -1)
    # Validation items of a class with no training image cannot guide early
    # stopping (their loss is undefined): left out of it.
    validation &= index >= 0
    x = data.embeddings
    head, curves, learnt = self_train_head(
        x[train],
        index[train],
        unlabelled=unlabelled,
        n_classes=len(class_ids),
        reference=reference,
        seed=seed,
        epochs=options.epochs,
        l2=options.l2,
        learning_rate=options.learning_rate,
        validation_data=(x[validation], index[validation]),
        patience=options.patience,
        on_epoch=beat.on_epoch,
    )
    beat.beat(0.9, "measuring on the frozen test split", force=True)
    probabilities = head.predict_proba(x[test])
    test_metrics = evaluate(index[test], probabilities, class_ids=class_ids)

    artifact = save_head(paths, head, data, test)
    if candidates is not None and learnt.any():
        registry.write_guessed_images(paths, artifact, candidates[learnt])
    flagged = 0
    if options.label_issues:
        flagged = write_label_issues(paths, artifact, data.image_ids[train], x[train],
                                      index[train], len(class_ids), seed)  # fmt: skip
    beat.beat(0.95, "writing the model", force=True)
    images = {
        "train": int(train.sum()),
        "validation": int(validation.sum()),
        "test": int(test.sum()),
        "missing_embeddings": len(data.missing),
    }
    with factory() as session, session.begin():
        model = ModelVersion(
            space_id=space_id,
            class_ids=class_ids,
            artifact_key=artifact,
            seed=seed,
            settings={
                "head": "softmax",
                "class_weights": "balanced",
                "backbone": space_key,
                "dataset_version": version_name,
                "class_ids": class_ids,
                "seed": seed,
                "options": asdict(options),
                "fine_tuned": False,
                "standardised_by": _standardised_by(reference, space_images),
                "self_training": {
                    "candidates": 0 if unlabelled is None else len(unlabelled),
                    "learnt_from_guesses": int(learnt.sum()),
                },
            },
            metrics={
                "test": test_metrics,
                "images": images,
                "training_images": images["train"],
                "full_image_for_box": data.full_image_for_box,
                "label_issues_flagged": flagged,
                "curves": curves,
                "epochs_run": len(next(iter(curves.values()), [])),
            },
            status=ModelStatus.CANDIDATE.value,
            dataset_version_id=version_id,
            training_run_id=run_id,
        )
        model_id = record_candidate(session, model, run_id)
    return TrainingOutcome(
        model_version_id=model_id,
        dataset_version=version_name,
        run_id=run_id,
        classes=len(class_ids),
        images=images,
        missing_embeddings=data.missing,
        full_image_for_box=data.full_image_for_box,
        test_metrics=test_metrics,
        seconds=0.0,
    )


def save_head(
    paths: LearningPaths, head: Head, data: VersionEmbeddings, test: NDArray[np.bool_]
) -> str:
    """Write ``head`` and, beside it, the frozen test split (``test`` rows of ``data``)
    the gate judges it on; returns the artifact key."""
    artifact = f"{uuid.uuid4().hex}.npz"
    paths.models.mkdir(parents=True, exist_ok=True)
    (paths.models / artifact).write_bytes(head.to_bytes())
    registry.write_frozen_split(
        paths,
        artifact,
        registry.FrozenSplit(
            image_ids=data.image_ids[test],
            class_ids=data.class_ids[test],
            embeddings=data.embeddings[test],
            crop_keys=data.crop_keys[test],
        ),
    )
    return artifact


def write_label_issues(
    paths: LearningPaths,
    artifact: str,
    image_ids: NDArray[np.int64],
    embeddings: NDArray[np.float16],
    labels: NDArray[np.int64],
    n_classes: int,
    seed: int,
) -> int:
    """Confident learning on the train split, kept beside the model as scoring expects."""
    from curation.learning.scores import label_issue_scores, out_of_sample_probabilities

    oos = out_of_sample_probabilities(
        embeddings.astype(np.float32), labels, n_classes=n_classes, seed=seed
    )
    scores, mask = label_issue_scores(labels, oos)
    np.savez(
        paths.models / f"{artifact}.issues.npz",
        image_ids=image_ids,
        scores=np.asarray(scores, dtype=np.float64),
        flagged=np.asarray(mask, dtype=bool),
    )
    return int(np.sum(mask))


@dataclass(frozen=True)
class GateSettings:
    max_class_drop: float = 5.0
    min_new_class_recall: float = 0.5

    @classmethod
    def of(cls, settings: Settings) -> GateSettings:
        """The gate the platform's settings configure."""
        return cls(
            max_class_drop=settings.gate_max_class_drop,
            min_new_class_recall=settings.gate_min_new_class_recall,
        )


def train_and_promote(
    factory: sessionmaker[Session],
    paths: LearningPaths,
    *,
    version_ref: str | int = "latest",
    space_key: str,
    run_id: int | None = None,
    seed: int = 0,
    options: TrainingOptions | None = None,
    promote: bool = True,
    gate: GateSettings | None = None,
    actor: str = "training",
    strategy: Strategy = Strategy.BALANCED,
    random_share: float = 0.05,
    on_trained: Callable[[TrainingOutcome], object] | None = None,
    on_progress: Callable[[float, str], object] | None = None,
) -> TrainingOutcome:
    """Train (:func:`train_on_version`), then :func:`judge_and_promote` the candidate."""
    outcome = train_on_version(
        factory, paths, version_ref=version_ref, space_key=space_key, run_id=run_id,
        seed=seed, options=options, on_progress=on_progress,
    )  # fmt: skip
    if on_trained is not None:
        on_trained(outcome)
    verdict = judge_and_promote(
        factory, paths, outcome.model_version_id, promote=promote, gate=gate, actor=actor,
        strategy=strategy, random_share=random_share,
    )  # fmt: skip
    outcome.gate, outcome.promoted, outcome.rescored = (
        verdict.gate,
        verdict.promoted,
        verdict.rescored,
    )
    outcome.notes.extend(verdict.notes)
    return outcome


@dataclass
class Verdict:
    """What the gate said of a new model, and what followed."""

    gate: registry.GateResult
    promoted: bool = False
    rescored: int | None = None
    notes: list[str] = field(default_factory=list)


def judge_and_promote(
    factory: sessionmaker[Session],
    paths: LearningPaths,
    model_version_id: int,
    *,
    promote: bool = True,
    gate: GateSettings | None = None,
    actor: str = "training",
    strategy: Strategy = Strategy.BALANCED,
    random_share: float = 0.05,
) -> Verdict:
    """Judge a new candidate against the champion; promote it when the gate passes
    (and ``promote``), then rescore the queue after the promoting commit."""
    gate = gate or GateSettings()
    with factory() as session, session.begin():
        result = registry.evaluate_gate(
            session,
            paths,
            model_version_id,
            max_class_drop=gate.max_class_drop,
            min_new_class_recall=gate.min_new_class_recall,
        )
        verdict = Verdict(gate=result)
        if promote and result.passed:
            registry.promote(
                session,
                model_version_id,
                actor=actor,
                reason=result.summary(),
                now=_now(),
                gate=result,
            )
            verdict.promoted = True
        elif not promote:
            verdict.notes.append("not promoted: --no-promote")
        else:
            verdict.notes.append("not promoted: " + result.summary())
    registry.requeue_lacking(factory, result)
    if verdict.promoted:
        # After the commit: the queue is reordered from cached embeddings.
        verdict.rescored = registry.rescore(
            factory, paths, model_version_id, strategy=strategy, random_share=random_share
        )
    return verdict


def request_and_train(
    factory: sessionmaker[Session],
    paths: LearningPaths,
    *,
    requested_by: str,
    trigger: RunTrigger = RunTrigger.MANUAL,
    **kwargs: Any,
) -> TrainingOutcome:
    """Queue a run (or take over the queued one) and train it in this process.

    Refused with :class:`curation.exceptions.Conflict` while another run is
    running.
    """
    from curation.exceptions import Conflict

    with factory() as session, session.begin():
        run, created = training_runs.request_run(
            session, trigger=trigger, requested_by=requested_by
        )
        if not created and run.status == RunStatus.RUNNING.value:
            raise Conflict(
                f"training run {run.id} is already running (requested by {run.requested_by});"
                " this request was folded into it"
            )
        run_id = run.id
    return train_and_promote(factory, paths, run_id=run_id, actor=requested_by, **kwargs)
