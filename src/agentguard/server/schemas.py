"""Request and response bodies of the HTTP API; the OpenAPI document is generated from them.

Declarative and over 500 lines on purpose: one vocabulary of models, read together by the
endpoint table, the OpenAPI document and the bad-input test matrix. Names the client shares
(scope, health and status names) come from :mod:`agentguard.protocol`.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timedelta, timezone
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
)

from ..checkpoints import CHECKPOINT_KEY_PATTERN, CHECKPOINT_KEY_RULE
from ..errors import InvalidInputError
from ..protocol import (
    WEBHOOK_EVENTS,
    DeliveryStatusName,
    DrillStatusName,
    HealthName,
    InstanceStatusName,
    ReviveRequestStatus,
    ScopeName,
    WebhookEventName,
    WebhookFormatName,
)
from ..selectors import MAX_LABELS
from ..targets import (
    HIDDEN_CLASS,
    KILL_DURATION_PATTERN,
    LABEL_KEY,
    LABEL_RULE,
    LABEL_VALUE,
    MAX_KILL_DURATION,
    MAX_REASON_LENGTH,
    MAX_TARGET_ID_LENGTH,
    id_text_problem,
    parse_duration,
)
from . import series

TargetTypeName = Literal["agent", "run", "mission", "tool", "organization", "selector"]
AuditAction = Literal[
    "kill",
    "revive",
    "key.create",
    "key.revoke",
    "interventions.dropped",
    "ack.refused",
    "rule.observed",
    "webhook.create",
    "webhook.delete",
    "drill",
    "drill.armed",
    "drill.failed",
    "revive.request",
    "revive.approve",
    "revive.reject",
    "revive.expire",
]
AuditTargetType = Literal[
    "agent", "run", "mission", "tool", "organization", "selector", "api_key", "webhook"
]
InterventionTypeName = Literal["HARD_BLOCK", "OBSERVED", "UNAVAILABLE", "CANCELLED"]

# No NUL characters anywhere (PostgreSQL text cannot hold them); ids need one visible character.
_NO_NUL = r"^[^\x00]*$"
# Whitespace spelt out (Python's str.isspace(), as the store's own check): JSON Schema's
# regexes (ECMA-262), Python's and pydantic's (Rust) each read \s differently.
_SPACE = r"\t\n\x0b\x0c\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_VISIBLE = rf"^[^\x00]*[^\x00{_SPACE}][^\x00]*$"
# Ids are visible text: a visible character, and no control, format or invisible character
# (targets.HIDDEN_RANGES); ``_id_text`` adds the rule on look-alike scripts.
_ID = rf"^[^{HIDDEN_CLASS}]*[^{HIDDEN_CLASS}{_SPACE}][^{HIDDEN_CLASS}]*$"
_ID_OR_EMPTY = rf"^[^{HIDDEN_CLASS}]*$"


def _id_text(value: str) -> str:
    """Refuse an id mixing look-alike scripts (the pattern has refused hidden characters)."""
    problem = id_text_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


IdText = AfterValidator(_id_text)
# What the pattern cannot say: the rule on look-alike letters, in words (OpenAPI shows it).
ID_RULE = Field(
    description="An id: visible text, no control, format or invisible characters, and no word "
    "mixing Latin, Greek and Cyrillic letters"
)
TargetId = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_TARGET_ID_LENGTH, pattern=_ID),
    ID_RULE,
    IdText,
]
# A target killed before ids had to be visible text can still be revived.
StoredTargetId = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_TARGET_ID_LENGTH, pattern=_VISIBLE)
]
Reason = Annotated[str, StringConstraints(max_length=MAX_REASON_LENGTH, pattern=_NO_NUL)]
Name = Annotated[str, StringConstraints(min_length=1, max_length=256, pattern=_ID), ID_RULE, IdText]
Skip = Annotated[int, Field(ge=0, le=2**31 - 1, description="Rows to skip")]
Limit = Annotated[int, Field(ge=1, le=1000, description="Rows to return, 1..1000")]


_RFC3339 = re.compile(r"^\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d")


def _rfc3339(value: Any) -> Any:
    """Accept timestamps only as RFC 3339 strings (not as numbers of seconds)."""
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not _RFC3339.match(value):
        raise ValueError("must be an RFC 3339 date-time such as 2026-04-18T17:00:00Z")
    return value


def _as_utc(value: datetime) -> datetime:
    """Read a timestamp without an offset as UTC; clamp one beyond year 1..9999 in UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    try:
        return value.astimezone(timezone.utc)
    except OverflowError:
        offset = value.utcoffset()
        earliest = offset is not None and offset > timedelta(0)
        limit = datetime.min if earliest else datetime.max
        return limit.replace(tzinfo=timezone.utc)


Timestamp = Annotated[datetime, BeforeValidator(_rfc3339), AfterValidator(_as_utc)]

REPORTED_EARLIEST = datetime(2000, 1, 1, tzinfo=timezone.utc)
REPORTED_AHEAD = timedelta(minutes=5)


def _sane(value: datetime) -> datetime:
    """Refuse a reported time before 2000 or more than 5 minutes ahead of the server's clock."""
    if value < REPORTED_EARLIEST:
        raise ValueError("must not be before 2000-01-01T00:00:00Z")
    if value > datetime.now(timezone.utc) + REPORTED_AHEAD:
        raise ValueError("must not be more than 5 minutes ahead of the server's clock")
    return value


# When a client says something happened: it must be plausible, or it is refused.
ReportedTime = Annotated[Timestamp, AfterValidator(_sane)]


def _real_number(value: Any) -> Any:
    """Refuse true/false (lax mode reads 1 and 0) and NaN/infinity (bounds would misreport them)."""
    if isinstance(value, bool):
        raise ValueError("must be a number, not true or false")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("must be a finite number")
    return value


# For numbers in bodies (query values are text). Put it after Field(...) in Annotated: before
# it, the bounds would drop out of the JSON schema as unknown keys ("ge" for "minimum").
RealNumber = BeforeValidator(_real_number)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Query(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


# -- kill switch ---------------------------------------------------------------------------------


def _duration(value: str) -> str:
    try:
        parse_duration("duration", value)
    except InvalidInputError as exc:
        raise ValueError(exc.message) from None
    return value


def _within_max(value: datetime) -> datetime:
    now = datetime.now(timezone.utc)
    if value <= now:
        raise ValueError("must be in the future")
    if value - now > MAX_KILL_DURATION:
        raise ValueError(f"must be at most {MAX_KILL_DURATION.days} days from now")
    return value


KillDuration = Annotated[
    str,
    StringConstraints(min_length=2, max_length=32, pattern=KILL_DURATION_PATTERN),
    Field(
        description='How long the kill lasts, such as "90s", "15m", "1h30m", "2d"; at most 366 days'
    ),
    AfterValidator(_duration),
]
KillExpiresAt = Annotated[
    Timestamp,
    Field(description="When the server revives the kill (as `expiry`): within 366 days"),
    AfterValidator(_within_max),
]


class KillRequest(_Body):
    """Kill a target; with ``expires_at`` or ``duration``, for a time (then revived as
    ``expiry``); a run's kill may last only ``until`` the run ends (``run_end``)."""

    # ``until`` is for a run only (checked where the kill is made, 422 naming ``until``).
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        json_schema_extra={
            "if": {"required": ["until"], "properties": {"until": {"const": "run_end"}}},
            "then": {"properties": {"target_type": {"const": "run"}}},
        },
    )

    target_type: TargetTypeName
    target_id: TargetId
    reason: Reason | None = None
    expires_at: KillExpiresAt | None = None
    duration: KillDuration | None = None  # not with expires_at (422 naming duration)
    until: Literal["run_end"] | None = None


class ReviveRequest(_Body):
    """Revive a killed target (where revives need approval: ask for it); ``reason`` (why)
    goes into the audit log."""

    target_type: TargetTypeName
    target_id: StoredTargetId
    reason: Reason | None = None  # audited; required on a server run with require_reason


class KillSwitchPublic(BaseModel):
    """One kill of one target."""

    id: str
    target_type: TargetTypeName
    target_id: str
    reason: str | None
    is_active: bool
    killed_by: str
    killed_at: datetime
    revived_by: str | None
    revived_at: datetime | None
    organization_id: str
    # Only in the record of a time-limited kill: the seed's records keep their exact keys.
    expires_at: datetime | None = Field(
        default=None,
        exclude_if=lambda v: v is None,
        description="A time-limited kill: when the server revives it (absent otherwise)",
    )


class KillSwitchesPublic(BaseModel):
    """A page of kill switches and how many there are in all."""

    data: list[KillSwitchPublic]
    count: int


# -- governed revive -----------------------------------------------------------------------------


class ReviveApprovalPublic(BaseModel):
    """One approver of a revive request."""

    approved_by: str
    approved_at: datetime
    reason: str | None


class ReviveRequestPublic(BaseModel):
    """A revive waiting for approval (202 from ``POST /revive``), or how it ended.

    ``people_required`` distinct people, the requester and the approvers, must agree; the
    approval that completes it revives the kill (``kill_switch``, only in that answer).
    """

    id: str
    organization_id: str
    target_type: TargetTypeName
    target_id: str
    kill_switch_id: str
    status: ReviveRequestStatus
    reason: str | None
    people_required: int
    requested_by: str
    requested_at: datetime
    expires_at: datetime
    approvals: list[ReviveApprovalPublic]
    closed_by: str | None
    closed_at: datetime | None
    close_reason: str | None
    kill_switch: KillSwitchPublic | None = Field(
        default=None,
        exclude_if=lambda v: v is None,
        description="The revived kill: only in the answer of the approval that revived it",
    )


class ReviveRequestsPublic(BaseModel):
    """A page of revive requests, newest first, and how many match in all."""

    data: list[ReviveRequestPublic]
    count: int


class ReviveRequestPath(BaseModel):
    """The revive request in the path."""

    request_id: Annotated[
        str, StringConstraints(min_length=1, max_length=36, pattern=r"^[0-9a-f-]+$")
    ]


class ReviveDecision(_Body):
    """An approval or rejection, with why (required on a server run with require_reason)."""

    reason: Reason | None = None


class CheckQuery(_Query):
    """The target to check."""

    target_type: TargetTypeName
    target_id: TargetId


class CheckResponse(BaseModel):
    """Whether a target is killed."""

    is_killed: bool
    target_type: TargetTypeName
    target_id: str
    reason: str | None
    killed_at: datetime | None


class PageQuery(_Query):
    """Paging."""

    skip: Skip = 0
    limit: Limit = 100


# -- API keys ------------------------------------------------------------------------------------

# An agent id, a prefix ending in "*", or "*" alone: no NUL, no comma, "*" only at the end.
_AGENT_PATTERN = rf"^(\*|[^\x00,*]*[^\x00,*{_SPACE}][^\x00,*]*\*?)$"
AgentPattern = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_TARGET_ID_LENGTH, pattern=_AGENT_PATTERN)
]


class ReviveRequestQuery(PageQuery):
    """Revive request filters (default: the pending ones)."""

    status: Literal["pending", "approved", "rejected", "expired", "superseded", "all"] = "pending"


class ApiKeyCreate(_Body):
    """A key to create; ``owner`` defaults to the calling user."""

    scopes: Annotated[list[ScopeName], Field(min_length=1, max_length=5)]
    owner: Name | None = None
    name: Name | None = None
    agents: Annotated[list[AgentPattern], Field(max_length=100)] | None = None
    """What an agent key speaks for: agent ids, ``prefix-*``, or ``*`` for any agent."""


class ApiKeyPublic(BaseModel):
    """An API key, without its secret."""

    id: str
    organization_id: str
    owner: str
    name: str | None
    scopes: list[ScopeName]
    agents: list[str] | None = None
    created_by: str
    created_at: datetime
    revoked_by: str | None
    revoked_at: datetime | None


class ApiKeyCreated(ApiKeyPublic):
    """A new API key with its secret, shown this once."""

    secret: str


class ApiKeysPublic(BaseModel):
    """A page of API keys and how many there are in all."""

    data: list[ApiKeyPublic]
    count: int


KEY_ID_PATTERN = r"^[A-Za-z0-9_]+$"


class KeyPath(BaseModel):
    """The key in the path."""

    key_id: Annotated[str, StringConstraints(min_length=1, max_length=32, pattern=KEY_ID_PATTERN)]


# -- audit ---------------------------------------------------------------------------------------


class AuditQuery(PageQuery):
    """Audit log filters."""

    action: AuditAction | None = None
    target_type: AuditTargetType | None = None
    target_id: TargetId | None = None
    since: Timestamp | None = None


class AuditEntryPublic(BaseModel):
    """One audited operator action."""

    id: str
    organization_id: str
    action: AuditAction
    actor: str
    target_type: AuditTargetType | None
    target_id: str | None
    detail: str | None
    request_id: str | None
    version: int | None
    created_at: datetime


class AuditEntriesPublic(BaseModel):
    """A page of audit entries, newest first, and how many match in all."""

    data: list[AuditEntryPublic]
    count: int


# -- interventions -------------------------------------------------------------------------------

MAX_RAN_FOR_MS = 366 * 86_400_000.0  # a call stopped after more than a year is no real report

_OptionalId = (
    Annotated[str, StringConstraints(max_length=256, pattern=_ID_OR_EMPTY), ID_RULE, IdText] | None
)
ActionName = Annotated[
    str, StringConstraints(min_length=1, max_length=256, pattern=_ID), ID_RULE, IdText
]


class InterventionIn(_Body):
    """A recorded decision about one guarded call; its ``id`` makes re-sending idempotent."""

    id: Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=_ID), ID_RULE, IdText]
    type: InterventionTypeName = "HARD_BLOCK"
    action: ActionName
    target_type: TargetTypeName
    target_id: TargetId
    kill_switch_id: (
        Annotated[str, StringConstraints(max_length=64, pattern=_ID_OR_EMPTY), ID_RULE, IdText]
        | None
    ) = None
    killed_by: Annotated[str, StringConstraints(max_length=512, pattern=_NO_NUL)] | None = None
    reason: Reason | None = None
    agent_id: _OptionalId = None
    run_id: _OptionalId = None
    mission_id: _OptionalId = None
    instance_id: _OptionalId = None
    tool_call_id: _OptionalId = None
    model: _OptionalId = None
    """The model of a refused model call (an LLM request)."""
    occurred_at: ReportedTime
    ran_for_ms: (
        Annotated[float, Field(ge=0, le=MAX_RAN_FOR_MS, allow_inf_nan=False), RealNumber] | None
    ) = None
    """CANCELLED: how long the call had run when the kill stopped it (milliseconds)."""


class InterventionsBatch(_Body):
    """Up to 1,000 interventions."""

    interventions: Annotated[list[InterventionIn], Field(max_length=1000)]
    dropped: Annotated[int, Field(ge=0, le=1_000_000_000), RealNumber] = 0
    """Interventions the reporter dropped (its buffer was full) since its last accepted batch."""


class InterventionsAccepted(BaseModel):
    """How many interventions arrived and how many were new (the rest were already stored)."""

    received: int
    created: int


class InterventionPublic(BaseModel):
    """A stored intervention."""

    id: str
    type: InterventionTypeName
    action: str
    target_type: TargetTypeName
    target_id: str
    kill_switch_id: str | None
    killed_by: str | None
    reason: str | None
    agent_id: str | None
    run_id: str | None
    mission_id: str | None
    instance_id: str | None
    tool_call_id: str | None
    model: str | None = None
    occurred_at: datetime
    ran_for_ms: float | None = None


class InterventionsPublic(BaseModel):
    """A page of interventions, newest first, and how many match in all."""

    data: list[InterventionPublic]
    count: int


class InterventionQuery(PageQuery):
    """Intervention filters."""

    target_type: TargetTypeName | None = None
    target_id: TargetId | None = None
    type: InterventionTypeName | None = None
    action: ActionName | None = None
    since: Timestamp | None = None


class InterventionCountsQuery(PageQuery):
    """Intervention count filters."""

    target_type: TargetTypeName | None = None
    type: InterventionTypeName | None = None
    since: Timestamp | None = None


class InterventionCount(BaseModel):
    """Interventions of one type against one target."""

    target_type: TargetTypeName
    target_id: str
    type: InterventionTypeName
    count: int
    last_occurred_at: datetime


class InterventionCountsPublic(BaseModel):
    """Per-target counts, most first, and how many targets match in all."""

    data: list[InterventionCount]
    count: int


# -- fleet: heartbeats, acknowledgements, agents, checkpoints ----------------------------------

MAX_COUNT = 10**15  # per counter: far beyond any fleet, far below 64-bit sums
Count = Annotated[int, Field(ge=0, le=MAX_COUNT), RealNumber]
Version = Annotated[int, Field(ge=0, le=2**63 - 1), RealNumber]
Dollars = Annotated[float, Field(ge=0, le=1e12, allow_inf_nan=False), RealNumber]
InstanceId = Annotated[
    str, StringConstraints(min_length=1, max_length=256, pattern=_ID), ID_RULE, IdText
]
CheckpointKey = Annotated[str, StringConstraints(max_length=256, pattern=CHECKPOINT_KEY_PATTERN)]

# An id in an HTTP header: printable ASCII with a visible character (HTTP clients such as httpx
# send nothing else), at most 256 characters.
_HEADER_ID = r"^[ -~]*[!-~][ -~]*$"

# -- webhooks ------------------------------------------------------------------------------------

# Printable ASCII without spaces (an IDN host goes in its xn-- form); the server checks the rest.
_WEBHOOK_URL = r"^https?://[!-~]+$"
_ROUTING_KEY = r"^[A-Za-z0-9]+$"
WebhookUrl = Annotated[
    str,
    StringConstraints(max_length=2048, pattern=_WEBHOOK_URL),
    Field(
        description="http:// or https://, with a host and no user name or password; unless "
        "the server allows private addresses, the host must be public"
    ),
]
ShortId = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=KEY_ID_PATTERN)]


class WebhookCreate(_Body):
    """A webhook to register: where, in which format, for which events."""

    url: WebhookUrl
    events: Annotated[list[WebhookEventName], Field(min_length=1, max_length=len(WEBHOOK_EVENTS))]
    format: WebhookFormatName = "standard"
    name: Name | None = None
    routing_key: (
        Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=_ROUTING_KEY)] | None
    ) = None
    """The PagerDuty integration key (Events API v2); only with ``format`` pagerduty."""


class WebhookDeliveryPublic(BaseModel):
    """One event for one webhook, and its attempts so far."""

    webhook_id: str
    event_id: str  # the ``webhook-id`` header of the standard format
    event: str
    subject: str
    status: DeliveryStatusName
    attempts: int
    created_at: datetime
    next_attempt_at: datetime | None
    last_attempt_at: datetime | None
    delivered_at: datetime | None
    response_status: int | None
    duration_ms: float | None
    error: str | None


class WebhookPublic(BaseModel):
    """A registered webhook (never its secret), with how its deliveries are going."""

    id: str
    organization_id: str
    url: str
    format: WebhookFormatName
    events: list[str]
    name: str | None
    created_by: str
    created_at: datetime
    pending: int
    last_delivery: WebhookDeliveryPublic | None


class WebhookCreated(WebhookPublic):
    """A new webhook; for the standard format, its signing secret, shown this once."""

    secret: str | None


class WebhooksPublic(BaseModel):
    """A page of webhooks, newest first, and how many there are in all."""

    data: list[WebhookPublic]
    count: int


class WebhookDeliveriesPublic(BaseModel):
    """A page of a webhook's delivery log, newest first, and how many match in all."""

    data: list[WebhookDeliveryPublic]
    count: int


class WebhookPath(BaseModel):
    """The webhook in the path."""

    webhook_id: Annotated[
        str, StringConstraints(min_length=1, max_length=32, pattern=KEY_ID_PATTERN)
    ]


class WebhookDeliveryQuery(PageQuery):
    """Delivery log filters."""

    status: DeliveryStatusName | None = None
    event_id: ShortId | None = None


# What each pattern asks for, in words: error messages say this, never the regex.
PATTERN_RULES: dict[str, str] = {
    _HEADER_ID: "must be printable ASCII text with a visible character",
    _NO_NUL: "must not contain NUL characters",
    _VISIBLE: "needs a visible character, and no NUL characters",
    _ID: "needs a visible character, and no control, format or invisible characters",
    _ID_OR_EMPTY: "must not contain control, format or invisible characters",
    KEY_ID_PATTERN: "may contain only letters, digits and underscores",
    _WEBHOOK_URL: "must be an http:// or https:// URL of printable ASCII characters, without "
    "spaces (write an international host name in its xn-- form)",
    _ROUTING_KEY: "may contain only letters and digits",
    _AGENT_PATTERN: "must be an agent id, a prefix ending in '*' ('billing-*'), or '*' alone "
    "(no commas; '*' only at the end)",
    CHECKPOINT_KEY_PATTERN: CHECKPOINT_KEY_RULE,
    series.DURATION_PATTERN: series.DURATION_RULE,
    LABEL_KEY.pattern: f"a label key must be {LABEL_RULE}, optionally after a 'prefix/'",
    LABEL_VALUE.pattern: f"a label value must be {LABEL_RULE}",
    KILL_DURATION_PATTERN: 'must be days, hours, minutes and seconds such as "90s", "15m", '
    '"1h30m", "2d" (lower case, in that order)',
}


LabelKey = Annotated[str, StringConstraints(pattern=LABEL_KEY.pattern)]
LabelValue = Annotated[str, StringConstraints(pattern=LABEL_VALUE.pattern)]
Labels = Annotated[
    dict[LabelKey, LabelValue],
    Field(
        max_length=MAX_LABELS,
        json_schema_extra={"additionalProperties": False},  # only keys of the pattern
        description="A guard's labels (at most 32), which selector kills match: keys and values "
        "of 1 to 63 letters, digits, '-', '_' or '.' (a key may have a 'prefix/')",
    ),
]


class HeartbeatIn(_Body):
    """One instance's heartbeat; the counters are cumulative for the instance."""

    instance_id: InstanceId
    agent_id: TargetId | None = None
    run_id: TargetId | None = None
    mission_id: TargetId | None = None
    interval: Annotated[float, Field(gt=0, le=86400, allow_inf_nan=False), RealNumber]
    executed: Count
    refused: Count
    failed: Count
    cancelled: Count = 0
    """Calls stopped by a kill while they ran (older clients do not send it)."""
    cost_usd: Dollars
    version: Version
    checkpoint: CheckpointKey | None = None
    status: InstanceStatusName = "running"
    error: Reason | None = None
    labels: Labels | None = None


class AckIn(_Body):
    """The instance has applied every kill-state change up to ``version``."""

    instance_id: InstanceId
    version: Version
    agent_id: TargetId | None = None
    run_id: TargetId | None = None
    mission_id: TargetId | None = None


class AckAccepted(BaseModel):
    """How many kills this acknowledgement newly acknowledged."""

    acknowledged: int


MAX_ACK_BATCH = 1000


class AckBatchIn(_Body):
    """Up to 1,000 acknowledgements (a process's guards), accepted or refused as a whole."""

    acks: Annotated[list[AckIn], Field(min_length=1, max_length=MAX_ACK_BATCH)]


class AckBatchAccepted(BaseModel):
    """How many kills the batch newly acknowledged, in all and per acknowledgement."""

    acknowledged: int
    each: list[int]


class KillQuery(_Query):
    """Optionally wait for the live instances the kill applies to to acknowledge it."""

    wait: (
        Annotated[
            float,
            Field(
                ge=0, le=60, allow_inf_nan=False, description="Seconds to wait for acknowledgements"
            ),
        ]
        | None
    ) = None


class AcksQuery(_Query):
    """The killed target."""

    target_type: TargetTypeName
    target_id: TargetId


class InstanceAck(BaseModel):
    """Whether one live instance has applied the kill, and how long it took from the commit."""

    instance_id: str
    agent_id: str | None
    run_id: str | None
    mission_id: str | None
    acknowledged: bool
    acknowledged_at: datetime | None
    latency_ms: float | None


class AcksPublic(BaseModel):
    """The active kill of a target and which live instances it applies to have applied it."""

    target_type: TargetTypeName
    target_id: str
    kill_switch_id: str
    version: int
    killed_at: datetime
    live: int
    acknowledged: int
    slowest_ms: float | None
    instances: list[InstanceAck]


class InstancePublic(BaseModel):
    """One running (or finished) process of an agent, as its heartbeats describe it."""

    instance_id: str
    health: HealthName
    last_seen: datetime
    run_id: str | None
    mission_id: str | None
    executed: int
    refused: int
    failed: int
    cancelled: int
    cost_usd: float
    version: int
    status: InstanceStatusName
    error: str | None
    labels: dict[str, str] = Field(default_factory=dict)


# -- drills --------------------------------------------------------------------------------------

DRILL_TIMEOUT = 5.0  # seconds a drill waits for answers unless told


class DrillRequest(_Body):
    """Drill a target: every live instance rehearses its kill and answers, refusing nothing."""

    target_type: TargetTypeName
    target_id: TargetId
    timeout: Annotated[
        float,
        Field(gt=0, le=60, description="Seconds to wait for every live instance's answer"),
        RealNumber,
    ] = DRILL_TIMEOUT


class DrillQuery(PageQuery):
    """Drills of one target type or target, if given."""

    target_type: TargetTypeName | None = None
    target_id: TargetId | None = None


class DrillPath(BaseModel):
    """The drill in the path."""

    drill_id: Annotated[
        str, StringConstraints(min_length=1, max_length=36, pattern=r"^[0-9a-f-]+$")
    ]


class DrillAckIn(_Body):
    """The instance rehearsed the drill's kill on its kill index."""

    instance_id: InstanceId
    agent_id: TargetId | None = None
    run_id: TargetId | None = None
    mission_id: TargetId | None = None


class DrillAckAccepted(BaseModel):
    """Whether the drill was waiting for this instance's answer."""

    expected: bool


class DrillPublic(BaseModel):
    """A drill and its result: how many live instances answered, how fast, and which not."""

    id: str
    target_type: TargetTypeName
    target_id: str
    status: DrillStatusName
    started_by: str
    started_at: datetime
    finished_at: datetime | None
    timeout_s: float
    live: int
    acknowledged: int
    slowest_ms: float | None
    not_answering: list[str]
    scheduled: bool


class DrillsPublic(BaseModel):
    """A page of drills, newest first, and how many match in all."""

    data: list[DrillPublic]
    count: int


class AgentPublic(BaseModel):
    """An agent across its instances: health, totals, cost today and in all, kill switch."""

    agent_id: str
    health: HealthName
    last_seen: datetime
    instances: list[InstancePublic]
    executed: int
    refused: int
    failed: int
    cancelled: int
    cost_usd: float
    cost_usd_today: float
    kill_switch: KillSwitchPublic | None
    last_drill: DrillPublic | None = None  # its newest judged drill (an added field)


class AgentsPublic(BaseModel):
    """A page of agents by id, and how many there are in all."""

    data: list[AgentPublic]
    count: int


class AgentPath(BaseModel):
    """The agent in the path."""

    agent_id: TargetId


class RunPath(BaseModel):
    """The run in the path."""

    run_id: TargetId


class RunFinishedPublic(BaseModel):
    """A finished run, and its kill made ``until`` it ended, which ended with it (if any)."""

    run_id: str
    ended: KillSwitchPublic | None


class CheckpointPath(BaseModel):
    """The checkpoint in the path."""

    key: CheckpointKey


class CheckpointIn(_Body):
    """A JSON state of at most 256 KiB (compact JSON)."""

    state: Any


class CheckpointPublic(BaseModel):
    """The last state stored under a key."""

    key: str
    state: Any
    updated_at: datetime


# -- series: the fleet over time ------------------------------------------------------------------


def _duration_rule(problem: Any) -> AfterValidator:
    def check(value: str) -> str:
        message = problem(series.seconds(value))
        if message is not None:
            raise ValueError(message)
        return value

    return AfterValidator(check)


_DURATION = StringConstraints(max_length=8, pattern=series.DURATION_PATTERN)
Window = Annotated[
    str,
    _DURATION,
    Field(description=f"How far back: {series.WINDOW_RULE} (e.g. 24h)"),
    _duration_rule(series.window_problem),
]
Step = Annotated[
    str,
    _DURATION,
    Field(description=f"The length of each bucket: {series.STEP_RULE}; {series.GRID_RULE}"),
    _duration_rule(series.step_problem),
]


class SeriesQuery(_Query):
    """The window of time and the length of its buckets."""

    window: Window = "24h"
    step: Step = "5m"


class SeriesCounts(BaseModel):
    """Calls and cost over some time.

    ``executed``, ``failed`` and ``cost_usd`` are what the guards' heartbeats counted;
    ``refused``, ``cancelled`` and ``unavailable`` are the interventions they reported
    (HARD_BLOCK, CANCELLED, UNAVAILABLE), by when each occurred.
    """

    executed: int = 0
    refused: int = 0
    cancelled: int = 0
    unavailable: int = 0
    failed: int = 0
    cost_usd: float = 0.0


class SeriesPoint(SeriesCounts):
    """One bucket, from ``at`` for the series' ``step`` seconds."""

    at: datetime


class SeriesEvent(BaseModel):
    """A kill or revive of a target, from the audit log; ``reason`` is the kill's."""

    kind: Literal["kill", "revive"]
    at: datetime
    target_type: TargetTypeName
    target_id: str
    actor: str
    reason: str | None
    kill_switch_id: str | None
    version: int | None


class SeriesPublic(BaseModel):
    """An agent's (or, without ``agent_id``, the organization's) calls, cost, kills and revives
    over a window, in buckets of ``step`` seconds from ``start`` to ``end``, oldest first; the
    last bucket holds the time of the request.

    ``events``: kills and revives of the targets that concern the agent (the agent, the runs
    and missions its instances report, and any target that refused or stopped its calls in the
    window), or of every target of the organization; oldest first, the newest 500 of
    ``events_count``.
    """

    agent_id: str | None
    window: int
    step: int
    start: datetime
    end: datetime
    points: list[SeriesPoint]
    totals: SeriesCounts
    events: list[SeriesEvent]
    events_count: int


# -- the AgentSentinel SDK (agentsentinel-sdk 0.4), in its own formats ---------------------------

SENTINEL_AGENT_HEADER = "X-Sentinel-Agent-Id"
SENTINEL_RUN_HEADER = "X-Sentinel-Run-Id"
HeaderId = Annotated[str, StringConstraints(min_length=1, max_length=256, pattern=_HEADER_ID)]
# Free text of the SDK's records (reasons, descriptions, tags): any text but NUL, bounded.
SentinelText = Annotated[str, StringConstraints(max_length=65536, pattern=_NO_NUL)]
SentinelTag = Annotated[str, StringConstraints(max_length=256, pattern=_NO_NUL)]
NOT_STORED = Field(default=None, description="Accepted as sent, not stored")


class SentinelHeaders(_Query):
    """Who an AgentSentinel SDK says is calling (``X-Sentinel-Harness`` and ``-Principal`` are
    not read)."""

    agent_id: HeaderId | None = Field(default=None, alias="X-Sentinel-Agent-Id")
    run_id: HeaderId | None = Field(default=None, alias="X-Sentinel-Run-Id")


SentinelInterventionType = Literal[
    "hard_block",
    "approval_required",
    "rate_limited",
    "budget_exceeded",
    "budget_warning",
    "downgrade",
    "warning",
    "missing_evidence",
    "pii_blocked",
    "content_blocked",
    "loop_detected",
    "idempotent_replay",
]
SentinelOutcome = Literal[
    "blocked", "escalated", "approved_after_review", "rejected_after_review", "modified", "warned"
]


class SentinelInterventionIn(_Body):
    """One AgentSentinel intervention record, as the SDK's ``InterventionRecord.to_dict()``."""

    intervention_type: SentinelInterventionType
    outcome: SentinelOutcome
    action_name: ActionName
    action_description: SentinelText | None = None
    agent_id: TargetId | None = None
    run_id: TargetId | None = None
    task_id: _OptionalId = None
    mission_id: TargetId | None = None
    policy_name: SentinelText | None = None
    estimated_cost: Dollars = 0.0
    actual_cost: Dollars = 0.0
    risk_level: Literal["minimal", "low", "medium", "high", "critical"] = "medium"
    blast_radius: Any = NOT_STORED
    reason: SentinelText | None = None
    agent_intent: SentinelText | None = None
    original_inputs: Any = NOT_STORED
    modified_inputs: Any = NOT_STORED
    context: Any = NOT_STORED
    remediation_payload: Any = NOT_STORED
    timestamp: ReportedTime


class SentinelInterventionAccepted(BaseModel):
    """The intervention as agentguard stored it (``created`` false: it was stored before)."""

    id: str
    type: InterventionTypeName
    created: bool


SentinelLedgerOutcome = Literal[
    "success", "error", "blocked", "rejected", "replayed", "idempotent_replay"
]


class SentinelLedgerEntry(_Body):
    """One entry of an AgentSentinel ledger (``ledger.jsonl``): a guarded action and its cost."""

    id: Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=_ID), ID_RULE, IdText]
    timestamp: ReportedTime
    action: ActionName
    cost_usd: Dollars
    duration_ms: Annotated[float, Field(ge=0, le=1e12, allow_inf_nan=False), RealNumber]
    outcome: SentinelLedgerOutcome
    tags: Annotated[list[SentinelTag], Field(max_length=100)] = []
    payload: Any = NOT_STORED
    compliance_metadata: Any = NOT_STORED
    agent_id: TargetId | None = None
    run_id: TargetId | None = None
    task_id: _OptionalId = None
    mission_id: TargetId | None = None
    inputs_redacted: bool = False
    impact: Literal["read", "low", "medium", "high"] | None = None


class SentinelIngestIn(_Body):
    """A batch of one run's AgentSentinel ledger entries (``POST /api/v1/ingest``)."""

    run_id: TargetId
    entries: Annotated[list[SentinelLedgerEntry], Field(max_length=1000)]
    agent_id: TargetId | None = None
    mission_id: TargetId | None = None


class SentinelIngestAccepted(BaseModel):
    """Entries received, new ones (the rest were sent before), and new ones naming no agent."""

    received: int
    created: int
    unattributed: int


# -- errors --------------------------------------------------------------------------------------


class ErrorResponse(BaseModel):
    """Every error: a code, a sentence, and where relevant the field, scope or existing record."""

    error: str
    detail: str
    field: str | None = None
    required_scope: ScopeName | None = None
    kill_switch: KillSwitchPublic | None = None
