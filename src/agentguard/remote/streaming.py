"""The streaming feed: the server's SSE change stream keeps the index current.

Every (re)connection starts with a full snapshot, so nothing missed while disconnected is
lost; the index applies only newer versions, so nothing late undoes a kill.
"""

from __future__ import annotations

import logging

import httpx
from httpx_sse import EventSource, SSEError
from pydantic import ValidationError

from ..records import KillChange, Snapshot
from ..scope import Scope
from .backoff import Backoff
from .feed import ConfigurationError, Feed, FeedState, ProtocolError, raise_for_configuration

logger = logging.getLogger("agentguard")


class StreamingFeed(Feed):
    """Reads ``GET /kill-switch/stream``; reconnects with backoff and resyncs."""

    name = "stream"

    def __init__(
        self,
        state: FeedState,
        http: httpx.Client,
        *,
        keepalive: float,
        auth_error_backoff: float,
        instance_id: str | None,
        identity: Scope,
    ) -> None:
        super().__init__(state, http, auth_error_backoff=auth_error_backoff)
        self.keepalive = keepalive
        self.instance_id = instance_id
        self.identity = identity
        self._response: httpx.Response | None = None

    def run(self) -> None:
        state = self.state
        backoff = Backoff()
        read_timeout = 2 * self.keepalive
        while not self.stopping.is_set():
            started = state.clock()
            delay: float | None = None
            try:
                self._read(read_timeout)
            except ConfigurationError as exc:
                logger.error("agentguard: %s; retrying in %.0f s", exc, self.auth_error_backoff)
                state.lost(str(exc))
                delay = self.auth_error_backoff
            except httpx.ReadTimeout:
                state.lost(
                    f"no data from {state.url} for {read_timeout:g} s",
                    last_heard=state.clock() - read_timeout,
                )
            except (httpx.HTTPError, SSEError, ProtocolError) as exc:
                if not self.stopping.is_set():
                    logger.warning("agentguard: kill-state stream from %s lost: %s", state.url, exc)
                state.lost(str(exc))
            except Exception as exc:  # never let the feed thread die silently
                logger.exception("agentguard: kill-state stream failed")
                state.lost(repr(exc))
            backoff.connected_for(state.clock() - started)
            if delay is None:
                delay = backoff.next_delay()
            self.stopping.wait(delay)

    def interrupt(self) -> None:
        response = self._response
        if response is not None:
            try:
                response.close()
            except Exception:  # closing from another thread may race the reader
                pass

    def _read(self, read_timeout: float) -> None:
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-store"}
        # No Last-Event-ID: every (re)connection starts with a full snapshot.
        timeout = httpx.Timeout(self.http.timeout.connect or 5.0, read=read_timeout)
        params = {
            k: v
            for k, v in (
                ("instance_id", self.instance_id),
                ("agent_id", self.identity.agent_id),
                ("run_id", self.identity.run_id),
                ("mission_id", self.identity.mission_id),
            )
            if v
        }
        with self.http.stream(
            "GET", "/kill-switch/stream", headers=headers, params=params, timeout=timeout
        ) as response:
            self._response = response
            raise_for_configuration(response, self.state.url)
            if response.status_code != 200:
                raise ProtocolError(f"stream answered HTTP {response.status_code}")
            for event in EventSource(response).iter_sse():
                if self.stopping.is_set():
                    return
                if not event.data:
                    # By the SSE spec an empty data buffer dispatches nothing; httpx-sse still
                    # yields one after each keep-alive comment once an id has been seen.
                    continue
                self.handle(event.event, event.data)
        raise ProtocolError("stream closed by the server")

    def handle(self, kind: str, data: str) -> None:
        """Apply one event of the stream; :class:`ProtocolError` ends the connection."""
        state = self.state
        try:
            if kind == "snapshot":
                state.install(Snapshot.model_validate_json(data))
                state.connected = True
                state.synced_now(live=True)
                state.applied()
                return
            if kind in ("kill", "revive"):
                change = KillChange.model_validate_json(data)
                if change.kind != kind:
                    raise ProtocolError(f"event {kind!r} carries a {change.kind!r} change")
            else:
                raise ProtocolError(f"unknown event type {kind!r}")
        except (ValidationError, ValueError) as exc:
            raise ProtocolError(f"malformed {kind!r} event: {exc}") from exc
        if not state.connected:
            raise ProtocolError("change event before the snapshot")
        if change.version > state.index.version + 1:
            raise ProtocolError(
                f"missed versions {state.index.version + 1}..{change.version - 1}; resyncing"
            )
        state.apply(change)  # ignored unless newer
