"""The change stream (SSE): how remote guards stay current.

``GET /api/v1/kill-switch/stream`` sends a ``snapshot`` event carrying the organization's
version, then one ``kill`` or ``revive`` event per change whose id is its version, and SSE
comments as keep-alives. With ``Last-Event-ID`` it resumes with the missed changes, then a
``resumed`` event (caught up, at its version), while the change log still has them (and they
are fewer than :data:`DELTA_LIMIT`), else with a fresh snapshot. Snapshots are built once per
version (:mod:`.snapshots`); the stream is gzip-compressed, event by event, when the client
accepts it (:mod:`.compression`). ``include=interventions`` adds ``intervention`` events (for
``agentguard tail`` and the console). ``drills=1`` (a guard naming its ``instance_id``) adds
``drill`` events, with no id: rehearse a kill of the target and acknowledge it. A stream that
does not ask gets none, so older guards never see one.

Polling guards read the same snapshot from ``GET /api/v1/kill-switch/state`` (:mod:`.state`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timezone
from functools import partial
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from ...index import KillIndex
from ...protocol import API, RESUMED_EVENT, Drill, DrillEvent, Resumed
from ...records import KillChange
from ...scope import Scope
from .. import schemas as s
from ..auth.binding import AgentNotAllowedError
from ..auth.keys import KeyStore
from ..auth.principal import Principal
from ..auth.session import ConsoleSessions
from ..hub import CLOSE, Published, StreamHub, StreamLimitError, StreamSlot
from ..inputs import parse_query
from ..problems import ApiError, from_exception
from ..store.database import Database, is_unavailable
from ..store.sqlstore import SQLStore
from ..store.streams import InterventionTail
from .authenticator import Authenticator
from .call import request_id
from .compression import GzipStream, SpliceSlot, accepts_gzip
from .snapshots import EncodedSnapshot, SnapshotCache
from .state import DELTA_LIMIT, KillChangePublic, KillStatePublic, change_json

logger = logging.getLogger("agentguard.server")

STREAM_PATH = f"{API}/kill-switch/stream"
KEEPALIVE_HEADER = "X-AgentGuard-Keepalive"
INTERVENTION_POLL = 0.5  # seconds between reads of new interventions for include=interventions


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
    drills: bool = False  # send drill events (DRILLS_PARAM)


STREAM_MODELS: tuple[type[BaseModel], ...] = (KillChangePublic, KillStatePublic, Resumed)


class StreamEndpoint:
    """The SSE endpoint: admits a stream, then sends its events until it or its credential ends."""

    def __init__(
        self,
        *,
        hub: StreamHub,
        auth: Authenticator,
        snapshots: SnapshotCache,
        store: SQLStore,
        keys: KeyStore,
        sessions: ConsoleSessions,
        database: Database,
        index: Callable[[str], KillIndex],
    ) -> None:
        self.hub = hub
        self.auth = auth
        self.snapshots = snapshots
        self.store = store
        self.keys = keys
        self.sessions = sessions
        self.database = database
        self.index = index

    async def serve(self, request: Request) -> Response:
        """``GET /kill-switch/stream``."""
        rid = request_id(request)
        try:
            principal = await self.auth.require(request, "check")
            query = parse_query(StreamQuery, request)
            query = await self._identity(principal, query)
            slot = self.hub.admit(principal)
            try:
                org = principal.organization_id
                # Loaded once per organization: it answers the snapshot while the database is
                # away.
                await run_in_threadpool(self.index, org)
                # Read where interventions stand before the first event: none stored later is
                # missed. (This needs the database: while it is away such streams get a 503.)
                tail = (
                    await run_in_threadpool(InterventionTail, self.database, org)
                    if query.include
                    else None
                )
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
            error = from_exception(exc, self.database.outage)
            if error is None:
                raise
            response = error.response()
            response.headers["x-request-id"] = rid
            return response
        keepalive = self.hub.keepalive
        splice = SpliceSlot() if accepts_gzip(request.headers.get("accept-encoding")) else None
        last_event_id = request.headers.get("last-event-id")
        events = self._events(principal, query, last_event_id, tail, splice)
        return _StreamResponse(
            events,
            slot,
            splice,
            ping=keepalive,
            headers={
                KEEPALIVE_HEADER: f"{keepalive:g}",
                "Cache-Control": "no-store",
                "x-request-id": rid,
            },
            send_timeout=30,
        )

    async def _identity(self, principal: Principal, query: StreamQuery) -> StreamQuery:
        """The identity a stream may announce: an agent key's only for one of its agents.

        An agent key announcing no agent, or one that speaks for no agent (made before keys
        named them), streams the kill state but its instance is not recorded (it keeps no
        instance live); one naming another agent, or another agent's instance, is refused
        with 403.
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
                self.store.instance_agent, principal.organization_id, query.instance_id
            )
            if owner is not None and not binding.allows(owner):
                raise AgentNotAllowedError(
                    "instance_id",
                    f"instance_id: instance {query.instance_id!r} belongs to agent {owner!r}; "
                    f"this key speaks for {binding.speaks_for()}",
                )
        return query

    async def _events(
        self,
        principal: Principal,
        query: StreamQuery,
        last_event_id: str | None,
        tail: InterventionTail | None,
        splice: SpliceSlot | None,
    ) -> AsyncIterator[ServerSentEvent | bytes]:
        """The events of one connection. While the database is unreachable the kill state
        comes from the organization's index (kept by the change feed) and interventions wait."""
        store = self.store
        org, key_id = principal.organization_id, principal.key_id
        # Open before reading the state (no change falls in between) and before checking the
        # key once more (no revocation since it was authenticated goes unseen).
        instance = None
        if query.instance_id is not None:
            instance = (query.instance_id, Scope(query.agent_id, query.run_id, query.mission_id))
        queue = self.hub.open(org, key_id, instance, principal.session_id, drills=query.drills)
        # The credential's end, if it has one: the stream ends then (on this loop's clock).
        ends_at = None
        if principal.expires_at is not None:
            remaining = (principal.expires_at - datetime.now(timezone.utc)).total_seconds()
            ends_at = asyncio.get_running_loop().time() + remaining
        try:
            if key_id is not None:
                # While the database is away no revocation can commit; the feed's resync on
                # its return ends this stream if one committed just before.
                revoked = await self._unless_unavailable(self.keys.revoked_among, [key_id])
                if revoked:
                    return
            if principal.session_id is not None:
                signed_out = await self._unless_unavailable(
                    self.sessions.signed_out_among, [principal.session_id]
                )
                if signed_out:
                    return
            resume = _version(last_event_id)
            changes = await self._missed(org, resume) if resume is not None else None
            if resume is not None and changes is not None:  # the missed changes (maybe none)
                for missed in changes:
                    yield _change_event(missed)
                version = max([resume, *(c.version for c in changes)])
                yield ServerSentEvent(
                    Resumed(organization_id=org, version=version).model_dump_json(),
                    event=RESUMED_EVENT,
                    id=str(version),
                )
            else:
                snapshot = await self.snapshots.get(org)
                yield _snapshot_event(snapshot, splice)
                version = snapshot.version
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
                if change is CLOSE:
                    return
                if change is not None and change.drill:
                    yield change.event  # no change of kill state: its version is not ours
                elif change is not None and change.version > version:
                    if change.version > version + 1:  # a gap: read the missing changes in order
                        missing = await self._unless_unavailable(store.changes_since, org, version)
                        if missing is None:
                            snapshot = await self.snapshots.get(org)
                            yield _snapshot_event(snapshot, splice)
                            version = snapshot.version
                            continue
                        for earlier in missing:
                            if earlier.version < change.version:
                                yield _change_event(earlier)
                    yield change.event
                    version = change.version
                if tail is not None:
                    # Nothing is lost while the database is away: the tail reads on from its
                    # cursor.
                    rows = await self._unless_unavailable(tail.read) or []
                    for row in rows:
                        yield ServerSentEvent(_intervention_json(row), event="intervention")
        finally:
            self.hub.close(org, queue)

    async def _missed(self, org: str, resume: int) -> list[KillChange] | None:
        """The changes after ``resume`` while the log has them all and they are few; else
        ``None`` (a snapshot then). A version newer than ours is not from us: ``None``."""
        versions = await self._unless_unavailable(self.store.versions, [org])
        if versions is None or resume > versions[org]:
            return None
        read = partial(self.store.changes_since, org, resume, limit=DELTA_LIMIT)
        changes: list[KillChange] | None = await self._unless_unavailable(read)
        return changes if changes is not None and len(changes) < DELTA_LIMIT else None

    async def _unless_unavailable(self, read: Callable[..., Any], *args: Any) -> Any:
        """``read(*args)`` in a worker thread, or ``None`` while the database is unreachable."""
        try:
            return await run_in_threadpool(read, *args)
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            self.database.outage.began(exc)
            return None


class _StreamResponse(EventSourceResponse):
    """The event stream, holding its admission slot until the response is over, however."""

    def __init__(
        self, content: Any, slot: StreamSlot, splice: SpliceSlot | None, **options: Any
    ) -> None:
        super().__init__(content, **options)
        self._slot = slot
        self._splice = splice  # set when the client takes gzip

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self._splice is not None:
            send = GzipStream(send, self._splice)
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._slot.release()


def encode_change(change: KillChange) -> bytes:
    """A change as the SSE event every stream connection is sent (the hub encodes it once)."""
    return _change_event(change).encode()


def encode_drill(drill: Drill) -> bytes:
    """A drill as the SSE event sent to the streams that asked for drills (no id)."""
    data = DrillEvent(
        id=drill.id,
        target_type=drill.target_type,
        target_id=drill.target_id,
        started_at=drill.started_at,
    )
    return ServerSentEvent(data.model_dump_json(), event="drill").encode()


def _snapshot_event(snapshot: EncodedSnapshot, splice: SpliceSlot | None) -> bytes:
    """The snapshot's event; its compressed form goes beside it to a gzip stream."""
    if splice is not None:
        splice.next = snapshot.deflated()
    return snapshot.event


_EVENT_ID = re.compile(r"[0-9]{1,18}")  # ASCII digits only: "²".isdigit(), yet int() refuses it


def _version(last_event_id: str | None) -> int | None:
    """The version a ``Last-Event-ID`` names; ``None`` (a fresh snapshot) for anything else."""
    if last_event_id and _EVENT_ID.fullmatch(last_event_id):
        return int(last_event_id)
    return None


def _change_event(change: KillChange) -> ServerSentEvent:
    return ServerSentEvent(
        json.dumps(change_json(change)), event=change.kind, id=str(change.version)
    )


def _intervention_json(row: dict[str, Any]) -> str:
    """The data of an ``intervention`` event: the stored row in its public form."""
    item = s.InterventionPublic.model_validate(
        {k: v for k, v in row.items() if k in s.InterventionPublic.model_fields}
    )
    return json.dumps(json.loads(item.model_dump_json()))
