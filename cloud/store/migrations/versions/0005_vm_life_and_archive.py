"""vm_sightings: each VM's life state and archive record; vm_restore_mails: the mail a
restore's end sends its requester, marked once sent

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04 06:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("vm_sightings") as batch:
        batch.add_column(
            sa.Column("life_state", sa.String(length=16), nullable=False, server_default="running")
        )
        batch.add_column(sa.Column("life_reason", sa.String(length=500), nullable=True))
        batch.add_column(sa.Column("archived_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("archive_snapshot", sa.String(length=200), nullable=True))
        batch.add_column(sa.Column("archive_repository", sa.String(length=500), nullable=True))
        batch.add_column(sa.Column("size_before", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("stored_bytes", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("restore_count", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("restored_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("vm_sightings") as batch:
        batch.alter_column("life_state", server_default=None)
    op.create_table(
        "vm_restore_mails",
        sa.Column("command_id", sa.Uuid(), nullable=False),
        sa.Column("requested_by", sa.String(length=320), nullable=False),
        sa.Column("vm_name", sa.String(length=200), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(["command_id"], ["commands.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("command_id"),
    )
    with op.batch_alter_table("vm_restore_mails") as batch:
        batch.create_index(batch.f("ix_vm_restore_mails_tenant_id"), ["tenant_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("vm_restore_mails") as batch:
        batch.drop_index(batch.f("ix_vm_restore_mails_tenant_id"))
    op.drop_table("vm_restore_mails")
    with op.batch_alter_table("vm_sightings") as batch:
        for name in (
            "restored_at",
            "restore_count",
            "stored_bytes",
            "size_before",
            "archive_repository",
            "archive_snapshot",
            "archived_at",
            "life_reason",
            "life_state",
        ):
            batch.drop_column(name)
