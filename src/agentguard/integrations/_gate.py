"""The gate every integration shares; an adapter is this gate plus its framework's hook.

Usage (an adapter for a framework whose tools have ``name`` and ``call(args)``)::

    try:
        from someframework import Tool
    except ImportError as exc:
        raise missing("someframework", "SomeFramework", "someframework") from exc

    class GuardedTool(wrapt.BaseObjectProxy):
        def __init__(self, tool, gate):
            super().__init__(tool)
            self._self_gate = gate

        async def call(self, args):
            return await self._self_gate.arun(
                self.name, lambda: self.__wrapped__.call(args), arguments=args,
                answer=refusal_text,   # what the model gets when on_block="message"
            )

The gate resolves the guard at call time, takes the call's ids (fixed on the adapter, then
``agentguard.scope()``, then what the framework knows), refuses before the body runs, counts
a body that raises as failed, and answers a refusal as ``on_block`` says. A kill that comes
while the body runs stops it (see :mod:`agentguard.inflight`): ``arun`` cancels the task at its
next ``await``, ``run`` sets the call's token (``agentguard.current_call().cancelled``); the
call then ends with its ``PolicyViolationError``, answered as ``on_block`` says too
(``cancel_in_flight=False`` lets it run to its end). Async paths admit with
``Guard.begin_async``, so a strict guard's per-call check never blocks the event loop.

A transport or stream whose work outlives one call of a body (a response read after it is
returned) takes a ``Call`` from ``begin``/``abegin`` and ends it itself: per item
``raise_if_cancelled()``, ``stream_wait(task)``/``stream_idle()`` around an async read,
``on_cancel(hook)`` to abort blocking I/O, ``finish(exc)`` for what a read raised, and
``end()`` once the stream is closed (see ``integrations/httpx.py``).
Undo comes with every guard: a proxy keeps the original (``__wrapped__``), ``install_once``/
``uninstall_all`` manage a framework's hook list, ``Patches`` patches attributes in place.
A new adapter's tests subclass ``tests/integrations/integration_contract.py``.
"""

from __future__ import annotations

import asyncio
import importlib
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal, NamedTuple, TypeVar, Unpack, cast

import wrapt

from ..errors import InvalidInputError, PolicyViolationError
from ..guard import Guard, get_guard
from ..inflight import ADOPTED, NOTED, Call, carries_flight, forget, note_loop
from ..scope import (
    EMPTY_SCOPE,
    Ids,
    Scope,
    ScopeToken,
    current_scope,
    enter_scope,
    exit_scope,
    over,
    scope_of,
)

R = TypeVar("R")
_now = time.monotonic
T = TypeVar("T")
OnBlock = Literal["raise", "message"]


def missing(module: str, framework: str, extra: str) -> ImportError:
    """The error an integration raises when its framework is not installed."""
    return ImportError(
        f'agentguard.integrations.{module} needs {framework}: pip install "agentguard[{extra}]"'
    )


def check_on_block(on_block: object) -> OnBlock:
    """``on_block`` itself, or ``InvalidInputError`` naming it."""
    if on_block != "raise" and on_block != "message":
        raise InvalidInputError("on_block", f"must be 'raise' or 'message'; got {on_block!r}")
    return on_block


def refusal_text(error: PolicyViolationError) -> str:
    """What a model is told instead of a refused tool's output (``on_block="message"``)."""
    return f"Error: {error}"


class Admitted(NamedTuple):
    """An admitted call: ``failed()`` counts it as failed when its body raises."""

    guard: Guard
    key: tuple[str, Scope]

    def failed(self) -> None:
        self.guard.count_failure(self.key)


class Gate:
    """One adapter's guard, fixed ids, ``on_block`` and ``cancel_in_flight``: checks and runs
    its calls."""

    __slots__ = ("guard", "fixed", "on_block", "cancel_in_flight")

    def __init__(
        self,
        guard: Guard | None = None,
        *,
        on_block: OnBlock = "raise",
        cancel_in_flight: bool = True,
        where: str = "Gate",
        **ids: Unpack[Ids],
    ) -> None:
        """``where`` is the public callable a misspelt id keyword is reported against."""
        self.guard = guard  # None: the configured default, looked up at each call
        self.on_block = check_on_block(on_block)
        if not isinstance(cancel_in_flight, bool):
            raise InvalidInputError(
                "cancel_in_flight", f"must be True or False; got {cancel_in_flight!r}"
            )
        self.cancel_in_flight = cancel_in_flight
        self.fixed = scope_of(ids, where)

    def resolve(self) -> Guard:
        return self.guard or get_guard()

    def scope(self, found: Scope = EMPTY_SCOPE) -> Scope:
        """The call's ids: fixed on the adapter, then ``agentguard.scope()``, then ``found``
        (the framework's: a run's thread id, an agent's name)."""
        return over(self.fixed, over(current_scope(), found))

    def check(
        self,
        name: str,
        found: Scope = EMPTY_SCOPE,
        *,
        tool_call_id: str | None = None,
        arguments: Any = None,
        span_name: str | None = None,
    ) -> Admitted:
        """Admit the call or raise ``PolicyViolationError`` (whatever ``on_block`` says)."""
        guard = self.resolve()
        scope = self.scope(found)
        return Admitted(guard, guard.admit(name, scope, arguments, None, tool_call_id, span_name))

    async def acheck(
        self,
        name: str,
        found: Scope = EMPTY_SCOPE,
        *,
        tool_call_id: str | None = None,
        arguments: Any = None,
        span_name: str | None = None,
    ) -> Admitted:
        """``check`` for asyncio code: a strict guard asks its server off the event loop."""
        guard = self.resolve()
        scope = self.scope(found)
        key = await guard.admit_async(name, scope, arguments, None, tool_call_id, span_name)
        return Admitted(guard, key)

    def begin(
        self,
        name: str,
        found: Scope = EMPTY_SCOPE,
        *,
        tool_call_id: str | None = None,
        arguments: Any = None,
    ) -> Call:
        """Admit a call whose end the caller marks (``Call.end()``), registered in flight at
        once: a transport's or a stream's. Raises ``PolicyViolationError`` if refused."""
        guard = self.resolve()
        cancel = self.cancel_in_flight
        scope = self.scope(found)
        flight = guard.begin(name, scope, arguments, None, tool_call_id, None, None, None, cancel)
        return Call(flight)

    async def abegin(
        self,
        name: str,
        found: Scope = EMPTY_SCOPE,
        *,
        tool_call_id: str | None = None,
        arguments: Any = None,
    ) -> Call:
        """``begin`` for asyncio code; a kill cancels this task while it waits in the call."""
        guard = self.resolve()
        cancel = self.cancel_in_flight
        task = asyncio.current_task() if cancel else None
        scope = self.scope(found)
        flight = await guard.begin_async(
            name, scope, arguments, None, tool_call_id, None, None, task, cancel
        )
        return Call(flight)

    @carries_flight
    def run(
        self,
        name: str,
        body: Callable[[], R],
        found: Scope = EMPTY_SCOPE,
        *,
        tool_call_id: str | None = None,
        arguments: Any = None,
        answer: Callable[[PolicyViolationError], R] | None = None,
        failed: Callable[[R], bool] | None = None,
    ) -> R:
        """Check, then run ``body``; a refusal, or a kill while it runs, is raised or
        ``answer``-ed as ``on_block`` says.

        ``failed`` tells a result the framework made of a failure (an error result) from a
        success, so both count alike with a body that raised.
        """
        guard = self.resolve()
        cancel = self.cancel_in_flight  # noqa: F841 - with started, read by current_call()
        started = _now()  # noqa: F841
        try:
            key = guard.admit(name, self.scope(found), arguments, None, tool_call_id)
        except PolicyViolationError as refusal:
            return self.refused(refusal, answer)
        try:
            result = body()
        except BaseException as exc:
            error = guard.finish_admitted(key, exc)
            if isinstance(error, PolicyViolationError) and error.cancelled:
                return self.refused(error, answer)  # stopped by a kill while it ran
            if error is exc:
                raise
            raise error from exc
        finally:
            if ADOPTED:
                forget(key)
        if failed is not None and failed(result):
            guard.count_failure(key)
        return result

    @carries_flight
    async def arun(
        self,
        name: str,
        body: Callable[[], Awaitable[R]],
        found: Scope = EMPTY_SCOPE,
        *,
        tool_call_id: str | None = None,
        arguments: Any = None,
        answer: Callable[[PolicyViolationError], R] | None = None,
        failed: Callable[[R], bool] | None = None,
    ) -> R:
        """``run`` for asyncio code: a kill while ``body`` runs cancels it at its next
        ``await``."""
        guard = self.resolve()
        cancel = self.cancel_in_flight  # with started, read by current_call() and a kill
        started = _now()  # noqa: F841
        if cancel:
            noted = NOTED.get()
            if noted is None or noted[0] != threading.get_ident():
                note_loop()
        try:
            key = await guard.admit_async(name, self.scope(found), arguments, None, tool_call_id)
        except PolicyViolationError as refusal:
            return self.refused(refusal, answer)
        try:
            result = await body()
        except BaseException as exc:
            error = guard.finish_admitted(key, exc)
            if isinstance(error, PolicyViolationError) and error.cancelled:
                return self.refused(error, answer)  # stopped by a kill while it ran
            if error is exc:
                raise
            raise error from exc
        finally:
            if ADOPTED:
                forget(key)
        if failed is not None and failed(result):
            guard.count_failure(key)
        return result

    def refused(
        self, error: PolicyViolationError, answer: Callable[[PolicyViolationError], R] | None
    ) -> R:
        """``on_block``: the adapter's answer to the model, or the error raised."""
        if answer is not None and self.on_block == "message":
            return answer(error)
        raise error


def enter(ids: Scope) -> ScopeToken | None:
    """Enter the ids a request carries as ``agentguard.scope`` for its handling (``None``: no
    ids, nothing entered); ``leave`` with the token. Raises ``InvalidInputError`` for bad ids."""
    return None if ids == EMPTY_SCOPE else enter_scope(*ids)


def leave(token: ScopeToken | None) -> None:
    if token is not None:
        exit_scope(token)


def install_once(chain: list[Any], kind: type[T], make: Callable[[], T]) -> T:
    """Add ``make()`` to a framework's hook list unless a ``kind`` is there; return the one
    that is."""
    for existing in chain:
        if isinstance(existing, kind):
            return existing
    made = make()
    chain.append(made)
    return made


def uninstall_all(chain: list[Any], kind: type) -> bool:
    """Remove every ``kind`` from a framework's hook list; return whether there was one."""
    kept = [hook for hook in chain if not isinstance(hook, kind)]
    if len(kept) == len(chain):
        return False
    chain[:] = kept
    return True


class Patches:
    """Idempotent, reversible ``wrapt`` patches of attributes, by ``"module:attr.path"``."""

    def __init__(self) -> None:
        self._installed: dict[str, Any] = {}  # target -> the wrapper wrapt installed
        self._lock = threading.Lock()

    def apply(self, target: str, factory: Callable[[Any], Any]) -> Any:
        """Replace the target with ``factory(original)``; again, the same wrapper comes back."""
        module, path = _split(target)
        with self._lock:
            installed = self._installed.get(target)
            if installed is not None and _is_current(module, path, installed):
                return installed
            wrapper = wrapt.wrap_object(module, path, cast(Any, factory))
            self._installed[target] = wrapper
            return wrapper

    def undo(self, target: str) -> bool:
        """Put the original back; return whether anything was removed."""
        with self._lock:
            wrapper = self._installed.pop(target, None)
            if wrapper is None:
                return False
            module, path = _split(target)
            return wrapt.unwrap_object(module, path, wrapper, missing_ok=True) is not None

    def targets(self) -> list[str]:
        with self._lock:
            return sorted(self._installed)


def _split(target: str) -> tuple[Any, str]:
    module_name, sep, path = target.partition(":")
    if not sep or not module_name or not path:
        raise InvalidInputError(
            "target",
            f"must look like 'package.module:function' or 'package.module:Class.method'; "
            f"got {target!r}",
        )
    return importlib.import_module(module_name), path


def _is_current(module: Any, path: str, wrapper: Any) -> bool:
    try:
        return bool(wrapt.is_wrapped_by(wrapt.resolve_path(module, path)[2], wrapper))
    except wrapt.PathResolutionError:
        return False
