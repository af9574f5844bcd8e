"""A typed HTTP client of the agentguard API, for operators, scripts and the CLI.

    from agentguard.client import Client

    with Client("http://127.0.0.1:8000", api_key="ag_...") as client:
        client.kill("agent", "rogue-bot", reason="Drained $3k in 4 minutes")
        acks = client.wait_for_acks("agent", "rogue-bot", timeout=30)
        for event in client.events():      # kill / revive / intervention, live
            print(event.event, event.data)
        hook = client.create_webhook("https://hooks.example.com/x", ["kill", "revive"])
        print(hook.secret)                 # whsec_..., shown this once

The public face of :mod:`agentguard.remote.http`, its errors and the answers of
:mod:`agentguard.protocol`. Failures raise agentguard's own errors: :class:`AlreadyKilledError`
(409 on kill), :class:`NotKilledError` (404 on revive and acks), :class:`NotFoundError` and
:class:`ConflictError` (other 404 and 409), :class:`AuthenticationError` (401),
:class:`PermissionDeniedError` (403), :class:`InvalidInputError` naming the field (400, 413, 422),
:class:`ServerUnreachableError` with the URL tried, :class:`DatabaseUnavailableError` (503 while
the server's database is unreachable) and :class:`AgentGuardError` for the rest.
"""

from __future__ import annotations

from .errors import RevivePendingError
from .protocol import (
    Acks,
    Agent,
    AgentInstance,
    ApiKey,
    ApiKeyCreated,
    Drill,
    InstanceAck,
    Page,
    ReviveApproval,
    ReviveRequest,
    Series,
    SeriesCounts,
    SeriesEvent,
    SeriesPoint,
    StreamEvent,
    Webhook,
    WebhookCreated,
    WebhookDelivery,
)
from .remote.errors import (
    ConflictError,
    DatabaseUnavailableError,
    NotFoundError,
    ServerUnreachableError,
)
from .remote.http import Client

__all__ = [
    "Acks",
    "Agent",
    "AgentInstance",
    "ApiKey",
    "ApiKeyCreated",
    "Client",
    "ConflictError",
    "DatabaseUnavailableError",
    "Drill",
    "InstanceAck",
    "NotFoundError",
    "Page",
    "ReviveApproval",
    "ReviveRequest",
    "RevivePendingError",
    "Series",
    "SeriesCounts",
    "SeriesEvent",
    "SeriesPoint",
    "ServerUnreachableError",
    "StreamEvent",
    "Webhook",
    "WebhookCreated",
    "WebhookDelivery",
]
