"""``curation train``: train on a dataset version, judge, promote, rescore.

Attached to the ``curation`` command through the ``curation.commands`` entry
point (pyproject.toml): training on a dataset version reads the datasets
layer, which the domain package's CLI may not import.
"""

from __future__ import annotations

import getpass
import os
import sys
from collections.abc import Callable
from typing import Any

import click
from tqdm import tqdm

from curation.cli_support import domain_errors, emit, json_option
from curation.exceptions import RejectedInput
from curation.learning.backbones import configured_space_key
from curation.learning.priority import Strategy
from curation.learning.scoring import LearningPaths
from curation.runtime import Runtime, build_runtime
from curation.settings import Settings
from datasets.training import (
    GateSettings,
    TrainingOptions,
    TrainingOutcome,
    Verdict,
    judge_and_promote,
    request_and_train,
)


def space_key(settings: Settings) -> str:
    """The embedding space of the configured backbone, without building it."""
    return configured_space_key(settings.backbone, settings.backbone_weights)


def _from_labels(
    runtime: Runtime, seed: int, promote: bool, self_training: bool, epochs: int
) -> dict[str, Any]:
    """The training of before dataset versions: every current label, promoted at once."""
    from curation.learning.scoring import load_model, score_images, train_model
    from curation.models import ModelVersion

    paths = LearningPaths.under(runtime.settings.data_dir)
    version_id = train_model(
        runtime.factory,
        paths,
        space_key=space_key(runtime.settings),
        seed=seed,
        promote=promote,
        self_training=self_training,
        epochs=epochs,
    )
    rescored = None
    if promote:
        with runtime.factory() as session:
            model = load_model(session, paths, version_id)
        rescored = score_images(runtime.factory, paths, model)
    with runtime.factory() as session:
        version = session.get_one(ModelVersion, version_id)
        metrics, classes = version.metrics, len(version.class_ids)
    return {
        "model_version": version_id,
        "classes": classes,
        "training_images": metrics["training_images"],
        "cross_validated_accuracy": round(metrics["cross_validated_accuracy"], 4),
        "label_issues_flagged": metrics["label_issues_flagged"],
        "promoted": promote,
        "rescored": rescored,
    }


def _print(outcome: TrainingOutcome) -> None:
    test = outcome.test_metrics
    click.echo(
        f"model {outcome.model_version_id} (run {outcome.run_id}) on {outcome.dataset_version}:"
        f" {outcome.classes} classes, {outcome.images['train']} train /"
        f" {outcome.images['validation']} validation / {outcome.images['test']} test images"
        f" ({outcome.seconds:.1f} s)"
    )
    if outcome.missing_embeddings:
        click.echo(
            f"  {len(outcome.missing_embeddings)} images have no embedding and were left out"
            " (run `curation score`): " + ", ".join(str(i) for i in outcome.missing_embeddings[:20])
        )
    accuracy, top5 = test["accuracy"], test["top5_accuracy"]
    ece = test["expected_calibration_error"]
    if accuracy is not None:
        click.echo(f"  frozen test split: accuracy {accuracy:.3f}, top-5 {top5:.3f}, ECE {ece:.3f}")
    if outcome.gate is not None:
        click.echo("  " + outcome.gate.summary())
    if outcome.promoted:
        click.echo(f"  promoted to champion; {outcome.rescored} images rescored")
    for note in outcome.notes:
        click.echo(f"  {note}")


@click.command("train")
@click.option("--dataset", "dataset", default="latest", show_default=True, help="v3, 3 or latest.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--no-promote", is_flag=True, help="Keep the new model a candidate.")
@click.option(
    "--from-labels",
    is_flag=True,
    help="The old training: every current label, no dataset version, no gate.",
)
@click.option("--epochs", type=click.IntRange(1, 10000), default=200, show_default=True)
@click.option(
    "--self-training/--no-self-training",
    default=True,
    show_default=True,
    help="Fit the head a second time with the unlabelled images of the space its first"
    " fit is sure of (never near duplicates of validation or test images).",
)
@click.option(
    "--fine-tune-blocks",
    type=click.IntRange(0, 100),
    default=0,
    help="Fine-tune this many top backbone blocks on the version's pixels, then embed"
    " every image with the fine-tuned backbone (its own embedding space) and judge it"
    " like any model.",
)
@click.option(
    "--augment",
    is_flag=True,
    help="Augment the train split while fine-tuning (rotation, shift, shear, zoom, flip).",
)
@click.option(
    "--trainable-batchnorm",
    is_flag=True,
    help="Train the BatchNorm layers of the fine-tuned blocks (frozen by default).",
)
@json_option
@domain_errors
def train(
    dataset: str,
    seed: int,
    no_promote: bool,
    from_labels: bool,
    epochs: int,
    self_training: bool,
    fine_tune_blocks: int,
    augment: bool,
    trainable_batchnorm: bool,
    as_json: bool,
) -> None:
    """Train a classifier head on a dataset version and promote it if it passes the gate.

    The head learns from the version's train split (cached embeddings, the
    crop to the box where there is one), stops early on its validation
    split, and is measured on its frozen test split; the promotion gate
    compares it there with the champion.
    """
    options = TrainingOptions(
        epochs=epochs,
        self_training=self_training,
        fine_tune_blocks=fine_tune_blocks,
        augment=augment,
        trainable_batchnorm=trainable_batchnorm,
    )
    options.check()
    if options.fine_tuning and from_labels:
        raise RejectedInput("--from-labels trains a head on embeddings: no --fine-tune-blocks")
    runtime = build_runtime()
    settings = runtime.settings
    if options.fine_tuning:
        tuned, verdict = _fine_tune(runtime, dataset, seed, options, no_promote)
        payload = tuned.as_dict() | {
            "gate": verdict.gate.as_dict(),
            "promoted": verdict.promoted,
            "rescored": verdict.rescored,
            "notes": tuned.notes + verdict.notes,
        }
        emit(as_json, payload, lambda: _print_fine_tuned(tuned, verdict))
        return
    if from_labels:
        payload = _from_labels(runtime, seed, not no_promote, self_training, epochs)
        emit(
            as_json,
            payload,
            lambda: click.echo(
                f"model {payload['model_version']}: {payload['classes']} classes,"
                f" {payload['training_images']} images, cross-validated accuracy"
                f" {payload['cross_validated_accuracy']:.3f}; {payload['rescored']} rescored"
            ),
        )
        return
    with _progress_bar() as bar:
        outcome = _train_with_progress(
            runtime, settings, dataset, seed, options, no_promote, _reporting_to(bar)
        )
    emit(as_json, outcome.as_dict(), lambda: _print(outcome))


def _progress_bar() -> tqdm[Any]:
    show_bar = sys.stderr.isatty() and not os.environ.get("CURATION_NO_PROGRESS")
    return tqdm(total=100, unit="%", disable=not show_bar, file=sys.stderr)


def _reporting_to(bar: tqdm[Any]) -> Callable[[float, str], None]:
    """An ``on_progress(share, message)`` that moves ``bar`` (0 to 100%) and shows the message."""

    def progress(share: float, message: str) -> None:
        bar.n = round(100 * share)
        bar.set_postfix_str(message, refresh=False)
        bar.refresh()

    return progress


def _fine_tune(
    runtime: Runtime, dataset: str, seed: int, options: TrainingOptions, no_promote: bool
) -> tuple[Any, Verdict]:
    """Fine-tune the configured backbone in a training run of its own, then judge it
    and promote it when the gate passes (unless ``no_promote``)."""
    from curation import training_runs
    from curation.exceptions import Conflict
    from curation.models import RunStatus, RunTrigger
    from datasets.finetune import fine_tune_on_version

    with runtime.factory() as session, session.begin():
        run, created = training_runs.request_run(
            session, trigger=RunTrigger.MANUAL, requested_by=f"cli:{getpass.getuser()}"
        )
        if not created and run.status == RunStatus.RUNNING.value:
            raise Conflict(f"training run {run.id} is already running: try again when it ends")
        run_id = run.id
    with _progress_bar() as bar:
        progress = _reporting_to(bar)
        settings = runtime.settings
        outcome = fine_tune_on_version(
            runtime.factory,
            LearningPaths.under(settings.data_dir),
            runtime.store,
            version_ref=dataset,
            backbone=runtime.settings.backbone,
            weights=runtime.settings.backbone_weights,
            blocks=options.fine_tune_blocks,
            trainable_batchnorm=options.trainable_batchnorm,
            augment=options.augment,
            epochs=options.epochs,
            seed=seed,
            run_id=run_id,
            on_progress=progress,
        )
    verdict = judge_and_promote(
        runtime.factory,
        LearningPaths.under(settings.data_dir),
        outcome.model_version_id,
        promote=not no_promote,
        gate=GateSettings.of(settings),
        actor=f"cli:{getpass.getuser()}",
        strategy=Strategy(settings.queue_strategy),
        random_share=settings.queue_random_share,
    )
    return outcome, verdict


def _print_fine_tuned(outcome: Any, verdict: Verdict) -> None:
    test = outcome.test_metrics
    click.echo(
        f"model {outcome.model_version_id} (run {outcome.run_id}) on {outcome.dataset_version}:"
        f" fine-tuned blocks {', '.join(outcome.unfrozen_blocks)}"
        f"{' with trainable BatchNorm' if outcome.trainable_batchnorm else ''};"
        f" {outcome.classes} classes, {outcome.images['train']} train /"
        f" {outcome.images['validation']} validation / {outcome.images['test']} test images"
        f" ({outcome.seconds:.1f} s)"
    )
    if test["accuracy"] is not None:
        click.echo(
            f"  test split: accuracy {test['accuracy']:.3f}, top-5 {test['top5_accuracy']:.3f},"
            f" ECE {test['expected_calibration_error']:.3f}"
        )
    click.echo("  " + verdict.gate.summary())
    if verdict.promoted:
        click.echo(f"  promoted to champion; {verdict.rescored} images rescored")
    for note in outcome.notes + verdict.notes:
        click.echo(f"  {note}")


def _train_with_progress(
    runtime: Runtime,
    settings: Settings,
    dataset: str,
    seed: int,
    options: TrainingOptions,
    no_promote: bool,
    progress: Callable[[float, str], None],
) -> TrainingOutcome:
    return request_and_train(
        runtime.factory,
        LearningPaths.under(settings.data_dir),
        requested_by=f"cli:{getpass.getuser()}",
        version_ref=dataset,
        space_key=space_key(settings),
        seed=seed,
        options=options,
        promote=not no_promote,
        gate=GateSettings.of(settings),
        strategy=Strategy(settings.queue_strategy),
        random_share=settings.queue_random_share,
        on_progress=progress,
    )


@click.command("reembed")
@click.argument("version_id", type=int)
@json_option
@domain_errors
def reembed_model(version_id: int, as_json: bool) -> None:
    """Give a model fine-tuned before fine-tuned backbones had their own embedding space
    one: embed the images with its backbone and keep its softmax as a head there.

    The model is unchanged (same classifier, same answers); afterwards it can be
    judged, promoted and rolled back like any other.
    """
    from curation import training_runs
    from curation.exceptions import Conflict
    from curation.models import RunTrigger
    from datasets.finetune import give_pixel_only_a_space, pixel_only_model

    runtime = build_runtime()
    # As a training run of its own: one at a time with every training (two
    # re-embeddings of one model would fill one space), and `store gc` waits.
    with runtime.factory() as session, session.begin():
        pixel_only_model(session, version_id)  # a typo is refused before any run exists
        run, created = training_runs.request_run(
            session, trigger=RunTrigger.MANUAL, requested_by=f"cli:{getpass.getuser()}"
        )
        if not created:
            raise Conflict(f"training run {run.id} is {run.status}: re-embed when it has ended")
        run_id = run.id
    with _progress_bar() as bar:
        progress = _reporting_to(bar)
        upgrade = give_pixel_only_a_space(
            runtime.factory,
            LearningPaths.under(runtime.settings.data_dir),
            runtime.store,
            version_id,
            run_id=run_id,
            on_progress=progress,
        )
    accuracy = upgrade.test_metrics.get("accuracy")
    emit(
        as_json,
        upgrade.as_dict(),
        lambda: click.echo(
            f"model {version_id}: {upgrade.reembedded} images embedded into {upgrade.space}"
            + (
                f" ({upgrade.reembedding_failed} could not be read)"
                if upgrade.reembedding_failed
                else ""
            )
            + "; test accuracy from the cached embeddings "
            + (f"{accuracy:.3f}" if accuracy is not None else "n/a")
            + f". It can now be judged and promoted: curation models promote {version_id}"
            " --reason ..."
        ),
    )
