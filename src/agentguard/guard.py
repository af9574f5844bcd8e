"""``Guard``: the kill check around every guarded call, and the operator's verbs."""

from __future__ import annotations

import asyncio
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
from .errors import (
    AgentGuardError,
    AgentGuardWarning,
    InvalidInputError,
    KillStateUnavailableError,
    PolicyViolationError,
)
from .index import KillIndex
from .records import CallCounts, Intervention, InterventionType, KillStatus, KillSwitch, utcnow
from .remote.heartbeat import Heartbeat
from .rules import Rule, RuleEngine, Trip
from .scope import EMPTY_SCOPE, LAST_REFUSAL, Scope, current_scope
from .sources import CLEAR, KillStateSource, LocalSource
from .store import KillStore, MemoryStore
from .targets import validate_id, validate_reason, validate_target
from .telemetry import Telemetry

logger = logging.getLogger("agentguard")

FailMode = Literal["closed", "open"]
URL_ENV = "AGENTGUARD_URL"
API_KEY_ENV = "AGENTGUARD_API_KEY"
AGENT_ID_ENV = "AGENTGUARD_AGENT_ID"
_INF = math.inf
_CountKey = tuple[str, Scope]
_INDEXED = ("agent", "run", "mission", "tool")  # the target types with a table in the index


def default_instance_id() -> str:
    """An id for this process: host, pid and a random part."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


class Guard:
    """Checks guarded calls against kill state and records every refusal.

    ``Guard()`` keeps kill state in this process's memory; ``Guard(store)`` uses any
    :class:`~agentguard.store.KillStore`; ``Guard(server)`` reads a mounted
    ``KillSwitchServer`` in-process; ``Guard(url, api_key=...)`` streams it from a server and
    waits up to ``start_wait`` seconds for the first sync. Defaults for
    ``agent_id``/``run_id``/``mission_id`` apply where neither the decorator nor
    ``agentguard.scope`` sets an id.
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
        start_wait: float = 5.0,
    ) -> None:
        _check_arguments(source, api_key, mode, bootstrap, start_wait)
        for field, value in (
            ("agent_id", agent_id),
            ("run_id", run_id),
            ("mission_id", mission_id),
            ("instance_id", instance_id),
            ("organization_id", organization_id),
        ):
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise InvalidInputError(field, f"must be a non-empty string; got {value!r}")
        if fail_mode not in ("closed", "open"):
            raise InvalidInputError("fail_mode", f"must be 'closed' or 'open'; got {fail_mode!r}")
        if not isinstance(max_staleness, (int, float)) or max_staleness <= 0:
            raise InvalidInputError(
                "max_staleness", f"must be a positive number; got {max_staleness!r}"
            )
        ids = {"agent_id": agent_id, "run_id": run_id, "mission_id": mission_id}
        for field, value in {**ids, "instance_id": instance_id}.items():
            if value is not None:
                validate_id(field, value)
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
        # Each call asks the server (mode="strict"): async code must admit with admit_async.
        self.strict: bool = self._source.strict
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
        self._unavailable: dict[_CountKey, int] = {}
        self._last_refusal: PolicyViolationError | None = None  # outside any scope()
        # A streaming guard is live on the server while its stream is open; it reports its
        # clean exit (close, interpreter exit, SIGTERM) or crash even without heartbeats.
        self._exit_report: Heartbeat | None = None
        if streams:
            self._exit_report = Heartbeat(self, min(5.0, max_staleness / 2)).arm()
        if start_wait and bootstrap is None and not self.wait_until_synced(start_wait):
            error = getattr(self._source, "last_error", None)
            logger.warning(
                "agentguard: no kill state from %s within start_wait=%g s%s; guarded calls are "
                "%s until it arrives",
                getattr(self._source, "url", "the server"),
                start_wait,
                f" ({error})" if error else "",
                "refused" if fail_mode == "closed" else "allowed (fail_mode='open')",
            )

    @classmethod
    def from_env(cls, **options: Any) -> Guard:
        """A remote guard from ``AGENTGUARD_URL``, ``AGENTGUARD_API_KEY`` and
        ``AGENTGUARD_AGENT_ID`` (optional); ``options`` are the other ``Guard`` arguments."""
        url = os.environ.get(URL_ENV, "").strip()
        if not url:
            raise InvalidInputError(URL_ENV, "is not set: export the server's URL")
        if "api_key" not in options:
            key = os.environ.get(API_KEY_ENV, "").strip()
            if not key:
                raise InvalidInputError(API_KEY_ENV, "is not set: export an agent's API key")
            options["api_key"] = key
        agent_id = os.environ.get(AGENT_ID_ENV, "").strip()
        if agent_id and "agent_id" not in options:
            options["agent_id"] = agent_id
        return cls(url, **options)

    @property
    def source(self) -> KillStateSource:
        """Where this guard's kill state comes from."""
        return self._source

    @property
    def organization_id(self) -> str:
        return self._source.organization_id

    @property
    def index(self) -> KillIndex:
        """The in-memory kill state guarded calls are checked against (its source writes it)."""
        return self._index

    @property
    def defaults(self) -> Scope:
        """The ids given to ``Guard(...)``, ``None`` where unset."""
        return self._defaults or EMPTY_SCOPE

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
        actions.validate_options(name, agent_id, run_id, mission_id)
        return lambda f: actions.wrap(
            f, guard=self, name=name, agent_id=agent_id, run_id=run_id, mission_id=mission_id
        )

    # -- the check -------------------------------------------------------------------------

    def admit(
        self,
        name: str,
        scope: Scope,
        args: Any = None,
        kwargs: Any = None,
        tool_call_id: str | None = None,
        span_name: str | None = None,
        fn: Any = None,
    ) -> _CountKey:
        """Refuse (raise) or count the call as executed; returns the key for ``count_failure``.

        No I/O, no lock, no span if allowed. ``scope`` is the call's ids before the guard's
        defaults; ``fn`` is the decorated callable: a refusal binds the arguments to its
        parameters.
        """
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
            self._refuse(name, scope, ks, args, kwargs, tool_call_id, span_name, None, fn)
        if self._rules is not None:
            trip = self._rules.before_call(name, scope, args, kwargs)
            if trip is not None:
                self._refuse(name, scope, None, args, kwargs, tool_call_id, span_name, trip, fn)
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
        scope = _over_context(agent_id, run_id, mission_id)  # admit applies the guard's defaults
        return self.admit(action, scope, arguments, None, tool_call_id, span_name)

    async def enforce_async(
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
        """``enforce`` for asyncio code: never blocks the event loop.

        A strict guard asks the server in a worker thread; every other guard checks its
        in-memory index inline, as ``enforce`` does.
        """
        scope = _over_context(agent_id, run_id, mission_id)
        return await self.admit_async(action, scope, arguments, None, tool_call_id, span_name)

    async def admit_async(
        self,
        name: str,
        scope: Scope,
        args: Any = None,
        kwargs: Any = None,
        tool_call_id: str | None = None,
        span_name: str | None = None,
        fn: Any = None,
    ) -> _CountKey:
        """``admit`` for asyncio code: a strict guard asks its server in a worker thread."""
        if self.strict:  # a per-call HTTP check must not block the event loop
            return await asyncio.to_thread(
                self.admit, name, scope, args, kwargs, tool_call_id, span_name, fn
            )
        return self.admit(name, scope, args, kwargs, tool_call_id, span_name, fn)

    def count_failure(self, key: _CountKey) -> None:
        """Count an admitted call whose body raised."""
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
        ids = {"agent_id": agent_id, "run_id": run_id, "mission_id": mission_id}
        for field, value in ids.items():
            if value is not None:
                validate_id(field, value)
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

    def total_cost(self) -> float:
        """Total cost reported in this process under every scope."""
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
        fn: Any = None,
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
        unavailable = not status.is_killed
        iv = Intervention(
            type=InterventionType.UNAVAILABLE if unavailable else InterventionType.HARD_BLOCK,
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
        error = (KillStateUnavailableError if unavailable else PolicyViolationError)(
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
        counted = self._unavailable if unavailable else self._refused
        with self._counts_lock:
            counted[key] = counted.get(key, 0) + 1
        box = LAST_REFUSAL.get()
        if box is not None:
            box[0] = error
        self._last_refusal = error
        self._recorder.submit(iv)
        arguments = self.telemetry.arguments(fn, args, kwargs)
        self.telemetry.record_block(error, iv, span_name=span_name, arguments=arguments)
        raise error

    def record_observation(self, trip: Trip) -> None:
        """Record an observe-mode rule's trip (a warning and an OBSERVED intervention)."""
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
        target_type, target_id = validate_target(target_type, target_id, existing=True)
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

    def _scope_now(self, agent_id: str | None, run_id: str | None, mission_id: str | None) -> Scope:
        scope = _over_context(agent_id, run_id, mission_id)
        return self._with_defaults(scope) if self._defaults is not None else scope

    def wait_until_revived(
        self,
        error: PolicyViolationError | float | None = None,
        /,
        timeout: float | None = None,
        *,
        agent_id: str | None = None,
        run_id: str | None = None,
        mission_id: str | None = None,
    ) -> bool:
        """Block until what refused a call no longer does; False if ``timeout`` passed first.

        ``error`` (a ``PolicyViolationError``): wait until its target is revived, or, for a
        ``KillStateUnavailableError``, until kill state is current again. With ids: while any
        of them is killed. With neither: on what refused this context's last refused call
        (under ``agentguard.scope``, in any thread or task that copied it; outside one, this
        guard's last refusal), else on the current scope. A number alone is the timeout.
        """
        blocked = self._blocked_by(error, agent_id, run_id, mission_id)
        if isinstance(error, (int, float)) and not isinstance(error, bool):
            timeout = error
        deadline = None if timeout is None else time.monotonic() + timeout
        changed = self._index.changed
        while True:
            with changed:  # a kill-state change wakes the wait; staleness is polled
                if not blocked():
                    return True
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                changed.wait(0.2 if remaining is None else min(remaining, 0.2))

    async def await_revived(
        self,
        error: PolicyViolationError | float | None = None,
        /,
        timeout: float | None = None,
        *,
        agent_id: str | None = None,
        run_id: str | None = None,
        mission_id: str | None = None,
        poll: float = 0.02,
    ) -> bool:
        """``wait_until_revived`` for asyncio code (polls the in-memory index; no I/O)."""
        blocked = self._blocked_by(error, agent_id, run_id, mission_id)
        if isinstance(error, (int, float)) and not isinstance(error, bool):
            timeout = error
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while blocked():
            if deadline is not None and loop.time() >= deadline:
                return False
            await asyncio.sleep(poll)
        return True

    def _blocked_by(
        self,
        error: Any,
        agent_id: str | None,
        run_id: str | None,
        mission_id: str | None,
    ) -> Callable[[], bool]:
        """What ``wait_until_revived`` waits on, as a predicate on the in-memory view."""
        if error is not None and not isinstance(error, PolicyViolationError):
            if isinstance(error, bool) or not isinstance(error, (int, float)):
                raise InvalidInputError(
                    "error", f"must be a PolicyViolationError; got {type(error).__name__}"
                )
            error = None  # a timeout given positionally
        if error is None and agent_id is None and run_id is None and mission_id is None:
            box = LAST_REFUSAL.get()
            error = self._last_refusal if box is None else box[0]
        if error is None:
            scope = self._scope_now(agent_id, run_id, mission_id)
            index = self._index
            return lambda: index.blocking(scope) is not None
        index = self._index
        target_type, target_id = error.target_type, error.target_id

        def killed() -> bool:
            if target_type in _INDEXED:
                return index.get(target_type, target_id) is not None
            return any(
                ks.target_type == target_type and ks.target_id == target_id
                for ks in index.active()
            )

        if error.killed:
            return killed
        # Refused for want of kill state: wait until the view is current again.
        if self._source.strict:
            return lambda: not self._source_answers(error.action, target_type, target_id)
        return lambda: (
            index.fresh_until < _INF and self._clock() > index.fresh_until
        ) or killed()

    def _source_answers(self, action: str, target_type: str, target_id: str) -> bool:
        ids = {f"{target_type}_id": target_id} if target_type in ("agent", "run", "mission") else {}
        return self._source.verify(action, Scope(**ids)) is CLEAR

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
            unavailable = dict(self._unavailable)
        return CallCounts(
            executed=sum(v for k, v in executed.items() if matches(k)),
            refused=sum(v for k, v in refused.items() if matches(k)),
            failed=sum(v for k, v in failed.items() if matches(k)),
            unavailable=sum(v for k, v in unavailable.items() if matches(k)),
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

        Ids given here win, then those of ``agentguard.scope`` where it is started, then the
        guard's defaults (a warning says when there is no agent id). A thread in sync code, a
        task inside a running asyncio loop; at exit (and on SIGTERM left to its default
        action) it reports a clean exit, on an unhandled exception a crash. Needs a server
        (``Guard(server)`` or ``Guard(url, api_key=...)``).
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


def _check_arguments(
    source: Any, api_key: Any, mode: Any, bootstrap: Any, start_wait: Any
) -> None:
    """Reject a misconfigured guard at construction, naming the argument."""
    if isinstance(start_wait, bool) or not isinstance(start_wait, (int, float)) or not (
        0 <= start_wait < _INF
    ):
        raise InvalidInputError(
            "start_wait", f"must be a number of seconds, 0 or more; got {start_wait!r}"
        )
    if isinstance(source, str):
        if not source.strip():
            raise InvalidInputError("url", "must be the server's URL; got an empty string")
        if api_key is None:
            raise InvalidInputError(
                "api_key",
                f"a remote guard needs an API key: Guard({source!r}, api_key=...), "
                f"or Guard.from_env() with {API_KEY_ENV}",
            )
        if not isinstance(api_key, str) or not api_key.strip():
            raise InvalidInputError("api_key", f"must be a non-empty string; got {api_key!r}")
        return
    for field, value, unset in (("api_key", api_key, None), ("bootstrap", bootstrap, None)):
        if value is not unset:
            raise InvalidInputError(
                field,
                "is only for a remote guard: pass the server's URL first, "
                f"Guard(url, {field}=...), or use Guard.from_env() with {URL_ENV}",
            )
    if mode != "stream":
        raise InvalidInputError(
            "mode", f"is only for a remote guard (Guard(url, api_key=..., mode={mode!r}))"
        )
