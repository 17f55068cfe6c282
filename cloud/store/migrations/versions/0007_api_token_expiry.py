"""api_tokens: an expiry (an expired token is refused at the edge), when it was last used,
and the tenant a token made from the portal is limited to (null: every membership of its
user, as `dockyard bootstrap` makes them)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04 18:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("api_tokens") as batch:
        batch.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("tenant_id", sa.Uuid(), nullable=True))
        batch.create_foreign_key(
            "fk_api_tokens_tenant_id", "tenants", ["tenant_id"], ["id"], ondelete="CASCADE"
        )
        batch.create_index(batch.f("ix_api_tokens_tenant_id"), ["tenant_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("api_tokens") as batch:
        batch.drop_index(batch.f("ix_api_tokens_tenant_id"))
        batch.drop_constraint("fk_api_tokens_tenant_id", type_="foreignkey")
        batch.drop_column("tenant_id")
        batch.drop_column("last_used_at")
        batch.drop_column("expires_at")
