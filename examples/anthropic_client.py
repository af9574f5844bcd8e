"""Kill an agent's model calls mid-run: a guarded async Anthropic client, streaming.

Two agents share one async Anthropic client. Their streamed messages are priced from the
usage in ``message_start`` and ``message_delta`` as the stream is read. The operator kills
one agent after its second answer: its next ``messages.stream(...)`` is refused with
``PolicyViolationError`` before any byte leaves, with no retry by the SDK, and the other
agent goes on. The Anthropic API is a scripted httpx2 MockTransport: no network.

    python examples/anthropic_client.py
"""

from __future__ import annotations

import asyncio
import json

import httpx2
from anthropic import AsyncAnthropic

from agentguard import Guard, PolicyViolationError, scope
from agentguard.integrations.anthropic import guard_anthropic
from agentguard.pricing import Price

guard = Guard()
sent: list[str] = []


def event(name: str, data: dict[str, object]) -> str:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n"


async def anthropic_api(request: httpx2.Request) -> httpx2.Response:
    """What api.anthropic.com would stream back for one message."""
    sent.append(json.loads(request.content)["model"])
    message = {"id": f"msg_{len(sent)}", "type": "message", "role": "assistant", "content": [],
               "model": "claude-sonnet-4-5-20250929", "stop_reason": None,
               "usage": {"input_tokens": 3_000, "output_tokens": 1,
                         "cache_read_input_tokens": 20_000}}  # fmt: skip
    stream = (
        event("message_start", {"type": "message_start", "message": message})
        + event("content_block_start", {"type": "content_block_start", "index": 0,
                                        "content_block": {"type": "text", "text": ""}})
        + event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                        "delta": {"type": "text_delta", "text": "Done."}})
        + event("content_block_stop", {"type": "content_block_stop", "index": 0})
        + event("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                                  "usage": {"output_tokens": 400}})
        + event("message_stop", {"type": "message_stop"})
    )  # fmt: skip
    return httpx2.Response(200, headers={"content-type": "text/event-stream"}, text=stream)


client = guard_anthropic(
    AsyncAnthropic(api_key="sk-ant-example"),
    guard,
    prices={"claude-sonnet-4-5": Price(3.0, 15.0, cached_input=0.30)},
    transport=httpx2.MockTransport(anthropic_api),
)


async def agent(name: str) -> None:
    with scope(agent_id=name):
        for step in range(1, 4):
            if step == 3 and name == "scraper-bot":
                guard.kill("agent", name, reason="Looping on one page", actor="usr_ops")
                print(f"operator: killed agent {name!r}")
            try:
                async with client.messages.stream(
                    model="claude-sonnet-4-5",
                    max_tokens=1024,
                    messages=[{"role": "user", "content": f"Step {step}"}],
                ) as stream:
                    text = await stream.get_final_text()
                print(f"{name} step {step}: {text} (spent ${guard.cost('agent', name):.4f})")
            except PolicyViolationError as e:
                print(f"{name} step {step}: REFUSED before sending ({e.reason})")
            await asyncio.sleep(0)


async def main() -> None:
    await asyncio.gather(agent("scraper-bot"), agent("research-bot"))
    print(f"messages sent: {len(sent)}; total spend ${guard.total_cost():.4f}")
    (block,) = guard.interventions()
    print(f"HARD_BLOCK recorded for {block.action!r} on model {block.model!r}")


asyncio.run(main())
guard.close()
