"""Metric counters and each server process's open streams, for ``GET /metrics``.

The counters start from what the database already holds: interventions by type, rules' kills
and observations from the audit log, and the latencies of stored acknowledgements.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-08
"""

from __future__ import annotations

import json
from collections import Counter

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

Timestamp = sa.DateTime(timezone=True)

# As agentguard/server/store/counters.py names and encodes them at this revision.
_INTERVENTIONS = "agentguard_interventions"
_RULE_TRIPS = "agentguard_rule_trips"
_ACK_BUCKET = "agentguard_ack_latency_seconds_bucket"
_ACK_SUM = "agentguard_ack_latency_seconds_sum"
_ACK_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                30.0, 60.0)  # fmt: skip


def _labels(**labels: str) -> str:
    return json.dumps(labels, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def upgrade() -> None:
    counters = op.create_table(
        "agentguard_metric_counters",
        sa.Column("organization_id", sa.String(256), primary_key=True),
        sa.Column("metric", sa.String(128), primary_key=True),
        sa.Column("labels", sa.String(1024), primary_key=True),
        sa.Column("shard", sa.Integer(), primary_key=True),
        sa.Column("value", sa.Float(), nullable=False),
    )
    op.create_table(
        "agentguard_open_streams",
        sa.Column("process_id", sa.String(128), primary_key=True),
        sa.Column("organization_id", sa.String(256), primary_key=True),
        sa.Column("streams", sa.Integer(), nullable=False),
        sa.Column("seen_at", Timestamp, nullable=False),
    )
    conn = op.get_bind()
    values: Counter[tuple[str, str, str]] = Counter()
    for org, kind, n in conn.execute(
        sa.text(
            "SELECT organization_id, type, COUNT(*) FROM agentguard_interventions "
            "GROUP BY organization_id, type"
        )
    ):
        values[org, _INTERVENTIONS, _labels(type=kind)] += n
    for org, action, actor, n in conn.execute(
        sa.text(
            "SELECT organization_id, action, actor, COUNT(*) FROM agentguard_audit_log "
            "WHERE action IN ('kill', 'rule.observed') AND actor LIKE 'rule:_%' "
            "GROUP BY organization_id, action, actor"
        )
    ):
        mode = "enforce" if action == "kill" else "observe"
        values[org, _RULE_TRIPS, _labels(rule=actor[len("rule:") :], mode=mode)] += n
    bounds = [repr(float(b)) for b in _ACK_BUCKETS] + ["+Inf"]
    for org, latency_ms in conn.execute(
        sa.text(
            "SELECT organization_id, latency_ms FROM agentguard_kill_acks "
            "WHERE latency_ms IS NOT NULL"
        )
    ):
        seconds = latency_ms / 1000
        index = next((i for i, b in enumerate(_ACK_BUCKETS) if seconds <= b), len(_ACK_BUCKETS))
        values[org, _ACK_BUCKET, _labels(le=bounds[index])] += 1
        values[org, _ACK_SUM, _labels()] += seconds
    if values:
        op.bulk_insert(
            counters,
            [
                {
                    "organization_id": org,
                    "metric": metric,
                    "labels": labels,
                    "shard": 0,
                    "value": float(value),
                }  # fmt: skip
                for (org, metric, labels), value in sorted(values.items())
            ],
        )


def downgrade() -> None:
    op.drop_table("agentguard_open_streams")
    op.drop_table("agentguard_metric_counters")
