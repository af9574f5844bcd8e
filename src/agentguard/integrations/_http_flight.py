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

import socket
from collections.abc import Callable
from typing import Any

from ..inflight import Call

__all__ = ["abort_on_kill", "aborting_new_connections", "restore_trace", "shut_down"]

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
