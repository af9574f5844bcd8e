"""Stop a runaway agent's model spend: an OpenAI client priced by its real token usage.

A support agent answers tickets with streamed chat completions. Its OpenAI client is guarded:
each call is checked before it leaves, and the tokens the API reports (the last chunk of the
stream, with ``stream_options={"include_usage": True}``) are priced and added to the guard's
spend. A ``BudgetRule`` of $0.05 per hour kills the agent once it has spent more, and its next
model call is refused before anything is sent. The OpenAI API is a scripted httpx2
MockTransport, so nothing touches the network.

    python examples/openai_client.py
"""

from __future__ import annotations

import json

import httpx2
from openai import OpenAI

from agentguard import BudgetRule, Guard, PolicyViolationError
from agentguard.integrations.openai import guard_openai
from agentguard.pricing import LIST_PRICES_2025_11

guard = Guard(rules=[BudgetRule("support-spend", limit_usd=0.05, window=3600)])
sent: list[str] = []


def openai_api(request: httpx2.Request) -> httpx2.Response:
    """What api.openai.com would stream back: three words, then the usage chunk."""
    body = json.loads(request.content)
    sent.append(body["model"])
    base = {"id": f"chatcmpl-{len(sent)}", "object": "chat.completion.chunk",
            "created": 1764547200, "model": "gpt-5-2025-08-07"}  # fmt: skip
    chunks = [
        {**base, "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}]}
        for word in ("Refund ", "issued. ", "Sorry!")
    ]
    usage = {"prompt_tokens": 12_000, "completion_tokens": 900, "total_tokens": 12_900}
    chunks.append({**base, "choices": [], "usage": usage})
    stream = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
    return httpx2.Response(200, headers={"content-type": "text/event-stream"}, text=stream)


client = guard_openai(
    OpenAI(api_key="sk-example"),
    guard,
    prices=LIST_PRICES_2025_11,  # dated list prices: verify against OpenAI's pricing page
    agent_id="support-bot",
    transport=httpx2.MockTransport(openai_api),
)

for ticket in range(1, 8):
    try:
        stream = client.chat.completions.create(
            model="gpt-5",
            messages=[{"role": "user", "content": f"Ticket #{ticket}: where is my refund?"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        answer = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        spent = guard.cost("agent", "support-bot")
        print(f"ticket {ticket}: {answer!r} (spent so far ${spent:.4f})")
    except PolicyViolationError as e:
        print(f"ticket {ticket}: REFUSED before sending: {e.reason}")

(block, *_) = guard.interventions()
print(f"model calls sent: {len(sent)}; refused: {guard.counts(action='llm').refused}")
print(f"HARD_BLOCK recorded for {block.action!r} on model {block.model!r}, ", end="")
print(f"killed by {block.killed_by}")
guard.close()
