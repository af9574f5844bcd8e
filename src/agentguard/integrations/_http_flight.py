"""Stopping an HTTP request in flight: what the httpx and httpx2 transports share.

A sync request blocks its thread in a socket read, which no kill can interrupt from outside;
shutting the connection's socket down (``Call.on_cancel``) makes that read return at once
with an error, which the transport turns into the call's ``PolicyViolationError``. httpcore
(and httpcore2) report each new connection's network stream to a request's ``trace``
extension (``aborting_new_connections``: a kill while the request waits for its headers), and
a response's own in its ``network_stream`` extension (``abort_on_kill``: a kill while its
body is read). An HTTP/2 connection is shared by other requests, so it is left alone: its
stream stops at its next chunk instead.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, ClassVar

from ..inflight import Call

__all__ = [
    "AsyncGuardedBody",
    "GuardedBody",
    "abort_on_kill",
    "aborting_new_connections",
    "restore_trace",
    "shut_down",
]

_CONNECTED = ("connection.connect_tcp.complete", "connection.start_tls.complete")


def aborting_new_connections(
    call: Call, traced: Callable[[str, dict[str, Any]], Any] | None
) -> Callable[[str, dict[str, Any]], Any]:
    """A ``trace`` extension (wrapping the request's own, ``traced``) that shuts down each
    connection the request opens if a kill stops ``call``; ``restore_trace`` after sending."""

    def trace(event: str, info: dict[str, Any]) -> Any:
        if event in _CONNECTED:
            stream = info.get("return_value")
            if stream is not None:
                call.on_cancel(lambda: shut_down(stream))
        return None if traced is None else traced(event, info)

    return trace


def restore_trace(request: Any, traced: Any) -> None:
    """Put the request's own ``trace`` extension back (none, if it had none)."""
    if traced is None:
        request.extensions.pop("trace", None)
    else:
        request.extensions["trace"] = traced


def abort_on_kill(call: Call, response: Any) -> None:
    """Shut the response's connection down if a kill stops ``call`` (HTTP/1.1 only)."""
    stream = response.extensions.get("network_stream")
    if stream is not None and response.extensions.get("http_version") != b"HTTP/2":
        call.on_cancel(lambda: shut_down(stream))


def shut_down(stream: Any) -> None:
    """Shut the connection's socket down: a blocked read returns at once (close would not)."""
    sock = stream.get_extra_info("socket")
    if sock is None:
        return
    try:  # socket.socket's own method: an SSLSocket's would tear down its TLS state under the
        # reading thread; the read ends with an error either way
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:  # closed already
        pass


class GuardedBody:
    """A sync response body (mixed into httpx's or httpx2's ``SyncByteStream``) that ends with
    the request's ``PolicyViolationError`` after a kill. ``check_at_end``: a clean end is
    checked too (an aborted read may look like the body's end)."""

    check_at_end: ClassVar[bool] = False

    def __init__(self, inner: Any, call: Call) -> None:
        self._inner = inner
        self._call = call

    def __iter__(self) -> Iterator[bytes]:
        call = self._call
        try:
            for chunk in self._inner:
                call.raise_if_cancelled()
                yield chunk
            if self.check_at_end:
                call.raise_if_cancelled()
        except BaseException as exc:
            error = call.finish(exc)  # a read the kill cut short: the call's error
            if error is exc:
                raise
            raise error from exc

    def raise_if_cancelled(self) -> None:
        try:
            self._call.raise_if_cancelled()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        try:
            self._inner.close()
        finally:
            self._call.end()


class AsyncGuardedBody:
    """An async response body (mixed into an ``AsyncByteStream``): a kill cancels the read it
    waits on, or refuses the next. ``check_at_end`` as for :class:`GuardedBody`."""

    check_at_end: ClassVar[bool] = False

    def __init__(self, inner: Any, call: Call) -> None:
        self._inner = inner
        self._call = call

    async def __aiter__(self) -> AsyncIterator[bytes]:
        call = self._call
        chunks = self._inner.__aiter__()
        try:
            while True:
                call.stream_wait(asyncio.current_task())
                try:
                    chunk = await chunks.__anext__()
                except StopAsyncIteration:
                    break
                finally:
                    call.stream_idle()
                yield chunk
            if self.check_at_end:
                call.raise_if_cancelled()
        except BaseException as exc:
            error = call.finish(exc)
            if error is exc:
                raise
            raise error from exc

    async def raise_if_cancelled(self) -> None:
        try:
            self._call.raise_if_cancelled()
        except BaseException:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        finally:
            self._call.end()
