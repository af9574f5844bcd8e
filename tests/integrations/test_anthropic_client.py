"""guard_anthropic: the real Anthropic 2.x client over an httpx2 MockTransport below the guard."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import anthropic
import httpx2
import pytest
from integration_contract import Body, IntegrationContract
from opentelemetry.trace import SpanKind

from agentguard import (
    BudgetRule,
    Guard,
    KillStateUnavailableError,
    MemoryStore,
    PolicyViolationError,
)
from agentguard.integrations.anthropic import (
    AnthropicKillStateUnavailableError,
    AnthropicPolicyViolationError,
    guard_anthropic,
    is_guarded,
    unguard_anthropic,
)
from agentguard.pricing import LIST_PRICES_2025_11, Price
from agentguard.sources import LocalSource
from support.model_api import ScriptedAPI, message_json, message_sse, reply, status

if TYPE_CHECKING:
    from conftest import HardBlock, MakeGuard, Spans

MODEL, DATED = "claude-sonnet-4-5", "claude-sonnet-4-5-20250929"
MESSAGES: Any = [{"role": "user", "content": "Where is my order?"}]
PRICES = {MODEL: Price(3.0, 15.0, cached_input=0.30, cache_write=3.75)}
INPUT, OUTPUT, COST = 1_000_000, 100_000, 4.5  # $3.00 + $1.50


def sync_client(api: ScriptedAPI, guard: Guard, **options: Any) -> anthropic.Anthropic:
    plain = anthropic.Anthropic(api_key="sk-test", max_retries=options.pop("max_retries", 2))
    return guard_anthropic(plain, guard, transport=api.transport(), **options)


def async_client(api: ScriptedAPI, guard: Guard, **options: Any) -> anthropic.AsyncAnthropic:
    api.asynchronous = True
    plain = anthropic.AsyncAnthropic(api_key="sk-test", max_retries=options.pop("max_retries", 2))
    return guard_anthropic(plain, guard, transport=api.transport(), **options)


def create(client: anthropic.Anthropic, **extra: Any) -> Any:
    return client.messages.create(model=MODEL, max_tokens=1024, messages=MESSAGES, **extra)


def model_spans(spans: Spans) -> list[Any]:
    return [s for s in spans.exporter.get_finished_spans() if s.kind is SpanKind.CLIENT]


def test_a_message_is_checked_priced_and_traced(make_guard: MakeGuard, spans: Spans) -> None:
    guard = make_guard()
    api = ScriptedAPI(
        reply(lambda body: message_json(DATED, 200_000, OUTPUT, cache_read=800_000, cache_write=0))
    )
    client = sync_client(api, guard, prices=PRICES, agent_id="support-bot")
    message = create(client)
    assert message.content[0].text == "Your order shipped."  # type: ignore[union-attr]
    cost = (200_000 * 3.0 + 800_000 * 0.30 + OUTPUT * 15.0) / 1e6
    assert guard.cost("agent", "support-bot") == pytest.approx(cost)
    (span,) = model_spans(spans)
    attrs = span.attributes or {}
    assert span.name == f"chat {MODEL}"
    assert attrs["gen_ai.provider.name"] == "anthropic"
    assert (attrs["gen_ai.request.model"], attrs["gen_ai.response.model"]) == (MODEL, DATED)
    assert attrs["gen_ai.usage.input_tokens"] == 1_000_000  # cache reads included
    assert attrs["gen_ai.usage.cache_read.input_tokens"] == 800_000
    assert attrs["gen_ai.usage.output_tokens"] == OUTPUT
    assert attrs["agentguard.cost_usd"] == pytest.approx(cost)


def test_a_refusal_reaches_the_caller_unwrapped_and_is_not_retried(
    make_guard: MakeGuard, spans: Spans, hard_block: HardBlock
) -> None:
    guard = make_guard()
    api = ScriptedAPI()
    client = sync_client(api, guard, max_retries=5, agent_id="support-bot")
    guard.kill("agent", "support-bot", reason="drained the budget")
    with pytest.raises(PolicyViolationError) as refused:
        create(client)
    assert type(refused.value) is AnthropicPolicyViolationError  # not an APIConnectionError
    assert isinstance(refused.value, anthropic.AnthropicError)
    assert "drained the budget" in str(refused.value)
    assert api.requests == []
    iv = hard_block(guard)  # one attempt, one intervention
    assert (iv.action, iv.model, iv.agent_id) == ("llm", MODEL, "support-bot")
    assert guard.counts(action="llm").refused == 1
    (block,) = spans.blocks()
    assert block.name == f"chat {MODEL}"


async def test_a_refusal_for_unavailable_kill_state_keeps_its_class() -> None:
    source = LocalSource(MemoryStore(), "local")
    source.index.fresh_until = -math.inf  # a view that is never current: fail closed
    with Guard(source) as guard:
        client = async_client(ScriptedAPI(), guard, max_retries=3)
        with pytest.raises(KillStateUnavailableError) as refused:
            await client.messages.create(model=MODEL, max_tokens=8, messages=MESSAGES)
    assert type(refused.value) is AnthropicKillStateUnavailableError


def test_a_plain_refusal_would_be_retried_and_disguised_by_the_sdk(
    make_guard: MakeGuard,
) -> None:
    """Why guard_anthropic raises its own class: the SDK wraps every foreign error."""
    from agentguard.integrations._model import ModelGate
    from agentguard.integrations._usage import ANTHROPIC
    from agentguard.integrations.httpx2 import ModelTransport

    guard = make_guard()
    guard.kill("tool", "llm")
    transport = ModelTransport(ScriptedAPI().transport(), ModelGate(guard), ANTHROPIC)
    bare = anthropic.Anthropic(
        api_key="sk-test", max_retries=1, http_client=httpx2.Client(transport=transport)
    )
    with pytest.raises(anthropic.APIConnectionError) as wrapped:
        create(bare)
    assert isinstance(wrapped.value.__cause__, PolicyViolationError)
    assert guard.counts(action="llm").refused == 2  # retried


def test_a_streamed_message_is_priced_from_start_and_delta(make_guard: MakeGuard) -> None:
    guard = make_guard()
    api = ScriptedAPI(
        reply(lambda body: message_sse(DATED, INPUT, OUTPUT)),
        reply(lambda body: message_sse(DATED, INPUT, OUTPUT)),
    )
    client = sync_client(api, guard, prices=PRICES)
    events = [event.type for event in create(client, stream=True)]
    assert events[0] == "message_start" and events[-1] == "message_stop"
    assert guard.total_cost() == pytest.approx(COST)
    with client.messages.stream(model=MODEL, max_tokens=1024, messages=MESSAGES) as stream:
        assert stream.get_final_text() == "Your order shipped."
    assert guard.total_cost() == pytest.approx(2 * COST)
    guard.kill("tool", "llm")
    with pytest.raises(PolicyViolationError):
        client.messages.stream(model=MODEL, max_tokens=1024, messages=MESSAGES).__enter__()
    assert len(api.requests) == 2


def test_a_stream_left_early_records_its_input_tokens(make_guard: MakeGuard) -> None:
    guard = make_guard()
    api = ScriptedAPI(reply(lambda body: message_sse(DATED, INPUT, OUTPUT)))
    client = sync_client(api, guard, prices=PRICES)
    with client.messages.stream(model=MODEL, max_tokens=1024, messages=MESSAGES) as stream:
        for event in stream:
            if event.type == "content_block_delta":
                break
    # message_start was seen: its input tokens and the 1 output token it counts so far
    assert guard.total_cost() == pytest.approx(3.0 + 15.0 / 1e6)


def test_an_overloaded_error_mid_stream_counts_as_failed(make_guard: MakeGuard) -> None:
    guard = make_guard()
    api = ScriptedAPI(reply(lambda body: message_sse(DATED, 10, 0, error=True)))
    client = sync_client(api, guard)
    with pytest.raises(anthropic.APIStatusError, match="Overloaded"):
        list(create(client, stream=True))
    counts = guard.counts(action="llm")
    assert (counts.executed, counts.failed) == (1, 1)


async def test_the_async_client_checks_prices_and_streams(
    make_guard: MakeGuard, hard_block: HardBlock
) -> None:
    guard = make_guard()
    api = ScriptedAPI(
        reply(lambda body: message_json(DATED, INPUT, OUTPUT)),
        reply(lambda body: message_sse(DATED, INPUT, OUTPUT)),
        reply(lambda body: message_sse(DATED, INPUT, OUTPUT)),
    )
    client = async_client(api, guard, prices=LIST_PRICES_2025_11, max_retries=3, run_id="r-9")
    kwargs: Any = {"model": MODEL, "max_tokens": 1024, "messages": MESSAGES}
    await client.messages.create(**kwargs)
    assert len([event async for event in await client.messages.create(**kwargs, stream=True)]) == 8
    async with client.messages.stream(**kwargs) as stream:
        assert await stream.get_final_text() == "Your order shipped."
    assert guard.cost("run", "r-9") == pytest.approx(3 * COST)
    guard.kill("run", "r-9")
    with pytest.raises(PolicyViolationError):
        await client.messages.create(**kwargs)
    assert hard_block(guard).model == MODEL
    assert len(api.requests) == 3


def test_overloaded_answers_are_retried_and_each_attempt_counts(make_guard: MakeGuard) -> None:
    guard = make_guard()
    api = ScriptedAPI(status(529), reply(lambda body: message_json(DATED, 10, 1)))
    create(sync_client(api, guard, max_retries=2))
    counts = guard.counts(action="llm")
    assert (counts.executed, counts.failed) == (2, 1)


def test_a_budget_rule_trips_on_token_usage_and_refuses_the_next_call(
    make_guard: MakeGuard, hard_block: HardBlock
) -> None:
    guard = make_guard(rules=[BudgetRule("spend", limit_usd=5.0)])
    api = ScriptedAPI(*[reply(lambda body: message_sse(DATED, INPUT, OUTPUT))] * 2)
    client = sync_client(api, guard, prices=PRICES, agent_id="bot")
    list(create(client, stream=True))  # $4.50
    list(create(client, stream=True))  # $9.00: over $5
    with pytest.raises(PolicyViolationError) as refused:
        create(client)
    assert refused.value.killed_by == "rule:spend"
    assert hard_block(guard).model == MODEL


def test_guarding_is_a_copy_and_reversible(make_guard: MakeGuard) -> None:
    guard = make_guard()
    plain = anthropic.Anthropic(api_key="sk-test", base_url="https://proxy.example", max_retries=4)
    guarded = guard_anthropic(plain, guard)
    assert guarded is not plain and is_guarded(guarded)
    assert (guarded.base_url, guarded.max_retries) == (plain.base_url, plain.max_retries)
    assert guard_anthropic(guarded, guard) is guarded
    assert unguard_anthropic(guarded) is plain and unguard_anthropic(plain) is plain
    with pytest.raises(TypeError, match="Anthropic or AsyncAnthropic"):
        guard_anthropic(object(), guard)  # type: ignore[type-var]


class TestContract(IntegrationContract):
    """guard_anthropic keeps the integration contract: the body is the model API's answer."""

    action = "llm"
    on_block = ("raise",)

    def make(self, guard: Guard, body: Body, *, on_block: str | None, **ids: str) -> Any:
        def handler(request: httpx2.Request) -> httpx2.Response:
            return httpx2.Response(200, json=message_json(DATED, 1, 1) | {"id": body()})

        def plain(kind: Any, http: Any) -> Any:
            return kind(api_key="sk-test", max_retries=0, http_client=http)

        mock = httpx2.MockTransport(handler)
        return (
            guard_anthropic(plain(anthropic.Anthropic, httpx2.Client(transport=mock)), guard,
                            transport=mock, **ids),
            guard_anthropic(plain(anthropic.AsyncAnthropic, httpx2.AsyncClient(transport=mock)),
                            guard, transport=mock, **ids),
        )  # fmt: skip

    async def call(self, made: Any, *, sync: bool) -> Any:
        client, aclient = made
        if sync:
            return create(client).id
        return (await aclient.messages.create(model=MODEL, max_tokens=8, messages=MESSAGES)).id

    def undo(self, made: Any) -> Any:
        return unguard_anthropic(made[0]), unguard_anthropic(made[1])
