"""Outbound HTTP through httpx2, the HTTP stack of the OpenAI 3.x and Anthropic 2.x SDKs.

Usage::

    import httpx2
    from agentguard.integrations.httpx2 import AsyncGuardedTransport, GuardedTransport

    client = httpx2.Client(transport=GuardedTransport(guard=guard))
    aclient = httpx2.AsyncClient(transport=AsyncGuardedTransport(httpx2.AsyncHTTPTransport()))

    with agentguard.scope(agent_id="support-bot", run_id="run-42"):
        client.get("https://api.example.com/")   # PolicyViolationError once the agent is killed

    # Model APIs: guard_openai / guard_anthropic build these for an SDK client.
    gate = ModelGate(guard, prices={"gpt-5": (1.25, 10.0)}, provider="openai")
    client = httpx2.Client(transport=ModelTransport(httpx2.HTTPTransport(), gate, OPENAI))

``GuardedTransport`` works like ``agentguard.integrations.httpx.GuardedTransport``: each
request is checked as the action ``"http_request"`` under the current ``agentguard.scope``
before the inner transport sends it. ``ModelTransport`` also knows model calls: a POST whose
JSON body names a ``model`` is checked through its ``ModelGate`` (the action ``llm``, with the
model), and its response's token usage is read as the body passes to the caller (JSON or
server-sent events, never buffered ahead of the caller) and recorded when the body ends or is
closed, with what was seen so far if the caller stops early. Other requests are checked as
``"http_request"``. A 4xx/5xx answer, an error raised by the inner transport, or an error
event in a stream counts the model call as failed. Unwrap with ``.inner``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any, Unpack

try:
    import httpx2
except ImportError as exc:
    raise ImportError(
        "agentguard.integrations.httpx2 needs httpx2: pip install httpx2 (the extras "
        '"agentguard[openai]" and "agentguard[anthropic]" bring it)'
    ) from exc

from ..scope import Ids
from ._gate import Gate
from ._model import ModelCall, ModelGate
from ._usage import OPENAI, Reading, Wire

if TYPE_CHECKING:
    from ..guard import Guard

__all__ = [
    "HTTP_ACTION",
    "AsyncGuardedTransport",
    "AsyncModelTransport",
    "AsyncUsageStream",
    "GuardedTransport",
    "ModelTransport",
    "UsageStream",
]

HTTP_ACTION = "http_request"


class GuardedTransport(httpx2.BaseTransport):
    """A sync httpx2 transport that checks the kill state before sending."""

    def __init__(
        self,
        inner: httpx2.BaseTransport | None = None,
        guard: Guard | None = None,
        *,
        action: str = HTTP_ACTION,
        **ids: Unpack[Ids],
    ) -> None:
        self.inner = inner if inner is not None else httpx2.HTTPTransport()
        self.action = action
        self._gate = Gate(guard, where="GuardedTransport", **ids)

    @property
    def guard(self) -> Guard | None:
        return self._gate.guard

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        """Refuse (raise ``PolicyViolationError``) or send through the inner transport."""
        return self._gate.run(
            self.action, lambda: self.inner.handle_request(request), arguments=request
        )

    def close(self) -> None:
        """Close the inner transport."""
        self.inner.close()


class AsyncGuardedTransport(httpx2.AsyncBaseTransport):
    """An async httpx2 transport that checks the kill state before sending."""

    def __init__(
        self,
        inner: httpx2.AsyncBaseTransport | None = None,
        guard: Guard | None = None,
        *,
        action: str = HTTP_ACTION,
        **ids: Unpack[Ids],
    ) -> None:
        self.inner = inner if inner is not None else httpx2.AsyncHTTPTransport()
        self.action = action
        self._gate = Gate(guard, where="AsyncGuardedTransport", **ids)

    @property
    def guard(self) -> Guard | None:
        return self._gate.guard

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        """Refuse (raise ``PolicyViolationError``) or send through the inner transport."""
        return await self._gate.arun(
            self.action, lambda: self.inner.handle_async_request(request), arguments=request
        )

    async def aclose(self) -> None:
        """Close the inner transport."""
        await self.inner.aclose()


class ModelTransport(httpx2.BaseTransport):
    """A sync httpx2 transport for a model API: model calls checked and their usage read."""

    def __init__(
        self,
        inner: httpx2.BaseTransport | None = None,
        gate: ModelGate | None = None,
        wire: Wire = OPENAI,
    ) -> None:
        self.inner = inner if inner is not None else httpx2.HTTPTransport()
        self.gate = gate if gate is not None else ModelGate(provider=wire.provider)
        self.wire = wire

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        """Check the request (a model call, or ``http_request``), send it, read its usage."""
        model = requested_model(request, request.read)
        if model is None:
            return self.gate.gate.run(
                HTTP_ACTION, lambda: self.inner.handle_request(request), arguments=request
            )
        call = self.gate.check(model, operation=self.wire.operation(request.url.path))
        try:
            response = self.inner.handle_request(request)
        except Exception as exc:
            call.finish(error_type=type(exc).__name__)
            raise
        except BaseException:
            call.finish()
            raise
        reading = _reading(response, call, self.wire)
        if reading is not None:
            response.stream = UsageStream(response.stream, reading, call)
        return response

    def close(self) -> None:
        """Close the inner transport."""
        self.inner.close()


class AsyncModelTransport(httpx2.AsyncBaseTransport):
    """An async httpx2 transport for a model API: model calls checked and their usage read."""

    def __init__(
        self,
        inner: httpx2.AsyncBaseTransport | None = None,
        gate: ModelGate | None = None,
        wire: Wire = OPENAI,
    ) -> None:
        self.inner = inner if inner is not None else httpx2.AsyncHTTPTransport()
        self.gate = gate if gate is not None else ModelGate(provider=wire.provider)
        self.wire = wire

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        """Check the request (a model call, or ``http_request``), send it, read its usage."""
        body = await request.aread() if _is_json_post(request) else None
        model = requested_model(request, lambda: body)
        if model is None:
            return await self.gate.gate.arun(
                HTTP_ACTION, lambda: self.inner.handle_async_request(request), arguments=request
            )
        call = await self.gate.acheck(model, operation=self.wire.operation(request.url.path))
        try:
            response = await self.inner.handle_async_request(request)
        except Exception as exc:
            call.finish(error_type=type(exc).__name__)
            raise
        except BaseException:
            call.finish()
            raise
        reading = _reading(response, call, self.wire)
        if reading is not None:
            response.stream = AsyncUsageStream(response.stream, reading, call)
        return response

    async def aclose(self) -> None:
        """Close the inner transport."""
        await self.inner.aclose()


class UsageStream(httpx2.SyncByteStream):
    """A response body passed on unchanged while its usage is read; the model call is
    recorded when the body ends, fails or is closed (with what was seen so far).

    Every body of a guarded model call passes through here (``AsyncUsageStream`` for async
    clients): the place to stop a stream whose call is killed while it is being read.
    """

    def __init__(self, inner: Any, reading: Reading, call: ModelCall) -> None:
        self.inner = inner
        self.reading = reading
        self.call = call

    def __iter__(self) -> Iterator[bytes]:
        feed = self.reading.feed
        try:
            for chunk in self.inner:
                feed(chunk)
                yield chunk
        except Exception as exc:
            self.finish(type(exc).__name__)
            raise
        finally:
            self.finish()

    def close(self) -> None:
        try:
            self.inner.close()
        finally:
            self.finish()

    def finish(self, error_type: str | None = None) -> None:
        """Record the call with the usage read so far (once)."""
        if not self.call.finished:
            _finish(self.call, self.reading, error_type)


class AsyncUsageStream(httpx2.AsyncByteStream):
    """``UsageStream`` for async clients."""

    def __init__(self, inner: Any, reading: Reading, call: ModelCall) -> None:
        self.inner = inner
        self.reading = reading
        self.call = call

    async def __aiter__(self) -> AsyncIterator[bytes]:
        feed = self.reading.feed
        try:
            async for chunk in self.inner:
                feed(chunk)
                yield chunk
        except Exception as exc:
            self.finish(type(exc).__name__)
            raise
        finally:
            self.finish()

    async def aclose(self) -> None:
        try:
            await self.inner.aclose()
        finally:
            self.finish()

    def finish(self, error_type: str | None = None) -> None:
        """Record the call with the usage read so far (once)."""
        if not self.call.finished:
            _finish(self.call, self.reading, error_type)


def _is_json_post(request: httpx2.Request) -> bool:
    if request.method != "POST":
        return False
    return request.headers.get("content-type", "").startswith("application/json")


def requested_model(request: httpx2.Request, read: Any) -> str | None:
    """The ``model`` a JSON POST names (``read()`` gives its body); ``None``: no model call."""
    if not _is_json_post(request):
        return None
    try:
        body = json.loads(read())
    except ValueError:
        return None
    model = body.get("model") if isinstance(body, dict) else None
    return model if isinstance(model, str) and model else None


def _reading(response: httpx2.Response, call: ModelCall, wire: Wire) -> Reading | None:
    """How to read the response's usage; ``None`` when the call is already recorded."""
    if response.status_code >= 400:
        call.finish(error_type=str(response.status_code))
        return None
    headers = response.headers
    content_type = headers.get("content-type", "")
    if not response.is_stream_consumed:  # the body is still to come: read it as it passes
        return Reading(wire, content_type, headers.get("content-encoding", ""))
    reading = Reading(wire, content_type, "")  # a response made already read (a mock, a cache)
    reading.feed(response.content)  # decoded
    _finish(call, reading, None)
    return None


def _finish(call: ModelCall, reading: Reading, error_type: str | None) -> None:
    usage, failed = reading.result()
    call.finish(usage, failed=failed, error_type=error_type)
