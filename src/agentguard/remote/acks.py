"""Acknowledgements: tell the server which kill-state version each instance enforces.

Every remote guard of a process that talks to the same server with the same key shares one
:class:`AckBatcher`: one thread and one ``POST /kill-switch/acks`` carrying the newest version
applied by each of its guards, so a kill reaching a thousand guards in eight processes costs
the server eight requests, not a thousand. The batcher waits a few milliseconds after the first
guard applied a change (the others are applying it too, and should have the CPU first), and a
slow server never holds up a feed. A newer version replaces one not yet delivered; failures are
retried with backoff until they land. A server without the batch route (older than it), or one
refusing a batch, is sent one ``POST /kill-switch/ack`` per instance instead. Each drill a
guard rehearsed is answered by the same thread (``POST /drills/{id}/ack``, one per instance),
before the versions.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from typing import Any

import httpx

from ..errors import AgentGuardError
from ..scope import Scope
from .backoff import Backoff
from .errors import raise_for_status
from .http import Client

logger = logging.getLogger("agentguard")

COALESCE = 0.01  # seconds from the first version applied to the request that acknowledges it
MAX_BATCH = 1000  # acknowledgements per request, as the server accepts
DRILL_ATTEMPTS = 3  # a drill's answer is tried this often, then dropped (the drill is judged)

# The running batcher of each (url, api key, timeout, transport); its members change under _LOCK.
_RUNNING: dict[tuple[Any, ...], AckBatcher] = {}
_LOCK = threading.Lock()


def _forget_after_fork() -> None:
    """A forked child has none of its parent's threads: its guards start batchers of their own."""
    global _LOCK
    _RUNNING.clear()
    _LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)


class AckSender:
    """One instance's acknowledgements, delivered by its process's :class:`AckBatcher`."""

    def __init__(
        self,
        url: str,
        instance_id: str,
        identity: Scope,
        *,
        api_key: str | None,
        timeout: float,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.server = (url, api_key, timeout, transport)  # whose batcher it joins
        self.instance_id = instance_id
        self.body: dict[str, Any] = {"instance_id": instance_id}
        self.body.update({k: v for k, v in identity._asdict().items() if v})
        self.acknowledged = 0
        self.wanted = 0  # the newest applied version not yet acknowledged
        self.drills: deque[str] = deque()  # drills rehearsed, not yet answered
        self.drills_acknowledged = 0
        self.batcher: AckBatcher | None = None

    def start(self) -> None:
        self.batcher = AckBatcher.join(self)

    def want(self, version: int) -> None:
        """Acknowledge ``version`` (called by the feed after applying it)."""
        if version > self.acknowledged and version > self.wanted:
            self.wanted = version
            if self.batcher is not None:
                self.batcher.wake()

    def drilled(self, drill_id: str) -> None:
        """Answer drill ``drill_id`` (called by the feed after rehearsing it)."""
        self.drills.append(drill_id)
        if self.batcher is not None:
            self.batcher.wake()

    def stop(self, timeout: float = 2.0) -> None:
        if self.batcher is not None:
            self.batcher.leave(self, timeout)


class AckBatcher:
    """Delivers the acknowledgements of a process's guards of one server, key and transport."""

    @classmethod
    def join(cls, sender: AckSender) -> AckBatcher:
        """The batcher for ``sender``'s server (started if none runs), with ``sender`` in it."""
        with _LOCK:
            batcher = _RUNNING.get(sender.server)
            if batcher is None:
                url, api_key, timeout, transport = sender.server
                batcher = cls(url, api_key=api_key, timeout=timeout, transport=transport)
                _RUNNING[sender.server] = batcher
                batcher.start()
            batcher.members.add(sender)
        batcher.wake()
        return batcher

    def __init__(
        self,
        url: str,
        *,
        api_key: str | None,
        timeout: float,
        transport: httpx.BaseTransport | None = None,
        coalesce: float = COALESCE,
    ) -> None:
        self.url = url
        self.coalesce = coalesce
        self._client = Client(url, api_key=api_key, timeout=timeout, transport=transport)
        self.members: set[AckSender] = set()  # changed under _LOCK
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="agentguard-ack", daemon=True)
        self._batches = True  # False once the server said it has no batch route

    def leave(self, sender: AckSender, timeout: float = 2.0) -> None:
        """Stop acknowledging for ``sender``; the last one out ends the thread."""
        with _LOCK:
            self.members.discard(sender)
            if self.members:
                return
            if _RUNNING.get(sender.server) is self:
                del _RUNNING[sender.server]
        self._stopping.set()
        self._wake.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        backoff = Backoff(initial=0.5, maximum=10.0)
        try:
            while not self._stopping.is_set():
                self._wake.wait()
                # The other guards of this process are applying the same change: let them,
                # and acknowledge for all of them at once.
                self._stopping.wait(self.coalesce)
                self._wake.clear()
                if self._stopping.is_set():
                    return
                with _LOCK:
                    members = list(self.members)
                for sender in members:
                    self._answer_drills(sender)
                due = [(s, s.wanted) for s in members if s.wanted > s.acknowledged]
                if not due:
                    continue
                try:
                    undelivered, error = self._deliver(due)
                except (httpx.HTTPError, AgentGuardError) as exc:
                    undelivered, error = len(due), exc
                if not undelivered:
                    backoff.reset()
                    continue
                # Logged when the failures start, then only at debug level.
                logger.log(
                    logging.WARNING if backoff.attempt == 0 else logging.DEBUG,
                    "agentguard: could not acknowledge the kill state of %d instance(s): %s; "
                    "retrying with backoff",
                    undelivered,
                    error,
                )
                self._stopping.wait(backoff.next_delay())
                self._wake.set()  # try again with whatever is newest then
        finally:
            self._client.close()

    def _answer_drills(self, sender: AckSender) -> None:
        """Send ``sender``'s drill answers; one that fails is tried twice more, then dropped:
        a late answer to a drill already judged tells nobody anything."""
        while sender.drills and not self._stopping.is_set():
            drill_id = sender.drills.popleft()
            for attempt in range(DRILL_ATTEMPTS):
                try:
                    response = self._client.http.post(f"/drills/{drill_id}/ack", json=sender.body)
                    raise_for_status(response, self.url)
                except (httpx.HTTPError, AgentGuardError) as exc:
                    if attempt + 1 == DRILL_ATTEMPTS:
                        logger.warning(
                            "agentguard: could not acknowledge drill %s: %s", drill_id, exc
                        )
                    elif self._stopping.wait(0.1 * (attempt + 1)):
                        return
                    continue
                sender.drills_acknowledged += 1
                break

    def _deliver(self, due: list[tuple[AckSender, int]]) -> tuple[int, Exception | None]:
        """Send the acknowledgements; how many were not delivered, and the last error."""
        undelivered, error = 0, None
        for start in range(0, len(due), MAX_BATCH):
            chunk = due[start : start + MAX_BATCH]
            # One acknowledgement goes as the single ack, which every server understands.
            if self._batches and len(chunk) > 1 and self._send_batch(chunk):
                continue
            failed, error = self._send_each(chunk)
            undelivered += failed
        return undelivered, error

    def _send_batch(self, chunk: list[tuple[AckSender, int]]) -> bool:
        """One request for the chunk; False when it must go one by one instead."""
        body = {"acks": [{**sender.body, "version": version} for sender, version in chunk]}
        response = self._client.http.post("/kill-switch/acks", json=body)
        if response.status_code in (404, 405):  # a server older than the batch route
            self._batches = False
            return False
        if response.status_code in (403, 409, 422):  # one of them refused: find which
            return False
        raise_for_status(response, self.url)
        for sender, version in chunk:
            sender.acknowledged = max(sender.acknowledged, version)
        return True

    def _send_each(self, chunk: list[tuple[AckSender, int]]) -> tuple[int, Exception | None]:
        undelivered, error = 0, None
        for sender, version in chunk:
            try:
                response = self._client.http.post(
                    "/kill-switch/ack", json={**sender.body, "version": version}
                )
                raise_for_status(response, self.url)
            except AgentGuardError as exc:  # this instance's refusal: the others go on
                undelivered, error = undelivered + 1, exc
                continue
            sender.acknowledged = max(sender.acknowledged, version)
        return undelivered, error
