"""Calls in flight: what a kill stops while it is still running.

Each call a guard admits gets a *flight*. A *lane* holds the registered flights of one
(action, scope): a dict made the first time the guard sees that pair, and indexed by target as
the kill index is (agent, run, mission, tool). When a kill reaches the guard's index, locally
or from the server's stream, :meth:`InFlight.stop` looks up the lanes of its target and stops
every flight in them:

- a call running in an asyncio task: the task is cancelled at its next ``await``
  (``task.cancel(KILLED)``, on the task's loop), and the guarded call turns that
  ``CancelledError`` into ``PolicyViolationError``; a cancel from anyone else stays a plain
  ``CancelledError``;
- a generator or a stream: it refuses at its next item;
- sync code: its token (``agentguard.current_call().cancelled``) is set, and
  ``guard.raise_if_killed()`` raises (it also reads the index, so it needs no registration);
  a thread cannot be stopped safely from outside;
- hooks a transport added (``Call.on_cancel``) run in the thread applying the kill, to abort
  blocking I/O.

The allowed path stays cheap: see benchmarks/RESULTS.md. Generators and streams are
registered when they start (their cost is per stream, not per item), each with a *flight*: a
plain list (the cheapest object Python makes, about a third of the cost of a slotted
instance), read through the index constants below. A plain call, sync or async, registers
nothing: it keeps ``guard``, ``key``, ``started`` and ``cancel`` in locals, and gets a flight
("adopted", kept in ``ADOPTED`` under ``id(key)`` until the call ends) only when it asks for
its token, adds a hook, checks ``raise_if_killed()``, or a kill finds it. For that:

- no context variable marks the current call (a ``ContextVar.set`` and ``reset`` cost more than
  the whole allowed path): ``current_call()`` finds it on the stack, in the nearest frame of a
  function marked ``carries_flight`` (the guarded wrappers, the integrations' gate). So it is
  found in the thread or task running the call, and in what that code calls; a worker thread
  the call hands work to gets the ``Call`` passed to it;
- an async call makes sure its thread's event loop is noted (``LOOPS``; asking asyncio for the
  current task or loop costs a system call per call on Python 3.11): once per task, whose
  context then carries the note (``NOTED``, checked against the thread, since a context can
  be copied into another thread that runs a loop of its own). A kill sweeps each noted loop,
  on the loop: the tasks awaiting inside a guarded call of a killed target are cancelled.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar
from typing import Any, Protocol, TypeVar

from .errors import InvalidInputError, PolicyViolationError
from .index import KillIndex
from .records import KillSwitch
from .scope import Scope
from .selectors import Selector
from .tally import CountKey

logger = logging.getLogger("agentguard")

# A flight: [OWNER, KEY, STARTED, REVISION, TASK, STOPPED, EVENT, LANE, N, ERROR, HOOKS, HOME,
#            TOOL_CALL_ID, SPAN_NAME, MODEL]
OWNER = 0  # the InFlight of the call's guard
KEY = 1  # (action name, scope)
STARTED = 2  # time.monotonic() when it was admitted
REVISION = 3  # the kill index's revision at which its targets were found clear
TASK = 4  # the asyncio task to cancel while the call runs in one, else None
STOPPED = 5  # the KillSwitch that stopped it, once stopped
EVENT = 6  # the Event of Call.cancelled, made when first asked for
LANE = 7  # the lane it is registered in: NOWHERE until it is
N = 8  # its key in the lane
ERROR = 9  # the PolicyViolationError that ends it, once made
HOOKS = 10  # callables to run when it is stopped, or None
HOME = 11  # the lane it registers in (None: it opted out, a kill lets it run)
TOOL_CALL_ID = 12
SPAN_NAME = 13
MODEL = 14  # the model of a model call (its CANCELLED intervention names it), else None

Flight = list[Any]
Lane = dict[int, Flight]

# The lane of flights not registered (yet): never written.
NOWHERE: Lane = {}

# The message of the CancelledError a kill throws into a task; the guarded call that catches it
# raises PolicyViolationError instead.
KILLED = "agentguard: stopped by a kill"

# Flights adopted by plain calls, by id(key): each call that finds itself here at its end
# removes its own (while a call runs, its key is alive, so no other object has that id).
ADOPTED: dict[int, Flight] = {}

# The event loop each thread last ran a guarded coroutine in, by thread id, as its bound
# ``is_closed`` (its ``__self__`` is the loop): where a kill looks for the tasks running calls
# in flight.
LOOPS: dict[int, Callable[[], bool]] = {}
# (thread id, that loop's is_closed) in the context of each task that noted it.
NOTED: ContextVar[tuple[int, Callable[[], bool]] | None] = ContextVar(
    "agentguard_loop", default=None
)

_now = time.monotonic
_make_lock = threading.Lock()  # makes each flight's error and token once (rare: off the hot path)
_CARRIERS: dict[int, Any] = {}  # id(code) -> code of each function carrying a ``flight`` local

F = TypeVar("F", bound=Callable[..., Any])


def carries_flight(fn: F) -> F:
    """Mark ``fn`` as a function whose local ``flight`` is the call it runs, or whose locals
    ``guard``, ``key``, ``started`` and ``cancel`` are a sync call's (at definition or
    decoration time, never per call): ``current_call()`` looks for its frames."""
    code = fn.__code__
    _CARRIERS[id(code)] = code  # kept: an id is unique only while its object lives
    return fn


def running_flight(owner: object = None) -> Flight | None:
    """The innermost flight on the calling thread's stack (of ``owner``'s guard, if given)."""
    here = inspect.currentframe()  # None only on a Python without stack frames
    frame = None if here is None else here.f_back
    carriers = _CARRIERS
    while frame is not None:
        if id(frame.f_code) in carriers:
            local = frame.f_locals
            flight = local.get("flight")
            if flight is None and local.get("key") is not None:  # a sync call's: adopt it
                inflight = local["guard"].in_flight
                flight = inflight.adopt(
                    local["key"], local["started"], local["cancel"], local.get("tool_call_id")
                )
            if flight is not None and (owner is None or flight[OWNER] is owner):
                return flight  # type: ignore[no-any-return]
        frame = frame.f_back
    return None


def note_loop() -> None:
    """Note this thread's running loop: a guarded coroutine starts in a task that has not.

    A call checks ``NOTED.get()`` against its thread (``threading.get_ident()``) first.
    """
    ident, closed = threading.get_ident(), asyncio.get_running_loop().is_closed
    LOOPS[ident] = closed
    NOTED.set((ident, closed))


def forget(key: CountKey) -> None:
    """A sync call ends: drop the flight it adopted, if any (called only while any exists)."""
    flight = ADOPTED.pop(id(key), None)
    if flight is not None:
        flight[LANE].pop(flight[N], None)


class Recording(Protocol):
    """How a stopped call is recorded (``Refusals.cancel``): returns the error it raises."""

    def __call__(
        self,
        name: str,
        scope: Scope,
        ks: KillSwitch,
        ran_for: float,
        tool_call_id: str | None,
        span_name: str | None,
        model: str | None,
    ) -> PolicyViolationError: ...


class InFlight:
    """The calls in flight of one guard, by lane; stops those a kill applies to."""

    def __init__(
        self,
        index: KillIndex,
        record: Recording,
        failed: Callable[[CountKey], None],
        *,
        labels: Mapping[str, str] | None = None,
    ) -> None:
        self.index = index
        self.labels: Mapping[str, str] = labels or {}  # the guard's, for selector kills
        self._record = record
        self._failed = failed  # counts a call whose body raised (Guard.count_failure)
        self._lanes: dict[CountKey, Lane] = {}
        self._by_target: dict[tuple[str, str], list[Lane]] = {}
        self._lock = threading.Lock()  # adding a lane (once per action and scope)
        index.watch(self.stop)

    def close(self) -> None:
        self.index.unwatch(self.stop)

    def lane(self, key: CountKey) -> Lane:
        """The lane of an (action, scope), made and indexed by target on first use."""
        lane = self._lanes.get(key)
        if lane is not None:
            return lane
        with self._lock:
            lane = self._lanes.get(key)
            if lane is None:
                lane = {}
                name, scope = key
                targets = [("tool", name)]
                targets += [
                    (field.removesuffix("_id"), value)
                    for field, value in zip(Scope._fields, scope, strict=True)
                    if value
                ]
                for target in targets:
                    self._by_target.setdefault(target, []).append(lane)
                self._lanes[key] = lane
        return lane

    def running(self) -> list[Flight]:
        """Every registered call in flight."""
        with self._lock:
            lanes = list(self._lanes.values())
        return [flight for lane in lanes for flight in tuple(lane.values())]

    # -- a kill arrives ----------------------------------------------------------------------

    def stop(self, kills: Iterable[KillSwitch]) -> int:
        """Stop every registered call a kill applies to; return how many were stopped.

        Called by the index, in the thread that applied the kills, after applying them.
        """
        kills = list(kills)
        stopped = 0
        for ks in kills:
            if ks.target_type == "organization":  # the organization-wide stop: every call
                with self._lock:
                    lanes = list(self._lanes.values())
            elif ks.target_type == "selector":  # the calls it selects, with this guard's labels
                with self._lock:
                    keyed = list(self._lanes.items())
                selector = _selector(ks, self.labels)
                lanes = [
                    lane
                    for (name, scope), lane in keyed
                    if selector is not None and selector.selects(self.labels, name, scope)
                ]
            else:
                lanes = self._by_target.get((ks.target_type, ks.target_id)) or []
            if not lanes:
                continue
            for lane in tuple(lanes):
                for flight in tuple(lane.values()):  # a copy made in C: atomic under the GIL
                    stopped += mark(flight, ks)
        applied = _now()
        for ident, closed in tuple(LOOPS.items()):
            if closed():
                if LOOPS.get(ident) is closed:  # its thread notes its next loop when it runs one
                    LOOPS.pop(ident, None)
                continue
            loop = closed.__self__  # type: ignore[attr-defined]
            try:
                loop.call_soon_threadsafe(self.sweep, kills, applied)
            except RuntimeError:  # closed meanwhile
                pass
        return stopped

    def sweep(self, kills: list[KillSwitch], applied: float) -> int:
        """On an event loop: cancel the tasks awaiting inside a plain call of this guard that
        ``kills`` (applied at ``applied``) apply to, adopting the call's flight; return how
        many calls were stopped. A call begun since is left alone: it was admitted after a
        revive, or it would not be running."""
        stopped = 0
        for task in asyncio.all_tasks():
            hit = False
            for frame in _awaiting(task):
                if id(frame.f_code) not in _CARRIERS:
                    continue
                local = frame.f_locals
                key = local.get("key")
                if "flight" in local or key is None or not local.get("cancel"):
                    continue  # a registered flight (its lane stops it), or one that opted out
                guard = local.get("guard")
                if guard is None or guard.in_flight is not self or local["started"] > applied:
                    continue
                ks = _applying(kills, key, self.labels)
                if ks is None:
                    continue
                flight = self.adopt(key, local["started"], True, local.get("tool_call_id"))
                flight[TASK] = task
                if mark(flight, ks):
                    stopped += 1
                    hit = True
            cancelling = getattr(task, "cancelling", None)
            if hit and not (cancelling is not None and cancelling()):
                task.cancel(KILLED)
        return stopped

    def recheck(self, flight: Flight) -> None:
        """A call registered after the index changed: stop it if a kill came in between."""
        ks = self.blocking(flight[KEY])
        if ks is not None and mark(flight, ks):
            flight[LANE].pop(flight[N], None)
            raise self.cancellation(flight)

    def adopt(
        self, key: CountKey, started: float, cancel: object, tool_call_id: str | None
    ) -> Flight:
        """The flight of a plain call admitted without one (see the module's docstring)."""
        flight = ADOPTED.get(id(key))
        if flight is not None and flight[KEY] is key:
            return flight
        home = self.lane(key) if cancel else None
        flight = [self, key, started, -1, None, None, None, NOWHERE, id(key), None, None, home,
                  tool_call_id, None, None]  # fmt: skip
        ADOPTED[id(key)] = flight
        return flight

    def finish_adopted(self, key: CountKey, exc: BaseException) -> BaseException:
        """``finish`` for a plain call: through the flight it adopted, if it did."""
        flight = ADOPTED.get(id(key))
        if flight is not None and flight[KEY] is key:
            return self.finish(flight, exc)
        if isinstance(exc, Exception):
            self._failed(key)
        return exc

    def register(self, flight: Flight) -> None:
        """Register an adopted flight (its sync call asked for its token or added a hook);
        one a kill applies to already is stopped at once."""
        home = flight[HOME]
        if home is None or flight[LANE] is not NOWHERE:
            return  # opted out, or registered already
        flight[LANE] = home
        home[flight[N]] = flight
        ks = self.blocking(flight[KEY])  # a kill applied before it was registered
        if ks is not None:
            mark(flight, ks)

    def blocking(self, key: CountKey) -> KillSwitch | None:
        """The active kill that applies to calls of ``key``, if any."""
        index = self.index
        name, scope = key
        return (
            index.blocking(scope)
            or index.get("tool", name)
            or next(
                (
                    ks
                    for ks in tuple(index.selector.values())
                    if (selector := _selector(ks, self.labels)) is not None
                    and selector.selects(self.labels, name, scope)
                ),
                None,
            )
        )

    # -- the call's side ---------------------------------------------------------------------

    def check(self, flight: Flight) -> PolicyViolationError | None:
        """The error a call must stop with, if a kill applies to it now (``raise_if_killed``)."""
        if flight[STOPPED] is None:
            revision = self.index.revision
            if flight[REVISION] == revision:
                return None
            ks = self.blocking(flight[KEY])
            if ks is None:
                flight[REVISION] = revision  # clear at this revision: the next check is cheap
                return None
            mark(flight, ks)
        return self.cancellation(flight)

    def cancellation(self, flight: Flight) -> PolicyViolationError:
        """The stopped call's ``PolicyViolationError``, recorded (CANCELLED) the first time."""
        error = flight[ERROR]
        if error is not None:
            return error  # type: ignore[no-any-return]
        with _make_lock:
            error = flight[ERROR]
            if error is None:
                name, scope = flight[KEY]
                error = self._record(
                    name,
                    scope,
                    flight[STOPPED],
                    _now() - flight[STARTED],
                    flight[TOOL_CALL_ID],
                    flight[SPAN_NAME],
                    flight[MODEL],
                )
                flight[ERROR] = error
        return error  # type: ignore[no-any-return]

    def finish(self, flight: Flight, exc: BaseException) -> BaseException:
        """What a call whose body raised ``exc`` raises: the call's ``PolicyViolationError``
        if a kill stopped it, else ``exc`` (counted as failed if it is an ``Exception``)."""
        if flight[STOPPED] is not None:
            error = self.ended(flight, exc)
            if error is not None:
                return error
        if isinstance(exc, Exception):
            self._failed(flight[KEY])
        return exc

    def ended(self, flight: Flight, exc: BaseException) -> BaseException | None:
        """What a stopped call whose body raised ``exc`` raises instead; None: ``exc`` itself.

        The kill's ``CancelledError`` becomes the call's ``PolicyViolationError``; so does any
        other exception (the kill made it: a transport's aborted read, say). A refusal or
        cancellation of a call nested in this one is raised as it is, this call recorded as
        cancelled too. A cancel from outside (also) under way stays a ``CancelledError``.
        """
        if isinstance(exc, asyncio.CancelledError):
            if not _killed_by_us(exc):
                return None
            task = flight[TASK] or _running_task()
            if task is not None and hasattr(task, "uncancel") and task.cancelling():
                task.uncancel()  # the kill's cancel, consumed here: the task is not cancelled
                if task.cancelling():
                    return None  # someone else cancelled it too: theirs wins
            return self.cancellation(flight)
        if not isinstance(exc, Exception):
            return None  # KeyboardInterrupt, SystemExit, GeneratorExit
        error = self.cancellation(flight)
        return exc if isinstance(exc, PolicyViolationError) else error


def _selector(ks: KillSwitch, labels: Mapping[str, str]) -> Selector | None:
    """The selector of a selector kill if it selects these labels."""
    try:
        selector = Selector.of(ks.target_id)
    except InvalidInputError:
        return None
    return selector if selector.selects_labels(labels) else None


def _applying(
    kills: list[KillSwitch], key: CountKey, labels: Mapping[str, str] | None = None
) -> KillSwitch | None:
    """The first of ``kills`` that applies to calls of ``key`` (of a guard with ``labels``)."""
    name, scope = key
    for ks in kills:
        kind, target = ks.target_type, ks.target_id
        if kind == "organization":
            return ks
        if kind == "selector":
            selector = _selector(ks, labels or {})
            if selector is not None and selector.selects(labels or {}, name, scope):
                return ks
            continue
        if kind == "tool":
            if target == name:
                return ks
        elif kind in _SCOPED and getattr(scope, f"{kind}_id") == target:
            return ks
    return None


_SCOPED = ("agent", "run", "mission")
# Awaitables that hide the coroutine or generator they drive (an ``async for`` waits on an
# ``async_generator_asend``): the walk below steps through them to what they reference.
_OPAQUE = ("async_generator_asend", "async_generator_athrow", "coroutine_wrapper")


def _awaiting(task: asyncio.Task[Any]) -> Iterator[Any]:
    """The frames of the coroutines (and generators) a suspended task is awaiting, outermost
    first: what ``task.get_stack()`` would give if it followed ``await`` down."""
    obj: Any = task.get_coro()
    for _ in range(1000):  # a chain deeper than this is not a real program's
        if obj is None:
            return
        frame = getattr(obj, "cr_frame", None) or getattr(obj, "ag_frame", None)
        frame = frame or getattr(obj, "gi_frame", None)
        if frame is not None:
            yield frame
        following = (
            getattr(obj, "cr_await", None)
            or getattr(obj, "ag_await", None)
            or getattr(obj, "gi_yieldfrom", None)
        )
        if following is None and type(obj).__name__ in _OPAQUE:
            following = next(
                (
                    r
                    for r in gc.get_referents(obj)
                    if hasattr(r, "ag_frame") or hasattr(r, "cr_frame")
                ),
                None,
            )
        obj = following


def _drives(obj: object) -> bool:
    """Whether ``obj`` is a coroutine or an async generator (what an opaque awaitable drives)."""
    return hasattr(obj, "cr_frame") or hasattr(obj, "ag_frame")


def _running_task() -> asyncio.Task[Any] | None:
    try:
        return asyncio.current_task()
    except RuntimeError:  # no running loop
        return None


def _killed_by_us(exc: BaseException) -> bool:
    return bool(exc.args) and exc.args[0] == KILLED


def mark(flight: Flight, ks: KillSwitch) -> int:
    """Stop one flight for ``ks``: set its token, cancel its task, run its hooks (1 if newly)."""
    if flight[STOPPED] is not None:
        return 0
    flight[STOPPED] = ks  # first: whoever makes the token or takes the task next sees it
    event = flight[EVENT]
    if event is not None:
        event.set()
    task = flight[TASK]
    if task is not None:
        try:
            task.get_loop().call_soon_threadsafe(_cancel, flight, task)
        except RuntimeError:  # its loop is closed: nothing left to cancel
            pass
    for hook in flight[HOOKS] or ():
        try:
            hook()
        except Exception:  # a transport's abort must not break applying the kill
            logger.exception("agentguard: a cancellation hook failed")
    return 1


def _cancel(flight: Flight, task: asyncio.Task[Any]) -> None:
    """On the task's loop: cancel it if it is still running the stopped call."""
    if task.done() or flight[TASK] is not task or flight[LANE].get(flight[N]) is not flight:
        return  # the call ended, or its stream is between items (it refuses at the next)
    cancelling = getattr(task, "cancelling", None)
    if cancelling is not None and cancelling():
        return  # already being cancelled (by another kill, or from outside)
    task.cancel(KILLED)


def begin_stream(flight: Flight, task: asyncio.Task[Any] | None) -> None:
    """An async stream is about to wait for its next item in ``task``: a kill cancels it."""
    flight[TASK] = task
    if flight[STOPPED] is not None:
        flight[TASK] = None
        raise flight[OWNER].cancellation(flight)


def current_call() -> Call | None:
    """The guarded call running here (in this thread or task, and what it calls); ``None``
    outside one. Pass it to worker threads the call hands work to."""
    flight = running_flight()
    return None if flight is None else Call(flight)


class Call:
    """A guarded call in flight: what ``agentguard.current_call()`` returns.

    ``cancelled`` is a ``threading.Event`` set when a kill stops the call; sync code and the
    threads it hands work to can wait on it or poll it. ``raise_if_cancelled()`` raises the
    call's ``PolicyViolationError`` once it is set (recording the cancellation).
    """

    __slots__ = ("_flight",)

    def __init__(self, flight: Flight) -> None:
        self._flight = flight

    @property
    def action(self) -> str:
        return str(self._flight[KEY][0])

    @property
    def scope(self) -> Scope:
        """The call's ids, with the guard's defaults."""
        scope: Scope = self._flight[KEY][1]
        return scope

    @property
    def started(self) -> float:
        """When the call was admitted (``time.monotonic()``)."""
        return float(self._flight[STARTED])

    @property
    def cancellable(self) -> bool:
        """False for an action decorated with ``cancel_in_flight=False``."""
        return self._flight[HOME] is not None

    @property
    def stopped_by(self) -> KillSwitch | None:
        """The kill that stopped the call, once one did."""
        ks: KillSwitch | None = self._flight[STOPPED]
        return ks

    @property
    def cancelled(self) -> threading.Event:
        """Set when a kill stops the call (never, for a call that opted out)."""
        flight = self._flight
        event: threading.Event | None = flight[EVENT]
        if event is None:
            with _make_lock:
                event = flight[EVENT]
                if event is None:
                    event = flight[EVENT] = threading.Event()
            flight[OWNER].register(flight)
            if flight[STOPPED] is not None:  # the kill came before the token: set it now
                event.set()
        return event

    def raise_if_cancelled(self) -> None:
        """Raise the call's ``PolicyViolationError`` if a kill has stopped it."""
        flight = self._flight
        if flight[STOPPED] is not None:
            raise flight[OWNER].cancellation(flight)

    def on_cancel(self, hook: Callable[[], object]) -> None:
        """Run ``hook()`` when a kill stops the call (at once if one has): a transport's way to
        abort blocking I/O. It runs in the thread applying the kill and must not block."""
        flight = self._flight
        hooks: list[Callable[[], object]] | None = flight[HOOKS]
        if hooks is None:
            hooks = flight[HOOKS] = []
        hooks.append(hook)
        flight[OWNER].register(flight)
        if flight[STOPPED] is not None:  # hooks should be idempotent: the kill may run it too
            hook()

    def stream_wait(self, task: asyncio.Task[Any] | None) -> None:
        """An async stream of this call waits for its next item in ``task``: a kill now cancels
        the task (raises at once if one already stopped the call). ``stream_idle()`` after."""
        begin_stream(self._flight, task)

    def stream_idle(self) -> None:
        """The stream has its item: a kill now stops it at the next one instead."""
        self._flight[TASK] = None

    def finish(self, exc: BaseException) -> BaseException:
        """What the call raises, its body having raised ``exc`` (see ``Guard.finish``)."""
        flight = self._flight
        return flight[OWNER].finish(flight, exc)  # type: ignore[no-any-return]

    def end(self) -> None:
        """The call is over: no kill stops it any more (idempotent)."""
        flight = self._flight
        flight[TASK] = None
        flight[LANE].pop(flight[N], None)
        flight[HOME] = None  # nothing registers it again

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Call) and other._flight is self._flight

    def __hash__(self) -> int:
        return id(self._flight)

    def __repr__(self) -> str:
        state = "stopped" if self._flight[STOPPED] is not None else "running"
        return f"<Call {self.action!r} {state} for {time.monotonic() - self.started:.3f} s>"
