"""LangChain: the middleware's model-call guard (``models=True``) on real ``create_agent`` runs,
with a scripted chat model (no network)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest
from integration_contract import Body, IntegrationContract
from langchain.agents import create_agent
from langchain.agents.middleware import AgentMiddleware
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.tools import tool
from opentelemetry.trace import StatusCode

from agentguard import BudgetRule, Guard, InvalidInputError, PolicyViolationError, scope
from agentguard.integrations.langchain import AgentGuardMiddleware
from agentguard.pricing import Price
from support import eventually

if TYPE_CHECKING:
    from conftest import HardBlock, MakeGuard, Spans

PRICES = {"gpt-5": Price(1.25, 10.0, cached_input=0.125)}
USAGE = {
    "input_tokens": 10_000,
    "output_tokens": 2_000,
    "total_tokens": 12_000,
    "input_token_details": {"cache_read": 4_000},
}
COST = (6_000 * 1.25 + 4_000 * 0.125 + 2_000 * 10.0) / 1e6  # $0.028 per call
Step = tuple[str, dict[str, Any], str] | str


class Scripted(BaseChatModel):
    """A chat model named ``gpt-5`` answering with ``reply()`` (a text, or a tool call), with
    ``USAGE`` as its usage; streamed, the text comes word by word and usage with the last
    chunk, as OpenAI's ``include_usage`` sends it."""

    model_name: str = "gpt-5"
    reply: Callable[[], AIMessage]
    calls: list[int] = []

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
        return self.bind(**kwargs)

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> ChatResult:
        self.calls.append(len(messages))
        message = self.reply()
        message.usage_metadata = USAGE  # type: ignore[assignment]
        message.response_metadata = {"model_name": "gpt-5-2025-08-07", "id": "resp-1"}
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _stream(
        self, messages: list[BaseMessage], *args: Any, **kwargs: Any
    ) -> Iterator[ChatGenerationChunk]:
        self.calls.append(len(messages))
        words = str(self.reply().content).split(" ")
        for word in words[:-1]:
            yield ChatGenerationChunk(message=AIMessageChunk(content=word + " "))
        last = AIMessageChunk(content=words[-1], usage_metadata=USAGE)  # type: ignore[arg-type]
        last.response_metadata = {"model_name": "gpt-5-2025-08-07"}
        yield ChatGenerationChunk(message=last)


def script(*steps: Step) -> Scripted:
    """A model answering with these tool calls (name, args, id), or texts, in order."""
    replies = iter(steps)

    def reply() -> AIMessage:
        step = next(replies, "done")
        if isinstance(step, str):
            return AIMessage(step)
        return AIMessage("", tool_calls=[{"name": step[0], "args": step[1], "id": step[2]}])

    return Scripted(reply=reply, calls=[])


@tool
def lookup(query: str) -> str:
    """Look something up."""
    return f"found {query}"


def agent(model: Scripted, middleware: AgentMiddleware | None, name: str = "bot") -> Any:
    return create_agent(model, [lookup], name=name, middleware=[middleware] if middleware else [])


ASK = {"messages": [("user", "look it up")]}


def thread(run_id: str) -> dict[str, Any]:
    return {"configurable": {"thread_id": run_id}}


@pytest.mark.parametrize("sync", [True, False], ids=["invoke", "ainvoke"])
async def test_a_killed_agent_s_model_call_is_never_made(
    make_guard: MakeGuard, spans: Spans, hard_block: HardBlock, sync: bool
) -> None:
    guard = make_guard()
    model = script("hello")
    bot = agent(model, AgentGuardMiddleware(guard, models=True))
    guard.kill("agent", "bot", reason="looping", actor="usr_ops")
    with pytest.raises(PolicyViolationError) as caught:
        if sync:
            bot.invoke(ASK, thread("t-1"))
        else:
            await bot.ainvoke(ASK, thread("t-1"))
    assert model.calls == []
    assert caught.value.reason == "looping"
    block = hard_block(guard)
    assert (block.action, block.model, block.agent_id, block.run_id) == (
        "llm",
        "gpt-5",
        "bot",
        "t-1",
    )
    (span,) = spans.blocks()
    assert span.name == "chat gpt-5" and span.status.status_code is StatusCode.ERROR


def test_killing_the_tool_llm_stops_model_calls_mid_run(
    make_guard: MakeGuard, hard_block: HardBlock
) -> None:
    guard = make_guard()
    ran: list[str] = []

    @tool
    def step(query: str) -> str:
        """Do one step."""
        ran.append(query)
        guard.kill("tool", "llm", reason="model outage")
        return "ok"

    model = script(("step", {"query": "a"}, "c1"), "never said")
    bot = create_agent(
        model, [step], name="bot", middleware=[AgentGuardMiddleware(guard, models=True)]
    )
    with pytest.raises(PolicyViolationError, match="model outage"):
        bot.invoke(ASK)
    assert ran == ["a"] and len(model.calls) == 1  # the second model call was never made
    assert hard_block(guard).target_type == "tool"
    counts = guard.counts(action="llm")
    assert (counts.executed, counts.refused, counts.failed) == (1, 1, 0)


def test_message_mode_ends_the_run_with_a_reply_saying_it_was_stopped(
    make_guard: MakeGuard,
) -> None:
    guard = make_guard()
    model = script("never said")
    bot = agent(model, AgentGuardMiddleware(guard, on_block="message", models=True))
    guard.kill("run", "t-9", reason="customer opted out", actor="usr_ops")
    result = bot.invoke(ASK, thread("t-9"))
    last = result["messages"][-1]
    assert isinstance(last, AIMessage) and not last.tool_calls
    assert last.content.startswith("Stopped: 'llm' refused: run 't-9' was killed by usr_ops")
    assert "customer opted out" in last.content
    assert model.calls == [] and len(guard.interventions()) == 1


def test_message_mode_answers_a_refused_tool_then_stops_the_model(make_guard: MakeGuard) -> None:
    guard = make_guard()

    @tool
    def send(to: str) -> str:
        """Send an email."""
        guard.kill("agent", "mailer", reason="spam wave")
        return "sent"

    model = script(("send", {"to": "a"}, "c1"), ("send", {"to": "b"}, "c2"), "never said")
    bot = create_agent(
        model,
        [send],
        name="mailer",
        middleware=[AgentGuardMiddleware(guard, on_block="message", models=True)],
    )
    messages = bot.invoke(ASK)["messages"]
    assert len(model.calls) == 1  # killed by the tool: the next model call is not made
    assert "spam wave" in messages[-1].content and isinstance(messages[-1], AIMessage)
    assert [i.action for i in guard.interventions()] == ["llm"]


def test_usage_becomes_cost_a_budget_rule_trips_and_the_next_call_is_refused(
    make_guard: MakeGuard, spans: Spans, hard_block: HardBlock
) -> None:
    guard = make_guard(rules=[BudgetRule("model-spend", limit_usd=0.05)])
    middleware = AgentGuardMiddleware(guard, models=True, prices=PRICES)
    for run in ("r1", "r2"):  # 2 x $0.028: the second goes over $0.05
        assert agent(script("hi"), middleware).invoke(ASK, thread(run))["messages"][-1].content
    assert guard.total_cost() == pytest.approx(2 * COST)
    model = script("never said")
    with pytest.raises(PolicyViolationError) as caught:
        agent(model, middleware).invoke(ASK, thread("r3"))
    assert model.calls == [] and caught.value.killed_by == "rule:model-spend"
    assert hard_block(guard).model == "gpt-5"
    eventually(lambda: guard.check("agent", "bot").is_killed, 5)
    calls = [s for s in spans.exporter.get_finished_spans() if s.name == "chat gpt-5"]
    attrs = calls[0].attributes or {}
    assert attrs["gen_ai.usage.input_tokens"] == 10_000
    assert attrs["gen_ai.usage.output_tokens"] == 2_000
    assert attrs["gen_ai.usage.cache_read.input_tokens"] == 4_000
    assert attrs["gen_ai.response.model"] == "gpt-5-2025-08-07"
    assert attrs["gen_ai.response.id"] == "resp-1"
    assert attrs["agentguard.cost_usd"] == pytest.approx(COST)
    assert (attrs["agentguard.agent.id"], attrs["agentguard.run.id"]) == ("bot", "r1")


@pytest.mark.parametrize("sync", [True, False], ids=["stream", "astream"])
async def test_a_streamed_run_s_usage_is_priced(
    make_guard: MakeGuard, spans: Spans, sync: bool
) -> None:
    guard = make_guard()
    model = script("hello streaming world")
    bot = agent(model, AgentGuardMiddleware(guard, models=True, prices=PRICES))
    if sync:
        chunks = list(bot.stream(ASK, thread("s1"), stream_mode="messages"))
    else:
        chunks = [c async for c in bot.astream(ASK, thread("s1"), stream_mode="messages")]
    assert len(chunks) >= 3  # the tokens reached the caller one by one
    assert guard.total_cost() == pytest.approx(COST)
    (span,) = [s for s in spans.exporter.get_finished_spans() if s.name == "chat gpt-5"]
    assert (span.attributes or {})["gen_ai.usage.output_tokens"] == 2_000


def test_a_model_call_that_raises_counts_as_failed(make_guard: MakeGuard, spans: Spans) -> None:
    guard = make_guard()

    def broken() -> AIMessage:
        raise ConnectionError("provider down")

    with pytest.raises(ConnectionError):
        agent(Scripted(reply=broken, calls=[]), AgentGuardMiddleware(guard, models=True)).invoke(
            ASK
        )
    counts = guard.counts(action="llm")
    assert (counts.executed, counts.failed) == (1, 1)
    (span,) = [s for s in spans.exporter.get_finished_spans() if s.name == "chat gpt-5"]
    assert (span.attributes or {})["error.type"] == "ConnectionError"


def test_model_calls_are_not_guarded_unless_asked(make_guard: MakeGuard) -> None:
    guard = make_guard()
    guard.kill("tool", "llm")
    middleware = AgentGuardMiddleware(guard)
    assert middleware.models is False
    assert agent(script("hi"), middleware).invoke(ASK)["messages"][-1].content == "hi"
    assert guard.interventions() == []
    with pytest.raises(InvalidInputError, match="prices"):
        AgentGuardMiddleware(guard, prices=PRICES)
    with pytest.raises(InvalidInputError, match="models"):
        AgentGuardMiddleware(guard, models="yes")  # type: ignore[arg-type]


def test_tool_calls_are_still_guarded_with_models_on(make_guard: MakeGuard) -> None:
    guard = make_guard()
    guard.kill("tool", "lookup", reason="index rebuilding")
    model = script(("lookup", {"query": "x"}, "c1"), "done")
    result = agent(model, AgentGuardMiddleware(guard, on_block="message", models=True)).invoke(ASK)
    refusal = [m for m in result["messages"] if isinstance(m, ToolMessage)][0]
    assert refusal.status == "error" and "index rebuilding" in refusal.content
    assert result["messages"][-1].content == "done"
    assert guard.counts(action="llm").executed == 2


class TestContract(IntegrationContract):
    """The middleware's model-call guard keeps the integration contract: the body is the
    model's answer, the action ``llm``, the agent's name its agent id."""

    action = "llm"
    found_agent = "lc-agent"

    def make(self, guard: Guard, body: Body, *, on_block: str | None, **ids: str) -> Any:
        middleware = AgentGuardMiddleware(guard, on_block=on_block or "raise", models=True, **ids)
        return middleware, Scripted(reply=lambda: AIMessage(body()), calls=[])

    async def call(self, made: Any, *, sync: bool) -> Any:
        middleware, model = made
        bot = agent(model, middleware, name="lc-agent")
        result = bot.invoke(ASK) if sync else await bot.ainvoke(ASK)
        return result["messages"][-1].content

    def undo(self, made: Any) -> Any:
        return None, made[1]  # the agent without the middleware

    def refusal(self, outcome: Any) -> str | None:
        if isinstance(outcome, str):
            return outcome if outcome.startswith("Stopped: ") else None
        return super().refusal(outcome)


def test_the_contract_s_scope_precedence_holds_for_model_calls(make_guard: MakeGuard) -> None:
    guard = make_guard()
    guard.kill("tool", "llm")
    with scope(run_id="scoped-run"):
        with pytest.raises(PolicyViolationError):
            agent(script("x"), AgentGuardMiddleware(guard, models=True)).invoke(ASK, thread("t"))
    assert guard.interventions()[0].run_id == "scoped-run"
