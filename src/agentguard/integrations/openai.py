"""OpenAI: guard the model calls of an OpenAI 3.x client, sync or async, streaming included.

Usage::

    from openai import OpenAI
    from agentguard.integrations.openai import guard_openai, unguard_openai
    from agentguard.pricing import LIST_PRICES_2025_11

    client = guard_openai(OpenAI(), guard, prices=LIST_PRICES_2025_11, agent_id="support-bot")
    client.chat.completions.create(model="gpt-5", messages=[...])  # refused once killed
    client.responses.create(model="gpt-5", input="Hi", stream=True)
    client = unguard_openai(client)                                 # the client given

``guard_openai`` returns a guarded copy of the client, made with the SDK's public
``client.with_options(http_client=...)``: its HTTP client sends through an
``agentguard.integrations.httpx2.ModelTransport`` (over ``transport``, default httpx2's own;
pass yours for a proxy or custom TLS), whatever HTTP client the original had (httpx2's, or
aiohttp's ``DefaultAioHttpClient``). Each model call (chat completions, the Responses API,
completions, embeddings: a POST naming a ``model``) is checked as the action ``llm`` with its
model before it leaves, and a refusal reaches the caller of ``create(...)`` as the
``PolicyViolationError`` itself: the SDK retries and wraps only httpx2's own errors. Its
token usage is read from the JSON answer or, as the caller consumes a stream, from the last
chunk (ask for it with ``stream_options={"include_usage": True}``) or the Responses API's
``response.completed``; priced with ``prices``, it is added to the guard's cost, so a
``BudgetRule`` trips on real spend. Other requests of the client (files, batches) are checked
as ``http_request``. Not seen: the Realtime API (websockets), and work the provider runs for
a batch. Ids: fixed here, then ``agentguard.scope``.

A kill that comes while a call runs stops it: the request waiting for its answer, or its
token stream midway (within milliseconds, the chunk being read not delivered), ends with the
kill's ``PolicyViolationError``, recorded as a CANCELLED intervention naming the model, with
the usage seen so far (``cancel_in_flight=False`` lets calls run to their end).
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any, TypeVar, Unpack

try:
    import httpx2
    import openai
except ImportError as exc:
    from ._gate import missing

    raise missing("openai", "the OpenAI SDK", "openai") from exc

from ..scope import Ids
from ._model import LLM_ACTION, ModelGate
from ._usage import OPENAI
from .httpx2 import AsyncModelTransport, ModelTransport

if TYPE_CHECKING:
    from ..guard import Guard
    from ..pricing import Prices, PriceTable

__all__ = ["guard_openai", "is_guarded", "unguard_openai"]

C = TypeVar("C", openai.OpenAI, openai.AsyncOpenAI)

# guarded copy -> the client it was made from
_originals: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


def guard_openai(
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
    gate = ModelGate(
        guard,
        prices=prices,
        action=action,
        provider="openai",
        where="guard_openai",
        cancel_in_flight=cancel_in_flight,
        **ids,
    )
    guarded: C
    if isinstance(client, openai.AsyncOpenAI):
        inner = _transport(transport, httpx2.AsyncBaseTransport, "an httpx2.AsyncBaseTransport")
        http = openai.DefaultAsyncHttpxClient(transport=AsyncModelTransport(inner, gate, OPENAI))
        guarded = client.with_options(http_client=http)
    elif isinstance(client, openai.OpenAI):
        inner = _transport(transport, httpx2.BaseTransport, "an httpx2.BaseTransport")
        http_sync = openai.DefaultHttpxClient(transport=ModelTransport(inner, gate, OPENAI))
        guarded = client.with_options(http_client=http_sync)
    else:
        raise TypeError(f"guard_openai() needs an OpenAI or AsyncOpenAI client; got {client!r}")
    _originals[guarded] = client
    return guarded


def unguard_openai(client: C) -> C:
    """The client ``guard_openai`` was given (``client`` itself when it is not guarded)."""
    return _originals.get(client, client)  # type: ignore[no-any-return]


def is_guarded(client: object) -> bool:
    """Whether ``client`` is a copy ``guard_openai`` made."""
    return client in _originals


def _transport(transport: Any, kind: type, noun: str) -> Any:
    if transport is None or isinstance(transport, kind):
        return transport
    raise TypeError(f"guard_openai() transport must be {noun}; got {transport!r}")
