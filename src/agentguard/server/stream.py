"""The change stream (SSE) and the polled kill state: how remote guards stay current.

``GET /api/v1/kill-switch/stream`` sends a ``snapshot`` event carrying the organization's
version, then one ``kill`` or ``revive`` event per change whose id is its version, and SSE
comments as keep-alives. With ``Last-Event-ID`` it resumes with the missed changes while the
change log still has them, else with a fresh snapshot. ``include=interventions`` adds
``intervention`` events (for ``agentguard tail`` and the console).

``GET /api/v1/kill-switch/state`` answers the same snapshot with an ETag, for polling guards.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from ..records import KillChange, Snapshot
from ..scope import Scope
from . import schemas as s
from .binding import AgentNotAllowedError
from .inputs import parse_query
from .problems import from_exception
from .tables import interventions as interventions_table

if TYPE_CHECKING:
    from .app import KillSwitchServer
    from .auth import Principal
    from .routes import Api, Call

logger = logging.getLogger("agentguard.server")

STREAM_PATH = "/api/v1/kill-switch/stream"
STATE_PATH = "/api/v1/kill-switch/state"
KEEPALIVE_HEADER = "X-AgentGuard-Keepalive"
INTERVENTION_POLL = 0.5  # seconds between reads of new interventions for include=interventions
# Seconds between marks of streaming instances as seen, at most: well inside the fleet's
# default interval, after three of which an instance counts as stale.
PRESENCE_INTERVAL = 5.0


class KillStatePublic(BaseModel):
    """Every active kill switch of the organization as of ``version``."""

    organization_id: str
    version: int
    active: list[s.KillSwitchPublic]


class StreamQuery(BaseModel):
    """Who is listening (all optional) and what else to stream."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    instance_id: str | None = Field(default=None, min_length=1, max_length=256)
    agent_id: str | None = Field(default=None, min_length=1, max_length=256)
    run_id: str | None = Field(default=None, min_length=1, max_length=256)
    mission_id: str | None = Field(default=None, min_length=1, max_length=256)
    include: Literal["interventions"] | None = None


def public_state(snapshot: Snapshot) -> KillStatePublic:
    """The wire form of a snapshot."""
    return KillStatePublic(
        organization_id=snapshot.organization_id,
        version=snapshot.version,
        active=[s.KillSwitchPublic.model_validate(ks.model_dump()) for ks in snapshot.active],
    )


async def state(api: Api, call: Call) -> BaseModel:
    """The kill state for polling; the ETag lets an unchanged poll answer 304."""
    snapshot = await run_in_threadpool(api.server.store.snapshot, call.org)
    call.headers["ETag"] = f'"{snapshot.version}"'
    call.headers["Cache-Control"] = "no-cache"
    return public_state(snapshot)


class Published(NamedTuple):
    """A committed change and its SSE event, encoded once for every connection."""

    version: int
    event: bytes


# Put on a connection's queue to end it: its key has been revoked.
_CLOSE = Published(-1, b"")


class _Connection(NamedTuple):
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[Published]
    key_id: str | None
    instance: tuple[str, Scope] | None  # the instance id and scope the client named


class StreamHub:
    """Fans committed changes out to the stream connections of this process.

    A connection made with an API key (or a console session of one) ends when that key is
    revoked, by this process or another: its client's reconnection is then refused.

    A connection that names its ``instance_id`` keeps that instance live in the fleet (for
    ``GET /acks`` and ``POST /kill?wait=``) without heartbeats: it is recorded when it connects
    and marked seen every keep-alive (at most 5 s) while connected, all in one write.
    """

    def __init__(self, server: KillSwitchServer) -> None:
        self._server = server
        self._connections: dict[str, set[_Connection]] = {}
        self._unwatch: dict[asyncio.Queue[Published], Callable[[], None]] = {}
        self._unsubscribe: Any = None
        # (organization, instance) -> its scope and how many open connections name it.
        self._present: dict[tuple[str, str], tuple[Scope, int]] = {}
        self._present_lock = threading.Lock()
        self._touch_now = threading.Event()
        self._stopped = threading.Event()
        self._toucher: threading.Thread | None = None

    def open(
        self,
        organization_id: str,
        key_id: str | None = None,
        instance: tuple[str, Scope] | None = None,
    ) -> asyncio.Queue[Published]:
        if self._unsubscribe is None:
            self._unsubscribe = self._server.feed.subscribe(self._on_change)
            self._server.keys.on_revoked(self._on_revoked)
        queue: asyncio.Queue[Published] = asyncio.Queue()
        if key_id is not None:
            self._unwatch[queue] = self._server.keys.watch(key_id)
        connection = _Connection(asyncio.get_running_loop(), queue, key_id, instance)
        self._connections.setdefault(organization_id, set()).add(connection)
        if instance is not None:
            self._arrive(organization_id, *instance)
        return queue

    def close(self, organization_id: str, queue: asyncio.Queue[Published]) -> None:
        connections = self._connections.get(organization_id, set())
        for connection in list(connections):
            if connection.queue is queue:
                connections.discard(connection)
                if connection.instance is not None:
                    self._leave(organization_id, connection.instance[0])
        unwatch = self._unwatch.pop(queue, None)
        if unwatch is not None:
            unwatch()

    def stop(self) -> None:
        """End the presence writer (the server is closing)."""
        self._stopped.set()
        self._touch_now.set()
        if self._toucher is not None:
            self._toucher.join(5.0)
            self._toucher = None

    # -- presence of streaming instances ------------------------------------------------------

    def _arrive(self, organization_id: str, instance_id: str, scope: Scope) -> None:
        key = (organization_id, instance_id)
        with self._present_lock:
            _, count = self._present.get(key, (scope, 0))
            self._present[key] = (scope, count + 1)
            if self._toucher is None and not self._stopped.is_set():
                self._toucher = threading.Thread(
                    target=self._touch_loop, name="agentguard-presence", daemon=True
                )
                self._toucher.start()
        self._touch_now.set()  # recorded at once, so a kill sent next counts it

    def _leave(self, organization_id: str, instance_id: str) -> None:
        key = (organization_id, instance_id)
        with self._present_lock:
            scope, count = self._present.get(key, (Scope(), 1))
            if count <= 1:
                self._present.pop(key, None)
            else:
                self._present[key] = (scope, count - 1)

    def _touch_loop(self) -> None:
        while not self._stopped.is_set():
            self._touch_now.wait(min(self._server.keepalive, PRESENCE_INTERVAL))
            self._touch_now.clear()
            if self._stopped.is_set():
                return
            with self._present_lock:
                present = {key: scope for key, (scope, _) in self._present.items()}
            try:
                self._server.fleet.touch(present)
            except Exception:  # the database is away: the next round tries again
                logger.warning("agentguard: could not mark streaming instances seen", exc_info=True)

    def _on_change(self, organization_id: str, change: KillChange) -> None:
        # Called by the change feed in version order, from whichever thread learnt of it.
        connections = list(self._connections.get(organization_id, ()))
        if not connections:
            return
        published = Published(change.version, _change_event(change).encode())
        for connection in connections:
            _put(connection, published)

    def _on_revoked(self, key_ids: set[str]) -> None:
        # Called by the key store, from whichever thread found the keys revoked.
        ended = 0
        for connections in list(self._connections.values()):
            for connection in list(connections):
                if connection.key_id in key_ids:
                    _put(connection, _CLOSE)
                    ended += 1
        if ended:
            logger.info("agentguard: ending %d stream(s) of revoked key(s) %s", ended, key_ids)

    @property
    def connections(self) -> int:
        return sum(len(c) for c in self._connections.values())


def _put(connection: _Connection, item: Published) -> None:
    try:
        connection.loop.call_soon_threadsafe(connection.queue.put_nowait, item)
    except RuntimeError:  # the connection's loop has closed
        pass


async def stream(api: Api, request: Request) -> Response:
    """The SSE endpoint."""
    from .routes import _principal, request_id

    rid = request_id(request)
    try:
        principal = await _principal(api, request, "check")
        query = parse_query(StreamQuery, request)
        query = await _identity(api, principal, query)
    except Exception as exc:
        error = from_exception(exc)
        if error is None:
            raise
        response = error.response()
        response.headers["x-request-id"] = rid
        return response
    server = api.server
    keepalive = server.keepalive
    events = _events(server, principal, query, request.headers.get("last-event-id"))
    return EventSourceResponse(
        events,
        ping=keepalive,
        headers={
            KEEPALIVE_HEADER: f"{keepalive:g}",
            "Cache-Control": "no-store",
            "x-request-id": rid,
        },
        send_timeout=30,
    )


async def _identity(api: Api, principal: Principal, query: StreamQuery) -> StreamQuery:
    """The identity a stream may announce: an agent key's only for one of its agents.

    An agent key announcing no agent, or one that speaks for no agent (made before keys named
    them), streams the kill state but its instance is not recorded (it keeps no instance live);
    one naming another agent, or another agent's instance, is refused with 403.
    """
    binding = principal.binding
    if binding is None or (query.agent_id is None and query.instance_id is None):
        return query
    if not binding.patterns or (query.agent_id is None and not binding.allows(None)):
        return query.model_copy(update={"instance_id": None, "agent_id": None})
    if query.agent_id is not None:
        binding.require("agent_id", query.agent_id)
    if query.instance_id is not None:
        _, owner = await run_in_threadpool(
            api.server.store.instance_agent, principal.organization_id, query.instance_id
        )
        if owner is not None and not binding.allows(owner):
            raise AgentNotAllowedError(
                "instance_id",
                f"instance_id: instance {query.instance_id!r} belongs to agent {owner!r}; "
                f"this key speaks for {binding.speaks_for()}",
            )
    return query


async def _events(
    server: KillSwitchServer, principal: Principal, query: StreamQuery, last_event_id: str | None
) -> AsyncIterator[ServerSentEvent | bytes]:
    store = server.store
    org, key_id = principal.organization_id, principal.key_id
    # Open before reading the state (no change falls in between) and before checking the key
    # once more (no revocation since it was authenticated goes unseen).
    instance = None
    if query.instance_id is not None:
        instance = (query.instance_id, Scope(query.agent_id, query.run_id, query.mission_id))
    queue = server.stream_hub.open(org, key_id, instance)
    try:
        if key_id is not None:
            revoked = await run_in_threadpool(server.keys.revoked_among, [key_id])
            if revoked:
                return
        # Read where interventions stand before the first event: none stored later is missed.
        tail = await run_in_threadpool(InterventionTail, server, org) if query.include else None
        snapshot = await run_in_threadpool(store.snapshot, org)
        version = snapshot.version
        resume = _version(last_event_id)
        changes = None
        if resume is not None and resume <= version:  # a newer id than ours: not from us
            changes = await run_in_threadpool(store.changes_since, org, resume)
        if changes is not None:  # resume with the missed changes (maybe none)
            for missed in changes:
                yield _change_event(missed)
            version = max([resume or 0, *(c.version for c in changes)])
        else:
            yield _snapshot_event(snapshot)
        while True:
            timeout = INTERVENTION_POLL if tail is not None else None
            try:
                change: Published | None = await asyncio.wait_for(queue.get(), timeout)
            except asyncio.TimeoutError:
                change = None
            if change is _CLOSE:
                return
            if change is not None and change.version > version:
                if change.version > version + 1:  # a gap: read the missing changes in order
                    missing = await run_in_threadpool(store.changes_since, org, version)
                    if missing is None:
                        snapshot = await run_in_threadpool(store.snapshot, org)
                        yield _snapshot_event(snapshot)
                        version = snapshot.version
                        continue
                    for earlier in missing:
                        if earlier.version < change.version:
                            yield _change_event(earlier)
                yield change.event
                version = change.version
            if tail is not None:
                items = await run_in_threadpool(tail.read)
                for item in items:
                    yield ServerSentEvent(json.dumps(item), event="intervention")
    finally:
        server.stream_hub.close(org, queue)


def _snapshot_event(snapshot: Snapshot) -> ServerSentEvent:
    return ServerSentEvent(
        public_state(snapshot).model_dump_json(), event="snapshot", id=str(snapshot.version)
    )


def _version(last_event_id: str | None) -> int | None:
    if last_event_id and last_event_id.isdigit() and len(last_event_id) < 19:
        return int(last_event_id)
    return None


def _change_event(change: KillChange) -> ServerSentEvent:
    body = {
        "version": change.version,
        "kind": change.kind,
        "kill_switch": json.loads(
            s.KillSwitchPublic.model_validate(change.kill_switch.model_dump()).model_dump_json()
        ),
    }
    return ServerSentEvent(json.dumps(body), event=change.kind, id=str(change.version))


class InterventionTail:
    """An organization's interventions as they are stored, each sent once, oldest first.

    Rows are read by their insertion sequence. On PostgreSQL a transaction can commit after one
    that took a later sequence number, so its rows appear behind the cursor; every row up to the
    cursor is therefore looked at again (sequence numbers only) for ``SETTLE`` seconds, and the
    late ones are sent then. SQLite commits in sequence order and needs no second look.
    """

    SETTLE = 10.0  # seconds a transaction may take to commit after a later one (PostgreSQL)
    PAGE = 500

    def __init__(self, server: KillSwitchServer, org: str) -> None:
        self._database = server.database
        self._org = org
        self._settle = self.SETTLE if server.database.is_postgres else 0.0
        self._sent: set[int] = set()  # above the floor: sequence numbers sent or there before us
        self._marks: deque[tuple[float, int]] = deque()  # (when, cursor then)
        t = interventions_table
        with self._database.engine.connect() as conn:
            # The latest rows there already count as sent; a row below them that commits later
            # (it was in flight as we connected) is then still sent, as a late one.
            there = list(
                conn.execute(
                    select(t.c.seq)
                    .where(t.c.organization_id == org)
                    .order_by(t.c.seq.desc())
                    .limit(self.PAGE if self._settle else 1)
                ).scalars()
            )
        self.cursor = there[0] if there else 0  # the highest sequence sent or there before us
        # Every row up to the floor has been sent or was there before us.
        self._floor = self.cursor
        if self._settle:
            self._sent = set(there)
            self._floor = there[-1] - 1 if len(there) == self.PAGE else 0
        self._settle_up_to(time.monotonic())

    def read(self) -> list[dict[str, Any]]:
        """The interventions stored since the last read (blocking: reads the database)."""
        t = interventions_table
        mine = t.c.organization_id == self._org
        with self._database.engine.connect() as conn:
            late: list[Any] = []
            if self.cursor > self._floor:
                seen = conn.execute(
                    select(t.c.seq).where(mine, t.c.seq > self._floor, t.c.seq <= self.cursor)
                ).scalars()
                missed = sorted(set(seen) - self._sent)
                if missed:
                    late = list(
                        conn.execute(select(t).where(mine, t.c.seq.in_(missed)).order_by(t.c.seq))
                        .mappings()
                        .all()
                    )
            new = (
                conn.execute(
                    select(t).where(mine, t.c.seq > self.cursor).order_by(t.c.seq).limit(self.PAGE)
                )
                .mappings()
                .all()
            )
        items = []
        for row in [*late, *new]:
            item = s.InterventionPublic.model_validate(
                {k: v for k, v in row.items() if k in s.InterventionPublic.model_fields}
            )
            items.append(json.loads(item.model_dump_json()))
            self._sent.add(int(row["seq"]))
            self.cursor = max(self.cursor, int(row["seq"]))
        self._settle_up_to(time.monotonic())
        return items

    def _settle_up_to(self, now: float) -> None:
        self._marks.append((now, self.cursor))
        floor = self._floor
        while self._marks and self._marks[0][0] <= now - self._settle:
            self._floor = max(self._floor, self._marks.popleft()[1])
        if self._floor != floor and self._sent:  # forget what is settled now, once
            self._sent = {seq for seq in self._sent if seq > self._floor}


def stream_operation() -> dict[str, Any]:
    """The OpenAPI operation of the stream (not a JSON endpoint, so written out here)."""
    params = []
    for name in ("instance_id", "agent_id", "run_id", "mission_id"):
        params.append(
            {
                "name": name,
                "in": "query",
                "required": False,
                "schema": {"type": "string", "minLength": 1, "maxLength": 256},
            }
        )
    params.append(
        {
            "name": "include",
            "in": "query",
            "required": False,
            "schema": {"type": "string", "enum": ["interventions"]},
        }
    )
    params.append(
        {
            "name": "Last-Event-ID",
            "in": "header",
            "required": False,
            "description": "Resume after this version",
            "schema": {"type": "string"},
        }
    )
    error = {
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}
    }
    return {
        "operationId": "stream",
        "summary": "Stream kill-state changes (Server-Sent Events)",
        "tags": ["kill-switch"],
        "description": (
            "Needs the operator, agent or read scope (or admin). Events: `snapshot` "
            "(id = version; data = the kill state), then `kill` / `revive` (id = version; data = "
            "`{version, kind, kill_switch}`), and with `include=interventions` also "
            "`intervention`. Keep-alive comments every `X-AgentGuard-Keepalive` seconds."
        ),
        "parameters": params,
        "responses": {
            "200": {
                "description": "An endless event stream",
                "headers": {KEEPALIVE_HEADER: {"schema": {"type": "string"}}},
                "content": {"text/event-stream": {"schema": {"type": "string"}}},
            },
            "401": {"description": "Missing or invalid credentials", **error},
            "403": {"description": "The credential lacks the scope", **error},
            "422": {"description": "A query parameter is invalid", **error},
        },
    }
