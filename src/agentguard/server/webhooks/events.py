"""What a webhook is told: the events, their subjects and the data each one carries.

Every event is sent as the same envelope, ``{"type", "timestamp", "data"}`` (the shape the
Standard Webhooks spec recommends); the Slack and PagerDuty formats are written from it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from ...protocol import WEBHOOK_EVENTS, Drill
from ...records import Intervention, InterventionType, KillChange, KillSwitch

# The events a webhook may subscribe to (``protocol.WebhookEventName``).
EVENTS = WEBHOOK_EVENTS
TEST_EVENT = "webhook.test"  # sent by ``POST /webhooks/{id}/test`` to that webhook alone
# An instance refusing calls for want of kill state reports them every second or so: one
# ``fail_closed`` per instance and webhook in this long is enough to wake someone.
FAIL_CLOSED_QUIET = timedelta(minutes=10)
MAX_WAITING_ON = 50  # instances named in an ack.timeout


@dataclass(frozen=True)
class WebhookEvent:
    """One event, before it is queued for the webhooks that take it.

    ``subject`` orders deliveries (a webhook gets the events of one subject in order) and,
    with ``quiet_for``, holds back repeats: none of the same type and subject is queued for a
    webhook that got one less than ``quiet_for`` ago.
    """

    type: str
    subject: str
    occurred_at: datetime
    data: dict[str, Any]
    quiet_for: timedelta | None = None
    id: str = field(default_factory=lambda: f"msg_{uuid.uuid4().hex}")

    def envelope(self) -> str:
        """The JSON body of the standard format: ``{"type", "timestamp", "data"}``."""
        body = {"type": self.type, "timestamp": _iso(self.occurred_at), "data": self.data}
        return json.dumps(body, separators=(",", ":"), ensure_ascii=False)


def _iso(when: datetime) -> str:
    return when.isoformat().replace("+00:00", "Z")


def _kill_switch(ks: KillSwitch) -> dict[str, Any]:
    return ks.model_dump(mode="json")


def change_events(change: KillChange, *, rule: str | None = None) -> list[WebhookEvent]:
    """``kill`` or ``revive``; a kill by a server rule is also ``rule.tripped``."""
    ks = change.kill_switch
    when = ks.killed_at if change.kind == "kill" else ks.revived_at or ks.killed_at
    data = {
        "organization_id": ks.organization_id,
        "version": change.version,
        "kill_switch": _kill_switch(ks),
    }
    events = [WebhookEvent(change.kind, ks.id, when, data)]
    if change.kind == "kill" and rule is not None:
        events.append(WebhookEvent("rule.tripped", ks.id, when, {**data, "rule": rule}))
    return events


def intervention_events(
    organization_id: str, items: Sequence[Intervention], *, reporter: str | None
) -> list[WebhookEvent]:
    """``rule.observed`` for each observation; ``fail_closed`` once per refusing instance."""
    events = [
        _observed(organization_id, iv, reporter)
        for iv in items
        if iv.type == InterventionType.OBSERVED
    ]
    unavailable: dict[str, list[Intervention]] = {}
    for iv in items:
        if iv.type == InterventionType.UNAVAILABLE:
            unavailable.setdefault(_refuser(iv), []).append(iv)
    events += [_fail_closed(organization_id, s, ivs, reporter) for s, ivs in unavailable.items()]
    return events


def _observed(org: str, iv: Intervention, reporter: str | None) -> WebhookEvent:
    rule = iv.action.removeprefix("rule:") if iv.action.startswith("rule:") else iv.action
    data = {
        "organization_id": org,
        "rule": rule,
        "target_type": iv.target_type,
        "target_id": iv.target_id,
        "reason": iv.reason,
        "agent_id": iv.agent_id,
        "run_id": iv.run_id,
        "mission_id": iv.mission_id,
        "instance_id": iv.instance_id,
        "intervention_id": iv.id,
        "occurred_at": _iso(iv.occurred_at),
        "reported_by": reporter,
    }
    return WebhookEvent("rule.observed", f"intervention/{iv.id}", iv.occurred_at, data)


def _refuser(iv: Intervention) -> str:
    if iv.instance_id:
        return f"instance/{iv.instance_id}"
    return f"agent/{iv.agent_id}" if iv.agent_id else "unknown"


def _fail_closed(
    org: str, subject: str, items: list[Intervention], reporter: str | None
) -> WebhookEvent:
    first = min(items, key=lambda iv: iv.occurred_at)
    last = max(items, key=lambda iv: iv.occurred_at)
    data = {
        "organization_id": org,
        "instance_id": first.instance_id,
        "agent_id": first.agent_id,
        "run_id": first.run_id,
        "mission_id": first.mission_id,
        "refused": len(items),  # in the report that raised this event
        "first_refused_at": _iso(first.occurred_at),
        "last_refused_at": _iso(last.occurred_at),
        "reason": last.reason,
        "reported_by": reporter,
    }
    return WebhookEvent("fail_closed", subject, last.occurred_at, data, FAIL_CLOSED_QUIET)


def ack_timeout_event(
    change: KillChange,
    *,
    waited: float,
    live: int,
    acknowledged: int,
    waiting_on: Iterable[dict[str, Any]],
    requested_by: str,
    now: datetime,
) -> WebhookEvent:
    """A ``kill?wait=`` that ended before every live instance acknowledged the kill."""
    ks = change.kill_switch
    waiting = list(waiting_on)
    data = {
        "organization_id": ks.organization_id,
        "version": change.version,
        "kill_switch": _kill_switch(ks),
        "waited_s": round(waited, 3),
        "live": live,
        "acknowledged": acknowledged,
        "waiting_on": waiting[:MAX_WAITING_ON],
        "requested_by": requested_by,
    }
    return WebhookEvent("ack.timeout", ks.id, now, data)


def drill_failed_event(organization_id: str, drill: Drill, *, now: datetime) -> WebhookEvent:
    """A drill that not every live instance of its target acknowledged in time."""
    data = {
        "organization_id": organization_id,
        "drill": drill.model_dump(mode="json"),
        "target_type": drill.target_type,
        "target_id": drill.target_id,
        "live": drill.live,
        "acknowledged": drill.acknowledged,
        "slowest_ms": drill.slowest_ms,
        "not_answering": drill.not_answering[:MAX_WAITING_ON],
    }
    return WebhookEvent("drill.failed", f"drill/{drill.id}", now, data)


def webhook_test_event(
    organization_id: str, webhook_id: str, *, requested_by: str, now: datetime
) -> WebhookEvent:
    """The event ``agentguard webhooks test`` sends."""
    event_id = f"msg_{uuid.uuid4().hex}"
    data = {
        "organization_id": organization_id,
        "webhook_id": webhook_id,
        "requested_by": requested_by,
    }
    return WebhookEvent(TEST_EVENT, event_id, now, data, id=event_id)
