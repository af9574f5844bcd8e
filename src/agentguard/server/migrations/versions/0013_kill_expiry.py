"""Time-limited kills: when an active kill expires (the server then revives it); and the
labels of each instance (what selector kills match).

Revision ID: 0013
Revises: 0010
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

EXPIRING = sa.text("is_active AND expires_at IS NOT NULL")


def upgrade() -> None:
    # Kills stored so far last until revived: NULL.
    op.add_column(
        "agentguard_kill_switches",
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index(
        "agentguard_kill_switches_expiring",
        "agentguard_kill_switches",
        ["expires_at"],
        sqlite_where=EXPIRING,
        postgresql_where=EXPIRING,
    )
    op.add_column("agentguard_instances", sa.Column("labels", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("agentguard_instances") as batch:
        batch.drop_column("labels")
    op.drop_index("agentguard_kill_switches_expiring", table_name="agentguard_kill_switches")
    with op.batch_alter_table("agentguard_kill_switches") as batch:
        batch.drop_column("expires_at")
