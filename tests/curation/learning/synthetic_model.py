"""A champion head over generated embeddings: two classes, separated on dimension 0."""

from __future__ import annotations

import numpy as np
from sqlalchemy import select

from curation.learning.head import Head
from curation.learning.scoring import LearningPaths, LoadedModel
from curation.models import ModelStatus, ModelVersion, QueueOrder
from curation.runtime import Runtime
from curation.taxonomy import find_or_create_class
from tests.factories import embedded_images

CLASS_NAMES = ["Namsan", "Bukhansan"]


def two_class_champion(
    runtime: Runtime,
    vectors: np.ndarray,
    *,
    centroids: np.ndarray,
    own_class_distances: np.ndarray,
) -> tuple[LoadedModel, list[int]]:
    """Embed ``vectors`` (N, D) as images and make a champion whose softmax sends
    positive dimension 0 to Namsan; ``centroids`` (2, D) unit rows and the sorted
    ``own_class_distances`` of its training images decide novelty."""
    paths = LearningPaths.under(runtime.settings.data_dir)
    dimension = vectors.shape[1]
    with runtime.factory() as session, session.begin():
        classes = [find_or_create_class(session, name)[0].id for name in CLASS_NAMES]
        ids, space = embedded_images(session, paths.embeddings, vectors)
        version = ModelVersion(
            space_id=space.id,
            class_ids=classes,
            artifact_key="synthetic",
            seed=0,
            status=ModelStatus.CHAMPION.value,
        )
        session.add(version)
        session.flush()
        session.expunge(space)
        version_id = version.id
    weights = np.zeros((dimension, 2), dtype=np.float32)
    weights[0] = [3.0, -3.0]
    head = Head(
        mean=np.zeros(dimension, dtype=np.float32),
        scale=np.ones(dimension, dtype=np.float32),
        weights=weights,
        bias=np.zeros(2, dtype=np.float32),
        centroids=np.asarray(centroids, dtype=np.float32),
        own_class_distances=np.asarray(own_class_distances, dtype=np.float32),
    )
    model = LoadedModel(
        version_id=version_id,
        space=space,
        head=head,
        class_ids=classes,
        class_names=list(CLASS_NAMES),
        label_issue_ids=np.zeros(0, dtype=np.int64),
        label_issue_scores=np.zeros(0),
        label_issue_flags=np.zeros(0, dtype=bool),
    )
    return model, ids


def strategies_ranked(runtime: Runtime, ranking: int) -> dict[int, str]:
    """Image id -> the strategy that set its priority in ``ranking``."""
    with runtime.factory() as session:
        return dict(
            session.execute(
                select(QueueOrder.image_id, QueueOrder.strategy).where(
                    QueueOrder.ranking == ranking
                )
            )
            .tuples()
            .all()
        )
