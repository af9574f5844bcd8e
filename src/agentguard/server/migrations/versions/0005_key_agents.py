"""API keys name the agents they speak for; checkpoint keys have room for an agent namespace.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Existing keys get NULL: they speak for no agent until re-created with agents.
    op.add_column("agentguard_api_keys", sa.Column("agents", sa.Text(), nullable=True))
    if op.get_bind().dialect.name != "sqlite":  # SQLite does not enforce VARCHAR lengths
        op.alter_column(
            "agentguard_checkpoints",
            "key",
            type_=sa.String(512),
            existing_type=sa.String(256),
            existing_nullable=False,
        )


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        op.alter_column(
            "agentguard_checkpoints",
            "key",
            type_=sa.String(256),
            existing_type=sa.String(512),
            existing_nullable=False,
        )
    with op.batch_alter_table("agentguard_api_keys") as batch:
        batch.drop_column("agents")
