"""AgentSentinel ledger entries already counted, so a batch the SDK sends again counts once.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "agentguard_ledger_entries",
        sa.Column("organization_id", sa.String(256), primary_key=True),
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("agent_id", sa.String(256)),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index(
        "agentguard_ledger_entries_received", "agentguard_ledger_entries", ["received_at"]
    )


def downgrade() -> None:
    op.drop_index("agentguard_ledger_entries_received", table_name="agentguard_ledger_entries")
    op.drop_table("agentguard_ledger_entries")
