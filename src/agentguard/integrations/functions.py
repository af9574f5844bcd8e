"""Guard plain Python callables: a tool registry, or functions patched where they live.

Usage::

    from agentguard import Guard
    from agentguard.integrations.functions import guard_registry, instrument, uninstrument

    guard = Guard()
    TOOLS = guard_registry({"send_email": send_email, "search": search}, guard=guard)
    TOOLS["send_email"]("a@example.com")  # refused while its agent, run, mission or tool is killed

    instrument("myapp.tools:send_email", guard=guard)  # every caller of the module attribute
    instrument("myapp.mail:Mailer.send", guard=guard)  # a method, for every instance
    uninstrument("myapp.tools:send_email")             # puts the original back

Registry keys become the action names (the tool names a model calls); list items and patched
functions use their ``__name__``. Wrapping twice is a no-op and every wrap can be undone:
``unguard_registry`` returns the originals and ``uninstrument`` restores the attribute.
A guarded callable is a ``guarded_action``, the hot path of every other adapter's gate.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar, cast

from .. import actions
from ..errors import InvalidInputError
from ..scope import scope_of
from ._gate import Patches

if TYPE_CHECKING:
    from typing import Unpack

    from ..guard import Guard
    from ..scope import Ids

__all__ = [
    "guard_function",
    "guard_registry",
    "instrument",
    "instrumented",
    "unguard_registry",
    "uninstrument",
]

R = TypeVar("R")

_patches = Patches()


def guard_function(
    fn: Callable[..., R],
    guard: Guard | None = None,
    *,
    name: str | None = None,
    **ids: Unpack[Ids],
) -> Callable[..., R]:
    """Return ``fn`` guarded (already guarded callables are returned as they are)."""
    scope_of(ids, "guard_function", validate=False)  # a misspelt keyword, even for those
    if actions.is_guarded(fn):
        return fn
    proxy = actions.wrap(fn, guard=guard, name=name, **ids)
    # wrapt's prefix for an attribute of the proxy itself: marks it as ours, for unguard_registry
    proxy._self_agentguard_registry = True  # noqa: SLF001
    return proxy  # type: ignore[no-any-return]


def guard_registry(registry: Any, guard: Guard | None = None, **ids: Unpack[Ids]) -> Any:
    """Guard every callable of a mapping, list or tuple; return the same shape.

    Mapping keys are the action names. ``ids`` are ``agent_id``/``run_id``/``mission_id``.
    """
    scope_of(ids, "guard_registry", validate=False)  # a misspelt keyword, even when empty
    if isinstance(registry, Mapping):
        pairs = [(k, guard_function(fn, guard, name=str(k), **ids)) for k, fn in registry.items()]
        return _rebuild(registry, pairs)
    if isinstance(registry, (list, tuple)):
        return type(registry)(guard_function(fn, guard, **ids) for fn in registry)
    raise _not_a_registry(registry)


def unguard_registry(registry: Any) -> Any:
    """Undo ``guard_registry``: the same shape with the original callables."""
    if isinstance(registry, Mapping):
        return _rebuild(registry, ((key, _original(fn)) for key, fn in registry.items()))
    if isinstance(registry, (list, tuple)):
        return type(registry)(_original(fn) for fn in registry)
    raise _not_a_registry(registry)


def instrument(
    target: str,
    guard: Guard | None = None,
    *,
    name: str | None = None,
    **ids: Unpack[Ids],
) -> Any:
    """Patch ``"package.module:function"`` or ``"package.module:Class.method"`` in place.

    Returns the installed wrapper. Instrumenting the same target again returns the same one.
    """
    scope_of(ids, "instrument", validate=False)  # a misspelt keyword, even when installed

    def factory(fn: Any) -> Any:
        if actions.is_guarded(fn):
            raise InvalidInputError("target", f"{target!r} is already a guarded action")
        return actions.wrap(fn, guard=guard, name=name, **ids)

    return _patches.apply(target, factory)


def uninstrument(target: str) -> bool:
    """Restore the original attribute; return whether anything was removed."""
    return _patches.undo(target)


def instrumented() -> list[str]:
    """The targets currently patched by ``instrument``."""
    return _patches.targets()


def _not_a_registry(registry: Any) -> InvalidInputError:
    return InvalidInputError(
        "registry", f"must be a mapping, list or tuple of callables; got {type(registry).__name__}"
    )


def _original(fn: Any) -> Any:
    return fn.__wrapped__ if getattr(fn, "_self_agentguard_registry", False) else fn


def _rebuild(registry: Mapping[Any, Any], items: Iterable[tuple[Any, Any]]) -> Any:
    pairs = list(items)
    try:
        return cast(Any, type(registry))(pairs)
    except TypeError:  # a mapping type that cannot be built from pairs
        return dict(pairs)
