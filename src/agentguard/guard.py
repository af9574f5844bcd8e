"""``Guard``: the kill check around every guarded call, and the operator's verbs."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import math
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

from . import actions
from .checkpoints import encode_checkpoint, validate_checkpoint_key
from .errors import AgentGuardError, InvalidInputError, PolicyViolationError
from .index import KillIndex
from .inflight import NOWHERE, Flight, InFlight, Lane, running_flight
from .options import FailMode, GuardOptions, Settings, from_env, open_source
from .records import CallCounts, Intervention, KillStatus, KillSwitch, utcnow
from .refusals import Refusals
from .remote.heartbeat import Heartbeat
from .revival import blocked_by, wait, wait_async
from .rules import RuleEngine, Trip
from .scope import EMPTY_SCOPE, ID_FIELDS, LAST_REFUSAL, Ids, Scope, current_scope, over, scope_of
from .selectors import EMPTY_VIEW
from .sources import KillStateSource
from .tally import REPORTED, CallTally, CountKey
from .targets import validate_expiry, validate_reason, validate_target
from .telemetry import Telemetry

if TYPE_CHECKING:
    from typing import Unpack

logger = logging.getLogger("agentguard")

_INF = math.inf
_now = time.monotonic


class Guard:
    """Checks guarded calls against kill state and records every refusal.

    ``Guard()`` keeps kill state in this process's memory; ``Guard(store)`` uses any
    :class:`~agentguard.store.KillStore`; ``Guard(server)`` reads a mounted
    ``KillSwitchServer`` in-process; ``Guard(url, api_key=...)`` streams it from a server and
    waits up to ``start_wait`` seconds for the first sync. Defaults for
    ``agent_id``/``run_id``/``mission_id`` apply where neither the decorator nor
    ``agentguard.scope`` sets an id. The options are :class:`~agentguard.options.GuardOptions`.
    """

    def __init__(self, source: Any = None, /, **options: Unpack[GuardOptions]) -> None:
        settings = Settings.of(source, options)
        self.settings = settings
        self.instance_id = settings.instance_id
        self.labels: dict[str, str] = settings.labels  # what selector kills match (fixed)
        self._selectors = EMPTY_VIEW  # the index's selector kills that select these labels
        self._defaults = settings.defaults
        # (scope, the scope with the defaults), by identity: see _with_defaults
        self._last_defaulted = (EMPTY_SCOPE, self._defaults or EMPTY_SCOPE)
        streams = isinstance(source, str) and settings.mode == "stream"
        self._source = open_source(source, settings)
        self._index = self._source.index
        # Each call asks the server (mode="strict"): async code must admit with admit_async.
        self.strict: bool = self._source.strict
        self._index.max_staleness = settings.max_staleness
        self.actor = settings.actor
        self.fail_mode: FailMode = settings.fail_mode
        self.max_staleness = settings.max_staleness
        self._clock = settings.clock
        self.telemetry = Telemetry(
            settings.tracer_provider,
            settings.meter_provider,
            capture_arguments=settings.capture_arguments,
        )
        index = self._index
        self.telemetry.watch_active(
            lambda: (
                len(index.agent)
                + len(index.run)
                + len(index.mission)
                + len(index.tool)
                + len(index.organization)
                + len(index.selector)
            )
        )
        self._tally = CallTally()
        # (name, scope) -> (index revision at which no kill applied, its executed counter, its
        # lane of calls in flight): an allowed call whose kill state has not changed since does
        # one dict look-up.
        self._clear: dict[CountKey, tuple[int, itertools.count[int], Lane]] = {}
        self._refusals = Refusals(
            self._source,
            self.telemetry,
            self._tally,
            instance_id=self.instance_id,
            fail_mode=settings.fail_mode,
            max_staleness=settings.max_staleness,
            clock=settings.clock,
        )
        self._inflight = InFlight(
            self._index, self._refusals.cancel, self.count_failure, labels=self.labels
        )
        rules = settings.rules
        self._rules = RuleEngine(self, list(rules), settings.clock) if rules else None
        self.last_checkpoint: str | None = None  # the key of the latest checkpoint stored
        self._heartbeat: Heartbeat | None = None
        # A streaming guard is live on the server while its stream is open; it reports its
        # clean exit (close, interpreter exit, SIGTERM) or crash even without heartbeats.
        self._exit_report: Heartbeat | None = None
        if streams:
            self._exit_report = Heartbeat(self, min(5.0, settings.max_staleness / 2)).arm()
        start_wait = settings.start_wait
        if start_wait and settings.bootstrap is None and not self.wait_until_synced(start_wait):
            error = getattr(self._source, "last_error", None)
            logger.warning(
                "agentguard: no kill state from %s within start_wait=%g s%s; guarded calls are "
                "%s until it arrives",
                getattr(self._source, "url", "the server"),
                start_wait,
                f" ({error})" if error else "",
                "refused" if self.fail_mode == "closed" else "allowed (fail_mode='open')",
            )

    @classmethod
    def from_env(cls, **options: Unpack[GuardOptions]) -> Guard:
        """A remote guard from ``AGENTGUARD_URL``, ``AGENTGUARD_API_KEY`` and
        ``AGENTGUARD_AGENT_ID`` (optional); ``options`` are the other ``Guard`` arguments."""
        url, options = from_env(options)
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
        cancel_in_flight: bool = True,
        **ids: Unpack[Ids],
    ) -> Any:
        """Decorate a callable so each call is refused while any of its targets is killed,
        and stopped if one is killed while it runs (``cancel_in_flight=False``: left to end)."""
        if fn is not None:
            return actions.wrap(fn, guard=self, name=name, cancel_in_flight=cancel_in_flight, **ids)
        actions.validate_options(name, ids, cancel_in_flight)
        return lambda f: actions.wrap(
            f, guard=self, name=name, cancel_in_flight=cancel_in_flight, **ids
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
        model: str | None = None,
    ) -> CountKey:
        """Refuse (raise) or count the call as executed; returns the key for ``count_failure``.

        No I/O, no lock, no span if allowed. ``scope`` is the call's ids before the guard's
        defaults; ``fn`` is the decorated callable: a refusal binds the arguments to its
        parameters. ``model`` names the model of a model call: a refusal records it.
        """
        if self._defaults is not None:
            scope = self._with_defaults(scope)
        index = self._index
        key = (name, scope)
        clear = self._clear.get(key)
        if clear is None or clear[0] != index.revision:
            clear = self._look_up(key, args, kwargs, tool_call_id, span_name, fn, model)
        elif index.fresh_until < _INF and self._clock() > index.fresh_until:
            self._refusals.refuse(
                name, scope, None, args, kwargs, tool_call_id, span_name, None, fn, model
            )
        if self._rules is not None:
            trip = self._rules.before_call(name, scope, args, kwargs)
            if trip is not None:
                self._refusals.refuse(
                    name, scope, None, args, kwargs, tool_call_id, span_name, trip, fn, model
                )
        next(clear[1])
        return key

    def begin(
        self,
        name: str,
        scope: Scope,
        args: Any = None,
        kwargs: Any = None,
        tool_call_id: str | None = None,
        span_name: str | None = None,
        fn: Any = None,
        task: Any = None,
        cancel: bool = True,
        model: str | None = None,
    ) -> Flight:
        """``admit``, then register the call in flight until it ends: a kill stops it.

        For async calls, generators and streams (a sync call is cheaper with ``admit``: see
        :mod:`agentguard.inflight`). Returns the call's flight, held in a local named
        ``flight`` of a function marked ``carries_flight`` while the body runs; pass what the
        body raises to ``finish``, and deregister it at the end
        (``flight[LANE].pop(flight[N], None)``). ``task``: the asyncio task a kill cancels
        (async calls); ``cancel=False``: a kill lets it run. No I/O, no lock, no span if
        allowed. ``model`` names the model of a model call: a refusal records it.
        """
        # The checks of ``admit``, inlined rather than called: this is the allowed path, where
        # one more Python call is a measurable share of the guard's cost (bench_guard.py).
        if self._defaults is not None:
            scope = self._with_defaults(scope)
        index = self._index
        key = (name, scope)
        clear = self._clear.get(key)
        if clear is None or clear[0] != index.revision:
            clear = self._look_up(key, args, kwargs, tool_call_id, span_name, fn, model)
        elif index.fresh_until < _INF and self._clock() > index.fresh_until:
            self._refusals.refuse(
                name, scope, None, args, kwargs, tool_call_id, span_name, None, fn, model
            )
        if self._rules is not None:
            trip = self._rules.before_call(name, scope, args, kwargs)
            if trip is not None:
                self._refusals.refuse(
                    name, scope, None, args, kwargs, tool_call_id, span_name, trip, fn, model
                )
        n = next(clear[1])
        if not cancel:
            return [self._inflight, key, _now(), clear[0], None, None, None, NOWHERE, n,
                    None, None, None, tool_call_id, span_name, model]  # fmt: skip
        lane = clear[2]
        flight = [self._inflight, key, _now(), clear[0], task, None, None, lane, n,
                  None, None, lane, tool_call_id, span_name, model]  # fmt: skip
        lane[n] = flight
        if index.revision != clear[0]:  # a kill may have come before the call was registered
            self._inflight.recheck(flight)
        return flight

    async def begin_async(
        self,
        name: str,
        scope: Scope,
        args: Any = None,
        kwargs: Any = None,
        tool_call_id: str | None = None,
        span_name: str | None = None,
        fn: Any = None,
        task: Any = None,
        cancel: bool = True,
        model: str | None = None,
    ) -> Flight:
        """``begin`` for asyncio code: a strict guard asks its server in a worker thread."""
        if self.strict:
            return await asyncio.to_thread(
                self.begin,
                name, scope, args, kwargs, tool_call_id, span_name, fn, task, cancel, model,
            )  # fmt: skip
        return self.begin(
            name, scope, args, kwargs, tool_call_id, span_name, fn, task, cancel, model
        )

    def finish(self, flight: Flight, exc: BaseException) -> BaseException:
        """What a call whose body raised ``exc`` raises: the call's ``PolicyViolationError``
        if a kill stopped it, else ``exc`` (counted as failed if it is an ``Exception``)."""
        return self._inflight.finish(flight, exc)

    def finish_admitted(self, key: CountKey, exc: BaseException) -> BaseException:
        """``finish`` for a sync call admitted with ``admit`` (it has a flight only if it
        asked for one: see :mod:`agentguard.inflight`)."""
        return self._inflight.finish_adopted(key, exc)

    @property
    def in_flight(self) -> InFlight:
        """The calls of this guard in flight, which a kill stops."""
        return self._inflight

    def raise_if_killed(self) -> None:
        """Raise ``PolicyViolationError`` if a kill applies to the guarded call running here.

        For long loops in sync code, which no one can stop from outside: inside a call of this
        guard (in its thread or task, and what it calls), raises once any of the call's
        targets is killed, recording it as CANCELLED (an explicit check, so also in an action
        with ``cancel_in_flight=False``). Outside one, refuses (HARD_BLOCK, as the action
        ``raise_if_killed``) while the current scope's agent, run or mission is killed.
        """
        flight = running_flight(self._inflight)
        if flight is not None:
            error = self._inflight.check(flight)
            if error is not None:
                raise error
            return
        scope = self._scope_now({}, "raise_if_killed")
        ks = self._index.blocking(scope)
        if ks is not None:
            self._refusals.refuse("raise_if_killed", scope, ks, None, None, None, None, None, None)

    def _look_up(
        self,
        key: CountKey,
        args: Any,
        kwargs: Any,
        tool_call_id: str | None,
        span_name: str | None,
        fn: Any,
        model: str | None = None,
    ) -> tuple[int, itertools.count[int], Lane]:
        """Check a call against the kill tables; remember that it was clear at this revision."""
        index = self._index
        revision = index.revision  # read first: a change while looking makes the entry stale
        name, scope = key
        ks = (
            index.blocking(scope)
            or index.get("tool", name)
            or (self._selected(revision, name, scope) if index.selector else None)
        )
        if ks is not None or (index.fresh_until < _INF and self._clock() > index.fresh_until):
            self._refusals.refuse(
                name, scope, ks, args, kwargs, tool_call_id, span_name, None, fn, model
            )
        clear = (
            revision,
            self._tally.counter(self._tally.executed, key),
            self._inflight.lane(key),
        )
        self._clear[key] = clear
        return clear

    def _selected(self, revision: int, name: str, scope: Scope) -> KillSwitch | None:
        """The selector kill that selects this call (off the allowed path: on a look-up)."""
        view = self._selectors
        if view.revision != revision:
            kills = tuple(self._index.selector.values())  # a copy made in C: atomic
            view = self._selectors = view.next(revision, kills, self.labels)
        return view.blocking(name, scope)

    async def admit_async(
        self,
        name: str,
        scope: Scope,
        args: Any = None,
        kwargs: Any = None,
        tool_call_id: str | None = None,
        span_name: str | None = None,
        fn: Any = None,
        model: str | None = None,
    ) -> CountKey:
        """``admit`` for asyncio code: a strict guard asks its server in a worker thread."""
        if self.strict:  # a per-call HTTP check must not block the event loop
            return await asyncio.to_thread(
                self.admit, name, scope, args, kwargs, tool_call_id, span_name, fn, model
            )
        return self.admit(name, scope, args, kwargs, tool_call_id, span_name, fn, model)

    def enforce(
        self,
        action: str,
        *,
        tool_call_id: str | None = None,
        arguments: Any = None,
        span_name: str | None = None,
        **ids: Unpack[Ids],
    ) -> CountKey:
        """Check one call made outside a decorator (integrations): raise if refused.

        Ids not given come from ``agentguard.scope``; ``span_name`` overrides the HARD_BLOCK
        span's default ``execute_tool {action}``. Returns a key for ``count_failure``.
        """
        # Ids not validated: a framework's id must not fail the call (see scope_of).
        scope = over(scope_of(ids, "enforce", validate=False), current_scope())
        return self.admit(action, scope, arguments, None, tool_call_id, span_name)

    async def enforce_async(
        self,
        action: str,
        *,
        tool_call_id: str | None = None,
        arguments: Any = None,
        span_name: str | None = None,
        **ids: Unpack[Ids],
    ) -> CountKey:
        """``enforce`` for asyncio code: never blocks the event loop.

        A strict guard asks the server in a worker thread; every other guard checks its
        in-memory index inline, as ``enforce`` does.
        """
        scope = over(scope_of(ids, "enforce_async", validate=False), current_scope())
        return await self.admit_async(action, scope, arguments, None, tool_call_id, span_name)

    def count_failure(self, key: CountKey) -> None:
        """Count an admitted call whose body raised."""
        next(self._tally.counter(self._tally.failed, key))
        if self._rules is not None:
            self._rules.after_failure(*key)

    def report_metric(
        self, *, success: bool | None = None, cost_usd: float = 0.0, **ids: Unpack[Ids]
    ) -> None:
        """Report work done under a scope (ids default to ``agentguard.scope``).

        ``cost_usd`` adds to the scope's cost (and budget rules). ``success`` is the outcome of
        one unit of work no guarded call counted (an LLM call, say): it counts as executed,
        and if false as failed, in ``counts()``, heartbeats and error-rate rules alike.
        """
        if not isinstance(cost_usd, (int, float)) or cost_usd < 0 or math.isnan(cost_usd):
            raise InvalidInputError("cost_usd", f"must be a non-negative number; got {cost_usd!r}")
        scope = self._scope_now(ids, "report_metric")
        self._add_cost(scope, cost_usd)
        if success is not None:
            key = (REPORTED, scope)
            next(self._tally.counter(self._tally.executed, key))
            if not success:
                next(self._tally.counter(self._tally.failed, key))
            if self._rules is not None:
                self._rules.on_outcome(scope, success)

    def add_cost(self, scope: Scope, cost_usd: float) -> None:
        """Add ``cost_usd`` (a non-negative number) under a call's ``scope``, as ``admit``
        returned it in its key: cost totals, heartbeats and budget rules see it.

        ``report_metric`` for integrations, which hold a call's scope already (a model call's
        spend after its response): the ids are not looked up or validated again.
        """
        if not isinstance(cost_usd, (int, float)) or cost_usd < 0 or math.isnan(cost_usd):
            raise InvalidInputError("cost_usd", f"must be a non-negative number; got {cost_usd!r}")
        self._add_cost(scope, cost_usd)

    def _add_cost(self, scope: Scope, cost_usd: float) -> None:
        self._tally.add_cost(scope, cost_usd)
        if self._rules is not None and cost_usd:
            self._rules.on_cost(scope, cost_usd)

    def cost(self, target_type: str, target_id: str) -> float:
        """Total cost reported in this process under a target (agent, run or mission)."""
        target_type, target_id = validate_target(target_type, target_id)
        return self._tally.cost(target_type, target_id)

    def total_cost(self) -> float:
        """Total cost reported in this process under every scope."""
        return self._tally.cost()

    def record_observation(self, trip: Trip) -> None:
        """Record an observe-mode rule's trip (a warning and an OBSERVED intervention)."""
        self._refusals.observe(trip)

    def _with_defaults(self, scope: Scope) -> Scope:
        # Called on every admitted call of a guard with default ids: a scope usually repeats
        # (the same scope() block), so the last answer is kept, as one tuple (thread-safe).
        last = self._last_defaulted
        if last[0] is scope:
            return last[1]
        assert self._defaults is not None
        merged = over(scope, self._defaults)
        self._last_defaulted = (scope, merged)
        return merged

    def _scope_now(self, ids: Ids, where: str) -> Scope:
        scope = over(scope_of(ids, where), current_scope())
        return self._with_defaults(scope) if self._defaults is not None else scope

    # -- operator verbs ----------------------------------------------------------------------

    def kill(
        self,
        target_type: str,
        target_id: str,
        *,
        reason: str | None = None,
        actor: str | None = None,
        expires_at: datetime | None = None,
        duration: timedelta | float | str | None = None,
    ) -> KillSwitch:
        """Kill a target; raises ``AlreadyKilledError`` if it already has an active kill.

        A time-limited kill (``expires_at``, or ``duration``: seconds, a ``timedelta`` or text
        such as ``"1h"``) is revived by its store when it expires, as ``expiry``.
        """
        target_type, target_id = validate_target(target_type, target_id)
        reason = validate_reason(reason)
        until = validate_expiry(expires_at, duration, utcnow())
        who = actor or self.actor
        change = self._source.kill(
            target_type, target_id, reason=reason, actor=who, expires_at=until
        )
        self.telemetry.record_change(change, actor=who)
        return change.kill_switch

    def revive(
        self,
        target_type: str,
        target_id: str,
        *,
        actor: str | None = None,
        reason: str | None = None,
    ) -> KillSwitch:
        """Revive a target (``reason``: why, for the audit log); raises ``NotKilledError`` if
        it has no active kill."""
        target_type, target_id = validate_target(target_type, target_id, existing=True)
        reason = validate_reason(reason)
        who = actor or self.actor
        change = self._source.revive(target_type, target_id, actor=who, reason=reason)
        self.telemetry.record_change(change, actor=who)
        self._refusals.revived()
        return change.kill_switch

    def finish_run(
        self, run_id: str | None = None, *, actor: str | None = None
    ) -> KillSwitch | None:
        """Tell the server the run (by default the current scope's) is over.

        Its kill made ``until`` the run ends, if it has one, ends (revived and audited) and is
        returned; any other kill stays.
        """
        run = run_id if run_id is not None else self._scope_now({}, "finish_run").run_id
        if not run:
            raise InvalidInputError("run_id", "no run to finish: pass run_id or run in a scope")
        _, run = validate_target("run", run, existing=True)
        who = actor or self.actor
        change = self._source.finish_run(run, actor=who)
        if change is None:
            return None
        self.telemetry.record_change(change, actor=who)
        self._refusals.revived()
        return change.kill_switch

    def stop_all(
        self,
        *,
        reason: str | None = None,
        actor: str | None = None,
        duration: timedelta | float | str | None = None,
    ) -> KillSwitch:
        """Stop the whole organization: every guarded call of it is refused until
        :meth:`resume_all` (a kill of target type ``organization``; a server asks for the
        ``admin`` scope)."""
        return self.kill(
            "organization", self.organization_id, reason=reason, actor=actor, duration=duration
        )

    def resume_all(self, *, actor: str | None = None) -> KillSwitch:
        """End the organization-wide stop; raises ``NotKilledError`` if there is none."""
        return self.revive("organization", self.organization_id, actor=actor)

    def check(self, target_type: str, target_id: str) -> KillStatus:
        """Whether a target is killed, with the reason, who killed it and when."""
        return self._source.status(target_type, target_id)

    def active(self) -> list[KillSwitch]:
        """Active kill switches in this guard's view, newest first."""
        return sorted(self._index.active(), key=lambda ks: ks.killed_at, reverse=True)

    def wait_until_synced(self, timeout: float | None = None) -> bool:
        """Block until a remote guard has its first kill state; True at once for local ones."""
        wait_synced = getattr(self._source, "wait_until_synced", None)
        return True if wait_synced is None else bool(wait_synced(timeout))

    def wait_until_revived(
        self,
        error: PolicyViolationError | float | None = None,
        /,
        timeout: float | None = None,
        **ids: Unpack[Ids],
    ) -> bool:
        """Block until what refused a call no longer does; False if ``timeout`` passed first.

        ``error`` (a ``PolicyViolationError``): wait until its target is revived, or, for a
        ``KillStateUnavailableError``, until kill state is current again. With ids: while any
        of them is killed. With neither: on what refused this context's last refused call
        (under ``agentguard.scope``, in any thread or task that copied it; outside one, this
        guard's last refusal), else on the current scope. A number alone is the timeout.
        """
        blocked, timeout = self._blocked_by(error, timeout, ids, "wait_until_revived")
        return wait(blocked, self._index, timeout)

    async def await_revived(
        self,
        error: PolicyViolationError | float | None = None,
        /,
        timeout: float | None = None,
        *,
        poll: float = 0.02,
        **ids: Unpack[Ids],
    ) -> bool:
        """``wait_until_revived`` for asyncio code (polls the in-memory index; no I/O)."""
        blocked, timeout = self._blocked_by(error, timeout, ids, "await_revived")
        return await wait_async(blocked, timeout, poll)

    def _blocked_by(
        self, error: Any, timeout: float | None, ids: Ids, where: str
    ) -> tuple[Callable[[], bool], float | None]:
        """What ``wait_until_revived`` waits on, and for how long."""
        if error is not None and not isinstance(error, PolicyViolationError):
            if isinstance(error, bool) or not isinstance(error, (int, float)):
                raise InvalidInputError(
                    "error", f"must be a PolicyViolationError; got {type(error).__name__}"
                )
            error, timeout = None, error  # a timeout given positionally
        if error is None and not any(ids.get(field) is not None for field in ID_FIELDS):
            box = LAST_REFUSAL.get()
            error = self._refusals.last if box is None else box[0]
        blocked = blocked_by(
            error, lambda: self._scope_now(ids, where), self._index, self._source, self._clock
        )
        return blocked, timeout

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
        """Exact counts of guarded calls executed, refused, cancelled and failed in this process.

        With a target, only calls that ran under it (tool: calls of that action name).
        """
        if target_type is not None:
            target_type, target_id = validate_target(target_type, target_id)
        return self._tally.counts(target_type, target_id, action)

    def flush(self, timeout: float = 5.0) -> bool:
        """Deliver queued interventions; return whether all were delivered in time."""
        return self._refusals.flush(timeout)

    # -- heartbeats -------------------------------------------------------------------------

    def start_heartbeat(self, interval: float = 10.0, **ids: Unpack[Ids]) -> Heartbeat:
        """Report this process to the server every ``interval`` seconds until it exits.

        Ids given here win, then those of ``agentguard.scope`` where it is started, then the
        guard's defaults (a warning says when there is no agent id). A thread in sync code, a
        task inside a running asyncio loop; at exit (and on SIGTERM left to its default
        action) it reports a clean exit, on an unhandled exception a crash. Needs a server
        (``Guard(server)`` or ``Guard(url, api_key=...)``).
        """
        if self._heartbeat is not None and self._heartbeat.running:
            raise AgentGuardError("the heartbeat is already running; call stop_heartbeat() first")
        heartbeat = Heartbeat(self, interval, **ids)
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
        self._refusals.close()
        self._inflight.close()
        self._source.close()

    def __enter__(self) -> Guard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        source = type(self._source).__name__
        return f"<Guard {source} org={self.organization_id!r} version={self.version}>"


def configure(guard: Guard | None) -> None:
    """Make ``guard`` the default for ``@agentguard.guarded_action`` (``None`` clears it)."""
    if guard is not None and not isinstance(guard, Guard):
        raise InvalidInputError("guard", f"must be a Guard; got {type(guard).__name__}")
    actions.configured[0] = guard


def get_guard() -> Guard:
    """The guard set with ``configure``; raises ``GuardNotConfiguredError`` if there is none."""
    return cast(Guard, actions.configured_guard())  # configure() sets nothing but a Guard
