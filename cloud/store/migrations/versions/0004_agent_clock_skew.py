"""agents.clock_skew_s: the clock skew each agent measures from the cloud's time and reports

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03 14:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("agents") as batch:
        batch.add_column(sa.Column("clock_skew_s", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("agents") as batch:
        batch.drop_column("clock_skew_s")
