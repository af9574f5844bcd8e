"""The three wire formats: Standard Webhooks (signed JSON), Slack and PagerDuty Events v2.

- ``standard``: the event's envelope as JSON, with ``webhook-id``, ``webhook-timestamp`` and
  ``webhook-signature`` (``v1,`` and the base64 HMAC-SHA256 of ``id.timestamp.body`` under the
  endpoint's ``whsec_`` secret), as https://www.standardwebhooks.com specifies.
- ``slack``: an incoming-webhook message, ``{"text": ...}``; text from events is escaped, so a
  reason cannot mention ``@channel`` or hide a link.
- ``pagerduty``: an Events API v2 event: ``trigger`` on a kill (``dedup_key`` the kill switch's
  id, so its rule trip and ack timeout join the same alert), ``resolve`` on its revive; a
  failed drill triggers an alert of its target (``dedup_key`` ``agentguard/<org>/drill.failed/
  <type>/<id>``), so the failed drills of one target join one alert.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..._version import __version__
from ...protocol import WEBHOOK_FORMATS

FORMATS = WEBHOOK_FORMATS
SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32  # the spec asks for 24 to 64 random bytes
PAGERDUTY_URL = "https://events.pagerduty.com/v2/enqueue"
USER_AGENT = f"agentguard-webhooks/{__version__}"
_SUMMARY_LENGTH = 1024  # PagerDuty's limit
_DEDUP_LENGTH = 255
_SEVERITY = {
    "kill": "critical",
    "rule.tripped": "critical",
    "ack.timeout": "error",
    "fail_closed": "error",
    "rule.observed": "warning",
    "drill.failed": "error",
}


def new_signing_secret() -> str:
    """A fresh endpoint secret: ``whsec_`` and 32 random bytes in base64."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: ``v1,`` and the base64 HMAC-SHA256 of ``id.ts.body``."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


@dataclass(frozen=True)
class Outgoing:
    """One HTTP request to send: headers and body."""

    headers: list[tuple[str, str]]
    body: bytes


def render(
    format: str,
    *,
    secret: str | None,
    event_id: str,
    subject: str,
    envelope: str,
    now: datetime,
) -> Outgoing:
    """The request delivering ``envelope`` (the event's JSON) in ``format``."""
    headers = [("Content-Type", "application/json"), ("User-Agent", USER_AGENT)]
    if format == "standard":
        body = envelope.encode()
        timestamp = int(now.timestamp())
        headers += [
            ("webhook-id", event_id),
            ("webhook-timestamp", str(timestamp)),
            ("webhook-signature", sign(secret or "", event_id, timestamp, body)),
        ]
        return Outgoing(headers, body)
    event = json.loads(envelope)
    if format == "slack":
        message: dict[str, Any] = {"text": slack_text(event)}
    elif format == "pagerduty":
        message = pagerduty_event(event, routing_key=secret or "", subject=subject)
    else:
        raise ValueError(f"unknown webhook format {format!r}")
    return Outgoing(headers, json.dumps(message, ensure_ascii=False).encode())


# -- words ---------------------------------------------------------------------------------------


def _target(target_type: object, target_id: object) -> str:
    return f"{target_type} {str(target_id)!r}"


def _because(reason: object) -> str:
    return f": {reason}" if reason else ""


def summary(event: dict[str, Any]) -> str:
    """The event in one sentence, as a person on call reads it."""
    kind, d = event["type"], event["data"]
    ks = d.get("kill_switch") or {}
    target = _target(ks.get("target_type"), ks.get("target_id"))
    if kind == "kill":
        return f"Killed {target} by {ks.get('killed_by')}{_because(ks.get('reason'))}"
    if kind == "revive":
        return (
            f"Revived {target} by {ks.get('revived_by')} (killed by {ks.get('killed_by')}"
            f"{_because(ks.get('reason'))})"
        )
    if kind == "rule.tripped":
        return f"Rule {d.get('rule')} tripped and killed {target}{_because(ks.get('reason'))}"
    if kind == "rule.observed":
        where = _target(d.get("target_type"), d.get("target_id"))
        because = _because(d.get("reason"))
        return f"Rule {d.get('rule')} would have killed {where} (observe mode){because}"
    if kind == "ack.timeout":
        waiting = ", ".join(str(i.get("instance_id")) for i in d.get("waiting_on", [])[:5])
        more = len(d.get("waiting_on", [])) - 5
        return (
            f"Kill of {target} acknowledged by {d.get('acknowledged')}/{d.get('live')} live "
            f"instances within {d.get('waited_s')} s"
            + (f"; waiting on {waiting}" if waiting else "")
            + (f" and {more} more" if more > 0 else "")
            + " (the kill is in force)"
        )
    if kind == "fail_closed":
        who = f"Instance {d.get('instance_id')}" if d.get("instance_id") else "A guard"
        agent = f" of agent {d.get('agent_id')!r}" if d.get("agent_id") else ""
        return (
            f"{who}{agent} refused {d.get('refused')} calls because its kill state is "
            f"unavailable (fail closed){_because(d.get('reason'))}"
        )
    if kind == "drill.failed":
        where = _target(d.get("target_type"), d.get("target_id"))
        silent = [str(i) for i in d.get("not_answering", [])]
        more = int(d.get("live") or 0) - int(d.get("acknowledged") or 0) - len(silent[:5])
        slowest = d.get("slowest_ms")
        within = f" within {slowest:.0f} ms" if isinstance(slowest, (int, float)) else ""
        return (
            f"Drill of {where} failed: {d.get('acknowledged')}/{d.get('live')} live instances "
            f"acknowledged it{within}"
            + (f"; not answering: {', '.join(silent[:5])}" if silent else "")
            + (f" and {more} more" if more > 0 else "")
            + " (a kill may not reach them)"
        )
    if kind == "webhook.test":
        return f"agentguard test message for webhook {d.get('webhook_id')}"
    return f"agentguard event {kind}"


_SLACK_ICONS = {
    "kill": ":octagonal_sign:",
    "revive": ":white_check_mark:",
    "rule.tripped": ":rotating_light:",
    "rule.observed": ":eyes:",
    "ack.timeout": ":hourglass:",
    "fail_closed": ":warning:",
    "drill.failed": ":fire_engine:",
    "webhook.test": ":wave:",
}


def slack_escape(text: str) -> str:
    """Slack's three control characters as entities: text can then neither ping nor link."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_text(event: dict[str, Any]) -> str:
    """The message text: an icon, the sentence, the organization."""
    org = event["data"].get("organization_id")
    icon = _SLACK_ICONS.get(event["type"], ":robot_face:")
    text = slack_escape(summary(event))
    return f"{icon} {text} (agentguard, organization {slack_escape(str(org))})"


def pagerduty_event(event: dict[str, Any], *, routing_key: str, subject: str) -> dict[str, Any]:
    """An Events API v2 event: trigger, or resolve for a revive."""
    kind, d = event["type"], event["data"]
    ks = d.get("kill_switch") or {}
    if ks:
        dedup = str(ks["id"])
    elif kind == "drill.failed":
        dedup = f"agentguard/{d.get('organization_id')}/{kind}/{d.get('target_type')}/"
        dedup += str(d.get("target_id"))
    else:
        dedup = f"agentguard/{d.get('organization_id')}/{kind}/{subject}"
    if kind == "revive":
        return {
            "routing_key": routing_key,
            "event_action": "resolve",
            "dedup_key": dedup[:_DEDUP_LENGTH],
        }
    if ks:
        source = f"{ks.get('target_type')}/{ks.get('target_id')}"
    elif d.get("instance_id") or d.get("agent_id"):
        source = str(d.get("instance_id") or d.get("agent_id"))
    elif d.get("target_type"):
        source = f"{d.get('target_type')}/{d.get('target_id')}"
    else:
        source = "agentguard"
    return {
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": dedup[:_DEDUP_LENGTH],
        "client": "agentguard",
        "payload": {
            "summary": summary(event)[:_SUMMARY_LENGTH],
            "source": source,
            "severity": _SEVERITY.get(kind, "info"),
            "timestamp": event["timestamp"],
            "component": source,
            "group": str(d.get("organization_id")),
            "class": kind,
            "custom_details": d,
        },
    }
