"""The model registry: list, show, compare; the promotion gate; promote and roll back.

A model trained on a dataset version keeps, beside its head, the frozen test
split it was measured on (``<artifact>.testset.npz``: image ids, true class
ids, the crop of each image it used, and the embeddings it was given). The
gate evaluates the challenger and the champion on that same set, so the
verdict needs neither the datasets layer nor a pixel: the champion's head
runs on the challenger's test embeddings, or, when the champion lives in
another embedding space (one of them fine-tuned its backbone), on its own
cached embeddings of the same images and crops; a class the champion lacks
is a miss for it.

A fine-tuned model (``settings["kind"] == "fine_tuned"``, written by
``datasets.finetune``) is a head over the embedding space of its own
backbone (:mod:`curation.learning.tuned`): it is judged, promoted and
rescored like any other. Promoting a model whose space lacks some images
puts their scoring jobs back in the outbox, so workers embed them into it.
Models fine-tuned before that (a ``.keras`` artifact and no head) are refused
(:func:`refuse_pixel_only`).

Domain functions take a session and never commit; :func:`rescore` runs after
the commit that promoted a model (it opens its own short transactions).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from curation.exceptions import Conflict, Forbidden, NotFound, RejectedInput
from curation.learning import embedding_store, outbox
from curation.learning.embedding_store import FULL
from curation.learning.head import Head
from curation.learning.priority import Strategy
from curation.learning.scoring import LearningPaths, champion, load_model, score_images
from curation.models import (
    AuditEntry,
    EmbeddingSpace,
    ModelStatus,
    ModelVersion,
    User,
    UserRole,
)
from curation.neardup import groups_by_image

Actor = User | str

# --- the frozen test set kept beside a model -------------------------------------


@dataclass(frozen=True)
class FrozenSplit:
    """A model's evaluation set: (N,) image ids, (N,) true class ids, (N, D) embeddings,
    and the (N,) crop key of each embedding (None in splits written before crops were kept:
    read as whole images)."""

    image_ids: NDArray[np.int64]
    class_ids: NDArray[np.int64]
    embeddings: NDArray[np.float16]
    crop_keys: NDArray[np.str_] | None = None


def write_guessed_images(
    paths: LearningPaths, artifact_key: str, image_ids: NDArray[np.int64]
) -> None:
    """Keep beside a self-trained head the images it learnt from its own guesses:
    the gate leaves them, and their near duplicates, out of any test split it
    judges this model on (a later version may put them in its test split)."""
    np.savez(
        paths.models / f"{artifact_key}.guessed.npz",
        image_ids=np.asarray(image_ids, dtype=np.int64),
    )


def guessed_images(paths: LearningPaths, version: ModelVersion) -> NDArray[np.int64]:
    """The images ``version`` learnt from its own guesses (none if it was not self-trained)."""
    path = paths.models / f"{version.artifact_key}.guessed.npz"
    if not path.exists():
        return np.zeros(0, dtype=np.int64)
    with np.load(path) as data:
        return np.asarray(data["image_ids"], dtype=np.int64)


def _without_guessed(
    session: Session, test: FrozenSplit, guessed: NDArray[np.int64]
) -> tuple[FrozenSplit, int]:
    """``test`` less the images in a near-duplicate group with a guessed image."""
    if guessed.size == 0 or test.image_ids.size == 0:
        return test, 0
    guessed_groups = set(groups_by_image(session, guessed.tolist()).values())
    groups = groups_by_image(session, test.image_ids.tolist())
    keep = np.asarray(
        [groups.get(int(i)) not in guessed_groups for i in test.image_ids], dtype=np.bool_
    )
    if keep.all():
        return test, 0
    kept = FrozenSplit(
        image_ids=test.image_ids[keep],
        class_ids=test.class_ids[keep],
        embeddings=test.embeddings[keep],
        crop_keys=None if test.crop_keys is None else test.crop_keys[keep],
    )
    return kept, int((~keep).sum())


def frozen_split_file(paths: LearningPaths, artifact_key: str) -> str:
    return str(paths.models / f"{artifact_key}.testset.npz")


def write_frozen_split(paths: LearningPaths, artifact_key: str, split: FrozenSplit) -> None:
    paths.models.mkdir(parents=True, exist_ok=True)
    np.savez(
        frozen_split_file(paths, artifact_key),
        image_ids=split.image_ids.astype(np.int64),
        class_ids=split.class_ids.astype(np.int64),
        embeddings=split.embeddings.astype(np.float16),
        crop_keys=np.asarray(
            split.crop_keys if split.crop_keys is not None else [FULL] * len(split.image_ids),
            dtype=np.str_,
        ),
    )


def load_frozen_split(paths: LearningPaths, version: ModelVersion) -> FrozenSplit | None:
    path = paths.models / f"{version.artifact_key}.testset.npz"
    if not path.exists():
        return None
    with np.load(path, allow_pickle=False) as arrays:
        return FrozenSplit(
            image_ids=arrays["image_ids"],
            class_ids=arrays["class_ids"],
            embeddings=arrays["embeddings"],
            crop_keys=arrays["crop_keys"] if "crop_keys" in arrays.files else None,
        )


def is_fine_tuned(version: ModelVersion) -> bool:
    """A model whose backbone was fine-tuned (``datasets.finetune``)."""
    return (version.settings or {}).get("kind") == "fine_tuned"


def is_pixel_only(version: ModelVersion) -> bool:
    """A model kept only as a whole Keras classifier, with no head over an embedding space
    (fine-tuned before the platform re-embedded images with fine-tuned backbones)."""
    return version.artifact_key.endswith(".keras")


def refuse_pixel_only(version: ModelVersion, action: str) -> None:
    """Raise ``Conflict`` for a model with no head over cached embeddings."""
    if is_pixel_only(version):
        raise Conflict(
            f"model {version.id} was fine-tuned before fine-tuned backbones re-embedded the"
            f" images: it has no head over an embedding space, so it cannot {action}."
            f" Give it one with `curation models reembed {version.id}` (or fine-tune again);"
            " its stored test-split metrics still compare (`curation models show`)"
        )


def _head(paths: LearningPaths, version: ModelVersion) -> Head:
    return Head.from_bytes((paths.models / version.artifact_key).read_bytes())


@dataclass(frozen=True)
class Evaluation:
    """One model on one test set: accuracy and recall per true class id."""

    model_version_id: int
    accuracy: float
    recall: dict[int, float]
    support: dict[int, int]

    def as_dict(self) -> dict[str, Any]:
        return {
            "model_version": self.model_version_id,
            "accuracy": round(self.accuracy, 6),
            "recall": {str(c): round(r, 6) for c, r in sorted(self.recall.items())},
        }


def evaluate_on(head: Head, class_ids: list[int], version_id: int, test: FrozenSplit) -> Evaluation:
    """Predict ``test`` with ``head`` (outputs in ``class_ids`` order) and score it."""
    if len(test.class_ids) == 0:
        return Evaluation(version_id, float("nan"), {}, {})
    predicted = np.asarray(class_ids, dtype=np.int64)[head.predict_proba(test.embeddings).argmax(1)]
    correct = predicted == test.class_ids
    recall: dict[int, float] = {}
    support: dict[int, int] = {}
    for class_id in np.unique(test.class_ids):
        inside = test.class_ids == class_id
        recall[int(class_id)] = float(correct[inside].mean())
        support[int(class_id)] = int(inside.sum())
    return Evaluation(version_id, float(correct.mean()), recall, support)


# --- the gate ------------------------------------------------------------------------


@dataclass(frozen=True)
class GateCheck:
    name: str
    passed: bool
    detail: str


@dataclass(frozen=True)
class GateResult:
    challenger_id: int
    champion_id: int | None
    passed: bool
    checks: list[GateCheck] = field(default_factory=list)
    challenger: Evaluation | None = None
    champion: Evaluation | None = None
    # Test images the champion's embedding space lacks (it judged nothing then):
    # :func:`requeue_lacking` sends them to the workers.
    lacking: list[int] = field(default_factory=list)

    @property
    def reasons(self) -> list[str]:
        """Why it was refused, or (when it passed) what it passed."""
        failed = [c.detail for c in self.checks if not c.passed]
        return failed if failed else [c.detail for c in self.checks]

    def summary(self) -> str:
        verdict = "passed" if self.passed else "refused"
        return f"gate {verdict}: " + "; ".join(self.reasons)

    def as_dict(self) -> dict[str, Any]:
        return {
            "challenger": self.challenger_id,
            "champion": self.champion_id,
            "passed": self.passed,
            "reasons": self.reasons,
            "checks": [c.__dict__ for c in self.checks],
            "challenger_evaluation": self.challenger.as_dict() if self.challenger else None,
            "champion_evaluation": self.champion.as_dict() if self.champion else None,
        }


def get_version(session: Session, version_id: int) -> ModelVersion:
    version = session.get(ModelVersion, version_id)
    if version is None:
        raise NotFound(f"model version {version_id} does not exist")
    return version


def current_champion(session: Session) -> ModelVersion | None:
    return champion(session)


def evaluate_gate(
    session: Session,
    paths: LearningPaths,
    challenger_id: int,
    *,
    max_class_drop: float,
    min_new_class_recall: float,
    champion_id: int | None = None,
) -> GateResult:
    """Judge ``challenger_id`` against the champion (or ``champion_id``) on the
    challenger's frozen test split.

    Passes when the challenger's accuracy is not below the champion's, no
    class both know loses more than ``max_class_drop`` points (0 to 100) of
    recall, and each class only the challenger knows reaches
    ``min_new_class_recall`` (0 to 1). With no champion, it passes.
    """
    challenger = get_version(session, challenger_id)
    refuse_pixel_only(challenger, "be judged by the gate or promoted")
    champion = (
        get_version(session, champion_id) if champion_id is not None else current_champion(session)
    )
    if champion is not None:
        refuse_pixel_only(champion, "judge a challenger")
    test = load_frozen_split(paths, challenger)
    if test is None:
        check = GateCheck(
            "frozen_test_split",
            False,
            f"model {challenger_id} was not trained on a dataset version:"
            " it has no frozen test split to be judged on",
        )
        return GateResult(challenger_id, champion.id if champion else None, False, [check])
    if len(test.class_ids) == 0:
        check = GateCheck("frozen_test_split", False, "the frozen test split is empty")
        return GateResult(challenger_id, champion.id if champion else None, False, [check])
    left_out = 0
    if champion is not None and champion.id != challenger.id:
        # Neither model may be judged on an image it learnt from its own guess:
        # both are measured on the same test images, less those.
        guessed = np.union1d(guessed_images(paths, champion), guessed_images(paths, challenger))
        test, left_out = _without_guessed(session, test, guessed)
        if len(test.class_ids) == 0:
            check = GateCheck(
                "frozen_test_split",
                False,
                f"every test image is one the champion {champion.id} or the challenger"
                " learnt from its own guess (or a near duplicate of one)",
            )
            return GateResult(challenger_id, champion.id, False, [check])
    mine = evaluate_on(_head(paths, challenger), list(challenger.class_ids), challenger.id, test)
    if champion is None or champion.id == challenger.id:
        check = GateCheck("champion", True, "no champion to beat")
        return GateResult(challenger_id, None, True, [check], mine)
    champion_test, lacking = _in_space_of(session, paths, champion, challenger, test)
    if lacking:
        check = GateCheck(
            "embedding_space",
            False,
            f"champion {champion.id} embeds in another space, which lacks {len(lacking)} of"
            f" the {len(test.image_ids)} test images (ids {', '.join(map(str, lacking[:10]))}"
            f"{', ...' if len(lacking) > 10 else ''}): judge again once the workers have"
            " embedded them (a refused promotion puts them back in the scoring outbox)",
        )
        return GateResult(challenger_id, champion.id, False, [check], mine, lacking=lacking)
    theirs = evaluate_on(
        _head(paths, champion), list(champion.class_ids), champion.id, champion_test
    )
    checks = [
        GateCheck(
            "accuracy",
            mine.accuracy + 1e-9 >= theirs.accuracy,
            f"accuracy {mine.accuracy:.4f} vs champion {theirs.accuracy:.4f}",
        )
    ]
    if left_out:
        checks.append(
            GateCheck(
                "self_training",
                True,
                f"{left_out} test images left out for both: a model learnt them (or a near"
                " duplicate) from its own guess",
            )
        )
    known = set(int(c) for c in champion.class_ids)
    challenger_classes = set(int(c) for c in challenger.class_ids)
    for class_id in sorted(mine.recall):
        new, old = mine.recall[class_id], theirs.recall.get(class_id, 0.0)
        if class_id in known and class_id in challenger_classes:
            drop = (old - new) * 100
            checks.append(
                GateCheck(
                    f"recall:{class_id}",
                    drop <= max_class_drop + 1e-9,
                    f"class {class_id} recall {new:.3f} vs champion {old:.3f}"
                    f" (drop {max(drop, 0.0):.1f} points, at most {max_class_drop:g})",
                )
            )
        elif class_id in challenger_classes:
            checks.append(
                GateCheck(
                    f"new_class:{class_id}",
                    new + 1e-9 >= min_new_class_recall,
                    f"new class {class_id} recall {new:.3f} (needs {min_new_class_recall:.2f})",
                )
            )
    return GateResult(
        challenger_id, champion.id, all(c.passed for c in checks), checks, mine, theirs
    )


def _in_space_of(
    session: Session,
    paths: LearningPaths,
    model: ModelVersion,
    owner: ModelVersion,
    test: FrozenSplit,
) -> tuple[FrozenSplit, list[int]]:
    """``owner``'s frozen split as ``model`` sees it, and the images it cannot see.

    The same split where both share an embedding space; otherwise ``model``'s
    own cached embeddings of the same images and crops (the whole image where
    a crop was never embedded in its space).
    """
    if model.space_id == owner.space_id:
        return test, []
    space = session.get_one(EmbeddingSpace, model.space_id)
    crops = None if test.crop_keys is None else [str(c) for c in test.crop_keys]
    vectors, found = embedding_store.lookup(
        session, paths.embeddings, space, test.image_ids.tolist(), crops
    )
    seen = FrozenSplit(test.image_ids, test.class_ids, vectors, test.crop_keys)
    return seen, [int(i) for i in test.image_ids[~found]]


def compare(session: Session, paths: LearningPaths, a_id: int, b_id: int) -> dict[str, Any]:
    """Two versions side by side, evaluated on one frozen test split (b's, else a's)."""
    a, b = get_version(session, a_id), get_version(session, b_id)
    payload: dict[str, Any] = {"a": model_dict(a), "b": model_dict(b), "test_split_of": None}
    if is_pixel_only(a) or is_pixel_only(b):
        # No head to run on cached embeddings: the stored test metrics
        # (each on its own version's test split) are what there is.
        payload["note"] = (
            "a model fine-tuned before re-embedding takes pixels, not cached embeddings:"
            " no shared evaluation; compare the stored test metrics (accuracy above)"
        )
        return payload
    for owner in (b, a):
        test = load_frozen_split(paths, owner)
        if test is None:
            continue
        seen = [_in_space_of(session, paths, m, owner, test) for m in (a, b)]
        lacking = max(len(ids) for _, ids in seen)
        if lacking:
            payload["note"] = (
                f"different embedding spaces, and one lacks {lacking} of the test images:"
                " no shared evaluation"
            )
            break
        evaluations = [
            evaluate_on(_head(paths, m), list(m.class_ids), m.id, split)
            for m, (split, _) in zip((a, b), seen, strict=True)
        ]
        payload["test_split_of"] = owner.id
        payload["test_images"] = len(test.class_ids)
        payload["evaluations"] = [e.as_dict() for e in evaluations]
        payload["recall_change"] = {
            str(c): round(evaluations[1].recall[c] - evaluations[0].recall.get(c, 0.0), 6)
            for c in sorted(evaluations[1].recall)
        }
        payload["accuracy_change"] = round(evaluations[1].accuracy - evaluations[0].accuracy, 6)
        break
    else:
        payload["note"] = "neither version has a frozen test split"
    return payload


# --- promotion and rollback ------------------------------------------------------------


def _who(actor: Actor) -> tuple[int | None, str]:
    if isinstance(actor, User):
        if actor.role != UserRole.ADMIN.value:
            raise Forbidden("only an admin may promote or roll back a model")
        return actor.id, f"user:{actor.username}"
    name = " ".join(actor.split())
    if not name:
        raise RejectedInput("the actor's name is empty")
    return None, name[:200]


def _crown(
    session: Session,
    version: ModelVersion,
    *,
    actor: Actor,
    action: str,
    reason: str,
    details: dict[str, Any],
    now: datetime,
) -> ModelVersion:
    refuse_pixel_only(version, "become the champion")
    actor_id, actor_name = _who(actor)
    previous = [
        m
        for m in session.scalars(
            select(ModelVersion).where(ModelVersion.status == ModelStatus.CHAMPION.value)
        )
        if m.id != version.id
    ]
    for old in previous:
        old.status = ModelStatus.RETIRED.value
        old.status_reason = f"replaced by model {version.id} ({action}): {reason}"[:2000]
    version.status = ModelStatus.CHAMPION.value
    version.status_reason = reason[:2000]
    # Images its space lacks (a fine-tuned backbone's space misses what
    # arrived after its run re-embedded the pool) go back to the workers,
    # in this transaction, so none is left unscored under the new champion.
    requeued = outbox.requeue(
        session,
        embedding_store.images_missing_from(
            session, session.get_one(EmbeddingSpace, version.space_id)
        ),
    )
    session.add(
        AuditEntry(
            at=now,
            actor_id=actor_id,
            actor=actor_name,
            action=action,
            entity_type="model_version",
            entity_id=version.id,
            details=details
            | {
                "reason": reason,
                "previous_champions": [m.id for m in previous],
                "requeued_for_embedding": requeued,
            },
        )
    )
    session.flush()
    return version


def promote(
    session: Session,
    version_id: int,
    *,
    actor: Actor,
    reason: str,
    now: datetime,
    gate: GateResult | None = None,
) -> ModelVersion:
    """Make ``version_id`` the champion and retire the old one; audited.

    ``gate`` is the verdict that allowed it (None: an admin promoted without
    one). A refused gate is refused here too. Rescore afterwards (:func:`rescore`).
    """
    version = get_version(session, version_id)
    if version.status == ModelStatus.CHAMPION.value:
        raise Conflict(f"model {version_id} is already the champion")
    if gate is not None and (not gate.passed or gate.challenger_id != version_id):
        raise Conflict(f"the promotion gate refused model {version_id}: {gate.summary()}")
    reason = reason.strip() or (gate.summary() if gate else "")
    if not reason:
        raise RejectedInput("a promotion needs a reason")
    details = {"gate": gate.as_dict() if gate else None}
    return _crown(
        session, version, actor=actor, action="model.promote", reason=reason,
        details=details, now=now,
    )  # fmt: skip


def rollback(
    session: Session, version_id: int, *, actor: Actor, reason: str, now: datetime
) -> ModelVersion:
    """Make an earlier version the champion again, with the reason recorded (admin only)."""
    if not reason.strip():
        raise RejectedInput("a rollback needs a reason")
    version = get_version(session, version_id)
    if version.status == ModelStatus.CHAMPION.value:
        raise Conflict(f"model {version_id} is already the champion")
    return _crown(
        session, version, actor=actor, action="model.rollback", reason=reason.strip(),
        details={}, now=now,
    )  # fmt: skip


class GateRefused(Conflict):
    """The promotion gate refused a model (``gate`` holds the verdict and its reasons)."""

    def __init__(self, gate: GateResult) -> None:
        super().__init__(f"model {gate.challenger_id} not promoted: {gate.summary()}")
        self.gate = gate


def requeue_lacking(factory: sessionmaker[Session], gate: GateResult) -> int:
    """Send the test images a champion's space lacked to the workers; how many were sent.

    In a transaction of its own (the refused promotion rolls back). Only for
    the current champion: workers embed into the current champion's space.
    """
    if not gate.lacking:
        return 0
    with factory() as session, session.begin():
        current = current_champion(session)
        if current is None or current.id != gate.champion_id:
            return 0
        return outbox.requeue(session, gate.lacking)


def promote_through_gate(
    session: Session,
    paths: LearningPaths,
    version_id: int,
    *,
    actor: Actor,
    reason: str,
    now: datetime,
    max_class_drop: float,
    min_new_class_recall: float,
    override: bool = False,
) -> GateResult:
    """Judge ``version_id`` with :func:`evaluate_gate`, then :func:`promote` it.

    A refused gate raises :class:`GateRefused`, unless ``override``: then the
    model is promoted with the gate's verdict appended to the reason (audited
    without a gate). What the CLI's ``--skip-gate`` and the web's override box do.
    """
    gate = evaluate_gate(
        session,
        paths,
        version_id,
        max_class_drop=max_class_drop,
        min_new_class_recall=min_new_class_recall,
    )
    if not gate.passed and not override:
        raise GateRefused(gate)
    promote(
        session,
        version_id,
        actor=actor,
        reason=reason if gate.passed else f"{reason} (gate skipped: {gate.summary()})",
        now=now,
        gate=gate if gate.passed else None,
    )
    return gate


def rescore(
    factory: sessionmaker[Session],
    paths: LearningPaths,
    version_id: int,
    *,
    strategy: Strategy = Strategy.BALANCED,
    random_share: float = 0.05,
    timings: dict[str, float] | None = None,
) -> int:
    """Rescore every cached embedding with ``version_id`` (after the promoting commit).

    Workers keep scoring new images meanwhile, and a full rescoring rewrites
    the ranking from what it read: images mapped into the space after that
    read are scored again once it is written, and images the space still
    lacks go back to the outbox. Returns the number of images scored by the
    full rescoring; ``timings`` gets its phases and ``catch_up``.
    """
    with factory() as session:
        refuse_pixel_only(get_version(session, version_id), "rescore the queue")
        model = load_model(session, paths, version_id)
    read: list[NDArray[np.int64]] = []
    scored = score_images(
        factory, paths, model, strategy=strategy, random_share=random_share, read_ids=read,
        timings=timings,
    )  # fmt: skip
    started = time.perf_counter()
    with factory() as session, session.begin():
        # A set difference, not a row high-water mark: workers map rows in
        # their commit order, which is not the order of the file's rows.
        now = np.asarray(embedding_store.image_ids_in(session, model.space.key), dtype=np.int64)
        late = np.setdiff1d(now, read[0], assume_unique=True).tolist()
        outbox.requeue(session, embedding_store.images_missing_from(session, model.space))
    if late:
        score_images(factory, paths, model, late, strategy=strategy, random_share=random_share)
    if timings is not None:
        timings["catch_up"] = round(time.perf_counter() - started, 3)
    return scored


# --- listing --------------------------------------------------------------------------


def list_models(session: Session) -> list[ModelVersion]:
    return list(session.scalars(select(ModelVersion).order_by(ModelVersion.id)))


def model_dict(version: ModelVersion, *, full: bool = False) -> dict[str, Any]:
    metrics = version.metrics or {}
    test = metrics.get("test", {})
    out: dict[str, Any] = {
        "id": version.id,
        "status": version.status,
        "status_reason": version.status_reason,
        "created_at": version.created_at.isoformat(),
        "dataset_version_id": version.dataset_version_id,
        "training_run_id": version.training_run_id,
        "classes": len(version.class_ids),
        "seed": version.seed,
        "fine_tuned": is_fine_tuned(version),
        "accuracy": test.get("accuracy", metrics.get("cross_validated_accuracy")),
        "top5_accuracy": test.get("top5_accuracy"),
        "expected_calibration_error": test.get("expected_calibration_error"),
    }
    if full:
        out |= {
            "class_ids": list(version.class_ids),
            "space_id": version.space_id,
            "artifact_key": version.artifact_key,
            "settings": version.settings,
            "metrics": metrics,
        }
    return out
