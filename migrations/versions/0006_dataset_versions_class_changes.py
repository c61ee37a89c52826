"""dataset versions, class changes

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23 18:01:37.527279
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "dataset_entries",
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("image_id", sa.Integer(), nullable=False),
        sa.Column("class_id", sa.Integer(), nullable=True),
        sa.Column("box_x_min", sa.Float(), nullable=True),
        sa.Column("box_y_min", sa.Float(), nullable=True),
        sa.Column("box_x_max", sa.Float(), nullable=True),
        sa.Column("box_y_max", sa.Float(), nullable=True),
        sa.Column("split", sa.SmallInteger(), nullable=True),
        sa.Column("label_id", sa.Integer(), nullable=True),
        sa.CheckConstraint(
            "(class_id IS NULL AND split IS NULL) OR (class_id IS NOT NULL AND split IN (0, 1, 2))",
            name=op.f("ck_dataset_entries_tombstone_or_entry"),
        ),
        sa.PrimaryKeyConstraint("version_id", "image_id", name=op.f("pk_dataset_entries")),
    )
    op.create_table(
        "class_changes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("class_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("actor_id", sa.Integer(), nullable=True),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "kind IN ('proposed', 'activated', 'renamed', 'alias_added', 'merged', 'split', 'retired')",
            name=op.f("ck_class_changes_kind"),
        ),
        sa.ForeignKeyConstraint(
            ["actor_id"], ["users.id"], name=op.f("fk_class_changes_actor_id_users")
        ),
        sa.ForeignKeyConstraint(
            ["class_id"],
            ["landmark_classes.id"],
            name=op.f("fk_class_changes_class_id_landmark_classes"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_class_changes")),
    )
    with op.batch_alter_table("class_changes", schema=None) as batch_op:
        batch_op.create_index("ix_class_changes_class_id_id", ["class_id", "id"], unique=False)

    op.create_table(
        "dataset_versions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("parent_id", sa.Integer(), nullable=True),
        sa.Column("author_id", sa.Integer(), nullable=True),
        sa.Column("author", sa.String(length=200), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("manifest_hash", sa.String(length=64), nullable=False),
        sa.Column("item_count", sa.Integer(), nullable=False),
        sa.Column("class_count", sa.Integer(), nullable=False),
        sa.Column("split_counts", sa.JSON(), nullable=False),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("is_full", sa.Boolean(), nullable=False),
        sa.Column("depth", sa.Integer(), nullable=False),
        sa.Column("class_change_mark", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["author_id"], ["users.id"], name=op.f("fk_dataset_versions_author_id_users")
        ),
        sa.ForeignKeyConstraint(
            ["parent_id"],
            ["dataset_versions.id"],
            name=op.f("fk_dataset_versions_parent_id_dataset_versions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dataset_versions")),
        sa.UniqueConstraint("number", name=op.f("uq_dataset_versions_number")),
    )
    op.create_table(
        "dataset_classes",
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("class_id", sa.Integer(), nullable=False),
        sa.Column("slug", sa.String(length=120), nullable=False),
        sa.Column("display_name", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("aliases", sa.JSON(), nullable=False),
        sa.Column("latitude", sa.Float(), nullable=True),
        sa.Column("longitude", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(
            ["version_id"],
            ["dataset_versions.id"],
            name=op.f("fk_dataset_classes_version_id_dataset_versions"),
        ),
        sa.PrimaryKeyConstraint("version_id", "class_id", name=op.f("pk_dataset_classes")),
    )
    _forbid_changes()


# A committed dataset version never changes: the database itself refuses it.
IMMUTABLE_TABLES = ("dataset_versions", "dataset_entries", "dataset_classes")


def _forbid_changes() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE FUNCTION refuse_dataset_change() RETURNS trigger LANGUAGE plpgsql AS $$"
            " BEGIN RAISE EXCEPTION 'dataset versions are immutable: % on % refused',"
            " TG_OP, TG_TABLE_NAME; END $$"
        )
        for table in IMMUTABLE_TABLES:
            op.execute(
                f"CREATE TRIGGER {table}_immutable BEFORE UPDATE OR DELETE ON {table}"
                " FOR EACH ROW EXECUTE FUNCTION refuse_dataset_change()"
            )
        return
    for table in IMMUTABLE_TABLES:
        for operation in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER {table}_no_{operation.lower()} BEFORE {operation} ON {table}"
                f" BEGIN SELECT RAISE(ABORT, 'dataset versions are immutable:"
                f" {operation} on {table} refused'); END"
            )


def _allow_changes() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    for table in IMMUTABLE_TABLES:
        if postgres:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_immutable ON {table}")
        else:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_update")
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_delete")
    if postgres:
        op.execute("DROP FUNCTION IF EXISTS refuse_dataset_change()")


def downgrade() -> None:
    _allow_changes()
    op.drop_table("dataset_classes")
    op.drop_table("dataset_versions")
    with op.batch_alter_table("class_changes", schema=None) as batch_op:
        batch_op.drop_index("ix_class_changes_class_id_id")

    op.drop_table("class_changes")
    op.drop_table("dataset_entries")
