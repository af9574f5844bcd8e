"""The stream hub: fans committed kill-state changes out to this process's open streams.

It also counts open streams against their limits, ends the streams of revoked keys and
signed-out sessions, keeps the instances that streams name live in the fleet, and writes how
many streams this process holds to the database (for ``GET /metrics``).
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any, NamedTuple, Protocol

from ..protocol import Drill
from ..records import KillChange, utcnow
from ..scope import Scope
from .auth.keys import KeyStore
from .auth.principal import Principal
from .auth.session import ConsoleSessions
from .fleet import Fleet
from .store.database import Outage, is_unavailable
from .store.feed import ChangeFeed

logger = logging.getLogger("agentguard.server")

# Open streams admitted per credential (an API key, a console session's key, a signed-in user)
# and per organization, in each server process; see StreamHub.admit.
DEFAULT_MAX_STREAMS_PER_KEY = 100
DEFAULT_MAX_STREAMS_PER_ORG = 1000
# Seconds between marks of streaming instances as seen, at most: well inside the fleet's
# default interval, after three of which an instance counts as stale.
PRESENCE_INTERVAL = 5.0
# A process rewrites its open-stream counts at least this often while it has streams; counts
# older than STREAMS_FRESH are a dead process's, left out of the totals, and deleted after
# STREAMS_FORGOTTEN.
STREAMS_REFRESH = 0.8 * PRESENCE_INTERVAL
STREAMS_FRESH = timedelta(seconds=4 * PRESENCE_INTERVAL)
STREAMS_FORGOTTEN = timedelta(hours=1)
DRILL_REMEMBERED = 60.0  # seconds past its deadline a sent drill's id is kept (never resent)


class StreamCounts(Protocol):
    """Where each process's open streams per organization are written (the store)."""

    def record_open_streams(
        self,
        process_id: str,
        counts: Mapping[str, int],
        *,
        now: datetime,
        forget_before: datetime,
    ) -> None: ...

    def forget_open_streams(self, process_id: str) -> None: ...


class RunningDrills(Protocol):
    """Where the drills still waiting for answers are read (the store)."""

    def running_drills(self, organization_ids: Iterable[str]) -> list[tuple[str, Drill]]: ...


class Published(NamedTuple):
    """A committed change (or a drill) and its SSE event, encoded once for every connection."""

    version: int
    event: bytes
    drill: bool = False  # a drill: no change of kill state, sent as it comes


# Put on a connection's queue to end it: its key was revoked or its session signed out.
CLOSE = Published(-1, b"")


class _Connection(NamedTuple):
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[Published]
    key_id: str | None
    instance: tuple[str, Scope] | None  # the instance id and scope the client named
    session_id: str | None = None  # the console session it was opened with
    drills: bool = False  # asked for drill events (a guard that acknowledges them)


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

    def __init__(
        self,
        *,
        feed: ChangeFeed,
        keys: KeyStore,
        sessions: ConsoleSessions,
        fleet: Fleet,
        outage: Outage,
        encode: Callable[[KillChange], bytes],
        keepalive: float,
        counts: StreamCounts,
        drills: RunningDrills,
        encode_drill: Callable[[Drill], bytes],
        max_streams_per_key: int = DEFAULT_MAX_STREAMS_PER_KEY,
        max_streams_per_org: int = DEFAULT_MAX_STREAMS_PER_ORG,
    ) -> None:
        self._feed = feed
        self._keys = keys
        self._sessions = sessions
        self._fleet = fleet
        self._outage = outage
        self._encode = encode  # a change as the SSE event every connection is sent
        self._drills = drills
        self._encode_drill = encode_drill
        # Drills already sent by this process: id -> when (monotonic) to forget it.
        self._drills_sent: dict[str, float] = {}
        self._drills_lock = threading.Lock()
        self.keepalive = keepalive
        self.max_streams_per_key = max_streams_per_key
        self.max_streams_per_org = max_streams_per_org
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
        # This process's open streams per organization, as last written, and when (monotonic).
        self._counts = counts
        self.process_id = f"{os.getpid()}-{uuid.uuid4().hex}"
        self._recorded: dict[str, int] = {}
        self._recorded_at = -math.inf

    # -- admission ----------------------------------------------------------------------------

    def admit(self, principal: Principal) -> StreamSlot:
        """Count one more stream of the principal, or raise :class:`StreamLimitError`."""
        org = principal.organization_id
        if principal.key_id is not None:
            credential = f"key:{principal.key_id}"
        else:
            credential = f"user:{principal.method}:{principal.user_id}"
        per_credential, per_org = self.max_streams_per_key, self.max_streams_per_org
        retry_after = max(1, round(self.keepalive))
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
        drills: bool = False,
    ) -> asyncio.Queue[Published]:
        if self._unsubscribe is None:
            self._unsubscribe = self._feed.subscribe(self._on_change)
            self._keys.on_revoked(self._on_revoked)
            self._sessions.on_signed_out(self._on_signed_out)
            # Other processes' sign-outs: rechecked whenever the database may have changed,
            # as the key store rechecks revocations.
            self._feed.on_external_change(self._recheck_sessions)
            # Drills started by other processes: told by NOTIFY (PostgreSQL) or found when
            # SQLite says another process wrote.
            self._feed.on_external_change(self.find_drills)
            self._feed.on_drill(self.find_drills)
        queue: asyncio.Queue[Published] = asyncio.Queue()
        if key_id is not None:
            self._unwatch[queue] = self._keys.watch(key_id)
        connection = _Connection(
            asyncio.get_running_loop(),
            queue,
            key_id,
            instance,
            session_id,
            drills=drills and instance is not None,
        )
        self._connections.setdefault(organization_id, set()).add(connection)
        if instance is not None:
            self._arrive(organization_id, *instance)
        else:
            with self._present_lock:
                self._start_writer()
            self._touch_now.set()  # its count written at once
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
        """End the presence writer and take this process's stream counts back (closing)."""
        self._stopped.set()
        self._touch_now.set()
        if self._toucher is not None:
            self._toucher.join(5.0)
            self._toucher = None
            try:
                self._counts.forget_open_streams(self.process_id)
            except Exception:  # the database is away: the counts stop being recent instead
                logger.debug("agentguard: could not delete this process's stream counts")

    # -- presence of streaming instances ------------------------------------------------------

    def _arrive(self, organization_id: str, instance_id: str, scope: Scope) -> None:
        key = (organization_id, instance_id)
        with self._present_lock:
            _, count = self._present.get(key, (scope, 0))
            self._present[key] = (scope, count + 1)
            self._left.pop(key, None)
            self._start_writer()
        self._touch_now.set()  # recorded at once, so a kill sent next counts it

    def _start_writer(self) -> None:
        """Start the thread writing presence and stream counts (called under _present_lock)."""
        if self._toucher is None and not self._stopped.is_set():
            self._toucher = threading.Thread(
                target=self._touch_loop, name="agentguard-presence", daemon=True
            )
            self._toucher.start()

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
        interval = min(self.keepalive, PRESENCE_INTERVAL)
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
                self._fleet.touch(present)
                self._record_counts()
                if gone:
                    # Unseen for two rounds: no other server has a stream of it either.
                    self._fleet.streams_ended(gone, unseen_for=2 * interval)
                    with self._present_lock:
                        for key in gone:
                            if self._left.get(key, math.inf) <= cutoff:
                                del self._left[key]
            except Exception as exc:  # the database is away: the next round tries again
                if is_unavailable(exc):
                    self._outage.began(exc)  # logged once, not every round
                else:
                    logger.warning(
                        "agentguard: could not mark streaming instances seen", exc_info=True
                    )

    def _record_counts(self) -> None:
        """Write this process's open streams per organization, when changed or due again."""
        counts = {org: len(c) for org, c in list(self._connections.items()) if c}
        elapsed = time.monotonic() - self._recorded_at
        if counts == self._recorded and (not counts or elapsed < STREAMS_REFRESH):
            return
        now = utcnow()
        self._counts.record_open_streams(
            self.process_id, counts, now=now, forget_before=now - STREAMS_FORGOTTEN
        )
        self._recorded, self._recorded_at = counts, time.monotonic()

    def _on_change(self, organization_id: str, change: KillChange) -> None:
        # Called by the change feed in version order, from whichever thread learnt of it.
        connections = list(self._connections.get(organization_id, ()))
        if not connections:
            return
        published = Published(change.version, self._encode(change))
        for connection in connections:
            _put(connection, published)

    # -- drills -------------------------------------------------------------------------------

    def find_drills(self, organization_id: str | None = None) -> None:
        """Send the running drills not sent yet to the streams that take them (of one
        organization, or of every organization with such a stream)."""
        orgs = [
            org
            for org, connections in list(self._connections.items())
            if (organization_id is None or org == organization_id)
            and any(c.drills for c in list(connections))
        ]
        if not orgs:
            return
        try:
            running = self._drills.running_drills(orgs)
        except Exception as exc:  # the database is away: the next write or notice looks again
            if is_unavailable(exc):
                self._outage.began(exc)
                return
            logger.warning("agentguard: could not read the running drills", exc_info=True)
            return
        for org, drill in running:
            self.publish_drill(org, drill)

    def publish_drill(self, organization_id: str, drill: Drill) -> int:
        """Send a drill to this process's streams of instances it may reach (once); how many."""
        now = time.monotonic()
        with self._drills_lock:
            if drill.id in self._drills_sent:
                return 0
            self._drills_sent[drill.id] = now + drill.timeout_s + DRILL_REMEMBERED
            for old in [d for d, until in self._drills_sent.items() if until < now]:
                del self._drills_sent[old]
        published = Published(0, self._encode_drill(drill), drill=True)
        sent = 0
        for connection in list(self._connections.get(organization_id, ())):
            if connection.drills and connection.instance is not None:
                if _may_run(connection.instance[1], drill.target_type, drill.target_id):
                    _put(connection, published)
                    sent += 1
        return sent

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
            signed_out = self._sessions.signed_out_among(sessions)
            if signed_out:
                self._on_signed_out(signed_out)

    def _end(self, which: Callable[[_Connection], bool]) -> int:
        ended = 0
        for connections in list(self._connections.values()):
            for connection in list(connections):
                if which(connection):
                    _put(connection, CLOSE)
                    ended += 1
        return ended

    @property
    def connections(self) -> int:
        return sum(len(c) for c in self._connections.values())


def _may_run(scope: Scope, target_type: str, target_id: str) -> bool:
    """Whether a kill of the target could apply to an instance announcing ``scope``."""
    if target_type == "tool":
        return True
    own = getattr(scope, f"{target_type}_id", None)
    return own is None or own == target_id


def _put(connection: _Connection, item: Published) -> None:
    try:
        connection.loop.call_soon_threadsafe(connection.queue.put_nowait, item)
    except RuntimeError:  # the connection's loop has closed
        pass
