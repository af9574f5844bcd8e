"""``RemoteSource``: a guard's kill state from a remote agentguard server.

The orchestration only: a :class:`~.feed.Feed` (``stream``, the default, or ``poll``) keeps
the index current, :class:`~.acks.AckSender` reports each version applied, :class:`~.strict.
StrictCheck` asks the server before every call (``strict``), and :class:`~.http.Client` carries
the operator verbs.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import httpx
from pydantic import ValidationError

from ..checkpoints import validate_checkpoint_key
from ..errors import InvalidInputError
from ..interventions import InterventionRecorder
from ..protocol import HeartbeatReply, HeartbeatReport
from ..records import Intervention, KillChange, KillStatus, Snapshot
from ..scope import Scope
from ..sources import KillStateSource, Verdict
from ..targets import validate_target
from .acks import AckSender
from .backoff import RETRY_FOR, call_with_retries
from .errors import raise_for_status
from .feed import Feed, FeedState
from .http import Client
from .polling import PollingFeed
from .streaming import StreamingFeed
from .strict import StrictCheck

Mode = Literal["stream", "poll", "strict"]
MODES: tuple[str, ...] = ("stream", "poll", "strict")


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
        self.instance_id = instance_id
        self.identity = identity or Scope()
        self.client = Client(self.url, api_key=api_key, timeout=timeout, transport=transport)
        http = self.client.http
        # Strict guards keep no view, so they have nothing to acknowledge.
        self._acks: AckSender | None = None
        if mode != "strict" and instance_id:
            self._acks = AckSender(
                self.url,
                instance_id,
                self.identity,
                api_key=api_key,
                timeout=timeout,
                transport=transport,
            )
        self._state = FeedState(
            self.url,
            clock,
            self._acks.want if self._acks else None,
            self._acks.drilled if self._acks else None,
        )
        self.index = self._state.index
        if bootstrap is not None:
            self._state.bootstrap(_read_bootstrap(Path(bootstrap)))
        self._check = StrictCheck(self.client, self._state)
        self._feed: Feed | None = None
        if mode == "stream":
            self._feed = StreamingFeed(
                self._state,
                http,
                keepalive=keepalive,
                auth_error_backoff=auth_error_backoff,
                instance_id=instance_id,
                identity=self.identity,
                drills=self._acks is not None,
            )
        elif mode == "poll":
            self._feed = PollingFeed(
                self._state,
                http,
                poll_interval=poll_interval,
                auth_error_backoff=auth_error_backoff,
            )
        if self._feed is not None:
            self._feed.start()
        if self._acks is not None:
            self._acks.start()

    # -- the state the feed keeps -------------------------------------------------------------

    @property
    def organization_id(self) -> str:  # type: ignore[override]
        return self._state.organization_id

    @property
    def connected(self) -> bool:
        """Whether the change stream is open and has sent its snapshot."""
        return self._state.connected

    @property
    def resyncs(self) -> int:
        """How many full snapshots were installed."""
        return self._state.resyncs

    @property
    def resumes(self) -> int:
        """How many reconnections caught up with only the changes missed (no snapshot)."""
        return self._state.resumes

    @property
    def last_error(self) -> str | None:
        """What went wrong last with the server."""
        return self._state.last_error

    @property
    def acknowledged(self) -> int:
        """The newest version the server has acknowledged from this instance."""
        return self._acks.acknowledged if self._acks else 0

    def wait_until_synced(self, timeout: float | None = None) -> bool:
        """Block until the first snapshot arrived; return whether it did in time.

        Strict guards keep no state to sync: every call asks the server, so they are ready.
        """
        return True if self.strict else self._state.wait_until_synced(timeout)

    def verify(self, action: str, scope: Scope) -> Verdict:
        return self._check.verify(action, scope) if self.strict else None

    def age(self, now: float) -> float:
        if self.strict:
            return math.inf if self._state.last_error else 0.0
        return super().age(now)

    # -- operator verbs and reports over HTTP -------------------------------------------------

    def kill(
        self,
        target_type: str,
        target_id: str,
        *,
        reason: str | None,
        actor: str,
        expires_at: datetime | None = None,
    ) -> KillChange:
        return self._applied(
            self.client.kill(target_type, target_id, reason=reason, expires_at=expires_at)
        )

    def revive(
        self, target_type: str, target_id: str, *, actor: str, reason: str | None = None
    ) -> KillChange:
        return self._applied(self.client.revive(target_type, target_id, reason=reason))

    def finish_run(self, run_id: str, *, actor: str) -> KillChange | None:
        change = self.client.finish_run(run_id)
        return None if change is None else self._applied(change)

    def _applied(self, change: KillChange) -> KillChange:
        if change.version and not self.strict:  # strict guards keep no view: the server decides
            self.index.apply(change)
        return change

    def status(self, target_type: str, target_id: str) -> KillStatus:
        target_type, target_id = validate_target(target_type, target_id)
        status = self.client.check(target_type, target_id)
        ks = self.index.get(target_type, target_id)
        if ks is not None and status.is_killed:
            return KillStatus.of(target_type, target_id, ks)
        return status

    def report_interventions(self, items: list[Intervention], dropped: int = 0) -> None:
        self.client.report_interventions(items, dropped=dropped)

    def interventions(self, **filters: Any) -> tuple[list[Intervention], int]:
        page = self.client.interventions(**filters)
        return list(page.data), page.count

    def make_recorder(self) -> InterventionRecorder:
        return InterventionRecorder(
            self.report_interventions, interval=1.0, name="agentguard-report"
        )

    # -- fleet: heartbeats and checkpoints (the server's /heartbeats and /checkpoints) ---------

    supports_heartbeats = True

    @property
    def acknowledges_changes(self) -> bool:  # type: ignore[override]
        return self._acks is not None

    # A server older than the ``cancelled`` count refuses the field (422): it is sent only
    # when not 0, and no more once a server has refused it.
    _sends_cancelled = True

    def heartbeat(self, report: HeartbeatReport) -> HeartbeatReply:
        body = report.model_dump(exclude_none=True)
        if not report.cancelled or not self._sends_cancelled:
            del body["cancelled"]
        response = self.client.http.post("/heartbeats", json=body)
        if response.status_code == 422 and "cancelled" in body and _names(response, "cancelled"):
            self._sends_cancelled = False
            del body["cancelled"]
            response = self.client.http.post("/heartbeats", json=body)
        raise_for_status(response, self.url)
        return HeartbeatReply.model_validate_json(response.content)

    # Checkpoints retry while the server or its database is away (for ``retry_for`` seconds),
    # so an outage of a few seconds does not become an exception in the agent.
    retry_for = RETRY_FOR

    def save_checkpoint(self, key: str, state_json: str) -> None:
        content = b'{"state":' + state_json.encode() + b"}"
        path = _checkpoint_path(key)

        def put() -> None:
            response = self.client.http.put(
                path, content=content, headers={"Content-Type": "application/json"}
            )
            raise_for_status(response, self.url)

        call_with_retries(put, what=f"saving checkpoint {key!r}", retry_for=self.retry_for)

    def load_checkpoint(self, key: str) -> str | None:
        path = _checkpoint_path(key)

        def get() -> str | None:
            response = self.client.http.get(path)
            if response.status_code == 404:
                return None
            raise_for_status(response, self.url)
            return json.dumps(response.json()["state"])

        return call_with_retries(get, what=f"loading checkpoint {key!r}", retry_for=self.retry_for)

    def close(self) -> None:
        if self._feed is not None:
            self._feed.stop()
        if self._acks is not None:
            self._acks.stop()
        self.client.close()


def _names(response: httpx.Response, field: str) -> bool:
    """Whether a 422 answer names ``field`` as the one at fault."""
    try:
        return bool(response.json().get("field") == field)
    except ValueError:
        return False


def _read_bootstrap(path: Path) -> Snapshot:
    try:
        return Snapshot.model_validate_json(path.read_text())
    except (OSError, ValidationError) as exc:
        raise InvalidInputError("bootstrap", f"cannot read kill state from {path}: {exc}") from exc


def _checkpoint_path(key: str) -> str:
    # One path segment: the key rule allows no '/' (Guard has checked it already).
    return f"/checkpoints/{validate_checkpoint_key(key)}"
