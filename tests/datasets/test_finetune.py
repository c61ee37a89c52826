"""Fine-tuning the top backbone blocks on a version's pixels: the block grouping of each
supported backbone, which layers train, a tiny end-to-end run (metrics, model file,
progress and cancel), the registry's refusal to promote it, and the CLI."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import keras
import numpy as np
import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from curation import registry
from curation import training_runs as runs
from curation.cli import main
from curation.exceptions import Conflict, RejectedInput
from curation.labels import append_label
from curation.learning.backbones import load_backbone
from curation.learning.scoring import LearningPaths
from curation.models import LandmarkClass, ModelVersion, RunTrigger
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


def test_fine_tune_writes_a_candidate_with_metrics_and_a_model_file(runtime, built) -> None:
    with runtime.factory() as session, session.begin():
        run, _ = runs.request_run(session, trigger=RunTrigger.MANUAL, requested_by="t")
        run_id = run.id
    messages: list[str] = []
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
        assert model.metrics["epochs_run"] == len(model.metrics["curves"]["loss"]) == 2
        assert runs.get_run(session, run_id).status == "succeeded"
        artifact = paths.models / model.artifact_key
    assert artifact.name.endswith(".keras") and artifact.is_file()

    # The saved model: the top 2 blocks (BatchNorm frozen) and the head train, nothing else.
    saved = keras.models.load_model(artifact)
    backbone = next(layer for layer in saved.layers if isinstance(layer, keras.Model))
    trainable = {layer.name for layer in backbone.layers if layer.trainable}
    assert "conv_pw_13" in trainable and "conv_dw_12" in trainable
    assert "conv_pw_11" not in trainable and "conv_pw_13_bn" not in trainable
    assert saved.get_layer("head").trainable
    pixels = np.zeros((1, 224, 224, 3), np.float32)
    assert np.allclose(np.asarray(saved(pixels)).sum(), 1.0, atol=1e-5)

    # The registry refuses to judge, promote or rescore with it; compare uses stored metrics.
    with runtime.factory() as session, session.begin():
        with pytest.raises(Conflict, match="fine-tuned"):
            registry.promote(session, model.id, actor="t", reason="try", now=_now())
        with pytest.raises(Conflict, match="re-embedding the pool"):
            registry.evaluate_gate(
                session, paths, model.id, max_class_drop=5, min_new_class_recall=0.5
            )
        with pytest.raises(Conflict, match="fine-tuned"):
            registry.promote_through_gate(
                session, paths, model.id, actor="t", reason="x", now=_now(),
                max_class_drop=5, min_new_class_recall=0.5, override=True,
            )  # fmt: skip
        with pytest.raises(Conflict, match="fine-tuned"):
            registry.rollback(session, model.id, actor="t", reason="x", now=_now())
        compared = registry.compare(session, paths, model.id, model.id)
        assert "fine-tuned" in compared["note"] and compared["a"]["accuracy"] == test["accuracy"]
    with pytest.raises(Conflict, match="fine-tuned"):
        registry.rescore(runtime.factory, paths, model.id)


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


def test_options_and_the_head_training_refuse_fine_tuning_options(runtime) -> None:
    with pytest.raises(RejectedInput, match="--fine-tune-blocks"):
        TrainingOptions(augment=True).check()
    TrainingOptions(fine_tune_blocks=2, augment=True, trainable_batchnorm=True).check()
    with pytest.raises(FineTuningNotHere, match="fine_tune_on_version"):
        train_on_version(
            runtime.factory, _paths(runtime), space_key="x:none",
            options=TrainingOptions(fine_tune_blocks=2),
        )  # fmt: skip


def test_cli_fine_tunes_and_does_not_promote(runtime, built, monkeypatch) -> None:
    """The command's wiring (the training itself is the test above, not run twice)."""
    import datasets.finetune

    calls: list[dict[str, object]] = []

    def fake(factory, paths, store, **kwargs):
        calls.append(kwargs)
        return datasets.finetune.FineTuneOutcome(
            model_version_id=7, dataset_version="v1", run_id=kwargs["run_id"], classes=2,
            images={"train": 14, "validation": 3, "test": 3}, unfrozen_blocks=["13"],
            trainable_batchnorm=kwargs["trainable_batchnorm"],
            test_metrics={"accuracy": 0.5, "top5_accuracy": 1.0,
                          "expected_calibration_error": 0.1},
            artifact_key="x.keras", notes=["re-embedding ... is not implemented"],
        )  # fmt: skip

    monkeypatch.setattr(datasets.finetune, "fine_tune_on_version", fake)
    env = {
        "CURATION_ENV": "test",
        "CURATION_DATA_DIR": str(runtime.settings.data_dir),
        "CURATION_DATABASE_URL": runtime.settings.database_url,
        "CURATION_SECRET_KEY": "cli-test-secret",
        "CURATION_BACKBONE": BACKBONE,
        "CURATION_BACKBONE_WEIGHTS": WEIGHTS,
        "CURATION_NO_PROGRESS": "1",
    }
    runner = CliRunner()
    refused = runner.invoke(main, ["train", "--augment"], env=env)
    assert refused.exit_code == 2 and "--fine-tune-blocks" in refused.output
    args = ["train", "--dataset", "v1", "--fine-tune-blocks", "1", "--trainable-batchnorm",
            "--augment", "--epochs", "3", "--seed", "5"]  # fmt: skip
    result = runner.invoke(main, [*args, "--json"], env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert payload["model_version_id"] == 7 and payload["run_id"] is not None
    (call,) = calls
    assert call["backbone"] == BACKBONE and call["weights"] == WEIGHTS
    assert (call["blocks"], call["epochs"], call["seed"], call["version_ref"]) == (1, 3, 5, "v1")
    assert call["trainable_batchnorm"] is True and call["augment"] is True
    human = runner.invoke(main, args, env=env, catch_exceptions=False)
    assert "fine-tuned blocks 13 with trainable BatchNorm" in human.output
    assert "accuracy 0.500" in human.output and "not implemented" in human.output
