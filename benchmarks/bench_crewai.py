"""Allowed-path overhead of the CrewAI integration against the same kickoff unguarded.

CrewAI cannot be installed beside the frameworks bench_integrations.py imports (it pins
openai<3 and mcp<2), so its rows are measured here, in the venv ``make test-crewai`` builds.
Same method as bench_integrations.py: all three scope ids set, 1,000 unrelated active kills in
the index, plain and guarded samples interleaved, the best of ``--repeats`` samples of
``calls × --scale`` calls (short samples, many of them: CrewAI's calls take about a millisecond
and a kickoff tens of them, and a busy machine disturbs long samples more); in the kickoff row a
scripted LLM (no network) makes one native tool call, then answers.

    .venv-crewai/bin/python benchmarks/bench_crewai.py [--repeats 25] [--scale 1.0] [--update]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
os.environ.update(CREWAI_DISABLE_TELEMETRY="true", CREWAI_TRACING_ENABLED="false")

from crewai import Agent, Crew, Task  # noqa: E402
from crewai.hooks.dispatch import InterceptionPoint, register, unregister  # noqa: E402
from crewai.llms.base_llm import BaseLLM  # noqa: E402
from crewai.tools import tool  # noqa: E402
from crewai.utilities.agent_utils import (  # noqa: E402
    execute_single_native_tool_call,
    setup_native_tools,
)

from agentguard import Guard, scope  # noqa: E402
from agentguard.integrations import crewai as ag_crewai  # noqa: E402

Loop = Callable[[int], None]
IDS = {"agent_id": "bench-bot", "run_id": "run-1", "mission_id": "mission-1"}


def per_call_ns(loop: Loop, calls: int) -> float:
    start = time.perf_counter_ns()
    loop(calls)
    return (time.perf_counter_ns() - start) / calls


def compare(plain: Loop, guarded: Loop, calls: int, repeats: int) -> tuple[float, float, float]:
    """Best per-call ns of each loop, samples interleaved so drift hits both alike, and the
    spread (max - min) of the plain samples: differences below it are noise."""
    plain(max(1, calls // 10))
    guarded(max(1, calls // 10))  # warm-up
    a, b = [], []
    for _ in range(repeats):
        a.append(per_call_ns(plain, calls))
        b.append(per_call_ns(guarded, calls))
    return min(a), min(b), max(a) - min(a)


class OneToolCall(BaseLLM):
    """Calls ``lookup`` once, then answers with its result."""

    def call(self, messages: Any, tools: Any = None, *args: Any, **kwargs: Any) -> Any:
        results = [m["content"] for m in messages if m.get("role") == "tool"]
        if results:
            return str(results[0])
        arguments = json.dumps({"query": "x"})
        return [
            {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": arguments}}
        ]

    def supports_function_calling(self) -> bool:
        return True

    def get_input_tokens_count(self, messages: Any, tools: Any = None, **kwargs: Any) -> int:
        return 1


@tool("lookup")
def lookup(query: str) -> str:
    """Look something up."""
    return query


def agent() -> Agent:
    return Agent(
        role="bench-bot",
        goal="Look up.",
        backstory="Bench.",
        tools=[lookup],
        llm=OneToolCall(model="s"),
    )


def crew() -> Crew:
    bot = agent()
    return Crew(
        agents=[bot], tasks=[Task(description="Look x up.", expected_output="x", agent=bot)]
    )


def tool_call_step(bot: Agent) -> Callable[[], Any]:
    """The step an agent's executor runs for one native tool call: argument parsing, events,
    the hooks, the tool, its result."""
    _, available, _ = setup_native_tools([lookup])
    structured = [lookup.to_structured_tool()]
    call = {
        "id": "c1",
        "type": "function",
        "function": {"name": "lookup", "arguments": '{"query": "x"}'},
    }

    def step() -> Any:
        return execute_single_native_tool_call(
            call,
            available_functions=available,
            original_tools=[lookup],
            structured_tools=structured,
            tools_handler=None,
            agent=bot,
            task=None,
            crew=None,
            event_source=bot,
        )

    return step


def looped(call: Callable[[], Any], around: Callable[[], Callable[[], Any]] | None = None) -> Loop:
    """``n`` calls; ``around()`` installs something first and returns its undo."""

    def loop(n: int) -> None:
        undo = around() if around is not None else None
        try:
            for _ in range(n):
                call()
        finally:
            if undo is not None:
                undo()

    return loop


def guarded(guard: Guard) -> Callable[[], Callable[[], Any]]:
    def install() -> Callable[[], Any]:
        ag_crewai.install(guard)
        return ag_crewai.uninstall

    return install


def pass_through() -> Callable[[], Any]:
    """A do-nothing hook pair: what CrewAI's own hook dispatch costs."""

    def before(context: Any) -> None:
        return None

    def after(context: Any) -> None:
        return None

    register(InterceptionPoint.PRE_TOOL_CALL, before)
    register(InterceptionPoint.POST_TOOL_CALL, after)

    def undo() -> None:
        unregister(InterceptionPoint.PRE_TOOL_CALL, before)
        unregister(InterceptionPoint.POST_TOOL_CALL, after)

    return undo


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=25)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every sample's calls")
    parser.add_argument("--update", action="store_true", help="write the section of RESULTS.md")
    args = parser.parse_args()
    logging.disable(logging.WARNING)

    guard = Guard()
    for i in range(1_000):
        guard.kill(("agent", "run", "mission", "tool")[i % 4], f"unrelated-{i}")

    step = tool_call_step(agent())
    kickoff = crew().kickoff
    cases = [
        (
            "native tool call step (execute_single_native_tool_call)",
            looped(step),
            looped(step, guarded(guard)),
            300,
        ),
        (
            "same, vs. a pass-through hook pair",
            looped(step, pass_through),
            looped(step, guarded(guard)),
            300,
        ),
        ("Crew.kickoff, 1 tool call", looped(kickoff), looped(kickoff, guarded(guard)), 8),
    ]
    rows = []
    with scope(**IDS):
        for call, plain, wrapped_loop, calls in cases:
            n = max(1, int(calls * args.scale))
            base, wrapped, spread = compare(plain, wrapped_loop, n, args.repeats)
            rows.append(("crewai", call, base, wrapped, spread))
            print(f"crewai {call:56} {base / 1000:9.2f} µs {wrapped / 1000:9.2f} µs", flush=True)
    assert not guard.interventions(), "the benchmark must only take the allowed path"
    guard.close()

    lines = [
        "| integration | framework call | plain (µs) | guarded (µs) | overhead (µs) | ratio "
        "| plain spread (µs) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for integration, call, base, wrapped, spread in rows:
        lines.append(
            f"| {integration} | {call} | {base / 1000:.2f} | {wrapped / 1000:.2f} | "
            f"{(wrapped - base) / 1000:+.2f} | {wrapped / base:.3f}x | {spread / 1000:.2f} |"
        )
    table = "\n".join(lines)
    print()
    print(table)
    if args.update:
        from _report import write_section

        write_section(
            "bench_crewai",
            "## CrewAI integration overhead (allowed path)\n\n"
            f"`.venv-crewai/bin/python benchmarks/bench_crewai.py --repeats {args.repeats} "
            f"--scale {args.scale:g}` (CrewAI has a venv of its own; same set-up as the table "
            "above): CrewAI's step for one native tool call, and a crew kickoff with one tool "
            "call, unguarded and with `agentguard.integrations.crewai.install()`. The first row "
            "includes CrewAI's own cost of dispatching any hook (an event per dispatch); the "
            "second compares against a do-nothing hook pair, leaving agentguard's share. "
            "Measured on a shared, busy machine: a difference below the plain samples' spread "
            "is noise.\n\n" + table,
        )


if __name__ == "__main__":
    main()
