"""Migrations: upgrade, downgrade one step, upgrade again, on both databases; models agree."""

from __future__ import annotations

import json

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
RANKING_TABLES = {"queue_order"}
REVIEW_TABLES = {"review_decisions"}
DASHBOARD_TABLES = {"queue_snapshots"}
DATASET_TABLES = {"dataset_versions", "dataset_entries", "dataset_classes", "class_changes"}
TRAINING_TABLES = {"training_runs"}
API_TABLES = {"api_tokens", "api_reports"}
LABELSTUDIO_TABLES = {"labelstudio_tasks", "labelstudio_annotations"}
EXPECTED_TABLES = (
    INITIAL_TABLES
    | LEARNING_TABLES
    | RANKING_TABLES
    | REVIEW_TABLES
    | DASHBOARD_TABLES
    | DATASET_TABLES
    | TRAINING_TABLES
    | API_TABLES
    | LABELSTUDIO_TABLES
)
# The tables after each downgrade step from head, newest first.
STEPS_DOWN = [
    INITIAL_TABLES
    | LEARNING_TABLES
    | RANKING_TABLES
    | REVIEW_TABLES
    | DASHBOARD_TABLES
    | DATASET_TABLES
    | TRAINING_TABLES
    | API_TABLES,
    INITIAL_TABLES
    | LEARNING_TABLES
    | RANKING_TABLES
    | REVIEW_TABLES
    | DASHBOARD_TABLES
    | DATASET_TABLES
    | TRAINING_TABLES,
    INITIAL_TABLES
    | LEARNING_TABLES
    | RANKING_TABLES
    | REVIEW_TABLES
    | DASHBOARD_TABLES
    | DATASET_TABLES,
    INITIAL_TABLES | LEARNING_TABLES | RANKING_TABLES | REVIEW_TABLES | DASHBOARD_TABLES,
    INITIAL_TABLES | LEARNING_TABLES | RANKING_TABLES | REVIEW_TABLES,
    INITIAL_TABLES | LEARNING_TABLES | RANKING_TABLES,
    INITIAL_TABLES | LEARNING_TABLES,
    INITIAL_TABLES,
]


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
    for expected in STEPS_DOWN:
        migrate.downgrade(url, "-1")
        assert _tables(url) == expected
    migrate.upgrade(url)
    assert _tables(url) == EXPECTED_TABLES
    migrate.check(url)


def test_sqlite_upgrade_downgrade_upgrade(tmp_path) -> None:
    _round_trip(f"sqlite:///{tmp_path / 'm.db'}")


@pytest.mark.postgres
def test_postgres_upgrade_downgrade_upgrade(empty_pg_url: str) -> None:
    _round_trip(empty_pg_url)


def _as_list(value: object) -> list[object]:
    """A list column read by raw SQL: an array on PostgreSQL, JSON text on SQLite."""
    return json.loads(value) if isinstance(value, str) else list(value)  # type: ignore[call-overload]


def _carry_rows_across_0003(url: str) -> None:
    """Queue priorities and scores written under 0002 survive 0003 and its downgrade."""
    from sqlalchemy import text

    migrate.upgrade(url, "0002")
    engine = make_engine(url)
    try:
        with engine.begin() as connection:
            for statement in (
                "INSERT INTO near_duplicate_groups (id, created_at) VALUES (1, '2026-01-01')",
                "INSERT INTO images (id, sha256, phash, width, height, format, byte_size,"
                " storage_key, stored_format, group_id, created_at) VALUES (1, 'ab', 1, 9, 9,"
                " 'jpeg', 9, 'k', 'jpeg', 1, '2026-01-01')",
                "INSERT INTO embedding_spaces (id, key, backbone, weights_id, dim, created_at)"
                " VALUES (1, 's', 'b', 'w', 2, '2026-01-01')",
                "INSERT INTO model_versions (id, space_id, class_ids, artifact_key, seed,"
                " settings, metrics, status, created_at) VALUES (4, 1, '[7, 8]', 'a', 0, '{}',"
                " '{}', 'champion', '2026-01-01')",
                "INSERT INTO image_scores (model_version_id, image_id, top_classes,"
                " top_probabilities, entropy, margin, least_confidence, novelty, created_at)"
                " VALUES (4, 1, '[8, 7]', '[0.75, 0.25]', 0.8, 0.5, 0.25, 0.5, '2026-01-01')",
                "INSERT INTO queue_items (image_id, status, priority, strategy, reasons,"
                " model_version_id, updated_at) VALUES (1, 'pending', 0.625, 'novelty',"
                " '[\"x\"]', 4, '2026-01-01')",
            ):
                connection.execute(text(statement))
        migrate.upgrade(url)
        with engine.connect() as connection:
            order = connection.execute(
                text("SELECT ranking, image_id, priority, strategy FROM queue_order")
            ).all()
            score = connection.execute(
                text("SELECT top_classes, top_probabilities FROM image_scores")
            ).one()
            ranked = connection.execute(
                text("SELECT queue_ranked_at IS NOT NULL FROM model_versions")
            ).scalar()
        assert [tuple(row) for row in order] == [(4, 1, 0.625, "novelty")]
        assert _as_list(score[0]) == [8, 7] and _as_list(score[1]) == [0.75, 0.25]
        assert ranked
        migrate.downgrade(url, "0002")
        with engine.connect() as connection:
            item = connection.execute(
                text("SELECT priority, strategy, model_version_id FROM queue_items")
            ).one()
            classes = connection.execute(text("SELECT top_classes FROM image_scores")).scalar()
        assert tuple(item) == (0.625, "novelty", 4)
        assert _as_list(classes) == [8, 7]
    finally:
        engine.dispose()


def test_sqlite_0003_carries_rows_both_ways(tmp_path) -> None:
    _carry_rows_across_0003(f"sqlite:///{tmp_path / 'm.db'}")


@pytest.mark.postgres
def test_postgres_0003_carries_rows_both_ways(empty_pg_url: str) -> None:
    _carry_rows_across_0003(empty_pg_url)
