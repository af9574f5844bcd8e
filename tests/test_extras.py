"""Each extra installs and works alone: ``pip install "agentguard[server]"`` in a fresh venv.

The package is built into a wheel once; each extra is installed from it (with its dependencies
from the package index) into its own empty venv, and a short program imports and runs what the
extra is for. Nothing of this checkout or of the test venv is visible there.

The installs use ``uv`` when it is installed (the ``dev`` extra has it): about 1-5 s per extra
against 15-25 s with pip on a warm cache. Without it, pip does the same, slower.

Without a reachable package index the tests skip, saying so; under CI (``CI=true``, set by
.ci/run) they fail instead, like every other missing service.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

CORE = """
import agentguard
from agentguard import Guard, PolicyViolationError
from agentguard.client import Client

guard = Guard()
@guard.guarded_action(agent_id="bot")
def send(to): return to
assert send("a") == "a"
guard.kill("agent", "bot", reason="extras test")
try:
    send("b")
except PolicyViolationError:
    pass
else:
    raise AssertionError("the kill did not refuse the call")
Client("http://127.0.0.1:1").close()
"""

SERVER = """
from starlette.testclient import TestClient
from agentguard.server import KillSwitchServer

server = KillSwitchServer()
server.start()
token = server.create_key("org", owner="usr", scopes=["admin"])
client = TestClient(server.app, headers={"Authorization": f"Bearer {token}"})
r = client.post("/api/v1/kill-switch/kill", json={"target_type": "agent", "target_id": "bot"})
assert r.status_code == 200, r.text
r = client.get("/api/v1/kill-switch/check", params={"target_type": "agent", "target_id": "bot"})
assert r.json()["is_killed"] is True, r.text
r = client.get("/metrics")
assert r.status_code == 200 and 'agentguard_kills_active{target_type="agent"} 1.0' in r.text, r.text
server.close()

import uvicorn, alembic, jwt, itsdangerous, sse_starlette, prometheus_client  # noqa: the stack
from click.testing import CliRunner
from agentguard.cli import main
result = CliRunner().invoke(main, ["serve", "--help"])
assert result.exit_code == 0, result.output
"""

POSTGRES = (
    SERVER
    + """
from agentguard.server.store.database import Database
Database("postgresql://nobody@127.0.0.1:1/none").engine.dialect.dbapi  # loads psycopg
import psycopg
"""
)

LANGCHAIN = """
from langchain_core.tools import tool
from agentguard import Guard, PolicyViolationError
from agentguard.integrations.langchain import AgentGuardMiddleware, guard_tools

@tool
def search(query: str) -> str:
    "Search."
    return query

guard = Guard()
(guarded,) = guard_tools([search], guard=guard)
assert guarded.invoke({"query": "x"}) == "x"
AgentGuardMiddleware(guard=guard)
"""

OPENAI_AGENTS = """
from agents import function_tool
from agentguard import Guard
from agentguard.integrations.openai_agents import guard_tools, kill_switch_guardrail

@function_tool
def search(query: str) -> str:
    "Search."
    return query

guard = Guard()
guard_tools([search], guard=guard)
"""

MCP = """
from mcp.server.mcpserver import MCPServer
from agentguard import Guard
from agentguard.integrations.mcp import AgentGuardMiddleware, install, uninstall

server = MCPServer("extras-test")
install(server, guard=Guard())
uninstall(server)
"""

PYDANTIC_AI = """
from pydantic_ai.toolsets import FunctionToolset
from agentguard import Guard
from agentguard.integrations.pydantic_ai import guard_toolset, unguard_toolset

def search(query: str) -> str:
    "Search."
    return query

toolset = FunctionToolset([search])
assert unguard_toolset(guard_toolset(toolset, guard=Guard())) is toolset
"""

SMOLAGENTS = """
from smolagents import Tool
from agentguard import Guard
from agentguard.integrations.smolagents import guard_tools, unguard_tools

class Search(Tool):
    name = "search"
    description = "Search."
    inputs = {"query": {"type": "string", "description": "What."}}
    output_type = "string"

    def forward(self, query: str) -> str:
        return query

tool = Search()
(guarded,) = guard_tools([tool], guard=Guard())
assert guarded(query="x") == "x" and unguard_tools([guarded]) == [tool]
"""

LLAMA_INDEX = """
from llama_index.core.tools import FunctionTool
from agentguard import Guard
from agentguard.integrations.llama_index import guard_tools, unguard_tools

def search(query: str) -> str:
    "Search."
    return query

tool = FunctionTool.from_defaults(search)
(guarded,) = guard_tools([tool], guard=Guard())
assert guarded.call(query="x").content == "x"
assert unguard_tools([guarded]) == [tool]
"""

AUTOGEN = """
import asyncio
from autogen_core import CancellationToken
from autogen_core.tools import FunctionTool, StaticWorkbench
from agentguard import Guard
from agentguard.integrations.autogen import guard_tools, guard_workbench, unguard_tools

def search(query: str) -> str:
    "Search."
    return query

tool = FunctionTool(search, description="Search.")
(guarded,) = guard_tools([tool], guard=Guard())
assert asyncio.run(guarded.run_json({"query": "x"}, CancellationToken())) == "x"
assert unguard_tools([guarded]) == [tool]
workbench = guard_workbench(StaticWorkbench([tool]), guard=Guard())
result = asyncio.run(workbench.call_tool("search", {"query": "y"}))
assert result.to_text() == "y" and not result.is_error
"""

GOOGLE_ADK = """
from google.adk.agents import LlmAgent
from google.adk.runners import InMemoryRunner
from agentguard import Guard
from agentguard.integrations.google_adk import AgentGuardPlugin, guard_runner, unguard_runner

def search(query: str) -> str:
    "Search."
    return query

runner = guard_runner(InMemoryRunner(agent=LlmAgent(name="bot", tools=[search])), guard=Guard())
assert [type(p) for p in runner.plugin_manager.plugins] == [AgentGuardPlugin]
assert unguard_runner(runner).plugin_manager.plugins == []
"""

OPENAI = """
import httpx2
from openai import OpenAI
from agentguard import Guard, PolicyViolationError
from agentguard.integrations.openai import guard_openai, unguard_openai

def api(request):
    usage = {"prompt_tokens": 1000000, "completion_tokens": 0, "total_tokens": 1000000}
    return httpx2.Response(200, json={"id": "c1", "object": "chat.completion", "created": 1,
        "model": "gpt-5", "choices": [], "usage": usage})

guard = Guard()
plain = OpenAI(api_key="sk-test")
client = guard_openai(plain, guard, prices={"gpt-5": (1.25, 10.0)},
                      transport=httpx2.MockTransport(api))
client.chat.completions.create(model="gpt-5", messages=[])
assert guard.total_cost() == 1.25 and unguard_openai(client) is plain
guard.kill("tool", "llm")
try:
    client.chat.completions.create(model="gpt-5", messages=[])
    raise AssertionError("not refused")
except PolicyViolationError:
    pass
"""

ANTHROPIC = """
import httpx2
from anthropic import Anthropic
from agentguard import Guard, PolicyViolationError
from agentguard.integrations.anthropic import guard_anthropic

def api(request):
    return httpx2.Response(200, json={"id": "m1", "type": "message", "role": "assistant",
        "model": "claude-haiku-4-5", "content": [], "stop_reason": "end_turn",
        "usage": {"input_tokens": 1000000, "output_tokens": 0}})

guard = Guard()
client = guard_anthropic(Anthropic(api_key="sk-test"), guard,
                         prices={"claude-haiku-4-5": (1.0, 5.0)},
                         transport=httpx2.MockTransport(api))
client.messages.create(model="claude-haiku-4-5", max_tokens=8, messages=[])
assert guard.total_cost() == 1.0
guard.kill("tool", "llm")
try:
    client.messages.create(model="claude-haiku-4-5", max_tokens=8, messages=[])
    raise AssertionError("not refused")
except PolicyViolationError:
    pass
"""

CREWAI = """
import os
os.environ.update(CREWAI_DISABLE_TELEMETRY="true", CREWAI_TRACING_ENABLED="false")  # offline
from crewai.hooks.dispatch import InterceptionPoint, get_global_hook_list
from agentguard import Guard
from agentguard.integrations.crewai import install, uninstall

hooks = install(guard=Guard())
assert hooks.before_tool_call in get_global_hook_list(InterceptionPoint.PRE_TOOL_CALL)
assert uninstall()
"""

CLI = """
from click.testing import CliRunner
from agentguard.cli import main

unreachable = ["check", "--url", "http://127.0.0.1:1", "agent", "x"]
for args in (["--help"], ["kill", "--help"], unreachable):
    result = CliRunner().invoke(main, args)
    assert "Traceback" not in result.output and not isinstance(result.exception, ImportError), (
        args, result.output, result.exception)
assert "cannot reach the agentguard server" in result.output, result.output
"""

EXTRAS = {
    "core": ("", CORE),
    "cli": ("cli", CLI),
    "server": ("server", SERVER),
    "server+postgres": ("server,postgres", POSTGRES),
    "langchain": ("langchain", LANGCHAIN),
    "openai-agents": ("openai-agents", OPENAI_AGENTS),
    "mcp": ("mcp", MCP),
    "pydantic-ai": ("pydantic-ai", PYDANTIC_AI),
    "smolagents": ("smolagents", SMOLAGENTS),
    "llama-index": ("llama-index", LLAMA_INDEX),
    "autogen": ("autogen", AUTOGEN),
    "google-adk": ("google-adk", GOOGLE_ADK),
    "openai": ("openai", OPENAI),
    "anthropic": ("anthropic", ANTHROPIC),
    "crewai": ("crewai", CREWAI),
}

# What pip and uv print when no index answers (as opposed to a real resolution failure).
_OFFLINE = (
    "Temporary failure in name resolution",
    "Name or service not known",
    "Network is unreachable",
    "NewConnectionError",
    "Failed to establish a new connection",
    "dns error",
    "error sending request",
    "Could not connect",
    "Connection refused",
)


def _uv() -> str | None:
    beside = Path(sys.executable).parent / "uv"
    return str(beside) if beside.exists() else shutil.which("uv")


def _run(argv: list[str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)


def _installed(result: subprocess.CompletedProcess[str], what: str) -> None:
    if result.returncode == 0:
        return
    output = result.stdout + result.stderr
    offline = next((sign for sign in _OFFLINE if sign in output), None)
    if offline and os.environ.get("CI", "").lower() not in ("1", "true", "yes"):
        pytest.skip(f"no package index reachable to install {what} ({offline})")
    pytest.fail(f"installing {what} failed:\n{output[-4000:]}")


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This checkout built into a wheel, from a copy (the build leaves files behind).

    Built once per run: under pytest-xdist the workers share the run's temporary directory,
    and the first to take the lock builds the wheel the others then use.
    """
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    work = shared / "extras-build"
    out = work / "dist"
    with open(shared / "extras-build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        built = sorted(out.glob("agentguard-*.whl"))
        if not built:
            _build(work, out)
            built = sorted(out.glob("agentguard-*.whl"))
    (one,) = built
    return one


def _build(work: Path, out: Path) -> None:
    source = work / "src-copy"
    shutil.rmtree(work, ignore_errors=True)  # what a build that failed half-way left
    shutil.copytree(
        ROOT, source, ignore=shutil.ignore_patterns(
            ".git", ".venv", "build", "*.egg-info", "__pycache__", ".*_cache", "tests",
            "benchmarks", "examples", "docs",
        ),
    )  # fmt: skip
    uv = _uv()
    if uv:
        argv = [uv, "build", "--wheel", "--out-dir", str(out), str(source)]
    else:
        argv = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(out), str(source)]
    _installed(_run(argv), "the build backend")


@pytest.mark.parametrize("name", list(EXTRAS))
def test_each_extra_installs_and_works_alone(name: str, wheel: Path, tmp_path: Path) -> None:
    extra, program = EXTRAS[name]
    venv = tmp_path / "venv"
    requirement = f"agentguard[{extra}] @ {wheel.as_uri()}" if extra else str(wheel)
    uv = _uv()
    if uv:
        _installed(_run([uv, "venv", "-q", "-p", sys.executable, str(venv)]), "a venv")
        install = [uv, "pip", "install", "-q", "-p", str(venv / "bin" / "python"), requirement]
    else:
        _installed(_run([sys.executable, "-m", "venv", "--without-pip", str(venv)]), "a venv")
        python = str(venv / "bin" / "python")
        install = [sys.executable, "-m", "pip", "--python", python, "install", "-q", requirement]
    _installed(_run(install), f"agentguard[{extra}]" if extra else "agentguard")
    result = _run([str(venv / "bin" / "python"), "-c", program], timeout=120)
    assert result.returncode == 0, f"agentguard[{extra}] alone:\n{result.stderr[-4000:]}"
