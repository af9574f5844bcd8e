"""Full snapshots of kill state, built once per version and shared by every guard that needs one.

After a server restart every guard reconnects; those the change log cannot catch up need the
whole state. Each process builds an organization's snapshot once per version (one build at a
time per organization, and at most ``builds`` at a time in all), encodes it to JSON and to its
SSE event once, and compresses each once when first asked.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from starlette.concurrency import run_in_threadpool

from ...index import KillIndex
from ...records import Snapshot
from ..store.database import Outage, is_unavailable
from ..store.sqlstore import SQLStore
from .compression import Deflated, gzip_bytes

BUILDS = 2  # snapshot builds running at once in one process, across organizations


class EncodedSnapshot:
    """One organization's kill state at one version, as the SSE event and the JSON sent.

    The JSON is a view into the event (one copy of megabytes, not two); each compressed form
    is made once, when first asked for.
    """

    __slots__ = ("organization_id", "version", "event", "json", "_deflated", "_gzip", "_lock")

    def __init__(self, organization_id: str, version: int, json: bytes) -> None:
        self.organization_id = organization_id
        self.version = version
        head = b"id: %d\r\nevent: snapshot\r\ndata: " % version
        self.event = head + json + b"\r\n\r\n"  # JSON has no line breaks: one data line
        self.json = memoryview(self.event)[len(head) : len(head) + len(json)]
        self._deflated: Deflated | None = None
        self._gzip: bytes | None = None
        self._lock = threading.Lock()

    def gzip(self) -> bytes:
        """The JSON, gzip-compressed (once)."""
        with self._lock:
            if self._gzip is None:
                self._gzip = gzip_bytes(self.json)
            return self._gzip

    def deflated(self) -> Deflated:
        """The event and its deflate blocks, for a gzip stream (compressed once)."""
        with self._lock:
            if self._deflated is None:
                self._deflated = Deflated.of(self.event)
            return self._deflated


class SnapshotCache:
    """The latest encoded snapshot of each organization, rebuilt when its version moves."""

    def __init__(
        self,
        store: SQLStore,
        index: Callable[[str], KillIndex],
        outage: Outage,
        encode: Callable[[Snapshot], bytes],
        *,
        builds: int = BUILDS,
    ) -> None:
        self.store = store
        self.index = index
        self.outage = outage
        self.encode = encode
        self.built = 0  # snapshots built (read and encoded) by this process
        self._latest: dict[str, EncodedSnapshot] = {}
        self._org_locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()
        self._builds = threading.BoundedSemaphore(builds)

    async def get(self, organization_id: str) -> EncodedSnapshot:
        """The organization's kill state, at its current version or newer."""
        return await run_in_threadpool(self.current, organization_id)

    def current(self, organization_id: str) -> EncodedSnapshot:
        """:meth:`get`, in a worker thread."""
        version = self._version(organization_id)
        cached = self._latest.get(organization_id)
        if cached is not None and cached.version >= version:
            return cached
        with self._lock_of(organization_id):
            cached = self._latest.get(organization_id)  # built while this one waited?
            if cached is not None and cached.version >= version:
                return cached
            with self._builds:
                snapshot = self._read(organization_id)
                encoded = EncodedSnapshot(organization_id, snapshot.version, self.encode(snapshot))
                self.built += 1
            self._latest[organization_id] = encoded
            return encoded

    def _lock_of(self, organization_id: str) -> threading.Lock:
        with self._locks_lock:
            return self._org_locks.setdefault(organization_id, threading.Lock())

    def _version(self, organization_id: str) -> int:
        try:
            return self.store.versions([organization_id])[organization_id]
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            self.outage.began(exc)
        return self.index(organization_id).version

    def _read(self, organization_id: str) -> Snapshot:
        try:
            return self.store.snapshot(organization_id)
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            self.outage.began(exc)
        # While the database is away: the index the change feed keeps (loaded for a stream when
        # it was accepted; for /state perhaps not, then this raises the outage, answered 503).
        index = self.index(organization_id)
        with index.changed:  # the index's write lock: its contents and version of one moment
            return Snapshot(
                organization_id=organization_id, version=index.version, active=index.active()
            )
