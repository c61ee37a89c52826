"""review decisions, consensus stages

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 17:04:25.024456
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


OLD_STATUSES = "status IN ('pending', 'claimed', 'held', 'done')"
NEW_STATUSES = "status IN ('pending', 'claimed', 'held', 'done', 'disputed')"


def upgrade() -> None:
    # queue_items first: SQLite rebuilds it, which must happen before any
    # table holds a foreign key to it.
    with op.batch_alter_table("queue_items", schema=None) as batch_op:
        batch_op.add_column(sa.Column("stage", sa.Integer(), server_default="1", nullable=False))
        batch_op.add_column(sa.Column("first_decision_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("first_reviewer_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_queue_items_first_reviewer_id_users"),
            "users",
            ["first_reviewer_id"],
            ["id"],
        )
        batch_op.drop_constraint(batch_op.f("ck_queue_items_status"), type_="check")
        batch_op.create_check_constraint("status", NEW_STATUSES)
    op.create_table(
        "review_decisions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("item_id", sa.Integer(), nullable=False),
        sa.Column("image_id", sa.Integer(), nullable=False),
        sa.Column("reviewer_id", sa.Integer(), nullable=False),
        sa.Column("stage", sa.Integer(), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("class_id", sa.Integer(), nullable=True),
        sa.Column("box_x_min", sa.Float(), nullable=True),
        sa.Column("box_y_min", sa.Float(), nullable=True),
        sa.Column("box_x_max", sa.Float(), nullable=True),
        sa.Column("box_y_max", sa.Float(), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("label_ids", sa.JSON(), nullable=False),
        sa.Column("restore", sa.JSON(), nullable=False),
        sa.Column("undone_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "action IN ('accept', 'label', 'not_landmark', 'propose', 'skip')",
            name=op.f("ck_review_decisions_action"),
        ),
        sa.CheckConstraint(
            "outcome IN ('labelled', 'second_review', 'agreed', 'disputed', 'proposed', 'skipped')",
            name=op.f("ck_review_decisions_outcome"),
        ),
        sa.ForeignKeyConstraint(
            ["class_id"],
            ["landmark_classes.id"],
            name=op.f("fk_review_decisions_class_id_landmark_classes"),
        ),
        sa.ForeignKeyConstraint(
            ["image_id"], ["images.id"], name=op.f("fk_review_decisions_image_id_images")
        ),
        sa.ForeignKeyConstraint(
            ["item_id"], ["queue_items.id"], name=op.f("fk_review_decisions_item_id_queue_items")
        ),
        sa.ForeignKeyConstraint(
            ["reviewer_id"], ["users.id"], name=op.f("fk_review_decisions_reviewer_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_review_decisions")),
    )
    op.create_index("ix_review_decisions_item_id", "review_decisions", ["item_id"])
    op.create_index("ix_review_decisions_reviewer_id_id", "review_decisions", ["reviewer_id", "id"])


def downgrade() -> None:
    # Decisions first, so that SQLite can rebuild queue_items afterwards.
    op.drop_index("ix_review_decisions_reviewer_id_id", table_name="review_decisions")
    op.drop_index("ix_review_decisions_item_id", table_name="review_decisions")
    op.drop_table("review_decisions")
    # A disputed item goes back in line: the old schema has no such state.
    op.execute("UPDATE queue_items SET status = 'pending' WHERE status = 'disputed'")
    with op.batch_alter_table("queue_items", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("ck_queue_items_status"), type_="check")
        batch_op.create_check_constraint("status", OLD_STATUSES)
        batch_op.drop_constraint(
            batch_op.f("fk_queue_items_first_reviewer_id_users"), type_="foreignkey"
        )
        batch_op.drop_column("first_reviewer_id")
        batch_op.drop_column("first_decision_id")
        batch_op.drop_column("stage")
