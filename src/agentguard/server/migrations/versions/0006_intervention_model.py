"""Interventions record the model of a refused model call.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Existing interventions were all tool calls: NULL.
    op.add_column("agentguard_interventions", sa.Column("model", sa.String(256), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("agentguard_interventions") as batch:
        batch.drop_column("model")
