"""Google ADK: the plugin on real Runners, driven by a scripted BaseLlm (no network)."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from typing import TYPE_CHECKING, Any

import pytest
from google.adk.agents import LlmAgent
from google.adk.apps import App
from google.adk.models.base_llm import BaseLlm
from google.adk.models.llm_request import LlmRequest
from google.adk.models.llm_response import LlmResponse
from google.adk.plugins.base_plugin import BasePlugin
from google.adk.runners import InMemoryRunner, Runner
from google.adk.sessions import InMemorySessionService
from google.adk.tools import BaseTool, FunctionTool
from google.adk.tools.agent_tool import AgentTool
from google.adk.tools.base_toolset import BaseToolset
from google.genai import types
from integration_contract import Body, Boom, IntegrationContract

from agentguard import Guard, InvalidInputError, PolicyViolationError, scope
from agentguard.integrations.google_adk import AgentGuardPlugin, guard_runner, unguard_runner

if TYPE_CHECKING:
    from conftest import HardBlock, MakeGuard

Call = tuple[str, dict[str, Any]]


class Scripted(BaseLlm):
    """A model making its turns of tool calls in order, then answering with the tools'
    responses joined by " | ". It finds its place from the request (the function responses
    in it), so one model serves any number of sessions."""

    model: str = "scripted"
    turns: list[list[Call]] = []
    seen: list[LlmRequest] = []

    async def generate_content_async(
        self, llm_request: LlmRequest, stream: bool = False
    ) -> AsyncGenerator[LlmResponse, None]:
        self.seen.append(llm_request)
        answered = [
            part.function_response
            for content in llm_request.contents
            for part in content.parts or []
            if part.function_response is not None
        ]
        step = _turn_after(self.turns, len(answered))
        if step is None:
            text = " | ".join(str(r.response) for r in answered)
            yield LlmResponse(content=types.ModelContent(text or "nothing to do"))
            return
        first, turn = step
        parts = [
            types.Part(function_call=types.FunctionCall(name=name, args=args, id=f"c{first + i}"))
            for i, (name, args) in enumerate(turn, start=1)
        ]
        yield LlmResponse(content=types.Content(role="model", parts=parts))


def _turn_after(turns: list[list[Call]], answered: int) -> tuple[int, list[Call]] | None:
    """The turn to make once ``answered`` calls have their responses, and how many came
    before it."""
    before = 0
    for turn in turns:
        if answered <= before:
            return before, turn
        before += len(turn)
    return None


def script(*turns: Call | list[Call]) -> Scripted:
    return Scripted(turns=[t if isinstance(t, list) else [t] for t in turns], seen=[])


def agent(name: str, model: Scripted, *tools: Any) -> LlmAgent:
    return LlmAgent(name=name, model=model, tools=list(tools), instruction="Use the tools.")


async def run(runner: Runner, session_id: str = "s1", *, sync: bool = False) -> str:
    """One turn of a new session; the last text the agent said."""
    await runner.session_service.create_session(
        app_name=runner.app_name, user_id="u1", session_id=session_id
    )
    message = types.UserContent("go")
    if sync:
        events = list(runner.run(user_id="u1", session_id=session_id, new_message=message))
    else:
        events = [
            e
            async for e in runner.run_async(
                user_id="u1", session_id=session_id, new_message=message
            )
        ]
    texts = [p.text for e in events if e.content for p in e.content.parts or [] if p.text]
    return texts[-1] if texts else ""


def lookup_tool(body: Body) -> Callable[[str], str]:
    def lookup(query: str) -> str:
        """Look something up."""
        return body()

    return lookup


def mailer(guard: Guard, sent: list[str], *, kill: bool) -> Callable[[str], str]:
    def send_email(to: str) -> str:
        """Send an email."""
        sent.append(to)
        if kill:
            guard.kill("agent", "mailer", reason="Broken link in template", actor="usr_abc")
        return "sent"

    return send_email


TWO_MAILS = (("send_email", {"to": "a@x.com"}), ("send_email", {"to": "b@x.com"}))


async def test_tools_and_their_declarations_are_left_as_they_are(make_guard: MakeGuard) -> None:
    lookup = lookup_tool(lambda: "done")
    declared: list[Any] = []
    for guarded in (False, True):
        model = script(("lookup", {"query": "x"}))
        bot = agent("bot", model, lookup)
        runner = InMemoryRunner(agent=bot)
        if guarded:
            assert guard_runner(runner, guard=make_guard()) is runner
        assert await run(runner) == "{'result': 'done'}"
        assert bot.tools == [lookup]
        config = model.seen[0].config
        assert config is not None and config.tools
        declared.append([t.model_dump() for t in config.tools])
    assert declared[0] == declared[1]


@pytest.mark.parametrize("sync", [False, True], ids=["run_async", "run"])
async def test_a_killed_agent_is_stopped_before_its_tool_runs(
    make_guard: MakeGuard, hard_block: HardBlock, sync: bool
) -> None:
    guard = make_guard()
    sent: list[str] = []
    bot = agent("mailer", script(*TWO_MAILS), mailer(guard, sent, kill=True))
    runner = guard_runner(InMemoryRunner(agent=bot), guard=guard)
    with pytest.raises(PolicyViolationError) as caught:
        await run(runner, "campaign-7", sync=sync)
    assert sent == ["a@x.com"]  # the second call never reached the tool
    assert caught.value.reason == "Broken link in template"
    block = hard_block(guard)
    assert (block.action, block.agent_id, block.run_id, block.tool_call_id) == (
        "send_email",
        "mailer",
        "campaign-7",
        "c2",
    )
    assert caught.value.intervention_id == block.id
    counts = guard.counts(action="send_email")
    assert (counts.executed, counts.refused, counts.failed) == (1, 1, 0)


async def test_on_block_message_tells_the_model_and_the_run_goes_on(
    make_guard: MakeGuard,
) -> None:
    guard = make_guard()
    sent: list[str] = []
    guard.kill("agent", "mailer", reason="spam wave", actor="usr_ops")
    bot = agent("mailer", script(*TWO_MAILS), mailer(guard, sent, kill=False))
    runner = guard_runner(InMemoryRunner(agent=bot), guard=guard, on_block="message")
    answer = await run(runner)
    assert sent == []
    refusals = answer.split(" | ")
    assert len(refusals) == 2 and refusals[0].startswith("{'error': \"Error: 'send_email' refused")
    assert all("agent 'mailer' was killed by usr_ops" in r and "spam wave" in r for r in refusals)
    assert len(guard.interventions()) == 2


async def test_a_plugin_on_an_app_refuses_and_adk_wraps_the_raise(make_guard: MakeGuard) -> None:
    guard = make_guard()
    sent: list[str] = []
    guard.kill("agent", "mailer")

    def app() -> App:
        bot = agent("mailer", script(*TWO_MAILS), mailer(guard, sent, kill=False))
        return App(name="mail", root_agent=bot, plugins=[AgentGuardPlugin(guard=guard)])

    with pytest.raises(RuntimeError, match="Error in plugin 'agentguard'") as caught:
        await run(Runner(app=app(), session_service=InMemorySessionService()))
    assert isinstance(caught.value.__cause__, PolicyViolationError)

    runner = Runner(app=app(), session_service=InMemorySessionService())
    (plugin,) = runner.plugin_manager.plugins
    guard_runner(runner, guard=guard)  # keeps the app's plugin; raises the refusal itself
    assert runner.plugin_manager.plugins == [plugin]
    with pytest.raises(PolicyViolationError):
        await run(runner)
    assert sent == [] and len(guard.interventions()) == 2


class AnswersErrors(BasePlugin):
    """A plugin answering every tool error for the model (as ADK's retry plugins do)."""

    def __init__(self) -> None:
        super().__init__("answers-errors")

    async def on_tool_error_callback(
        self, *, tool: Any, tool_args: Any, tool_context: Any, error: Exception
    ) -> dict[str, Any]:
        return {"error": f"failed: {error}"}


async def test_a_failure_answered_by_a_later_plugin_still_counts(make_guard: MakeGuard) -> None:
    guard = make_guard()

    def broken() -> str:
        raise Boom("tool broke")

    bot = agent("bot", script(("lookup", {"query": "x"})), lookup_tool(broken))
    runner = InMemoryRunner(agent=bot)
    runner.plugin_manager.register_plugin(AnswersErrors())
    guard_runner(runner, guard=guard)
    assert [type(p) for p in runner.plugin_manager.plugins] == [AgentGuardPlugin, AnswersErrors]
    assert await run(runner) == "{'error': 'failed: tool broke'}"  # the run went on
    counts = guard.counts(action="lookup")
    assert (counts.executed, counts.refused, counts.failed) == (1, 0, 1)


async def test_each_session_is_its_own_run(make_guard: MakeGuard) -> None:
    guard = make_guard()
    guard.kill("tool", "lookup")
    bot = agent("bot", script(("lookup", {"query": "x"})), lookup_tool(lambda: "done"))
    runner = guard_runner(InMemoryRunner(agent=bot), guard=guard, on_block="message")
    await run(runner, "first")
    await run(runner, "second")  # in the same task: nothing of the first run is left over
    with scope(run_id="scoped"):
        await run(runner, "third")
    newest_first = [i.run_id for i in guard.interventions()]
    assert newest_first == ["scoped", "second", "first"]


# AgentTool builds its nested Runner with the plugins= argument ADK itself deprecates.
@pytest.mark.filterwarnings("ignore:The `plugins` argument is deprecated:DeprecationWarning")
async def test_an_agent_tool_s_calls_run_under_the_caller_s_session(
    make_guard: MakeGuard, hard_block: HardBlock
) -> None:
    guard = make_guard()
    ran: list[str] = []
    researcher = LlmAgent(
        name="researcher",
        description="Researches.",
        model=script(("lookup", {"query": "x"})),
        tools=[lookup_tool(lambda: ran.append("ran") or "done")],
    )
    boss = agent("boss", script(("researcher", {"request": "find x"})), AgentTool(researcher))
    runner = guard_runner(InMemoryRunner(agent=boss), guard=guard)
    guard.kill("run", "ticket-9", reason="runaway research")
    with pytest.raises(PolicyViolationError):
        await run(runner, "ticket-9")
    block = hard_block(guard)
    assert (block.action, block.agent_id, block.run_id) == ("researcher", "boss", "ticket-9")
    guard.revive("run", "ticket-9")
    guard.kill("tool", "lookup")  # now the nested agent's own call is refused
    with pytest.raises(PolicyViolationError):
        await run(runner, "ticket-10")
    nested = guard.interventions()[0]  # the newest
    assert (nested.action, nested.agent_id, nested.run_id) == ("lookup", "researcher", "ticket-10")
    assert ran == []


async def test_a_sub_agent_s_calls_carry_its_own_name(make_guard: MakeGuard) -> None:
    guard = make_guard()
    helper = LlmAgent(
        name="helper",
        description="Helps.",
        model=script(("lookup", {"query": "x"})),
        tools=[lookup_tool(lambda: "done")],
    )
    boss = LlmAgent(
        name="boss",
        model=script(("transfer_to_agent", {"agent_name": "helper"})),
        sub_agents=[helper],
    )
    runner = guard_runner(InMemoryRunner(agent=boss), guard=guard, on_block="message")
    guard.kill("agent", "helper")
    assert "agent 'helper' was killed" in await run(runner, "t1")
    (block,) = guard.interventions()
    assert (block.action, block.agent_id, block.run_id) == ("lookup", "helper", "t1")
    assert guard.counts(action="transfer_to_agent").executed == 1  # the boss's own call


class Lookups(BaseToolset):
    """A toolset handing out one lookup tool."""

    def __init__(self, body: Body) -> None:
        super().__init__()
        self.tool = FunctionTool(lookup_tool(body))

    async def get_tools(self, readonly_context: Any = None) -> list[BaseTool]:
        return [self.tool]


async def test_a_toolset_s_tools_are_checked_too(make_guard: MakeGuard) -> None:
    guard = make_guard()
    ran: list[str] = []
    bot = agent("bot", script(("lookup", {"query": "x"})), Lookups(lambda: ran.append("ran") or ""))
    runner = guard_runner(InMemoryRunner(agent=bot), guard=guard)
    guard.kill("tool", "lookup")
    with pytest.raises(PolicyViolationError):
        await run(runner)
    assert ran == [] and guard.interventions()[0].agent_id == "bot"


async def test_parallel_calls_in_one_turn_are_each_checked(make_guard: MakeGuard) -> None:
    guard = make_guard()
    sent: list[str] = []
    guard.kill("tool", "lookup", reason="flaky index")
    both = [("lookup", {"query": "x"}), ("send_email", {"to": "a@x.com"})]
    bot = agent("bot", script(both), lookup_tool(lambda: "done"), mailer(guard, sent, kill=False))
    runner = guard_runner(InMemoryRunner(agent=bot), guard=guard, on_block="message")
    answer = await run(runner)
    assert sent == ["a@x.com"] and "flaky index" in answer and "{'result': 'sent'}" in answer
    assert [i.action for i in guard.interventions()] == ["lookup"]


def test_guard_runner_is_idempotent_and_undone(make_guard: MakeGuard) -> None:
    guard = make_guard()
    runner = InMemoryRunner(agent=agent("bot", script()))
    guard_runner(runner, guard=guard)
    guard_runner(runner, guard=guard, on_block="message")  # guarding twice is guarding once
    (plugin,) = runner.plugin_manager.plugins
    assert isinstance(plugin, AgentGuardPlugin) and plugin.gate.on_block == "raise"
    assert "run_async" in vars(runner)  # the wrapper raising refusals themselves
    assert unguard_runner(runner) is runner
    assert runner.plugin_manager.plugins == [] and "run_async" not in vars(runner)


def test_bad_arguments_name_the_field(make_guard: MakeGuard) -> None:
    with pytest.raises(InvalidInputError, match="runner"):
        guard_runner(object(), guard=make_guard())  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="on_block"):
        AgentGuardPlugin(on_block="ignore")  # type: ignore[arg-type]


class TestContract(IntegrationContract):
    """The plugin on a guarded runner keeps the integration contract; the agent's name is
    the agent id."""

    found_agent = "adk_agent"

    def make(self, guard: Guard, body: Body, *, on_block: str | None, **ids: str) -> Any:
        bot = agent("adk_agent", script(("lookup", {"query": "x"})), lookup_tool(body))
        return guard_runner(InMemoryRunner(agent=bot), guard, on_block=on_block or "raise", **ids)

    async def call(self, made: Any, *, sync: bool) -> Any:
        self.sessions = getattr(self, "sessions", 0) + 1
        return await run(made, f"s{self.sessions}", sync=sync)

    def undo(self, made: Any) -> Any:
        return unguard_runner(made)

    def refusal(self, outcome: Any) -> str | None:
        if isinstance(outcome, str):
            return outcome if "{'error':" in outcome else None
        return super().refusal(outcome)
