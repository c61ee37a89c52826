"""Migrations: upgrade, downgrade one step, upgrade again, on both databases; models agree."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect

from curation import migrate
from curation.db import make_engine

INITIAL_TABLES = {
    "images",
    "image_sources",
    "near_duplicate_groups",
    "landmark_classes",
    "class_aliases",
    "labels",
    "users",
    "audit_log",
}
LEARNING_TABLES = {
    "embedding_spaces",
    "image_embeddings",
    "model_versions",
    "image_scores",
    "queue_items",
    "scoring_jobs",
}
EXPECTED_TABLES = INITIAL_TABLES | LEARNING_TABLES


def _tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def _round_trip(url: str) -> None:
    migrate.upgrade(url)
    assert _tables(url) == EXPECTED_TABLES
    migrate.check(url)
    migrate.downgrade(url, "-1")
    assert _tables(url) == INITIAL_TABLES
    migrate.upgrade(url)
    assert _tables(url) == EXPECTED_TABLES
    migrate.check(url)


def test_sqlite_upgrade_downgrade_upgrade(tmp_path) -> None:
    _round_trip(f"sqlite:///{tmp_path / 'm.db'}")


@pytest.mark.postgres
def test_postgres_upgrade_downgrade_upgrade(empty_pg_url: str) -> None:
    _round_trip(empty_pg_url)
