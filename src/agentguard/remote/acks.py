"""Acknowledgements: tell the server which kill-state version this instance enforces.

``POST /kill-switch/ack`` after each version applied, from a thread of its own so a slow
server never holds up the feed; a newer version replaces one not yet delivered. Each drill
rehearsed is acknowledged the same way (``POST /drills/{id}/ack``), first.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import Any

import httpx

from ..errors import AgentGuardError
from ..scope import Scope
from .backoff import Backoff
from .errors import raise_for_status

logger = logging.getLogger("agentguard")
DRILL_ATTEMPTS = 3


class AckSender:
    """Delivers the newest applied version, retried with backoff until it lands."""

    def __init__(self, http: httpx.Client, url: str, instance_id: str, identity: Scope) -> None:
        self.http = http
        self.url = url
        self.instance_id = instance_id
        self.identity = identity
        self.acknowledged = 0
        self._wanted = 0  # the newest applied version not yet acknowledged
        self._drills: deque[str] = deque()  # drills rehearsed, not yet acknowledged
        self.drills_acknowledged = 0
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="agentguard-ack", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def want(self, version: int) -> None:
        """Acknowledge ``version`` (called by the feed after applying it)."""
        if version > self.acknowledged:
            self._wanted = version
            self._wake.set()

    def drilled(self, drill_id: str) -> None:
        """Acknowledge drill ``drill_id`` (called by the feed after rehearsing it)."""
        self._drills.append(drill_id)
        self._wake.set()

    def stop(self, timeout: float = 2.0) -> None:
        self._stopping.set()
        self._wake.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        backoff = Backoff(initial=0.5, maximum=10.0)
        while not self._stopping.is_set():
            self._wake.wait()
            self._wake.clear()
            if not self._stopping.is_set():
                self._answer_drills()
            version = self._wanted
            if self._stopping.is_set() or version <= self.acknowledged:
                continue
            body: dict[str, Any] = {"instance_id": self.instance_id, "version": version}
            body.update({k: v for k, v in self.identity._asdict().items() if v})
            try:
                response = self.http.post("/kill-switch/ack", json=body)
                raise_for_status(response, self.url)
            except (httpx.HTTPError, AgentGuardError) as exc:
                # Logged when the failures start, then only at debug level.
                logger.log(
                    logging.WARNING if backoff.attempt == 0 else logging.DEBUG,
                    "agentguard: could not acknowledge version %d: %s; retrying with backoff",
                    version,
                    exc,
                )
                self._stopping.wait(backoff.next_delay())
                self._wake.set()  # try again with whatever is newest then
                continue
            backoff.reset()
            self.acknowledged = max(self.acknowledged, version)

    def _answer_drills(self) -> None:
        """Send the drills' acknowledgements; one that fails is tried twice more, then
        dropped: a late answer to a drill already judged tells nobody anything."""
        body: dict[str, Any] = {"instance_id": self.instance_id}
        body.update({k: v for k, v in self.identity._asdict().items() if v})
        while self._drills and not self._stopping.is_set():
            drill_id = self._drills.popleft()
            for attempt in range(DRILL_ATTEMPTS):
                try:
                    response = self.http.post(f"/drills/{drill_id}/ack", json=body)
                    raise_for_status(response, self.url)
                except (httpx.HTTPError, AgentGuardError) as exc:
                    if attempt + 1 == DRILL_ATTEMPTS:
                        logger.warning(
                            "agentguard: could not acknowledge drill %s: %s", drill_id, exc
                        )
                    elif self._stopping.wait(0.1 * (attempt + 1)):
                        return
                    continue
                self.drills_acknowledged += 1
                break
