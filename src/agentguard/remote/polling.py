"""The polling feed: ``GET /kill-switch/state`` every ``poll_interval``, with an ETag."""

from __future__ import annotations

import logging

import httpx
from pydantic import ValidationError

from ..records import Snapshot
from .backoff import Backoff
from .feed import ConfigurationError, Feed, FeedState, ProtocolError, raise_for_configuration

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
                headers = {"If-None-Match": etag} if etag else {}
                response = self.http.get("/kill-switch/state", headers=headers)
                raise_for_configuration(response, state.url)
                if response.status_code == 304:
                    state.synced_now(live=False)
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
            except (httpx.HTTPError, ValidationError, ProtocolError) as exc:
                logger.warning("agentguard: polling %s failed: %s", state.url, exc)
                state.last_error = str(exc)
                etag = None
                delay = backoff.next_delay()
            self.stopping.wait(delay)
