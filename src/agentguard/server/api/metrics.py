"""``GET /metrics``: the caller's organization's metrics in the Prometheus exposition format.

Not a JSON endpoint (its answer is text), so it is routed and documented here, like the change
stream. It needs the ``metrics`` scope (a key that reads nothing else), or ``read``,
``operator`` or ``admin``; the answer covers the credential's organization only.
"""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from ..auth.principal import PERMISSIONS
from ..metrics import Metrics
from ..problems import DESCRIPTIONS, from_exception
from ..store.database import Outage
from .authenticator import Authenticator
from .call import request_id

METRICS_PATH = "/metrics"
PERMISSION = "metrics"


class MetricsEndpoint:
    """Answers a scrape from the database, in a worker thread (a few aggregate queries)."""

    def __init__(self, *, auth: Authenticator, metrics: Metrics, outage: Outage) -> None:
        self.auth = auth
        self.metrics = metrics
        self.outage = outage

    async def serve(self, request: Request) -> Response:
        """``GET /metrics``."""
        rid = request_id(request)
        response: Response
        try:
            principal = await self.auth.require(request, PERMISSION)
            body, content_type = await run_in_threadpool(
                self.metrics.exposition,
                principal.organization_id,
                request.headers.get("accept", ""),
            )
        except Exception as exc:
            error = from_exception(exc, self.outage)
            if error is None:
                raise
            response = error.response()
        else:
            response = Response(body, media_type=content_type)
        response.headers["x-request-id"] = rid
        return response


def metrics_operation() -> dict[str, Any]:
    """The OpenAPI operation of ``GET /metrics`` (not a JSON endpoint, so written out)."""
    scopes = " or ".join(f"`{s}`" for s in ("admin", *PERMISSIONS[PERMISSION]))
    error = {
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}
    }
    text = {"schema": {"type": "string"}}
    return {
        "operationId": "metrics",
        "summary": "The organization's metrics, for Prometheus",
        "tags": ["operations"],
        "description": (
            f"Needs the {scopes} scope. The Prometheus text format (OpenMetrics when the "
            "`Accept` header asks for it) of the credential's organization: active kills by "
            "target type, instances by health, open change streams, interventions by type, "
            "rule trips, the acknowledgement latency histogram, and whether the database could "
            "be read. Read from the database, so every worker and replica answers alike."
        ),
        "responses": {
            "200": {
                "description": "Metrics in the Prometheus exposition format",
                "content": {"text/plain": text, "application/openmetrics-text": text},
            },
            "401": {"description": DESCRIPTIONS[401], **error},
            "403": {"description": DESCRIPTIONS[403], **error},
            "503": {"description": DESCRIPTIONS[503], **error},
        },
    }
