"""Rescoring N pending items from cached embeddings, new priorities written.

Synthetic: N image rows and an N x D float16 embedding file are bulk-loaded
into a fresh PostgreSQL database (COPY). A first model scores everything and
queues it (N pending items; timed as ``first_scoring_s``). A second model,
trained on another sample, then rescores the whole queue (``rescoring_s``,
the figure): embeddings read through the memmap, probabilities and scores
computed, N score rows and the new ranking of N pending items written, and
the ranking made current, then the catch-up a promotion's rescoring runs
(``registry.rescore``: images mapped meanwhile, and an anti-join of the N
scoring jobs against the space for images it lacks). Prints JSON.

    .venv/bin/python bench/rescoring.py --n 1000000
"""

from __future__ import annotations

import _path  # noqa: F401 (first: keeps bench/queue.py from shadowing the stdlib)

# isort: split

import argparse
import io
import json
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
from _postgres import IMAGE_COLUMNS, copy_text, fresh_database, image_rows
from sqlalchemy import func, select, text

from curation import migrate, registry
from curation.db import make_engine, make_session_factory
from curation.learning import embedding_store
from curation.learning.head import train_head
from curation.learning.scoring import LearningPaths, load_model, score_images
from curation.models import (
    EmbeddingSpace,
    ImageScore,
    LandmarkClass,
    ModelStatus,
    ModelVersion,
    QueueItem,
    QueueOrder,
    QueueStatus,
)
from curation.queue import current_ranking


def _model_version(session, paths, space_id, classes, vectors, owners, rng, seed) -> int:
    """A head trained on a small labelled sample, stored as a (non-champion) model version."""
    sample = rng.choice(len(vectors), size=min(len(vectors), 20 * len(classes)), replace=False)
    head, _ = train_head(
        vectors[sample], owners[sample], n_classes=len(classes), seed=seed, epochs=30
    )
    artifact = f"bench-head-{seed}.npz"
    paths.models.mkdir(parents=True, exist_ok=True)
    (paths.models / artifact).write_bytes(head.to_bytes())
    version = ModelVersion(
        space_id=space_id,
        class_ids=[c.id for c in classes],
        artifact_key=artifact,
        seed=seed,
        settings={},
        metrics={},
        status=ModelStatus.CANDIDATE.value,
    )
    session.add(version)
    session.flush()
    return version.id


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--classes", type=int, default=70)
    args = parser.parse_args()
    n, dim = args.n, args.dim

    workdir = Path(tempfile.mkdtemp(prefix="rescoring-"))
    with fresh_database() as url:
        migrate.upgrade(url)
        engine = make_engine(url)
        factory = make_session_factory(engine)
        paths = LearningPaths.under(workdir)
        rng = np.random.default_rng(0)
        centres = rng.normal(0, 3, size=(args.classes, dim)).astype(np.float32)
        owners = rng.integers(0, args.classes, size=n)
        vectors = (centres[owners] + rng.normal(0, 1, size=(n, dim))).astype(np.float16)

        started = time.perf_counter()
        with factory() as session, session.begin():
            connection = session.connection()
            connection.execute(
                text("INSERT INTO near_duplicate_groups (id, created_at) VALUES (1, now())")
            )
            copy_text(connection, "images", IMAGE_COLUMNS, image_rows(n))
            space = embedding_store.get_or_create_space(
                session, key="bench:none", backbone="bench", weights_id="none", dim=dim
            )
            first = embedding_store.space_file(paths.embeddings, space).append(vectors)
            buffer = io.StringIO()
            for i in range(n):
                buffer.write(f"{space.id}\t{i + 1}\tfull\t{first + i}\t2026-01-01\n")
            copy_text(
                connection,
                "image_embeddings",
                "space_id, image_id, crop_key, row, created_at",
                buffer,
            )
            jobs = io.StringIO()
            for i in range(n):  # every image went through the workers
                jobs.write(f"{i + 1}\tdone\t1\t2026-01-01\n")
            copy_text(connection, "scoring_jobs", "image_id, status, attempts, updated_at", jobs)
            classes = [
                LandmarkClass(slug=f"c{c}", display_name=f"Landmark {c}", status="active")
                for c in range(args.classes)
            ]
            session.add_all(classes)
            session.flush()
            version_ids = [
                _model_version(session, paths, space.id, classes, vectors, owners, rng, seed)
                for seed in (0, 1)
            ]
        setup_s = time.perf_counter() - started

        timings = []
        phases: dict[str, float] = {}
        with factory() as session:
            model = load_model(session, paths, version_ids[0])
        started = time.perf_counter()
        score_images(factory, paths, model)
        timings.append(time.perf_counter() - started)
        # The rescoring a promotion runs: the full scoring, then its catch-up (images
        # mapped meanwhile, and requeuing what the space lacks, an anti-join of the
        # N scoring jobs against the space).
        started = time.perf_counter()
        scored = registry.rescore(factory, paths, version_ids[1], timings=phases)
        timings.append(time.perf_counter() - started)
        first_scoring_s, rescoring_s = timings
        with factory() as session:
            pending = session.scalar(
                select(func.count())
                .select_from(QueueItem)
                .where(QueueItem.status == QueueStatus.PENDING.value)
            )
            ranked = session.scalar(
                select(func.count())
                .select_from(QueueOrder)
                .where(QueueOrder.ranking == current_ranking(session))
            )
            score_rows = session.scalar(
                select(func.count())
                .select_from(ImageScore)
                .where(ImageScore.model_version_id == version_ids[1])
            )
            space_dim = session.get_one(EmbeddingSpace, model.space.id).dim
        engine.dispose()
        print(
            json.dumps(
                {
                    "benchmark": "bench/rescoring.py",
                    "database": "PostgreSQL (fresh database, COPY-loaded)",
                    "items": n,
                    "embedding_dim": dim,
                    "classes": args.classes,
                    "bytes_per_cached_embedding": space_dim * 2,
                    "setup_s": round(setup_s, 1),
                    "first_scoring_s": round(first_scoring_s, 2),
                    "rescoring_s": round(rescoring_s, 2),
                    "rescoring_phases_s": phases,
                    "scored": scored,
                    "score_rows_of_new_model": score_rows,
                    "pending_items": pending,
                    "pending_items_in_new_ranking": ranked,
                    "target_s": 30,
                    "met": rescoring_s < 30 and scored == n and ranked == n,
                    "peak_rss_mib": round(
                        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
                    ),
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
