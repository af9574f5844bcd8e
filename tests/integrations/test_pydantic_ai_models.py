"""Pydantic AI: ``AgentGuardCapability`` on real agent runs, streamed and not, driven by
Pydantic AI's own FunctionModel (no network)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import pytest
from integration_contract import Body, IntegrationContract
from opentelemetry.trace import StatusCode
from pydantic import BaseModel
from pydantic_ai import Agent, FunctionToolset
from pydantic_ai.capabilities import AbstractCapability
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, FunctionModel
from pydantic_ai.usage import RequestUsage

from agentguard import BudgetRule, Guard, InvalidInputError, PolicyViolationError
from agentguard.integrations.pydantic_ai import AgentGuardCapability, guard_toolset
from agentguard.pricing import Price
from support import eventually

if TYPE_CHECKING:
    from conftest import HardBlock, MakeGuard, Spans

PRICES = {"gpt-5": Price(1.25, 10.0, cached_input=0.125)}
USAGE = RequestUsage(input_tokens=10_000, output_tokens=2_000, cache_read_tokens=4_000)
COST = (6_000 * 1.25 + 4_000 * 0.125 + 2_000 * 10.0) / 1e6  # $0.028 per request


class Scripted:
    """A model named ``gpt-5``: a tool call per turn of ``turns``, then ``text``; each
    response reports ``USAGE`` (FunctionModel names the response's model itself)."""

    def __init__(self, *turns: tuple[str, dict[str, Any]], text: str = "done") -> None:
        self.turns = list(turns)
        self.text = text
        self.calls = 0

    def respond(self, messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        self.calls += 1
        if self.turns:
            name, args = self.turns.pop(0)
            parts: list[Any] = [ToolCallPart(name, args, tool_call_id=f"c{self.calls}")]
        else:
            parts = [TextPart(self.text)]
        return ModelResponse(
            parts=parts,
            usage=USAGE,
            provider_response_id=f"resp-{self.calls}",
        )

    async def stream(self, messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
        self.calls += 1
        for word in self.text.split(" "):
            yield word + " "

    def model(self) -> FunctionModel:
        return FunctionModel(self.respond, stream_function=self.stream, model_name="gpt-5")


def bot(scripted: Scripted, capability: AbstractCapability[Any] | None, **kwargs: Any) -> Agent:
    return Agent(
        scripted.model(),
        name="bot",
        capabilities=[capability] if capability else [],
        **kwargs,
    )


async def test_a_killed_agent_s_request_is_never_sent(
    make_guard: MakeGuard, spans: Spans, hard_block: HardBlock
) -> None:
    guard = make_guard()
    scripted = Scripted()
    guard.kill("agent", "bot", reason="looping", actor="usr_ops")
    with pytest.raises(PolicyViolationError) as caught:
        await bot(scripted, AgentGuardCapability(guard)).run("hi", run_id="run-7")
    assert scripted.calls == 0 and caught.value.reason == "looping"
    block = hard_block(guard)
    assert (block.action, block.model, block.agent_id, block.run_id) == (
        "llm",
        "gpt-5",
        "bot",
        "run-7",
    )
    (span,) = spans.blocks()
    assert span.name == "chat gpt-5" and span.status.status_code is StatusCode.ERROR


async def test_killing_the_tool_llm_mid_run_stops_the_next_request(
    make_guard: MakeGuard, hard_block: HardBlock
) -> None:
    guard = make_guard()
    ran: list[str] = []

    def step(query: str) -> str:
        """Do one step."""
        ran.append(query)
        guard.kill("tool", "llm", reason="model outage")
        return "ok"

    scripted = Scripted(("step", {"query": "a"}))
    agent = bot(scripted, AgentGuardCapability(guard), toolsets=[FunctionToolset([step])])
    with pytest.raises(PolicyViolationError, match="model outage"):
        await agent.run("go")
    assert ran == ["a"] and scripted.calls == 1
    assert hard_block(guard).target_type == "tool"
    counts = guard.counts(action="llm")
    assert (counts.executed, counts.refused, counts.failed) == (1, 1, 0)


async def test_a_streamed_request_is_refused_before_it_is_sent(make_guard: MakeGuard) -> None:
    guard = make_guard()
    scripted = Scripted()
    guard.kill("agent", "bot")
    with pytest.raises(PolicyViolationError):
        async with bot(scripted, AgentGuardCapability(guard)).run_stream("hi") as stream:
            await stream.get_output()
    assert scripted.calls == 0 and guard.interventions()[0].model == "gpt-5"


@pytest.mark.parametrize("streamed", [False, True], ids=["run", "run_stream"])
async def test_message_mode_answers_that_the_agent_was_stopped(
    make_guard: MakeGuard, streamed: bool
) -> None:
    guard = make_guard()
    scripted = Scripted()
    guard.kill("run", "run-9", reason="customer opted out", actor="usr_ops")
    agent = bot(scripted, AgentGuardCapability(guard, on_block="message"))
    if streamed:
        async with agent.run_stream("hi", run_id="run-9") as stream:
            output = await stream.get_output()
    else:
        output = (await agent.run("hi", run_id="run-9")).output
    assert output.startswith("Stopped: 'llm' refused: run 'run-9' was killed by usr_ops")
    assert "customer opted out" in output
    assert scripted.calls == 0 and len(guard.interventions()) == 1


async def test_usage_becomes_cost_a_budget_rule_trips_and_the_next_request_is_refused(
    make_guard: MakeGuard, spans: Spans, hard_block: HardBlock
) -> None:
    guard = make_guard(rules=[BudgetRule("model-spend", limit_usd=0.05)])
    capability = AgentGuardCapability(guard, prices=PRICES)
    for run in ("r1", "r2"):  # 2 x $0.028: the second goes over $0.05
        assert (await bot(Scripted(), capability).run("hi", run_id=run)).output == "done"
    assert guard.total_cost() == pytest.approx(2 * COST)
    scripted = Scripted()
    with pytest.raises(PolicyViolationError) as caught:
        await bot(scripted, capability).run("hi", run_id="r3")
    assert scripted.calls == 0 and caught.value.killed_by == "rule:model-spend"
    assert hard_block(guard).model == "gpt-5"
    eventually(lambda: guard.check("agent", "bot").is_killed, 5)
    calls = [s for s in spans.exporter.get_finished_spans() if s.name == "chat gpt-5"]
    attrs = calls[0].attributes or {}
    assert attrs["gen_ai.usage.input_tokens"] == 10_000
    assert attrs["gen_ai.usage.output_tokens"] == 2_000
    assert attrs["gen_ai.usage.cache_read.input_tokens"] == 4_000
    assert attrs["gen_ai.response.model"] == "gpt-5"
    assert attrs["gen_ai.response.id"] == "resp-1"
    assert attrs["agentguard.cost_usd"] == pytest.approx(COST)
    assert (attrs["agentguard.agent.id"], attrs["agentguard.run.id"]) == ("bot", "r1")


async def test_each_request_of_a_run_with_tools_is_priced(make_guard: MakeGuard) -> None:
    guard = make_guard()

    def lookup(query: str) -> str:
        """Look something up."""
        return "found"

    scripted = Scripted(("lookup", {"query": "x"}), ("lookup", {"query": "y"}))
    agent = bot(
        scripted,
        AgentGuardCapability(guard, prices=PRICES),
        toolsets=[guard_toolset(FunctionToolset([lookup]), guard)],
    )
    assert (await agent.run("go")).output == "done"
    assert scripted.calls == 3 and guard.total_cost() == pytest.approx(3 * COST)
    assert guard.counts(action="llm").executed == 3 and guard.counts(action="lookup").executed == 2


async def test_a_streamed_request_s_usage_is_priced(make_guard: MakeGuard, spans: Spans) -> None:
    guard = make_guard()
    scripted = Scripted(text="hello streaming world")
    agent = bot(scripted, AgentGuardCapability(guard, prices={"gpt-5": (1.0, 1.0)}))
    async with agent.run_stream("hi") as stream:
        words = [text async for text in stream.stream_text(delta=True, debounce_by=None)]
        usage = stream.usage
    assert len(words) >= 2 and scripted.calls == 1
    assert usage.output_tokens > 0  # FunctionModel counts a stream's tokens as it goes
    cost = (usage.input_tokens + usage.output_tokens) / 1e6
    assert guard.total_cost() == pytest.approx(cost)
    (span,) = [s for s in spans.exporter.get_finished_spans() if s.name == "chat gpt-5"]
    attrs = span.attributes or {}
    assert attrs["gen_ai.usage.output_tokens"] == usage.output_tokens
    assert attrs["agentguard.cost_usd"] == pytest.approx(cost)


async def test_a_streamed_tool_call_turn_is_guarded_too(make_guard: MakeGuard) -> None:
    guard = make_guard()
    calls: list[int] = []

    async def stream(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[Any]:
        calls.append(1)
        if len(calls) == 1:
            yield {0: DeltaToolCall(name="kill_me", json_args="{}", tool_call_id="c1")}
        else:
            yield "never said"

    def kill_me() -> str:
        """Kill the agent."""
        guard.kill("agent", "bot", reason="done for today")
        return "killed"

    agent = Agent(
        FunctionModel(stream_function=stream, model_name="gpt-5"),
        name="bot",
        tools=[kill_me],
        capabilities=[AgentGuardCapability(guard)],
    )
    with pytest.raises(PolicyViolationError, match="done for today"):
        async with agent.iter("go") as run:
            async for node in run:
                if Agent.is_model_request_node(node):
                    async with node.stream(run.ctx) as events:
                        async for _ in events:
                            pass
    assert calls == [1]


async def test_a_request_that_raises_counts_as_failed(make_guard: MakeGuard, spans: Spans) -> None:
    guard = make_guard()

    def broken(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        raise ConnectionError("provider down")

    agent = Agent(
        FunctionModel(broken, model_name="gpt-5"), capabilities=[AgentGuardCapability(guard)]
    )
    with pytest.raises(ConnectionError):
        await agent.run("hi")
    counts = guard.counts(action="llm")
    assert (counts.executed, counts.failed) == (1, 1)
    (span,) = [s for s in spans.exporter.get_finished_spans() if s.name == "chat gpt-5"]
    assert (span.attributes or {})["error.type"] == "ConnectionError"


async def test_a_capability_given_to_one_run_guards_that_run(make_guard: MakeGuard) -> None:
    guard = make_guard()
    guard.kill("tool", "llm")
    agent = bot(Scripted(), None)
    assert (await agent.run("hi")).output == "done"  # not guarded
    with pytest.raises(PolicyViolationError):
        await agent.run("hi", capabilities=[AgentGuardCapability(guard)])


class Answer(BaseModel):
    city: str


async def test_message_mode_with_a_structured_output_asks_again_and_is_refused_again(
    make_guard: MakeGuard,
) -> None:
    from pydantic_ai.exceptions import UnexpectedModelBehavior

    guard = make_guard()
    guard.kill("agent", "bot")
    agent = bot(Scripted(), AgentGuardCapability(guard, on_block="message"), output_type=Answer)
    with pytest.raises(UnexpectedModelBehavior):
        await agent.run("hi")
    assert len(guard.interventions()) >= 2  # why README says: use on_block="raise" there


def test_bad_arguments_name_the_field() -> None:
    with pytest.raises(InvalidInputError, match="on_block"):
        AgentGuardCapability(on_block="ignore")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="prices"):
        AgentGuardCapability(prices=[("gpt-5", 1.0)])  # type: ignore[arg-type]


class TestContract(IntegrationContract):
    """``AgentGuardCapability`` keeps the integration contract: the body is the model's
    answer, the action ``llm``, the agent's name its agent id."""

    action = "llm"
    sync_path = False  # Agent.run_sync cannot run inside the test's event loop
    found_agent = "pa-agent"

    def make(self, guard: Guard, body: Body, *, on_block: str | None, **ids: str) -> Any:
        capability = AgentGuardCapability(guard, on_block=on_block or "raise", **ids)

        def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
            return ModelResponse(parts=[TextPart(body())])

        return capability, FunctionModel(respond, model_name="gpt-5")

    async def call(self, made: Any, *, sync: bool) -> Any:
        capability, model = made
        capabilities = [capability] if capability else []
        agent = Agent(model, name="pa-agent", capabilities=capabilities)
        return (await agent.run("hi")).output

    def undo(self, made: Any) -> Any:
        return None, made[1]  # the agent without the capability

    def refusal(self, outcome: Any) -> str | None:
        if isinstance(outcome, str):
            return outcome if outcome.startswith("Stopped: ") else None
        return super().refusal(outcome)
