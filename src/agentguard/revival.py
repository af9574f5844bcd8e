"""Waiting until what refused a call no longer does: ``wait_until_revived`` and its async twin."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable

from .errors import PolicyViolationError
from .index import KillIndex
from .scope import ID_FIELDS, Scope
from .sources import CLEAR, KillStateSource

Blocked = Callable[[], bool]
_INDEXED = ("agent", "run", "mission", "tool")  # the target types with a table in the index


def blocked_by(
    error: PolicyViolationError | None,
    scope: Callable[[], Scope],
    index: KillIndex,
    source: KillStateSource,
    clock: Callable[[], float],
) -> Blocked:
    """Whether ``error``'s cause still holds (without one: whether ``scope()`` is blocked)."""
    if error is None:
        current = scope()
        return lambda: index.blocking(current) is not None
    target_type, target_id = error.target_type, error.target_id

    def killed() -> bool:
        if target_type in _INDEXED:
            return index.get(target_type, target_id) is not None
        return any(
            ks.target_type == target_type and ks.target_id == target_id for ks in index.active()
        )

    if error.killed:
        return killed
    # Refused for want of kill state: wait until the view is current again.
    if source.strict:
        action = error.action
        ids = {f"{target_type}_id": target_id} if f"{target_type}_id" in ID_FIELDS else {}
        return lambda: source.verify(action, Scope(**ids)) is not CLEAR
    return lambda: (index.fresh_until < math.inf and clock() > index.fresh_until) or killed()


def wait(blocked: Blocked, index: KillIndex, timeout: float | None) -> bool:
    """Block until ``blocked()`` is false; False if ``timeout`` passed first."""
    deadline = None if timeout is None else time.monotonic() + timeout
    changed = index.changed
    while True:
        with changed:  # a kill-state change wakes the wait; staleness is polled
            if not blocked():
                return True
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            changed.wait(0.2 if remaining is None else min(remaining, 0.2))


async def wait_async(blocked: Blocked, timeout: float | None, poll: float) -> bool:
    """``wait`` for asyncio code: polls the in-memory view every ``poll`` seconds (no I/O)."""
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    while blocked():
        if deadline is not None and loop.time() >= deadline:
            return False
        await asyncio.sleep(poll)
    return True
