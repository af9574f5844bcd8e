"""guard_openai: the real OpenAI 3.x client over an httpx2 MockTransport below the guard."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx2
import openai
import pytest
from integration_contract import Body, Boom, IntegrationContract
from opentelemetry.trace import SpanKind

import agentguard
from agentguard import BudgetRule, Guard, PolicyViolationError
from agentguard.integrations.openai import guard_openai, is_guarded, unguard_openai
from agentguard.pricing import LIST_PRICES_2025_11, Price
from support.model_api import (
    ScriptedAPI,
    chat_json,
    chat_sse,
    reply,
    response_json,
    response_sse,
    status,
)

if TYPE_CHECKING:
    from conftest import HardBlock, MakeGuard, Spans

MODEL, DATED = "gpt-5", "gpt-5-2025-08-07"
MESSAGES: Any = [{"role": "user", "content": "Where is my order?"}]
PRICES = {MODEL: Price(1.25, 10.0, cached_input=0.125)}
# 1M input tokens cost $1.25 and 100k output tokens $1.00 at those prices
INPUT, OUTPUT, COST = 1_000_000, 100_000, 2.25


def sync_client(api: ScriptedAPI, guard: Guard, **options: Any) -> openai.OpenAI:
    plain = openai.OpenAI(api_key="sk-test", max_retries=options.pop("max_retries", 2))
    return guard_openai(plain, guard, transport=api.transport(), **options)


def async_client(api: ScriptedAPI, guard: Guard, **options: Any) -> openai.AsyncOpenAI:
    api.asynchronous = True
    plain = openai.AsyncOpenAI(api_key="sk-test", max_retries=options.pop("max_retries", 2))
    return guard_openai(plain, guard, transport=api.transport(), **options)


def model_spans(spans: Spans) -> list[Any]:
    return [s for s in spans.exporter.get_finished_spans() if s.kind is SpanKind.CLIENT]


def test_a_chat_completion_is_checked_priced_and_traced(
    make_guard: MakeGuard, spans: Spans
) -> None:
    guard = make_guard()
    api = ScriptedAPI(reply(lambda body: chat_json(DATED, INPUT, OUTPUT, cached=400_000)))
    client = sync_client(api, guard, prices=PRICES, agent_id="support-bot", run_id="t-1")
    completion = client.chat.completions.create(model=MODEL, messages=MESSAGES)
    assert completion.choices[0].message.content == "Your order shipped yesterday."
    assert api.bodies[0]["model"] == MODEL
    cost = (600_000 * 1.25 + 400_000 * 0.125 + OUTPUT * 10.0) / 1e6
    assert guard.cost("run", "t-1") == pytest.approx(cost)
    (span,) = model_spans(spans)
    attrs = span.attributes or {}
    assert span.name == "chat gpt-5"
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.provider.name"] == "openai"
    assert attrs["gen_ai.request.model"] == MODEL
    assert attrs["gen_ai.response.model"] == DATED
    assert attrs["gen_ai.usage.input_tokens"] == INPUT
    assert attrs["gen_ai.usage.output_tokens"] == OUTPUT
    assert attrs["agentguard.cost_usd"] == pytest.approx(cost)
    assert attrs["agentguard.agent.id"] == "support-bot"


def test_a_killed_agent_cannot_call_the_model_and_the_sdk_does_not_retry(
    make_guard: MakeGuard, spans: Spans, hard_block: HardBlock
) -> None:
    guard = make_guard()
    api = ScriptedAPI()
    client = sync_client(api, guard, max_retries=5, agent_id="support-bot")
    guard.kill("agent", "support-bot", reason="looping on refunds", actor="usr_ops")
    with pytest.raises(PolicyViolationError) as refused:
        client.chat.completions.create(model=MODEL, messages=MESSAGES)
    assert type(refused.value) is PolicyViolationError  # not wrapped in APIConnectionError
    assert "looping on refunds" in str(refused.value)
    assert api.requests == []  # it never left the process
    iv = hard_block(guard)  # one refusal: no retry
    assert (iv.action, iv.model, iv.agent_id, iv.killed_by) == (
        "llm",
        MODEL,
        "support-bot",
        "usr_ops",
    )
    (block,) = spans.blocks()
    assert block.name == "chat gpt-5"
    assert (block.attributes or {})["gen_ai.request.model"] == MODEL


def test_killing_the_tool_llm_stops_model_calls_of_every_agent(make_guard: MakeGuard) -> None:
    guard = make_guard()
    api = ScriptedAPI(reply(lambda body: chat_json(DATED, 10, 1)))
    client = sync_client(api, guard)
    with agentguard.scope(agent_id="a"):
        client.chat.completions.create(model=MODEL, messages=MESSAGES)
    guard.kill("tool", "llm")
    for agent in ("a", "b"):
        with agentguard.scope(agent_id=agent), pytest.raises(PolicyViolationError):
            client.chat.completions.create(model=MODEL, messages=MESSAGES)
    guard.revive("tool", "llm")
    api.add(reply(lambda body: chat_json(DATED, 10, 1)))
    client.chat.completions.create(model=MODEL, messages=MESSAGES)
    assert len(api.requests) == 2


def test_a_streamed_chat_completion_is_priced_from_its_last_chunk(make_guard: MakeGuard) -> None:
    guard = make_guard()
    api = ScriptedAPI(reply(lambda body: chat_sse(DATED, INPUT, OUTPUT)))
    client = sync_client(api, guard, prices=PRICES)
    stream = client.chat.completions.create(
        model=MODEL, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    text = ""
    for chunk in stream:
        assert guard.total_cost() == 0  # recorded at the end, not before
        text += "".join(choice.delta.content or "" for choice in chunk.choices)
    assert text == "Your order shipped."
    assert api.bodies[0]["stream_options"] == {"include_usage": True}
    assert guard.total_cost() == pytest.approx(COST)


def test_a_stream_without_include_usage_records_no_cost(
    make_guard: MakeGuard, spans: Spans
) -> None:
    guard = make_guard()
    api = ScriptedAPI(reply(lambda body: chat_sse(DATED, INPUT, OUTPUT, usage=False)))
    client = sync_client(api, guard, prices=PRICES)
    assert len(list(client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)))
    assert guard.total_cost() == 0
    (span,) = model_spans(spans)
    assert "gen_ai.usage.input_tokens" not in (span.attributes or {})


def test_a_chat_stream_closed_early_records_the_call(make_guard: MakeGuard, spans: Spans) -> None:
    guard = make_guard()
    api = ScriptedAPI(reply(lambda body: chat_sse(DATED, INPUT, OUTPUT)))
    client = sync_client(api, guard, prices=PRICES)
    with client.chat.completions.create(
        model=MODEL, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    ) as stream:
        next(iter(stream))
    (span,) = model_spans(spans)  # recorded on close, with what was seen: no usage yet
    assert guard.total_cost() == 0 and guard.counts(action="llm").failed == 0


def test_the_responses_api_sync_and_streamed(make_guard: MakeGuard, spans: Spans) -> None:
    guard = make_guard()
    api = ScriptedAPI(
        reply(lambda body: response_json(DATED, INPUT, OUTPUT)),
        reply(lambda body: response_sse(DATED, INPUT, OUTPUT)),
        reply(lambda body: response_sse(DATED, INPUT, OUTPUT)),
    )
    client = sync_client(api, guard, prices=LIST_PRICES_2025_11)
    assert client.responses.create(model=MODEL, input="Hi").output_text == "Your order shipped."
    assert guard.total_cost() == pytest.approx(COST)
    events = [event.type for event in client.responses.create(model=MODEL, input="Hi", stream=True)]
    assert events[-1] == "response.completed"
    assert guard.total_cost() == pytest.approx(2 * COST)
    with client.responses.stream(model=MODEL, input="Hi") as stream:
        assert stream.get_final_response().output_text == "Your order shipped."
    assert guard.total_cost() == pytest.approx(3 * COST)
    assert [s.name for s in model_spans(spans)] == ["chat gpt-5"] * 3
    guard.kill("tool", "llm")
    with pytest.raises(PolicyViolationError):
        client.responses.create(model=MODEL, input="Hi", stream=True)
    assert len(api.requests) == 3


async def test_the_async_client_checks_prices_and_streams(
    make_guard: MakeGuard, hard_block: HardBlock
) -> None:
    guard = make_guard()
    api = ScriptedAPI(
        reply(lambda body: chat_json(DATED, INPUT, OUTPUT)),
        reply(lambda body: chat_sse(DATED, INPUT, OUTPUT)),
        reply(lambda body: response_sse(DATED, INPUT, OUTPUT)),
    )
    client = async_client(api, guard, prices=PRICES, agent_id="bot")
    await client.chat.completions.create(model=MODEL, messages=MESSAGES)
    stream = await client.chat.completions.create(
        model=MODEL, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    assert len([chunk async for chunk in stream]) == 6
    responses = await client.responses.create(model=MODEL, input="Hi", stream=True)
    events = [event.type async for event in responses]
    assert events[-1] == "response.completed"
    assert guard.cost("agent", "bot") == pytest.approx(3 * COST)
    guard.kill("agent", "bot")
    with pytest.raises(PolicyViolationError):
        await client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
    assert hard_block(guard).model == MODEL
    assert len(api.requests) == 3


def test_server_errors_are_retried_by_the_sdk_and_each_attempt_counts(
    make_guard: MakeGuard,
) -> None:
    guard = make_guard()
    api = ScriptedAPI(status(500), status(503), reply(lambda body: chat_json(DATED, 10, 1)))
    client = sync_client(api, guard, max_retries=2)
    client.chat.completions.create(model=MODEL, messages=MESSAGES)
    counts = guard.counts(action="llm")
    assert (counts.executed, counts.failed) == (3, 2)
    api.add(status(500))
    with pytest.raises(openai.InternalServerError):
        client.with_options(max_retries=0).chat.completions.create(model=MODEL, messages=MESSAGES)
    assert guard.counts(action="llm").failed == 3


def test_a_budget_rule_trips_on_token_usage_and_refuses_the_next_call(
    make_guard: MakeGuard, hard_block: HardBlock
) -> None:
    guard = make_guard(rules=[BudgetRule("spend", limit_usd=3.0)])
    api = ScriptedAPI(*[reply(lambda body: chat_json(DATED, INPUT, OUTPUT))] * 2)
    client = sync_client(api, guard, prices=PRICES, agent_id="support-bot")
    client.chat.completions.create(model=MODEL, messages=MESSAGES)  # $2.25
    client.chat.completions.create(model=MODEL, messages=MESSAGES)  # $4.50: over $3
    with pytest.raises(PolicyViolationError) as refused:
        client.chat.completions.create(model=MODEL, messages=MESSAGES)
    assert refused.value.killed_by == "rule:spend"
    assert "spent $4.50" in (refused.value.reason or "")
    assert hard_block(guard).model == MODEL
    assert len(api.requests) == 2


def test_a_server_budget_rule_trips_on_the_fleet_s_model_spend(
    make_server: Any, tmp_path: Any
) -> None:
    """Heartbeats carry each replica's model spend; the server's rule sees the sum."""
    server = make_server(
        f"sqlite:///{tmp_path}/guard.db", rules=[BudgetRule("fleet", limit_usd=4.0)]
    )
    server.start()
    replicas = [Guard(server, organization_id="org_a", agent_id="bot") for _ in range(2)]
    try:
        clients, beats = [], []
        for guard in replicas:
            api = ScriptedAPI(reply(lambda body: chat_json(DATED, INPUT, OUTPUT)))
            clients.append(sync_client(api, guard, prices=PRICES))
            beats.append(guard.start_heartbeat(interval=60))
        for client, heartbeat in zip(clients, beats, strict=True):
            client.chat.completions.create(model=MODEL, messages=MESSAGES)  # $2.25 each
            heartbeat.beat()
        ks = server.store.get_active("org_a", "agent", "bot")
        assert ks is not None and ks.killed_by == "rule:fleet"
        assert "spent $4.50" in (ks.reason or "")
        for client in clients:
            with pytest.raises(PolicyViolationError, match="limit \\$4.00"):
                client.chat.completions.create(model=MODEL, messages=MESSAGES)
    finally:
        for guard in replicas:
            guard.close()


def test_guarding_is_a_copy_and_reversible(make_guard: MakeGuard) -> None:
    guard = make_guard()
    plain = openai.OpenAI(api_key="sk-test", base_url="https://proxy.example/v1", max_retries=4)
    guarded = guard_openai(plain, guard)
    assert guarded is not plain and is_guarded(guarded) and not is_guarded(plain)
    assert (guarded.base_url, guarded.max_retries) == (plain.base_url, plain.max_retries)
    assert guard_openai(guarded, guard) is guarded
    assert unguard_openai(guarded) is plain and unguard_openai(plain) is plain
    with pytest.raises(TypeError, match="OpenAI or AsyncOpenAI"):
        guard_openai(object(), guard)  # type: ignore[type-var]
    with pytest.raises(TypeError, match="httpx2.AsyncBaseTransport"):
        guard_openai(openai.AsyncOpenAI(api_key="k"), guard, transport=httpx2.HTTPTransport())
    with pytest.raises(TypeError, match="unexpected keyword argument 'agent'"):
        guard_openai(plain, guard, agent="x")  # type: ignore[call-arg]


class TestContract(IntegrationContract):
    """guard_openai keeps the integration contract: the body is the model API's answer."""

    action = "llm"
    on_block = ("raise",)

    def make(self, guard: Guard, body: Body, *, on_block: str | None, **ids: str) -> Any:
        def handler(request: httpx2.Request) -> httpx2.Response:
            return httpx2.Response(200, json=chat_json(DATED, 1, 1) | {"id": body()})

        def plain(kind: Any, http: Any) -> Any:
            return kind(api_key="sk-test", max_retries=0, http_client=http)

        mock = httpx2.MockTransport(handler)
        return (
            guard_openai(plain(openai.OpenAI, httpx2.Client(transport=mock)), guard,
                         transport=mock, **ids),
            guard_openai(plain(openai.AsyncOpenAI, httpx2.AsyncClient(transport=mock)), guard,
                         transport=mock, **ids),
        )  # fmt: skip

    async def call(self, made: Any, *, sync: bool) -> Any:
        client, aclient = made
        if sync:
            return client.chat.completions.create(model=MODEL, messages=MESSAGES).id
        return (await aclient.chat.completions.create(model=MODEL, messages=MESSAGES)).id

    def undo(self, made: Any) -> Any:
        return unguard_openai(made[0]), unguard_openai(made[1])

    async def test_the_failure_reaches_the_caller(self, guard: Guard) -> None:
        def fails() -> str:
            raise Boom("the model API broke")

        client, _ = self.make(guard, fails, on_block=None)
        with pytest.raises(Boom):
            await self.call((client, None), sync=True)
