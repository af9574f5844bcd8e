"""The database schema, as SQLAlchemy Core tables (the migrations create exactly these)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)

metadata = MetaData()

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT identity.
Sequence64 = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend (SQLite stores it naive, in UTC)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)  # type: ignore[no-any-return]
        return value.astimezone(timezone.utc)  # type: ignore[no-any-return]


org_versions = Table(
    "agentguard_org_versions",
    metadata,
    Column("organization_id", String(256), primary_key=True),
    Column("version", BigInteger, nullable=False),
)

kill_switches = Table(
    "agentguard_kill_switches",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("organization_id", String(256), nullable=False),
    Column("target_type", String(16), nullable=False),
    Column("target_id", String(256), nullable=False),
    Column("reason", Text),
    Column("is_active", Boolean, nullable=False),
    Column("killed_by", String(512), nullable=False),
    Column("killed_at", UTCDateTime, nullable=False),
    Column("revived_by", String(512)),
    Column("revived_at", UTCDateTime),
    Column("expires_at", UTCDateTime),  # a time-limited kill: when the server revives it
    # What ends the kill besides a revive: "run_end" (a run kill: the run finished); or NULL.
    Column("until", String(16)),
    # At most one active kill switch per (organization, target): the database enforces it.
    Index(
        "agentguard_kill_switches_one_active",
        "organization_id",
        "target_type",
        "target_id",
        unique=True,
        sqlite_where=text("is_active"),
        postgresql_where=text("is_active"),
    ),
    Index("agentguard_kill_switches_org_killed_at", "organization_id", "is_active", "killed_at"),
    # The expiry loop reads the active time-limited kills, soonest first.
    Index(
        "agentguard_kill_switches_expiring",
        "expires_at",
        sqlite_where=text("is_active AND expires_at IS NOT NULL"),
        postgresql_where=text("is_active AND expires_at IS NOT NULL"),
    ),
)

kill_changes = Table(
    "agentguard_kill_changes",
    metadata,
    Column("organization_id", String(256), primary_key=True),
    Column("version", BigInteger, primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("kill_switch_id", String(36), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

audit_log = Table(
    "agentguard_audit_log",
    metadata,
    Column("seq", Sequence64, primary_key=True, autoincrement=True),
    Column("id", String(36), nullable=False, unique=True),
    Column("organization_id", String(256), nullable=False),
    Column("action", String(32), nullable=False),
    Column("actor", String(512), nullable=False),
    Column("target_type", String(16)),
    Column("target_id", String(256)),
    Column("detail", Text),
    Column("request_id", String(128)),
    Column("version", BigInteger),
    Column("created_at", UTCDateTime, nullable=False),
    Index("agentguard_audit_log_org_seq", "organization_id", "seq"),
)

interventions = Table(
    "agentguard_interventions",
    metadata,
    Column("seq", Sequence64, primary_key=True, autoincrement=True),
    Column("organization_id", String(256), nullable=False),
    Column("id", String(64), nullable=False),
    Column("type", String(32), nullable=False),
    Column("action", String(256), nullable=False),
    Column("target_type", String(16), nullable=False),
    Column("target_id", String(256), nullable=False),
    Column("kill_switch_id", String(64)),
    Column("killed_by", String(512)),
    Column("reason", Text),
    Column("agent_id", String(256)),
    Column("run_id", String(256)),
    Column("mission_id", String(256)),
    Column("instance_id", String(256)),
    Column("tool_call_id", String(256)),
    Column("model", String(256)),
    Column("ran_for_ms", Float),  # CANCELLED: how long the call had run
    Column("occurred_at", UTCDateTime, nullable=False),
    Column("received_at", UTCDateTime, nullable=False),
    # Re-sending a batch is safe: an intervention id is stored once per organization.
    Index("agentguard_interventions_org_id", "organization_id", "id", unique=True),
    Index("agentguard_interventions_org_occurred", "organization_id", "occurred_at"),
    # The change stream reads an organization's interventions by insertion order.
    Index("agentguard_interventions_org_seq", "organization_id", "seq"),
    Index("agentguard_interventions_org_target", "organization_id", "target_type", "target_id"),
)

api_keys = Table(
    "agentguard_api_keys",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("organization_id", String(256), nullable=False),
    Column("owner", String(256), nullable=False),
    Column("name", String(256)),
    Column("scopes", String(256), nullable=False),
    # The agents an agent key speaks for, as a JSON list; NULL for keys made before agents.
    Column("agents", Text),
    Column("secret_hash", String(64), nullable=False),
    Column("created_by", String(512), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("revoked_by", String(512)),
    Column("revoked_at", UTCDateTime),
    Index("agentguard_api_keys_org", "organization_id", "created_at"),
)

checkpoints = Table(
    "agentguard_checkpoints",
    metadata,
    Column("organization_id", String(256), primary_key=True),
    # The caller's key; an agent key's under its agents' namespace (``agents=.../key``).
    Column("key", String(512), primary_key=True),
    Column("state_json", Text, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

# -- fleet: heartbeats, acknowledgements, usage ----------------------------------------------------

instances = Table(
    "agentguard_instances",
    metadata,
    Column("organization_id", String(256), primary_key=True),
    Column("instance_id", String(256), primary_key=True),
    Column("agent_id", String(256)),
    Column("run_id", String(256)),
    Column("mission_id", String(256)),
    # Seconds between heartbeats; NULL for an instance only known from its acknowledgements.
    Column("interval_s", Float),
    # Cumulative counters of the instance, as of its last heartbeat.
    Column("executed", BigInteger, nullable=False),
    Column("refused", BigInteger, nullable=False),
    Column("failed", BigInteger, nullable=False),
    Column("cancelled", BigInteger, nullable=False, server_default=text("0")),
    Column("cost_usd", Float, nullable=False),
    Column("version", BigInteger, nullable=False),  # the kill-state version it has applied
    Column("checkpoint", String(256)),
    Column("status", String(16), nullable=False),  # running | exited | crashed
    Column("error", Text),
    Column("labels", Text),  # the guard's labels, as a JSON object (NULL: none)
    Column("first_seen", UTCDateTime, nullable=False),
    Column("last_seen", UTCDateTime, nullable=False),
    Index("agentguard_instances_org_agent", "organization_id", "agent_id"),
)

kill_acks = Table(
    "agentguard_kill_acks",
    metadata,
    Column("organization_id", String(256), primary_key=True),
    Column("kill_switch_id", String(36), primary_key=True),
    Column("instance_id", String(256), primary_key=True),
    Column("version", BigInteger, nullable=False),
    Column("acknowledged_at", UTCDateTime, nullable=False),
    # From the kill's commit; NULL when the instance first appeared after the kill.
    Column("latency_ms", Float),
)

usage = Table(
    "agentguard_usage",
    metadata,
    Column("organization_id", String(256), primary_key=True),
    Column("agent_id", String(256), primary_key=True),
    Column("bucket", UTCDateTime, primary_key=True),  # start of a 10-second slice, UTC
    Column("executed", BigInteger, nullable=False),
    Column("refused", BigInteger, nullable=False),
    Column("failed", BigInteger, nullable=False),
    Column("cost_usd", Float, nullable=False),
)

# The AgentSentinel ledger entries already counted into usage: a batch sent again counts once.
ledger_entries = Table(
    "agentguard_ledger_entries",
    metadata,
    Column("organization_id", String(256), primary_key=True),
    Column("id", String(64), primary_key=True),
    Column("agent_id", String(256)),
    Column("received_at", UTCDateTime, nullable=False),
    Index("agentguard_ledger_entries_received", "received_at"),
)


# -- console sessions -----------------------------------------------------------------------------

console_sign_outs = Table(
    "agentguard_console_sign_outs",
    metadata,
    # A signed-out session's id, refused until the cookie would have expired anyway.
    Column("session_id", String(64), primary_key=True),
    Column("expires_at", UTCDateTime, nullable=False),
)


# -- metrics (GET /metrics) ------------------------------------------------------------------------

metric_counters = Table(
    "agentguard_metric_counters",
    metadata,
    # A counter of events, added to in the transaction of what it counts: every worker and
    # replica reads the same total, and pruning the rows it counted leaves it as it was.
    Column("organization_id", String(256), primary_key=True),
    Column("metric", String(128), primary_key=True),
    Column("labels", String(1024), primary_key=True),  # canonical JSON: {"type": "HARD_BLOCK"}
    # Each counter is split over a few rows (a random one per transaction), so concurrent
    # writers of one organization rarely wait on the same row; readers sum them.
    Column("shard", Integer, primary_key=True),
    Column("value", Float, nullable=False),
)

open_streams = Table(
    "agentguard_open_streams",
    metadata,
    # The change streams each server process holds open, per organization, as it last said.
    Column("process_id", String(128), primary_key=True),
    Column("organization_id", String(256), primary_key=True),
    Column("streams", Integer, nullable=False),
    Column("seen_at", UTCDateTime, nullable=False),
)


# -- webhooks ------------------------------------------------------------------------------------

webhooks = Table(
    "agentguard_webhooks",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("organization_id", String(256), nullable=False),
    Column("url", Text, nullable=False),
    Column("format", String(16), nullable=False),  # standard | slack | pagerduty
    Column("events", Text, nullable=False),  # a JSON list of event names
    # The signing secret (standard: whsec_...) or the PagerDuty routing key; NULL for Slack,
    # whose URL is its credential. Kept in the clear: signing needs it (see SECURITY.md).
    Column("secret", Text),
    Column("name", String(256)),
    Column("created_by", String(512), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Index("agentguard_webhooks_org", "organization_id", "created_at"),
)

# The outbox: one row per event and webhook, written in the transaction of the event; the
# delivery log of each webhook once sent (or given up).
webhook_deliveries = Table(
    "agentguard_webhook_deliveries",
    metadata,
    Column("seq", Sequence64, primary_key=True, autoincrement=True),
    Column("organization_id", String(256), nullable=False),
    Column("webhook_id", String(32), nullable=False),
    Column("event_id", String(64), nullable=False),  # the webhook-id header; one per event
    Column("event", String(32), nullable=False),
    # What the event is about (a kill switch's id, an instance): deliveries of one webhook and
    # subject are sent in order, so a revive never overtakes its kill.
    Column("subject", String(512), nullable=False),
    Column("payload", Text, nullable=False),  # {"type", "timestamp", "data"} as JSON
    Column("status", String(16), nullable=False),  # pending | delivered | failed
    Column("attempts", Integer, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("next_attempt_at", UTCDateTime),
    Column("lease_until", UTCDateTime),  # a sender has claimed it until then
    Column("leased_by", String(128)),
    Column("last_attempt_at", UTCDateTime),
    Column("delivered_at", UTCDateTime),
    Column("response_status", Integer),
    Column("duration_ms", Float),
    Column("error", Text),
    Index(
        "agentguard_webhook_deliveries_due",
        "next_attempt_at",
        sqlite_where=text("status = 'pending'"),
        postgresql_where=text("status = 'pending'"),
    ),
    Index("agentguard_webhook_deliveries_order", "webhook_id", "subject", "seq"),
    Index("agentguard_webhook_deliveries_log", "organization_id", "webhook_id", "seq"),
    Index(
        "agentguard_webhook_deliveries_recent",
        "organization_id",
        "event",
        "subject",
        "created_at",
    ),
)


# -- drills --------------------------------------------------------------------------------------

drills = Table(
    "agentguard_drills",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("organization_id", String(256), nullable=False),
    Column("target_type", String(32), nullable=False),
    Column("target_id", String(256), nullable=False),
    Column("status", String(16), nullable=False),  # running | armed | failed | no_instances
    Column("started_by", String(512), nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("deadline_at", UTCDateTime, nullable=False),  # when it is judged, answered or not
    Column("finished_at", UTCDateTime),
    Column("live", Integer, nullable=False),  # live instances of the target when it started
    Column("acknowledged", Integer, nullable=False),
    Column("slowest_ms", Float),
    # A scheduled drill's interval number: one replica's insert wins each (org, target, slot).
    Column("slot", BigInteger),
    UniqueConstraint(
        "organization_id", "target_type", "target_id", "slot", name="agentguard_drills_slot"
    ),
    Index("agentguard_drills_target", "organization_id", "target_type", "target_id", "started_at"),
    Index(
        "agentguard_drills_running",
        "organization_id",
        "deadline_at",
        sqlite_where=text("status = 'running'"),
        postgresql_where=text("status = 'running'"),
    ),
)

# One row per instance a drill expects an answer from, written when it starts; an answer
# fills in when and how long after the start.
drill_acks = Table(
    "agentguard_drill_acks",
    metadata,
    Column("organization_id", String(256), primary_key=True),
    Column("drill_id", String(36), primary_key=True),
    Column("instance_id", String(256), primary_key=True),
    Column("agent_id", String(256)),
    Column("acknowledged_at", UTCDateTime),
    Column("latency_ms", Float),
)

# Governed revive: a revive that needs more people than the one who asked. The request waits
# (``pending``) until enough distinct people approved it (``approved``: the kill is revived in
# that transaction), or is ``rejected``, ``expired``, or ``superseded`` (the kill was revived
# otherwise, e.g. at its expiry, before the last approval).
revive_requests = Table(
    "agentguard_revive_requests",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("organization_id", String(256), nullable=False),
    Column("target_type", String(16), nullable=False),
    Column("target_id", String(256), nullable=False),
    Column("kill_switch_id", String(36), nullable=False),  # the kill it would revive
    Column("status", String(16), nullable=False),
    Column("reason", Text),
    Column("people_required", Integer, nullable=False),  # the requester and N-1 approvers
    Column("requested_by", String(512), nullable=False),  # the actor, as records name it
    Column("requester", String(512), nullable=False),  # the person: the credential's user
    Column("requested_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("closed_by", String(512)),
    Column("closed_at", UTCDateTime),
    Column("close_reason", Text),
    # At most one pending request per (organization, target): the database enforces it.
    Index(
        "agentguard_revive_requests_one_pending",
        "organization_id",
        "target_type",
        "target_id",
        unique=True,
        sqlite_where=text("status = 'pending'"),
        postgresql_where=text("status = 'pending'"),
    ),
    Index("agentguard_revive_requests_org", "organization_id", "requested_at"),
    Index(
        "agentguard_revive_requests_expiring",
        "expires_at",
        sqlite_where=text("status = 'pending'"),
        postgresql_where=text("status = 'pending'"),
    ),
)

# One row per approver of a request; the key makes each person count once.
revive_approvals = Table(
    "agentguard_revive_approvals",
    metadata,
    Column("request_id", String(36), primary_key=True),
    Column("approver", String(512), primary_key=True),  # the person: the credential's user
    Column("approved_by", String(512), nullable=False),  # the actor, as records name it
    Column("approved_at", UTCDateTime, nullable=False),
    Column("reason", Text),
)
