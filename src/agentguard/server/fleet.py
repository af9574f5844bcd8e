"""The fleet: heartbeats and health, kill acknowledgements and cost.

Every guarded process may send heartbeats (``guard.start_heartbeat()``): cumulative counts,
cost, the kill-state version it applied. From them the server knows each agent's instances
and their health:

- ``active``: heard from within three intervals;
- ``stale``: silent for more than three intervals;
- ``crashed``: reported an unhandled exception, or silent for more than ten intervals
  without having reported a clean exit;
- ``killed``: an active kill applies to it (its agent, run or mission);
- ``exited``: reported a clean exit.

An agent is ``killed`` while it has an active kill, else ``active`` if any instance is,
else the first of killed, stale, crashed that any instance is, else ``exited``.

Acknowledgements (``POST /kill-switch/ack``, and the version in each heartbeat) record when
each instance applied each kill, so ``GET /kill-switch/acks`` can say "49/50, slowest 41 ms"
and ``POST /kill?wait=`` can wait for every live instance the kill applies to. An instance with
an open change stream is live without heartbeats: the stream marks it seen every keep-alive
(at most 5 s).

Each heartbeat is then put to the server rules (:mod:`agentguard.server.rules`), and so is
each AgentSentinel ledger batch (:mod:`agentguard.server.sentinel`), whose entries count as
the usage of an instance per (agent, run).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import get_args

from starlette.concurrency import run_in_threadpool

from ..index import KillIndex
from ..protocol import Drill, HealthName, HeartbeatReply, HeartbeatReport
from ..records import KillChange, utcnow
from ..scope import Scope
from ..telemetry import Telemetry
from . import schemas as s
from .auth.binding import AgentBinding
from .inputs import as_public
from .rules import ServerRules
from .sentinel import SENTINEL_INTERVAL, LedgerBatch
from .store.acks import AckReport, NewAck, RefusedWithGroup
from .store.instances import InstanceRow
from .store.ledger import LedgerResult
from .store.sqlstore import SQLStore
from .store.usage import Usage

logger = logging.getLogger("agentguard.server")

Clock = Callable[[], datetime]
DEFAULT_INTERVAL = 10.0  # seconds, for instances only known from their acknowledgements
STALE_AFTER = 3  # missed intervals
VANISHED_AFTER = 10  # missed intervals without a clean exit: crashed
_WAIT_POLL = 0.1  # seconds between reads while waiting (acks may land on another server)
RUN_ENDED_ACTOR = "agentguard:run-ended"  # who ends a kill whose run's instances all exited
_ACK_BATCH = 100  # acks per transaction at most, so a kill waits on the write lock briefly


def liveness(row: InstanceRow, now: datetime) -> str:
    """``active``, ``stale``, ``crashed`` or ``exited``, ignoring kills."""
    if row.status in ("exited", "crashed"):
        return row.status
    interval = row.interval_s or DEFAULT_INTERVAL
    age = (now - row.last_seen).total_seconds()
    if age > VANISHED_AFTER * interval:
        return "crashed"
    if age > STALE_AFTER * interval:
        return "stale"
    return "active"


def _scope(row: InstanceRow) -> Scope:
    return Scope(row.agent_id, row.run_id, row.mission_id)


def health(row: InstanceRow, now: datetime, index: KillIndex) -> str:
    """The health of one instance."""
    state = liveness(row, now)
    if state in ("active", "stale") and (
        index.blocking(_scope(row)) is not None or _selected(row, index)
    ):
        return "killed"
    return state


def _selected(row: InstanceRow, index: KillIndex) -> bool:
    """Whether a selector kill stops every call of the instance (one naming no tool)."""
    return any(
        # canonical: pairs joined by commas, no comma inside one, so ",tool=" finds a tool key
        ",tool=" not in f",{ks.target_id}" and row.may_select(ks.target_id)
        for ks in tuple(index.selector.values())
    )


@dataclass(frozen=True)
class _PendingAck:
    """One request's acknowledgements (one, or a batch stored all or none)."""

    reports: tuple[AckReport, ...]
    future: asyncio.Future[list[int]]


class AckBatchError(Exception):
    """An acknowledgement of a batch was refused, so none of the batch was stored."""

    def __init__(self, position: int, error: BaseException) -> None:
        super().__init__(f"acks.{position}: {error}")
        self.position = position
        self.error = error


def _batch_error(pending: _PendingAck, position: int, error: BaseException) -> BaseException:
    """The error of a request: a single ack's own, a batch's with the position at fault."""
    if len(pending.reports) == 1 and pending.reports[0].group is None:
        return error
    return AckBatchError(position, error)


# -- the fleet -------------------------------------------------------------------------------------


class Fleet:
    """Heartbeats, health and acknowledgements of one server's store."""

    def __init__(
        self,
        store: SQLStore,
        index: Callable[[str], KillIndex],
        telemetry: Telemetry,
        *,
        clock: Clock = utcnow,
        rules: ServerRules | None = None,
    ) -> None:
        self.store = store
        self._index = index
        self.telemetry = telemetry
        self.clock = clock
        self.rules = rules  # evaluated after each heartbeat of a running agent
        self._waiters: dict[str, set[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = {}
        self._waiters_lock = threading.Lock()
        # Acks waiting for the transaction after the one being written, per event loop.
        self._ack_queues: dict[asyncio.AbstractEventLoop, list[_PendingAck]] = {}
        self._ack_writers: set[asyncio.Task[None]] = set()
        self._ack_groups = itertools.count(1)  # one per batch request: stored all or none

    # -- reports from instances ----------------------------------------------------------------

    def heartbeat(
        self,
        organization_id: str,
        report: HeartbeatReport,
        *,
        binding: AgentBinding | None = None,
        reporter: str = "an in-process guard",
    ) -> HeartbeatReply:
        """Record a heartbeat, evaluate the server rules, answer with health and kill state.

        ``binding`` limits the agents the reporting key may speak for; ``reporter`` names it
        in the audit record of a kill the heartbeat trips.
        """
        now = self.clock()
        row, acks = self.store.record_heartbeat(
            organization_id, report, now=now, acked_at=utcnow(), binding=binding
        )
        self._acknowledged(organization_id, acks)
        if report.status == "exited" and row.run_id:
            self._run_exited(organization_id, row, now, reporter)
        if self.rules is not None and row.agent_id and report.status == "running":
            tripper = f"the heartbeat of instance {row.instance_id!r} from {reporter}"
            self.rules.evaluate(organization_id, row.agent_id, now, tripper)
        index = self._index(organization_id)
        ks = index.blocking(_scope(row))
        snapshot = None
        if report.version < index.version:
            snapshot = self.store.snapshot(organization_id)
        return HeartbeatReply(
            health=health(row, now, index),  # type: ignore[arg-type]
            version=max(index.version, snapshot.version if snapshot else 0),
            killed=ks is not None,
            reason=ks.reason if ks else None,
            snapshot=snapshot,
        )

    def finish_run(self, organization_id: str, run_id: str, *, actor: str) -> KillChange | None:
        """The run is over (``POST /runs/{id}/finish``): end its kill made ``until`` then."""
        return self.store.end_with_run(
            organization_id, run_id, actor=actor, note=f"ended with run {run_id!r}: finished"
        )

    def _run_exited(
        self, organization_id: str, row: InstanceRow, now: datetime, reporter: str
    ) -> None:
        """An instance exited cleanly: if none of its run's other instances is still live,
        the run is over and its kill made ``until`` then ends."""
        run_id = row.run_id or ""
        others = [
            other
            for other in self.store.instances_of_run(organization_id, run_id)
            if other.instance_id != row.instance_id and liveness(other, now) in ("active", "stale")
        ]
        if others:
            return
        note = (
            f"ended with run {run_id!r}: its instances exited (the last, "
            f"{row.instance_id!r}, reported by {reporter})"
        )
        self.store.end_with_run(organization_id, run_id, actor=RUN_ENDED_ACTOR, note=note)

    def ingest(self, organization_id: str, batch: LedgerBatch, *, reporter: str) -> LedgerResult:
        """Count an AgentSentinel ledger batch into its instances and usage; evaluate the
        server rules of each agent whose usage grew (``reporter`` is named in a rule's kill)."""
        now = self.clock()
        result = self.store.record_ledger(
            organization_id,
            batch.groups,
            batch.unattributed,
            now=now,
            first_seen=utcnow(),
            interval=SENTINEL_INTERVAL,
        )
        if self.rules is not None:
            for agent_id, instance_ids in sorted(result.spent.items()):
                names = ", ".join(repr(i) for i in instance_ids)
                tripper = f"the AgentSentinel ledger of instance {names} from {reporter}"
                self.rules.evaluate(organization_id, agent_id, now, tripper)
        return result

    async def acknowledge(
        self,
        organization_id: str,
        instance_id: str,
        version: int,
        scope: Scope,
        binding: AgentBinding | None = None,
    ) -> int:
        """Record that an instance applied every change up to ``version``; kills newly acked.

        A kill makes every instance it reaches acknowledge it at once. The first ack is
        written straight away; those arriving meanwhile wait, holding no worker thread, and
        are written together next (a group commit). N acks cost a few transactions, not N
        that each hold a worker thread and queue on the write lock in front of the next kill.
        """
        report = self._ack_report(organization_id, instance_id, version, scope, binding)
        (count,) = await self._queue_acks((report,))
        return count

    async def acknowledge_batch(
        self,
        organization_id: str,
        acks: list[tuple[str, int, Scope]],
        binding: AgentBinding | None = None,
    ) -> list[int]:
        """:meth:`acknowledge` for many instances at once (a process's guards), all or none.

        ``acks`` holds (instance id, version, scope) triples; the answer counts the kills each
        newly acknowledged. If one is refused (its instance belongs to an agent the key does
        not speak for, or its version is ahead), none is stored and its error is raised with
        its position, as ``AckBatchError``.
        """
        group = next(self._ack_groups)
        reports = tuple(
            replace(
                self._ack_report(organization_id, instance_id, version, scope, binding),
                group=group,
            )
            for instance_id, version, scope in acks
        )
        return await self._queue_acks(reports)

    async def _queue_acks(self, reports: tuple[AckReport, ...]) -> list[int]:
        loop = asyncio.get_running_loop()
        pending = _PendingAck(reports, loop.create_future())
        queued = self._ack_queues.get(loop)
        if queued is not None:  # a writer task is busy: it takes this one next
            queued.append(pending)
        else:
            self._ack_queues[loop] = [pending]
            writer = loop.create_task(self._write_queued_acks(loop))
            self._ack_writers.add(writer)
            writer.add_done_callback(self._ack_writers.discard)
        return await pending.future

    async def _write_queued_acks(self, loop: asyncio.AbstractEventLoop) -> None:
        queued = self._ack_queues[loop]
        batch: list[_PendingAck] = []
        try:
            while queued:
                # Whole requests, up to _ACK_BATCH reports (one request at least).
                size, taken = 0, 0
                while taken < len(queued) and (taken == 0 or size < _ACK_BATCH):
                    size += len(queued[taken].reports)
                    taken += 1
                batch = queued[:taken]
                del queued[:taken]
                reports = [report for pending in batch for report in pending.reports]
                try:
                    results: list[int | BaseException] = list(
                        await run_in_threadpool(self._write_acks, reports)
                    )
                except Exception as exc:  # the transaction failed: so did every ack in it
                    results = [exc] * len(reports)
                if not queued:  # none arrived meanwhile: leave before answering, so no
                    del self._ack_queues[loop]  # writer outlives the last request it serves
                at = 0
                for pending in batch:
                    mine = results[at : at + len(pending.reports)]
                    at += len(pending.reports)
                    if pending.future.done():  # its request was cancelled
                        continue
                    failed = (
                        [  # the culprit, not those refused with it
                            (i, r)
                            for i, r in enumerate(mine)
                            if isinstance(r, BaseException) and not isinstance(r, RefusedWithGroup)
                        ]
                        or [(0, r) for r in mine if isinstance(r, BaseException)][:1]
                    )
                    if failed:
                        pending.future.set_exception(_batch_error(pending, *failed[0]))
                    else:
                        pending.future.set_result([int(r) for r in mine])  # type: ignore[arg-type]
                batch = []
        finally:
            if self._ack_queues.get(loop) is queued:
                del self._ack_queues[loop]
            for pending in (*batch, *queued):
                if not pending.future.done():
                    pending.future.cancel()

    def _ack_report(
        self,
        organization_id: str,
        instance_id: str,
        version: int,
        scope: Scope,
        binding: AgentBinding | None = None,
    ) -> AckReport:
        return AckReport(
            organization_id, instance_id, version, scope, self.clock(), utcnow(), binding
        )

    def _write_acks(self, reports: list[AckReport]) -> list[int | Exception]:
        """Store acknowledgements in one transaction; per report, kills newly acked or error."""
        counts: list[int | Exception] = []
        acked: dict[str, list[NewAck]] = {}
        for report, result in zip(reports, self.store.record_acks(reports), strict=True):
            if isinstance(result, Exception):
                counts.append(result)
                continue
            acked.setdefault(report.organization_id, []).extend(result[1])
            counts.append(len(result[1]))
        for organization_id, acks in acked.items():
            self._acknowledged(organization_id, acks)
        return counts

    def _acknowledged(self, organization_id: str, acks: list[NewAck]) -> None:
        if not acks:
            return
        for ack in acks:
            if ack.latency_ms is not None:
                self.telemetry.record_propagation(ack.latency_ms, target_type=ack.target_type)
        self._wake(organization_id)

    def touch(self, present: dict[tuple[str, str], Scope]) -> None:
        """Instances with an open change stream are live: mark them seen now."""
        self.store.touch_instances(present, now=self.clock(), first_seen=utcnow())

    def streams_ended(self, ended: list[tuple[str, str]], unseen_for: float) -> None:
        """Instances whose stream ended without a clean exit, unseen for ``unseen_for`` s: gone."""
        seen_before = self.clock() - timedelta(seconds=unseen_for)
        self.store.end_streams(ended, seen_before=seen_before)

    # -- acknowledgement of a kill ------------------------------------------------------------

    def acks(self, organization_id: str, target_type: str, target_id: str) -> s.AcksPublic | None:
        """The active kill of a target and which live instances applied it; None if not killed."""
        ks = self.store.get_active(organization_id, target_type, target_id)
        if ks is None:
            return None
        version, acked = self.store.kill_acks(organization_id, ks.id)
        now = self.clock()
        live = [
            row
            for row in self.store.instances_of_kill(organization_id, target_type, target_id)
            if liveness(row, now) in ("active", "stale")
        ]
        instances = []
        for row in live:
            when, latency = acked.get(row.instance_id, (None, None))
            instances.append(
                s.InstanceAck(
                    instance_id=row.instance_id,
                    agent_id=row.agent_id,
                    run_id=row.run_id,
                    mission_id=row.mission_id,
                    acknowledged=when is not None or (version > 0 and row.version >= version),
                    acknowledged_at=when,
                    latency_ms=latency,
                )
            )
        latencies = [i.latency_ms for i in instances if i.latency_ms is not None]
        return s.AcksPublic(
            target_type=ks.target_type,  # type: ignore[arg-type]
            target_id=ks.target_id,
            kill_switch_id=ks.id,
            version=version,
            killed_at=ks.killed_at,
            live=len(instances),
            acknowledged=sum(1 for i in instances if i.acknowledged),
            slowest_ms=max(latencies) if latencies else None,
            instances=instances,
        )

    async def wait_for_acks(
        self, organization_id: str, target_type: str, target_id: str, timeout: float
    ) -> s.AcksPublic | None:
        """Wait (without blocking a thread) until every live instance acknowledged the kill."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        woken = asyncio.Event()
        waiter = (loop, woken)
        with self._waiters_lock:
            self._waiters.setdefault(organization_id, set()).add(waiter)
        try:
            while True:
                woken.clear()
                status = await run_in_threadpool(self.acks, organization_id, target_type, target_id)
                remaining = deadline - loop.time()
                if status is None or status.acknowledged >= status.live or remaining <= 0:
                    return status
                try:
                    await asyncio.wait_for(woken.wait(), timeout=min(remaining, _WAIT_POLL))
                except asyncio.TimeoutError:
                    pass
        finally:
            with self._waiters_lock:
                self._waiters.get(organization_id, set()).discard(waiter)

    def _wake(self, organization_id: str) -> None:
        with self._waiters_lock:
            waiters = list(self._waiters.get(organization_id, ()))
        for loop, event in waiters:
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # that loop has closed
                pass

    def health_counts(self, organization_id: str) -> dict[str, int]:
        """How many of the organization's instances are of each health (every health named)."""
        counts = dict.fromkeys(get_args(HealthName), 0)
        judged = self.store.liveness_counts(
            organization_id,
            now=self.clock(),
            stale_after=STALE_AFTER,
            vanished_after=VANISHED_AFTER,
            default_interval=DEFAULT_INTERVAL,
        )
        index = self._index(organization_id) if judged else None
        for scope, state, n in judged:
            if (
                index is not None
                and state in ("active", "stale")
                and index.blocking(scope) is not None
            ):
                state = "killed"
            counts[state] = counts.get(state, 0) + n
        return counts

    # -- agents ----------------------------------------------------------------------------------

    def agents(self, organization_id: str, agent_id: str | None = None) -> list[s.AgentPublic]:
        """Agents with heartbeating instances, by id (or just one)."""
        rows = self.store.list_instances(organization_id, agent_id=agent_id)
        if not rows:
            return []
        now = self.clock()
        index = self._index(organization_id)
        by_agent: dict[str, list[InstanceRow]] = {}
        for row in rows:
            by_agent.setdefault(row.agent_id or "", []).append(row)
        midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
        today = self.store.usage_since(organization_id, list(by_agent), midnight)
        drills = self.store.last_drills(organization_id, [a for a in by_agent if a])
        return [
            self._agent(agent, members, now, index, today.get(agent, Usage()), drills.get(agent))
            for agent, members in sorted(by_agent.items())
        ]

    def _agent(
        self,
        agent_id: str,
        rows: list[InstanceRow],
        now: datetime,
        index: KillIndex,
        today: Usage,
        drill: Drill | None = None,
    ) -> s.AgentPublic:
        instances = [
            s.InstancePublic(
                instance_id=r.instance_id,
                health=health(r, now, index),  # type: ignore[arg-type]
                last_seen=r.last_seen,
                run_id=r.run_id,
                mission_id=r.mission_id,
                executed=r.executed,
                refused=r.refused,
                failed=r.failed,
                cancelled=r.cancelled,
                cost_usd=r.cost_usd,
                version=r.version,
                status=r.status,  # type: ignore[arg-type]
                error=r.error,
                labels=r.label_map,
            )
            for r in rows
        ]
        ks = index.get("agent", agent_id) or index.stopped()
        states = {i.health for i in instances}
        overall = (
            "killed"
            if ks is not None
            else next(
                (h for h in ("active", "killed", "stale", "crashed") if h in states), "exited"
            )
        )
        return s.AgentPublic(
            agent_id=agent_id,
            health=overall,  # type: ignore[arg-type]
            last_seen=max(r.last_seen for r in rows),
            instances=instances,
            executed=sum(r.executed for r in rows),
            refused=sum(r.refused for r in rows),
            failed=sum(r.failed for r in rows),
            cancelled=sum(r.cancelled for r in rows),
            cost_usd=sum(r.cost_usd for r in rows),
            cost_usd_today=today.cost_usd,
            kill_switch=as_public(s.KillSwitchPublic, ks) if ks is not None else None,
            last_drill=as_public(s.DrillPublic, drill) if drill is not None else None,
        )
