"""vm_sightings.life_since: when the sighting's life state became what it is, so the
dashboard can say how long a VM has been off or archived (the energy it gave back)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04 22:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("vm_sightings") as batch:
        batch.add_column(sa.Column("life_since", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("vm_sightings") as batch:
        batch.drop_column("life_since")
