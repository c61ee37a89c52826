"""The retraining loop on generated data: cached embeddings -> dataset version -> train ->
metrics on the frozen test split -> gate -> promote -> rescore -> rollback; and the CLI."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from curation import registry
from curation import training_runs as runs
from curation.cli import main
from curation.exceptions import Conflict
from curation.labels import append_label, current_labels
from curation.learning import embedding_store
from curation.learning.head import Head
from curation.learning.scoring import LearningPaths
from curation.models import (
    AuditEntry,
    EmbeddingSpace,
    Image,
    ImageScore,
    LandmarkClass,
    ModelVersion,
    RunTrigger,
    Split,
)
from datasets.training import (
    FineTuningNotHere,
    GateSettings,
    TrainingCancelled,
    TrainingOptions,
    pseudo_label_candidates,
    request_and_train,
    train_and_promote,
    train_on_version,
)
from datasets.versions import load_manifest, snapshot
from tests.factories import image_row

SPACE = "efficientnetb0:none"  # what the CLI derives from backbone efficientnetb0, weights none
DIM = 8
PER_CLASS = 40
FAST = TrainingOptions(epochs=60, patience=10)


def _now() -> datetime:
    return datetime.now(UTC)


def _paths(runtime) -> LearningPaths:
    return LearningPaths.under(runtime.settings.data_dir)


def _build(runtime) -> dict[str, object]:
    """3 classes x 40 labelled images with well separated embeddings (boxed ones as crops);
    one more labelled image that was never embedded; snapshot v1."""
    rng = np.random.default_rng(7)
    centres = rng.normal(size=(3, DIM)) * 4
    paths = _paths(runtime)
    with runtime.factory() as session, session.begin():
        classes = [
            LandmarkClass(slug=f"c{k}", display_name=f"Class {k}", status="active")
            for k in range(3)
        ]
        session.add_all(classes)
        session.flush()
        space = embedding_store.get_or_create_space(
            session, key=SPACE, backbone="efficientnetb0", weights_id="none", dim=DIM
        )
        keys, vectors = [], []
        for k, landmark in enumerate(classes):
            for j in range(PER_CLASS):
                image = image_row(session, 1000 * (k + 1) + j)
                box = (10.0, 10.0, 200.0, 150.0) if j % 4 == 0 else None
                append_label(
                    session, image_id=image.id, class_id=landmark.id, box=box, origin="import:t"
                )
                point = centres[k] + rng.normal(size=DIM)
                if box is not None:
                    # The full image is a poor view; the crop shows the landmark.
                    keys.append((image.id, embedding_store.FULL))
                    vectors.append(rng.normal(size=DIM) * 4)
                    keys.append((image.id, embedding_store.crop_key(box)))
                else:
                    keys.append((image.id, embedding_store.FULL))
                vectors.append(point)
        embedding_store.record(session, paths.embeddings, space, keys, np.asarray(vectors))
        unembedded = image_row(session, 9999)
        append_label(
            session, image_id=unembedded.id, class_id=classes[0].id, box=None, origin="import:t"
        )
        snapshot(session, author="test", message="v1", seed=3)
    return {"class_ids": [c.id for c in classes], "unembedded": unembedded.id}


@pytest.fixture
def built(runtime):
    return _build(runtime)


def _shuffled_v2(runtime) -> None:
    """Relabel every train-split image of v1 at random; test labels stay: snapshot v2."""
    rng = np.random.default_rng(1)
    with runtime.factory() as session, session.begin():
        manifest = load_manifest(session, "v1")
        train = manifest.image_ids[manifest.in_split(Split.TRAIN)].tolist()
        labels = {label.image_id: label for label in current_labels(session, train)}
        classes = sorted(set(manifest.class_ids.tolist()))
        for image_id in train:
            old = labels[image_id]
            append_label(
                session,
                image_id=image_id,
                class_id=int(rng.choice(classes)),
                box=old.box,
                origin="import:shuffled",
                supersedes=old,
            )
        snapshot(session, author="test", message="v2: shuffled train labels")


def test_the_whole_loop(runtime, built) -> None:
    paths = _paths(runtime)
    first = request_and_train(
        runtime.factory,
        paths,
        requested_by="test",
        version_ref="v1",
        space_key=SPACE,
        seed=0,
        options=FAST,
    )
    # Trained, measured on the frozen test split, judged (no champion), promoted, rescored.
    assert first.dataset_version == "v1" and first.classes == 3
    assert first.missing_embeddings == [built["unembedded"]]
    assert first.test_metrics["accuracy"] >= 0.9
    assert set(first.test_metrics) >= {
        "top5_accuracy",
        "expected_calibration_error",
        "per_class",
        "confusion_matrix",
    }
    assert first.gate is not None and first.gate.passed and first.promoted
    assert first.rescored == 3 * PER_CLASS
    with runtime.factory() as session:
        model = session.get_one(ModelVersion, first.model_version_id)
        assert model.status == "champion" and model.dataset_version_id is not None
        assert model.training_run_id == first.run_id
        assert model.settings["dataset_version"] == "v1" and model.settings["seed"] == 0
        assert model.settings["class_ids"] == sorted(built["class_ids"])
        assert model.metrics["curves"]["loss"] and model.metrics["curves"]["val_loss"]
        # Standardised by the space it scores, not by the labelled rows: the
        # space also holds the images no version has.
        space = session.get_one(EmbeddingSpace, model.space_id)
        sampled, images = embedding_store.sample(session, paths.embeddings, space)
        assert model.settings["standardised_by"] == {
            "source": "space",
            "images": images,
            "sampled": len(sampled),
        }
        head = Head.from_bytes((paths.models / model.artifact_key).read_bytes())
        np.testing.assert_allclose(
            head.mean, np.asarray(sampled, dtype=np.float64).mean(axis=0), rtol=1e-5, atol=1e-6
        )
        run = runs.get_run(session, first.run_id)
        assert run.status == "succeeded" and run.model_version_id == model.id
        assert run.progress == 1.0 and run.dataset_version_id == model.dataset_version_id
        scored = session.scalar(select(func.count()).where(ImageScore.model_version_id == model.id))
        assert scored == 3 * PER_CLASS and model.queue_ranked_at is not None

    # A challenger trained on shuffled labels is judged on the same frozen test
    # split, and refused.
    _shuffled_v2(runtime)
    second = train_and_promote(
        runtime.factory, paths, version_ref="latest", space_key=SPACE, options=FAST,
        gate=GateSettings(max_class_drop=5, min_new_class_recall=0.5),
    )  # fmt: skip
    assert second.dataset_version == "v2"
    assert second.gate is not None and not second.gate.passed and not second.promoted
    assert any(r.startswith("accuracy") for r in second.gate.reasons)
    assert second.gate.champion_id == first.model_version_id
    with runtime.factory() as session:
        assert session.get_one(ModelVersion, second.model_version_id).status == "candidate"
        comparison = registry.compare(
            session, paths, first.model_version_id, second.model_version_id
        )
        assert comparison["accuracy_change"] < -0.2
        with pytest.raises(Conflict, match="gate refused"):
            registry.promote(
                session,
                second.model_version_id,
                actor="admin",
                reason="try",
                now=_now(),
                gate=second.gate,
            )

    # An admin forces it anyway, then rolls back with a reason.
    with runtime.factory() as session, session.begin():
        registry.promote(
            session, second.model_version_id, actor="admin", reason="experiment", now=_now()
        )
    with runtime.factory() as session, session.begin():
        registry.rollback(
            session,
            first.model_version_id,
            actor="admin",
            reason="v2 labels were shuffled",
            now=_now(),
        )
    rescored = registry.rescore(runtime.factory, paths, first.model_version_id)
    assert rescored == 3 * PER_CLASS
    with runtime.factory() as session:
        back = session.get_one(ModelVersion, first.model_version_id)
        bad = session.get_one(ModelVersion, second.model_version_id)
        assert back.status == "champion" and back.status_reason == "v2 labels were shuffled"
        assert bad.status == "retired"
        actions = session.scalars(
            select(AuditEntry.action).where(AuditEntry.entity_type == "model_version")
        ).all()
        assert actions == ["model.promote", "model.promote", "model.rollback"]
        entry = session.scalars(
            select(AuditEntry).where(AuditEntry.action == "model.rollback")
        ).one()
        assert entry.details["reason"] == "v2 labels were shuffled"
        assert entry.details["previous_champions"] == [second.model_version_id]


def test_a_cancelled_run_stops_and_writes_nothing(runtime, built) -> None:
    with runtime.factory() as session, session.begin():
        run, _ = runs.request_run(session, trigger=RunTrigger.MANUAL, requested_by="t")
        runs.start(session, run.id, _now())
        runs.cancel_request(session, run.id, _now())
        run_id = run.id
    with pytest.raises(TrainingCancelled):
        train_on_version(
            runtime.factory, _paths(runtime), space_key=SPACE, run_id=run_id, options=FAST
        )
    with runtime.factory() as session:
        assert runs.get_run(session, run_id).status == "cancelled"
        assert session.scalar(select(func.count()).select_from(ModelVersion)) == 0


def test_a_failed_training_marks_its_run_failed(runtime, built) -> None:
    with runtime.factory() as session, session.begin():
        run, _ = runs.request_run(session, trigger="manual", requested_by="t")
        run_id = run.id
    with pytest.raises(Exception, match="no embeddings in space"):
        train_on_version(runtime.factory, _paths(runtime), space_key="other:none", run_id=run_id)
    with runtime.factory() as session:
        run = runs.get_run(session, run_id)
        assert run.status == "failed" and "no embeddings in space" in (run.error or "")


def test_fine_tuning_options_are_refused_by_the_head_training(runtime) -> None:
    # Fine-tuning reads pixels: datasets.finetune (tests/datasets/test_finetune.py).
    with pytest.raises(FineTuningNotHere, match="fine_tune_on_version"):
        train_on_version(
            runtime.factory,
            _paths(runtime),
            space_key=SPACE,
            options=TrainingOptions(fine_tune_blocks=2),
        )


# --- the command line ---------------------------------------------------------------


def _cli(runtime, *args: str):
    env = {
        "CURATION_ENV": "test",
        "CURATION_DATA_DIR": str(runtime.settings.data_dir),
        "CURATION_DATABASE_URL": runtime.settings.database_url,
        "CURATION_SECRET_KEY": "cli-test-secret",
        "CURATION_BACKBONE": "efficientnetb0",
        "CURATION_BACKBONE_WEIGHTS": "none",
        "CURATION_NO_PROGRESS": "1",
    }
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def test_cli_train_models_promote_and_rollback(runtime, built, tmp_path: Path) -> None:
    result = _cli(runtime, "train", "--dataset", "v1", "--epochs", "60", "--json")
    assert result.exit_code == 0, result.output
    trained = json.loads(result.output)
    first = trained["model_version_id"]
    assert trained["promoted"] and trained["gate"]["passed"]
    assert trained["missing_embeddings"] == 1

    result = _cli(runtime, "train", "--no-promote", "--epochs", "60", "--seed", "1", "--json")
    assert result.exit_code == 0, result.output
    second = json.loads(result.output)["model_version_id"]
    assert json.loads(result.output)["promoted"] is False

    listed = json.loads(_cli(runtime, "models", "list", "--json").output)
    assert [(m["id"], m["status"]) for m in listed] == [(first, "champion"), (second, "candidate")]
    shown = json.loads(_cli(runtime, "models", "show", str(first), "--json").output)
    assert shown["metrics"]["test"]["accuracy"] >= 0.9
    assert "precision" in _cli(runtime, "models", "show", str(first)).output
    compared = json.loads(
        _cli(runtime, "models", "compare", str(first), str(second), "--json").output
    )
    assert compared["test_split_of"] == second

    promoted = _cli(runtime, "models", "promote", str(second), "--reason", "seed 1", "--json")
    assert promoted.exit_code == 0, promoted.output
    assert json.loads(promoted.output)["rescored"] == 3 * PER_CLASS

    refused = _cli(runtime, "models", "rollback", str(first), "--reason", "")
    assert refused.exit_code == 2 and "needs a reason" in refused.output
    rolled = _cli(runtime, "models", "rollback", str(first), "--reason", "seed 0 was better")
    assert rolled.exit_code == 0 and "is the champion" in rolled.output

    not_alone = _cli(runtime, "train", "--trainable-batchnorm")
    assert not_alone.exit_code == 2 and "--fine-tune-blocks" in not_alone.output
    missing = _cli(runtime, "models", "show", "999")
    assert missing.exit_code == 2 and "does not exist" in missing.output


def test_cli_train_from_labels_keeps_the_old_behaviour(runtime, built) -> None:
    result = _cli(runtime, "train", "--from-labels", "--json")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert payload["classes"] == 3 and payload["promoted"] and payload["rescored"] == 3 * PER_CLASS


def test_self_training_learns_unjudged_images_but_never_held_out_twins(runtime, built) -> None:
    """The head's second fit learns plain unlabelled images of the space by its own
    guess; never an image a reviewer judged ("not a landmark" included), one of the
    version, or a near duplicate of a validation or test image."""
    paths = _paths(runtime)
    rng = np.random.default_rng(11)
    with runtime.factory() as session, session.begin():
        space = session.scalars(select(EmbeddingSpace).where(EmbeddingSpace.key == SPACE)).one()
        manifest = load_manifest(session, "v1")
        ids, vectors, _ = embedding_store.sample_images(session, paths.embeddings, space)
        by_id = dict(zip(ids.tolist(), vectors.astype(np.float64), strict=True))
        train = manifest.image_ids[manifest.in_split(Split.TRAIN)]
        test = manifest.image_ids[manifest.in_split(Split.TEST)]
        unboxed_train = [int(i) for i in train if int(i) in by_id][:30]
        keys, rows, plain = [], [], []
        for n, source in enumerate(unboxed_train):  # plain views of known landmarks
            image = image_row(session, 50_000 + n)
            plain.append(image.id)
            keys.append((image.id, embedding_store.FULL))
            rows.append(by_id[source] + rng.normal(scale=0.1, size=DIM))
        held = session.get_one(Image, int(test[0]))
        twin = image_row(session, 60_000, group_id=held.group_id)
        rejected = image_row(session, 60_001)
        append_label(session, image_id=rejected.id, class_id=None, box=None, origin="review")
        for image in (twin, rejected):
            keys.append((image.id, embedding_store.FULL))
            rows.append(by_id.get(int(test[0]), by_id[unboxed_train[0]]))
        embedding_store.record(session, paths.embeddings, space, keys, np.asarray(rows))
    with runtime.factory() as session:
        ids, _, _ = embedding_store.sample_images(session, paths.embeddings, space)
        allowed = dict(
            zip(ids.tolist(), pseudo_label_candidates(session, ids, manifest).tolist(), strict=True)
        )
    assert {i for i, ok in allowed.items() if ok} == set(plain)
    assert not allowed[twin.id] and not allowed[rejected.id]

    quick = TrainingOptions(epochs=60, patience=10, label_issues=False)
    outcome = train_and_promote(
        runtime.factory, paths, version_ref="v1", space_key=SPACE, options=quick
    )
    with runtime.factory() as session:
        champion = session.get_one(ModelVersion, outcome.model_version_id)
        learnt = champion.settings["self_training"]
        assert learnt["candidates"] == len(plain)
        assert 0 < learnt["learnt_from_guesses"] <= len(plain)
        guessed = registry.guessed_images(paths, champion)
        assert guessed.size == learnt["learnt_from_guesses"] and set(guessed.tolist()) <= set(plain)
        # The gate never judges a model on an image it guessed, nor on a near duplicate of one.
        split = registry.FrozenSplit(
            image_ids=np.asarray([int(guessed[0]), twin.id, held.id], dtype=np.int64),
            class_ids=np.zeros(3, dtype=np.int64),
            embeddings=np.zeros((3, DIM), dtype=np.float16),
        )
        kept, left_out = registry._without_guessed(session, split, guessed)
        assert left_out == 1 and kept.image_ids.tolist() == [twin.id, held.id]
        kept, left_out = registry._without_guessed(session, split, np.asarray([twin.id]))
        assert left_out == 2 and kept.image_ids.tolist() == [int(guessed[0])]

    # The command line: --no-self-training on both trainings; refused with fine-tuning.
    result = _cli(runtime, "train", "--dataset", "v1", "--epochs", "20", "--no-promote",
                  "--no-self-training", "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    result_from_labels = [
        json.loads(
            _cli(
                runtime, "train", "--from-labels", "--epochs", "60", *flag, "--no-promote", "--json"
            ).output
        )
        for flag in ((), ("--no-self-training",))
    ]
    refused = _cli(runtime, "train", "--fine-tune-blocks", "2", "--no-self-training")
    assert refused.exit_code != 0 and "applies to the head training" in refused.output
    with runtime.factory() as session:
        once = session.get_one(ModelVersion, json.loads(result.output)["model_version_id"])
        assert once.settings["self_training"] == {"candidates": 0, "learnt_from_guesses": 0}
        assert once.settings["options"]["self_training"] is False
        assert registry.guessed_images(paths, once).size == 0
        both = [
            session.get_one(ModelVersion, r["model_version"]).settings["self_training"]
            for r in result_from_labels
        ]
    # Without a version, every unjudged image is a candidate: the plain ones and the twin.
    assert both[0]["candidates"] == len(plain) + 1 and both[0]["learnt_from_guesses"] > 0
    assert both[1] == {"candidates": 0, "learnt_from_guesses": 0}


def test_progress_runs_forward_through_both_fits_of_self_training() -> None:
    from datasets.training import _Heartbeat

    seen: list[tuple[float, str]] = []
    beat = _Heartbeat(None, None, 10, lambda progress, message: seen.append((progress, message)))  # type: ignore[arg-type]
    beat.fits = 2
    for epoch in [*range(4), *range(10)]:  # the first fit stops early at epoch 4
        beat.on_epoch(epoch, {"loss": 0.5})
    progress = [p for p, _ in seen]
    assert progress == sorted(progress) and progress[-1] == pytest.approx(0.9)
    assert seen[0][1].startswith("fit 1 of 2") and seen[-1][1].startswith("fit 2 of 2, epoch 10")
