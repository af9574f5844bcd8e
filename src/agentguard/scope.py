"""The agent / run / mission a guarded call runs under, carried on contextvars."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from typing import Any, NamedTuple

from .targets import validate_id


class Scope(NamedTuple):
    """The ids a guarded call runs under; ``None`` where unset."""

    agent_id: str | None = None
    run_id: str | None = None
    mission_id: str | None = None


EMPTY_SCOPE = Scope()

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


def enter_scope(
    agent_id: str | None = None, run_id: str | None = None, mission_id: str | None = None
) -> ScopeToken:
    """Enter ``scope(...)`` without a ``with`` block (middleware); leave with ``exit_scope``."""
    for field, value in (("agent_id", agent_id), ("run_id", run_id), ("mission_id", mission_id)):
        if value is not None:
            validate_id(field, value)
    outer = CURRENT_SCOPE.get()
    inner = Scope(
        agent_id if agent_id is not None else outer.agent_id,
        run_id if run_id is not None else outer.run_id,
        mission_id if mission_id is not None else outer.mission_id,
    )
    return ScopeToken(inner, CURRENT_SCOPE.set(inner), LAST_REFUSAL.set([None]))


def exit_scope(token: ScopeToken) -> None:
    """Leave the scope ``enter_scope`` entered, in the same context, restoring the outer one."""
    LAST_REFUSAL.reset(token.refusals_token)
    CURRENT_SCOPE.reset(token.scope_token)


@contextmanager
def scope(
    agent_id: str | None = None, run_id: str | None = None, mission_id: str | None = None
) -> Iterator[Scope]:
    """Run the block under these ids; unset ids are inherited from the enclosing scope."""
    token = enter_scope(agent_id, run_id, mission_id)
    try:
        yield token.scope
    finally:
        exit_scope(token)
