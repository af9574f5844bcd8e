"""Google ADK: the plugin's model-call guard (``models=True``) on real Runners, with a scripted
BaseLlm reporting token usage as Gemini does, streamed (SSE) and not (no network)."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from typing import TYPE_CHECKING, Any

import pytest
from google.adk.agents import LlmAgent
from google.adk.agents.run_config import RunConfig, StreamingMode
from google.adk.models.base_llm import BaseLlm
from google.adk.models.llm_request import LlmRequest
from google.adk.models.llm_response import LlmResponse
from google.adk.plugins.base_plugin import BasePlugin
from google.adk.runners import InMemoryRunner, Runner
from google.genai import types
from integration_contract import Body, IntegrationContract
from opentelemetry.trace import StatusCode

from agentguard import BudgetRule, Guard, InvalidInputError, PolicyViolationError
from agentguard.integrations.google_adk import AgentGuardPlugin, guard_runner, unguard_runner
from agentguard.pricing import Price
from support import eventually

if TYPE_CHECKING:
    from conftest import HardBlock, MakeGuard, Spans

PRICES = {"gemini-2.5-flash": Price(0.30, 2.50, cached_input=0.03)}
# prompt 9,000 + tool-use prompt 1,000 input (4,000 of them cached); 1,500 + 500 thinking output
COST = (6_000 * 0.30 + 4_000 * 0.03 + 2_000 * 2.50) / 1e6


def usage(candidates: int = 1_500) -> types.GenerateContentResponseUsageMetadata:
    return types.GenerateContentResponseUsageMetadata(
        prompt_token_count=9_000,
        tool_use_prompt_token_count=1_000,
        cached_content_token_count=4_000,
        candidates_token_count=candidates,
        thoughts_token_count=500,
    )


class Scripted(BaseLlm):
    """A model answering each call with ``reply()`` (a tool call or a text) and Gemini's
    usage; streamed (SSE), the text comes as partial chunks, each with the usage so far, then
    the aggregate, as ADK's Gemini model sends them."""

    model: str = "gemini-2.5-flash"
    reply: Callable[[], types.Part]
    calls: list[bool] = []

    async def generate_content_async(
        self, llm_request: LlmRequest, stream: bool = False
    ) -> AsyncGenerator[LlmResponse, None]:
        self.calls.append(stream)
        part = self.reply()
        if stream and part.text:
            words = part.text.split(" ")
            for i, word in enumerate(words, start=1):
                yield LlmResponse(
                    content=types.ModelContent(word + " "),
                    usage_metadata=usage(candidates=1_500 * i // len(words)),
                    partial=True,
                )
        yield LlmResponse(
            content=types.Content(role="model", parts=[part]),
            usage_metadata=usage(),
            model_version="gemini-2.5-flash-001",
            partial=False if stream else None,
        )


def script(*steps: tuple[str, dict[str, Any]] | str) -> Scripted:
    """A model making these tool calls (name, args), or saying these texts, in order."""
    replies = iter(steps)

    def reply() -> types.Part:
        step = next(replies, "done")
        if isinstance(step, str):
            return types.Part(text=step)
        return types.Part(function_call=types.FunctionCall(name=step[0], args=step[1], id="c1"))

    return Scripted(reply=reply, calls=[])


def lookup(query: str) -> str:
    """Look something up."""
    return "found"


def runner_for(model: Scripted, *tools: Any, name: str = "bot") -> InMemoryRunner:
    return InMemoryRunner(agent=LlmAgent(name=name, model=model, tools=list(tools) or [lookup]))


async def run(runner: Runner, session_id: str = "s1", *, sse: bool = False) -> str:
    """One turn of a new session; the last complete text the agent said."""
    await runner.session_service.create_session(
        app_name=runner.app_name, user_id="u1", session_id=session_id
    )
    config = RunConfig(streaming_mode=StreamingMode.SSE if sse else StreamingMode.NONE)
    events = [
        e
        async for e in runner.run_async(
            user_id="u1",
            session_id=session_id,
            new_message=types.UserContent("go"),
            run_config=config,
        )
    ]
    texts = [
        p.text
        for e in events
        if e.content and not e.partial
        for p in e.content.parts or []
        if p.text
    ]
    return texts[-1] if texts else ""


def model_spans(spans: Spans) -> list[Any]:
    return [s for s in spans.exporter.get_finished_spans() if s.name == "chat gemini-2.5-flash"]


@pytest.mark.parametrize("sse", [False, True], ids=["plain", "sse"])
async def test_a_killed_agent_s_model_call_is_never_made(
    make_guard: MakeGuard, spans: Spans, hard_block: HardBlock, sse: bool
) -> None:
    guard = make_guard()
    model = script("hello")
    runner = guard_runner(runner_for(model), guard=guard, models=True)
    guard.kill("agent", "bot", reason="looping", actor="usr_ops")
    with pytest.raises(PolicyViolationError) as caught:
        await run(runner, "campaign-7", sse=sse)
    assert model.calls == [] and caught.value.reason == "looping"
    block = hard_block(guard)
    assert (block.action, block.model, block.agent_id, block.run_id) == (
        "llm",
        "gemini-2.5-flash",
        "bot",
        "campaign-7",
    )
    assert caught.value.intervention_id == block.id
    (span,) = spans.blocks()
    assert span.name == "chat gemini-2.5-flash" and span.status.status_code is StatusCode.ERROR


async def test_killing_the_tool_llm_mid_run_stops_the_next_model_call(
    make_guard: MakeGuard, hard_block: HardBlock
) -> None:
    guard = make_guard()
    ran: list[str] = []

    def step(query: str) -> str:
        """Do one step."""
        ran.append(query)
        guard.kill("tool", "llm", reason="model outage")
        return "ok"

    model = script(("step", {"query": "a"}), "never said")
    runner = guard_runner(runner_for(model, step), guard=guard, models=True)
    with pytest.raises(PolicyViolationError, match="model outage"):
        await run(runner)
    assert ran == ["a"] and len(model.calls) == 1
    assert hard_block(guard).target_type == "tool"
    counts = guard.counts(action="llm")
    assert (counts.executed, counts.refused, counts.failed) == (1, 1, 0)


@pytest.mark.parametrize("sse", [False, True], ids=["plain", "sse"])
async def test_message_mode_answers_that_the_agent_was_stopped(
    make_guard: MakeGuard, sse: bool
) -> None:
    guard = make_guard()
    model = script("never said")
    runner = guard_runner(runner_for(model), guard=guard, on_block="message", models=True)
    guard.kill("run", "s-9", reason="customer opted out", actor="usr_ops")
    said = await run(runner, "s-9", sse=sse)
    assert said.startswith("Stopped: 'llm' refused: run 's-9' was killed by usr_ops")
    assert "customer opted out" in said
    assert model.calls == [] and len(guard.interventions()) == 1


@pytest.mark.parametrize("sse", [False, True], ids=["plain", "sse"])
async def test_usage_becomes_cost_a_budget_rule_trips_and_the_next_call_is_refused(
    make_guard: MakeGuard, spans: Spans, hard_block: HardBlock, sse: bool
) -> None:
    guard = make_guard(rules=[BudgetRule("model-spend", limit_usd=0.012)])
    for session in ("r1", "r2"):  # 2 x $0.00692: the second goes over $0.012
        model = script("three words here")
        runner = guard_runner(runner_for(model), guard=guard, models=True, prices=PRICES)
        assert await run(runner, session, sse=sse) == "three words here"
        assert model.calls == [sse]  # streamed: three partial chunks, then the aggregate
    assert guard.total_cost() == pytest.approx(2 * COST)  # once per call, partials not added
    model = script("never said")
    runner = guard_runner(runner_for(model), guard=guard, models=True, prices=PRICES)
    with pytest.raises(PolicyViolationError) as caught:
        await run(runner, "r3", sse=sse)
    assert model.calls == [] and caught.value.killed_by == "rule:model-spend"
    assert hard_block(guard).model == "gemini-2.5-flash"
    eventually(lambda: guard.check("agent", "bot").is_killed, 5)
    attrs = model_spans(spans)[0].attributes or {}
    assert attrs["gen_ai.usage.input_tokens"] == 10_000
    assert attrs["gen_ai.usage.output_tokens"] == 2_000
    assert attrs["gen_ai.usage.cache_read.input_tokens"] == 4_000
    assert attrs["gen_ai.response.model"] == "gemini-2.5-flash-001"
    assert attrs["agentguard.cost_usd"] == pytest.approx(COST)
    assert (attrs["agentguard.agent.id"], attrs["agentguard.run.id"]) == ("bot", "r1")


async def test_each_model_call_of_a_run_with_tools_is_priced(
    make_guard: MakeGuard, spans: Spans
) -> None:
    guard = make_guard()
    model = script(("lookup", {"query": "x"}), ("lookup", {"query": "y"}), "done")
    runner = guard_runner(runner_for(model), guard=guard, models=True, prices=PRICES)
    assert await run(runner) == "done"
    assert len(model.calls) == 3 and guard.total_cost() == pytest.approx(3 * COST)
    assert guard.counts(action="llm").executed == 3 and guard.counts(action="lookup").executed == 2
    assert len(model_spans(spans)) == 3


class Broken(BaseLlm):
    model: str = "gemini-2.5-flash"

    async def generate_content_async(
        self, llm_request: LlmRequest, stream: bool = False
    ) -> AsyncGenerator[LlmResponse, None]:
        raise ConnectionError("provider down")
        yield  # a generator


async def test_a_model_call_that_raises_or_answers_an_error_counts_as_failed(
    make_guard: MakeGuard, spans: Spans
) -> None:
    guard = make_guard()
    runner = guard_runner(
        InMemoryRunner(agent=LlmAgent(name="bot", model=Broken())), guard, models=True
    )
    with pytest.raises(ConnectionError):
        await run(runner)

    def blocked() -> types.Part:
        return types.Part(text="")

    class Filtered(Scripted):
        async def generate_content_async(
            self, llm_request: LlmRequest, stream: bool = False
        ) -> AsyncGenerator[LlmResponse, None]:
            yield LlmResponse(error_code="SAFETY", usage_metadata=usage())

    filtered = Filtered(reply=blocked, calls=[])
    await run(guard_runner(runner_for(filtered), guard, models=True), "s2")
    counts = guard.counts(action="llm")
    assert (counts.executed, counts.failed) == (2, 2)
    errors = [(s.attributes or {}).get("error.type") for s in model_spans(spans)]
    assert errors == ["ConnectionError", "SAFETY"]
    assert (model_spans(spans)[1].attributes or {})["gen_ai.usage.input_tokens"] == 10_000


class AnswersFromCache(BasePlugin):
    """A plugin after ours answering every model call itself (as a cache would)."""

    def __init__(self) -> None:
        super().__init__("cache")

    async def before_model_callback(self, **kwargs: Any) -> LlmResponse:
        return LlmResponse(content=types.ModelContent("cached"))


async def test_a_call_another_plugin_answers_is_still_checked(make_guard: MakeGuard) -> None:
    guard = make_guard()
    model = script("never said")
    runner = runner_for(model)
    runner.plugin_manager.register_plugin(AnswersFromCache())
    guard_runner(runner, guard, models=True)
    assert await run(runner) == "cached" and model.calls == []
    assert guard.counts(action="llm").executed == 1
    guard.kill("agent", "bot")
    with pytest.raises(PolicyViolationError):  # refused before the cache could answer
        await run(runner, "s2")


async def test_model_calls_are_not_guarded_unless_asked(make_guard: MakeGuard) -> None:
    guard = make_guard()
    guard.kill("tool", "llm")
    runner = guard_runner(runner_for(script("hi")), guard=guard)
    assert await run(runner) == "hi" and guard.interventions() == []
    with pytest.raises(InvalidInputError, match="prices"):
        AgentGuardPlugin(guard, prices=PRICES)
    with pytest.raises(InvalidInputError, match="models"):
        guard_runner(runner, guard, models=1)  # type: ignore[arg-type]


async def test_tool_calls_are_still_guarded_with_models_on(make_guard: MakeGuard) -> None:
    guard = make_guard()
    guard.kill("tool", "lookup", reason="index rebuilding")
    model = script(("lookup", {"query": "x"}), "done")
    runner = guard_runner(runner_for(model), guard=guard, on_block="message", models=True)
    assert await run(runner) == "done"
    assert [i.action for i in guard.interventions()] == ["lookup"]
    assert guard.counts(action="llm").executed == 2


class TestContract(IntegrationContract):
    """The plugin's model-call guard keeps the integration contract: the body is the model's
    answer, the action ``llm``, the agent's name its agent id."""

    action = "llm"
    found_agent = "adk_agent"

    def make(self, guard: Guard, body: Body, *, on_block: str | None, **ids: str) -> Any:
        model = Scripted(reply=lambda: types.Part(text=body()), calls=[])
        runner = runner_for(model, name="adk_agent")
        return guard_runner(runner, guard, on_block=on_block or "raise", models=True, **ids)

    async def call(self, made: Any, *, sync: bool) -> Any:
        self.sessions = getattr(self, "sessions", 0) + 1
        session = f"s{self.sessions}"
        if not sync:
            return await run(made, session)
        await made.session_service.create_session(
            app_name=made.app_name, user_id="u1", session_id=session
        )
        events = made.run(user_id="u1", session_id=session, new_message=types.UserContent("go"))
        texts = [p.text for e in events if e.content for p in e.content.parts or [] if p.text]
        return texts[-1]

    def undo(self, made: Any) -> Any:
        return unguard_runner(made)

    def refusal(self, outcome: Any) -> str | None:
        if isinstance(outcome, str):
            return outcome if outcome.startswith("Stopped: ") else None
        return super().refusal(outcome)


# AgentTool builds its nested Runner with the plugins= argument ADK itself deprecates.
@pytest.mark.filterwarnings("ignore:The `plugins` argument is deprecated:DeprecationWarning")
async def test_an_agent_tool_s_model_calls_carry_its_name_and_the_caller_s_session(
    make_guard: MakeGuard, hard_block: HardBlock
) -> None:
    from google.adk.tools.agent_tool import AgentTool

    guard = make_guard()
    nested = script("researched")
    researcher = LlmAgent(name="researcher", description="Researches.", model=nested)
    boss = LlmAgent(
        name="boss", model=script(("researcher", {"request": "find x"}), "done"),
        tools=[AgentTool(researcher)],
    )  # fmt: skip
    runner = guard_runner(InMemoryRunner(agent=boss), guard=guard, models=True)
    guard.kill("agent", "researcher", reason="runaway research")
    with pytest.raises(PolicyViolationError, match="runaway research"):
        await run(runner, "ticket-9")
    assert nested.calls == []
    block = hard_block(guard)
    assert (block.action, block.agent_id, block.run_id) == ("llm", "researcher", "ticket-9")
    assert guard.counts(action="researcher").executed == 1  # the boss's call of the tool
