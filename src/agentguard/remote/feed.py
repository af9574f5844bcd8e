"""The feed interface: what keeps a remote guard's kill state current, and the state it keeps.

A :class:`Feed` (streaming or polling, as LaunchDarkly's ``UpdateProcessor``) runs on its own
daemon thread and writes only into a :class:`FeedState`: the index, whether and when it last
synced, and what went wrong. The remote source reads that state; neither knows the other.
"""

from __future__ import annotations

import logging
import math
import random
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable

import httpx

from ..index import KillIndex
from ..protocol import DrillEvent
from ..records import KillChange, Snapshot

logger = logging.getLogger("agentguard")


class ProtocolError(Exception):
    """The server sent something the client cannot use; reconnect and resync."""


class ConfigurationError(Exception):
    """401/403: the key is wrong or lacks a scope; retried on a long backoff."""


class ServerBusy(ProtocolError):
    """429/503 with ``Retry-After``: come back after that long (spread out, not all at once)."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def delay(self) -> float:
        """``Retry-After`` with up to half of it again at random, so guards spread out."""
        return self.retry_after * random.uniform(1.0, 1.5)


def raise_if_busy(response: httpx.Response, what: str) -> None:
    """Raise :class:`ServerBusy` for a 429 or 503 that says when to retry."""
    if response.status_code in (429, 503):
        try:
            seconds = float(response.headers.get("Retry-After", ""))
        except ValueError:
            return
        if 0 < seconds <= 3600:
            raise ServerBusy(f"{what} answered HTTP {response.status_code}", seconds)


def raise_for_configuration(response: httpx.Response, url: str) -> None:
    """Raise :class:`ConfigurationError` when the server refused the key."""
    if response.status_code in (401, 403):
        response.read()
        raise ConfigurationError(
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


class FeedState:
    """A remote guard's view of the server's kill state, and how current it is."""

    def __init__(
        self,
        url: str,
        clock: Callable[[], float],
        on_applied: Callable[[int], None] | None = None,
        on_drilled: Callable[[str], None] | None = None,
    ) -> None:
        self.url = url
        self.clock = clock
        self.index = KillIndex()
        self.organization_id = ""
        self.connected = False
        self.resyncs = 0
        self.resumes = 0  # reconnections caught up with only the changes missed
        self.last_error: str | None = None
        self.bootstrapped = False
        self._synced = threading.Event()
        # Told each version applied (the acknowledgement to the server).
        self._on_applied = on_applied
        # Told each drill rehearsed (its acknowledgement to the server).
        self._on_drilled = on_drilled

    def bootstrap(self, snapshot: Snapshot) -> None:
        """Start from a saved snapshot, trusted until the first sync with the server."""
        self.index.replace(snapshot)
        self.organization_id = snapshot.organization_id
        self.bootstrapped = True
        self.index.mark_authoritative()

    @property
    def has_synced(self) -> bool:
        """Whether the index was synced with the server (not just bootstrapped) at least once."""
        return self._synced.is_set()

    def wait_until_synced(self, timeout: float | None = None) -> bool:
        """Block until the first snapshot arrived; return whether it did in time."""
        return self._synced.wait(timeout)

    def install(self, snapshot: Snapshot) -> None:
        """Replace the index with a full snapshot (a newer version already applied stays)."""
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

    def apply(self, change: KillChange) -> bool:
        """Apply one change if newer; acknowledge it when applied."""
        applied = self.index.apply(change)
        if applied:
            self.applied()
        return applied

    def drill(self, event: DrillEvent) -> bool:
        """Rehearse a drill on the index as its kill would be applied, refusing nothing;
        acknowledge it when the index could have applied the kill."""
        rehearsed = self.index.rehearse(event.target_type, event.target_id)
        if rehearsed and self._on_drilled is not None:
            self._on_drilled(event.id)
        return rehearsed

    def applied(self) -> None:
        """Tell the acknowledger the index's version."""
        if self._on_applied is not None:
            self._on_applied(self.index.version)

    def synced_now(self, *, live: bool) -> None:
        now = self.clock()
        if live:
            # A live stream is current: silence longer than twice the keep-alive ends it.
            self.index.synced_at = now
            self.index.mark_authoritative()
        else:
            self.index.mark_synced(now)
        self._synced.set()

    def lost(self, reason: str, *, last_heard: float | None = None) -> None:
        self.connected = False
        self.last_error = reason
        if self.index.fresh_until == math.inf and (self._synced.is_set() or not self.bootstrapped):
            heard = self.clock() if last_heard is None else last_heard
            self.index.mark_synced(heard)


class Feed(ABC):
    """Keeps a :class:`FeedState` current from the server, on a daemon thread of its own."""

    name: str

    def __init__(self, state: FeedState, http: httpx.Client, *, auth_error_backoff: float) -> None:
        self.state = state
        self.http = http
        self.auth_error_backoff = auth_error_backoff
        self.stopping = threading.Event()
        self._thread = threading.Thread(
            target=self.run, name=f"agentguard-{self.name}", daemon=True
        )

    @abstractmethod
    def run(self) -> None:
        """The thread's body: keep the state current until :meth:`stop`."""

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the thread, cutting short a read in progress."""
        self.stopping.set()
        self.interrupt()
        self._thread.join(timeout)

    def interrupt(self) -> None:  # noqa: B027 - optional hook: a poll has nothing to cut short
        """Cut short a blocking read (called from another thread)."""
