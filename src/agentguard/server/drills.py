"""Drills: proof that the switch is armed.

A drill is written with the live instances of its target (as ``GET /acks`` counts them: an
open change stream or recent heartbeats), then sent through the change stream as a ``drill``
event to every stream that asked for drills. Each guard rehearses the kill on its kill index
(the write path a kill takes, changing nothing: no call is refused) and acknowledges it. The
drill is judged when every expected instance answered or its timeout passed: ``armed`` or
``failed`` (which queues ``drill.failed``), kept as the target's last drill.

``serve --drill-every 24h`` drills every agent with live instances once per interval: each
replica tries to start the interval's drill of each agent, and the database's unique
(organization, target, interval) key lets exactly one of them (:class:`DrillSchedule`).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from starlette.concurrency import run_in_threadpool

from ..protocol import Drill
from ..records import utcnow
from .fleet import DEFAULT_INTERVAL, STALE_AFTER, Fleet, liveness
from .store.database import is_unavailable
from .store.drills import Expected
from .store.sqlstore import SQLStore
from .webhooks.events import drill_failed_event

logger = logging.getLogger("agentguard.server")

SCHEDULED_BY = "agentguard (scheduled drill)"
_POLL = 0.05  # seconds between reads of a drill's answers (they may land on another replica)


class Drills:
    """Start drills, wait for their answers and judge them."""

    def __init__(
        self,
        store: SQLStore,
        fleet: Fleet,
        publish: Callable[[str, Drill], object],
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.store = store
        self.fleet = fleet
        self._publish = publish  # to this process's streams (others hear of it from the store)
        self.clock = clock  # real time: start, deadline and latencies
        self._waiters: dict[str, set[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = {}
        self._waiters_lock = threading.Lock()

    def expected(self, organization_id: str, target_type: str, target_id: str) -> list[Expected]:
        """The live instances a kill of the target applies to, as ``GET /acks`` counts them."""
        now = self.fleet.clock()
        return [
            Expected(row.instance_id, row.agent_id)
            for row in self.store.instances_of_kill(organization_id, target_type, target_id)
            if liveness(row, now) in ("active", "stale")
        ]

    def start(
        self,
        organization_id: str,
        target_type: str,
        target_id: str,
        *,
        actor: str,
        timeout: float,
        slot: int | None = None,
        request_id: str | None = None,
        now: datetime | None = None,
    ) -> Drill | None:
        """Write the drill and send it; ``None`` if another replica took this slot."""
        drill = self.store.start_drill(
            organization_id,
            target_type,
            target_id,
            actor=actor,
            now=now or self.clock(),
            timeout=timeout,
            expected=self.expected(organization_id, target_type, target_id),
            slot=slot,
            request_id=request_id,
        )
        if drill is not None and drill.status == "running":
            self._publish(organization_id, drill)
        return drill

    def answered(self, organization_id: str, drill_id: str) -> bool:
        """Whether every instance the drill expects has answered."""
        live, acked = self.store.drill_answers(organization_id, drill_id)
        return acked >= live

    def finish(self, organization_id: str, drill_id: str) -> Drill:
        """Judge the drill now (it stays as judged if it was already)."""
        now = self.clock()
        drill, _ = self.store.finish_drill(
            organization_id,
            drill_id,
            now=now,
            failed_event=lambda d: drill_failed_event(organization_id, d, now=now),
        )
        return drill

    async def run(
        self,
        organization_id: str,
        target_type: str,
        target_id: str,
        *,
        actor: str,
        timeout: float,
        request_id: str | None = None,
    ) -> Drill:
        """Start a drill, wait (holding no thread) for its answers, judge and return it."""
        drill = await run_in_threadpool(
            lambda: self.start(
                organization_id,
                target_type,
                target_id,
                actor=actor,
                timeout=timeout,
                request_id=request_id,
            )
        )
        assert drill is not None  # only a scheduled drill (with a slot) can lose its slot
        if drill.status != "running":
            return drill
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        woken = asyncio.Event()
        waiter = (loop, woken)
        with self._waiters_lock:
            self._waiters.setdefault(drill.id, set()).add(waiter)
        try:
            while True:
                woken.clear()
                if await run_in_threadpool(self.answered, organization_id, drill.id):
                    break
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    await asyncio.wait_for(woken.wait(), timeout=min(remaining, _POLL))
                except asyncio.TimeoutError:
                    pass
        finally:
            with self._waiters_lock:
                waiters = self._waiters.get(drill.id, set())
                waiters.discard(waiter)
                if not waiters:
                    self._waiters.pop(drill.id, None)
        return await run_in_threadpool(self.finish, organization_id, drill.id)

    def acknowledged(self, drill_id: str) -> None:
        """This process recorded an answer to the drill: wake whoever waits for it."""
        with self._waiters_lock:
            waiters = list(self._waiters.get(drill_id, ()))
        for loop, event in waiters:
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # that loop has closed
                pass

    def finish_overdue(self) -> int:
        """Judge the running drills past their deadline (their process stopped); how many."""
        overdue = self.store.overdue_drills(self.clock())
        for organization_id, drill_id in overdue:
            self.finish(organization_id, drill_id)
        return len(overdue)


class DrillSchedule:
    """Drills every agent with live instances once per ``every`` seconds, once across
    replicas; also judges drills left running by a process that stopped."""

    def __init__(self, drills: Drills, every: float, *, timeout: float) -> None:
        self.drills = drills
        self.every = every
        self.timeout = timeout
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._done: int | None = None  # the last interval this process went through

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="agentguard-drills", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.timeout + 5.0)
            self._thread = None

    def _run(self) -> None:
        tick = min(self.every, 30.0)
        while not self._stop.is_set():
            try:
                self.round()
            except Exception as exc:
                if is_unavailable(exc):
                    self.drills.store.database.outage.began(exc)
                else:
                    logger.exception("agentguard: a round of scheduled drills failed")
            self._stop.wait(tick)

    def round(self) -> list[Drill]:
        """Start this interval's drills that no replica started yet, wait, judge them."""
        drills = self.drills
        drills.finish_overdue()
        now = drills.clock()
        slot = int(now.timestamp() // self.every)
        if slot == self._done:  # this interval's drills are started (here or elsewhere)
            return []
        started: list[tuple[str, Drill]] = []
        for organization_id, agent_id in drills.store.live_agents(since=_since(drills)):
            drill = drills.start(
                organization_id,
                "agent",
                agent_id,
                actor=SCHEDULED_BY,
                timeout=self.timeout,
                slot=slot,
                now=now,
            )
            if drill is not None and drill.status == "running":
                started.append((organization_id, drill))
        deadline = time.monotonic() + self.timeout
        waiting = list(started)
        while waiting and time.monotonic() < deadline and not self._stop.is_set():
            waiting = [(o, d) for o, d in waiting if not drills.answered(o, d.id)]
            if waiting:
                self._stop.wait(_POLL)
        judged = [drills.finish(o, d.id) for o, d in started]
        self._done = slot
        for drill in judged:
            logger.info(
                "agentguard: scheduled drill of agent %r: %s", drill.target_id, drill.status
            )
        return judged


def _since(drills: Drills) -> datetime:
    """Instances seen since then may be live (the fleet judges each by its own interval)."""
    return drills.fleet.clock() - timedelta(seconds=STALE_AFTER * DEFAULT_INTERVAL)
