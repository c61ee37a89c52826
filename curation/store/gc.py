"""Remove stored files that no image row references (left by a crash mid-ingest)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from curation.models import Image
from curation.store.base import ImageStore

# A file younger than this may belong to an ingestion that has not committed yet.
DEFAULT_GRACE_SECONDS = 3600.0


def collect_orphans(
    session: Session,
    store: ImageStore,
    *,
    grace_seconds: float = DEFAULT_GRACE_SECONDS,
    dry_run: bool = False,
) -> list[str]:
    referenced = set(session.scalars(select(Image.storage_key)).all())
    orphans = [
        key
        for key in store.keys()  # noqa: SIM118  (a store, not a dict)
        if key not in referenced and store.age_seconds(key) >= grace_seconds
    ]
    if not dry_run:
        for key in orphans:
            store.delete(key)
    return orphans


def collect_everything(
    factory: sessionmaker[Session],
    store: ImageStore,
    data_dir: Path,
    *,
    grace_seconds: float = DEFAULT_GRACE_SECONDS,
    dry_run: bool = False,
) -> tuple[list[str], list[str]]:
    """Orphan image files (:func:`collect_orphans`), then what a fine-tuning run killed
    outright left (:func:`curation.learning.tuned.collect_orphan_spaces`): the
    collection ``curation store gc`` and the beat's task both run.

    Returns (image files, fine-tuning leftovers), removed or, with ``dry_run``,
    that would be.
    """
    # Imported here: the learning layer reaches the store package at import time.
    from curation.learning.scoring import LearningPaths
    from curation.learning.tuned import collect_orphan_spaces

    with factory() as session:
        files = collect_orphans(session, store, grace_seconds=grace_seconds, dry_run=dry_run)
    paths = LearningPaths.under(data_dir)
    with factory() as session, session.begin():
        leftovers = collect_orphan_spaces(
            session, paths.embeddings, paths.models, grace_seconds=grace_seconds, dry_run=dry_run
        )
    return files, leftovers
