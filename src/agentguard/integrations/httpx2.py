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

A request stays in flight until its response is closed, so a kill stops it midway, as
``agentguard.integrations.httpx`` does (``cancel_in_flight=False`` lets requests finish; for
``ModelTransport``, the ``ModelGate``'s): the async transports cancel the request's task while
it waits (for the headers or the next chunk of a streaming response); the sync ones shut the
connection's socket down under the reading thread (HTTP/1.1; an HTTP/2 stream stops at its
next chunk), and every streaming response refuses its next chunk. A model token stream so
ends within milliseconds with the kill's ``PolicyViolationError`` (the ``ModelGate``'s class
of it: ``AnthropicPolicyViolationError`` for Anthropic), recorded as a CANCELLED intervention
with the usage seen before the stop.
"""

from __future__ import annotations

import asyncio
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
from ._http_flight import (
    AsyncGuardedBody,
    GuardedBody,
    abort_on_kill,
    aborting_new_connections,
    restore_trace,
)
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
    """A sync httpx2 transport that checks the kill state before sending, and stops a request
    still in flight when a kill comes."""

    def __init__(
        self,
        inner: httpx2.BaseTransport | None = None,
        guard: Guard | None = None,
        *,
        action: str = HTTP_ACTION,
        cancel_in_flight: bool = True,
        **ids: Unpack[Ids],
    ) -> None:
        self.inner = inner if inner is not None else httpx2.HTTPTransport()
        self.action = action
        self._gate = Gate(guard, cancel_in_flight=cancel_in_flight, where="GuardedTransport", **ids)

    @property
    def guard(self) -> Guard | None:
        return self._gate.guard

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        """Refuse (raise ``PolicyViolationError``) or send through the inner transport."""
        return _send(self._gate, self.action, self.inner, request)

    def close(self) -> None:
        """Close the inner transport."""
        self.inner.close()


class AsyncGuardedTransport(httpx2.AsyncBaseTransport):
    """An async httpx2 transport that checks the kill state before sending, and stops a
    request still in flight when a kill comes."""

    def __init__(
        self,
        inner: httpx2.AsyncBaseTransport | None = None,
        guard: Guard | None = None,
        *,
        action: str = HTTP_ACTION,
        cancel_in_flight: bool = True,
        **ids: Unpack[Ids],
    ) -> None:
        self.inner = inner if inner is not None else httpx2.AsyncHTTPTransport()
        self.action = action
        self._gate = Gate(
            guard, cancel_in_flight=cancel_in_flight, where="AsyncGuardedTransport", **ids
        )

    @property
    def guard(self) -> Guard | None:
        return self._gate.guard

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        """Refuse (raise ``PolicyViolationError``) or send through the inner transport."""
        return await _asend(self._gate, self.action, self.inner, request)

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
            return _send(self.gate.gate, HTTP_ACTION, self.inner, request)
        call = self.gate.begin(model, operation=self.wire.operation(request.url.path))
        flight = call.flight
        assert flight is not None
        traced = request.extensions.get("trace")
        request.extensions["trace"] = aborting_new_connections(flight, traced)
        try:
            response = self.inner.handle_request(request)
        except BaseException as exc:
            error = call.fail(exc)
            if error is exc:
                raise
            raise error from exc
        finally:
            restore_trace(request, traced)
        abort_on_kill(flight, response)
        reading = _reading(response, call, self.wire)
        if reading is not None:
            usage_stream = UsageStream(response.stream, reading, call)
            response.stream = usage_stream
            usage_stream.raise_if_cancelled()  # a kill while the headers came
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
            return await _asend(self.gate.gate, HTTP_ACTION, self.inner, request)
        call = await self.gate.abegin(model, operation=self.wire.operation(request.url.path))
        try:
            response = await self.inner.handle_async_request(request)
        except BaseException as exc:
            error = call.fail(exc)
            if error is exc:
                raise
            raise error from exc
        if call.flight is not None:
            call.flight.stream_idle()  # the body is read later, perhaps in another task
        reading = _reading(response, call, self.wire)
        if reading is not None:
            usage_stream = AsyncUsageStream(response.stream, reading, call)
            response.stream = usage_stream
            await usage_stream.raise_if_cancelled()  # a kill while the headers came
        return response

    async def aclose(self) -> None:
        """Close the inner transport."""
        await self.inner.aclose()


class UsageStream(httpx2.SyncByteStream):
    """A response body passed on unchanged while its usage is read; the model call is
    recorded when the body ends, fails or is closed (with what was seen so far).

    Every body of a guarded model call passes through here (``AsyncUsageStream`` for async
    clients): a kill of a call begun with ``ModelGate.begin`` (``call.flight``) ends it at
    its next chunk, or at once where the transport aborts the read it blocks in, with the
    kill's ``PolicyViolationError``; the chunk being read is not delivered, its usage is
    recorded.
    """

    def __init__(self, inner: Any, reading: Reading, call: ModelCall) -> None:
        self.inner = inner
        self.reading = reading
        self.call = call

    def __iter__(self) -> Iterator[bytes]:
        feed = self.reading.feed
        flight = self.call.flight
        try:
            for chunk in self.inner:
                feed(chunk)
                if flight is not None:
                    flight.raise_if_cancelled()
                yield chunk
            if flight is not None:  # an aborted read may look like the body's end
                flight.raise_if_cancelled()
        except BaseException as exc:
            error = _failed(self.call, self.reading, exc)
            if error is exc:
                raise
            raise error from exc
        finally:
            self.finish()

    def raise_if_cancelled(self) -> None:
        """Raise (and close the body) if a kill has stopped the call."""
        flight = self.call.flight
        if flight is None or flight.stopped_by is None:
            return
        try:
            flight.raise_if_cancelled()
        except BaseException as exc:
            error = _failed(self.call, self.reading, exc)
            self.inner.close()
            raise error from None

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
        flight = self.call.flight
        chunks = self.inner.__aiter__()
        try:
            while True:
                if flight is not None:
                    flight.stream_wait(asyncio.current_task())  # a kill cancels the read
                try:
                    chunk = await chunks.__anext__()
                except StopAsyncIteration:
                    break
                finally:
                    if flight is not None:
                        flight.stream_idle()
                feed(chunk)
                yield chunk
            if flight is not None:
                flight.raise_if_cancelled()
        except BaseException as exc:
            error = _failed(self.call, self.reading, exc)
            if error is exc:
                raise
            raise error from exc
        finally:
            self.finish()

    async def raise_if_cancelled(self) -> None:
        """Raise (and close the body) if a kill has stopped the call."""
        flight = self.call.flight
        if flight is None or flight.stopped_by is None:
            return
        try:
            flight.raise_if_cancelled()
        except BaseException as exc:
            error = _failed(self.call, self.reading, exc)
            await self.inner.aclose()
            raise error from None

    async def aclose(self) -> None:
        try:
            await self.inner.aclose()
        finally:
            self.finish()

    def finish(self, error_type: str | None = None) -> None:
        """Record the call with the usage read so far (once)."""
        if not self.call.finished:
            _finish(self.call, self.reading, error_type)


def _send(
    gate: Gate, action: str, inner: httpx2.BaseTransport, request: httpx2.Request
) -> httpx2.Response:
    """Send a plain (not a model) request through ``inner``, in flight until it is closed."""
    call = gate.begin(action, arguments=request)
    traced = request.extensions.get("trace")
    request.extensions["trace"] = aborting_new_connections(call, traced)
    try:
        response = inner.handle_request(request)
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


async def _asend(
    gate: Gate, action: str, inner: httpx2.AsyncBaseTransport, request: httpx2.Request
) -> httpx2.Response:
    """``_send`` for async clients: a kill cancels the task while it waits."""
    call = await gate.abegin(action, arguments=request)
    try:
        response = await inner.handle_async_request(request)
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


class _GuardedStream(GuardedBody, httpx2.SyncByteStream):
    """A response body that ends with the request's ``PolicyViolationError`` after a kill."""

    check_at_end = True  # an aborted read may look like the body's end


class _AsyncGuardedStream(AsyncGuardedBody, httpx2.AsyncByteStream):
    """An async response body: a kill cancels the read it waits on, or refuses the next."""

    check_at_end = True


def _failed(call: ModelCall, reading: Reading, exc: BaseException) -> BaseException:
    """Record a model call whose body raised ``exc`` (with the usage read so far); return
    what to raise (the kill's error, if a kill stopped it)."""
    usage, failed = (None, False) if call.finished else reading.result()
    return call.fail(exc, usage, failed)


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
