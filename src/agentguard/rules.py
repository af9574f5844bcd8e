"""Auto-trip rules: kill a runaway agent before a person notices.

Rules are declared on the guard (``Guard(rules=[...])``) and evaluated on every guarded call in
O(1), in memory, with no I/O. When one trips in ``enforce`` mode the call is refused at once
and the target is killed through the normal kill path (every replica stops) with actor
``rule:<name>`` and a reason that states the numbers. In ``observe`` mode it records an
``OBSERVED`` intervention instead and lets the call run.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, Literal, Protocol

from .errors import AlreadyKilledError, InvalidInputError
from .scope import Scope
from .wording import plural

logger = logging.getLogger("agentguard")

RuleMode = Literal["enforce", "observe"]
Per = Literal["agent", "run", "mission"]


class _Window:
    """Sum of values over the last ``length`` seconds, in ``buckets`` slices: O(1) per update."""

    __slots__ = ("length", "width", "slots", "stamps", "total")

    def __init__(self, length: float, buckets: int = 20) -> None:
        self.length = length
        self.width = length / buckets
        self.slots = [0.0] * buckets
        self.stamps = [-1] * buckets
        self.total = 0.0

    def add(self, now: float, value: float) -> float:
        """Add ``value`` at time ``now`` and return the sum over the window."""
        tick = int(now // self.width)
        n = len(self.slots)
        i = tick % n
        if self.stamps[i] != tick:
            self.total -= self.slots[i]
            self.slots[i], self.stamps[i] = 0.0, tick
        for j in range(n):  # expire slices older than the window (bounded: n slices)
            if self.stamps[j] != -1 and tick - self.stamps[j] >= n:
                self.total -= self.slots[j]
                self.slots[j], self.stamps[j] = 0.0, -1
        self.slots[i] += value
        self.total += value
        return self.total


@dataclass
class Rule:
    """A limit on what one agent (or run, or mission) may do."""

    name: str
    mode: RuleMode = "enforce"
    per: Per = "agent"
    _lock: threading.Lock = field(
        default_factory=threading.Lock, init=False, repr=False, compare=False
    )
    _state: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise InvalidInputError("name", "a rule needs a non-empty name")
        if self.mode not in ("enforce", "observe"):
            raise InvalidInputError("mode", f"must be 'enforce' or 'observe'; got {self.mode!r}")
        if self.per not in ("agent", "run", "mission"):
            raise InvalidInputError("per", f"must be agent, run or mission; got {self.per!r}")

    def key(self, scope: Scope) -> str | None:
        return getattr(scope, f"{self.per}_id")  # type: ignore[no-any-return]

    def on_call(self, name: str, key: str, now: float, args: Any, kwargs: Any) -> str | None:
        """Account one call; return the trip reason if it exceeds the rule."""
        return None

    def on_failure(self, name: str, key: str, now: float) -> str | None:
        return None

    def on_outcome(self, key: str, now: float, success: bool) -> str | None:
        """Account one outcome reported with ``report_metric(success=...)``."""
        return None

    def on_cost(self, key: str, now: float, cost_usd: float) -> str | None:
        return None

    def reset(self, key: str) -> None:
        with self._lock:
            self._state.pop(key, None)


def _positive(field_name: str, value: float) -> None:
    if not isinstance(value, (int, float)) or not value > 0 or math.isinf(value):
        raise InvalidInputError(field_name, f"must be a positive number; got {value!r}")


@dataclass
class RateRule(Rule):
    """At most ``limit`` calls (of ``tool``, or of any tool) per ``window`` seconds."""

    limit: int = 100
    window: float = 60.0
    tool: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive("limit", self.limit)
        _positive("window", self.window)

    def on_call(self, name: str, key: str, now: float, args: Any, kwargs: Any) -> str | None:
        if self.tool is not None and name != self.tool:
            return None
        with self._lock:
            window = self._state.get(key) or self._state.setdefault(key, _Window(self.window))
            total = window.add(now, 1)
        if total > self.limit:
            return (
                f"{self.tool or 'guarded calls'} called {plural(total, 'time')} "
                f"in {self.window:g} s; "
                f"limit {self.limit:,}"
            )
        return None


@dataclass
class BudgetRule(Rule):
    """At most ``limit_usd`` of reported cost per ``window`` seconds."""

    limit_usd: float = 10.0
    window: float = 3600.0

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive("limit_usd", self.limit_usd)
        _positive("window", self.window)

    def on_cost(self, key: str, now: float, cost_usd: float) -> str | None:
        with self._lock:
            window = self._state.get(key) or self._state.setdefault(key, _Window(self.window))
            total = window.add(now, cost_usd)
        if total > self.limit_usd:
            return f"spent ${total:,.2f} in {self.window:g} s; limit ${self.limit_usd:,.2f}"
        return None


@dataclass
class LoopRule(Rule):
    """The same tool with the same arguments ``repeats`` times in a row."""

    repeats: int = 10
    tool: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive("repeats", self.repeats)

    def on_call(self, name: str, key: str, now: float, args: Any, kwargs: Any) -> str | None:
        if self.tool is not None and name != self.tool:
            return None
        signature = (name, _fingerprint(args, kwargs))
        with self._lock:
            last, count = self._state.get(key, (None, 0))
            count = count + 1 if last == signature else 1
            self._state[key] = (signature, count)
        if count >= self.repeats:
            return (
                f"{name} called {plural(count, 'time')} in a row with the same arguments; "
                f"limit {self.repeats - 1:,}"
            )
        return None


@dataclass
class ErrorRateRule(Rule):
    """More than ``max_rate`` of calls failing over ``window`` seconds (after ``min_calls``)."""

    max_rate: float = 0.5
    min_calls: int = 20
    window: float = 60.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.max_rate < 1:
            raise InvalidInputError("max_rate", f"must be between 0 and 1; got {self.max_rate!r}")
        _positive("min_calls", self.min_calls)
        _positive("window", self.window)

    def _windows(self, key: str) -> tuple[_Window, _Window]:
        pair = self._state.get(key)
        if pair is None:
            pair = self._state[key] = (_Window(self.window), _Window(self.window))
        return pair

    def on_call(self, name: str, key: str, now: float, args: Any, kwargs: Any) -> str | None:
        return self._account(key, now, calls=1, failures=0)

    def on_failure(self, name: str, key: str, now: float) -> str | None:
        return self._account(key, now, calls=0, failures=1)

    def on_outcome(self, key: str, now: float, success: bool) -> str | None:
        return self._account(key, now, calls=1, failures=0 if success else 1)

    def _account(self, key: str, now: float, calls: int, failures: int) -> str | None:
        with self._lock:
            call_window, failure_window = self._windows(key)
            failed = failure_window.add(now, failures)
            total = call_window.add(now, calls)
        if failures and total >= self.min_calls and failed / total > self.max_rate:
            return (
                f"{int(failed):,} of {plural(total, 'call')} failed in {self.window:g} s "
                f"({failed / total:.0%}); limit {self.max_rate:.0%}"
            )
        return None


RULE_KINDS: dict[str, type[Rule]] = {
    "rate": RateRule,
    "budget": BudgetRule,
    "loop": LoopRule,
    "error-rate": ErrorRateRule,
}


def parse_rule(spec: str) -> Rule:
    """A rule from its one-line form, as ``agentguard serve --rule`` takes it.

    ``KIND[:FIELD=VALUE,...]`` with KIND one of rate, budget, loop, error-rate and the fields of
    that rule class, e.g. ``budget:limit_usd=100,window=3600`` or
    ``rate:name=email-rate,limit=500,window=60,tool=send_email``. The name defaults to KIND.
    Errors name the part of the spec that is wrong.
    """
    kind, _, rest = spec.strip().partition(":")
    cls = RULE_KINDS.get(kind.strip())
    if cls is None:
        raise InvalidInputError(
            "rule", f"{spec!r}: the kind must be one of {', '.join(RULE_KINDS)}; got {kind!r}"
        )
    settable = {f.name: f for f in fields(cls) if f.init}
    values: dict[str, Any] = {"name": kind.strip()}
    for part in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, raw = (x.strip() for x in part.partition("="))
        if not eq or not raw:
            raise InvalidInputError("rule", f"{spec!r}: expected FIELD=VALUE; got {part!r}")
        if key not in settable:
            raise InvalidInputError(
                "rule",
                f"{spec!r}: {kind} rules have no field {key!r}; fields: {', '.join(settable)}",
            )
        values[key] = _rule_value(spec, key, raw, settable[key].default)
    try:
        return cls(**values)
    except InvalidInputError as exc:
        raise InvalidInputError("rule", f"{spec!r}: {exc.field} {exc.message}") from None


def _rule_value(spec: str, key: str, raw: str, default: Any) -> Any:
    """``raw`` as the type of the field's default (strings where the default is text or None)."""
    kind = type(default) if isinstance(default, (int, float)) else str
    try:
        return kind(raw)
    except ValueError:
        noun = "a whole number" if kind is int else "a number"
        raise InvalidInputError("rule", f"{spec!r}: {key} must be {noun}; got {raw!r}") from None


def _fingerprint(args: Any, kwargs: Any) -> int:
    try:
        return hash((args, tuple(sorted(kwargs.items())) if kwargs else None))
    except TypeError:  # unhashable arguments: fall back to their repr
        return hash(repr((args, kwargs)))


@dataclass(frozen=True)
class Trip:
    """A rule that tripped for one target."""

    rule: Rule
    target_type: str
    target_id: str
    reason: str

    @property
    def actor(self) -> str:
        return f"rule:{self.rule.name}"


class Enforcer(Protocol):
    """What rules act through: the guard's kill and its record of an observe-mode trip."""

    def kill(
        self, target_type: str, target_id: str, *, reason: str | None = ..., actor: str | None = ...
    ) -> object: ...

    def record_observation(self, trip: Trip) -> None: ...


class RuleEngine:
    """Evaluates a guard's rules on its calls; kills happen on a background thread."""

    def __init__(self, guard: Enforcer, rules: list[Rule], clock: Callable[[], float]) -> None:
        names = [r.name for r in rules]
        if len(set(names)) != len(names):
            raise InvalidInputError("rules", f"rule names must be unique; got {names}")
        self.guard = guard
        self.rules = rules
        self.clock = clock
        # Targets a tripped enforce rule stops locally until its kill is in the index.
        self.pending: dict[tuple[str, str], Trip] = {}
        self._kills: queue.SimpleQueue[Trip] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def before_call(self, name: str, scope: Scope, args: Any, kwargs: Any) -> Trip | None:
        """Account a call about to run; return the trip that refuses it, if any."""
        now = self.clock()
        for rule in self.rules:
            key = rule.key(scope)
            if key is None:
                continue
            pending = self.pending.get((rule.per, key))
            if pending is not None:
                return pending
            reason = rule.on_call(name, key, now, args, kwargs)
            if reason is not None:
                trip = self._trip(rule, key, reason)
                if trip is not None:
                    return trip
        return None

    def after_failure(self, name: str, scope: Scope) -> None:
        self._after(scope, lambda rule, key, now: rule.on_failure(name, key, now))

    def on_cost(self, scope: Scope, cost_usd: float) -> None:
        self._after(scope, lambda rule, key, now: rule.on_cost(key, now, cost_usd))

    def on_outcome(self, scope: Scope, success: bool) -> None:
        self._after(scope, lambda rule, key, now: rule.on_outcome(key, now, success))

    def _after(self, scope: Scope, account: Callable[[Rule, str, float], str | None]) -> None:
        """Account something that already happened; trip every rule it takes over its limit."""
        now = self.clock()
        for rule in self.rules:
            key = rule.key(scope)
            if key is not None:
                reason = account(rule, key, now)
                if reason is not None:
                    self._trip(rule, key, reason)

    def _trip(self, rule: Rule, key: str, reason: str) -> Trip | None:
        trip = Trip(rule, rule.per, key, reason)
        rule.reset(key)  # start counting afresh (after a revive, or after an observation)
        if rule.mode == "observe":
            self.guard.record_observation(trip)
            return None
        with self._lock:
            if (rule.per, key) in self.pending:
                return self.pending[(rule.per, key)]
            self.pending[(rule.per, key)] = trip
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._kill_loop, name="agentguard-rules", daemon=True
                )
                self._thread.start()
        self._kills.put(trip)
        return trip

    def _kill_loop(self) -> None:
        while True:
            trip = self._kills.get()
            try:
                self.guard.kill(
                    trip.target_type, trip.target_id, reason=trip.reason, actor=trip.actor
                )
            except AlreadyKilledError:
                pass
            except Exception:
                logger.exception(
                    "agentguard: rule %s could not kill %s %r; refusing it locally",
                    trip.rule.name,
                    trip.target_type,
                    trip.target_id,
                )
                continue  # keep refusing locally: failing open here would defeat the rule
            with self._lock:
                self.pending.pop((trip.target_type, trip.target_id), None)
