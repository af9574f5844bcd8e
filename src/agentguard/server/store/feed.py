"""The change feed: per-organization kill indexes kept coherent with the database.

Writes of this process reach the feed directly. Writes of other processes arrive through
PostgreSQL LISTEN/NOTIFY (a listener thread that resyncs from the database after every
reconnect) or, on SQLite, through ``PRAGMA data_version`` on a dedicated connection, probed
before each answer from an index and by a background poller. Either way the feed reads the
change log from the database and applies versions strictly in order.

Key revocations travel the same way. On PostgreSQL each listener acknowledges a revocation
once this process has forgotten the key, and the revoking call waits for every listener
(:meth:`ChangeFeed.key_revocation`); a process trusts its cache of verified keys only while
its listener is connected and has looked for notices within :data:`KEY_CACHE_LEASE` seconds.
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

from ...index import KillIndex
from ...records import KillChange, Snapshot
from ...store import ChangeListener
from .database import Database, describe, is_unavailable

if TYPE_CHECKING:
    import psycopg

logger = logging.getLogger("agentguard.server")

CHANGES_CHANNEL = "agentguard_changes"
KEYS_CHANNEL = "agentguard_keys"
KEYS_ACK_CHANNEL = "agentguard_keys_ack"
DRILLS_CHANNEL = "agentguard_drills"  # an organization started a drill (its id the payload)
LISTENER_NAME = "agentguard-feed"  # the listener's application_name, as revocations find it
# Seconds a process trusts its verified keys after its listener last looked for notices.
KEY_CACHE_LEASE = 1.0
# Seconds a revocation waits for every listener: past the lease, so a listener that has not
# acknowledged by then has stopped trusting its cache.
REVOCATION_WAIT = 2.5
_LISTEN_TIMEOUT = 0.25
_CATCH_UP_PAGE = 1000


class ChangeLog(Protocol):
    """Where the feed reads kill state and changes from (the store's kill-state rows)."""

    def versions(self, organization_ids: Iterable[str] | None) -> dict[str, int]: ...

    def snapshot(self, organization_id: str) -> Snapshot: ...

    def changes_since(
        self, organization_id: str, version: int, *, limit: int = 1000
    ) -> list[KillChange] | None: ...


class _OrgState:
    __slots__ = ("index", "delivered", "lock")

    def __init__(self, delivered: int, index: KillIndex | None = None) -> None:
        self.index = index  # loaded when something reads the organization's kill state
        self.delivered = delivered  # the last version handed to listeners
        self.lock = threading.RLock()  # re-entrant: a listener may write to the store


class ChangeFeed:
    """Per-organization :class:`KillIndex` views and change listeners of one database."""

    def __init__(self, database: Database, log: ChangeLog) -> None:
        self._database = database
        self._log = log
        self._orgs: dict[str, _OrgState] = {}
        self._orgs_lock = threading.Lock()
        self._listeners: list[ChangeListener] = []
        self._invalidators: list[Callable[[], None]] = []
        self._drill_listeners: list[Callable[[str], None]] = []
        # Versions already accounted for, per organization, as of the last full resync.
        self._baseline: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._probe: _DataVersionProbe | None = None
        self.listening = threading.Event()
        self.reconnects = 0
        self._listens = database.is_postgres
        self._alive_at = 0.0  # when the listener last looked for notices (monotonic)

    # -- reading ------------------------------------------------------------------------------

    def index(self, organization_id: str) -> KillIndex:
        """The organization's kill index (loaded from the database on first use)."""
        state = self._orgs.get(organization_id)
        if state is not None and state.index is not None:
            return state.index
        return self._load_index(organization_id)

    def trusts_key_cache(self) -> bool:
        """Whether cached verified keys are current: no revocation can be unheard of."""
        if not self._listens:
            return True  # SQLite: the probe before each answer catches up first
        return self.listening.is_set() and time.monotonic() - self._alive_at < KEY_CACHE_LEASE

    @contextlib.contextmanager
    def key_revocation(self, timeout: float = REVOCATION_WAIT) -> Iterator[str]:
        """Yield the token to notify a key revocation with (``"<key id> <token>"``).

        On PostgreSQL, when the block (which commits the revocation) ends without an error,
        wait until every listening process has acknowledged the token, at most ``timeout`` s;
        one that does not answer by then has stopped trusting its cache (see the lease).
        """
        token = secrets.token_hex(8)
        if not self._listens:
            yield token
            return
        import psycopg

        conninfo = self._database.psycopg_conninfo()
        with psycopg.connect(conninfo, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f"LISTEN {KEYS_ACK_CHANNEL}")
            yield token
            deadline = time.monotonic() + timeout  # counted from the commit
            try:
                _await_acks(conn, token, deadline)
            except psycopg.Error:
                logger.warning(
                    "agentguard: could not confirm a key revocation with every process; "
                    "waiting out their cache lease",
                    exc_info=True,
                )
                time.sleep(max(0.0, deadline - time.monotonic()))

    def refresh(self) -> None:
        """Catch up with writes of other processes if SQLite says there were any (cheap)."""
        probe = self._probe
        if probe is not None:
            probe.check(self._external_write)

    # -- writing ------------------------------------------------------------------------------

    def publish(self, organization_id: str, change: KillChange) -> None:
        """Apply a change committed by this process and tell the listeners, in version order."""
        state = self._state(organization_id, change.version - 1)
        with state.lock:
            if change.version <= state.delivered:
                return
            if change.version == state.delivered + 1:
                self._deliver(organization_id, state, [change])
            else:  # a change of another thread or process is still to come: read them in order
                self._catch_up(organization_id, state)

    def notified(self, organization_id: str, version: int) -> None:
        """Another process committed ``version`` of an organization: read what is new."""
        state = self._state(organization_id, version - 1)
        with state.lock:
            if version > state.delivered:
                self._catch_up(organization_id, state)

    def resync(self) -> None:
        """Catch up with the database (after a reconnect, or when SQLite saw another writer).

        With listeners, every organization is checked, so they hear of changes of
        organizations this process has not read yet; without, only the loaded indexes.
        """
        if self._listeners:
            versions = self._log.versions(None)
        else:
            versions = self._log.versions(
                [org for org, state in list(self._orgs.items()) if state.index is not None]
            )
        for organization_id, version in versions.items():
            state = self._orgs.get(organization_id)
            if state is None:
                if version <= self._baseline.get(organization_id, 0):
                    continue
                state = self._state(organization_id, self._baseline.get(organization_id, 0))
            with state.lock:
                if version > state.delivered:
                    self._catch_up(organization_id, state)
        if self._listeners:
            self._baseline = versions
        self._external_change()

    def subscribe(self, listener: ChangeListener) -> Callable[[], None]:
        """Call ``listener(organization_id, change)`` for every change, in version order."""
        if not self._listeners and self._thread is not None:
            self._baseline = self._log.versions(None)
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe

    def on_external_change(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` whenever another process may have changed the database."""
        self._invalidators.append(callback)

    def on_drill(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(organization_id)`` when another process started a drill there
        (PostgreSQL; on SQLite, :meth:`on_external_change` is told of every write)."""
        self._drill_listeners.append(callback)

    def _state(self, organization_id: str, known: int) -> _OrgState:
        """The organization's state; a new one has delivered ``known`` (no index loaded yet)."""
        state = self._orgs.get(organization_id)
        if state is not None:
            return state
        with self._orgs_lock:
            state = self._orgs.get(organization_id)
            if state is None:
                state = self._orgs[organization_id] = _OrgState(known)
        return state

    def _load_index(self, organization_id: str) -> KillIndex:
        with self._orgs_lock:
            state = self._orgs.get(organization_id)
            if state is None:  # first sight: the snapshot is the starting point for listeners too
                snapshot = self._log.snapshot(organization_id)
                state = self._orgs[organization_id] = _OrgState(snapshot.version, _index(snapshot))
                return state.index  # type: ignore[return-value]
        with state.lock:
            if state.index is None:
                snapshot = self._log.snapshot(organization_id)
                state.index = _index(snapshot)
                if snapshot.version > state.delivered:  # listeners still owed these
                    self._catch_up(organization_id, state)
            return state.index

    def _catch_up(self, organization_id: str, state: _OrgState) -> None:
        while True:
            changes = self._log.changes_since(
                organization_id, state.delivered, limit=_CATCH_UP_PAGE
            )
            if changes is None:  # the log was pruned past what this process has: start over
                snapshot = self._log.snapshot(organization_id)
                if state.index is not None:
                    state.index.replace(snapshot)
                # Streams that see the next change's gap find it pruned too and resend a
                # snapshot.
                state.delivered = max(state.delivered, snapshot.version)
                return
            if not changes:
                return
            self._deliver(organization_id, state, changes)
            if len(changes) < _CATCH_UP_PAGE:
                return

    def _deliver(self, organization_id: str, state: _OrgState, changes: list[KillChange]) -> None:
        index = state.index
        for change in changes:
            if index is not None:
                index.apply(change)
                index.synced_at = time.monotonic()
            state.delivered = change.version
            for listener in list(self._listeners):
                try:
                    listener(organization_id, change)
                except Exception:  # one broken listener must not stop the others or the write
                    logger.exception("agentguard: change listener %r failed", listener)

    def _external_write(self) -> None:
        self.resync()

    def _external_change(self) -> None:
        for callback in list(self._invalidators):
            callback()

    # -- cross-process coherence --------------------------------------------------------------

    def start(self, *, poll_interval: float = 0.05) -> None:
        """Start following other processes' writes (PostgreSQL LISTEN, or SQLite probing)."""
        if self._thread is not None:
            return
        database = self._database
        self._stop.clear()
        if database.is_postgres:
            target = self._listen
        elif database.sqlite_path() is not None:
            self._probe = _DataVersionProbe(database.sqlite_path() or "")
            target = self._poll
        else:
            return  # in-memory SQLite: no other process can write to it
        self._poll_interval = poll_interval
        self._baseline = self._log.versions(None)
        self._thread = threading.Thread(target=target, name="agentguard-feed", daemon=True)
        self._thread.start()
        if database.is_postgres:
            self.listening.wait(10.0)

    def stop(self) -> None:
        """Stop the listener or poller thread."""
        self._stop.set()
        self.listening.clear()  # revocations go unheard from now on
        if self._thread is not None:
            self._thread.join(5.0)
            self._thread = None
        if self._probe is not None:
            self._probe.close()
            self._probe = None

    def _poll(self) -> None:
        while not self._stop.wait(self._poll_interval):
            try:
                self.refresh()
            except Exception as exc:
                if is_unavailable(exc):
                    self._database.outage.began(exc)  # logged once, not every poll
                else:
                    logger.exception("agentguard: could not read changes from the database")

    def _listen(self) -> None:
        import psycopg

        database = self._database
        conninfo = database.psycopg_conninfo()
        backoff = 0.05
        failures = 0  # in a row: the first is logged, the others only at debug level
        while not self._stop.is_set():
            try:
                with psycopg.connect(
                    conninfo, autocommit=True, connect_timeout=5, application_name=LISTENER_NAME
                ) as conn:
                    conn.execute(f"LISTEN {CHANGES_CHANNEL}")
                    conn.execute(f"LISTEN {KEYS_CHANNEL}")
                    conn.execute(f"LISTEN {DRILLS_CHANNEL}")
                    self.resync()  # whatever was committed while we were not listening
                    self._alive_at = time.monotonic()
                    self.listening.set()
                    if failures:
                        logger.warning(
                            "agentguard: the PostgreSQL change listener is back (%d attempts)",
                            failures,
                        )
                    backoff, failures = 0.05, 0
                    while not self._stop.is_set():
                        acks = []
                        for notice in conn.notifies(timeout=_LISTEN_TIMEOUT, stop_after=1):
                            ack = self._on_notice(notice.channel, notice.payload)
                            if ack:
                                acks.append(ack)
                        for ack in acks:  # the revoked keys are forgotten: say so
                            conn.execute("SELECT pg_notify(%s, %s)", (KEYS_ACK_CHANNEL, ack))
                        self._alive_at = time.monotonic()
            except Exception as exc:
                if self._stop.is_set():
                    return
                self.listening.clear()
                self.reconnects += 1
                failures += 1
                unavailable = is_unavailable(exc)
                if unavailable:
                    database.outage.began(exc)
                logger.log(
                    logging.WARNING if failures == 1 else logging.DEBUG,
                    "agentguard: lost the PostgreSQL change listener (%s); reconnecting in "
                    "%.2f s, then with backoff",
                    describe(exc),
                    backoff,
                    exc_info=not unavailable,  # a traceback only for what is not an outage
                )
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)

    def _on_notice(self, channel: str, payload: str) -> str | None:
        """Act on a notice; for a key revocation, the token to acknowledge it with."""
        if channel == KEYS_CHANNEL:
            self._external_change()
            return payload.partition(" ")[2] or None
        if channel == DRILLS_CHANNEL:
            for callback in list(self._drill_listeners):
                try:
                    callback(payload)
                except Exception:  # a drill not sent is a drill not answered, not an outage
                    logger.exception("agentguard: could not send a drill")
            return None
        try:
            organization_id, version = json.loads(payload)
        except (ValueError, TypeError):
            logger.warning("agentguard: ignoring malformed change notice %r", payload)
            return None
        self.notified(str(organization_id), int(version))
        return None


def _await_acks(conn: psycopg.Connection[Any], token: str, deadline: float) -> None:
    """Wait until every listener of this database that connected before now acknowledged."""
    row = conn.execute("SELECT clock_timestamp()").fetchone()
    assert row is not None
    since = row[0]  # a listener connected later read the revocation when it (re)synced
    # backend_start is hidden for other roles' sessions (without pg_read_all_stats): wait for
    # those listeners too.
    acked: set[int] = set()
    while True:
        pending = {
            pid
            for (pid,) in conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "AND application_name = %s AND (backend_start IS NULL OR backend_start < %s)",
                (LISTENER_NAME, since),
            )
        } - acked
        if not pending:
            return
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            logger.warning(
                "agentguard: %d change listener(s) did not acknowledge a key revocation; "
                "they no longer trust their cached keys",
                len(pending),
            )
            return
        for notice in conn.notifies(timeout=min(remaining, 0.1)):
            if notice.channel == KEYS_ACK_CHANNEL and notice.payload == token:
                acked.add(notice.pid)
                if pending <= acked:
                    break


def _index(snapshot: Snapshot) -> KillIndex:
    index = KillIndex()
    index.replace(snapshot)
    index.mark_authoritative()  # kept current by the feed
    index.synced_at = time.monotonic()
    return index


class _DataVersionProbe:
    """``PRAGMA data_version`` on its own connection: it changes when another connection commits."""

    def __init__(self, path: str) -> None:
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._cursor = self._conn.cursor()  # reused: this runs before every /check
        self._lock = threading.Lock()
        self._seen = self._read()

    def _read(self) -> int:
        return int(self._cursor.execute("PRAGMA data_version").fetchone()[0])

    def check(self, on_change: Callable[[], None]) -> None:
        # The lock spans the catch-up, so no caller answers from the index while another
        # caller is still applying what the probe found.
        with self._lock:
            current = self._read()
            if current != self._seen:
                on_change()
                self._seen = current

    def close(self) -> None:
        with self._lock:
            self._conn.close()
