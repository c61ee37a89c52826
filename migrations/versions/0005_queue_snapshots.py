"""queue snapshots for the dashboard

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24 09:12:40.118302
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "queue_snapshots",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("taken_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.String(length=24), nullable=False),
        sa.Column("ranking", sa.Integer(), nullable=False),
        sa.Column("pending", sa.Integer(), nullable=False),
        sa.Column("claimed", sa.Integer(), nullable=False),
        sa.Column("held", sa.Integer(), nullable=False),
        sa.Column("disputed", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_queue_snapshots")),
        sa.UniqueConstraint("taken_at", "reason", name=op.f("uq_queue_snapshots_taken_at_reason")),
    )
    # The decisions-per-hour chart reads a window of recent decisions.
    op.create_index("ix_review_decisions_created_at", "review_decisions", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_review_decisions_created_at", table_name="review_decisions")
    op.drop_table("queue_snapshots")
