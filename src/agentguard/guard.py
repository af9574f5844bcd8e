"""``Guard``: the kill check around every guarded call, and the operator's verbs."""

from __future__ import annotations

import itertools
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
from .errors import AgentGuardWarning, InvalidInputError, PolicyViolationError
from .interventions import InterventionRecorder
from .records import CallCounts, Intervention, KillStatus, KillSwitch
from .scope import Scope, current_scope
from .sources import KillStateSource, LocalSource
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
    ) -> None:
        if fail_mode not in ("closed", "open"):
            raise InvalidInputError("fail_mode", f"must be 'closed' or 'open'; got {fail_mode!r}")
        if not isinstance(max_staleness, (int, float)) or max_staleness <= 0:
            raise InvalidInputError("max_staleness", f"must be a positive number; got {max_staleness!r}")
        self._source = _resolve_source(source, organization_id)
        self._index = self._source.index
        self._index.max_staleness = float(max_staleness)
        defaults = Scope(agent_id, run_id, mission_id)
        self._defaults = defaults if any(defaults) else None
        self.actor = actor
        self.fail_mode: FailMode = fail_mode
        self.max_staleness = float(max_staleness)
        self.instance_id = instance_id or default_instance_id()
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
        self._recorder = InterventionRecorder(self._source.report_interventions)

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
        self, name: str, scope: Scope, args: Any = None, kwargs: Any = None,
        tool_call_id: str | None = None, span_name: str | None = None,
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
        s = current_scope()
        scope = Scope(agent_id or s.agent_id, run_id or s.run_id, mission_id or s.mission_id)
        return self._admit(action, scope, arguments, None, tool_call_id, span_name)

    def count_failure(self, key: _CountKey) -> None:
        """Count an admitted call whose body raised."""
        self._count_failure(key)

    def _count_failure(self, key: _CountKey) -> None:
        counter = self._failed.get(key)
        if counter is None:
            counter = self._new_counter(self._failed, key)
        next(counter)

    def _new_counter(self, table: dict[_CountKey, itertools.count[int]], key: _CountKey) -> itertools.count[int]:
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
    ) -> None:
        if ks is None:  # no kill, but the view is too old to trust
            age = self._source.age(self._clock())
            reason = _stale_reason(age, self.max_staleness)
            if self.fail_mode == "open":
                self._warn_stale(name, reason)
                return
            target_type, target_id = _most_specific(scope, name)
        else:
            reason, target_type, target_id = ks.reason, ks.target_type, ks.target_id
        iv = Intervention(
            action=name,
            target_type=target_type,
            target_id=target_id,
            kill_switch_id=ks.id if ks else None,
            killed_by=ks.killed_by if ks else None,
            reason=reason,
            agent_id=scope.agent_id,
            run_id=scope.run_id,
            mission_id=scope.mission_id,
            instance_id=self.instance_id,
            tool_call_id=tool_call_id,
        )
        error = PolicyViolationError(
            target_type=target_type,
            target_id=target_id,
            reason=reason,
            killed_by=ks.killed_by if ks else None,
            killed_at=ks.killed_at if ks else None,
            action=name,
            intervention_id=iv.id,
            kill_switch_id=ks.id if ks else None,
        )
        key = (name, scope)
        with self._counts_lock:
            self._refused[key] = self._refused.get(key, 0) + 1
        self._recorder.submit(iv)
        arguments = (args, kwargs) if kwargs else args
        self.telemetry.record_block(error, iv, span_name=span_name, arguments=arguments)
        raise error

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
        self, target_type: str, target_id: str, *, reason: str | None = None, actor: str | None = None
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

    def close(self) -> None:
        """Deliver queued interventions and release the source."""
        self._recorder.close()
        self._source.close()

    def __enter__(self) -> Guard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Guard {type(self._source).__name__} org={self.organization_id!r} version={self.version}>"


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
    if isinstance(source, str):
        raise InvalidInputError(
            "source",
            "remote guards (Guard('http://...')) are not available in this version; "
            "use Guard(), Guard(store) or Guard(server)",
        )
    raise InvalidInputError(
        "source", f"must be None, a KillStore or a KillSwitchServer; got {type(source).__name__}"
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


def _stale_reason(age: float, max_staleness: float) -> str:
    if age == math.inf:
        return "kill state has never been synced with the server"
    return f"kill state is stale: last synced {age:.1f} s ago (max_staleness {max_staleness:g} s)"
