"""Waiting out a server that is away: backoff delays for the feeds, bounded retries for calls.

A server whose database restarts answers 503 for a few seconds; a server restarting refuses
connections for as long. Checkpoints and heartbeats retry through that with exponential backoff
(tenacity), for a bounded time, and then raise the last error, which says what was wrong.
Anything else (a bad key, bad input, a bug) is raised at once.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import httpx
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_delay,
    stop_when_event_set,
    wait_exponential,
    wait_random,
)
from tenacity.stop import stop_base

from ..wording import one_line
from .errors import DatabaseUnavailableError, ServerUnreachableError

logger = logging.getLogger("agentguard")

T = TypeVar("T")

RETRY_FOR = 30.0  # seconds a checkpoint keeps retrying before its error reaches the agent
MAX_DELAY = 5.0  # seconds between attempts, at most


class Backoff:
    """Exponential backoff with full jitter, reset after a healthy period.

    Hand-written rather than tenacity: the stream, poll and ack loops need the next delay,
    not a retrying call.
    """

    def __init__(self, initial: float = 1.0, maximum: float = 30.0, healthy_after: float = 30.0):
        self.initial, self.maximum, self.healthy_after = initial, maximum, healthy_after
        self.attempt = 0

    def next_delay(self) -> float:
        ceiling = min(self.maximum, self.initial * (2**self.attempt))
        self.attempt += 1
        return random.uniform(self.initial / 2, ceiling)

    def connected_for(self, seconds: float) -> None:
        if seconds >= self.healthy_after:
            self.reset()

    def reset(self) -> None:
        self.attempt = 0


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` may pass by itself: the database or the server is away for now."""
    return isinstance(exc, (DatabaseUnavailableError, ServerUnreachableError, httpx.TransportError))


def call_with_retries(
    call: Callable[[], T],
    *,
    what: str,
    retry_for: float = RETRY_FOR,
    stop: threading.Event | None = None,
    log: bool = True,
) -> T:
    """``call()``, retried on transient errors for up to ``retry_for`` seconds (or until
    ``stop`` is set); the last error is raised when they run out.

    ``log=False`` leaves the first failure and the giving up at debug level (for calls
    repeated on a schedule, whose caller says once that they fail).
    """
    loud = logging.WARNING if log else logging.DEBUG
    condition: stop_base = stop_after_delay(retry_for)
    sleep: Callable[[float], None] = time.sleep
    if stop is not None:
        condition = condition | stop_when_event_set(stop)
        event = stop

        def sleep(seconds: float) -> None:  # cut short when ``stop`` is set
            event.wait(seconds)

    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        level = loud if state.attempt_number == 1 else logging.DEBUG
        logger.log(
            level,
            "agentguard: %s failed (%s); retrying for up to %g s",
            what,
            one_line(exc) if exc else "?",
            retry_for,
        )
        logger.debug("agentguard: %s delivery failed", what, exc_info=exc)

    retrying = Retrying(
        retry=retry_if_exception(is_transient),
        stop=condition,
        wait=wait_exponential(multiplier=0.2, max=MAX_DELAY) + wait_random(0, 0.2),
        sleep=sleep,
        before_sleep=before_sleep,
        reraise=True,
    )
    try:
        result = retrying(call)
    except Exception as exc:
        attempts = retrying.statistics.get("attempt_number", 1)
        if is_transient(exc) and attempts > 1:
            logger.log(
                logging.ERROR if log else logging.DEBUG,
                "agentguard: %s gave up after %d attempts: %s",
                what,
                attempts,
                one_line(exc),
            )
        raise
    attempts = retrying.statistics.get("attempt_number", 1)
    if attempts > 1:
        logger.log(loud, "agentguard: %s succeeded at attempt %d", what, attempts)
    return result
