"""Anthropic: guard the model calls of an Anthropic 2.x client, sync or async, streaming
included.

Usage::

    from anthropic import Anthropic
    from agentguard.integrations.anthropic import guard_anthropic, unguard_anthropic
    from agentguard.pricing import LIST_PRICES_2025_11

    client = guard_anthropic(Anthropic(), guard, prices=LIST_PRICES_2025_11, agent_id="bot")
    client.messages.create(model="claude-sonnet-4-5", max_tokens=512, messages=[...])
    with client.messages.stream(model="claude-sonnet-4-5", ...) as stream: ...
    client = unguard_anthropic(client)                              # the client given

``guard_anthropic`` returns a guarded copy of the client, made with the SDK's public
``client.copy(http_client=...)``: its HTTP client sends through an
``agentguard.integrations.httpx2.ModelTransport`` (over ``transport``, default httpx2's own).
Each model call (a POST naming a ``model``: messages, token counting) is checked as the
action ``llm`` with its model before it leaves. The SDK wraps an error its transport raises
into an ``APIConnectionError`` and retries it, unless the error is one of its own: so a
refusal is raised as ``AnthropicPolicyViolationError``, a ``PolicyViolationError`` that is also
an ``anthropic.AnthropicError``, and the caller of ``messages.create(...)`` gets it at once,
with no retry and no second intervention. Usage comes from the JSON answer or, as the caller
consumes a stream, from ``message_start`` updated by each ``message_delta``; cache reads and
writes count as input tokens at their own prices. Other requests of the client are checked
as ``http_request``. Not seen: Message Batches' work at the provider, and the Bedrock and
Vertex clients. Ids: fixed here, then ``agentguard.scope``.

A kill that comes while a call runs stops it: the request waiting for its answer, or its
event stream midway (within milliseconds), ends with ``AnthropicPolicyViolationError``,
recorded as a CANCELLED intervention naming the model, with the usage seen so far (the input
tokens of ``message_start``); ``cancel_in_flight=False`` lets calls run to their end.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any, TypeVar, Unpack

try:
    import anthropic
    import httpx2
except ImportError as exc:
    from ._gate import missing

    raise missing("anthropic", "the Anthropic SDK", "anthropic") from exc

from ..errors import KillStateUnavailableError, PolicyViolationError
from ..scope import Ids
from ._model import LLM_ACTION, ModelGate
from ._usage import ANTHROPIC
from .httpx2 import AsyncModelTransport, ModelTransport

if TYPE_CHECKING:
    from ..guard import Guard
    from ..pricing import Prices, PriceTable

__all__ = [
    "AnthropicKillStateUnavailableError",
    "AnthropicPolicyViolationError",
    "guard_anthropic",
    "is_guarded",
    "unguard_anthropic",
]

C = TypeVar("C", anthropic.Anthropic, anthropic.AsyncAnthropic)

# guarded copy -> the client it was made from
_originals: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


class AnthropicPolicyViolationError(PolicyViolationError, anthropic.AnthropicError):
    """A ``PolicyViolationError`` the Anthropic SDK lets out unwrapped and does not retry."""


class AnthropicKillStateUnavailableError(AnthropicPolicyViolationError, KillStateUnavailableError):
    """A ``KillStateUnavailableError`` the Anthropic SDK lets out unwrapped."""


class _AnthropicGate(ModelGate):
    """Model calls whose refusals are of a class the SDK passes on as they are."""

    __slots__ = ()

    def refused(self, error: PolicyViolationError) -> PolicyViolationError:
        unavailable = isinstance(error, KillStateUnavailableError)
        error.__class__ = (
            AnthropicKillStateUnavailableError if unavailable else AnthropicPolicyViolationError
        )
        return error


def guard_anthropic(
    client: C,
    guard: Guard | None = None,
    *,
    prices: Prices | PriceTable | None = None,
    action: str = LLM_ACTION,
    transport: httpx2.BaseTransport | httpx2.AsyncBaseTransport | None = None,
    cancel_in_flight: bool = True,
    **ids: Unpack[Ids],
) -> C:
    """A copy of ``client`` whose model calls are guarded and priced (a guarded one as is)."""
    if client in _originals:
        return client
    gate = _AnthropicGate(
        guard,
        prices=prices,
        action=action,
        provider="anthropic",
        where="guard_anthropic",
        cancel_in_flight=cancel_in_flight,
        **ids,
    )
    guarded: C
    if isinstance(client, anthropic.AsyncAnthropic):
        inner = _transport(transport, httpx2.AsyncBaseTransport, "an httpx2.AsyncBaseTransport")
        http = anthropic.DefaultAsyncHttpxClient(
            transport=AsyncModelTransport(inner, gate, ANTHROPIC)
        )
        guarded = client.copy(http_client=http)
    elif isinstance(client, anthropic.Anthropic):
        inner = _transport(transport, httpx2.BaseTransport, "an httpx2.BaseTransport")
        http_sync = anthropic.DefaultHttpxClient(transport=ModelTransport(inner, gate, ANTHROPIC))
        guarded = client.copy(http_client=http_sync)
    else:
        raise TypeError(
            f"guard_anthropic() needs an Anthropic or AsyncAnthropic client; got {client!r}"
        )
    _originals[guarded] = client
    return guarded


def unguard_anthropic(client: C) -> C:
    """The client ``guard_anthropic`` was given (``client`` itself when it is not guarded)."""
    return _originals.get(client, client)  # type: ignore[no-any-return]


def is_guarded(client: object) -> bool:
    """Whether ``client`` is a copy ``guard_anthropic`` made."""
    return client in _originals


def _transport(transport: Any, kind: type, noun: str) -> Any:
    if transport is None or isinstance(transport, kind):
        return transport
    raise TypeError(f"guard_anthropic() transport must be {noun}; got {transport!r}")
