"""A full rescoring's head order is what claims follow: spread out, not a burst, not random."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np

from curation.accounts import create_user
from curation.learning.scoring import LearningPaths, score_images
from curation.queue import current_ranking
from curation.review.claims import claim_next
from curation.runtime import Runtime
from tests.curation.learning.synthetic_model import strategies_ranked, two_class_champion

DIM = 16
BURST = 30


def _pool(rng: np.random.Generator) -> np.ndarray:
    """A burst of near-identical photos on the decision boundary, spread boundary
    photos, and confident ones on either side (the head separates on dimension 0)."""
    burst = np.zeros((BURST, DIM))
    burst[:, 1] = 3.0
    burst += 0.001 * rng.normal(size=burst.shape)
    spread = rng.normal(size=(200, DIM))
    spread[:, 0] = rng.uniform(-0.3, 0.3, 200)
    confident = rng.normal(size=(200, DIM))
    confident[:, 0] = rng.choice([-4.0, 4.0], 200)
    return np.concatenate([burst, spread, confident])


def test_claims_after_a_full_rescoring_are_spread_and_keep_the_control_share(
    runtime: Runtime,
) -> None:
    vectors = _pool(np.random.default_rng(0))
    model, ids = two_class_champion(
        runtime,
        vectors,
        centroids=np.eye(2, DIM) * np.asarray([[1.0], [-1.0]]),
        # Wide reference: nothing here looks novel.
        own_class_distances=np.linspace(0.0, 2.0, 100),
    )
    paths = LearningPaths.under(runtime.settings.data_dir)
    assert score_images(runtime.factory, paths, model, random_share=0.05) == len(ids)
    with runtime.factory() as session:
        assert current_ranking(session) == model.version_id
    by_priority = strategies_ranked(runtime, model.version_id)
    with runtime.factory() as session, session.begin():
        reviewer = create_user(
            session, username="reviewer", password="pw-123456-long", role="reviewer", actor="t"
        )
    claimed: list[int] = []
    for _ in range(52):  # the typical phase (12 for 2 classes) and two batches of 20
        with runtime.factory() as session, session.begin():
            item = claim_next(
                session,
                session.merge(reviewer),
                lease=timedelta(minutes=5),
                now=datetime.now(UTC),
            )
            assert item is not None
            claimed.append(item.image_id)
    burst_ids = set(ids[:BURST])
    # By priority alone the burst (most uncertain, densest) would be the first 30.
    assert sum(i in burst_ids for i in claimed) <= 4, claimed
    assert len(set(claimed)) == len(claimed)
    control = sum(by_priority[i] == "random" for i in claimed)
    assert control <= 8, control  # about 5% of 52, not the whole head
