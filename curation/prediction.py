"""The champion model's answer for one uploaded photo: top-k landmarks, named in a language.

predict = decode (untrusted bytes, limits first) -> embed with the configured
backbone -> the champion head's probabilities. The backbone is built once per
process, on first use (building it takes seconds; the API's other endpoints
never need it), and the champion's head is cached by version id, so a
promotion is picked up on the next request.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import select
from sqlalchemy.orm import Session

from curation.exceptions import ConfigurationError, NotFound, RejectedInput
from curation.learning.backbones import LoadedBackbone, configured_space_key, load_backbone
from curation.learning.decode import UndecodableImage, decode_for_model
from curation.learning.scoring import LearningPaths, LoadedModel, champion, load_model
from curation.learning.tuned import backbone_for_space, is_tuned_space
from curation.models import ClassAlias, EmbeddingSpace, LandmarkClass
from curation.validation import decode_untrusted

MAX_TOP_K = 20
LANGUAGE_MAX = 16

_lock = threading.Lock()
_backbones: dict[tuple[str, str], LoadedBackbone] = {}
_models: dict[int, LoadedModel] = {}


def _tuned_backbone(
    session: Session, paths: LearningPaths, space: EmbeddingSpace
) -> LoadedBackbone:
    """A fine-tuned champion's backbone, loaded once per process (no query per request)."""
    with _lock:  # one load for concurrent first requests
        backbone = _backbones.get((space.key, "tuned"))
        if backbone is None:
            backbone = backbone_for_space(session, paths.models, space)
            assert backbone is not None  # a tuned space's key
            _backbones[(space.key, "tuned")] = backbone
        return backbone


def shared_backbone(name: str, weights: str) -> LoadedBackbone:
    """The process's one copy of backbone ``name`` with ``weights``, built on first use."""
    with _lock:
        backbone = _backbones.get((name, weights))
        if backbone is None:
            backbone = load_backbone(name, weights)
            _backbones[(name, weights)] = backbone
        return backbone


@dataclass(frozen=True)
class Guess:
    slug: str
    name: str
    language: str  # the language of ``name``; "und" where the display name stood in
    probability: float


@dataclass(frozen=True)
class Prediction:
    model_version_id: int
    guesses: list[Guess]


Embedder = Callable[[NDArray[np.uint8]], NDArray[np.float32]]


def _champion_model(session: Session, paths: LearningPaths) -> LoadedModel:
    version = champion(session)
    if version is None:
        raise NotFound("there is no champion model yet")
    with _lock:
        model = _models.get(version.id)
    if model is None:
        model = load_model(session, paths, version.id)
        with _lock:
            _models.clear()  # only the current champion is worth keeping
            _models[version.id] = model
    return model


def localized_names(
    session: Session, class_ids: list[int], language: str | None
) -> dict[int, tuple[str, str]]:
    """(name, language) of each class: its first alias in ``language``, else its display name."""
    names = {
        class_id: (display, "und")
        for class_id, display in session.execute(
            select(LandmarkClass.id, LandmarkClass.display_name).where(
                LandmarkClass.id.in_(class_ids)
            )
        ).tuples()
    }
    if language:
        rows = session.execute(
            select(ClassAlias.class_id, ClassAlias.name)
            .where(ClassAlias.class_id.in_(class_ids), ClassAlias.language == language)
            .order_by(ClassAlias.id.desc())
        ).tuples()
        for class_id, name in rows:  # the oldest alias wins: it is written last
            names[class_id] = (name, language)
    return names


def predict(
    session: Session,
    paths: LearningPaths,
    image_bytes: bytes,
    *,
    backbone: str,
    weights: str,
    top_k: int = 5,
    language: str | None = None,
    max_bytes: int,
    max_pixels: int,
    embedder: Embedder | None = None,
) -> Prediction:
    """The champion's ``top_k`` classes for the photo, most likely first.

    Raises RejectedInput for a bad image or argument, NotFound when there is
    no champion, ConfigurationError when the champion was trained in another
    embedding space than the configured backbone's (a fine-tuned champion
    embeds with its own backbone). ``embedder`` (tests)
    replaces the backbone: uint8 (1, s, s, 3) pixels -> float32 (1, D).
    """
    if not 1 <= top_k <= MAX_TOP_K:
        raise RejectedInput(f"top_k must be between 1 and {MAX_TOP_K}")
    if language is not None and (
        len(language) > LANGUAGE_MAX or not language.replace("-", "").isalnum()
    ):
        raise RejectedInput("lang must be a language code such as 'ko' or 'en'")
    decode_untrusted(image_bytes, max_bytes=max_bytes, max_pixels=max_pixels)
    model = _champion_model(session, paths)
    # A fine-tuned champion embeds with its own backbone (built once per process).
    tuned = is_tuned_space(model.space.key)
    if not tuned and model.space.key != configured_space_key(backbone, weights):
        raise ConfigurationError(
            f"the champion was trained on {model.space.key} embeddings, but the configured"
            f" backbone is {configured_space_key(backbone, weights)}"
        )
    if embedder is None:
        loaded = (
            _tuned_backbone(session, paths, model.space)
            if tuned
            else shared_backbone(backbone, weights)
        )
        size, embedder = loaded.spec.input_size, loaded.embed_batch
    else:
        from curation.learning.backbones import get_spec

        size = get_spec(backbone).input_size
    try:
        pixels = decode_for_model(image_bytes, size=size, box=None)
    except UndecodableImage as error:
        raise RejectedInput("the file is not a readable image") from error
    embedding = embedder(pixels[np.newaxis])
    probs = model.head.predict_proba(embedding)[0]
    k = min(top_k, len(probs))
    order = np.argsort(-probs, kind="stable")[:k]
    chosen = [model.class_ids[i] for i in order]
    names = localized_names(session, chosen, language)
    slugs = dict(
        session.execute(
            select(LandmarkClass.id, LandmarkClass.slug).where(LandmarkClass.id.in_(chosen))
        )
        .tuples()
        .all()
    )
    guesses = [
        Guess(
            slug=slugs.get(class_id, f"class-{class_id}"),
            name=names.get(class_id, (f"class {class_id}", "und"))[0],
            language=names.get(class_id, ("", "und"))[1],
            probability=float(probs[i]),
        )
        for class_id, i in zip(chosen, order, strict=True)
    ]
    return Prediction(model_version_id=model.version_id, guesses=guesses)
