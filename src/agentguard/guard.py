"""``Guard``: the kill check around every guarded call, and the operator's verbs."""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import socket
import threading
import time
import uuid
import warnings
from collections.abc import Callable
from typing import Any, Literal

from opentelemetry import metrics, trace

from . import actions
from .checkpoints import encode_checkpoint, validate_checkpoint_key
from .errors import AgentGuardError, AgentGuardWarning, InvalidInputError, PolicyViolationError
from .heartbeat import Heartbeat
from .records import CallCounts, Intervention, InterventionType, KillStatus, KillSwitch, utcnow
from .rules import Rule, RuleEngine, Trip
from .scope import Scope, current_scope
from .sources import CLEAR, KillStateSource, LocalSource
from .store import KillStore, MemoryStore
from .targets import validate_reason, validate_target
from .telemetry import Telemetry

logger = logging.getLogger("agentguard")

FailMode = Literal["closed", "open"]
_INF = math.inf
_CountKey = tuple[str, Scope]


def default_instance_id() -> str:
    """An id for this process: host, pid and a random part."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


class Guard:
    """Checks guarded calls against kill state and records every refusal.

    ``Guard()`` keeps kill state in this process's memory; ``Guard(store)`` uses any
    :class:`~agentguard.store.KillStore`; ``Guard(server)`` reads a mounted
    ``KillSwitchServer`` in-process. Defaults for ``agent_id``/``run_id``/``mission_id``
    apply where neither the decorator nor ``agentguard.scope`` sets an id.
    """

    def __init__(
        self,
        source: Any = None,
        /,
        *,
        api_key: str | None = None,
        mode: str = "stream",
        poll_interval: float = 1.0,
        bootstrap: str | None = None,
        organization_id: str | None = None,
        agent_id: str | None = None,
        run_id: str | None = None,
        mission_id: str | None = None,
        actor: str = "local",
        fail_mode: FailMode = "closed",
        max_staleness: float = 10.0,
        instance_id: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
        capture_arguments: bool = False,
        rules: list[Rule] | None = None,
    ) -> None:
        if fail_mode not in ("closed", "open"):
            raise InvalidInputError("fail_mode", f"must be 'closed' or 'open'; got {fail_mode!r}")
        if not isinstance(max_staleness, (int, float)) or max_staleness <= 0:
            raise InvalidInputError(
                "max_staleness", f"must be a positive number; got {max_staleness!r}"
            )
        self.instance_id = instance_id or default_instance_id()
        defaults = Scope(agent_id, run_id, mission_id)
        self._defaults = defaults if any(defaults) else None
        streams = isinstance(source, str) and mode == "stream"
        if isinstance(source, str):
            from .remote import RemoteSource

            source = RemoteSource(
                source,
                api_key=api_key,
                mode=mode,  # type: ignore[arg-type]
                poll_interval=poll_interval,
                keepalive=min(5.0, max_staleness / 2),
                bootstrap=bootstrap,
                clock=clock,
                instance_id=self.instance_id,
                identity=defaults,
            )
        self._source = _resolve_source(source, organization_id)
        self._index = self._source.index
        self._index.max_staleness = float(max_staleness)
        self.actor = actor
        self.fail_mode: FailMode = fail_mode
        self.max_staleness = float(max_staleness)
        self._clock = clock
        self.telemetry = Telemetry(
            tracer_provider, meter_provider, capture_arguments=capture_arguments
        )
        index = self._index
        self.telemetry.watch_active(
            lambda: len(index.agent) + len(index.run) + len(index.mission) + len(index.tool)
        )
        self._executed: dict[_CountKey, itertools.count[int]] = {}
        self._failed: dict[_CountKey, itertools.count[int]] = {}
        self._refused: dict[_CountKey, int] = {}
        self._counts_lock = threading.Lock()
        self._warned_stale = False
        self._recorder = self._source.make_recorder()
        self._rules = RuleEngine(self, list(rules), clock) if rules else None
        self._costs: dict[Scope, float] = {}
        self.last_checkpoint: str | None = None  # the key of the latest checkpoint stored
        self._heartbeat: Heartbeat | None = None
        self._outcomes: dict[Scope, list[int]] = {}  # reported [successes, failures]
        # A streaming guard is live on the server while its stream is open; it reports its
        # clean exit (close, interpreter exit, SIGTERM) or crash even without heartbeats.
        self._exit_report: Heartbeat | None = None
        if streams:
            self._exit_report = Heartbeat(self, min(5.0, max_staleness / 2)).arm()

    @property
    def source(self) -> KillStateSource:
        """Where this guard's kill state comes from."""
        return self._source

    @property
    def organization_id(self) -> str:
        return self._source.organization_id

    # -- decorating ------------------------------------------------------------------------

    def guarded_action(
        self,
        fn: Any = None,
        /,
        *,
        name: str | None = None,
        agent_id: str | None = None,
        run_id: str | None = None,
        mission_id: str | None = None,
    ) -> Any:
        """Decorate a callable so each call is refused while any of its targets is killed."""
        if fn is not None:
            return actions.wrap(fn, guard=self)
        return lambda f: actions.wrap(
            f, guard=self, name=name, agent_id=agent_id, run_id=run_id, mission_id=mission_id
        )

    # -- the check -------------------------------------------------------------------------

    def _admit(
        self,
        name: str,
        scope: Scope,
        args: Any = None,
        kwargs: Any = None,
        tool_call_id: str | None = None,
        span_name: str | None = None,
    ) -> _CountKey:
        """Refuse (raise) or count the call as executed. No I/O, no lock, no span if allowed."""
        if self._defaults is not None:
            scope = self._with_defaults(scope)
        index = self._index
        agent_id, run_id, mission_id = scope
        ks = (
            index.mission.get(mission_id)  # type: ignore[arg-type]
            or index.run.get(run_id)  # type: ignore[arg-type]
            or index.agent.get(agent_id)  # type: ignore[arg-type]
            or index.tool.get(name)
        )
        if ks is not None or (index.fresh_until < _INF and self._clock() > index.fresh_until):
            self._refuse(name, scope, ks, args, kwargs, tool_call_id, span_name)
        if self._rules is not None:
            trip = self._rules.before_call(name, scope, args, kwargs)
            if trip is not None:
                self._refuse(name, scope, None, args, kwargs, tool_call_id, span_name, trip)
        key = (name, scope)
        counter = self._executed.get(key)
        if counter is None:
            counter = self._new_counter(self._executed, key)
        next(counter)
        return key

    def enforce(
        self,
        action: str,
        *,
        agent_id: str | None = None,
        run_id: str | None = None,
        mission_id: str | None = None,
        tool_call_id: str | None = None,
        arguments: Any = None,
        span_name: str | None = None,
    ) -> _CountKey:
        """Check one call made outside a decorator (integrations): raise if refused.

        Ids not given come from ``agentguard.scope``; ``span_name`` overrides the HARD_BLOCK
        span's default ``execute_tool {action}``. Returns a key for ``count_failure``.
        """
        scope = _over_context(agent_id, run_id, mission_id)  # _admit applies the guard's defaults
        return self._admit(action, scope, arguments, None, tool_call_id, span_name)

    def count_failure(self, key: _CountKey) -> None:
        """Count an admitted call whose body raised."""
        self._count_failure(key)

    def _count_failure(self, key: _CountKey) -> None:
        counter = self._failed.get(key)
        if counter is None:
            counter = self._new_counter(self._failed, key)
        next(counter)
        if self._rules is not None:
            self._rules.after_failure(*key)

    def report_metric(
        self,
        *,
        success: bool | None = None,
        cost_usd: float = 0.0,
        agent_id: str | None = None,
        run_id: str | None = None,
        mission_id: str | None = None,
    ) -> None:
        """Report the cost of work done under a scope (ids default to ``agentguard.scope``)."""
        if not isinstance(cost_usd, (int, float)) or cost_usd < 0 or math.isnan(cost_usd):
            raise InvalidInputError("cost_usd", f"must be a non-negative number; got {cost_usd!r}")
        scope = self._scope_now(agent_id, run_id, mission_id)
        with self._counts_lock:
            self._costs[scope] = self._costs.get(scope, 0.0) + cost_usd
            outcomes = self._outcomes.setdefault(scope, [0, 0])
            if success is not None:
                outcomes[0 if success else 1] += 1
        if self._rules is not None and cost_usd:
            self._rules.on_cost(scope, cost_usd)

    def cost(self, target_type: str, target_id: str) -> float:
        """Total cost reported in this process under a target (agent, run or mission)."""
        target_type, target_id = validate_target(target_type, target_id)
        with self._counts_lock:
            return sum(
                v
                for s, v in self._costs.items()
                if getattr(s, f"{target_type}_id", None) == target_id
            )

    def _total_cost(self) -> float:
        with self._counts_lock:
            return sum(self._costs.values())

    def _new_counter(
        self, table: dict[_CountKey, itertools.count[int]], key: _CountKey
    ) -> itertools.count[int]:
        with self._counts_lock:
            return table.setdefault(key, itertools.count())

    def _with_defaults(self, scope: Scope) -> Scope:
        d = self._defaults
        assert d is not None
        return Scope(
            scope.agent_id or d.agent_id, scope.run_id or d.run_id, scope.mission_id or d.mission_id
        )

    def _refuse(
        self,
        name: str,
        scope: Scope,
        ks: KillSwitch | None,
        args: Any,
        kwargs: Any,
        tool_call_id: str | None,
        span_name: str | None = None,
        trip: Trip | None = None,
    ) -> None:
        """Raise PolicyViolationError for a killed target, or decide on an unverified view."""
        if ks is not None:
            status = KillStatus.of(ks.target_type, ks.target_id, ks)
        elif trip is not None:  # a rule tripped: refuse now, the kill follows in the background
            status = KillStatus(
                is_killed=True,
                target_type=trip.target_type,
                target_id=trip.target_id,
                reason=trip.reason,
                killed_by=trip.actor,
                killed_at=utcnow(),
            )
        else:  # nothing killed in the view, but the view cannot be trusted as it is
            verdict = self._source.verify(name, scope)
            if verdict is CLEAR:
                return
            if isinstance(verdict, KillStatus):
                status = verdict
            else:
                reason = _stale_reason(self._source, self._clock(), self.max_staleness)
                if self.fail_mode == "open":
                    self._warn_stale(name, reason)
                    return
                target_type, target_id = _most_specific(scope, name)
                status = KillStatus(
                    is_killed=False, target_type=target_type, target_id=target_id, reason=reason
                )
        iv = Intervention(
            action=name,
            target_type=status.target_type,
            target_id=status.target_id,
            kill_switch_id=status.kill_switch_id,
            killed_by=status.killed_by,
            reason=status.reason,
            agent_id=scope.agent_id,
            run_id=scope.run_id,
            mission_id=scope.mission_id,
            instance_id=self.instance_id,
            tool_call_id=tool_call_id,
        )
        error = PolicyViolationError(
            target_type=status.target_type,
            target_id=status.target_id,
            reason=status.reason,
            killed_by=status.killed_by,
            killed_at=status.killed_at,
            action=name,
            intervention_id=iv.id,
            kill_switch_id=status.kill_switch_id if status.is_killed else None,
            killed=status.is_killed,
        )
        key = (name, scope)
        with self._counts_lock:
            self._refused[key] = self._refused.get(key, 0) + 1
        self._recorder.submit(iv)
        arguments = (args, kwargs) if kwargs else args
        self.telemetry.record_block(error, iv, span_name=span_name, arguments=arguments)
        raise error

    def _record_observation(self, trip: Trip) -> None:
        """An observe-mode rule tripped: record it, block nothing."""
        logger.warning(
            "agentguard: rule %s would kill %s %r: %s",
            trip.rule.name,
            trip.target_type,
            trip.target_id,
            trip.reason,
        )
        ids = {f"{trip.target_type}_id": trip.target_id}
        self._recorder.submit(
            Intervention(
                type=InterventionType.OBSERVED,
                action=trip.actor,
                target_type=trip.target_type,
                target_id=trip.target_id,
                killed_by=trip.actor,
                reason=trip.reason,
                instance_id=self.instance_id,
                agent_id=ids.get("agent_id"),
                run_id=ids.get("run_id"),
                mission_id=ids.get("mission_id"),
            )
        )

    def _warn_stale(self, name: str, reason: str) -> None:
        logger.warning("agentguard: allowing %r with fail_mode='open': %s", name, reason)
        if not self._warned_stale:
            self._warned_stale = True
            warnings.warn(
                f"agentguard is allowing calls without current kill state (fail_mode='open'): "
                f"{reason}",
                AgentGuardWarning,
                stacklevel=4,
            )

    # -- operator verbs ----------------------------------------------------------------------

    def kill(
        self,
        target_type: str,
        target_id: str,
        *,
        reason: str | None = None,
        actor: str | None = None,
    ) -> KillSwitch:
        """Kill a target; raises ``AlreadyKilledError`` if it already has an active kill."""
        target_type, target_id = validate_target(target_type, target_id)
        reason = validate_reason(reason)
        who = actor or self.actor
        change = self._source.kill(target_type, target_id, reason=reason, actor=who)
        self.telemetry.record_change(change, actor=who)
        return change.kill_switch

    def revive(self, target_type: str, target_id: str, *, actor: str | None = None) -> KillSwitch:
        """Revive a target; raises ``NotKilledError`` if it has no active kill."""
        target_type, target_id = validate_target(target_type, target_id)
        who = actor or self.actor
        change = self._source.revive(target_type, target_id, actor=who)
        self.telemetry.record_change(change, actor=who)
        self._warned_stale = False
        return change.kill_switch

    def check(self, target_type: str, target_id: str) -> KillStatus:
        """Whether a target is killed, with the reason, who killed it and when."""
        return self._source.status(target_type, target_id)

    def active(self) -> list[KillSwitch]:
        """Active kill switches in this guard's view, newest first."""
        return sorted(self._index.active(), key=lambda ks: ks.killed_at, reverse=True)

    def wait_until_synced(self, timeout: float | None = None) -> bool:
        """Block until a remote guard has its first kill state; True at once for local ones."""
        wait = getattr(self._source, "wait_until_synced", None)
        return True if wait is None else bool(wait(timeout))

    def _blocking(self, scope: Scope) -> KillSwitch | None:
        index = self._index
        agent_id, run_id, mission_id = scope
        return (
            index.mission.get(mission_id)  # type: ignore[arg-type]
            or index.run.get(run_id)  # type: ignore[arg-type]
            or index.agent.get(agent_id)  # type: ignore[arg-type]
        )

    def _scope_now(self, agent_id: str | None, run_id: str | None, mission_id: str | None) -> Scope:
        scope = _over_context(agent_id, run_id, mission_id)
        return self._with_defaults(scope) if self._defaults is not None else scope

    def wait_until_revived(
        self,
        timeout: float | None = None,
        *,
        agent_id: str | None = None,
        run_id: str | None = None,
        mission_id: str | None = None,
    ) -> bool:
        """Block while the current scope's mission, run or agent is killed.

        Returns True once nothing blocks the scope, False if ``timeout`` passed first. Lets an
        agent pause on a kill and continue after the revive instead of exiting.
        """
        scope = self._scope_now(agent_id, run_id, mission_id)
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._index.changed:
            while self._blocking(scope) is not None:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._index.changed.wait(remaining if remaining is not None else 1.0)
        return True

    async def await_revived(
        self,
        timeout: float | None = None,
        *,
        agent_id: str | None = None,
        run_id: str | None = None,
        mission_id: str | None = None,
        poll: float = 0.02,
    ) -> bool:
        """``wait_until_revived`` for asyncio code (polls the in-memory index; no I/O)."""
        import asyncio

        scope = self._scope_now(agent_id, run_id, mission_id)
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while self._blocking(scope) is not None:
            if deadline is not None and loop.time() >= deadline:
                return False
            await asyncio.sleep(poll)
        return True

    # -- checkpoints ---------------------------------------------------------------------------

    def checkpoint(self, key: str, state: Any) -> None:
        """Store ``state`` (JSON, at most 256 KiB) under ``key`` for this organization."""
        self._source.save_checkpoint(key, encode_checkpoint(key, state))
        self.last_checkpoint = key

    def load_checkpoint(self, key: str, default: Any = None) -> Any:
        """The last state stored under ``key``, or ``default``."""
        validate_checkpoint_key(key)
        raw = self._source.load_checkpoint(key)
        return default if raw is None else json.loads(raw)

    @property
    def version(self) -> int:
        """The kill-state version this guard has applied."""
        return self._index.version

    # -- what happened -----------------------------------------------------------------------

    def interventions(self, *, flush: bool = True, **filters: Any) -> list[Intervention]:
        """Recorded interventions, newest first (after delivering queued ones)."""
        if flush:
            self.flush()
        filters.setdefault("limit", 1000)
        return self._source.interventions(**filters)[0]

    def counts(
        self,
        target_type: str | None = None,
        target_id: str | None = None,
        *,
        action: str | None = None,
    ) -> CallCounts:
        """Exact counts of guarded calls executed, refused and failed in this process.

        With a target, only calls that ran under it (tool: calls of that action name).
        """
        if target_type is not None:
            target_type, target_id = validate_target(target_type, target_id)

        def matches(key: _CountKey) -> bool:
            name, scope = key
            if action is not None and name != action:
                return False
            if target_type is None:
                return True
            if target_type == "tool":
                return name == target_id
            return bool(getattr(scope, f"{target_type}_id") == target_id)

        with self._counts_lock:
            executed = {k: _count_value(c) for k, c in self._executed.items()}
            failed = {k: _count_value(c) for k, c in self._failed.items()}
            refused = dict(self._refused)
        return CallCounts(
            executed=sum(v for k, v in executed.items() if matches(k)),
            refused=sum(v for k, v in refused.items() if matches(k)),
            failed=sum(v for k, v in failed.items() if matches(k)),
        )

    def flush(self, timeout: float = 5.0) -> bool:
        """Deliver queued interventions; return whether all were delivered in time."""
        return self._recorder.flush(timeout)

    # -- heartbeats -------------------------------------------------------------------------

    def start_heartbeat(
        self,
        interval: float = 10.0,
        *,
        agent_id: str | None = None,
        run_id: str | None = None,
        mission_id: str | None = None,
    ) -> Heartbeat:
        """Report this process to the server every ``interval`` seconds until it exits.

        Ids default to the guard's. A thread in sync code, a task inside a running asyncio
        loop; at exit (and on SIGTERM left to its default action) it reports a clean exit, on
        an unhandled exception a crash. Needs a server (``Guard(server)`` or
        ``Guard(url, api_key=...)``).
        """
        if self._heartbeat is not None and self._heartbeat.running:
            raise AgentGuardError("the heartbeat is already running; call stop_heartbeat() first")
        heartbeat = Heartbeat(
            self, interval, agent_id=agent_id, run_id=run_id, mission_id=mission_id
        )
        self._heartbeat = heartbeat.start()
        return heartbeat

    def stop_heartbeat(self) -> None:
        """Stop the heartbeat, reporting a clean exit (no-op if none runs)."""
        heartbeat, self._heartbeat = self._heartbeat, None
        if heartbeat is not None:
            heartbeat.stop("exited")

    def close(self) -> None:
        """Deliver queued interventions and release the source."""
        self.stop_heartbeat()
        if self._exit_report is not None:
            self._exit_report.stop("exited")
        self._recorder.close()
        self._source.close()

    def __enter__(self) -> Guard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        source = type(self._source).__name__
        return f"<Guard {source} org={self.organization_id!r} version={self.version}>"


def _resolve_source(source: Any, organization_id: str | None) -> KillStateSource:
    if source is None:
        return LocalSource(MemoryStore(), organization_id or "local")
    if isinstance(source, KillStateSource):
        return source
    make = getattr(source, "kill_state_source", None)
    if callable(make):  # a KillSwitchServer
        made: KillStateSource = make(organization_id or "default")
        return made
    if isinstance(source, KillStore):
        return LocalSource(source, organization_id or "default")
    raise InvalidInputError(
        "source",
        "must be None, a server URL, a KillStore or a KillSwitchServer; "
        f"got {type(source).__name__}",
    )


def _count_value(counter: itertools.count[int]) -> int:
    # itertools.count is the one lock-free counter whose increment is atomic under the GIL;
    # its repr, "count(N)", is the documented way to read it without advancing it.
    return int(repr(counter)[6:-1])


def _most_specific(scope: Scope, name: str) -> tuple[str, str]:
    if scope.run_id:
        return "run", scope.run_id
    if scope.agent_id:
        return "agent", scope.agent_id
    if scope.mission_id:
        return "mission", scope.mission_id
    return "tool", name


def _over_context(agent_id: str | None, run_id: str | None, mission_id: str | None) -> Scope:
    """The ids given, falling back to those of ``agentguard.scope``."""
    s = current_scope()
    return Scope(agent_id or s.agent_id, run_id or s.run_id, mission_id or s.mission_id)


def _stale_reason(source: KillStateSource, now: float, max_staleness: float) -> str:
    where = getattr(source, "url", "the server")
    error = getattr(source, "last_error", None)
    because = f" ({error})" if error else ""
    if source.strict:
        return f"could not check kill state with {where}{because}"
    age = source.age(now)
    if age == math.inf:
        return f"kill state has never been synced with {where}{because}"
    return (
        f"kill state is stale: last synced with {where} {age:.1f} s ago "
        f"(max_staleness {max_staleness:g} s){because}"
    )
