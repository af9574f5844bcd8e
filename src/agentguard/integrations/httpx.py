"""Outbound HTTP: an httpx transport that refuses requests made under a killed scope.

Usage::

    import httpx
    from agentguard.integrations.httpx import AsyncGuardedTransport, GuardedTransport

    client = httpx.Client(transport=GuardedTransport(guard=guard))
    aclient = httpx.AsyncClient(transport=AsyncGuardedTransport(httpx.AsyncHTTPTransport()))

    with agentguard.scope(agent_id="support-bot", run_id="run-42"):
        client.get("https://api.example.com/")   # PolicyViolationError once the agent is killed

Each transport wraps an inner one (default: httpx's own) and checks the current
``agentguard.scope`` before handing the request on, so a refused request never leaves the
process. Requests are checked as the action ``"http_request"`` (``action=`` to change it), so
``guard.kill("tool", "http_request")`` cuts every guarded client off. Unwrap with ``.inner``.
httpx is a core dependency of agentguard: this module needs no extra. Clients built on
``httpx2`` (the OpenAI 3.x and Anthropic 2.x SDKs) do not go through these transports.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx

from ._gate import Gate

if TYPE_CHECKING:
    from ..guard import Guard

__all__ = ["HTTP_ACTION", "AsyncGuardedTransport", "GuardedTransport"]

HTTP_ACTION = "http_request"


class GuardedTransport(httpx.BaseTransport):
    """A sync httpx transport that checks the kill state before sending."""

    def __init__(
        self,
        inner: httpx.BaseTransport | None = None,
        guard: Guard | None = None,
        *,
        action: str = HTTP_ACTION,
    ) -> None:
        self.inner = inner if inner is not None else httpx.HTTPTransport()
        self.action = action
        self._gate = Gate(guard)

    @property
    def guard(self) -> Guard | None:
        return self._gate.guard

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Refuse (raise ``PolicyViolationError``) or send through the inner transport."""
        return self._gate.run(
            self.action, lambda: self.inner.handle_request(request), arguments=request
        )

    def close(self) -> None:
        """Close the inner transport."""
        self.inner.close()


class AsyncGuardedTransport(httpx.AsyncBaseTransport):
    """An async httpx transport that checks the kill state before sending."""

    def __init__(
        self,
        inner: httpx.AsyncBaseTransport | None = None,
        guard: Guard | None = None,
        *,
        action: str = HTTP_ACTION,
    ) -> None:
        self.inner = inner if inner is not None else httpx.AsyncHTTPTransport()
        self.action = action
        self._gate = Gate(guard)

    @property
    def guard(self) -> Guard | None:
        return self._gate.guard

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Refuse (raise ``PolicyViolationError``) or send through the inner transport."""
        return await self._gate.arun(
            self.action, lambda: self.inner.handle_async_request(request), arguments=request
        )

    async def aclose(self) -> None:
        """Close the inner transport."""
        await self.inner.aclose()
