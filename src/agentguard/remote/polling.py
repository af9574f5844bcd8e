"""The polling feed: ``GET /kill-switch/state`` every ``poll_interval``, with an ETag.

After the first full state each poll sends the ETag (the index's version) with ``A-IM:
changes``: an unchanged state answers 304, a changed one ``226 IM Used`` with only the changes
since, or the full state when the server's change log no longer covers them.
"""

from __future__ import annotations

import logging

import httpx
from pydantic import ValidationError

from ..protocol import DELTA_IM, KillStateChanges
from ..records import Snapshot
from .backoff import Backoff
from .feed import (
    ConfigurationError,
    Feed,
    FeedState,
    ProtocolError,
    ServerBusy,
    raise_for_configuration,
    raise_if_busy,
)

logger = logging.getLogger("agentguard")


class PollingFeed(Feed):
    """Fetches the kill state on an interval; an unchanged state answers 304."""

    name = "poll"

    def __init__(
        self,
        state: FeedState,
        http: httpx.Client,
        *,
        poll_interval: float,
        auth_error_backoff: float,
    ) -> None:
        super().__init__(state, http, auth_error_backoff=auth_error_backoff)
        self.poll_interval = poll_interval

    def run(self) -> None:
        state = self.state
        backoff = Backoff(initial=self.poll_interval)
        etag: str | None = None
        while not self.stopping.is_set():
            delay = self.poll_interval
            try:
                headers = {"If-None-Match": etag, "A-IM": DELTA_IM} if etag else {}
                response = self.http.get("/kill-switch/state", headers=headers)
                raise_for_configuration(response, state.url)
                raise_if_busy(response, "state")
                if response.status_code == 304:
                    state.synced_now(live=False)
                elif response.status_code == 226:
                    self._apply(KillStateChanges.model_validate_json(response.content))
                    etag = response.headers.get("ETag")
                    state.synced_now(live=False)
                    state.applied()
                elif response.status_code == 200:
                    state.install(Snapshot.model_validate_json(response.content))
                    etag = response.headers.get("ETag")
                    state.synced_now(live=False)
                    state.applied()
                else:
                    raise ProtocolError(f"state answered HTTP {response.status_code}")
                backoff.reset()
            except ConfigurationError as exc:
                logger.error("agentguard: %s; retrying in %.0f s", exc, self.auth_error_backoff)
                state.last_error = str(exc)
                delay = self.auth_error_backoff
            except ServerBusy as exc:
                state.last_error = str(exc)
                delay = max(exc.delay(), backoff.next_delay())
            except (httpx.HTTPError, ValidationError, ProtocolError) as exc:
                logger.warning("agentguard: polling %s failed: %s", state.url, exc)
                state.last_error = str(exc)
                etag = None
                delay = backoff.next_delay()
            self.stopping.wait(delay)

    def _apply(self, delta: KillStateChanges) -> None:
        """Apply the changes of a 226 in order; a gap or another organization resyncs."""
        state = self.state
        if delta.organization_id != state.organization_id:
            raise ProtocolError("changes of another organization; resyncing")
        for change in delta.changes:
            if change.version > state.index.version + 1:
                raise ProtocolError(
                    f"missed versions {state.index.version + 1}..{change.version - 1}; resyncing"
                )
            state.index.apply(change)
        if state.index.version < delta.version:
            raise ProtocolError(f"changes end before version {delta.version}; resyncing")
        state.resumes += 1
