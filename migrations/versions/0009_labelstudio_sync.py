"""label studio sync: tasks sent, annotations pulled

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-23 19:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "labelstudio_tasks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_title", sa.String(length=200), nullable=False),
        sa.Column("ls_project_id", sa.Integer(), nullable=False),
        sa.Column("ls_task_id", sa.Integer(), nullable=False),
        sa.Column("image_id", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=10), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("hold_until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("returned_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "state IN ('out', 'returned', 'timed_out')", name=op.f("ck_labelstudio_tasks_state")
        ),
        sa.ForeignKeyConstraint(
            ["image_id"], ["images.id"], name=op.f("fk_labelstudio_tasks_image_id_images")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_labelstudio_tasks")),
        sa.UniqueConstraint(
            "ls_project_id",
            "ls_task_id",
            name=op.f("uq_labelstudio_tasks_ls_project_id_ls_task_id"),
        ),
    )
    with op.batch_alter_table("labelstudio_tasks", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_labelstudio_tasks_image_id"), ["image_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_labelstudio_tasks_state"), ["state"], unique=False)

    op.create_table(
        "labelstudio_annotations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("ls_project_id", sa.Integer(), nullable=False),
        sa.Column("ls_annotation_id", sa.Integer(), nullable=False),
        sa.Column("task_id", sa.Integer(), nullable=False),
        sa.Column("label_id", sa.Integer(), nullable=True),
        sa.Column("ls_user", sa.String(length=254), nullable=False),
        sa.Column("outcome", sa.String(length=200), nullable=False),
        sa.Column("pulled_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["label_id"], ["labels.id"], name=op.f("fk_labelstudio_annotations_label_id_labels")
        ),
        sa.ForeignKeyConstraint(
            ["task_id"],
            ["labelstudio_tasks.id"],
            name=op.f("fk_labelstudio_annotations_task_id_labelstudio_tasks"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_labelstudio_annotations")),
        sa.UniqueConstraint("label_id", name=op.f("uq_labelstudio_annotations_label_id")),
        sa.UniqueConstraint(
            "ls_project_id",
            "ls_annotation_id",
            name=op.f("uq_labelstudio_annotations_ls_project_id_ls_annotation_id"),
        ),
    )
    with op.batch_alter_table("labelstudio_annotations", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_labelstudio_annotations_task_id"), ["task_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("labelstudio_annotations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_labelstudio_annotations_task_id"))
    op.drop_table("labelstudio_annotations")
    with op.batch_alter_table("labelstudio_tasks", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_labelstudio_tasks_state"))
        batch_op.drop_index(batch_op.f("ix_labelstudio_tasks_image_id"))
    op.drop_table("labelstudio_tasks")
