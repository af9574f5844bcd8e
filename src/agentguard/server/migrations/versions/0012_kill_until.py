"""Kills that end with their subject: ``until`` on a kill switch (``run_end``).

Revision ID: 0012
Revises: 0010
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("agentguard_kill_switches", sa.Column("until", sa.String(16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("agentguard_kill_switches") as batch:
        batch.drop_column("until")
