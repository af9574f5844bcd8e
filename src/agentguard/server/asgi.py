"""An app factory for ``uvicorn --factory`` (and so for ``--workers N``), configured by env vars.

``AGENTGUARD_DATABASE_URL`` names the database (default ``sqlite:///agentguard.db``);
``AGENTGUARD_STREAM_KEEPALIVE`` the seconds between the change stream's keep-alives (default 5).
``AGENTGUARD_MAX_STREAMS_PER_KEY`` and ``AGENTGUARD_MAX_STREAMS_PER_ORGANIZATION`` cap the
open change streams per credential and per organization in each worker (defaults 100, 1000).
``AGENTGUARD_RULES`` holds server rules, ``;``-separated, in the form ``agentguard serve --rule``
takes (``budget:limit_usd=100,window=3600;rate:limit=10000,window=60``).
``AGENTGUARD_REQUIRE_REASON=1`` refuses kills, revives and revive approvals without a reason.
``AGENTGUARD_OPERATORS_CAN_STOP_ALL=1`` lets operator keys stop (and resume) the whole
organization, not only admin keys.
``AGENTGUARD_REVIVE_APPROVALS`` holds the governed-revive rules, ``;``-separated, in the form
``agentguard serve --revive-approvals`` takes (``2`` or ``agent:payments*=2;acme/*=3``);
``AGENTGUARD_REVIVE_REQUEST_TTL`` the seconds a revive request waits (default 3600).
``AGENTGUARD_EXPIRY_INTERVAL`` is the seconds between passes reviving expired time-limited
kills (default 1).
``AGENTGUARD_WEBHOOKS_ALLOW_PRIVATE=1`` lets webhooks go to private and loopback addresses;
``AGENTGUARD_WEBHOOK_TIMEOUT`` (seconds per attempt, default 10) and
``AGENTGUARD_WEBHOOK_RETRY_FOR`` (seconds to keep retrying, default 86400) tune delivery.
``AGENTGUARD_CLERK_PUBLIC_KEY_FILE`` (a PEM file) with optional comma-separated
``AGENTGUARD_CLERK_AUTHORIZED_PARTIES`` and optional ``AGENTGUARD_CLERK_ISSUER`` enables
Clerk session tokens.
"""

from __future__ import annotations

import math
import os
from datetime import timedelta
from pathlib import Path

from starlette.authentication import AuthenticationBackend
from starlette.types import ASGIApp

from ..errors import InvalidInputError
from ..rules import Rule, parse_rule
from .app import KillSwitchServer
from .approvals import (
    DEFAULT_REQUEST_TTL,
    REVIVE_APPROVALS_ENV,
    REVIVE_REQUEST_TTL_ENV,
    ReviveApprovals,
)
from .auth.clerk import ClerkAuth
from .expiry import DEFAULT_EXPIRY_INTERVAL
from .hub import DEFAULT_MAX_STREAMS_PER_KEY, DEFAULT_MAX_STREAMS_PER_ORG
from .rules import validate_rules
from .webhooks.sender import WebhookSettings

DATABASE_URL_ENV = "AGENTGUARD_DATABASE_URL"
DEFAULT_DATABASE_URL = "sqlite:///agentguard.db"
KEEPALIVE_ENV = "AGENTGUARD_STREAM_KEEPALIVE"  # seconds between the stream's keep-alive comments
RULES_ENV = "AGENTGUARD_RULES"
REQUIRE_REASON_ENV = "AGENTGUARD_REQUIRE_REASON"  # "1": refuse kills without a reason
MAX_STREAMS_PER_KEY_ENV = "AGENTGUARD_MAX_STREAMS_PER_KEY"
MAX_STREAMS_PER_ORG_ENV = "AGENTGUARD_MAX_STREAMS_PER_ORGANIZATION"
WEBHOOKS_ALLOW_PRIVATE_ENV = "AGENTGUARD_WEBHOOKS_ALLOW_PRIVATE"  # "1": private addresses too
WEBHOOK_TIMEOUT_ENV = "AGENTGUARD_WEBHOOK_TIMEOUT"
WEBHOOK_RETRY_FOR_ENV = "AGENTGUARD_WEBHOOK_RETRY_FOR"
EXPIRY_INTERVAL_ENV = "AGENTGUARD_EXPIRY_INTERVAL"
DRILL_EVERY_ENV = "AGENTGUARD_DRILL_EVERY"  # seconds between scheduled drills of each agent
DRILL_TIMEOUT_ENV = "AGENTGUARD_DRILL_TIMEOUT"  # seconds a scheduled drill waits for answers
OPERATORS_CAN_STOP_ALL_ENV = "AGENTGUARD_OPERATORS_CAN_STOP_ALL"  # "1": operators may stop all


def rules_from(specs: str) -> list[Rule]:
    """The server rules of ``;``-separated specs; an error names the spec that is wrong."""
    return validate_rules([parse_rule(spec) for spec in specs.split(";") if spec.strip()])


def server_from_env() -> KillSwitchServer:
    """A server configured from the environment."""
    backends: list[AuthenticationBackend] = []
    pem_file = os.environ.get("AGENTGUARD_CLERK_PUBLIC_KEY_FILE")
    if pem_file:
        parties = os.environ.get("AGENTGUARD_CLERK_AUTHORIZED_PARTIES", "")
        backends.append(
            ClerkAuth(
                Path(pem_file).read_text(),
                authorized_parties=[p.strip() for p in parties.split(",") if p.strip()],
                issuer=os.environ.get("AGENTGUARD_CLERK_ISSUER") or None,
            )
        )
    return KillSwitchServer(
        os.environ.get(DATABASE_URL_ENV, DEFAULT_DATABASE_URL),
        auth=backends,
        keepalive=float(os.environ.get(KEEPALIVE_ENV, "5")),
        max_streams_per_key=_count(MAX_STREAMS_PER_KEY_ENV, DEFAULT_MAX_STREAMS_PER_KEY),
        max_streams_per_organization=_count(MAX_STREAMS_PER_ORG_ENV, DEFAULT_MAX_STREAMS_PER_ORG),
        rules=rules_from(os.environ.get(RULES_ENV, "")),
        require_reason=os.environ.get(REQUIRE_REASON_ENV, "") == "1",
        webhooks=webhook_settings_from_env(),
        expiry_interval=_seconds(EXPIRY_INTERVAL_ENV, DEFAULT_EXPIRY_INTERVAL),
        drill_every=_seconds(DRILL_EVERY_ENV, 0.0) or None,
        drill_timeout=_seconds(DRILL_TIMEOUT_ENV, 5.0),
        operators_can_stop_all=os.environ.get(OPERATORS_CAN_STOP_ALL_ENV, "") == "1",
        revive_approvals=revive_approvals_from_env(),
    )


def revive_approvals_from_env() -> ReviveApprovals:
    """The governed-revive rules and request lifetime from the environment."""
    ttl = _seconds(REVIVE_REQUEST_TTL_ENV, DEFAULT_REQUEST_TTL.total_seconds())
    return ReviveApprovals.parse(
        os.environ.get(REVIVE_APPROVALS_ENV, ""), ttl=timedelta(seconds=ttl)
    )


def webhook_settings_from_env() -> WebhookSettings:
    """Webhook settings from the environment (defaults where unset)."""
    defaults = WebhookSettings()
    return WebhookSettings(
        allow_private_addresses=os.environ.get(WEBHOOKS_ALLOW_PRIVATE_ENV, "") == "1",
        timeout=_seconds(WEBHOOK_TIMEOUT_ENV, defaults.timeout),
        retry_for=_seconds(WEBHOOK_RETRY_FOR_ENV, defaults.retry_for),
    )


def _seconds(name: str, default: float) -> float:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds <= 0:
        raise InvalidInputError(name, f"must be a positive number of seconds; got {value!r}")
    return seconds


def _count(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise InvalidInputError(name, f"must be a whole number; got {value!r}") from None


def create_app() -> ASGIApp:
    """The ASGI app of a server configured from the environment (one per worker process)."""
    return server_from_env().app
