"""Cut a killed agent off from the outside world.

Two agents share one httpx client whose transport is guarded. When the operator kills one of
them, its next outbound request is refused before any byte leaves the process; the other
agent's requests go on. The "outside world" is an httpx MockTransport, so nothing touches
the network.

    python examples/httpx_outbound.py
"""

from __future__ import annotations

import asyncio

import httpx

from agentguard import Guard, PolicyViolationError, scope
from agentguard.integrations.httpx import AsyncGuardedTransport

guard = Guard()
reached: list[str] = []


def outside_world(request: httpx.Request) -> httpx.Response:
    reached.append(f"{request.method} {request.url.path}")
    return httpx.Response(200, json={"ok": True})


async def agent(name: str, client: httpx.AsyncClient) -> None:
    with scope(agent_id=name, run_id=f"{name}-run-1"):
        for step in range(1, 4):
            if step == 2 and name == "scraper-bot":
                reason = "Hammering a partner API"
                guard.kill("agent", "scraper-bot", reason=reason, actor="usr_ops")
                print("operator: killed agent 'scraper-bot'")
            try:
                response = await client.get(f"https://partner.example.com/{name}/page/{step}")
                print(f"{name} step {step}: {response.status_code}")
            except PolicyViolationError as e:
                print(f"{name} step {step}: REFUSED before sending ({e.reason})")
            await asyncio.sleep(0)


async def main() -> None:
    transport = AsyncGuardedTransport(httpx.MockTransport(outside_world), guard=guard)
    async with httpx.AsyncClient(transport=transport) as client:
        await asyncio.gather(agent("scraper-bot", client), agent("research-bot", client))
    print(f"requests that reached the outside world: {len(reached)}")
    print(f"HARD_BLOCK interventions: {len(guard.interventions())}")


asyncio.run(main())
guard.close()
