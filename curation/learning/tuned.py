"""Fine-tuned backbones as embedding spaces of their own.

A fine-tuned model (:mod:`datasets.finetune`) changes the backbone, so the
embeddings cached with the original one no longer describe what it sees.
The platform therefore treats its backbone as a new embedding space:

* the features it feeds its dense softmax (the classifier's input to its
  ``head_dropout`` layer) are the embeddings of a space keyed
  ``"<backbone>:tuned:<first 16 hex digits of the SHA-256 of the .keras
  file>"``, so two fine-tuned models never share one by accident;
* every image is embedded once more into that space (the fine-tuning run
  does it before it registers the model; workers embed later arrivals into
  the champion's space as well as the configured one);
* the dense layer becomes an ordinary :class:`~curation.learning.head.Head`
  over that space (:func:`curation.learning.head.head_from_dense`), so the
  gate, rescoring, novelty and the label-error scores work on it exactly as
  on a head trained on cached embeddings.

The whole classifier stays in the store as ``<artifact>.keras``
(``ModelVersion.settings["backbone_artifact"]``); :func:`load_tuned_backbone`
cuts the feature model out of it. Artifacts are never rewritten (their
names are random), so a process keeps a loaded one for its lifetime.
"""

from __future__ import annotations

import dataclasses
import time
from datetime import UTC
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Final

from sqlalchemy import select

from curation.exceptions import ConfigurationError
from curation.learning import embedding_store
from curation.learning.backbones import LoadedBackbone, file_digest, get_spec, passthrough
from curation.models import EmbeddingSpace, ModelVersion, RunStatus, TrainingRun

if TYPE_CHECKING:
    import keras
    from sqlalchemy.orm import Session

TUNED_PREFIX: Final = "tuned:"  # weights ids (and so space keys) of fine-tuned backbones
FEATURE_LAYER: Final = "head_dropout"  # its input is what the dense softmax reads
DENSE_LAYER: Final = "head"


def tuned_weights_id(path: Path) -> str:
    """``"tuned:<first 16 hex digits of the SHA-256 of the saved classifier>"``."""
    return f"{TUNED_PREFIX}{file_digest(path)}"


def is_tuned_space(space_key: str) -> bool:
    """Whether a space key names a fine-tuned backbone's space."""
    _, _, weights_id = space_key.partition(":")
    return weights_id.startswith(TUNED_PREFIX)


def feature_backbone(
    classifier: keras.Model, backbone_name: str, weights_id: str
) -> LoadedBackbone:
    """The classifier cut before its head: uint8 pixels -> the features its softmax reads.

    The classifier scales its own input (:func:`datasets.finetune.build_classifier`),
    so the spec's preprocessing passes pixels through.
    """
    import keras

    try:
        features = classifier.get_layer(FEATURE_LAYER).input
    except ValueError as error:
        raise ConfigurationError(
            f"the saved classifier has no {FEATURE_LAYER!r} layer: not a fine-tuned model"
            " written by this platform"
        ) from error
    model = keras.Model(classifier.inputs, features, name=f"{classifier.name}_features")
    spec = get_spec(backbone_name)
    spec = dataclasses.replace(spec, dim=int(features.shape[-1]), preprocess=passthrough)
    return LoadedBackbone(spec=spec, model=model, weights_id=weights_id)


def classifier_path(models_dir: Path, artifact: str, *, model_id: int) -> Path:
    """Where model ``model_id``'s classifier file ``artifact`` (read from the database) lies.

    Raises ``ConfigurationError`` unless it is a ``.keras`` file name inside
    the model store (no folder, no ``..``).
    """
    if Path(artifact).name != artifact or not artifact.endswith(".keras"):
        raise ConfigurationError(
            f"model {model_id} names {artifact!r} as its classifier file:"
            " expected a .keras file name inside the model store"
        )
    return models_dir / artifact


def load_classifier(path: Path) -> keras.Model:
    """The whole fine-tuned classifier saved at ``path``.

    Raises ``ConfigurationError`` when the file is gone.
    """
    import keras

    if not path.is_file():
        raise ConfigurationError(f"the fine-tuned model file {path} is missing from the store")
    # safe_mode: a .keras file with a Lambda layer's pickled code is refused.
    return keras.models.load_model(path, compile=False, safe_mode=True)


@lru_cache(maxsize=4)
def load_tuned_backbone(path: Path, backbone_name: str) -> LoadedBackbone:
    """The feature backbone of the classifier saved at ``path`` (cached per process)."""
    return feature_backbone(load_classifier(path), backbone_name, tuned_weights_id(path))


def backbone_for_space(
    session: Session, models_dir: Path, space: EmbeddingSpace
) -> LoadedBackbone | None:
    """The fine-tuned backbone that embeds into ``space``; None for an ordinary space.

    Raises ``ConfigurationError`` when the space is a fine-tuned one but no
    model version names its classifier file (or the file is gone).
    """
    if not is_tuned_space(space.key):
        return None
    for version in session.scalars(
        select(ModelVersion).where(ModelVersion.space_id == space.id).order_by(ModelVersion.id)
    ):
        artifact = str((version.settings or {}).get("backbone_artifact") or "")
        if artifact:
            path = classifier_path(models_dir, artifact, model_id=version.id)
            return load_tuned_backbone(path, space.backbone)
    raise ConfigurationError(
        f"embedding space {space.key} belongs to a fine-tuned backbone, but no model version"
        " records its classifier file"
    )


def collect_orphan_spaces(
    session: Session,
    embeddings_dir: Path,
    models_dir: Path,
    *,
    grace_seconds: float,
    dry_run: bool = False,
) -> list[str]:
    """Remove fine-tuned spaces and classifier files that no model version uses.

    What a fine-tuning run killed outright (no cancel, no error handler)
    leaves behind: a half-filled space, its vector file, its ``.keras``.
    Nothing is touched while a training run is running (the space may be its
    own, not yet recorded), nor anything written to within ``grace_seconds``
    (a run outside the run table still appending). Returns what was (or,
    with ``dry_run``, would be) removed: space keys and file names.
    """
    running = session.scalar(
        select(TrainingRun.id).where(TrainingRun.status == RunStatus.RUNNING.value).limit(1)
    )
    if running is not None:
        return []
    versions = list(session.scalars(select(ModelVersion)))
    used_spaces = {v.space_id for v in versions}
    used_files = {str((v.settings or {}).get("backbone_artifact") or "") for v in versions}
    used_files |= {v.artifact_key for v in versions}
    now = time.time()

    def idle(path: Path, since: float) -> bool:
        touched = max(since, path.stat().st_mtime if path.exists() else since)
        return now - touched >= grace_seconds

    removed: list[str] = []
    for space in session.scalars(
        select(EmbeddingSpace).where(EmbeddingSpace.weights_id.startswith(TUNED_PREFIX))
    ):
        vectors = embedding_store.space_file(embeddings_dir, space).path
        created = space.created_at
        if created.tzinfo is None:  # SQLite keeps naive UTC
            created = created.replace(tzinfo=UTC)
        if space.id in used_spaces or not idle(vectors, created.timestamp()):
            continue
        removed.append(space.key)
        if not dry_run:
            embedding_store.drop_space(session, embeddings_dir, space.key)
    if models_dir.is_dir():
        for path in sorted(models_dir.glob("*.keras")):
            if path.name not in used_files and idle(path, 0.0):
                removed.append(path.name)
                if not dry_run:
                    path.unlink(missing_ok=True)
    return removed
