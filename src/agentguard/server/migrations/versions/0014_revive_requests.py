"""Governed revive: revive requests waiting for approval, and their approvals.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

Timestamp = sa.DateTime(timezone=True)
PENDING = sa.text("status = 'pending'")


def upgrade() -> None:
    op.create_table(
        "agentguard_revive_requests",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("organization_id", sa.String(256), nullable=False),
        sa.Column("target_type", sa.String(16), nullable=False),
        sa.Column("target_id", sa.String(256), nullable=False),
        sa.Column("kill_switch_id", sa.String(36), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("people_required", sa.Integer, nullable=False),
        sa.Column("requested_by", sa.String(512), nullable=False),
        sa.Column("requester", sa.String(512), nullable=False),
        sa.Column("requested_at", Timestamp, nullable=False),
        sa.Column("expires_at", Timestamp, nullable=False),
        sa.Column("closed_by", sa.String(512)),
        sa.Column("closed_at", Timestamp),
        sa.Column("close_reason", sa.Text),
    )
    table = "agentguard_revive_requests"
    op.create_index(
        "agentguard_revive_requests_one_pending",
        table,
        ["organization_id", "target_type", "target_id"],
        unique=True,
        sqlite_where=PENDING,
        postgresql_where=PENDING,
    )
    op.create_index("agentguard_revive_requests_org", table, ["organization_id", "requested_at"])
    op.create_index(
        "agentguard_revive_requests_expiring",
        table,
        ["expires_at"],
        sqlite_where=PENDING,
        postgresql_where=PENDING,
    )
    op.create_table(
        "agentguard_revive_approvals",
        sa.Column("request_id", sa.String(36), primary_key=True),
        sa.Column("approver", sa.String(512), primary_key=True),
        sa.Column("approved_by", sa.String(512), nullable=False),
        sa.Column("approved_at", Timestamp, nullable=False),
        sa.Column("reason", sa.Text),
    )


def downgrade() -> None:
    op.drop_table("agentguard_revive_approvals")
    op.drop_table("agentguard_revive_requests")
