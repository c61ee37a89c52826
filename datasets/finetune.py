"""Fine-tune the top blocks of the backbone on a dataset version's pixels.

The default training (:mod:`datasets.training`) fits a head on cached
embeddings; this one trains on the stored images themselves, read by
:func:`datasets.tfdata.make_tf_dataset` (crop to the box where there is one,
augmentation on the train split only), in two phases:

1. the backbone frozen, the new head (dropout + softmax) trained;
2. the top ``blocks`` blocks of the backbone unfrozen and trained with the
   head at a lower learning rate.

Each phase stops early on the validation loss and restores its best
weights; classes are weighted ``balanced``; seeds are fixed
(``keras.utils.set_random_seed``). The classifier is saved whole as
``<artifact>.keras`` beside the heads. Then, since its backbone is no longer
the one whose embeddings are cached, it becomes an embedding space of its
own (:mod:`curation.learning.tuned`):

3. every image the platform has embedded, and every entry of the version
   (with the crop to its box), is embedded once more with the fine-tuned
   backbone (the longest phase on a large store: it reports progress and
   honours a cancel between chunks; the space is keyed by this run's
   classifier, and a run that stops before recording its model removes
   the space, its vectors and its files);
4. the dense softmax becomes a head over that space
   (:func:`curation.learning.head.head_from_dense`), measured on the
   version's test split from those cached embeddings (what the gate sees),
   kept with its frozen test split and label-issue scores, and written as a
   candidate :class:`~curation.models.ModelVersion` with ``settings["kind"]
   == "fine_tuned"`` and ``settings["backbone_artifact"]`` naming the
   classifier. The gate judges it against the champion like any model;
   once promoted, workers embed new images into its space too.

The classifier's own accuracy on the test pixels (through the training
input pipeline) is kept as ``metrics["test_from_pixels"]``.

Blocks (:func:`backbone_blocks`): the backbone's layers grouped by the
block their Keras name gives:

* EfficientNet: ``block<stage><letter>_...`` (``block1a`` .. ``block7a``,
  16 blocks in B0);
* MobileNet (v1): ``conv_dw_<n>_...``, ``conv_pw_<n>_...`` and
  ``conv_pad_<n>`` (blocks 1 .. 13);
* MobileNetV2: ``expanded_conv_...`` is block 0, ``block_<n>_...`` blocks
  1 .. 16 (17 blocks);
* MobileNetV3: ``expanded_conv_...`` is block 0, ``expanded_conv_<n>_...``
  blocks 1 .. 10 in the small one (11 blocks).

A layer whose name names no block (the 1x1 top convolution after the last
block, and its batch norm and activation, or MobileNetV3's auto-numbered
``re_lu_<k>`` and ``activation_<k>``) belongs to the block before it; the
layers before the first block (rescaling, the stem convolution) are the
stem, which is never unfrozen. BatchNormalization layers stay frozen (and,
Keras 3 running a frozen BatchNormalization in inference mode, keep their
moving statistics) unless ``trainable_batchnorm``.

No session stays open while Keras trains: read (the manifest and the
images' facts), close, train, write in a short new transaction.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any, Final

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from curation import training_runs
from curation.exceptions import (
    ConfigurationError,
    Conflict,
    CurationError,
    NotFound,
    RejectedInput,
)
from curation.learning import embedding_store
from curation.learning.backbones import LoadedBackbone, get_spec, load_backbone
from curation.learning.head import balanced_class_weights, head_from_dense
from curation.learning.metrics import evaluate
from curation.learning.scoring import EmbedOutcome, LearningPaths, embed_missing
from curation.learning.tuned import (
    DENSE_LAYER,
    FEATURE_LAYER,
    classifier_path,
    feature_backbone,
    load_classifier,
    tuned_weights_id,
)
from curation.models import (
    DatasetVersion,
    EmbeddingSpace,
    ModelStatus,
    ModelVersion,
    Split,
)
from curation.registry import is_pixel_only
from curation.store import LocalImageStore
from datasets.export.plan import ExportPlan, plan_export
from datasets.manifest import Manifest
from datasets.tfdata import default_augmentation, make_tf_dataset
from datasets.training import (
    _Heartbeat,
    finish_run,
    record_candidate,
    running_as,
    save_head,
    version_embeddings,
    write_label_issues,
)
from datasets.versions import find_version, load_manifest

if TYPE_CHECKING:
    import keras

logger = logging.getLogger(__name__)

FINE_TUNED: Final = "fine_tuned"  # ModelVersion.settings["kind"]
REEMBED_CHUNK = 5_000  # images per embed_missing call while re-embedding the store
STEM: Final = "stem"

# Family -> the pattern whose first group names a layer's block.
_BLOCK_PATTERNS: Final = {
    "efficientnet": re.compile(r"block(\d+[a-z])_"),
    "mobilenet": re.compile(r"conv_(?:dw|pw|pad)_(\d+)(?:_|$)"),
    "mobilenetv2": re.compile(r"(?:block_(\d+)_|(expanded_conv)_)"),
    "mobilenetv3": re.compile(r"expanded_conv_(?:(\d+)_|(?=[a-z]))"),
}


def backbone_family(name: str) -> str:
    """The block naming scheme of backbone ``name`` (a registered backbone name)."""
    canonical = get_spec(name).name
    if canonical.startswith("efficientnet"):
        return "efficientnet"
    if canonical.startswith("mobilenetv2"):
        return "mobilenetv2"
    if canonical.startswith("mobilenetv3"):
        return "mobilenetv3"
    if canonical.startswith("mobilenet_"):
        return "mobilenet"
    raise ConfigurationError(f"backbone {name}: no block grouping is defined for fine-tuning")


def _block_key(family: str, layer_name: str) -> str | None:
    match = _BLOCK_PATTERNS[family].match(layer_name)
    if match is None:
        return None
    number = next((g for g in match.groups() if g is not None and g[0].isdigit()), None)
    return number if number is not None else "0"


def group_blocks(family: str, layer_names: Sequence[str]) -> list[tuple[str, list[str]]]:
    """Layer names grouped into (block, names) in model order, the stem first.

    See the module docstring for the rules; the stem (layers before the
    first block) is the group named ``"stem"``, possibly empty.
    """
    groups: list[tuple[str, list[str]]] = [(STEM, [])]
    for name in layer_names:
        key = _block_key(family, name)
        if key is not None and key != groups[-1][0]:
            if any(key == seen for seen, _ in groups):
                raise ConfigurationError(f"block {key} of {family} is not contiguous at {name}")
            groups.append((key, []))
        groups[-1][1].append(name)
    return groups


def backbone_blocks(model: keras.Model, family: str) -> list[tuple[str, list[keras.Layer]]]:
    """The backbone's blocks, bottom to top, without the stem: (block, layers)."""
    import keras

    layers = [
        layer
        for layer in model.layers
        if not isinstance(
            layer,
            keras.layers.InputLayer
            | keras.layers.GlobalAveragePooling2D
            | keras.layers.GlobalMaxPooling2D,
        )
    ]
    by_name = {layer.name: layer for layer in layers}
    grouped = group_blocks(family, [layer.name for layer in layers])
    return [(key, [by_name[n] for n in names]) for key, names in grouped if key != STEM]


@dataclass(frozen=True)
class Augmentation:
    """Random train-split augmentation (see :func:`datasets.tfdata.default_augmentation`).

    ``rotation``: fraction of a full turn; ``shift``, ``zoom``: fractions of
    the size; ``shear``: shear factor; ``flip``: "horizontal", "vertical",
    "horizontal_and_vertical" or None. A zero or None leaves its layer out.
    """

    rotation: float = 0.05
    shift: float = 0.1
    shear: float = 0.1
    zoom: float = 0.1
    flip: str | None = "horizontal"


@dataclass
class FineTuneOutcome:
    model_version_id: int
    dataset_version: str
    run_id: int | None
    classes: int
    images: dict[str, int]
    unfrozen_blocks: list[str]
    trainable_batchnorm: bool
    test_metrics: dict[str, Any]
    artifact_key: str
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def fine_tune_on_version(
    factory: sessionmaker[Session],
    paths: LearningPaths,
    store: LocalImageStore,
    *,
    version_ref: str | int = "latest",
    backbone: str,
    weights: str,
    blocks: int,
    trainable_batchnorm: bool = False,
    augment: bool | Augmentation = False,
    crop: bool = True,
    epochs: int = 20,
    patience: int = 3,
    batch_size: int = 16,
    learning_rate: float = 1e-3,
    fine_tune_learning_rate: float = 1e-5,
    dropout: float = 0.2,
    seed: int = 0,
    run_id: int | None = None,
    on_progress: Callable[[float, str], object] | None = None,
) -> FineTuneOutcome:
    """Fine-tune ``backbone`` (with ``weights``) on ``version_ref``; write a candidate.

    ``blocks``: how many top blocks to unfreeze in phase 2 (at least 1, at
    most the backbone's block count). ``epochs`` and ``patience`` apply to
    each phase. With ``run_id``, the run is started if queued, beats its
    progress (a cancel request stops it with :class:`TrainingCancelled`; the
    head-to-fine-tune boundary always checks), and ends succeeded, failed or
    cancelled, as :func:`datasets.training.train_on_version` does.
    """
    if blocks < 1:
        raise RejectedInput("fine-tuning needs at least one backbone block (blocks >= 1)")
    if epochs < 1 or batch_size < 1:
        raise RejectedInput("epochs and batch_size must be positive")
    started = time.perf_counter()
    with running_as(factory, run_id) as pinned:
        outcome = _fine_tune(
            factory, paths, store, pinned or version_ref, backbone=backbone, weights=weights,
            blocks=blocks, trainable_batchnorm=trainable_batchnorm, augment=augment, crop=crop,
            epochs=epochs, patience=patience, batch_size=batch_size, learning_rate=learning_rate,
            fine_tune_learning_rate=fine_tune_learning_rate, dropout=dropout, seed=seed,
            run_id=run_id, on_progress=on_progress,
        )  # fmt: skip
    outcome.seconds = round(time.perf_counter() - started, 3)
    return outcome


def _read_version(
    factory: sessionmaker[Session], version_ref: str | int, run_id: int | None
) -> tuple[int, str, Manifest, ExportPlan]:
    with factory() as session, session.begin():
        if isinstance(version_ref, int):  # a run's pinned version, by id
            found = session.get(DatasetVersion, version_ref)
            if found is None:
                raise NotFound(f"dataset version id {version_ref} does not exist")
            version = found
        else:
            version = find_version(session, version_ref)
        version_id, name = version.id, f"v{version.number}"
        if run_id is not None:
            training_runs.set_dataset_version(session, run_id, version_id)
        manifest = load_manifest(session, version)
        plan = plan_export(session, manifest, source={"version": name})
    return version_id, name, manifest, plan


def _input_scaling(loaded: LoadedBackbone) -> tuple[float, float] | None:
    """The (scale, offset) that the backbone's ``preprocess`` applies to [0, 255] pixels.

    None where it passes pixels through (EfficientNet, MobileNetV3 rescale
    inside the model). Checked on probe values, so the fine-tuned model takes
    exactly the input scaling that :meth:`LoadedBackbone.embed_batch` gives.
    """
    probe = np.asarray([0.0, 127.5, 255.0], dtype=np.float32)
    out = np.asarray(loaded.spec.preprocess(probe.copy()), dtype=np.float64)
    if np.allclose(out, probe):
        return None
    scale = (out[2] - out[0]) / 255.0
    offset = out[0]
    if not np.allclose(out, probe * scale + offset, atol=1e-5):
        raise ConfigurationError(f"backbone {loaded.spec.name}: its preprocessing is not affine")
    return float(scale), float(offset)


def build_classifier(
    loaded: LoadedBackbone, n_classes: int, *, dropout: float = 0.2
) -> keras.Model:
    """Pixels in [0, 255] -> input scaling -> backbone -> (pooling) -> dropout -> softmax."""
    import keras

    size = loaded.spec.input_size
    inputs = keras.Input((size, size, 3), name="pixels")
    x = inputs
    scaling = _input_scaling(loaded)
    if scaling is not None:
        x = keras.layers.Rescaling(scaling[0], offset=scaling[1], name="input_scaling")(x)
    x = loaded.model(x)
    if len(x.shape) == 4:
        x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dropout(dropout, name=FEATURE_LAYER)(x)
    outputs = keras.layers.Dense(n_classes, activation="softmax", name=DENSE_LAYER)(x)
    return keras.Model(inputs, outputs, name=f"fine_tuned_{loaded.spec.name}")


def unfreeze_top(
    backbone_model: keras.Model, family: str, blocks: int, *, trainable_batchnorm: bool
) -> list[str]:
    """Freeze the backbone, then unfreeze its top ``blocks`` blocks; return their names.

    BatchNormalization layers in those blocks stay frozen (inference mode)
    unless ``trainable_batchnorm``.
    """
    import keras

    grouped = backbone_blocks(backbone_model, family)
    if blocks > len(grouped):
        raise RejectedInput(
            f"the backbone has {len(grouped)} blocks above its stem; cannot fine-tune {blocks}"
        )
    backbone_model.trainable = True
    for layer in backbone_model.layers:
        layer.trainable = False
    top = grouped[len(grouped) - blocks :]
    for _, layers in top:
        for layer in layers:
            is_bn = isinstance(layer, keras.layers.BatchNormalization)
            layer.trainable = trainable_batchnorm or not is_bn
    return [key for key, _ in top]


def _fine_tune(
    factory: sessionmaker[Session],
    paths: LearningPaths,
    store: LocalImageStore,
    version_ref: str | int,
    *,
    backbone: str,
    weights: str,
    blocks: int,
    trainable_batchnorm: bool,
    augment: bool | Augmentation,
    crop: bool,
    epochs: int,
    patience: int,
    batch_size: int,
    learning_rate: float,
    fine_tune_learning_rate: float,
    dropout: float,
    seed: int,
    run_id: int | None,
    on_progress: Callable[[float, str], object] | None,
) -> FineTuneOutcome:
    import keras

    family = backbone_family(backbone)
    beat = _Heartbeat(factory, run_id, epochs, on_progress)
    # Read: the manifest and the images' facts; then close.
    version_id, version_name, manifest, full_plan = _read_version(factory, version_ref, run_id)

    # The model's classes: those with train rows (slug order); test rows of
    # other classes count as misses (label -1), as train_on_version counts them.
    train_rows = full_plan.rows_in(Split.TRAIN)
    trained_slugs = sorted({full_plan.class_slugs[i] for i in full_plan.class_indices[train_rows]})
    if len(trained_slugs) < 2:
        raise CurationError(
            f"{version_name}: fine-tuning needs train-split images of at least 2 active classes,"
            f" found {len(trained_slugs)}"
        )
    id_of = {c.slug: c.class_id for c in manifest.classes}
    class_ids = [id_of[slug] for slug in trained_slugs]
    # The plan numbers classes with a row in any split; keep train and
    # validation rows of trained classes only, in the model's numbering.
    to_model = np.asarray(
        [trained_slugs.index(s) if s in trained_slugs else -1 for s in full_plan.class_slugs],
        dtype=np.int32,
    )
    plan = _restricted(full_plan, to_model, tuple(trained_slugs))
    beat.beat(0.02, f"{version_name}: {len(plan)} images, {len(class_ids)} classes", force=True)

    keras.utils.set_random_seed(seed)
    loaded = load_backbone(backbone, weights)
    size = loaded.spec.input_size
    settings = Augmentation() if augment is True else (augment or None)
    augmentation = None
    if settings is not None:
        augmentation = default_augmentation(
            rotation=settings.rotation,
            translation=settings.shift,
            shear=settings.shear,
            zoom=settings.zoom,
            flip=settings.flip,
            seed=seed,
        )
    common: dict[str, Any] = {
        "store": store,
        "image_size": (size, size),
        "crop": crop,
        "batch_size": batch_size,
    }
    train = make_tf_dataset(plan, Split.TRAIN, shuffle=True, seed=seed, augment=augmentation,
                            **common)  # fmt: skip
    n_validation = len(plan.rows_in(Split.VALIDATION))
    validation = make_tf_dataset(plan, Split.VALIDATION, shuffle=False, **common)
    weights_by_class = balanced_class_weights(
        plan.class_indices[plan.rows_in(Split.TRAIN)].astype(np.int64), len(class_ids)
    )

    model = build_classifier(loaded, len(class_ids), dropout=dropout)
    monitor = "val_loss" if n_validation else "loss"

    def fit(phase: int, rate: float, low: float, high: float) -> dict[str, list[float]]:
        model.compile(
            optimizer=keras.optimizers.Adam(rate),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )

        def on_epoch(epoch: int, logs: dict[str, Any] | None) -> None:
            loss = float((logs or {}).get(monitor, float("nan")))
            beat.beat(
                low + (high - low) * (epoch + 1) / epochs,
                f"phase {phase}, epoch {epoch + 1}: {monitor} {loss:.4f}",
            )

        history = model.fit(
            train,
            validation_data=validation if n_validation else None,
            epochs=epochs,
            class_weight=weights_by_class,
            callbacks=[
                keras.callbacks.EarlyStopping(
                    monitor=monitor, patience=patience, restore_best_weights=True
                ),
                keras.callbacks.LambdaCallback(on_epoch_end=on_epoch),
            ],
            shuffle=False,  # the train dataset shuffles itself, with the seed
            verbose=0,
        )
        return {k: [float(v) for v in values] for k, values in history.history.items()}

    # Phase 1: the backbone frozen, the head learns.
    loaded.model.trainable = False
    beat.beat(0.05, "phase 1: training the head on the frozen backbone", force=True)
    head_curves = fit(1, learning_rate, 0.05, 0.45)
    # Phase 2: the top blocks unfrozen, a lower learning rate. A cancel
    # requested during phase 1 is honoured here at the latest.
    beat.beat(0.5, f"phase 2: fine-tuning the top {blocks} backbone blocks", force=True)
    unfrozen = unfreeze_top(loaded.model, family, blocks, trainable_batchnorm=trainable_batchnorm)
    tune_curves = fit(2, fine_tune_learning_rate, 0.5, 0.7)

    beat.beat(0.7, "measuring the classifier on the test pixels", force=True)
    test = make_tf_dataset(full_plan, Split.TEST, shuffle=False, **common)
    probabilities, plan_labels = _predict(model, test, len(class_ids))
    labels = to_model[plan_labels] if len(plan_labels) else np.zeros(0, np.int64)
    pixel_metrics = evaluate(labels, probabilities, class_ids=class_ids)

    classifier_artifact = f"{uuid.uuid4().hex}.keras"
    paths.models.mkdir(parents=True, exist_ok=True)
    written = [classifier_artifact]  # removed again if the run stops before it is recorded
    try:
        model.save(paths.models / classifier_artifact)
        # Phases 3 and 4: its own embedding space, and a head over it.
        tuned = feature_backbone(
            model, loaded.spec.name, tuned_weights_id(paths.models / classifier_artifact)
        )
        embedded = _embed_into(
            factory, paths, store, tuned, loaded.space_key, manifest, beat, crop=crop
        )
        head_model = _head_in_space(
            factory, paths, tuned.space_key, loaded.space_key, manifest, model, class_ids,
            seed=seed, crop=crop, written=written,
        )  # fmt: skip
        curves = {k: head_curves.get(k, []) + tune_curves.get(k, []) for k in head_curves}
        images = head_model.images | {
            "validation_used_for_stopping": n_validation,
            "reembedded": embedded.embedded,
            "reembedding_failed": len(embedded.failed),
        }
        augmentation_settings = asdict(settings) if settings is not None else None
        beat.beat(0.97, "writing the model", force=True)
        with factory() as session, session.begin():
            space_id = embedding_store.space_id_of(session, tuned.space_key)
            version = ModelVersion(
                # Its own backbone's space (curation.learning.tuned): it scores there.
                space_id=space_id,
                class_ids=class_ids,
                artifact_key=head_model.artifact,
                seed=seed,
                settings={
                    "kind": FINE_TUNED,
                    "fine_tuned": True,
                    "backbone_artifact": classifier_artifact,
                    "space": tuned.space_key,
                    "base_space": loaded.space_key,
                    "head": "softmax",
                    "class_weights": "balanced",
                    "backbone": loaded.spec.name,
                    "weights": loaded.weights_id,
                    "blocks": blocks,
                    "unfrozen_blocks": unfrozen,
                    "trainable_batchnorm": trainable_batchnorm,
                    "augmentation": augmentation_settings,
                    "crop": crop,
                    "seed": seed,
                    "epochs": epochs,
                    "patience": patience,
                    "batch_size": batch_size,
                    "learning_rates": [learning_rate, fine_tune_learning_rate],
                    "dropout": dropout,
                    "image_size": size,
                    "dataset_version": version_name,
                    "class_ids": class_ids,
                    "class_slugs": trained_slugs,
                },
                metrics={
                    "test": head_model.test_metrics,
                    "test_from_pixels": pixel_metrics,
                    "images": images,
                    "full_image_for_box": head_model.full_image_for_box,
                    "label_issues_flagged": head_model.label_issues_flagged,
                    "label_issues_space": head_model.label_issues_space,
                    "training_images": images["train"],
                    "curves": curves,
                    "epochs_run": len(next(iter(curves.values()), [])),
                    "head_epochs_run": len(next(iter(head_curves.values()), [])),
                },
                status=ModelStatus.CANDIDATE.value,
                dataset_version_id=version_id,
                training_run_id=run_id,
            )
            model_id = record_candidate(session, version, run_id)
    except BaseException:
        # A cancel, a crash of the re-embedding or a failed write: nothing half-made
        # stays behind (the space, its vectors, the classifier and head files).
        _discard(factory, paths, written, loaded.spec.name, classifier_artifact=classifier_artifact)
        raise
    return FineTuneOutcome(
        model_version_id=model_id,
        dataset_version=version_name,
        run_id=run_id,
        classes=len(class_ids),
        images=images,
        unfrozen_blocks=unfrozen,
        trainable_batchnorm=trainable_batchnorm,
        test_metrics=head_model.test_metrics,
        artifact_key=head_model.artifact,
        notes=[
            f"embedded {embedded.embedded} images and crops with the fine-tuned backbone into"
            f" {tuned.space_key}; the gate judges it against the champion like any model"
            + (f" ({len(embedded.failed)} could not be read)" if embedded.failed else "")
        ],
    )


def _discard(
    factory: sessionmaker[Session],
    paths: LearningPaths,
    artifacts: list[str],
    backbone: str,
    *,
    classifier_artifact: str,
) -> None:
    """Remove what a fine-tuning run wrote before it could record its model: the
    fine-tuned space (rows, vectors) keyed by ``classifier_artifact``, and the
    files ``artifacts`` (a run lists its own classifier there;
    :func:`give_pixel_only_a_space` keeps the one it was given).
    """
    try:
        classifier = paths.models / classifier_artifact
        if classifier.exists():
            key = f"{backbone}:{tuned_weights_id(classifier)}"
            with factory() as session, session.begin():
                # Two upgrades of one model share its space: the one that lost
                # the race must not drop what the winner's row now points at.
                used = session.scalar(
                    select(ModelVersion.id)
                    .join(EmbeddingSpace, EmbeddingSpace.id == ModelVersion.space_id)
                    .where(EmbeddingSpace.key == key)
                    .limit(1)
                )
                if used is None:
                    embedding_store.drop_space(session, paths.embeddings, key)
        for artifact in artifacts:
            for suffix in ("", ".testset.npz", ".issues.npz"):
                (paths.models / f"{artifact}{suffix}").unlink(missing_ok=True)
    except Exception:  # the original error matters more; the leftovers are logged
        logger.exception("could not remove what a stopped fine-tuning run wrote: %s", artifacts)


@dataclass
class SpaceUpgrade:
    """What :func:`give_pixel_only_a_space` did to one model version."""

    model_version_id: int
    space: str
    reembedded: int
    reembedding_failed: int
    test_metrics: dict[str, Any]
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def give_pixel_only_a_space(
    factory: sessionmaker[Session],
    paths: LearningPaths,
    store: LocalImageStore,
    model_version_id: int,
    *,
    run_id: int | None = None,
    on_progress: Callable[[float, str], object] | None = None,
) -> SpaceUpgrade:
    """Give a model fine-tuned before fine-tuned backbones were embedding spaces (its
    artifact a ``.keras`` classifier) what a fine-tuning run now gives its model:
    phases 3 and 4, on its saved classifier.

    Every image of its base space and every entry of its dataset version are
    embedded with its backbone into the space keyed by its classifier file;
    its dense softmax becomes a head there, measured on the version's test
    split (``metrics["test"]``; the pixel figures it had move to
    ``metrics["test_from_pixels"]``). The row then points at that head and
    space, and the model can be judged, promoted and rolled back like any
    other. The model itself is unchanged: same classifier, same weights, the
    same answers.

    With ``run_id`` (what ``curation models reembed`` passes) it runs as that
    training run: one at a time with every training, cancellable between
    chunks, ended succeeded, failed or cancelled, and ``curation store gc``
    waits for it. The row is updated only if it is still pixel-only; a
    failure removes the head files it wrote and, unless a model version
    points at it, the space, and leaves the row as it was.

    Raises ``Conflict`` for a model that is not pixel-only, ``NotFound`` for
    an unknown id, ``CurationError`` when its dataset version or classifier
    file is gone.
    """
    started = time.perf_counter()
    with running_as(factory, run_id):
        upgrade = _give_space(factory, paths, store, model_version_id, run_id, on_progress)
    upgrade.seconds = round(time.perf_counter() - started, 3)
    return upgrade


def pixel_only_model(session: Session, model_version_id: int) -> ModelVersion:
    """The model version, if :func:`give_pixel_only_a_space` can give it a space.

    Raises ``NotFound``, ``Conflict`` (it has a head over a space already) or
    ``CurationError`` (no dataset version, so no test split to measure on).
    """
    version = session.get(ModelVersion, model_version_id)
    if version is None:
        raise NotFound(f"no model version {model_version_id}")
    if not is_pixel_only(version):
        raise Conflict(
            f"model {model_version_id} already has a head over an embedding space: nothing to do"
        )
    if version.dataset_version_id is None:
        raise CurationError(
            f"model {model_version_id} records no dataset version: its test split is unknown"
        )
    return version


def _give_space(
    factory: sessionmaker[Session],
    paths: LearningPaths,
    store: LocalImageStore,
    model_version_id: int,
    run_id: int | None,
    on_progress: Callable[[float, str], object] | None,
) -> SpaceUpgrade:
    with factory() as session:
        version = pixel_only_model(session, model_version_id)
        classifier_artifact = version.artifact_key
        seed = int(version.seed or 0)
        settings = dict(version.settings or {})
        class_ids = [int(c) for c in version.class_ids]
        base_space_key = session.get_one(EmbeddingSpace, version.space_id).key
        manifest = load_manifest(
            session, session.get_one(DatasetVersion, version.dataset_version_id)
        )
    path = classifier_path(paths.models, classifier_artifact, model_id=model_version_id)
    backbone = str(settings.get("backbone") or base_space_key.split(":", 1)[0])
    crop = bool(settings.get("crop", True))
    beat = _Heartbeat(factory, run_id, 1, on_progress)
    beat.beat(0.02, f"model {model_version_id}: loading its classifier", force=True)
    classifier = load_classifier(path)
    tuned = feature_backbone(classifier, backbone, tuned_weights_id(path))
    written: list[str] = []
    try:
        embedded = _embed_into(
            factory, paths, store, tuned, base_space_key, manifest, beat, crop=crop
        )
        beat.beat(0.95, "measuring its head on the test split", force=True)
        head_model = _head_in_space(
            factory, paths, tuned.space_key, base_space_key, manifest, classifier, class_ids,
            seed=seed, crop=crop, written=written,
        )  # fmt: skip
        with factory() as session, session.begin():
            row = session.get_one(ModelVersion, model_version_id, with_for_update=True)
            if row.artifact_key != classifier_artifact:
                raise Conflict(f"model {model_version_id} was given a space meanwhile")
            row.space_id = embedding_store.space_id_of(session, tuned.space_key)
            row.artifact_key = head_model.artifact
            row.settings = settings | {
                "kind": FINE_TUNED,
                "backbone_artifact": classifier_artifact,
                "space": tuned.space_key,
                "base_space": base_space_key,
                "space_given_later": True,
            }
            metrics = dict(row.metrics or {})
            row.metrics = metrics | {
                "test": head_model.test_metrics,
                "test_from_pixels": metrics.get("test"),
                "full_image_for_box": head_model.full_image_for_box,
                "label_issues_flagged": head_model.label_issues_flagged,
                "label_issues_space": head_model.label_issues_space,
                # The counts in its space (what "test" was measured on), and the pixel ones.
                "images": head_model.images
                | {
                    "reembedded": embedded.embedded,
                    "reembedding_failed": len(embedded.failed),
                    "from_pixels": metrics.get("images"),
                },
            }
            finish_run(session, run_id, model_version_id, doing="re-embedding")
    except BaseException:
        _discard(factory, paths, written, backbone, classifier_artifact=classifier_artifact)
        raise
    return SpaceUpgrade(
        model_version_id=model_version_id,
        space=tuned.space_key,
        reembedded=embedded.embedded,
        reembedding_failed=len(embedded.failed),
        test_metrics=head_model.test_metrics,
    )


def _embed_into(
    factory: sessionmaker[Session],
    paths: LearningPaths,
    store: LocalImageStore,
    tuned: LoadedBackbone,
    base_space_key: str,
    manifest: Manifest,
    beat: _Heartbeat,
    *,
    crop: bool,
) -> EmbedOutcome:
    """Embed every image of the base space and every entry of the version into ``tuned``'s space.

    ``REEMBED_CHUNK`` images at a time (each sub-chunk recorded in its own
    transaction, beating progress; a cancel stops between them, and the
    caller then removes the partial space: its key is the hash of this
    run's classifier, which no other run shares).
    """
    with factory() as session:
        ids = set(embedding_store.image_ids_in(session, base_space_key))
    ids.update(int(i) for i in manifest.image_ids)
    boxes = manifest.boxes_by_image() if crop else {}
    todo = sorted(ids)
    outcome = EmbedOutcome()
    message = f"phase 3: embedding {len(todo)} images with the fine-tuned backbone"
    beat.beat(0.72, message, force=True)
    for start in range(0, len(todo), REEMBED_CHUNK):
        chunk = todo[start : start + REEMBED_CHUNK]
        part = embed_missing(
            factory, store, paths, tuned, chunk,
            boxes={i: boxes[i] for i in chunk if i in boxes},
        )  # fmt: skip
        outcome.embedded += part.embedded
        outcome.already_cached += part.already_cached
        outcome.failed.update(part.failed)
        done = start + len(chunk)
        beat.beat(0.72 + 0.23 * done / len(todo), f"{message}: {done} done", force=True)
    return outcome


@dataclass(frozen=True)
class _SpaceHead:
    artifact: str
    test_metrics: dict[str, Any]
    images: dict[str, int]
    full_image_for_box: int
    label_issues_flagged: int
    label_issues_space: str


def _head_in_space(
    factory: sessionmaker[Session],
    paths: LearningPaths,
    space_key: str,
    base_space_key: str,
    manifest: Manifest,
    classifier: keras.Model,
    class_ids: list[int],
    *,
    seed: int,
    crop: bool,
    written: list[str],
) -> _SpaceHead:
    """The classifier's dense softmax as a head over its space, measured, kept and judged
    as :func:`datasets.training.train_on_version` keeps a head.

    The label-issue scores come from the base space where it holds the train
    split: the fine-tuned backbone learnt those very labels, wrong ones
    included, so its own out-of-sample probabilities would not be.
    """
    with factory() as session:
        space = session.get_one(EmbeddingSpace, embedding_store.space_id_of(session, space_key))
        data = version_embeddings(session, paths, space, manifest, crop=crop)
        base_id = session.scalar(
            select(EmbeddingSpace.id).where(EmbeddingSpace.key == base_space_key)
        )
        base = (
            version_embeddings(
                session, paths, session.get_one(EmbeddingSpace, base_id), manifest, crop=crop
            )
            if base_id is not None
            else None
        )
    position = {class_id: k for k, class_id in enumerate(class_ids)}
    index = np.asarray([position.get(int(c), -1) for c in data.class_ids], dtype=np.int64)
    train = (data.splits == int(Split.TRAIN)) & (index >= 0)
    test = data.splits == int(Split.TEST)
    x = data.embeddings
    if not train.any():
        raise CurationError("no train-split image could be embedded with the fine-tuned backbone")
    kernel, bias = classifier.get_layer(DENSE_LAYER).get_weights()
    head = head_from_dense(kernel, bias, x[train], index[train])
    test_metrics = evaluate(index[test], head.predict_proba(x[test]), class_ids=class_ids)
    artifact = save_head(paths, head, data, test)
    written.append(artifact)  # with its split and issues, removed if the run stops
    issues_from = data
    if base is not None:
        train_ids = set(data.image_ids[train].tolist())
        base_train = np.isin(base.image_ids, list(train_ids))
        if int(base_train.sum()) == len(train_ids):
            issues_from = base
    issue_rows = np.isin(issues_from.image_ids, data.image_ids[train])
    issue_index = np.asarray(
        [position[int(c)] for c in issues_from.class_ids[issue_rows]], dtype=np.int64
    )
    flagged = write_label_issues(
        paths, artifact, issues_from.image_ids[issue_rows], issues_from.embeddings[issue_rows],
        issue_index, len(class_ids), seed,
    )  # fmt: skip
    images = {
        "train": int(train.sum()),
        "validation": int((data.splits == int(Split.VALIDATION)).sum()),
        "test": int(test.sum()),
        "missing_embeddings": len(data.missing),
    }
    issues_space = base_space_key if issues_from is base else space_key
    return _SpaceHead(
        artifact, test_metrics, images, data.full_image_for_box, flagged, issues_space
    )


def _restricted(
    plan: ExportPlan, to_model: NDArray[np.int32], slugs: tuple[str, ...]
) -> ExportPlan:
    """The plan's train and validation rows of the model's classes, labelled in its numbering.

    Test rows are left out (the test split is read from the full plan).
    """
    mapped = to_model[plan.class_indices]
    names = dict(zip(plan.class_slugs, plan.class_names, strict=True))
    keep = np.flatnonzero((mapped >= 0) & (plan.splits != int(Split.TEST)))
    return replace(
        plan,
        class_slugs=slugs,
        class_names=tuple(names[s] for s in slugs),
        image_ids=plan.image_ids[keep],
        class_indices=mapped[keep].astype(np.int32),
        splits=plan.splits[keep],
        boxes=plan.boxes[keep],
        widths=plan.widths[keep],
        heights=plan.heights[keep],
        sha256=tuple(plan.sha256[i] for i in keep),
        storage_keys=tuple(plan.storage_keys[i] for i in keep),
        stored_formats=tuple(plan.stored_formats[i] for i in keep),
        names=tuple(plan.names[i] for i in keep),
    )


def _predict(
    model: keras.Model, dataset: Any, n_classes: int
) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """(N, C) probabilities and (N,) plan labels of every batch, in order."""
    probabilities: list[NDArray[np.float64]] = []
    labels: list[NDArray[np.int64]] = []
    for images, batch_labels in dataset:
        probabilities.append(np.asarray(model(images, training=False), dtype=np.float64))
        labels.append(np.asarray(batch_labels, dtype=np.int64))
    if not probabilities:
        return np.zeros((0, n_classes)), np.zeros(0, np.int64)
    return np.concatenate(probabilities), np.concatenate(labels)
