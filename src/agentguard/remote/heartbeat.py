"""Heartbeats: each guarded process tells the server it is alive, what it did, what it applied.

``guard.start_heartbeat(interval=10)`` sends one at once and then every ``interval`` seconds
(a daemon thread in sync code, a task inside a running asyncio loop), plus one whenever the
guard's kill state changes if its source does not acknowledge changes itself. At interpreter
exit it sends ``status: "exited"``; an unhandled exception (``sys.excepthook`` or
``threading.excepthook``, both chained) sends ``status: "crashed"`` with the error. SIGTERM
(a deploy or scale-down) also reports ``"exited"`` before the process ends as it would have,
when the process had left SIGTERM to its default action. The answer
carries the kill state, applied to the guard's index when newer: a second path that stops a
guard whose change stream is broken.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import math
import os
import signal
import sys
import threading
import time
import traceback
import warnings
import weakref
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import AgentGuardWarning, InvalidInputError
from ..index import KillIndex
from ..protocol import HeartbeatReply, HeartbeatReport, InstanceStatusName
from ..records import CallCounts
from ..scope import Scope, current_scope, over, scope_of
from ..sources import HeartbeatsUnsupportedError, KillStateSource
from ..wording import one_line

if TYPE_CHECKING:
    from typing import Unpack

    from ..scope import Ids

logger = logging.getLogger("agentguard")

MAX_ERROR_LENGTH = 2000
FINAL_TIMEOUT = 5.0  # seconds the last heartbeat (exited/crashed) may take
FINAL_RETRY_FOR = 2.0  # of which retrying while the server or its database is away


class Reported(Protocol):
    """The guard a heartbeat reports on (a ``Guard``)."""

    instance_id: str
    last_checkpoint: str | None
    labels: dict[str, str]

    @property
    def source(self) -> KillStateSource: ...

    @property
    def index(self) -> KillIndex: ...

    @property
    def defaults(self) -> Scope: ...

    @property
    def version(self) -> int: ...

    def wait_until_synced(self, timeout: float | None = None) -> bool: ...

    def counts(self) -> CallCounts: ...

    def total_cost(self) -> float: ...


class Heartbeat:
    """The heartbeat of one guard; see :meth:`agentguard.Guard.start_heartbeat`."""

    def __init__(
        self,
        guard: Reported,
        interval: float,
        **ids: Unpack[Ids],
    ) -> None:
        scope_of(ids, "Heartbeat", validate=False)  # a misspelt keyword before the interval
        if (
            not isinstance(interval, (int, float))
            or isinstance(interval, bool)
            or not 0 < interval <= 86400
            or math.isnan(interval)
        ):
            raise InvalidInputError(
                "interval", f"must be a number of seconds in (0, 86400]; got {interval!r}"
            )
        fixed = scope_of(ids, "Heartbeat")
        source = guard.source
        if not source.supports_heartbeats:
            raise HeartbeatsUnsupportedError(
                "heartbeats need a server: use Guard(server) or "
                "Guard('http://host:8000', api_key=...); a Guard() without one keeps its kill "
                "state in this process only"
            )
        self.guard = guard
        self.interval = float(interval)
        self.scope = over(fixed, over(current_scope(), guard.defaults))
        self._exit_only = False  # armed: only the last report (a streaming guard's exit)
        self.last_reply: HeartbeatReply | None = None
        self.last_error: str | None = None
        self.sent = 0
        self._beat_on_change = not source.acknowledges_changes
        self._stop = threading.Event()
        self._send_lock = threading.Lock()
        self._finished = False
        self._thread: threading.Thread | None = None
        self._task: asyncio.Task[None] | None = None

    # -- life cycle ---------------------------------------------------------------------------

    def start(self) -> Heartbeat:
        """Start beating: a task inside a running asyncio loop, else a daemon thread."""
        if self.scope.agent_id is None:
            warnings.warn(
                "agentguard: this heartbeat names no agent, so `agentguard agents` cannot list "
                "it: pass start_heartbeat(agent_id=...), start it inside "
                "agentguard.scope(agent_id=...), or give Guard(agent_id=...)",
                AgentGuardWarning,
                stacklevel=3,
            )
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        _ACTIVE.add(self)
        _install_hooks()
        if loop is not None:
            self._task = loop.create_task(self._run_async(), name="agentguard-heartbeat")
        else:
            self._thread = threading.Thread(
                target=self._run_thread, name="agentguard-heartbeat", daemon=True
            )
            self._thread.start()
        return self

    def arm(self) -> Heartbeat:
        """Send no heartbeats, only the last one: at :meth:`stop`, interpreter exit, SIGTERM or
        an unhandled exception (how a streaming guard tells the server it is gone)."""
        self._exit_only = True
        _ACTIVE.add(self)
        _install_hooks()
        return self

    @property
    def running(self) -> bool:
        return not self._stop.is_set()

    def stop(
        self, status: InstanceStatusName = "exited", error: str | None = None
    ) -> HeartbeatReply | None:
        """Stop beating and send a last heartbeat with ``status``; safe to call twice."""
        self._stop.set()  # first: a beat retrying through an outage gives up now
        with self._send_lock:
            if self._finished:
                return None
            self._finished = True
        self._stop.set()
        _ACTIVE.discard(self)
        index = self.guard.index
        with index.changed:
            index.changed.notify_all()  # wake the thread from its wait
        # The task notices the stop within 50 ms; the thread wakes from its wait now.
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=FINAL_TIMEOUT)
        if self._exit_only and not self.guard.wait_until_synced(0):
            return None  # its stream never got through: the server has no instance to end
        return self._send(status, error)

    # -- beating ------------------------------------------------------------------------------

    def beat(self) -> HeartbeatReply | None:
        """Send one heartbeat now; returns the answer, or None if it could not be delivered."""
        if self._finished:
            return None
        return self._send("running", None)

    def report(
        self, status: InstanceStatusName = "running", error: str | None = None
    ) -> HeartbeatReport:
        """The heartbeat as it would be sent now."""
        guard = self.guard
        counts = guard.counts()
        return HeartbeatReport(
            instance_id=guard.instance_id,
            agent_id=self.scope.agent_id,
            run_id=self.scope.run_id,
            mission_id=self.scope.mission_id,
            interval=self.interval,
            executed=counts.executed,
            refused=counts.refused,
            failed=counts.failed,
            cancelled=counts.cancelled,
            cost_usd=guard.total_cost(),
            version=guard.version,
            checkpoint=guard.last_checkpoint,
            status=status,
            error=error[:MAX_ERROR_LENGTH] if error else None,
            labels=guard.labels or None,
        )

    def _send(self, status: InstanceStatusName, error: str | None) -> HeartbeatReply | None:
        # While the server or its database is away a beat is retried with backoff until the
        # next one is due (the last one, at exit, for FINAL_RETRY_FOR s), then given up:
        # logged when the failures start, not for every beat.
        # Imported here: `import agentguard` stays free of httpx and the HTTP client.
        from .backoff import RETRY_FOR, call_with_retries, is_transient

        final = status != "running"
        retry_for = FINAL_RETRY_FOR if final else min(self.interval, RETRY_FOR)
        try:
            with self._send_lock:
                reply = call_with_retries(
                    lambda: self.guard.source.heartbeat(self.report(status, error)),
                    what="heartbeat",
                    retry_for=retry_for,
                    stop=None if final else self._stop,
                    log=self.last_error is None,
                )
                self.sent += 1
        except Exception as exc:  # a heartbeat must never break the agent
            if self.last_error is None or not is_transient(exc):
                logger.warning("agentguard: heartbeat failed: %s", one_line(exc))
                logger.debug("agentguard: heartbeat delivery failed", exc_info=True)
            self.last_error = str(exc)
            return None
        self.last_error = None
        self.last_reply = reply
        if reply.snapshot is not None and reply.snapshot.version > self.guard.index.version:
            self.guard.index.replace(reply.snapshot)
        return reply

    def _run_thread(self) -> None:
        index = self.guard.index
        next_at = 0.0
        reported = -1
        while not self._stop.is_set():
            now = time.monotonic()
            changed = self._beat_on_change and index.version != reported
            if now >= next_at or changed:
                reported = index.version
                self._send("running", None)
                next_at = time.monotonic() + self.interval
            with index.changed:
                if not self._stop.is_set() and not (
                    self._beat_on_change and index.version != reported
                ):
                    index.changed.wait(max(0.0, next_at - time.monotonic()))

    async def _run_async(self) -> None:
        index = self.guard.index
        loop = asyncio.get_running_loop()
        next_at = 0.0
        reported = -1
        try:
            while not self._stop.is_set():
                changed = self._beat_on_change and index.version != reported
                if loop.time() >= next_at or changed:
                    reported = index.version
                    await asyncio.to_thread(self._send, "running", None)
                    next_at = loop.time() + self.interval
                # No I/O while waiting: look at the index now and then for a change to report.
                await asyncio.sleep(min(0.05, max(0.0, next_at - loop.time())))
        except asyncio.CancelledError:
            pass

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<Heartbeat {self.guard.instance_id} every {self.interval:g} s, {state}>"


# -- process-wide hooks: a clean exit and a crash are both reported ------------------------------

_ACTIVE: weakref.WeakSet[Heartbeat] = weakref.WeakSet()
_hooks_installed = False
_hooks_lock = threading.Lock()


def _install_hooks() -> None:
    global _hooks_installed
    with _hooks_lock:
        if _hooks_installed:
            return
        _hooks_installed = True
        previous_excepthook = sys.excepthook
        previous_threading_hook = threading.excepthook

        def excepthook(
            kind: type[BaseException], value: BaseException, tb: TracebackType | None
        ) -> None:
            if not issubclass(kind, KeyboardInterrupt):
                _stop_all("crashed", _describe(kind, value, tb))
            previous_excepthook(kind, value, tb)

        def threading_excepthook(args: Any) -> None:
            if args.exc_type is not SystemExit:
                where = f" in thread {args.thread.name}" if args.thread is not None else ""
                text = _describe(args.exc_type, args.exc_value, args.exc_traceback)
                _stop_all("crashed", f"{text}{where}")
            previous_threading_hook(args)

        sys.excepthook = excepthook
        threading.excepthook = threading_excepthook
        atexit.register(_stop_all, "exited", None)
    _install_sigterm_handler()


_sigterm_installed = False


def _install_sigterm_handler() -> None:
    """Report a clean exit on SIGTERM, then end by the signal's default action.

    Only where the process left SIGTERM to its default (so a host's own handler, and then its
    clean exit through ``atexit``, is never replaced), and only from the main thread, the one
    Python lets set handlers: a heartbeat started elsewhere leaves it to the next one started
    there.
    """
    global _sigterm_installed
    if _sigterm_installed or threading.current_thread() is not threading.main_thread():
        return
    _sigterm_installed = True
    try:
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return
    except (AttributeError, ValueError):  # no SIGTERM here
        return

    def on_sigterm(signum: int, _frame: Any) -> None:
        # Report from another thread: the main thread may be interrupted inside a heartbeat,
        # holding the lock the last report needs.
        reporter = threading.Thread(target=_stop_all, args=("exited", None), daemon=True)
        reporter.start()
        reporter.join(FINAL_TIMEOUT)
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    signal.signal(signal.SIGTERM, on_sigterm)


def _stop_all(status: InstanceStatusName, error: str | None) -> None:
    for heartbeat in list(_ACTIVE):
        try:
            heartbeat.stop(status, error)
        except Exception:  # pragma: no cover - stop() already logs delivery failures
            logger.exception("agentguard: could not stop the heartbeat")


def _describe(
    kind: type[BaseException], value: BaseException | None, tb: TracebackType | None
) -> str:
    lines = traceback.format_exception(kind, value, tb)
    text = "".join(lines[-3:]).strip()  # the innermost frame and the error itself
    return text[-MAX_ERROR_LENGTH:]
