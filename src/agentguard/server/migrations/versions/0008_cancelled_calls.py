"""Calls stopped in flight: how long a CANCELLED call ran, and each instance's count of them.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Interventions stored so far were refusals: NULL. Instances had stopped no call: 0.
    op.add_column("agentguard_interventions", sa.Column("ran_for_ms", sa.Float(), nullable=True))
    op.add_column(
        "agentguard_instances",
        sa.Column("cancelled", sa.BigInteger(), nullable=False, server_default=sa.text("0")),
    )


def downgrade() -> None:
    with op.batch_alter_table("agentguard_instances") as batch:
        batch.drop_column("cancelled")
    with op.batch_alter_table("agentguard_interventions") as batch:
        batch.drop_column("ran_for_ms")
