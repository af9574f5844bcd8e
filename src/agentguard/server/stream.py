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
import math
import re
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict
from sqlalchemy import select
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from ..records import KillChange, Snapshot
from ..scope import Scope
from . import schemas as s
from .auth.binding import AgentNotAllowedError
from .inputs import parse_query
from .problems import ApiError, from_exception
from .store.database import is_unavailable
from .store.tables import interventions as interventions_table

if TYPE_CHECKING:
    from .app import KillSwitchServer
    from .auth.principal import Principal
    from .routes import Api, Call

logger = logging.getLogger("agentguard.server")

STREAM_PATH = "/api/v1/kill-switch/stream"
STATE_PATH = "/api/v1/kill-switch/state"
KEEPALIVE_HEADER = "X-AgentGuard-Keepalive"
INTERVENTION_POLL = 0.5  # seconds between reads of new interventions for include=interventions
# Open streams admitted per credential (an API key, a console session's key, a signed-in user)
# and per organization, in each server process; see StreamHub.admit.
DEFAULT_MAX_STREAMS_PER_KEY = 100
DEFAULT_MAX_STREAMS_PER_ORG = 1000
# Seconds between marks of streaming instances as seen, at most: well inside the fleet's
# default interval, after three of which an instance counts as stale.
PRESENCE_INTERVAL = 5.0


class KillStatePublic(BaseModel):
    """Every active kill switch of the organization as of ``version``."""

    organization_id: str
    version: int
    active: list[s.KillSwitchPublic]


class KillChangePublic(BaseModel):
    """The data of a ``kill`` or ``revive`` event: one change of the kill state."""

    version: int
    kind: Literal["kill", "revive"]
    kill_switch: s.KillSwitchPublic


class StreamQuery(BaseModel):
    """Who is listening (all optional) and what else to stream."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    # As heartbeats and acks take them: no NUL (PostgreSQL text cannot hold one), one visible
    # character at least; a stream's instance is written with the others in one batch.
    instance_id: s.InstanceId | None = None
    agent_id: s.TargetId | None = None
    run_id: s.TargetId | None = None
    mission_id: s.TargetId | None = None
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
    snapshot = await _snapshot(api.server, call.org)  # the index's while the database is away
    call.headers["ETag"] = f'"{snapshot.version}"'
    call.headers["Cache-Control"] = "no-cache"
    return public_state(snapshot)


class Published(NamedTuple):
    """A committed change and its SSE event, encoded once for every connection."""

    version: int
    event: bytes


# Put on a connection's queue to end it: its key was revoked or its session signed out.
_CLOSE = Published(-1, b"")


class _Connection(NamedTuple):
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[Published]
    key_id: str | None
    instance: tuple[str, Scope] | None  # the instance id and scope the client named
    session_id: str | None = None  # the console session it was opened with


class StreamLimitError(Exception):
    """Too many open streams for a credential or an organization (HTTP 429)."""

    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class StreamSlot:
    """One admitted stream, counted against its credential and organization until released."""

    def __init__(self, hub: StreamHub, organization_id: str, credential: str) -> None:
        self._hub = hub
        self.organization_id = organization_id
        self.credential = credential
        self._released = False

    def release(self) -> None:
        """Give the slot back (idempotent)."""
        if not self._released:
            self._released = True
            self._hub.release(self)


class StreamHub:
    """Fans committed changes out to the stream connections of this process.

    A connection made with an API key (or a console session of one) ends when that key is
    revoked, by this process or another: its client's reconnection is then refused. So does one
    made with a console session when the session is signed out, and one whose credential has
    an expiry (a Clerk token, a console cookie) when it expires.

    Each process admits at most ``max_streams_per_key`` open streams per credential (an API
    key, a console session's key, or a signed-in user) and ``max_streams_per_organization`` per
    organization; one more is refused with 429 and ``Retry-After``.

    A connection that names its ``instance_id`` keeps that instance live in the fleet (for
    ``GET /acks`` and ``POST /kill?wait=``) without heartbeats: it is recorded when it connects
    and marked seen every keep-alive (at most 5 s) while connected, all in one write. When its
    last connection ends and it neither reported a clean exit nor came back (here or on
    another server) within ``GONE_AFTER`` rounds, it is marked gone; it is live again once back.
    """

    GONE_AFTER = 3  # presence rounds (keep-alives, at most 5 s) after a stream ended

    def __init__(self, server: KillSwitchServer) -> None:
        self._server = server
        # (organization, instance) -> when (monotonic) its last connection here ended.
        self._left: dict[tuple[str, str], float] = {}
        self._connections: dict[str, set[_Connection]] = {}
        self._unwatch: dict[asyncio.Queue[Published], Callable[[], None]] = {}
        self._unsubscribe: Any = None
        # (organization, instance) -> its scope and how many open connections name it.
        self._present: dict[tuple[str, str], tuple[Scope, int]] = {}
        self._present_lock = threading.Lock()
        self._touch_now = threading.Event()
        self._stopped = threading.Event()
        self._toucher: threading.Thread | None = None
        self._admitted: dict[str, int] = {}  # credential or organization -> open streams
        self._admit_lock = threading.Lock()

    # -- admission ----------------------------------------------------------------------------

    def admit(self, principal: Principal) -> StreamSlot:
        """Count one more stream of the principal, or raise :class:`StreamLimitError`."""
        org = principal.organization_id
        if principal.key_id is not None:
            credential = f"key:{principal.key_id}"
        else:
            credential = f"user:{principal.method}:{principal.user_id}"
        per_credential, per_org = self._server.max_streams_per_key, self._server.max_streams_per_org
        retry_after = max(1, round(self._server.keepalive))
        with self._admit_lock:
            if self._admitted.get(f"org:{org}", 0) >= per_org:
                raise StreamLimitError(
                    f"this organization has {per_org} open change streams on this server, its "
                    "limit (max_streams_per_organization); close one or raise the limit",
                    retry_after,
                )
            if self._admitted.get(credential, 0) >= per_credential:
                raise StreamLimitError(
                    f"this credential has {per_credential} open change streams on this server, "
                    "its limit (max_streams_per_key); close one or raise the limit",
                    retry_after,
                )
            for bucket in (f"org:{org}", credential):
                self._admitted[bucket] = self._admitted.get(bucket, 0) + 1
        return StreamSlot(self, org, credential)

    def release(self, slot: StreamSlot) -> None:
        with self._admit_lock:
            for bucket in (f"org:{slot.organization_id}", slot.credential):
                left = self._admitted.get(bucket, 0) - 1
                if left > 0:
                    self._admitted[bucket] = left
                else:
                    self._admitted.pop(bucket, None)

    # -- connections --------------------------------------------------------------------------

    def open(
        self,
        organization_id: str,
        key_id: str | None = None,
        instance: tuple[str, Scope] | None = None,
        session_id: str | None = None,
    ) -> asyncio.Queue[Published]:
        if self._unsubscribe is None:
            self._unsubscribe = self._server.feed.subscribe(self._on_change)
            self._server.keys.on_revoked(self._on_revoked)
            self._server.sessions.on_signed_out(self._on_signed_out)
            # Other processes' sign-outs: rechecked whenever the database may have changed,
            # as the key store rechecks revocations.
            self._server.feed.on_external_change(self._recheck_sessions)
        queue: asyncio.Queue[Published] = asyncio.Queue()
        if key_id is not None:
            self._unwatch[queue] = self._server.keys.watch(key_id)
        connection = _Connection(asyncio.get_running_loop(), queue, key_id, instance, session_id)
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
            self._left.pop(key, None)
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
                self._left[key] = time.monotonic()
            else:
                self._present[key] = (scope, count - 1)

    def _touch_loop(self) -> None:
        interval = min(self._server.keepalive, PRESENCE_INTERVAL)
        while not self._stopped.is_set():
            self._touch_now.wait(interval)
            self._touch_now.clear()
            if self._stopped.is_set():
                return
            cutoff = time.monotonic() - self.GONE_AFTER * interval
            with self._present_lock:
                present = {key: scope for key, (scope, _) in self._present.items()}
                gone = [key for key, left in self._left.items() if left <= cutoff]
            try:
                self._server.fleet.touch(present)
                if gone:
                    # Unseen for two rounds: no other server has a stream of it either.
                    self._server.fleet.streams_ended(gone, unseen_for=2 * interval)
                    with self._present_lock:
                        for key in gone:
                            if self._left.get(key, math.inf) <= cutoff:
                                del self._left[key]
            except Exception as exc:  # the database is away: the next round tries again
                if is_unavailable(exc):
                    self._server.database.outage.began(exc)  # logged once, not every round
                else:
                    logger.warning(
                        "agentguard: could not mark streaming instances seen", exc_info=True
                    )

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
        ended = self._end(lambda c: c.key_id in key_ids)
        if ended:
            logger.info("agentguard: ending %d stream(s) of revoked key(s) %s", ended, key_ids)

    def _on_signed_out(self, session_ids: set[str]) -> None:
        # Called by the console sessions (this process) or the recheck (another's sign-out).
        ended = self._end(lambda c: c.session_id in session_ids)
        if ended:
            logger.info("agentguard: ending %d stream(s) of signed-out console session(s)", ended)

    def _recheck_sessions(self) -> None:
        sessions = {
            c.session_id
            for connections in list(self._connections.values())
            for c in list(connections)
            if c.session_id is not None
        }
        if sessions:
            signed_out = self._server.sessions.signed_out_among(sessions)
            if signed_out:
                self._on_signed_out(signed_out)

    def _end(self, which: Callable[[_Connection], bool]) -> int:
        ended = 0
        for connections in list(self._connections.values()):
            for connection in list(connections):
                if which(connection):
                    _put(connection, _CLOSE)
                    ended += 1
        return ended

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
    from .routes import request_id, require_principal

    rid = request_id(request)
    server = api.server
    try:
        principal = await require_principal(api, request, "check")
        query = parse_query(StreamQuery, request)
        query = await _identity(api, principal, query)
        slot = server.stream_hub.admit(principal)
        try:
            org = principal.organization_id
            # Loaded once per organization: it answers the snapshot while the database is away.
            await run_in_threadpool(server.index, org)
            # Read where interventions stand before the first event: none stored later is
            # missed. (This needs the database: while it is away such streams get a 503.)
            tail = await run_in_threadpool(InterventionTail, server, org) if query.include else None
        except BaseException:
            slot.release()
            raise
    except StreamLimitError as exc:
        return ApiError(
            "too_many_requests",
            str(exc),
            headers={"Retry-After": str(exc.retry_after), "x-request-id": rid},
        ).response()
    except Exception as exc:
        error = from_exception(exc, server.database.outage)
        if error is None:
            raise
        response = error.response()
        response.headers["x-request-id"] = rid
        return response
    keepalive = server.keepalive
    events = _events(server, principal, query, request.headers.get("last-event-id"), tail)
    return _StreamResponse(
        events,
        slot,
        ping=keepalive,
        headers={
            KEEPALIVE_HEADER: f"{keepalive:g}",
            "Cache-Control": "no-store",
            "x-request-id": rid,
        },
        send_timeout=30,
    )


class _StreamResponse(EventSourceResponse):
    """The event stream, holding its admission slot until the response is over, however."""

    def __init__(self, content: Any, slot: StreamSlot, **options: Any) -> None:
        super().__init__(content, **options)
        self._slot = slot

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._slot.release()


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
    server: KillSwitchServer,
    principal: Principal,
    query: StreamQuery,
    last_event_id: str | None,
    tail: InterventionTail | None,
) -> AsyncIterator[ServerSentEvent | bytes]:
    """The events of one connection. While the database is unreachable the kill state comes
    from the organization's index (kept by the change feed) and interventions wait."""
    store = server.store
    org, key_id = principal.organization_id, principal.key_id
    # Open before reading the state (no change falls in between) and before checking the key
    # once more (no revocation since it was authenticated goes unseen).
    instance = None
    if query.instance_id is not None:
        instance = (query.instance_id, Scope(query.agent_id, query.run_id, query.mission_id))
    queue = server.stream_hub.open(org, key_id, instance, principal.session_id)
    # The credential's end, if it has one: the stream ends then (on this loop's clock).
    ends_at = None
    if principal.expires_at is not None:
        remaining = (principal.expires_at - datetime.now(timezone.utc)).total_seconds()
        ends_at = asyncio.get_running_loop().time() + remaining
    try:
        if key_id is not None:
            # While the database is away no revocation can commit; the feed's resync on its
            # return ends this stream if one committed just before.
            revoked = await _unless_unavailable(server, server.keys.revoked_among, [key_id])
            if revoked:
                return
        if principal.session_id is not None:
            signed_out = await _unless_unavailable(
                server, server.sessions.signed_out_among, [principal.session_id]
            )
            if signed_out:
                return
        snapshot = await _snapshot(server, org)
        version = snapshot.version
        resume = _version(last_event_id)
        changes = None
        if resume is not None and resume <= version:  # a newer id than ours: not from us
            changes = await _unless_unavailable(server, store.changes_since, org, resume)
        if changes is not None:  # resume with the missed changes (maybe none)
            for missed in changes:
                yield _change_event(missed)
            version = max([resume or 0, *(c.version for c in changes)])
        else:
            yield _snapshot_event(snapshot)
        loop = asyncio.get_running_loop()
        while True:
            timeout = INTERVENTION_POLL if tail is not None else None
            if ends_at is not None:
                left = ends_at - loop.time()
                if left <= 0:
                    logger.info("agentguard: ending a stream whose credential expired")
                    return
                timeout = left if timeout is None else min(timeout, left)
            try:
                change: Published | None = await asyncio.wait_for(queue.get(), timeout)
            except asyncio.TimeoutError:
                change = None
            if change is _CLOSE:
                return
            if change is not None and change.version > version:
                if change.version > version + 1:  # a gap: read the missing changes in order
                    missing = await _unless_unavailable(server, store.changes_since, org, version)
                    if missing is None:
                        snapshot = await _snapshot(server, org)
                        yield _snapshot_event(snapshot)
                        version = snapshot.version
                        continue
                    for earlier in missing:
                        if earlier.version < change.version:
                            yield _change_event(earlier)
                yield change.event
                version = change.version
            if tail is not None:
                # Nothing is lost while the database is away: the tail reads on from its cursor.
                items = await _unless_unavailable(server, tail.read) or []
                for item in items:
                    yield ServerSentEvent(json.dumps(item), event="intervention")
    finally:
        server.stream_hub.close(org, queue)


async def _snapshot(server: KillSwitchServer, org: str) -> Snapshot:
    """The organization's kill state: from the database, or from its index while that is away."""
    try:
        return await run_in_threadpool(server.store.snapshot, org)
    except Exception as exc:
        if not is_unavailable(exc):
            raise
        server.database.outage.began(exc)
    # Loaded already for a stream (when it was accepted); for /state perhaps not, then this
    # raises the outage again, answered 503.
    index = await run_in_threadpool(server.index, org)
    with index.changed:  # the index's write lock: its contents and version of one moment
        return Snapshot(organization_id=org, version=index.version, active=index.active())


async def _unless_unavailable(
    server: KillSwitchServer, read: Callable[..., Any], *args: Any
) -> Any:
    """``read(*args)`` in a worker thread, or ``None`` while the database is unreachable."""
    try:
        return await run_in_threadpool(read, *args)
    except Exception as exc:
        if not is_unavailable(exc):
            raise
        server.database.outage.began(exc)
        return None


def _snapshot_event(snapshot: Snapshot) -> ServerSentEvent:
    return ServerSentEvent(
        public_state(snapshot).model_dump_json(), event="snapshot", id=str(snapshot.version)
    )


_EVENT_ID = re.compile(r"[0-9]{1,18}")  # ASCII digits only: "²".isdigit(), yet int() refuses it


def _version(last_event_id: str | None) -> int | None:
    """The version a ``Last-Event-ID`` names; ``None`` (a fresh snapshot) for anything else."""
    if last_event_id and _EVENT_ID.fullmatch(last_event_id):
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
    properties = StreamQuery.model_json_schema()["properties"]
    for name in ("instance_id", "agent_id", "run_id", "mission_id"):
        schema = next(o for o in properties[name]["anyOf"] if o.get("type") == "string")
        params.append({"name": name, "in": "query", "required": False, "schema": schema})
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
    # Before OpenAPI 3.2's itemSchema, the schema of an event stream describes each event as
    # parsed: {event, data, id?, retry?}; the JSON in `data` is described by contentSchema.
    events = [
        _event_schema("snapshot", "KillStatePublic", versioned=True),
        _event_schema("kill", "KillChangePublic", versioned=True),
        _event_schema("revive", "KillChangePublic", versioned=True),
        _event_schema("intervention", "InterventionPublic", versioned=False),
    ]
    return {
        "operationId": "stream",
        "summary": "Stream kill-state changes (Server-Sent Events)",
        "tags": ["kill-switch"],
        "description": (
            "Needs the operator, agent or read scope (or admin). Events: `snapshot` "
            "(id = version; data = the kill state), then `kill` / `revive` (id = version; data = "
            "`{version, kind, kill_switch}`), and with `include=interventions` also "
            "`intervention`. Keep-alive comments every `X-AgentGuard-Keepalive` seconds. "
            "The stream ends when its credential does (key revoked, console session signed "
            "out or expired, session token expired)."
        ),
        "parameters": params,
        "responses": {
            "200": {
                "description": "An endless event stream",
                "headers": {KEEPALIVE_HEADER: {"schema": {"type": "string"}}},
                "content": {"text/event-stream": {"schema": {"oneOf": events}}},
            },
            "401": {"description": "Missing or invalid credentials", **error},
            "403": {"description": "The credential lacks the scope", **error},
            "422": {"description": "A query parameter is invalid", **error},
            "503": {"description": "The server's database is unavailable", **error},
            "429": {
                "description": "Too many open streams for the credential or the organization",
                "headers": {
                    "Retry-After": {
                        "description": "Seconds to wait before trying again",
                        "schema": {"type": "string", "pattern": "^[0-9]+$"},
                    }
                },
                **error,
            },
        },
    }


STREAM_MODELS: tuple[type[BaseModel], ...] = (KillChangePublic, KillStatePublic)


def _event_schema(name: str, model: str, *, versioned: bool) -> dict[str, Any]:
    """One event as parsed from the stream: its name, its JSON data and (if any) its id."""
    properties: dict[str, Any] = {
        "event": {"const": name},
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "contentSchema": {"$ref": f"#/components/schemas/{model}"},
        },
        "id": {"type": "string", "pattern": "^[0-9]+$"} if versioned else {"type": "string"},
        "retry": {"type": "integer"},
    }
    required = ["event", "data", "id"] if versioned else ["event", "data"]
    return {"type": "object", "required": required, "properties": properties}
