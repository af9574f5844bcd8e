"""Drills: proof that the switch is armed, and which instances answered each one.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

Timestamp = sa.DateTime(timezone=True)
RUNNING = sa.text("status = 'running'")


def upgrade() -> None:
    op.create_table(
        "agentguard_drills",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("organization_id", sa.String(256), nullable=False),
        sa.Column("target_type", sa.String(32), nullable=False),
        sa.Column("target_id", sa.String(256), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("started_by", sa.String(512), nullable=False),
        sa.Column("started_at", Timestamp, nullable=False),
        sa.Column("deadline_at", Timestamp, nullable=False),
        sa.Column("finished_at", Timestamp),
        sa.Column("live", sa.Integer, nullable=False),
        sa.Column("acknowledged", sa.Integer, nullable=False),
        sa.Column("slowest_ms", sa.Float),
        sa.Column("slot", sa.BigInteger),
        sa.UniqueConstraint(
            "organization_id", "target_type", "target_id", "slot", name="agentguard_drills_slot"
        ),
    )
    op.create_index(
        "agentguard_drills_target",
        "agentguard_drills",
        ["organization_id", "target_type", "target_id", "started_at"],
    )
    op.create_index(
        "agentguard_drills_running",
        "agentguard_drills",
        ["organization_id", "deadline_at"],
        sqlite_where=RUNNING,
        postgresql_where=RUNNING,
    )
    op.create_table(
        "agentguard_drill_acks",
        sa.Column("organization_id", sa.String(256), primary_key=True),
        sa.Column("drill_id", sa.String(36), primary_key=True),
        sa.Column("instance_id", sa.String(256), primary_key=True),
        sa.Column("agent_id", sa.String(256)),
        sa.Column("acknowledged_at", Timestamp),
        sa.Column("latency_ms", sa.Float),
    )


def downgrade() -> None:
    op.drop_table("agentguard_drill_acks")
    op.drop_index("agentguard_drills_running", table_name="agentguard_drills")
    op.drop_index("agentguard_drills_target", table_name="agentguard_drills")
    op.drop_table("agentguard_drills")
