"""One agent process of the in-flight tests (run as a script, not collected).

    python inflight_agent.py URL API_KEY AGENT_ID KIND OUT_JSON

A remote guard in stream mode (heartbeating) starts one guarded call of KIND, prints
``ready`` once it is in flight, and waits for it to end: a kill sent to the server meanwhile
should stop it. What it ended with (``outcome``: the exception's class or ``returned``), the
error's details, the guard's counts and whether the records reached the server go to
OUT_JSON. Kinds: coroutine, async_generator, sync_generator, cooperative_sync, http_stream,
openai_stream, anthropic_stream, langchain, openai_agents, mcp, opt_out.
"""

from __future__ import annotations

import asyncio
import http.server
import json
import socketserver
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from agentguard import Guard, PolicyViolationError, scope

LONG = 30.0  # seconds a call would run if no kill stopped it


def ready() -> None:
    print("ready", flush=True)


# -- the kinds of call -------------------------------------------------------------------------


def coroutine(guard: Guard) -> Any:
    @guard.guarded_action(name="bulk_send")
    async def bulk_send() -> str:
        ready()
        await asyncio.sleep(LONG)
        return "sent"

    return asyncio.run(bulk_send())


def opt_out(guard: Guard) -> Any:
    @guard.guarded_action(name="settle_ledger", cancel_in_flight=False)
    async def settle_ledger() -> str:
        ready()
        await asyncio.sleep(3)  # the test kills after "ready": this call must still finish
        return "settled"

    return asyncio.run(settle_ledger())


def async_generator(guard: Guard) -> Any:
    @guard.guarded_action(name="stream_tokens")
    async def stream_tokens() -> AsyncIterator[str]:
        yield "first"
        ready()
        await asyncio.sleep(LONG)
        yield "never"

    async def consume() -> list[str]:
        return [token async for token in stream_tokens()]

    return asyncio.run(consume())


def sync_generator(guard: Guard) -> Any:
    @guard.guarded_action(name="export_rows")
    def export_rows() -> Iterator[int]:
        for i in range(int(LONG / 0.01)):
            if i == 1:
                ready()
            time.sleep(0.01)
            yield i

    return sum(1 for _ in export_rows())


def cooperative_sync(guard: Guard) -> Any:
    @guard.guarded_action(name="bulk_send")
    def bulk_send() -> int:
        sent = 0
        ready()
        while sent < LONG / 0.01:
            guard.raise_if_killed()
            time.sleep(0.01)
            sent += 1
        return sent

    return bulk_send()


class _Tokens(http.server.BaseHTTPRequestHandler):
    """A streaming model stub: one token every 20 ms for 30 s, chunked."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for i in range(int(LONG / 0.02)):
                data = f"token{i} ".encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()
                time.sleep(0.02)
            self.wfile.write(b"0\r\n\r\n")
        except OSError:  # the client went away
            pass

    def log_message(self, *args: Any) -> None:
        pass


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True


def http_stream(guard: Guard) -> Any:
    import httpx

    from agentguard.integrations.httpx import AsyncGuardedTransport

    stub = _Server(("127.0.0.1", 0), _Tokens)
    threading.Thread(target=stub.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{stub.server_address[1]}/v1/chat"

    async def read() -> int:
        transport = AsyncGuardedTransport(guard=guard)
        async with httpx.AsyncClient(transport=transport, timeout=60) as client:
            async with client.stream("GET", url) as response:
                chunks = 0
                async for _ in response.aiter_raw():
                    chunks += 1
                    if chunks == 3:
                        ready()
                return chunks

    return asyncio.run(read())


class _ModelAPI(http.server.BaseHTTPRequestHandler):
    """A streaming model API stub: OpenAI chat chunks (``/v1/chat/completions``) or Anthropic
    message events (``/v1/messages``), one token every 20 ms for 30 s, chunked."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        anthropic = self.path.endswith("/messages")
        try:
            if anthropic:
                start = {"id": "msg_1", "type": "message", "role": "assistant", "content": [],
                         "model": "claude-sonnet-4-5", "stop_reason": None,
                         "stop_sequence": None,
                         "usage": {"input_tokens": 1000, "output_tokens": 1}}  # fmt: skip
                self._send("message_start", {"type": "message_start", "message": start})
                self._send("content_block_start", {"type": "content_block_start", "index": 0,
                           "content_block": {"type": "text", "text": ""}})  # fmt: skip
            for i in range(int(LONG / 0.02)):
                if anthropic:
                    delta = {"type": "text_delta", "text": f"tok{i} "}
                    block = {"type": "content_block_delta", "index": 0, "delta": delta}
                    self._send("content_block_delta", block)
                else:
                    self._send(None, {"id": "chatcmpl-1", "object": "chat.completion.chunk",
                                      "created": 1, "model": "gpt-5",
                                      "choices": [{"index": 0, "finish_reason": None,
                                                   "delta": {"content": f"tok{i} "}}]})  # fmt: skip
                time.sleep(0.02)
            self.wfile.write(b"0\r\n\r\n")
        except OSError:  # the client went away
            pass

    def _send(self, name: str | None, data: Any) -> None:
        head = f"event: {name}\n" if name else ""
        event = f"{head}data: {json.dumps(data)}\n\n".encode()
        self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
        self.wfile.flush()

    def log_message(self, *args: Any) -> None:
        pass


def _model_api() -> str:
    stub = _Server(("127.0.0.1", 0), _ModelAPI)
    threading.Thread(target=stub.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{stub.server_address[1]}"


def openai_stream(guard: Guard) -> Any:
    """A sync OpenAI client reading a chat completion's token stream."""
    import openai

    from agentguard.integrations.openai import guard_openai

    plain = openai.OpenAI(api_key="sk-test", base_url=f"{_model_api()}/v1", timeout=60)
    client = guard_openai(plain, guard)
    messages: Any = [{"role": "user", "content": "Hi"}]
    tokens = 0
    with client.chat.completions.create(model="gpt-5", messages=messages, stream=True) as stream:
        for _ in stream:
            tokens += 1
            if tokens == 3:
                ready()
    return tokens


def anthropic_stream(guard: Guard) -> Any:
    """An async Anthropic client reading a message's event stream."""
    import anthropic

    from agentguard.integrations.anthropic import guard_anthropic

    async def read() -> int:
        plain = anthropic.AsyncAnthropic(api_key="sk-test", base_url=_model_api(), timeout=60)
        client = guard_anthropic(plain, guard)
        messages: Any = [{"role": "user", "content": "Hi"}]
        tokens = 0
        async with client.messages.stream(
            model="claude-sonnet-4-5", max_tokens=4096, messages=messages
        ) as stream:
            async for _ in stream.text_stream:
                tokens += 1
                if tokens == 3:
                    ready()
        return tokens

    return asyncio.run(read())


def langchain(guard: Guard) -> Any:
    from langchain.agents import create_agent
    from langchain_core.language_models.fake_chat_models import FakeMessagesListChatModel
    from langchain_core.messages import AIMessage
    from langchain_core.tools import tool
    from langchain_core.utils.function_calling import convert_to_openai_tool

    from agentguard.integrations.langchain import guard_tools

    class Model(FakeMessagesListChatModel):
        def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
            return self.bind(tools=[convert_to_openai_tool(t) for t in tools], **kwargs)

    @tool
    async def crawl(site: str) -> str:
        """Crawl a site."""
        ready()
        await asyncio.sleep(LONG)
        return "crawled"

    call = {"name": "crawl", "args": {"site": "a.example"}, "id": "call-1"}
    model = Model(responses=[AIMessage("", tool_calls=[call]), AIMessage("done")])
    agent = create_agent(model, guard_tools([crawl], guard=guard), name="inflight-bot")
    return str(asyncio.run(agent.ainvoke({"messages": [("user", "crawl")]})))


def openai_agents(guard: Guard) -> Any:
    from agents import Agent, RunConfig, Runner, function_tool
    from agents.testing import ScriptedModel, assistant_message, function_call

    from agentguard.integrations.openai_agents import guard_tools

    @function_tool
    async def crawl(site: str) -> str:
        """Crawl a site."""
        ready()
        await asyncio.sleep(LONG)
        return "crawled"

    model = ScriptedModel(
        [[function_call("crawl", {"site": "a.example"}, call_id="c1")], [assistant_message("ok")]]
    )
    agent = Agent(name="inflight-bot", model=model, tools=guard_tools([crawl], guard=guard))
    run = RunConfig(group_id="conv-1", tracing_disabled=True)
    return asyncio.run(Runner.run(agent, "crawl", run_config=run)).final_output


def mcp(guard: Guard) -> Any:
    from mcp import Client
    from mcp.server.mcpserver import MCPServer

    from agentguard.integrations.mcp import META_AGENT_ID, install

    server = MCPServer("crawler")

    @server.tool()
    async def crawl(site: str) -> str:
        """Crawl a site."""
        ready()
        await asyncio.sleep(LONG)
        return "crawled"

    install(server, guard=guard)

    async def call() -> dict[str, Any]:
        async with Client(server) as client:
            meta = {META_AGENT_ID: guard.defaults.agent_id}
            result = await client.call_tool("crawl", {"site": "a.example"}, meta=meta)
            text = "".join(getattr(c, "text", "") for c in result.content)
            return {"is_error": result.is_error, "text": text}

    return asyncio.run(call())


KINDS: dict[str, Callable[[Guard], Any]] = {
    f.__name__: f
    for f in (
        coroutine,
        opt_out,
        async_generator,
        sync_generator,
        cooperative_sync,
        http_stream,
        openai_stream,
        anthropic_stream,
        langchain,
        openai_agents,
        mcp,
    )
}


def main(url: str, api_key: str, agent_id: str, kind: str, out: str) -> int:
    guard = Guard(url, api_key=api_key, agent_id=agent_id)
    if not guard.wait_until_synced(30):
        print("never synced", file=sys.stderr)
        return 1
    guard.start_heartbeat(interval=0.5)
    report: dict[str, Any] = {}
    started = time.monotonic()
    try:
        with scope(agent_id=agent_id):
            report["value"] = KINDS[kind](guard)
        report["outcome"] = "returned"
    except PolicyViolationError as error:
        report.update(
            outcome=type(error).__name__,
            cancelled=error.cancelled,
            ran_for=error.ran_for,
            message=str(error),
            intervention_id=error.intervention_id,
            kill_switch_id=error.kill_switch_id,
            killed_by=error.killed_by,
            reason=error.reason,
        )
    report["took"] = time.monotonic() - started
    report["flushed"] = guard.flush(30)
    report["counts"] = guard.counts().model_dump()
    guard.close()  # the last heartbeat carries the counts
    with open(out, "w") as f:
        json.dump(report, f, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:6]))
