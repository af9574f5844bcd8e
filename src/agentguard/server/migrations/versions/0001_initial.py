"""Kill switches, versions, change log, audit log, interventions, API keys and checkpoints.

Revision ID: 0001
Revises:
Create Date: 2026-04-18
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

Timestamp = sa.DateTime(timezone=True)
Sequence64 = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "agentguard_org_versions",
        sa.Column("organization_id", sa.String(256), primary_key=True),
        sa.Column("version", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "agentguard_kill_switches",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("organization_id", sa.String(256), nullable=False),
        sa.Column("target_type", sa.String(16), nullable=False),
        sa.Column("target_id", sa.String(256), nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("is_active", sa.Boolean, nullable=False),
        sa.Column("killed_by", sa.String(512), nullable=False),
        sa.Column("killed_at", Timestamp, nullable=False),
        sa.Column("revived_by", sa.String(512)),
        sa.Column("revived_at", Timestamp),
    )
    op.create_index(
        "agentguard_kill_switches_one_active",
        "agentguard_kill_switches",
        ["organization_id", "target_type", "target_id"],
        unique=True,
        sqlite_where=sa.text("is_active"),
        postgresql_where=sa.text("is_active"),
    )
    op.create_index(
        "agentguard_kill_switches_org_killed_at",
        "agentguard_kill_switches",
        ["organization_id", "is_active", "killed_at"],
    )
    op.create_table(
        "agentguard_kill_changes",
        sa.Column("organization_id", sa.String(256), primary_key=True),
        sa.Column("version", sa.BigInteger, primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("kill_switch_id", sa.String(36), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
    )
    op.create_table(
        "agentguard_audit_log",
        sa.Column("seq", Sequence64, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(36), nullable=False, unique=True),
        sa.Column("organization_id", sa.String(256), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("actor", sa.String(512), nullable=False),
        sa.Column("target_type", sa.String(16)),
        sa.Column("target_id", sa.String(256)),
        sa.Column("detail", sa.Text),
        sa.Column("request_id", sa.String(128)),
        sa.Column("version", sa.BigInteger),
        sa.Column("created_at", Timestamp, nullable=False),
    )
    op.create_index(
        "agentguard_audit_log_org_seq", "agentguard_audit_log", ["organization_id", "seq"]
    )
    op.create_table(
        "agentguard_interventions",
        sa.Column("seq", Sequence64, primary_key=True, autoincrement=True),
        sa.Column("organization_id", sa.String(256), nullable=False),
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("action", sa.String(256), nullable=False),
        sa.Column("target_type", sa.String(16), nullable=False),
        sa.Column("target_id", sa.String(256), nullable=False),
        sa.Column("kill_switch_id", sa.String(64)),
        sa.Column("killed_by", sa.String(512)),
        sa.Column("reason", sa.Text),
        sa.Column("agent_id", sa.String(256)),
        sa.Column("run_id", sa.String(256)),
        sa.Column("mission_id", sa.String(256)),
        sa.Column("instance_id", sa.String(256)),
        sa.Column("tool_call_id", sa.String(256)),
        sa.Column("occurred_at", Timestamp, nullable=False),
        sa.Column("received_at", Timestamp, nullable=False),
    )
    op.create_index(
        "agentguard_interventions_org_id",
        "agentguard_interventions",
        ["organization_id", "id"],
        unique=True,
    )
    op.create_index(
        "agentguard_interventions_org_occurred",
        "agentguard_interventions",
        ["organization_id", "occurred_at"],
    )
    op.create_index(
        "agentguard_interventions_org_target",
        "agentguard_interventions",
        ["organization_id", "target_type", "target_id"],
    )
    op.create_table(
        "agentguard_api_keys",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("organization_id", sa.String(256), nullable=False),
        sa.Column("owner", sa.String(256), nullable=False),
        sa.Column("name", sa.String(256)),
        sa.Column("scopes", sa.String(256), nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("created_by", sa.String(512), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("revoked_by", sa.String(512)),
        sa.Column("revoked_at", Timestamp),
    )
    op.create_index(
        "agentguard_api_keys_org", "agentguard_api_keys", ["organization_id", "created_at"]
    )
    op.create_table(
        "agentguard_checkpoints",
        sa.Column("organization_id", sa.String(256), primary_key=True),
        sa.Column("key", sa.String(256), primary_key=True),
        sa.Column("state_json", sa.Text, nullable=False),
        sa.Column("updated_at", Timestamp, nullable=False),
    )


def downgrade() -> None:
    for table in (
        "agentguard_checkpoints",
        "agentguard_api_keys",
        "agentguard_interventions",
        "agentguard_audit_log",
        "agentguard_kill_changes",
        "agentguard_kill_switches",
        "agentguard_org_versions",
    ):
        op.drop_table(table)
