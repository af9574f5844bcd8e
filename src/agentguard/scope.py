"""The agent / run / mission a guarded call runs under, carried on contextvars."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, NamedTuple

from .targets import validate_id


class Scope(NamedTuple):
    """The ids a guarded call runs under; ``None`` where unset."""

    agent_id: str | None = None
    run_id: str | None = None
    mission_id: str | None = None


EMPTY_SCOPE = Scope()

# One variable holding a tuple: a guarded call reads its whole scope with a single ``get``.
_current: ContextVar[Scope] = ContextVar("agentguard_scope", default=EMPTY_SCOPE)


# The last refusal under the innermost ``scope()``: a box shared with the threads and tasks that
# copy the context, so ``wait_until_revived()`` finds a refusal raised in any of them.
_refusals: ContextVar[list[Any] | None] = ContextVar("agentguard_refusals", default=None)


def current_scope() -> Scope:
    """The scope of the running context."""
    return _current.get()


@contextmanager
def scope(
    agent_id: str | None = None, run_id: str | None = None, mission_id: str | None = None
) -> Iterator[Scope]:
    """Run the block under these ids; unset ids are inherited from the enclosing scope."""
    for field, value in (("agent_id", agent_id), ("run_id", run_id), ("mission_id", mission_id)):
        if value is not None:
            validate_id(field, value)
    outer = _current.get()
    inner = Scope(
        agent_id if agent_id is not None else outer.agent_id,
        run_id if run_id is not None else outer.run_id,
        mission_id if mission_id is not None else outer.mission_id,
    )
    token = _current.set(inner)
    box_token = _refusals.set([None])
    try:
        yield inner
    finally:
        _refusals.reset(box_token)
        _current.reset(token)
