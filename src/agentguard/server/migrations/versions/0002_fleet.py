"""Fleet: instances and their heartbeats, kill acknowledgements, usage per agent over time.

Revision ID: 0002
Revises: 0001
Create Date: 2026-04-19
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "agentguard_instances",
        sa.Column("organization_id", sa.String(256), primary_key=True),
        sa.Column("instance_id", sa.String(256), primary_key=True),
        sa.Column("agent_id", sa.String(256)),
        sa.Column("run_id", sa.String(256)),
        sa.Column("mission_id", sa.String(256)),
        sa.Column("interval_s", sa.Float),
        sa.Column("executed", sa.BigInteger, nullable=False),
        sa.Column("refused", sa.BigInteger, nullable=False),
        sa.Column("failed", sa.BigInteger, nullable=False),
        sa.Column("cost_usd", sa.Float, nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("checkpoint", sa.String(256)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("first_seen", Timestamp, nullable=False),
        sa.Column("last_seen", Timestamp, nullable=False),
    )
    op.create_index(
        "agentguard_instances_org_agent", "agentguard_instances", ["organization_id", "agent_id"]
    )
    op.create_table(
        "agentguard_kill_acks",
        sa.Column("organization_id", sa.String(256), primary_key=True),
        sa.Column("kill_switch_id", sa.String(36), primary_key=True),
        sa.Column("instance_id", sa.String(256), primary_key=True),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("acknowledged_at", Timestamp, nullable=False),
        sa.Column("latency_ms", sa.Float),
    )
    op.create_table(
        "agentguard_usage",
        sa.Column("organization_id", sa.String(256), primary_key=True),
        sa.Column("agent_id", sa.String(256), primary_key=True),
        sa.Column("bucket", Timestamp, primary_key=True),
        sa.Column("executed", sa.BigInteger, nullable=False),
        sa.Column("refused", sa.BigInteger, nullable=False),
        sa.Column("failed", sa.BigInteger, nullable=False),
        sa.Column("cost_usd", sa.Float, nullable=False),
    )


def downgrade() -> None:
    for table in ("agentguard_usage", "agentguard_kill_acks", "agentguard_instances"):
        op.drop_table(table)
