"""api tokens, api reports

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-23 18:58:39.735033
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("app", sa.String(length=100), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("secret_hash", sa.String(length=255), nullable=False),
        sa.Column("created_by", sa.String(length=80), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_tokens")),
        sa.UniqueConstraint("name", name=op.f("uq_api_tokens_name")),
        sa.UniqueConstraint("prefix", name=op.f("uq_api_tokens_prefix")),
    )
    op.create_table(
        "api_reports",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("token_id", sa.Integer(), nullable=False),
        sa.Column("app", sa.String(length=100), nullable=False),
        sa.Column("reporter_id", sa.String(length=128), nullable=True),
        sa.Column("image_id", sa.Integer(), nullable=False),
        sa.Column("source_id", sa.Integer(), nullable=False),
        sa.Column("claimed_class_id", sa.Integer(), nullable=True),
        sa.Column("reliability", sa.Float(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["claimed_class_id"],
            ["landmark_classes.id"],
            name=op.f("fk_api_reports_claimed_class_id_landmark_classes"),
        ),
        sa.ForeignKeyConstraint(
            ["image_id"], ["images.id"], name=op.f("fk_api_reports_image_id_images")
        ),
        sa.ForeignKeyConstraint(
            ["source_id"], ["image_sources.id"], name=op.f("fk_api_reports_source_id_image_sources")
        ),
        sa.ForeignKeyConstraint(
            ["token_id"], ["api_tokens.id"], name=op.f("fk_api_reports_token_id_api_tokens")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_reports")),
    )
    with op.batch_alter_table("api_reports", schema=None) as batch_op:
        batch_op.create_index(
            "ix_api_reports_app_reporter_id_created_at",
            ["app", "reporter_id", "created_at"],
            unique=False,
        )
        batch_op.create_index(batch_op.f("ix_api_reports_image_id"), ["image_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("api_reports", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_api_reports_image_id"))
        batch_op.drop_index("ix_api_reports_app_reporter_id_created_at")

    op.drop_table("api_reports")
    op.drop_table("api_tokens")
