"""Webhooks: registered endpoints, and the outbox that delivers events to them.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

Timestamp = sa.DateTime(timezone=True)
Sequence64 = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
PENDING = sa.text("status = 'pending'")


def upgrade() -> None:
    op.create_table(
        "agentguard_webhooks",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("organization_id", sa.String(256), nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("format", sa.String(16), nullable=False),
        sa.Column("events", sa.Text, nullable=False),
        sa.Column("secret", sa.Text),
        sa.Column("name", sa.String(256)),
        sa.Column("created_by", sa.String(512), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
    )
    op.create_index(
        "agentguard_webhooks_org", "agentguard_webhooks", ["organization_id", "created_at"]
    )
    op.create_table(
        "agentguard_webhook_deliveries",
        sa.Column("seq", Sequence64, primary_key=True, autoincrement=True),
        sa.Column("organization_id", sa.String(256), nullable=False),
        sa.Column("webhook_id", sa.String(32), nullable=False),
        sa.Column("event_id", sa.String(64), nullable=False),
        sa.Column("event", sa.String(32), nullable=False),
        sa.Column("subject", sa.String(512), nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("next_attempt_at", Timestamp),
        sa.Column("lease_until", Timestamp),
        sa.Column("leased_by", sa.String(128)),
        sa.Column("last_attempt_at", Timestamp),
        sa.Column("delivered_at", Timestamp),
        sa.Column("response_status", sa.Integer),
        sa.Column("duration_ms", sa.Float),
        sa.Column("error", sa.Text),
    )
    table = "agentguard_webhook_deliveries"
    op.create_index(
        "agentguard_webhook_deliveries_due",
        table,
        ["next_attempt_at"],
        sqlite_where=PENDING,
        postgresql_where=PENDING,
    )
    op.create_index("agentguard_webhook_deliveries_order", table, ["webhook_id", "subject", "seq"])
    op.create_index(
        "agentguard_webhook_deliveries_log", table, ["organization_id", "webhook_id", "seq"]
    )
    op.create_index(
        "agentguard_webhook_deliveries_recent",
        table,
        ["organization_id", "event", "subject", "created_at"],
    )


def downgrade() -> None:
    op.drop_table("agentguard_webhook_deliveries")
    op.drop_table("agentguard_webhooks")
