"""``guarded_action``: wrap a callable so every call is checked against the kill state.

The decorated object is a wrapt object proxy, so name, docstring, ``inspect.signature`` and
``isinstance`` behave as for the original; methods, classmethods and staticmethods bind as
theirs do. What a call runs (sync, async, generator, async generator) is chosen once, at
decoration time.

Why not ``wrapt.FunctionWrapper`` with a ``(wrapped, instance, args, kwargs)`` wrapper: its
dispatch costs about 0.55 µs per call (its binding check looks up ``__self__`` on a plain
function, which raises and catches inside), and binding a method on each attribute access
another 0.35 µs, against a budget of 0.7 µs for the whole allowed path. So each decoration
gets its own proxy subclass whose ``__call__`` is the kind's function, closing over the action
(an attribute read on a proxy costs about 80 ns), and whose ``__get__`` binds a method as
Python binds a function, with ``types.MethodType``. See benchmarks/RESULTS.md.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from collections.abc import AsyncGenerator, Callable, Generator, Mapping
from types import MethodType
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, overload

import wrapt

from .errors import GuardNotConfiguredError, InvalidInputError
from .inflight import (
    ADOPTED,
    LANE,
    NOTED,
    OWNER,
    STOPPED,
    TASK,
    Flight,
    N,
    carries_flight,
    forget,
    note_loop,
)
from .scope import CURRENT_SCOPE, EMPTY_SCOPE, Ids, Scope, over, scope_of
from .tally import CountKey
from .targets import validate_id
from .telemetry import Method

if TYPE_CHECKING:
    from typing import Unpack

F = TypeVar("F", bound=Callable[..., Any])


class Admitting(Protocol):
    """What a guarded action calls on its guard (``Guard``'s extension API)."""

    strict: bool

    def admit(
        self,
        name: str,
        scope: Scope,
        args: Any = None,
        kwargs: Any = None,
        tool_call_id: str | None = None,
        span_name: str | None = None,
        fn: Any = None,
    ) -> CountKey: ...

    async def admit_async(
        self,
        name: str,
        scope: Scope,
        args: Any = None,
        kwargs: Any = None,
        tool_call_id: str | None = None,
        span_name: str | None = None,
        fn: Any = None,
    ) -> CountKey: ...

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
    ) -> Flight: ...

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
    ) -> Flight: ...

    def finish(self, flight: Flight, exc: BaseException) -> BaseException: ...

    def finish_admitted(self, key: CountKey, exc: BaseException) -> BaseException: ...

    def count_failure(self, key: CountKey) -> None: ...


_current_task = asyncio.current_task
_now = time.monotonic
_thread = threading.get_ident

# The guard ``agentguard.configure`` set (it lives in guard.py, where Guard is), read on every
# call of a module-level ``@agentguard.guarded_action``.
configured: list[Admitting | None] = [None]


def configured_guard() -> Admitting:
    """The configured guard; raises ``GuardNotConfiguredError`` if there is none."""
    guard = configured[0]
    if guard is None:
        raise GuardNotConfiguredError(
            "no agentguard Guard is configured: call agentguard.configure(Guard(...)) before "
            "running a function decorated with @agentguard.guarded_action, or decorate it with "
            "@guard.guarded_action"
        )
    return guard


def validate_options(
    name: Any, ids: Mapping[str, object], cancel_in_flight: object = True
) -> Scope:
    """The decorator's fixed ids; raises ``InvalidInputError`` naming an option that is no id."""
    if name is not None:
        validate_id("name", name)
    if not isinstance(cancel_in_flight, bool):
        raise InvalidInputError(
            "cancel_in_flight", f"must be True or False; got {cancel_in_flight!r}"
        )
    return scope_of(ids, "guarded_action")


class Action:
    """What one decorated callable is: its action name, fixed scope ids, guard, and whether a
    kill stops its calls in flight."""

    __slots__ = ("name", "guard", "ids", "cancel", "_last")

    def __init__(self, name: str, guard: Admitting | None, ids: Scope, cancel: bool) -> None:
        self.name = name
        self.guard = guard
        self.ids = ids
        self.cancel = cancel
        self._last = (EMPTY_SCOPE, ids)  # (context scope, merged), by identity: see scope()

    def scope(self) -> Scope:
        """The scope of a call now: ids fixed on the decorator win over the context's."""
        context = CURRENT_SCOPE.get()
        last = self._last  # one tuple, read and written whole: safe across threads
        if last[0] is context:
            return last[1]
        merged = over(self.ids, context)
        self._last = (context, merged)
        return merged

    def scope_now(self) -> Callable[[], Scope]:
        """How a call reads its scope: the context's alone when no id is fixed."""
        return self.scope if any(self.ids) else CURRENT_SCOPE.get


class GuardedAction(wrapt.BaseObjectProxy):  # type: ignore[type-arg]
    """A guarded callable; each decoration makes its own subclass (see ``wrap``)."""


# -- what a call runs, by kind: each returns the proxy's __call__ ------------------------------
#
# ``sig`` is what a refusal binds the arguments to (``Method`` when the first is the instance).
# The guard is resolved per call: ``@agentguard.guarded_action`` uses whatever is configured.
# A kill stops a call in flight (see inflight.py). Async calls and generators are registered
# (``Guard.begin``; their local ``flight`` is the running call, see ``carries_flight``); a sync
# call keeps ``guard``, ``key``, ``started`` and ``cancel`` in locals and gets a flight only if
# it asks. What a body raises goes through ``Guard.finish`` (``finish_admitted``), which turns
# a kill's stop into the call's PolicyViolationError.


def _sync(action: Action, target: Any, sig: Any) -> Callable[..., Any]:
    name, fixed, scope_now, cancels = action.name, action.guard, action.scope_now(), action.cancel

    @carries_flight
    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        guard = fixed or configured[0] or configured_guard()
        started = _now()  # noqa: F841 - with cancel, read from this frame by current_call()
        cancel = cancels  # noqa: F841
        key = guard.admit(name, scope_now(), args, kwargs, None, None, sig)
        try:
            return target(*args, **kwargs)
        except BaseException as exc:
            error = guard.finish_admitted(key, exc)
            if error is exc:
                raise
            raise error from exc
        finally:
            if ADOPTED:
                forget(key)

    return call


def _async(action: Action, target: Any, sig: Any) -> Callable[..., Any]:
    name, fixed, scope_now, cancels = action.name, action.guard, action.scope_now(), action.cancel

    @carries_flight
    async def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        guard = fixed or configured[0] or configured_guard()
        started = _now()  # noqa: F841 - with cancel, read from this frame (see inflight.py)
        cancel = cancels
        if cancel:  # a kill sweeps the loops guarded coroutines run on
            noted = NOTED.get()
            if noted is None or noted[0] != _thread():
                note_loop()
        key = (  # inline unless strict: no extra coroutine on the hot path
            await guard.admit_async(name, scope_now(), args, kwargs, None, None, sig)
            if guard.strict
            else guard.admit(name, scope_now(), args, kwargs, None, None, sig)
        )
        try:
            return await target(*args, **kwargs)
        except BaseException as exc:
            error = guard.finish_admitted(key, exc)
            if error is exc:
                raise
            raise error from exc
        finally:
            if ADOPTED:
                forget(key)

    return call


def _generator(action: Action, target: Any, sig: Any) -> Callable[..., Any]:
    name, fixed, scope_now, cancel = action.name, action.guard, action.scope_now(), action.cancel

    @carries_flight
    def call(self: Any, *args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
        guard = fixed or configured[0] or configured_guard()
        flight = guard.begin(name, scope_now(), args, kwargs, None, None, sig, None, cancel)
        gen = target(*args, **kwargs)
        step: Callable[..., Any] = gen.__next__
        sent: Any = ()
        try:
            while True:
                value = step(*sent)
                try:
                    received = yield value
                except GeneratorExit:
                    gen.close()
                    raise
                except BaseException as exc:  # thrown in by the consumer: pass it on
                    step, sent = gen.throw, (exc,)
                    continue
                if flight[STOPPED] is not None:  # a kill came: refuse the next item
                    gen.close()
                    raise flight[OWNER].cancellation(flight)
                step, sent = (gen.__next__, ()) if received is None else (gen.send, (received,))
        except StopIteration as stop:
            return stop.value
        except BaseException as exc:
            error = guard.finish(flight, exc)
            if error is exc:
                raise
            raise error from exc
        finally:
            flight[LANE].pop(flight[N], None)

    return call


def _async_generator(action: Action, target: Any, sig: Any) -> Callable[..., Any]:
    name, fixed, scope_now, cancel = action.name, action.guard, action.scope_now(), action.cancel

    @carries_flight
    async def call(self: Any, *args: Any, **kwargs: Any) -> AsyncGenerator[Any, Any]:
        guard = fixed or configured[0] or configured_guard()
        # A strict guard asks its server in a worker thread: never block the event loop.
        flight = await guard.begin_async(
            name, scope_now(), args, kwargs, None, None, sig, None, cancel
        )
        agen = target(*args, **kwargs)
        thrown: BaseException | None = None
        received: Any = None
        try:
            while True:
                if cancel:  # a kill while the body waits cancels this task (see inflight.py)
                    flight[TASK] = _current_task()
                if flight[STOPPED] is not None and thrown is None:  # a kill came: refuse
                    flight[TASK] = None
                    await agen.aclose()
                    raise flight[OWNER].cancellation(flight)
                try:
                    if thrown is not None:
                        value = await agen.athrow(thrown)
                    elif received is None:
                        value = await agen.__anext__()
                    else:
                        value = await agen.asend(received)
                finally:
                    flight[TASK] = None
                thrown = None
                try:
                    received = yield value
                except GeneratorExit:
                    await agen.aclose()
                    raise
                except BaseException as exc:  # thrown in by the consumer: pass it on
                    thrown = exc
        except StopAsyncIteration:
            return
        except BaseException as exc:
            error = guard.finish(flight, exc)
            if error is exc:
                raise
            raise error from exc
        finally:
            flight[LANE].pop(flight[N], None)

    return call


def _kind(target: Any) -> Callable[[Action, Any, Any], Callable[..., Any]]:
    if inspect.isasyncgenfunction(target):
        return _async_generator
    if inspect.iscoroutinefunction(target):
        return _async
    if inspect.isgeneratorfunction(target):
        return _generator
    return _sync


def _binder(fn: Any, bound: Callable[[], Any]) -> Callable[..., Any] | None:
    """The proxy's ``__get__``: bind to an instance (or class) as ``fn`` would.

    ``bound()`` makes the proxy a bound call goes through: its ``__call__`` takes the instance
    (or class) first, like a function's; None where ``fn`` does not bind.
    """
    if isinstance(fn, staticmethod) or not hasattr(type(fn), "__get__"):
        return None  # staticmethods and callables that are no descriptor do not bind
    through = bound()
    if isinstance(fn, classmethod):

        def bind_class(self: Any, instance: Any, owner: Any = None) -> Any:
            return MethodType(through, owner if owner is not None else type(instance))

        return bind_class

    def bind(self: Any, instance: Any, owner: Any = None) -> Any:
        return self if instance is None else MethodType(through, instance)

    return bind


def _proxy(fn: Any, action: Action) -> GuardedAction:
    target = fn.__func__ if isinstance(fn, (classmethod, staticmethod)) else fn
    kind = _kind(target)

    def bound() -> GuardedAction:  # a refusal does not record the instance (or class)
        call = kind(action, target, Method(target))
        through: GuardedAction = type("GuardedAction", (GuardedAction,), {"__call__": call})(target)
        return through

    attributes: dict[str, Any] = {"__call__": kind(action, target, target)}
    binder = _binder(fn, bound)
    if binder is not None:
        attributes["__get__"] = binder
    proxy: GuardedAction = type("GuardedAction", (GuardedAction,), attributes)(fn)
    return proxy


def wrap(
    fn: Any,
    *,
    guard: Admitting | None = None,
    name: str | None = None,
    cancel_in_flight: bool = True,
    **ids: Unpack[Ids],
) -> Any:
    """Return ``fn`` guarded (the functional form of ``guarded_action``)."""
    fixed = validate_options(name, ids, cancel_in_flight)
    target = fn.__func__ if isinstance(fn, (classmethod, staticmethod)) else fn
    if not callable(target):
        raise InvalidInputError("fn", f"must be callable; got {type(fn).__name__}")
    if is_guarded(fn):
        raise InvalidInputError("fn", f"{name or fn.__name__!r} is already a guarded action")
    action_name = name or getattr(target, "__name__", None) or type(target).__name__
    return _proxy(fn, Action(action_name, guard, fixed, cancel_in_flight))


def is_guarded(fn: Any) -> bool:
    """Whether ``fn`` is a guarded action (or one bound to an instance or class)."""
    if isinstance(fn, MethodType):
        fn = fn.__func__
    return isinstance(fn, GuardedAction)


@overload
def guarded_action(fn: F, /) -> F: ...
@overload
def guarded_action(
    fn: None = None,
    /,
    *,
    name: str | None = None,
    cancel_in_flight: bool = True,
    **ids: Unpack[Ids],
) -> Callable[[F], F]: ...


def guarded_action(
    fn: Any = None,
    /,
    *,
    name: str | None = None,
    cancel_in_flight: bool = True,
    **ids: Unpack[Ids],
) -> Any:
    """Guard a callable with the configured default guard (resolved at call time).

    A kill stops a call already running (``cancel_in_flight=False``: it runs to its end).
    """
    if fn is not None:
        return wrap(fn, name=name, cancel_in_flight=cancel_in_flight, **ids)
    validate_options(name, ids, cancel_in_flight)
    return lambda f: wrap(f, name=name, cancel_in_flight=cancel_in_flight, **ids)
