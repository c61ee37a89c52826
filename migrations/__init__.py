"""Alembic revisions; run them with ``curation db upgrade``."""
