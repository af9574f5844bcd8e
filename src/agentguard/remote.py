"""Kill state from a remote agentguard server: streamed, polled, or checked per call.

``stream`` (default) keeps the index fed by the server's SSE change stream; ``poll`` fetches
the state on an interval with an ETag; ``strict`` asks ``GET /check`` before every guarded call.
Any reconnect ends in a full resync, and the index applies only newer versions, so nothing
missed while disconnected is lost and nothing late undoes a kill.
"""

from __future__ import annotations

import json
import logging
import math
import random
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import httpx
from httpx_sse import EventSource, SSEError
from pydantic import ValidationError

from .client import Client, raise_for_status
from .errors import (
    AgentGuardError,
    InvalidInputError,
)
from .heartbeat import HeartbeatReply, HeartbeatReport
from .index import KillIndex
from .interventions import InterventionRecorder
from .records import Intervention, KillChange, KillStatus, Snapshot
from .retries import RETRY_FOR, call_with_retries
from .scope import Scope
from .sources import CLEAR, KillStateSource, Verdict
from .targets import validate_target

logger = logging.getLogger("agentguard")

Mode = Literal["stream", "poll", "strict"]
MODES: tuple[str, ...] = ("stream", "poll", "strict")


class Backoff:
    """Exponential backoff with full jitter, reset after a healthy period.

    Hand-written rather than tenacity: the stream loop needs the delay, not a retrying call.
    """

    def __init__(self, initial: float = 1.0, maximum: float = 30.0, healthy_after: float = 30.0):
        self.initial, self.maximum, self.healthy_after = initial, maximum, healthy_after
        self.attempt = 0

    def next_delay(self) -> float:
        ceiling = min(self.maximum, self.initial * (2**self.attempt))
        self.attempt += 1
        return random.uniform(self.initial / 2, ceiling)

    def connected_for(self, seconds: float) -> None:
        if seconds >= self.healthy_after:
            self.attempt = 0


class RemoteSource(KillStateSource):
    """A guard's view of a remote server's kill state."""

    def __init__(
        self,
        url: str,
        *,
        api_key: str | None,
        mode: Mode = "stream",
        poll_interval: float = 1.0,
        keepalive: float = 5.0,
        bootstrap: str | Path | None = None,
        timeout: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        transport: httpx.BaseTransport | None = None,
        auth_error_backoff: float = 60.0,
        instance_id: str | None = None,
        identity: Scope | None = None,
    ) -> None:
        if mode not in MODES:
            raise InvalidInputError("mode", f"must be one of {', '.join(MODES)}; got {mode!r}")
        if not url.startswith(("http://", "https://")):
            raise InvalidInputError("url", f"must start with http:// or https://; got {url!r}")
        if poll_interval <= 0:
            raise InvalidInputError("poll_interval", "must be positive")
        self.url = url.rstrip("/")
        self.mode: Mode = mode
        self.strict = mode == "strict"
        self.poll_interval = poll_interval
        self.keepalive = keepalive
        self.auth_error_backoff = auth_error_backoff
        self._clock = clock
        self.client = Client(self.url, api_key=api_key, timeout=timeout, transport=transport)
        self._http = self.client.http
        self.index = KillIndex()
        self.organization_id = ""
        self.instance_id = instance_id
        self.identity = identity or Scope()
        self._ack_wanted = 0  # the newest applied version not yet acknowledged to the server
        self._ack_event = threading.Event()
        self.acknowledged = 0
        self._bootstrapped = False
        if bootstrap is not None:
            self._load_bootstrap(Path(bootstrap))
        self._stop = threading.Event()
        self._synced = threading.Event()
        self.connected = False
        self.resyncs = 0
        self.last_error: str | None = None
        self._response: httpx.Response | None = None
        self._thread: threading.Thread | None = None
        if mode != "strict":
            target = self._stream_loop if mode == "stream" else self._poll_loop
            self._thread = threading.Thread(target=target, name=f"agentguard-{mode}", daemon=True)
            self._thread.start()
        self._ack_thread: threading.Thread | None = None
        if mode != "strict" and instance_id:
            self._ack_thread = threading.Thread(
                target=self._ack_loop, name="agentguard-ack", daemon=True
            )
            self._ack_thread.start()

    # -- the feed -------------------------------------------------------------------------

    def _load_bootstrap(self, path: Path) -> None:
        try:
            snapshot = Snapshot.model_validate_json(path.read_text())
        except (OSError, ValidationError) as exc:
            raise InvalidInputError(
                "bootstrap", f"cannot read kill state from {path}: {exc}"
            ) from exc
        self.index.replace(snapshot)
        self.organization_id = snapshot.organization_id
        self._bootstrapped = True
        self.index.mark_authoritative()  # trusted until the first sync with the server

    def wait_until_synced(self, timeout: float | None = None) -> bool:
        """Block until the first snapshot arrived; return whether it did in time.

        Strict guards keep no state to sync: every call asks the server, so they are ready.
        """
        return True if self.strict else self._synced.wait(timeout)

    def _synced_now(self, *, live: bool) -> None:
        now = self._clock()
        if live:
            # A live stream is current: silence longer than twice the keep-alive ends it.
            self.index.synced_at = now
            self.index.mark_authoritative()
        else:
            self.index.mark_synced(now)
        self._synced.set()

    def _lost(self, reason: str, *, last_heard: float | None = None) -> None:
        self.connected = False
        self.last_error = reason
        if self.index.fresh_until == math.inf and (self._synced.is_set() or not self._bootstrapped):
            heard = self._clock() if last_heard is None else last_heard
            self.index.mark_synced(heard)

    def _install_snapshot(self, snapshot: Snapshot) -> None:
        if snapshot.version < self.index.version:
            logger.error(
                "agentguard: server %s sent kill state at version %d, older than the %d "
                "already applied; keeping the newer state",
                self.url,
                snapshot.version,
                self.index.version,
            )
        self.index.replace(snapshot)
        self.organization_id = snapshot.organization_id
        self.resyncs += 1

    def _stream_loop(self) -> None:
        backoff = Backoff()
        read_timeout = 2 * self.keepalive
        while not self._stop.is_set():
            started = self._clock()
            delay: float | None = None
            try:
                self._stream_once(read_timeout)
            except _ConfigurationError as exc:
                logger.error("agentguard: %s; retrying in %.0f s", exc, self.auth_error_backoff)
                self._lost(str(exc))
                delay = self.auth_error_backoff
            except httpx.ReadTimeout:
                self._lost(
                    f"no data from {self.url} for {read_timeout:g} s",
                    last_heard=self._clock() - read_timeout,
                )
            except (httpx.HTTPError, SSEError, _ProtocolError) as exc:
                if not self._stop.is_set():
                    logger.warning("agentguard: kill-state stream from %s lost: %s", self.url, exc)
                self._lost(str(exc))
            except Exception as exc:  # never let the feed thread die silently
                logger.exception("agentguard: kill-state stream failed")
                self._lost(repr(exc))
            backoff.connected_for(self._clock() - started)
            if delay is None:
                delay = backoff.next_delay()
            self._stop.wait(delay)

    def _stream_once(self, read_timeout: float) -> None:
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-store"}
        # No Last-Event-ID: every (re)connection starts with a full snapshot, so nothing
        # missed while disconnected is lost.
        timeout = httpx.Timeout(self._http.timeout.connect or 5.0, read=read_timeout)
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
        with self._http.stream(
            "GET", "/kill-switch/stream", headers=headers, params=params, timeout=timeout
        ) as response:
            self._response = response
            _raise_for_configuration(response, self.url)
            if response.status_code != 200:
                raise _ProtocolError(f"stream answered HTTP {response.status_code}")
            for event in EventSource(response).iter_sse():
                if self._stop.is_set():
                    return
                if not event.data:
                    # By the SSE spec an empty data buffer dispatches nothing; httpx-sse still
                    # yields one after each keep-alive comment once an id has been seen.
                    continue
                self._handle_event(event.event, event.data)
        raise _ProtocolError("stream closed by the server")

    def _handle_event(self, kind: str, data: str) -> None:
        try:
            if kind == "snapshot":
                self._install_snapshot(Snapshot.model_validate_json(data))
                self.connected = True
                self._synced_now(live=True)
                self._acknowledge()
                return
            if kind in ("kill", "revive"):
                change = KillChange.model_validate_json(data)
                if change.kind != kind:
                    raise _ProtocolError(f"event {kind!r} carries a {change.kind!r} change")
            else:
                raise _ProtocolError(f"unknown event type {kind!r}")
        except (ValidationError, ValueError) as exc:
            raise _ProtocolError(f"malformed {kind!r} event: {exc}") from exc
        if not self.connected:
            raise _ProtocolError("change event before the snapshot")
        if change.version > self.index.version + 1:
            raise _ProtocolError(
                f"missed versions {self.index.version + 1}..{change.version - 1}; resyncing"
            )
        if self.index.apply(change):  # ignored unless newer
            self._acknowledge()

    # -- acknowledgement: tell the server which version this instance enforces ---------------

    def _acknowledge(self) -> None:
        if self.instance_id and self.index.version > self.acknowledged:
            self._ack_wanted = self.index.version
            self._ack_event.set()

    def _ack_loop(self) -> None:
        backoff = Backoff(initial=0.5, maximum=10.0)
        while not self._stop.is_set():
            self._ack_event.wait()
            self._ack_event.clear()
            version = self._ack_wanted
            if self._stop.is_set() or version <= self.acknowledged:
                continue
            body: dict[str, Any] = {"instance_id": self.instance_id, "version": version}
            body.update({k: v for k, v in self.identity._asdict().items() if v})
            try:
                response = self._http.post("/kill-switch/ack", json=body)
                raise_for_status(response, self.url)
            except (httpx.HTTPError, AgentGuardError) as exc:
                # Retried with backoff until it lands (a newer version replaces it): logged
                # when the failures start, then only at debug level.
                logger.log(
                    logging.WARNING if backoff.attempt == 0 else logging.DEBUG,
                    "agentguard: could not acknowledge version %d: %s; retrying with backoff",
                    version,
                    exc,
                )
                self._stop.wait(backoff.next_delay())
                self._ack_event.set()  # try again with whatever is newest then
                continue
            backoff.attempt = 0
            self.acknowledged = max(self.acknowledged, version)

    def _poll_loop(self) -> None:
        backoff = Backoff(initial=self.poll_interval)
        etag: str | None = None
        while not self._stop.is_set():
            delay = self.poll_interval
            try:
                headers = {"If-None-Match": etag} if etag else {}
                response = self._http.get("/kill-switch/state", headers=headers)
                _raise_for_configuration(response, self.url)
                if response.status_code == 304:
                    self._synced_now(live=False)
                elif response.status_code == 200:
                    self._install_snapshot(Snapshot.model_validate_json(response.content))
                    etag = response.headers.get("ETag")
                    self._synced_now(live=False)
                    self._acknowledge()
                else:
                    raise _ProtocolError(f"state answered HTTP {response.status_code}")
                backoff.attempt = 0
            except _ConfigurationError as exc:
                logger.error("agentguard: %s; retrying in %.0f s", exc, self.auth_error_backoff)
                self.last_error = str(exc)
                delay = self.auth_error_backoff
            except (httpx.HTTPError, ValidationError, _ProtocolError) as exc:
                logger.warning("agentguard: polling %s failed: %s", self.url, exc)
                self.last_error = str(exc)
                etag = None
                delay = backoff.next_delay()
            self._stop.wait(delay)

    # -- per-call verification (strict mode) --------------------------------------------------

    def verify(self, action: str, scope: Scope) -> Verdict:
        if not self.strict:
            return None
        targets = [
            ("mission", scope.mission_id),
            ("run", scope.run_id),
            ("agent", scope.agent_id),
            ("tool", action),
        ]
        try:
            for target_type, target_id in targets:
                if target_id is None:
                    continue
                status = self._check_remote(target_type, target_id)
                if status.is_killed:
                    return status
        except (httpx.HTTPError, AgentGuardError, ValidationError) as exc:
            logger.warning("agentguard: strict check against %s failed: %s", self.url, exc)
            self.last_error = str(exc)
            return None
        return CLEAR

    def _check_remote(self, target_type: str, target_id: str) -> KillStatus:
        return self.client.check(target_type, target_id)

    def age(self, now: float) -> float:
        if self.strict:
            return math.inf if self.last_error else 0.0
        return super().age(now)

    # -- operator verbs and reports over HTTP -------------------------------------------------

    def kill(
        self, target_type: str, target_id: str, *, reason: str | None, actor: str
    ) -> KillChange:
        return self._applied(self.client.kill(target_type, target_id, reason=reason))

    def revive(self, target_type: str, target_id: str, *, actor: str) -> KillChange:
        return self._applied(self.client.revive(target_type, target_id))

    def _applied(self, change: KillChange) -> KillChange:
        if change.version and not self.strict:  # strict guards keep no view: the server decides
            self.index.apply(change)
        return change

    def status(self, target_type: str, target_id: str) -> KillStatus:
        target_type, target_id = validate_target(target_type, target_id)
        status = self._check_remote(target_type, target_id)
        ks = self.index.get(target_type, target_id)
        if ks is not None and status.is_killed:
            return KillStatus.of(target_type, target_id, ks)
        return status

    def report_interventions(self, items: list[Intervention], dropped: int = 0) -> None:
        self.client.report_interventions(items, dropped=dropped)

    def interventions(self, **filters: Any) -> tuple[list[Intervention], int]:
        page = self.client.interventions(**filters)
        return list(page.data), page.count

    # -- fleet: heartbeats and checkpoints (the server's /heartbeats and /checkpoints) ---------

    supports_heartbeats = True

    @property
    def acknowledges_changes(self) -> bool:  # type: ignore[override]
        return self._ack_thread is not None

    def heartbeat(self, report: HeartbeatReport) -> HeartbeatReply:
        response = self._http.post("/heartbeats", json=report.model_dump(exclude_none=True))
        raise_for_status(response, self.url)
        return HeartbeatReply.model_validate_json(response.content)

    # Checkpoints retry while the server or its database is away (for ``retry_for`` seconds),
    # so an outage of a few seconds does not become an exception in the agent.
    retry_for = RETRY_FOR

    def save_checkpoint(self, key: str, state_json: str) -> None:
        content = b'{"state":' + state_json.encode() + b"}"
        path = _checkpoint_path(key)

        def put() -> None:
            response = self._http.put(
                path, content=content, headers={"Content-Type": "application/json"}
            )
            raise_for_status(response, self.url)

        call_with_retries(put, what=f"saving checkpoint {key!r}", retry_for=self.retry_for)

    def load_checkpoint(self, key: str) -> str | None:
        path = _checkpoint_path(key)

        def get() -> str | None:
            response = self._http.get(path)
            if response.status_code == 404:
                return None
            raise_for_status(response, self.url)
            return json.dumps(response.json()["state"])

        return call_with_retries(get, what=f"loading checkpoint {key!r}", retry_for=self.retry_for)

    def make_recorder(self) -> InterventionRecorder:
        return InterventionRecorder(
            self.report_interventions, interval=1.0, name="agentguard-report"
        )

    def close(self) -> None:
        self._stop.set()
        response = self._response
        if response is not None:
            try:
                response.close()
            except Exception:  # closing from another thread may race the reader
                pass
        self._ack_event.set()
        for thread in (self._thread, self._ack_thread):
            if thread is not None:
                thread.join(timeout=2.0)
        self.client.close()


def _checkpoint_path(key: str) -> str:
    # The key is one path segment: the server's API takes letters, digits and ._:@=+~-
    if not _CHECKPOINT_KEY.match(key):
        raise InvalidInputError(
            "key",
            f"{key!r}: checkpoint keys stored on a server use letters, digits and ._:@=+~- "
            "(no '/'), do not start with '.', and have at most 256 characters",
        )
    return f"/checkpoints/{key}"


_CHECKPOINT_KEY = re.compile(r"^[A-Za-z0-9_:@=+~-][A-Za-z0-9._:@=+~-]{0,255}$")


class _ProtocolError(Exception):
    """The server sent something the client cannot use; reconnect and resync."""


class _ConfigurationError(Exception):
    """401/403: the key is wrong or lacks a scope; retried on a long backoff."""


def _raise_for_configuration(response: httpx.Response, url: str) -> None:
    if response.status_code in (401, 403):
        response.read()
        raise _ConfigurationError(
            f"{url} refused the API key (HTTP {response.status_code}: {_detail(response)})"
        )


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    return (
        str(body.get("detail") or body.get("error") or body)
        if isinstance(body, dict)
        else str(body)
    )
