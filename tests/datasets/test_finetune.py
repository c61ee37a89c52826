"""Fine-tuning the top backbone blocks on a version's pixels: the block grouping of each
supported backbone, which layers train, a tiny end-to-end run (metrics, model file,
its own embedding space, progress and cancel), judging, promoting and scoring with
it against a head on the original backbone, and the CLI."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import keras
import numpy as np
import pytest
from click.testing import CliRunner
from sqlalchemy import delete, func, select, update

import datasets.finetune
from curation import registry
from curation import training_runs as runs
from curation.cli import main
from curation.exceptions import Conflict, RejectedInput
from curation.labels import append_label
from curation.learning import embedding_store, pipeline
from curation.learning.backbones import load_backbone
from curation.learning.decode import decode_for_model
from curation.learning.pipeline import process_batch
from curation.learning.scoring import LearningPaths, embed_missing, load_model
from curation.learning.tuned import backbone_for_space, load_tuned_backbone
from curation.models import (
    AuditEntry,
    EmbeddingSpace,
    Image,
    ImageEmbedding,
    ImageScore,
    LandmarkClass,
    ModelVersion,
    RunTrigger,
    ScoringJob,
    TrainingRun,
)
from curation.prediction import predict
from datasets.finetune import (
    FINE_TUNED,
    backbone_blocks,
    backbone_family,
    build_classifier,
    fine_tune_on_version,
    unfreeze_top,
)
from datasets.training import FineTuningNotHere, TrainingOptions, train_on_version
from datasets.versions import load_manifest, snapshot
from tests.datasets.test_exports import add_image
from tests.factories import jpeg

BACKBONE, WEIGHTS = "mobilenet_0.25", "none"
PER_CLASS = 10


def _now() -> datetime:
    return datetime.now(UTC)


def _paths(runtime) -> LearningPaths:
    return LearningPaths.under(runtime.settings.data_dir)


# --- the block grouping ------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "build", "count", "top", "in_top"),
    [
        (
            "mobilenet_0.25",
            lambda: load_backbone("mobilenet_0.25", "none").model,
            13,
            "13",
            {"conv_dw_13", "conv_dw_13_bn", "conv_pw_13", "conv_pw_13_relu"},
        ),
        (
            "mobilenetv2",
            lambda: keras.applications.MobileNetV2(
                include_top=False, weights=None, input_shape=(96, 96, 3), alpha=0.35
            ),
            17,
            "16",
            {"block_16_expand", "block_16_project_BN", "Conv_1", "Conv_1_bn", "out_relu"},
        ),
        (
            "efficientnetb0",
            lambda: keras.applications.EfficientNetB0(
                include_top=False, weights=None, input_shape=(64, 64, 3)
            ),
            16,
            "7a",
            {"block7a_expand_conv", "block7a_project_bn", "top_conv", "top_bn"},
        ),
        (
            "mobilenetv3small",
            lambda: keras.applications.MobileNetV3Small(
                include_top=False, weights=None, input_shape=(64, 64, 3)
            ),
            11,
            "10",
            {"expanded_conv_10_expand", "expanded_conv_10_add", "conv_1", "conv_1_bn"},
        ),
    ],
)
def test_blocks_are_grouped_by_layer_names(name, build, count, top, in_top) -> None:
    model = build()
    blocks = backbone_blocks(model, backbone_family(name))
    assert len(blocks) == count
    key, layers = blocks[-1]
    assert key == top
    assert in_top <= {layer.name for layer in layers}
    grouped = [layer.name for _, group in blocks for layer in group]
    assert len(grouped) == len(set(grouped))  # each layer in one block
    # The stem is in no block: every grouped layer comes after the first block's start.
    names = [layer.name for layer in model.layers]
    assert min(names.index(n) for n in grouped) == names.index(blocks[0][1][0].name)
    assert blocks[0][0] in ("1", "0", "1a")


@pytest.mark.parametrize("trainable_batchnorm", [False, True])
def test_only_the_top_blocks_and_the_head_train(trainable_batchnorm: bool) -> None:
    loaded = load_backbone(BACKBONE, WEIGHTS)
    model = build_classifier(loaded, 3)
    names = unfreeze_top(loaded.model, "mobilenet", 2, trainable_batchnorm=trainable_batchnorm)
    assert names == ["12", "13"]
    for layer in loaded.model.layers:
        in_top = layer.name.startswith(("conv_dw_12", "conv_pw_12", "conv_pad_12", "conv_dw_13",
                                        "conv_pw_13"))  # fmt: skip
        is_bn = isinstance(layer, keras.layers.BatchNormalization)
        assert layer.trainable == (in_top and (trainable_batchnorm or not is_bn)), layer.name
    assert model.get_layer("head").trainable
    # MobileNet scales [0, 255] to [-1, 1] as embed_batch's preprocessing does.
    scaling = model.get_layer("input_scaling")
    pixels = np.asarray([[0.0, 127.5, 255.0]], dtype=np.float32)
    assert np.allclose(np.asarray(scaling(pixels)), loaded.spec.preprocess(pixels.copy()))
    with pytest.raises(RejectedInput, match="13 blocks"):
        unfreeze_top(loaded.model, "mobilenet", 14, trainable_batchnorm=False)


# --- end to end ----------------------------------------------------------------------


@pytest.fixture
def built(runtime) -> dict[str, object]:
    """2 classes x 10 small JPEGs in the store, labelled (every third boxed); snapshot v1."""
    with runtime.factory() as session, session.begin():
        classes = [
            LandmarkClass(slug=f"c{k}", display_name=f"Class {k}", status="active")
            for k in range(2)
        ]
        session.add_all(classes)
        session.flush()
        for k, landmark in enumerate(classes):
            for j in range(PER_CLASS):
                image = add_image(session, runtime.store, jpeg(100 * k + j, 48, 40))
                box = (4.0, 4.0, 40.0, 36.0) if j % 3 == 0 else None
                append_label(
                    session, image_id=image.id, class_id=landmark.id, box=box, origin="import:t"
                )
        snapshot(session, author="test", message="v1", seed=3)
        splits = load_manifest(session, "v1").split_counts()
    assert splits["test"] > 0 and splits["validation"] > 0, splits
    return {"splits": splits}


def _fine_tune(runtime, **overrides):
    options = {
        "version_ref": "v1",
        "backbone": BACKBONE,
        "weights": WEIGHTS,
        "blocks": 1,
        "epochs": 1,
        "patience": 1,
        "batch_size": 8,
        "seed": 0,
    } | overrides
    return fine_tune_on_version(runtime.factory, _paths(runtime), runtime.store, **options)


def test_fine_tune_writes_a_candidate_with_metrics_and_a_model_file(
    runtime, built, monkeypatch
) -> None:
    with runtime.factory() as session, session.begin():
        run, _ = runs.request_run(session, trigger=RunTrigger.MANUAL, requested_by="t")
        run_id = run.id
    messages: list[str] = []
    monkeypatch.setattr(datasets.finetune, "REEMBED_CHUNK", 7)  # 20 images: 3 chunks
    outcome = _fine_tune(
        runtime,
        blocks=2,
        augment=True,
        run_id=run_id,
        on_progress=lambda share, message: messages.append(message),
    )
    assert outcome.unfrozen_blocks == ["12", "13"] and outcome.classes == 2
    assert any(m.startswith("phase 1") for m in messages)
    assert any(m.startswith("phase 2") for m in messages)
    embedding = [m.rsplit(": ", 1)[-1] for m in messages if m.startswith("phase 3: embedding 20")]
    assert embedding[-3:] == ["7 done", "14 done", "20 done"], messages
    test = outcome.test_metrics
    assert test["test_images"] == built["splits"]["test"]
    assert test["accuracy"] is not None and 0.0 <= test["accuracy"] <= 1.0
    assert set(test) >= {"top5_accuracy", "expected_calibration_error", "per_class"}

    paths = _paths(runtime)
    with runtime.factory() as session:
        model = session.get_one(ModelVersion, outcome.model_version_id)
        assert model.status == "candidate" and model.training_run_id == run_id
        assert model.settings["kind"] == FINE_TUNED
        assert model.settings["blocks"] == 2 and model.settings["trainable_batchnorm"] is False
        assert model.settings["augmentation"]["flip"] == "horizontal"
        assert model.settings["backbone"] == BACKBONE and model.settings["weights"] == WEIGHTS
        assert model.metrics["test"] == test
        assert set(model.metrics["test_from_pixels"]) >= {"accuracy", "per_class"}
        assert model.metrics["epochs_run"] == len(model.metrics["curves"]["loss"]) == 2
        assert runs.get_run(session, run_id).status == "succeeded"
        space = session.get_one(EmbeddingSpace, model.space_id)
        classifier_file = paths.models / model.settings["backbone_artifact"]
        # Every image, and the crop of every boxed entry, in the fine-tuned space.
        in_space = set(
            session.execute(
                select(ImageEmbedding.image_id, ImageEmbedding.crop_key).where(
                    ImageEmbedding.space_id == space.id
                )
            ).tuples()
        )
        images = list(session.scalars(select(Image).order_by(Image.id)))
    assert space.key.startswith(f"{BACKBONE}:tuned:") and model.settings["space"] == space.key
    assert {i for i, crop in in_space if crop == "full"} == {image.id for image in images}
    assert len(in_space) == len(images) + sum(1 for j in range(PER_CLASS) if j % 3 == 0) * 2
    assert model.artifact_key.endswith(".npz") and classifier_file.name.endswith(".keras")

    # The saved model: the top 2 blocks (BatchNorm frozen) and the head train, nothing else.
    saved = keras.models.load_model(classifier_file)
    backbone = next(layer for layer in saved.layers if isinstance(layer, keras.Model))
    trainable = {layer.name for layer in backbone.layers if layer.trainable}
    assert "conv_pw_13" in trainable and "conv_dw_12" in trainable
    assert "conv_pw_11" not in trainable and "conv_pw_13_bn" not in trainable
    assert saved.get_layer("head").trainable

    # The head over the cached embeddings answers as the classifier does on the pixels.
    image = images[1]  # j == 1: not boxed
    pixels = decode_for_model(runtime.store.path_for(image.storage_key), size=224, box=None)
    from_pixels = np.asarray(saved(pixels[np.newaxis].astype(np.float32), training=False))[0]
    with runtime.factory() as session:
        cached = load_model(session, paths, model.id)
        ids, vectors = embedding_store.load(session, paths.embeddings, cached.space)
    from_cache = cached.head.predict_proba(vectors[list(ids).index(image.id)][np.newaxis])[0]
    assert np.allclose(from_cache, from_pixels, atol=0.02), (from_cache, from_pixels)


def test_a_cancel_during_the_head_phase_stops_before_fine_tuning(runtime, built) -> None:
    with runtime.factory() as session, session.begin():
        run, _ = runs.request_run(session, trigger=RunTrigger.MANUAL, requested_by="t")
        run_id = run.id
    messages: list[str] = []

    def progress(share: float, message: str) -> None:
        messages.append(message)
        if message.startswith("phase 1, epoch"):  # the head phase ran an epoch
            with runtime.factory() as session, session.begin():
                runs.cancel_request(session, run_id, _now())

    from datasets.training import TrainingCancelled

    with pytest.raises(TrainingCancelled):
        _fine_tune(runtime, run_id=run_id, on_progress=progress)
    assert not any(m.startswith("phase 2, epoch") for m in messages)
    with runtime.factory() as session:
        assert runs.get_run(session, run_id).status == "cancelled"
        assert session.scalar(select(func.count()).select_from(ModelVersion)) == 0


def test_a_cancel_while_re_embedding_leaves_nothing_behind(runtime, built, monkeypatch) -> None:
    with runtime.factory() as session, session.begin():
        run, _ = runs.request_run(session, trigger=RunTrigger.MANUAL, requested_by="t")
        run_id = run.id
    monkeypatch.setattr(datasets.finetune, "REEMBED_CHUNK", 7)

    def progress(share: float, message: str) -> None:
        if message.startswith("phase 3") and message.endswith(": 7 done"):  # one chunk in
            with runtime.factory() as session, session.begin():
                runs.cancel_request(session, run_id, _now())

    from datasets.training import TrainingCancelled

    with pytest.raises(TrainingCancelled):
        _fine_tune(runtime, run_id=run_id, on_progress=progress)
    with runtime.factory() as session:
        assert runs.get_run(session, run_id).status == "cancelled"
        assert session.scalar(select(func.count()).select_from(ModelVersion)) == 0
        spaces = list(session.scalars(select(EmbeddingSpace.key)))
        assert not any(":tuned:" in key for key in spaces), spaces
        assert session.scalar(select(func.count()).select_from(ImageEmbedding)) == 0
    models = _paths(runtime).models
    assert not models.exists() or list(models.iterdir()) == []


def test_options_and_the_head_training_refuse_fine_tuning_options(runtime) -> None:
    with pytest.raises(RejectedInput, match="--fine-tune-blocks"):
        TrainingOptions(augment=True).check()
    TrainingOptions(fine_tune_blocks=2, augment=True, trainable_batchnorm=True).check()
    with pytest.raises(FineTuningNotHere, match="fine_tune_on_version"):
        train_on_version(
            runtime.factory, _paths(runtime), space_key="x:none",
            options=TrainingOptions(fine_tune_blocks=2),
        )  # fmt: skip


def _cli_env(runtime) -> dict[str, str]:
    """The environment a ``curation`` command needs to act on ``runtime``'s platform."""
    return {
        "CURATION_ENV": "test",
        "CURATION_DATA_DIR": str(runtime.settings.data_dir),
        "CURATION_DATABASE_URL": runtime.settings.database_url,
        "CURATION_SECRET_KEY": "cli-test-secret",
        "CURATION_BACKBONE": BACKBONE,
        "CURATION_BACKBONE_WEIGHTS": WEIGHTS,
        "CURATION_NO_PROGRESS": "1",
    }


def test_cli_fine_tunes_judges_and_promotes(runtime, built) -> None:
    env = _cli_env(runtime)
    runner = CliRunner()
    refused = runner.invoke(main, ["train", "--augment"], env=env)
    assert refused.exit_code == 2 and "--fine-tune-blocks" in refused.output
    args = ["train", "--dataset", "v1", "--fine-tune-blocks", "1", "--trainable-batchnorm",
            "--augment", "--epochs", "1", "--seed", "5"]  # fmt: skip
    kept = runner.invoke(main, [*args, "--no-promote", "--json"], env=env, catch_exceptions=False)
    assert kept.exit_code == 0, kept.output
    payload = json.loads(kept.output)
    assert payload["promoted"] is False and payload["gate"]["passed"] is True
    assert "not promoted: --no-promote" in payload["notes"]
    human = runner.invoke(main, args, env=env, catch_exceptions=False)
    assert human.exit_code == 0, human.output
    assert "fine-tuned blocks 13 with trainable BatchNorm" in human.output
    assert "gate passed: no champion to beat" in human.output
    assert "promoted to champion; 20 images rescored" in human.output
    with runtime.factory() as session:
        models = list(session.scalars(select(ModelVersion).order_by(ModelVersion.id)))
        assert [m.status for m in models] == ["candidate", "champion"]
        assert models[1].settings["trainable_batchnorm"] is True and models[1].seed == 5
        assert models[1].settings["augmentation"] is not None
        assert models[0].space_id != models[1].space_id  # each fine-tuned backbone its own space


def test_a_fine_tuned_model_is_judged_promoted_and_scores_the_queue(
    runtime, built, monkeypatch
) -> None:
    """Against a head on the original backbone, both ways: the gate across spaces,
    promotion (with images its space lacks sent back to the workers), worker batches
    embedding into the champion's space, a full rescoring, prediction, rollback."""
    paths = _paths(runtime)
    base = load_backbone(BACKBONE, WEIGHTS)
    with runtime.factory() as session:
        ids = list(session.scalars(select(Image.id).order_by(Image.id)))
    embed_missing(runtime.factory, runtime.store, paths, base, ids)
    head = train_on_version(runtime.factory, paths, version_ref="v1", space_key=base.space_key)
    with runtime.factory() as session, session.begin():
        registry.promote(session, head.model_version_id, actor="t", reason="first", now=_now())
    # A high rate, so the fine-tuned space really differs from the base one.
    tuned = _fine_tune(runtime, fine_tune_learning_rate=0.05).model_version_id

    # An image that arrives after the run re-embedded the store: only the base space has it.
    with runtime.factory() as session, session.begin():
        late = add_image(session, runtime.store, jpeg(999, 48, 40)).id
        session.add(ScoringJob(image_id=late, status="done"))
    embed_missing(runtime.factory, runtime.store, paths, base, [late])

    with runtime.factory() as session, session.begin():
        verdict = registry.evaluate_gate(
            session, paths, tuned, max_class_drop=100, min_new_class_recall=0.0
        )
        assert (
            verdict.champion is not None
            and verdict.champion.model_version_id == head.model_version_id
        )
        assert verdict.checks[0].name == "accuracy"
        # The champion was judged on its own space's vectors of the same images and crops.
        split = registry.load_frozen_split(paths, session.get_one(ModelVersion, tuned))
        base_space = session.get_one(EmbeddingSpace, head_version(session, head).space_id)
        vectors, found = embedding_store.lookup(
            session, paths.embeddings, base_space, split.image_ids.tolist(),
            [str(c) for c in split.crop_keys],
        )  # fmt: skip
        assert found.all()
        assert np.abs(vectors.astype(np.float32) - split.embeddings).max() > 0.05
        own = registry.evaluate_on(
            registry._head(paths, head_version(session, head)),
            list(head_version(session, head).class_ids),
            head.model_version_id,
            registry.FrozenSplit(split.image_ids, split.class_ids, vectors, split.crop_keys),
        )
        assert verdict.champion == own
        seen, lacking = registry._in_space_of(
            session, paths, head_version(session, head), session.get_one(ModelVersion, tuned), split
        )
        assert lacking == [] and np.array_equal(seen.embeddings, vectors)
        registry.promote_through_gate(
            session, paths, tuned, actor="t", reason="fine-tuned", now=_now(),
            max_class_drop=100, min_new_class_recall=0.0, override=True,
        )  # fmt: skip
    with runtime.factory() as session:
        assert registry.current_champion(session).id == tuned
        job = session.scalars(select(ScoringJob).where(ScoringJob.image_id == late)).one()
        assert job.status == "pending" and job.enqueued_at is None
        audit = session.scalars(
            select(AuditEntry).where(AuditEntry.action == "model.promote")
        ).all()[-1]
        assert audit.details["requeued_for_embedding"] == 1

    # A worker's batch embeds the late image into the champion's space and scores it there.
    outcome = process_batch(runtime, base, [late])
    assert outcome.failed == {} and outcome.scored == 1 and outcome.embedded == 1
    with runtime.factory() as session:
        space = session.get_one(EmbeddingSpace, session.get_one(ModelVersion, tuned).space_id)
        assert late in embedding_store.load(session, paths.embeddings, space)[0].tolist()
    assert registry.rescore(runtime.factory, paths, tuned) == len(ids) + 1

    # An image a worker maps into the space while a full rescoring writes is scored after it.
    with runtime.factory() as session, session.begin():
        straggler = add_image(session, runtime.store, jpeg(997, 48, 40)).id
        session.add(ScoringJob(image_id=straggler, status="done"))
        tuned_backbone = backbone_for_space(session, paths.models, space)
    real_full = registry.score_images

    def worker_meanwhile(*args, **kwargs):
        scored = real_full(*args, **kwargs)
        if len(args) == 3:  # the full rescoring: its ranking is written without the straggler
            embed_missing(runtime.factory, runtime.store, paths, tuned_backbone, [straggler])
        return scored

    monkeypatch.setattr(registry, "score_images", worker_meanwhile)
    registry.rescore(runtime.factory, paths, tuned)
    monkeypatch.setattr(registry, "score_images", real_full)
    with runtime.factory() as session:
        assert session.scalar(
            select(func.count())
            .select_from(ImageScore)
            .where(ImageScore.image_id == straggler, ImageScore.model_version_id == tuned)
        )

    # The prediction API embeds with the champion's own backbone.
    with runtime.factory() as session:
        answer = predict(
            session, paths, jpeg(5, 48, 40), backbone=BACKBONE, weights=WEIGHTS,
            max_bytes=10**7, max_pixels=10**7,
        )  # fmt: skip
    assert answer.model_version_id == tuned and len(answer.guesses) == 2

    # The other way round: the head judged against the fine-tuned champion, then restored.
    with runtime.factory() as session, session.begin():
        back = registry.evaluate_gate(
            session, paths, head.model_version_id, max_class_drop=100, min_new_class_recall=0.0
        )
        assert back.champion is not None and back.champion.model_version_id == tuned
        compared = registry.compare(session, paths, head.model_version_id, tuned)
        assert len(compared["evaluations"]) == 2 and "note" not in compared
        registry.rollback(session, head.model_version_id, actor="t", reason="back", now=_now())
    with runtime.factory() as session:
        assert registry.current_champion(session).id == head.model_version_id

    # A batch that read the old champion while a promotion committed is done again.
    with runtime.factory() as session, session.begin():
        racer = add_image(session, runtime.store, jpeg(998, 48, 40)).id
        session.add(ScoringJob(image_id=racer, status="pending"))
    real_score = pipeline.score_images

    def promoted_meanwhile(*args, **kwargs):
        with runtime.factory() as session, session.begin():
            registry.promote(session, tuned, actor="t", reason="meanwhile", now=_now())
        return real_score(*args, **kwargs)

    monkeypatch.setattr(pipeline, "score_images", promoted_meanwhile)
    process_batch(runtime, base, [racer])
    monkeypatch.setattr(pipeline, "score_images", real_score)
    with runtime.factory() as session:
        job = session.scalars(select(ScoringJob).where(ScoringJob.image_id == racer)).one()
        assert job.status == "pending" and registry.current_champion(session).id == tuned
    assert process_batch(runtime, base, [racer]).scored == 1  # now in the champion's space

    # A champion's space lacking test images: the gate says so and requeues them.
    with runtime.factory() as session, session.begin():
        test_split = registry.load_frozen_split(paths, head_version(session, head))
        gone = int(test_split.image_ids[0])
        session.execute(
            delete(ImageEmbedding).where(
                ImageEmbedding.space_id == session.get_one(ModelVersion, tuned).space_id,
                ImageEmbedding.image_id == gone,
            )
        )
        session.execute(update(ScoringJob).values(status="done"))
    with runtime.factory() as session, session.begin():
        refused = registry.evaluate_gate(
            session, paths, head.model_version_id, max_class_drop=100, min_new_class_recall=0.0
        )
    assert not refused.passed and refused.checks[0].name == "embedding_space"
    assert f"ids {gone}" in refused.checks[0].detail and refused.lacking == [gone]
    with runtime.factory() as session:  # judging alone sends nothing
        pending = select(ScoringJob).where(
            ScoringJob.image_id == gone, ScoringJob.status == "pending"
        )
        assert session.scalars(pending).first() is None
    assert registry.requeue_lacking(runtime.factory, refused) == 1
    with runtime.factory() as session:
        job = session.scalars(select(ScoringJob).where(ScoringJob.image_id == gone)).one()
        assert job.status == "pending"

    # A champion whose classifier file is gone fails the batch with that reason.
    classifier = paths.models / session.get_one(ModelVersion, tuned).settings["backbone_artifact"]
    load_tuned_backbone.cache_clear()
    classifier.rename(classifier.with_suffix(".moved"))
    failed = process_batch(runtime, base, [gone])
    assert "cannot embed for the champion" in failed.failed[gone]
    assert "is missing from the store" in failed.failed[gone]


def head_version(session, outcome) -> ModelVersion:
    return session.get_one(ModelVersion, outcome.model_version_id)


def test_a_model_kept_only_as_a_keras_file_is_refused(runtime) -> None:
    with runtime.factory() as session, session.begin():
        space = embedding_store.get_or_create_space(
            session, key=f"{BACKBONE}:none", backbone=BACKBONE, weights_id="none", dim=256
        )
        old = ModelVersion(
            space_id=space.id, class_ids=[1, 2], artifact_key="old.keras", seed=0,
            settings={"kind": FINE_TUNED}, metrics={}, status="candidate",
        )  # fmt: skip
        session.add(old)
        session.flush()
        with pytest.raises(Conflict, match=f"curation models reembed {old.id}"):
            registry.promote(session, old.id, actor="t", reason="try", now=_now())
        with pytest.raises(Conflict, match="no head over an embedding space"):
            registry.evaluate_gate(
                session, _paths(runtime), old.id, max_class_drop=5, min_new_class_recall=0.5
            )


def _as_before_session_5(runtime, model_id: int) -> dict[str, object]:
    """Turn a fresh fine-tuned model into what fine-tuning wrote before session 5:
    the .keras classifier as its artifact, the base space, pixel metrics only, and
    no fine-tuned space (its rows, vectors and head files removed)."""
    paths = _paths(runtime)
    with runtime.factory() as session, session.begin():
        model = session.get_one(ModelVersion, model_id)
        settings = dict(model.settings)
        base = embedding_store.get_or_create_space(
            session, key=settings["base_space"], backbone=BACKBONE, weights_id=WEIGHTS, dim=256
        )
        for suffix in ("", ".testset.npz", ".issues.npz"):
            (paths.models / f"{model.artifact_key}{suffix}").unlink(missing_ok=True)
        before = {
            "artifact_key": settings["backbone_artifact"],
            "pixel_test": model.metrics["test_from_pixels"],
            "space": settings["space"],
        }
        model.artifact_key = settings["backbone_artifact"]
        model.space_id = base.id
        model.settings = {
            k: v
            for k, v in settings.items()
            if k not in {"backbone_artifact", "space", "base_space"}
        }
        model.metrics = {"test": model.metrics["test_from_pixels"], "curves": {}}
        session.flush()
        embedding_store.drop_space(session, paths.embeddings, settings["space"])
    return before


def test_a_model_fine_tuned_before_its_space_existed_is_given_one(runtime, built) -> None:
    outcome = _fine_tune(runtime)
    model_id = outcome.model_version_id
    before = _as_before_session_5(runtime, model_id)
    with (
        runtime.factory() as session,
        session.begin(),
        pytest.raises(Conflict, match=f"curation models reembed {model_id}"),
    ):
        registry.promote(session, model_id, actor="t", reason="try", now=_now())
    env = _cli_env(runtime)
    runner = CliRunner()
    with runtime.factory() as session, session.begin():
        busy, _ = runs.request_run(session, trigger=RunTrigger.MANUAL, requested_by="t")
    refused = runner.invoke(main, ["models", "reembed", str(model_id)], env=env)
    assert refused.exit_code != 0 and f"training run {busy.id} is queued" in refused.output
    with runtime.factory() as session, session.begin():
        session.execute(delete(TrainingRun).where(TrainingRun.id == busy.id))
    result = runner.invoke(
        main, ["models", "reembed", str(model_id), "--json"], env=env, catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    # The same classifier file, so the same space key as the run that made it.
    assert payload["space"] == before["space"] and payload["reembedded"] == 20 + 2 * 4
    assert payload["reembedding_failed"] == 0
    paths = _paths(runtime)
    with runtime.factory() as session:
        model = session.get_one(ModelVersion, model_id)
        space = session.get_one(EmbeddingSpace, model.space_id)
        assert space.key == before["space"] and model.artifact_key.endswith(".npz")
        assert model.settings["backbone_artifact"] == before["artifact_key"]
        assert model.settings["space_given_later"] is True
        run = session.scalars(select(TrainingRun).order_by(TrainingRun.id.desc())).first()
        assert run is not None and run.status == "succeeded"
        assert run.model_version_id == model_id
        assert model.metrics["test_from_pixels"] == before["pixel_test"]
        assert model.metrics["test"] == payload["test_metrics"]
        assert model.metrics["test"]["test_images"] == built["splits"]["test"]
        # Its head over the space answers as the classifier does on the pixels.
        image = session.scalars(select(Image).order_by(Image.id)).all()[1]
        cached = load_model(session, paths, model_id)
        ids, vectors = embedding_store.load(session, paths.embeddings, cached.space)
    classifier = keras.models.load_model(paths.models / before["artifact_key"])
    pixels = decode_for_model(runtime.store.path_for(image.storage_key), size=224, box=None)
    from_pixels = np.asarray(classifier(pixels[np.newaxis].astype(np.float32), training=False))[0]
    from_cache = cached.head.predict_proba(vectors[list(ids).index(image.id)][np.newaxis])[0]
    assert np.allclose(from_cache, from_pixels, atol=0.02), (from_cache, from_pixels)

    with runtime.factory() as session, session.begin():
        registry.promote(session, model_id, actor="t", reason="given a space", now=_now())
        assert session.get_one(ModelVersion, model_id).status == "champion"
    again = runner.invoke(main, ["models", "reembed", str(model_id)], env=env)
    assert again.exit_code != 0 and "already has a head over an embedding space" in again.output
    missing = runner.invoke(main, ["models", "reembed", "999"], env=env)
    assert missing.exit_code != 0 and "no model version 999" in missing.output
    with runtime.factory() as session:  # refused before any run was requested
        assert session.scalar(select(func.count()).select_from(TrainingRun)) == 1


def test_a_failed_reembedding_leaves_the_old_model_as_it_was(runtime, built, monkeypatch) -> None:
    outcome = _fine_tune(runtime)
    model_id = outcome.model_version_id
    before = _as_before_session_5(runtime, model_id)
    with runtime.factory() as session:
        row_before = session.get_one(ModelVersion, model_id)
        snapshot_before = (row_before.artifact_key, row_before.space_id, dict(row_before.settings))

    def broken(*args, **kwargs):
        raise RuntimeError("disk full while writing the head")

    monkeypatch.setattr(datasets.finetune, "save_head", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        datasets.finetune.give_pixel_only_a_space(
            runtime.factory, _paths(runtime), runtime.store, model_id
        )
    paths = _paths(runtime)
    with runtime.factory() as session:
        row = session.get_one(ModelVersion, model_id)
        assert (row.artifact_key, row.space_id, dict(row.settings)) == snapshot_before
        assert (
            session.scalar(select(EmbeddingSpace.id).where(EmbeddingSpace.key == before["space"]))
            is None
        )
    assert (paths.models / str(before["artifact_key"])).is_file()  # the classifier stays


def test_two_reembeddings_of_one_model_record_one_and_keep_its_space(
    runtime, built, monkeypatch
) -> None:
    outcome = _fine_tune(runtime)
    model_id = outcome.model_version_id
    before = _as_before_session_5(runtime, model_id)
    paths = _paths(runtime)
    real = datasets.finetune._head_in_space
    losers: list[str] = []

    def racing(*args, **kwargs):
        head = real(*args, **kwargs)
        # The other upgrade finishes while this one holds its head, unrecorded.
        monkeypatch.setattr(datasets.finetune, "_head_in_space", real)
        datasets.finetune.give_pixel_only_a_space(runtime.factory, paths, runtime.store, model_id)
        losers.append(head.artifact)
        return head

    monkeypatch.setattr(datasets.finetune, "_head_in_space", racing)
    with pytest.raises(Conflict, match="given a space meanwhile"):
        datasets.finetune.give_pixel_only_a_space(runtime.factory, paths, runtime.store, model_id)
    with runtime.factory() as session:
        model = session.get_one(ModelVersion, model_id)
        assert session.get_one(EmbeddingSpace, model.space_id).key == before["space"]
        ids, _ = embedding_store.load(
            session, paths.embeddings, load_model(session, paths, model_id).space
        )
    assert len(ids) == 20  # the winner's space, vectors and all, survived the loser
    assert model.artifact_key != losers[0] and (paths.models / model.artifact_key).is_file()
    assert not (paths.models / losers[0]).exists()
