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

A request stays in flight until its response is closed, so a kill stops it midway with
``PolicyViolationError`` (``cancel_in_flight=False`` to let requests finish): the async
transport cancels the request's task while it waits (for the headers or the next chunk of a
streaming response); the sync one shuts the connection's socket down under the reading thread
(HTTP/1.1: on a new connection while it waits for the headers, on any once they came; an
HTTP/2 connection is shared, so a sync HTTP/2 stream stops at its next chunk), and every
streaming response refuses its next chunk. The chunk that was being read is not delivered.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx

from ._gate import Gate
from ._http_flight import (
    AsyncGuardedBody,
    GuardedBody,
    abort_on_kill,
    aborting_new_connections,
    restore_trace,
)

if TYPE_CHECKING:
    from ..guard import Guard

__all__ = ["HTTP_ACTION", "AsyncGuardedTransport", "GuardedTransport"]

HTTP_ACTION = "http_request"


class GuardedTransport(httpx.BaseTransport):
    """A sync httpx transport that checks the kill state before sending, and stops a request
    still in flight when a kill comes."""

    def __init__(
        self,
        inner: httpx.BaseTransport | None = None,
        guard: Guard | None = None,
        *,
        action: str = HTTP_ACTION,
        cancel_in_flight: bool = True,
    ) -> None:
        self.inner = inner if inner is not None else httpx.HTTPTransport()
        self.action = action
        self._gate = Gate(guard, cancel_in_flight=cancel_in_flight, where="GuardedTransport")

    @property
    def guard(self) -> Guard | None:
        return self._gate.guard

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Refuse (raise ``PolicyViolationError``) or send through the inner transport."""
        call = self._gate.begin(self.action, arguments=request)
        traced = request.extensions.get("trace")
        request.extensions["trace"] = aborting_new_connections(call, traced)
        try:
            response = self.inner.handle_request(request)
        except BaseException as exc:
            call.end()
            error = call.finish(exc)
            if error is exc:
                raise
            raise error from exc
        finally:
            restore_trace(request, traced)
        abort_on_kill(call, response)
        guarded = _GuardedStream(response.stream, call)
        response.stream = guarded
        guarded.raise_if_cancelled()  # a kill while the headers came
        return response

    def close(self) -> None:
        """Close the inner transport."""
        self.inner.close()


class AsyncGuardedTransport(httpx.AsyncBaseTransport):
    """An async httpx transport that checks the kill state before sending, and stops a
    request still in flight when a kill comes."""

    def __init__(
        self,
        inner: httpx.AsyncBaseTransport | None = None,
        guard: Guard | None = None,
        *,
        action: str = HTTP_ACTION,
        cancel_in_flight: bool = True,
    ) -> None:
        self.inner = inner if inner is not None else httpx.AsyncHTTPTransport()
        self.action = action
        self._gate = Gate(guard, cancel_in_flight=cancel_in_flight, where="AsyncGuardedTransport")

    @property
    def guard(self) -> Guard | None:
        return self._gate.guard

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Refuse (raise ``PolicyViolationError``) or send through the inner transport."""
        call = await self._gate.abegin(self.action, arguments=request)
        try:
            response = await self.inner.handle_async_request(request)
        except BaseException as exc:
            call.end()
            error = call.finish(exc)
            if error is exc:
                raise
            raise error from exc
        call.stream_idle()  # the headers came; the body is read later, perhaps in another task
        guarded = _AsyncGuardedStream(response.stream, call)
        response.stream = guarded
        await guarded.raise_if_cancelled()
        return response

    async def aclose(self) -> None:
        """Close the inner transport."""
        await self.inner.aclose()


class _GuardedStream(GuardedBody, httpx.SyncByteStream):
    """A response body that ends with the request's ``PolicyViolationError`` after a kill."""


class _AsyncGuardedStream(AsyncGuardedBody, httpx.AsyncByteStream):
    """An async response body: a kill cancels the read it waits on, or refuses the next."""
