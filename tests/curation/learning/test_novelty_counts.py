"""The default ranking counts novelty only while the model can be missing a landmark."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import delete

from curation.labels import append_label
from curation.learning.priority import (
    FAR_SHARE_OF_MISSING_LANDMARKS,
    NOVELTY_MIN_LABELS_PER_CLASS,
    balanced_counts_novelty,
    far_share,
)
from curation.learning.scoring import LearningPaths, score_images
from curation.models import ClassStatus, QueueOrder
from curation.runtime import Runtime
from curation.taxonomy import find_or_create_class
from tests.curation.learning.synthetic_model import strategies_ranked, two_class_champion

DIM = 16
ODD = 20


def test_novelty_counts_with_enough_labels_and_an_unlearnt_class_or_many_far_images() -> None:
    enough = NOVELTY_MIN_LABELS_PER_CLASS * 3
    few, many = 0.1, FAR_SHARE_OF_MISSING_LANDMARKS + 0.01

    def counts(images: int, unlearnt: int, share: float) -> bool:
        return balanced_counts_novelty(
            training_images=images,
            model_classes=3,
            unlearnt_classes=unlearnt,
            far_share=lambda: share,
        )

    assert counts(enough, 1, few)
    assert counts(enough, 0, many)
    assert not counts(enough, 0, few)
    assert not counts(enough - 1, 1, many)


def test_far_share_reads_the_unlabelled_rows_only() -> None:
    novelty = np.array([0.95, 0.5, 0.99, 0.1])
    assert far_share(novelty, np.array([True, True, False, False])) == 0.5
    assert far_share(novelty, np.zeros(4, dtype=bool)) == 0.0


def _pool(rng: np.random.Generator, odd_count: int) -> np.ndarray:
    """Ordinary photos of two classes (the head separates on dimension 0), then
    ``odd_count`` in a tight group the head is sure of but that lies far from
    both class centroids."""
    ordinary = 0.1 * rng.normal(size=(200, DIM))
    ordinary[:, 0] = rng.choice([-1.0, 1.0], 200) * rng.uniform(0.6, 2.0, 200)
    odd = np.zeros((odd_count, DIM))
    odd[:, 0] = 4.0
    odd[:, 2] = 40.0
    odd += 0.01 * rng.normal(size=odd.shape)
    return np.concatenate([ordinary, odd])


@pytest.mark.parametrize(
    ("third_class", "odd_count", "judged", "novelty_expected"),
    [
        (None, ODD, 0, False),  # 9% far: odd views of known landmarks
        (ClassStatus.PROPOSED, ODD, 0, False),
        (ClassStatus.RETIRED, ODD, 0, False),
        (ClassStatus.ACTIVE, ODD, 0, True),  # a landmark the model lacks
        (None, 4 * ODD, 0, True),  # 29% far: landmarks nobody has named yet
        # 60 of 260 far, but 40 of them judged "not a landmark": 9% of the rest.
        (None, 3 * ODD, 2 * ODD, False),
    ],
)
def test_rescorings_rank_far_images_by_novelty_only_when_a_landmark_can_be_missing(
    runtime: Runtime,
    third_class: ClassStatus | None,
    odd_count: int,
    judged: int,
    novelty_expected: bool,
) -> None:
    paths = LearningPaths.under(runtime.settings.data_dir)
    if third_class is not None:
        with runtime.factory() as session, session.begin():
            find_or_create_class(session, "Seoul Forest", status=third_class)
    model, ids = two_class_champion(
        runtime,
        _pool(np.random.default_rng(0), odd_count),
        centroids=np.eye(1, DIM) * np.asarray([[1.0], [-1.0]]),
        # 100 training images, all within cosine distance 0.5 of their class:
        # the ordinary photos lie within 0.3 of one, the odd group 0.9 from both.
        own_class_distances=np.linspace(0.0, 0.5, 100),
    )
    with runtime.factory() as session, session.begin():
        for image_id in ids[-odd_count : len(ids) - odd_count + judged]:
            append_label(session, image_id=image_id, class_id=None, box=None, origin="test")
    assert score_images(runtime.factory, paths, model, random_share=0.0) == len(ids)
    strategy_of = strategies_ranked(runtime, model.version_id)
    odd = [strategy_of[i] for i in ids[-odd_count:]]
    ordinary = [strategy_of[i] for i in ids[:-odd_count]]
    expected = {"novelty"} if novelty_expected else {"uncertainty"}
    assert set(ordinary) == {"uncertainty"}
    assert set(odd) == expected
    # A batch of new photos, all of them odd, is scored against the space as a
    # whole: on its own it would look 100% far and turn novelty on. (Their
    # ranking rows go first, as if they had come in after the full rescoring:
    # a partial scoring only inserts rows.)
    with runtime.factory() as session, session.begin():
        session.execute(
            delete(QueueOrder).where(
                QueueOrder.ranking == model.version_id, QueueOrder.image_id.in_(ids[-5:])
            )
        )
    assert score_images(runtime.factory, paths, model, ids[-5:], random_share=0.0) == 5
    rescored = strategies_ranked(runtime, model.version_id)
    assert {rescored[i] for i in ids[-5:]} == expected
