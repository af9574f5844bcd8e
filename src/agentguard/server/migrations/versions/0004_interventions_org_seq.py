"""Interventions by organization in insertion order: what the change stream reads.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "agentguard_interventions_org_seq", "agentguard_interventions", ["organization_id", "seq"]
    )


def downgrade() -> None:
    op.drop_index("agentguard_interventions_org_seq", table_name="agentguard_interventions")
