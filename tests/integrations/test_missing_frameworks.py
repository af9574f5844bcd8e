"""Importing an integration without its framework names the extra to install."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    ("module", "framework", "extra"),
    [
        ("langchain", "langchain_core", "langchain"),
        ("langchain", "langchain", "langchain"),
        ("openai_agents", "agents", "openai-agents"),
        ("mcp", "mcp", "mcp"),
        ("pydantic_ai", "pydantic_ai", "pydantic-ai"),
        ("smolagents", "smolagents", "smolagents"),
        ("llama_index", "llama_index", "llama-index"),
        ("autogen", "autogen_agentchat", "autogen"),
        ("autogen", "autogen_core", "autogen"),
        ("google_adk", "google.adk", "google-adk"),
        ("openai", "openai", "openai"),
        ("openai", "httpx2", "openai"),
        ("anthropic", "anthropic", "anthropic"),
        ("anthropic", "httpx2", "anthropic"),
        ("crewai", "crewai", "crewai"),
    ],
)
def test_missing_framework_gives_the_install_hint(module: str, framework: str, extra: str) -> None:
    script = (
        f"import sys; sys.modules[{framework!r}] = None\nimport agentguard.integrations.{module}\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("ImportError: agentguard.integrations.")
    assert f'pip install "agentguard[{extra}]"' in last_line


def test_the_httpx2_transports_name_the_package_and_the_extras_that_bring_it() -> None:
    script = "import sys; sys.modules['httpx2'] = None\nimport agentguard.integrations.httpx2\n"
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("ImportError: agentguard.integrations.httpx2 needs httpx2")
    assert '"agentguard[openai]"' in last_line and '"agentguard[anthropic]"' in last_line


def test_the_gateway_outbound_http_and_plain_functions_need_no_extra() -> None:
    script = (
        "import sys\n"
        "for name in ('starlette', 'fastapi', 'langchain_core', 'agents', 'mcp', 'smolagents'):\n"
        "    sys.modules[name] = None\n"
        "import agentguard.integrations.asgi, agentguard.integrations.functions\n"
        "import agentguard.integrations.httpx  # httpx is a core dependency\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
