"""CrewAI: the tool-call hooks, in real Crew and Agent runs with a scripted LLM (no network).

CrewAI cannot share the test venv with ``all`` (it pins openai<3, mcp<2 and pydantic<2.13), so
these tests skip there; ``make test-crewai`` runs them in a venv of their own.
"""

from __future__ import annotations

import asyncio
import json
import os
import pickle
import uuid
from typing import TYPE_CHECKING, Any

import pytest
from integration_contract import Body, IntegrationContract

# Before CrewAI is imported: no anonymous telemetry, no trace upload, no first-run prompt, and
# its run records under a directory of the tests' own (instead of one named after the cwd).
os.environ.update(
    CREWAI_DISABLE_TELEMETRY="true",
    CREWAI_DISABLE_TRACKING="true",
    CREWAI_TRACING_ENABLED="false",
    CREWAI_STORAGE_DIR="agentguard-tests",
)
pytest.importorskip(
    "crewai",
    reason="CrewAI cannot share this venv with `all` (it pins openai<3 and mcp<2): "
    "`make test-crewai` runs these tests in a venv of their own",
)

from crewai import Agent, Crew, Task
from crewai.execution import clear_execution_uuid, get_execution_uuid, set_execution_uuid
from crewai.hooks.dispatch import HookAborted, InterceptionPoint, get_global_hook_list
from crewai.llms.base_llm import BaseLLM
from crewai.tools import BaseTool, tool
from crewai.tools.base_tool import Tool
from crewai.tools.structured_tool import CrewStructuredTool
from crewai.tools.tool_failure import ToolFailure
from pydantic import Field

from agentguard import (
    Guard,
    GuardNotConfiguredError,
    InvalidInputError,
    KillStateUnavailableError,
    MemoryStore,
    PolicyViolationError,
    configure,
    scope,
)
from agentguard.integrations.crewai import (
    CrewAIKillStateUnavailableError,
    CrewAIPolicyViolationError,
    KillSwitchHooks,
    install,
    uninstall,
)
from agentguard.sources import LocalSource

if TYPE_CHECKING:
    from collections.abc import Iterator

    from conftest import HardBlock, MakeGuard

# CrewAI trips its own deprecations (allow_code_execution, function_calling_llm) on every run.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:crewai.*")

Call = tuple[str, dict[str, Any]]


def tool_results(messages: Any) -> list[str]:
    """The tool results an LLM was sent so far: tool messages (native function calling) or
    ``Observation:`` lines of ReAct steps."""
    if isinstance(messages, str):
        return []
    native = [str(m["content"]) for m in messages if m.get("role") == "tool"]
    react = [
        str(m["content"]).split("\nObservation: ", 1)[1].strip()
        for m in messages
        if m.get("role") == "assistant" and "\nObservation: " in str(m.get("content") or "")
    ]
    return native or react


class ScriptedLLM(BaseLLM):
    """A model that makes ``calls`` (tool name, arguments), one per turn, then answers with the
    tool results it was sent, joined by `` | ``: as native tool calls, or as ReAct text when
    ``native`` is False. It keeps what it was sent. No network."""

    calls: list[Call] = Field(default_factory=list)
    native: bool = True
    sent: list[tuple[Any, Any]] = Field(default_factory=list)  # (messages, tools) per turn

    def call(
        self,
        messages: Any,
        tools: Any = None,
        callbacks: Any = None,
        available_functions: Any = None,
        from_task: Any = None,
        from_agent: Any = None,
        response_model: Any = None,
    ) -> Any:
        self.sent.append((messages, tools))
        results = tool_results(messages)
        if len(results) < len(self.calls):
            name, arguments = self.calls[len(results)]
            if self.native:
                function = {"name": name, "arguments": json.dumps(arguments)}
                return [
                    {"id": f"call-{len(results) + 1}", "type": "function", "function": function}
                ]
            return f"Thought: next\nAction: {name}\nAction Input: {json.dumps(arguments)}"
        answer = " | ".join(results)
        return answer if self.native else f"Thought: done\nFinal Answer: {answer}"

    def supports_function_calling(self) -> bool:
        return self.native

    def get_input_tokens_count(self, messages: Any, tools: Any = None, **kwargs: Any) -> int:
        return 1  # the base class estimates, with a warning per call


def mailer(*tools: BaseTool, calls: list[Call], native: bool = True) -> tuple[Agent, ScriptedLLM]:
    llm = ScriptedLLM(model="scripted", calls=calls, native=native)
    agent = Agent(
        role="mailer", goal="Mail everyone.", backstory="A mailer.", tools=list(tools), llm=llm
    )
    return agent, llm


def crew_of(agent: Agent) -> Crew:
    task = Task(description="Mail everyone.", expected_output="Who got mail.", agent=agent)
    return Crew(agents=[agent], tasks=[task])


SEND_A: Call = ("send_email", {"to": "a@x.com"})
SEND_B: Call = ("send_email", {"to": "b@x.com"})


def send_email_tool(sent: list[str], then: Any = None) -> BaseTool:
    @tool("send_email")
    def send_email(to: str) -> str:
        """Send an email."""
        sent.append(to)
        if then is not None:
            then()
        return f"sent to {to}"

    return send_email


@pytest.fixture(autouse=True)
def uninstalled() -> Iterator[None]:
    yield
    uninstall()


@pytest.fixture
def run_id() -> Iterator[str]:
    """The run id CrewAI's next kickoff takes (bound before it, as a host does)."""
    token = set_execution_uuid("campaign-7")
    yield "campaign-7"
    clear_execution_uuid(token)


@pytest.mark.parametrize("native", [True, False], ids=["native", "react"])
def test_a_killed_agent_is_stopped_before_its_tool_runs(
    make_guard: MakeGuard, hard_block: HardBlock, run_id: str, native: bool
) -> None:
    """The refusal ends ``Crew.kickoff`` itself: no task retry, no further model turn."""
    guard = make_guard()
    sent: list[str] = []

    def kill() -> None:
        guard.kill("agent", "mailer", reason="Broken link in template", actor="usr_abc")

    agent, llm = mailer(send_email_tool(sent, kill), calls=[SEND_A, SEND_B], native=native)
    install(guard)
    with pytest.raises(PolicyViolationError, match="Broken link in template") as caught:
        crew_of(agent).kickoff()

    assert sent == ["a@x.com"]  # the second call never reached the body
    assert len(llm.sent) == 2  # and the model was not asked again
    block = hard_block(guard)
    assert (block.action, block.agent_id, block.run_id) == ("send_email", "mailer", run_id)
    assert caught.value.intervention_id == block.id
    assert type(caught.value) is CrewAIPolicyViolationError
    counts = guard.counts(action="send_email")
    assert (counts.executed, counts.refused, counts.failed) == (1, 1, 0)


async def test_the_async_kickoffs_end_with_the_refusal_too(make_guard: MakeGuard) -> None:
    guard = make_guard()
    guard.kill("tool", "send_email", reason="provider down")
    sent: list[str] = []
    install(guard)
    agent, _ = mailer(send_email_tool(sent), calls=[SEND_A])
    with pytest.raises(PolicyViolationError, match="provider down"):
        await agent.kickoff_async("Mail a@x.com.")
    agent, _ = mailer(send_email_tool(sent), calls=[SEND_A])
    with pytest.raises(PolicyViolationError, match="provider down"):
        await crew_of(agent).akickoff()
    assert sent == [] and len(guard.interventions()) == 2


@pytest.mark.parametrize("native", [True, False], ids=["native", "react"])
def test_on_block_message_tells_the_model_and_the_run_goes_on(
    make_guard: MakeGuard, native: bool
) -> None:
    guard = make_guard()
    guard.kill("agent", "mailer", reason="spam wave", actor="usr_ops")
    sent: list[str] = []
    agent, llm = mailer(send_email_tool(sent), calls=[SEND_A], native=native)
    install(guard, on_block="message")

    output = crew_of(agent).kickoff()

    assert sent == []
    (told,) = tool_results(llm.sent[-1][0])  # what the model got instead of the tool's result
    assert told.startswith("Error: 'send_email' refused: agent 'mailer' was killed by usr_ops")
    assert "spam wave" in told and "blocked by hook" not in told
    assert "spam wave" in output.raw  # the model answered from it: the run went on


def test_the_run_id_is_crewai_s_execution_id(make_guard: MakeGuard) -> None:
    """Unbound, the run id is the one CrewAI makes for each kickoff."""
    guard = make_guard()
    runs: list[str | None] = []

    def kill() -> None:
        runs.append(get_execution_uuid())  # what CrewAI calls this run
        guard.kill("tool", "send_email")

    install(guard, on_block="message")
    for _ in range(2):
        agent, _ = mailer(send_email_tool([], kill), calls=[SEND_A, SEND_B])
        agent.kickoff("Mail them.")  # the second call is refused
        guard.revive("tool", "send_email")
    second, first = (block.run_id for block in guard.interventions())  # newest first
    assert [first, second] == runs and first != second
    assert first is not None and str(uuid.UUID(first)) == first


def test_fixed_ids_win_then_agentguard_scope_then_crewai_s(
    make_guard: MakeGuard, run_id: str
) -> None:
    guard = make_guard()
    guard.kill("tool", "send_email")
    recorded: list[tuple[str | None, str | None]] = []

    def kickoff(**ids: str) -> None:
        install(guard, on_block="message", **ids)
        agent, _ = mailer(send_email_tool([]), calls=[SEND_A])
        crew_of(agent).kickoff()
        last = guard.interventions()[0]  # newest first
        recorded.append((last.agent_id, last.run_id))

    kickoff()
    with scope(agent_id="scoped", run_id="scoped-run"):
        kickoff()
        kickoff(agent_id="fixed")
    assert recorded == [
        ("mailer", run_id),
        ("scoped", "scoped-run"),
        ("fixed", "scoped-run"),
    ]


def test_the_agents_tools_and_their_schemas_stay_as_they_are(make_guard: MakeGuard) -> None:
    """The hooks touch no tool: the model is offered the same tools, guarded or not."""
    sent: list[str] = []
    send_email = send_email_tool(sent)

    def offered() -> Any:
        agent, llm = mailer(send_email, calls=[SEND_A])
        agent.kickoff("Mail a@x.com.")
        assert agent.tools == [send_email] and agent.tools[0] is send_email
        return llm.sent[0][1]

    plain = offered()
    install(make_guard())
    guarded = offered()
    assert guarded == plain and plain[0]["function"]["name"] == "send_email"
    assert plain[0]["function"]["parameters"]["properties"]["to"]["type"] == "string"
    assert type(send_email) is Tool and sent == ["a@x.com", "a@x.com"]


class Flaky(BaseTool):
    """A tool class of its own (``_run``), failing ``failures`` times before it works."""

    name: str = "lookup"
    description: str = "Look something up."
    failures: int = 0

    def _run(self, query: str) -> str:
        if self.failures:
            self.failures -= 1
            raise RuntimeError("backend down")
        return f"found {query}"


LOOKUP: Call = ("lookup", {"query": "x"})


@pytest.mark.parametrize("native", [True, False], ids=["native", "react"])
def test_a_tool_body_that_raises_counts_as_failed(make_guard: MakeGuard, native: bool) -> None:
    """CrewAI shows the model the error and goes on; the guard still counts the failure."""
    guard = make_guard()
    install(guard)
    agent, llm = mailer(Flaky(failures=100), calls=[LOOKUP], native=native)
    agent.kickoff("Look it up.")
    (told,) = tool_results(llm.sent[-1][0])
    assert "backend down" in told
    counts = guard.counts(action="lookup")
    assert (counts.executed, counts.refused, counts.failed) == (1, 0, 1)


def test_a_react_retry_that_works_counts_as_done(make_guard: MakeGuard) -> None:
    """CrewAI's ReAct path retries a raising tool within the same call: the last try counts."""
    guard = make_guard()
    install(guard)
    agent, _ = mailer(Flaky(failures=1), calls=[LOOKUP], native=False)
    assert agent.kickoff("Look it up.").raw.startswith("found x")
    counts = guard.counts(action="lookup")
    assert (counts.executed, counts.failed) == (1, 0)


def test_a_tool_failure_result_counts_as_failed(make_guard: MakeGuard) -> None:
    @tool("lookup")
    def lookup(query: str) -> ToolFailure:
        """Look something up."""
        return ToolFailure(message="no such record", code="not_found")

    guard = make_guard()
    install(guard)
    agent, _ = mailer(lookup, calls=[LOOKUP])
    assert "no such record" in agent.kickoff("Look it up.").raw
    assert guard.counts(action="lookup").failed == 1


def test_install_twice_replaces_the_settings_and_uninstall_undoes_it(
    make_guard: MakeGuard,
) -> None:
    before = get_global_hook_list(InterceptionPoint.PRE_TOOL_CALL)
    after = get_global_hook_list(InterceptionPoint.POST_TOOL_CALL)

    def bodies() -> list[Any]:
        return [
            BaseTool.__dict__["run"],
            Tool.__dict__["run"],
            CrewStructuredTool.__dict__["invoke"],
        ]

    plain = bodies()
    first = install(make_guard())
    guard = make_guard()
    second = install(guard, on_block="message", agent_id="fixed")
    assert second is first and isinstance(first, KillSwitchHooks)
    assert before.count(first.before_tool_call) == 1 and after.count(first.after_tool_call) == 1
    assert first.gate.resolve() is guard and first.gate.on_block == "message"
    assert all(a is not b for a, b in zip(bodies(), plain, strict=True))  # the body watchers

    assert uninstall() is True and uninstall() is False
    assert first.before_tool_call not in before and first.after_tool_call not in after
    assert all(a is b for a, b in zip(bodies(), plain, strict=True))
    guard.kill("tool", "send_email")
    sent: list[str] = []
    agent, _ = mailer(send_email_tool(sent), calls=[SEND_A])
    agent.kickoff("Mail a@x.com.")
    assert sent == ["a@x.com"] and guard.interventions() == []


def test_bad_settings_are_named(make_guard: MakeGuard) -> None:
    with pytest.raises(InvalidInputError, match="on_block"):
        install(on_block="stop")  # type: ignore[arg-type]
    with pytest.raises(
        TypeError, match=r"^install\(\) got an unexpected keyword argument 'agentid'"
    ):
        install(agentid="bot")  # type: ignore[call-arg]
    assert uninstall() is False  # nothing was installed
    install(make_guard(), agent_id="bot", run_id="r1", mission_id="m1")  # the right ones


def test_a_refusal_without_kill_state_ends_the_run_as_kill_state_unavailable() -> None:
    """A guard whose kill state went stale refuses (fail closed); the error keeps its class."""
    source = LocalSource(MemoryStore(), "local")
    source.index.fresh_until = 0.0  # long stale
    sent: list[str] = []
    with Guard(source) as guard:
        install(guard)
        agent, _ = mailer(send_email_tool(sent), calls=[SEND_A])
        with pytest.raises(KillStateUnavailableError) as caught:
            agent.kickoff("Mail a@x.com.")
    assert sent == [] and type(caught.value) is CrewAIKillStateUnavailableError
    assert type(pickle.loads(pickle.dumps(caught.value))) is KillStateUnavailableError


def test_a_call_that_cannot_be_checked_is_not_run() -> None:
    """CrewAI runs the tool past a hook's error unless it is a HookAborted: fail closed."""
    configure(None)
    install()  # no guard given, none configured
    sent: list[str] = []
    agent, llm = mailer(send_email_tool(sent), calls=[SEND_A])
    with pytest.raises(HookAborted, match="agentguard.configure") as caught:
        crew_of(agent).kickoff()
    assert sent == [] and len(llm.sent) == 1
    assert isinstance(caught.value.__cause__, GuardNotConfiguredError)


class TestContract(IntegrationContract):
    """The hooks keep the integration contract, driven through ``Agent.kickoff``."""

    found_agent = "researcher"  # the agent's role

    def make(self, guard: Guard, body: Body, *, on_block: str | None, **ids: str) -> Any:
        install(guard, on_block=on_block or "raise", **ids)  # type: ignore[arg-type]

        @tool("lookup")
        def lookup(query: str) -> str:
            """Look something up."""
            return body()

        llm = ScriptedLLM(model="scripted", calls=[LOOKUP])
        return Agent(
            role="researcher", goal="Find it.", backstory="Finds.", tools=[lookup], llm=llm
        )

    async def call(self, made: Any, *, sync: bool) -> Any:
        if sync:  # kickoff from plain sync code (in a thread: this test runs on a loop)
            output = await asyncio.to_thread(made.kickoff, "Look it up.")
        else:
            output = await made.kickoff_async("Look it up.")
        return output.raw

    def undo(self, made: Any) -> Any:
        uninstall()
        return made

    def refusal(self, outcome: Any) -> str | None:
        if isinstance(outcome, PolicyViolationError):
            return str(outcome)
        return outcome if isinstance(outcome, str) and " refused: " in outcome else None
