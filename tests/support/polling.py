"""``eventually()``: wait until a condition holds, instead of sleeping and hoping."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def eventually(
    condition: Callable[[], T],
    timeout: float = 5.0,
    interval: float = 0.01,
    *,
    message: Callable[[], object] | str = "",
) -> T:
    """Call ``condition`` until it returns something truthy, and return that.

    A condition that raises AssertionError has not held yet. After ``timeout`` seconds the last
    such error is raised, or an AssertionError with ``message`` (called if callable, so it can
    show the state at the deadline) and the condition's last value.
    """
    deadline = time.monotonic() + timeout
    while True:
        failed: AssertionError | None = None
        try:
            result = condition()
        except AssertionError as exc:
            failed = exc
        else:
            if result:
                return result
        if time.monotonic() >= deadline:
            if failed is not None:
                raise failed
            detail = message() if callable(message) else message
            raise AssertionError(f"not true within {timeout} s (last: {result!r}) {detail}")
        time.sleep(interval)
