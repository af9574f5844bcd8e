"""The agent / run / mission a guarded call runs under, carried on contextvars."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING, Any, NamedTuple, TypedDict

from .targets import validate_id

if TYPE_CHECKING:
    from typing import Unpack


class Scope(NamedTuple):
    """The ids a guarded call runs under; ``None`` where unset."""

    agent_id: str | None = None
    run_id: str | None = None
    mission_id: str | None = None


EMPTY_SCOPE = Scope()
ID_FIELDS = Scope._fields


class Ids(TypedDict, total=False):
    """The scope ids a guard, decorator, check or heartbeat takes as keyword arguments."""

    agent_id: str | None
    run_id: str | None
    mission_id: str | None


def scope_of(ids: Mapping[str, object], where: str, *, validate: bool = True) -> Scope:
    """The ``Scope`` of keyword ids, each validated; ``where`` names the callee of a bad keyword.

    ``validate=False`` is for ids a framework hands to ``enforce``: the call is still checked,
    and a record the server refuses costs that one record, not the agent's call.
    """
    for field in ids:
        if field not in ID_FIELDS:
            raise TypeError(f"{where}() got an unexpected keyword argument {field!r}")
    scope = Scope(*(ids.get(field) for field in ID_FIELDS))  # type: ignore[arg-type]
    return _validated(scope) if validate else scope


def _validated(ids: Scope) -> Scope:
    for field, value in zip(ID_FIELDS, ids, strict=True):
        if value is not None:
            validate_id(field, value)
    return ids


# One variable holding a tuple: a guarded call reads its whole scope with a single ``get``.
# Read it anywhere; set it only through ``scope()`` or ``enter_scope()``.
CURRENT_SCOPE: ContextVar[Scope] = ContextVar("agentguard_scope", default=EMPTY_SCOPE)


# The last refusal under the innermost ``scope()``: a box shared with the threads and tasks that
# copy the context, so ``wait_until_revived()`` finds a refusal raised in any of them.
LAST_REFUSAL: ContextVar[list[Any] | None] = ContextVar("agentguard_refusals", default=None)


def current_scope() -> Scope:
    """The scope of the running context."""
    return CURRENT_SCOPE.get()


class ScopeToken(NamedTuple):
    """What ``enter_scope`` returns: the scope entered, and how to leave it."""

    scope: Scope
    scope_token: Token[Scope]
    refusals_token: Token[list[Any] | None]


def over(scope: Scope, base: Scope) -> Scope:
    """``scope``'s ids, falling back to ``base``'s where unset."""
    return Scope(
        scope.agent_id or base.agent_id,
        scope.run_id or base.run_id,
        scope.mission_id or base.mission_id,
    )


def enter_scope(
    agent_id: str | None = None, run_id: str | None = None, mission_id: str | None = None
) -> ScopeToken:
    """Enter ``scope(...)`` without a ``with`` block (middleware); leave with ``exit_scope``.

    The one place that spells the ids out: they may be given by position (``enter_scope(*s)``).
    """
    return _enter(_validated(Scope(agent_id, run_id, mission_id)))


def _enter(ids: Scope) -> ScopeToken:
    inner = over(ids, CURRENT_SCOPE.get())
    return ScopeToken(inner, CURRENT_SCOPE.set(inner), LAST_REFUSAL.set([None]))


def exit_scope(token: ScopeToken) -> None:
    """Leave the scope ``enter_scope`` entered, in the same context, restoring the outer one."""
    LAST_REFUSAL.reset(token.refusals_token)
    CURRENT_SCOPE.reset(token.scope_token)


@contextmanager
def scope(**ids: Unpack[Ids]) -> Iterator[Scope]:
    """Run the block under these ids; unset ids are inherited from the enclosing scope."""
    token = _enter(scope_of(ids, "scope"))
    try:
        yield token.scope
    finally:
        exit_scope(token)
