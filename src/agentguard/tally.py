"""Exact counts of what guarded calls did in this process, and the cost reported under them."""

from __future__ import annotations

import itertools
import threading

from .records import CallCounts
from .scope import Scope

CountKey = tuple[str, Scope]  # (action name, scope): what admit returns to count_failure
# The action name of outcomes reported with report_metric(success=...): no tool has it.
REPORTED = ""


class CallTally:
    """Executed, failed, refused, unavailable and cancelled calls by (action, scope); costs.

    ``executed`` and ``failed`` are written on the hot path without a lock: a counter is
    created once under the lock, then advanced with ``next``, which is atomic under the GIL.
    """

    def __init__(self) -> None:
        self.executed: dict[CountKey, itertools.count[int]] = {}
        self.failed: dict[CountKey, itertools.count[int]] = {}
        self._refused: dict[CountKey, int] = {}
        self._unavailable: dict[CountKey, int] = {}
        self._cancelled: dict[CountKey, int] = {}
        self._costs: dict[Scope, float] = {}
        self._lock = threading.Lock()

    def counter(
        self, table: dict[CountKey, itertools.count[int]], key: CountKey
    ) -> itertools.count[int]:
        """The counter of ``key`` in ``executed`` or ``failed``, made on first use."""
        counter = table.get(key)
        if counter is None:
            with self._lock:
                counter = table.setdefault(key, itertools.count())
        return counter

    def count_refused(self, key: CountKey, *, unavailable: bool) -> None:
        counted = self._unavailable if unavailable else self._refused
        with self._lock:
            counted[key] = counted.get(key, 0) + 1

    def count_cancelled(self, key: CountKey) -> None:
        with self._lock:
            self._cancelled[key] = self._cancelled.get(key, 0) + 1

    def add_cost(self, scope: Scope, cost_usd: float) -> None:
        with self._lock:
            self._costs[scope] = self._costs.get(scope, 0.0) + cost_usd

    def cost(self, target_type: str | None = None, target_id: str | None = None) -> float:
        """Total cost reported under a target (agent, run or mission), or under any scope."""
        field = f"{target_type}_id"
        with self._lock:
            return sum(
                v
                for s, v in self._costs.items()
                if target_type is None or getattr(s, field, None) == target_id
            )

    def counts(
        self, target_type: str | None, target_id: str | None, action: str | None
    ) -> CallCounts:
        """Counts of the calls that ran under a target (tool: of that name), of ``action``."""

        def matches(key: CountKey) -> bool:
            name, scope = key
            if action is not None and name != action:
                return False
            if target_type is None or target_type == "organization":  # every call of it
                return True
            if target_type == "tool":
                return name == target_id
            return bool(getattr(scope, f"{target_type}_id") == target_id)

        with self._lock:
            executed = {k: _value(c) for k, c in self.executed.items()}
            failed = {k: _value(c) for k, c in self.failed.items()}
            refused = dict(self._refused)
            unavailable = dict(self._unavailable)
            cancelled = dict(self._cancelled)
        return CallCounts(
            executed=sum(v for k, v in executed.items() if matches(k)),
            refused=sum(v for k, v in refused.items() if matches(k)),
            failed=sum(v for k, v in failed.items() if matches(k)),
            unavailable=sum(v for k, v in unavailable.items() if matches(k)),
            cancelled=sum(v for k, v in cancelled.items() if matches(k)),
        )


def _value(counter: itertools.count[int]) -> int:
    # itertools.count is the one lock-free counter whose increment is atomic under the GIL;
    # its repr, "count(N)", is the documented way to read it without advancing it.
    return int(repr(counter)[6:-1])
