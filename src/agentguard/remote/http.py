"""The agentguard HTTP API as a typed client: one method per operation.

Failures raise agentguard's own errors (see :mod:`agentguard.remote.errors`):
:class:`AlreadyKilledError` (409 on kill), :class:`NotKilledError` (404 on revive and acks),
``NotFoundError`` and ``ConflictError`` (other 404 and 409), ``AuthenticationError`` (401),
``PermissionDeniedError`` (403), ``InvalidInputError`` naming the field (400, 413, 422),
``ServerUnreachableError`` with the URL tried, ``DatabaseUnavailableError`` (503 while the
server's database is unreachable) and ``AgentGuardError`` for the rest.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
from httpx_sse import EventSource, SSEError
from pydantic import BaseModel, ValidationError

from .._version import __version__
from ..errors import (
    AgentGuardError,
    AlreadyKilledError,
    InvalidInputError,
    NotKilledError,
    RevivePendingError,
)
from ..protocol import (
    API,
    VERSION_HEADER,
    Acks,
    Agent,
    ApiKey,
    ApiKeyCreated,
    Drill,
    Page,
    ReviveRequest,
    RunFinished,
    Series,
    StreamEvent,
    Webhook,
    WebhookCreated,
    WebhookDelivery,
)
from ..records import AuditEntry, Intervention, KillChange, KillStatus, KillSwitch, Snapshot
from .errors import (
    ServerUnreachableError,
    body_of,
    has_request,
    is_ours,
    no_such_route,
    raise_for_status,
    unreachable,
)

M = TypeVar("M", bound=BaseModel)


class Client:
    """The agentguard HTTP API, one method per operation."""

    def __init__(
        self,
        url: str,
        *,
        api_key: str | None = None,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise InvalidInputError("url", f"must start with http:// or https://; got {url!r}")
        self.url = url.rstrip("/")
        self.api_key = api_key
        headers = {"User-Agent": f"agentguard-client/{__version__}", "Accept": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._http = httpx.Client(
            base_url=self.url + API, headers=headers, timeout=timeout, transport=transport
        )
        self._stream: httpx.Response | None = None

    @property
    def http(self) -> httpx.Client:
        """The underlying httpx client, based at ``<url>/api/v1`` with the credentials."""
        return self._http

    def report_interventions(self, items: list[Intervention], *, dropped: int = 0) -> int:
        """Store interventions (idempotent per id); returns how many were new.

        ``dropped``: how many the reporter lost to a full buffer (recorded in the audit log).
        """
        body: dict[str, Any] = {"interventions": [_wire(iv) for iv in items]}
        if dropped:
            body["dropped"] = dropped
        response = self._send("POST", "/interventions", json=body)
        raise_for_status(response, self.url)
        return int(body_of(response).get("created", 0))

    def close(self) -> None:
        """Close the connections, ending a stream being read in another thread."""
        stream = self._stream
        if stream is not None:
            try:
                stream.close()
            except Exception:  # closing from another thread may race the reader
                pass
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- kill switch ---------------------------------------------------------------------------

    def kill(
        self,
        target_type: str,
        target_id: str,
        *,
        reason: str | None = None,
        expires_at: datetime | None = None,
        duration: str | None = None,
        until: str | None = None,
    ) -> KillChange:
        """Kill a target, until ``expires_at`` or for ``duration`` if given (the server
        revives it then); :class:`AlreadyKilledError` if it is already killed.

        ``until="run_end"`` (a run only): the kill ends when the run does.
        """
        body: dict[str, Any] = {"target_type": target_type, "target_id": target_id}
        body["reason"] = reason
        if expires_at is not None:  # only then: a server without time-limited kills still works
            body["expires_at"] = expires_at.isoformat()
        if duration is not None:
            body["duration"] = duration
        if until is not None:
            body["until"] = until
        response = self._send("POST", "/kill-switch/kill", json=body)
        if response.status_code == 409 and body_of(response).get("kill_switch"):
            raise AlreadyKilledError(KillSwitch.model_validate(body_of(response)["kill_switch"]))
        return self._change(response, "kill")

    def revive(self, target_type: str, target_id: str, *, reason: str | None = None) -> KillChange:
        """Revive a killed target; :class:`NotKilledError` if it is not killed,
        :class:`RevivePendingError` (with the request) where the server wants approvals."""
        body: dict[str, Any] = {"target_type": target_type, "target_id": target_id}
        if reason is not None:  # only then: a server older than governed revive still works
            body["reason"] = reason
        response = self._send("POST", "/kill-switch/revive", json=body)
        if response.status_code == 404 and is_ours(response) and not no_such_route(response):
            raise NotKilledError(target_type, target_id)
        if response.status_code == 202:
            raise RevivePendingError(self._parse(ReviveRequest, response))
        return self._change(response, "revive")

    def finish_run(self, run_id: str) -> KillChange | None:
        """Tell the server the run is over; the revive of its ``until``-run-end kill, if any."""
        response = self._send("POST", f"/runs/{_segment(run_id)}/finish")
        ended = self._parse(RunFinished, response).ended
        if ended is None:
            return None
        version = int(response.headers.get(VERSION_HEADER, "0") or 0)
        return KillChange(version=version, kind="revive", kill_switch=ended)

    def revive_requests(
        self, *, status: str = "pending", skip: int = 0, limit: int = 100
    ) -> Page[ReviveRequest]:
        """Revive requests, newest first: ``pending`` ones, or of a ``status`` (``all``)."""
        params = {"status": status, "skip": skip, "limit": limit}
        return self._get(Page[ReviveRequest], "/kill-switch/revive-requests", params)

    def approve_revive(self, request_id: str, *, reason: str | None = None) -> ReviveRequest:
        """Approve another person's revive request; the last approval revives the kill
        (``kill_switch`` in the answer). ``NotFoundError``, ``ConflictError`` (no longer
        pending), ``PermissionDeniedError`` (your own request)."""
        path = f"/kill-switch/revive-requests/{_segment(request_id)}/approve"
        return self._parse(ReviveRequest, self._send("POST", path, json={"reason": reason}))

    def reject_revive(self, request_id: str, *, reason: str | None = None) -> ReviveRequest:
        """Reject a revive request (or withdraw your own); the kill stays."""
        path = f"/kill-switch/revive-requests/{_segment(request_id)}/reject"
        return self._parse(ReviveRequest, self._send("POST", path, json={"reason": reason}))

    def check(self, target_type: str, target_id: str) -> KillStatus:
        """Whether a target is killed."""
        params = {"target_type": target_type, "target_id": target_id}
        return self._get(KillStatus, "/kill-switch/check", params)

    def state(self) -> Snapshot:
        """The organization's kill state: its id, version and every active kill switch."""
        return self._get(Snapshot, "/kill-switch/state")

    def active(self, *, skip: int = 0, limit: int = 100) -> Page[KillSwitch]:
        """Active kill switches, newest first."""
        return self._get(Page[KillSwitch], "/kill-switch/active", {"skip": skip, "limit": limit})

    def acks(self, target_type: str, target_id: str) -> Acks:
        """The active kill of a target and which live instances have acknowledged it."""
        params = {"target_type": target_type, "target_id": target_id}
        response = self._send("GET", "/kill-switch/acks", params=params)
        if response.status_code == 404 and is_ours(response) and not no_such_route(response):
            raise NotKilledError(target_type, target_id)
        return self._parse(Acks, response)

    def wait_for_acks(
        self,
        target_type: str,
        target_id: str,
        *,
        timeout: float = 30.0,
        interval: float = 0.1,
        progress: Callable[[Acks], None] | None = None,
    ) -> Acks:
        """Poll :meth:`acks` until every live instance acknowledged or ``timeout`` passed.

        Returns the last answer; check :attr:`Acks.complete`.
        """
        deadline = time.monotonic() + timeout
        while True:
            acks = self.acks(target_type, target_id)
            if progress is not None:
                progress(acks)
            remaining = deadline - time.monotonic()
            if acks.complete or remaining <= 0:
                return acks
            time.sleep(min(interval, remaining))

    # -- drills --------------------------------------------------------------------------------

    def drill(self, target_type: str, target_id: str, *, timeout: float = 5.0) -> Drill:
        """Drill a target: every live instance rehearses its kill and answers, refusing
        nothing; the server waits up to ``timeout`` s and answers how many did."""
        body = {"target_type": target_type, "target_id": target_id, "timeout": timeout}
        response = self._send("POST", "/drills", json=body, read_timeout=timeout + 30.0)
        return self._parse(Drill, response)

    def drills(
        self,
        *,
        target_type: str | None = None,
        target_id: str | None = None,
        skip: int = 0,
        limit: int = 100,
    ) -> Page[Drill]:
        """Drills and their results, newest first."""
        params = _params(target_type=target_type, target_id=target_id, skip=skip, limit=limit)
        return self._get(Page[Drill], "/drills", params)

    # -- fleet, interventions, audit -------------------------------------------------------------

    def agents(self, *, skip: int = 0, limit: int = 100) -> Page[Agent]:
        """The agents the server has heartbeats from, by id, with their health."""
        return self._get(Page[Agent], "/agents", {"skip": skip, "limit": limit})

    def agent(self, agent_id: str) -> Agent:
        """One agent; :class:`NotFoundError` if the server has never heard of it."""
        return self._get(Agent, f"/agents/{_segment(agent_id)}")

    def series(
        self, agent_id: str | None = None, *, window: str = "24h", step: str = "5m"
    ) -> Series:
        """An agent's calls, cost, kills and revives over ``window`` in buckets of ``step``
        (``"24h"``, ``"5m"``); without ``agent_id``, the organization's.
        :class:`NotFoundError` if nothing is known of the agent in the window."""
        path = "/series" if agent_id is None else f"/agents/{_segment(agent_id)}/series"
        return self._get(Series, path, {"window": window, "step": step})

    def interventions(
        self,
        *,
        target_type: str | None = None,
        target_id: str | None = None,
        type: str | None = None,
        action: str | None = None,
        since: datetime | str | None = None,
        skip: int = 0,
        limit: int = 100,
    ) -> Page[Intervention]:
        """Interventions (refused calls), newest first."""
        params = _params(
            target_type=target_type,
            target_id=target_id,
            type=type,
            action=action,
            since=since,
            skip=skip,
            limit=limit,
        )
        return self._get(Page[Intervention], "/interventions", params)

    def audit(
        self,
        *,
        action: str | None = None,
        target_type: str | None = None,
        target_id: str | None = None,
        since: datetime | str | None = None,
        skip: int = 0,
        limit: int = 100,
    ) -> Page[AuditEntry]:
        """The audit log, newest first."""
        params = _params(
            action=action,
            target_type=target_type,
            target_id=target_id,
            since=since,
            skip=skip,
            limit=limit,
        )
        return self._get(Page[AuditEntry], "/audit", params)

    # -- API keys ------------------------------------------------------------------------------

    def create_key(
        self,
        scopes: list[str],
        *,
        owner: str | None = None,
        name: str | None = None,
        agents: list[str] | None = None,
    ) -> ApiKeyCreated:
        """Create an API key; its secret is in the answer and nowhere else.

        An agent key writes only for its ``agents``: ids, ``prefix-*``, or ``["*"]`` for any.
        """
        body: dict[str, Any] = {"scopes": scopes}
        if owner is not None:
            body["owner"] = owner
        if name is not None:
            body["name"] = name
        if agents:
            body["agents"] = agents
        return self._parse(ApiKeyCreated, self._send("POST", "/keys", json=body))

    def keys(self, *, skip: int = 0, limit: int = 100) -> Page[ApiKey]:
        """The organization's API keys, newest first, revoked ones included."""
        return self._get(Page[ApiKey], "/keys", {"skip": skip, "limit": limit})

    def revoke_key(self, key_id: str) -> ApiKey:
        """Revoke an API key."""
        return self._parse(ApiKey, self._send("DELETE", f"/keys/{_segment(key_id)}"))

    # -- webhooks ------------------------------------------------------------------------------

    def create_webhook(
        self,
        url: str,
        events: list[str],
        *,
        format: str = "standard",
        name: str | None = None,
        routing_key: str | None = None,
    ) -> WebhookCreated:
        """Register a webhook; a standard one's signing secret is in the answer and nowhere else.

        ``format``: ``standard`` (signed JSON), ``slack`` or ``pagerduty`` (with ``routing_key``).
        """
        body: dict[str, Any] = {"url": url, "events": events, "format": format}
        if name is not None:
            body["name"] = name
        if routing_key is not None:
            body["routing_key"] = routing_key
        return self._parse(WebhookCreated, self._send("POST", "/webhooks", json=body))

    def webhooks(self, *, skip: int = 0, limit: int = 100) -> Page[Webhook]:
        """The organization's webhooks, newest first."""
        return self._get(Page[Webhook], "/webhooks", {"skip": skip, "limit": limit})

    def delete_webhook(self, webhook_id: str) -> Webhook:
        """Remove a webhook (its pending deliveries are not sent)."""
        return self._parse(Webhook, self._send("DELETE", f"/webhooks/{_segment(webhook_id)}"))

    def test_webhook(self, webhook_id: str) -> WebhookDelivery:
        """Queue a ``webhook.test`` event for one webhook; its (pending) delivery."""
        path = f"/webhooks/{_segment(webhook_id)}/test"
        return self._parse(WebhookDelivery, self._send("POST", path))

    def webhook_deliveries(
        self,
        webhook_id: str,
        *,
        status: str | None = None,
        event_id: str | None = None,
        skip: int = 0,
        limit: int = 100,
    ) -> Page[WebhookDelivery]:
        """A webhook's delivery log, newest first."""
        params = _params(status=status, event_id=event_id, skip=skip, limit=limit)
        path = f"/webhooks/{_segment(webhook_id)}/deliveries"
        return self._get(Page[WebhookDelivery], path, params)

    # -- the change stream ---------------------------------------------------------------------

    def events(
        self,
        *,
        interventions: bool = True,
        last_event_id: str | None = None,
        read_timeout: float = 30.0,
        on_open: Callable[[], None] | None = None,
    ) -> Iterator[StreamEvent]:
        """The change stream: a snapshot, then kill/revive (and intervention) events, live.

        Ends only when the server closes the stream (:class:`AgentGuardError`) or the client is
        closed; ``read_timeout`` bounds the silence between keep-alives. ``on_open`` is called
        once the server has accepted the stream, before its first event is read: from then on
        nothing stored is missed.
        """
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-store"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = last_event_id
        params = {"include": "interventions"} if interventions else {}
        timeout = httpx.Timeout(self._http.timeout.connect or 10.0, read=read_timeout)
        path = "/kill-switch/stream"
        try:
            with self._http.stream(
                "GET", path, params=params, headers=headers, timeout=timeout
            ) as response:
                if response.status_code != 200:
                    response.read()
                    raise_for_status(response, self._full(path))
                self._stream = response
                if on_open is not None:
                    on_open()
                for sse in EventSource(response).iter_sse():
                    try:
                        data = sse.json() if sse.data else {}
                    except ValueError as exc:
                        raise AgentGuardError(f"malformed {sse.event!r} event: {exc}") from exc
                    # SSE repeats the last id on events without one; interventions have none.
                    event_id = None if sse.event == "intervention" else sse.id or None
                    yield StreamEvent(sse.event, event_id, data)
        except httpx.ReadTimeout:
            raise AgentGuardError(
                f"no data from {self._full(path)} for {read_timeout:g} s"
            ) from None
        except httpx.TransportError as exc:
            raise unreachable(exc, self._full(path)) from None
        except SSEError as exc:
            raise AgentGuardError(f"{self._full(path)} is not an event stream: {exc}") from None
        finally:
            self._stream = None
        raise AgentGuardError(f"{self._full(path)}: the server closed the stream")

    # -- plumbing ------------------------------------------------------------------------------

    def _full(self, path: str) -> str:
        return f"{self.url}{API}{path}"

    def _send(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        read_timeout: float | None = None,
    ) -> httpx.Response:
        timeout = self._http.timeout
        if read_timeout is not None:
            timeout = httpx.Timeout(timeout.connect or 5.0, read=read_timeout)
        try:
            return self._http.request(method, path, params=params, json=json, timeout=timeout)
        except httpx.TimeoutException as exc:
            url = str(exc.request.url) if has_request(exc) else self._full(path)
            waited = self._http.timeout.read if read_timeout is None else read_timeout
            raise ServerUnreachableError(url, f"no answer within {waited:g} s") from None
        except httpx.TransportError as exc:
            raise unreachable(exc, self._full(path)) from None

    def _get(self, model: type[M], path: str, params: dict[str, Any] | None = None) -> M:
        return self._parse(model, self._send("GET", path, params=params))

    def _parse(self, model: type[M], response: httpx.Response) -> M:
        raise_for_status(response, str(response.request.url))
        try:
            return model.model_validate_json(response.content)
        except ValidationError as exc:
            raise AgentGuardError(
                f"unexpected answer from {response.request.url}: {exc.errors()[0]['msg']}"
            ) from None

    def _change(self, response: httpx.Response, kind: str) -> KillChange:
        record = self._parse(KillSwitch, response)
        version = int(response.headers.get(VERSION_HEADER, "0") or 0)
        return KillChange(version=version, kind=kind, kill_switch=record)  # type: ignore[arg-type]


def _params(**values: Any) -> dict[str, Any]:
    """Query parameters without the unset ones; datetimes in RFC 3339."""
    return {
        k: (v.isoformat() if isinstance(v, datetime) else v)
        for k, v in values.items()
        if v is not None
    }


def _segment(value: str) -> str:
    """``value`` as one path segment."""
    return quote(value, safe="")


def _wire(iv: Intervention) -> dict[str, Any]:
    """An intervention as sent: ``ran_for_ms`` only when set (a CANCELLED one), so a server
    older than it still takes every other kind."""
    exclude = {"ran_for_ms"} if iv.ran_for_ms is None else None
    return json.loads(iv.model_dump_json(exclude=exclude))  # type: ignore[no-any-return]
