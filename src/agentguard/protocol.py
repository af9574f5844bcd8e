"""The wire protocol client and server share: paths, headers, scope names and answer bodies.

Defined once here; the remote client parses these and the server answers with them. Plain
pydantic only: nothing from ``agentguard.server`` or its dependencies.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, Literal, TypeVar, get_args

from pydantic import BaseModel, ConfigDict

from .records import KillChange, KillSwitch, Snapshot

__all__ = [
    "API",
    "DELTA_IM",
    "RESUMED_EVENT",
    "DRILLS_PARAM",
    "SCOPES",
    "VERSION_HEADER",
    "Acks",
    "Agent",
    "AgentInstance",
    "ApiKey",
    "ApiKeyCreated",
    "HealthName",
    "HeartbeatReply",
    "HeartbeatReport",
    "InstanceAck",
    "InstanceStatusName",
    "KillStateChanges",
    "Resumed",
    "RunFinished",
    "Page",
    "ScopeName",
    "Series",
    "SeriesCounts",
    "SeriesEvent",
    "SeriesPoint",
    "StreamEvent",
    "DeliveryStatusName",
    "Drill",
    "DrillEvent",
    "DrillStatusName",
    "WEBHOOK_EVENTS",
    "WEBHOOK_FORMATS",
    "Webhook",
    "WebhookCreated",
    "WebhookDelivery",
    "WebhookEventName",
    "WebhookFormatName",
]

API = "/api/v1"
VERSION_HEADER = "X-AgentGuard-Version"  # the organization's kill-state version after a change
# ``A-IM`` of a poll that takes only the changes since its ETag's version (answered 226).
DELTA_IM = "changes"
# The stream event after the changes a ``Last-Event-ID`` missed: caught up, at its version.
RESUMED_EVENT = "resumed"

ScopeName = Literal["admin", "operator", "agent", "read", "metrics"]
SCOPES: tuple[ScopeName, ...] = get_args(ScopeName)
HealthName = Literal["active", "stale", "crashed", "killed", "exited"]
InstanceStatusName = Literal["running", "exited", "crashed"]
# The events a webhook may subscribe to.
WebhookEventName = Literal[
    "kill", "revive", "rule.tripped", "rule.observed", "ack.timeout", "fail_closed", "drill.failed"
]
WEBHOOK_EVENTS: tuple[WebhookEventName, ...] = get_args(WebhookEventName)
WebhookFormatName = Literal["standard", "slack", "pagerduty"]
WEBHOOK_FORMATS: tuple[WebhookFormatName, ...] = get_args(WebhookFormatName)
# A delivery waits (queued or retrying), was delivered, or was given up.
DeliveryStatusName = Literal["pending", "delivered", "failed"]
# A drill waits for answers, or every live instance answered in time (armed), or not (failed),
# or the target had no live instance to ask.
DrillStatusName = Literal["running", "armed", "failed", "no_instances"]
# The change stream sends ``drill`` events only to a stream opened with this query parameter
# (``drills=1``): a guard that does not know the event (older agentguard) never gets one.
DRILLS_PARAM = "drills"

T = TypeVar("T")


class _Answer(BaseModel):
    # Fields the server adds later are kept, so ``--json`` passes them through.
    model_config = ConfigDict(frozen=True, extra="allow")


class Page(BaseModel, Generic[T]):
    """A page of records and how many match in all."""

    model_config = ConfigDict(frozen=True)

    data: list[T]
    count: int


# -- heartbeats ----------------------------------------------------------------------------------


class HeartbeatReport(BaseModel):
    """What an instance tells the server (``POST /api/v1/heartbeats``)."""

    model_config = ConfigDict(frozen=True)

    instance_id: str
    agent_id: str | None = None
    run_id: str | None = None
    mission_id: str | None = None
    interval: float
    executed: int = 0
    refused: int = 0
    failed: int = 0
    cancelled: int = 0  # sent only when not 0: a server older than it refuses the field
    cost_usd: float = 0.0
    version: int = 0
    checkpoint: str | None = None
    status: InstanceStatusName = "running"
    error: str | None = None
    labels: dict[str, str] | None = None  # the guard's; sent only when it has some


class HeartbeatReply(BaseModel):
    """The server's answer: the instance's health and its kill state."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    health: HealthName
    version: int
    killed: bool
    reason: str | None = None
    snapshot: Snapshot | None = None


# -- API keys ------------------------------------------------------------------------------------


class ApiKey(_Answer):
    """An API key, without its secret."""

    id: str
    organization_id: str
    owner: str
    name: str | None = None
    scopes: list[ScopeName]
    agents: list[str] | None = None  # what an agent key speaks for; ["*"]: any agent
    created_by: str
    created_at: datetime
    revoked_by: str | None = None
    revoked_at: datetime | None = None


class ApiKeyCreated(ApiKey):
    """A new API key with its secret, shown this once."""

    secret: str


# -- the fleet -----------------------------------------------------------------------------------


class AgentInstance(_Answer):
    """One running (or ended) process of an agent, as its heartbeats describe it."""

    instance_id: str
    health: HealthName
    last_seen: datetime | None = None
    run_id: str | None = None
    mission_id: str | None = None
    executed: int = 0
    refused: int = 0
    failed: int = 0
    cancelled: int = 0
    cost_usd: float = 0.0
    version: int | None = None
    status: InstanceStatusName | None = None
    error: str | None = None


class Drill(_Answer):
    """A drill: a rehearsed kill of a target that every live instance of it applies through
    its kill path and acknowledges, without refusing any call; and how it went."""

    id: str
    target_type: str
    target_id: str
    status: DrillStatusName
    started_by: str
    started_at: datetime
    finished_at: datetime | None = None
    timeout_s: float
    live: int
    acknowledged: int
    slowest_ms: float | None = None
    not_answering: list[str] = []
    scheduled: bool = False

    @property
    def armed(self) -> bool:
        """Every live instance acknowledged in time."""
        return self.status == "armed"

    def summary(self) -> str:
        """The result in one line: ``armed: 49/50 instances acknowledged the drill within
        41 ms; not answering: vm-12-...``."""
        if self.status == "no_instances":
            return f"not armed: {self.target_type} {self.target_id!r} has no live instance to drill"
        head = {"armed": "armed", "failed": "NOT armed", "running": "running"}[self.status]
        text = f"{head}: {self.acknowledged}/{self.live} instances acknowledged the drill"
        if self.slowest_ms is not None:
            text += f" within {self.slowest_ms:.0f} ms"
        if self.not_answering:
            text += "; not answering: " + ", ".join(self.not_answering[:10])
            more = self.live - self.acknowledged - min(len(self.not_answering), 10)
            if more > 0:
                text += f" and {more} more"
        return text


class Agent(_Answer):
    """An agent's health across its instances, its counters and its kill switch if killed."""

    agent_id: str
    health: HealthName
    last_seen: datetime | None = None
    instances: list[AgentInstance] = []
    executed: int = 0
    refused: int = 0
    failed: int = 0
    cancelled: int = 0
    cost_usd: float = 0.0
    cost_usd_today: float = 0.0
    kill_switch: KillSwitch | None = None
    last_drill: Drill | None = None


class InstanceAck(_Answer):
    """Whether one live instance has applied a kill, and how long after it."""

    instance_id: str
    agent_id: str | None = None
    run_id: str | None = None
    mission_id: str | None = None
    acknowledged: bool
    acknowledged_at: datetime | None = None
    latency_ms: float | None = None


class Acks(_Answer):
    """How many of the live instances a kill applies to have acknowledged it."""

    target_type: str
    target_id: str
    kill_switch_id: str
    version: int
    killed_at: datetime
    live: int
    acknowledged: int
    slowest_ms: float | None = None
    instances: list[InstanceAck] = []

    @property
    def complete(self) -> bool:
        """Every live instance has acknowledged."""
        return self.acknowledged >= self.live

    @property
    def slowest(self) -> InstanceAck | None:
        """The acknowledged instance that took longest."""
        done = [i for i in self.instances if i.acknowledged and i.latency_ms is not None]
        return max(done, key=lambda i: i.latency_ms or 0.0, default=None)


class SeriesCounts(_Answer):
    """Calls and cost over some time: ``executed``, ``failed`` and ``cost_usd`` from the
    heartbeats; ``refused``, ``cancelled`` and ``unavailable`` from the interventions."""

    executed: int = 0
    refused: int = 0
    cancelled: int = 0
    unavailable: int = 0
    failed: int = 0
    cost_usd: float = 0.0


class SeriesPoint(SeriesCounts):
    """One bucket of a series, from ``at`` for the series' ``step`` seconds."""

    at: datetime


class SeriesEvent(_Answer):
    """A kill or revive on a series (``reason``: the kill's)."""

    kind: Literal["kill", "revive"]
    at: datetime
    target_type: str
    target_id: str
    actor: str
    reason: str | None = None
    kill_switch_id: str | None = None
    version: int | None = None


class Series(_Answer):
    """An agent's (``agent_id``; ``None``: the organization's) calls, cost, kills and revives
    over ``window`` seconds in buckets of ``step`` seconds, oldest first
    (``GET /agents/{id}/series``, ``GET /series``)."""

    agent_id: str | None = None
    window: int
    step: int
    start: datetime
    end: datetime
    points: list[SeriesPoint]
    totals: SeriesCounts
    events: list[SeriesEvent] = []
    events_count: int = 0


# -- governed revive -----------------------------------------------------------------------------

# A revive request waits (``pending``), was ``approved`` (the kill is revived), ``rejected``,
# ``expired`` unanswered, or ``superseded`` (the kill was revived otherwise meanwhile).
ReviveRequestStatus = Literal["pending", "approved", "rejected", "expired", "superseded"]
REVIVE_REQUEST_STATUSES: tuple[ReviveRequestStatus, ...] = get_args(ReviveRequestStatus)


class ReviveApproval(_Answer):
    """One approver of a revive request."""

    approved_by: str
    approved_at: datetime
    reason: str | None = None


class ReviveRequest(_Answer):
    """A revive that waits for approval: ``people_required`` distinct people (the requester
    and the approvers) must agree before the kill ``kill_switch_id`` is revived."""

    id: str
    organization_id: str
    target_type: str
    target_id: str
    kill_switch_id: str
    status: ReviveRequestStatus
    reason: str | None = None
    people_required: int
    requested_by: str
    requested_at: datetime
    expires_at: datetime
    approvals: list[ReviveApproval] = []
    closed_by: str | None = None
    closed_at: datetime | None = None
    close_reason: str | None = None
    kill_switch: KillSwitch | None = None  # the revived kill, on the approval that revived it


# -- webhooks ------------------------------------------------------------------------------------


class WebhookDelivery(_Answer):
    """One event for one webhook: ``pending`` (queued or retrying), ``delivered`` or
    ``failed`` (given up), with its attempts so far."""

    webhook_id: str
    event_id: str
    event: str
    subject: str
    status: DeliveryStatusName
    attempts: int
    created_at: datetime
    next_attempt_at: datetime | None = None
    last_attempt_at: datetime | None = None
    delivered_at: datetime | None = None
    response_status: int | None = None
    duration_ms: float | None = None
    error: str | None = None


class Webhook(_Answer):
    """A registered webhook (without its secret) and how its deliveries are going."""

    id: str
    organization_id: str
    url: str
    format: str
    events: list[str]
    name: str | None = None
    created_by: str
    created_at: datetime
    pending: int = 0
    last_delivery: WebhookDelivery | None = None


class WebhookCreated(Webhook):
    """A new webhook; a standard one's signing secret (``whsec_...``), shown this once."""

    secret: str | None = None


# -- the change stream ---------------------------------------------------------------------------


class KillStateChanges(BaseModel):
    """A ``226 IM Used`` answer of ``/kill-switch/state``: the changes since the poller's ETag."""

    organization_id: str
    version: int
    changes: list[KillChange]


class Resumed(BaseModel):
    """The data of the stream's ``resumed`` event: caught up after a ``Last-Event-ID``."""

    organization_id: str
    version: int


class DrillEvent(BaseModel):
    """The data of a ``drill`` event: rehearse a kill of the target and acknowledge it
    (``POST /api/v1/drills/{id}/ack``). It has no SSE id: it is no change of kill state."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: str
    target_type: str
    target_id: str
    started_at: datetime


class RunFinished(BaseModel):
    """The answer of ``POST /runs/{run_id}/finish``: the kill that ended with the run, if any."""

    run_id: str
    ended: KillSwitch | None


@dataclass(frozen=True)
class StreamEvent:
    """One event of the change stream: ``snapshot``, ``kill``, ``revive`` or ``intervention``.

    ``id`` is the kill-state version of a snapshot, kill or revive (resume after it with
    ``last_event_id``); interventions have none.
    """

    event: str
    id: str | None
    data: dict[str, Any]
