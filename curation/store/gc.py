"""Remove stored files that no image row references (left by a crash mid-ingest)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

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
