"""Refuse MCP tool calls of a killed agent, on the server.

An MCP billing server has the agentguard middleware installed. Clients name the calling agent
in the request's `_meta` (`agentguard/agent_id`, `agentguard/run_id`). Once the operator kills
`billing-bot`, its `tools/call` requests get an error result (`isError: true`) naming the kill,
while other agents keep working. The client runs in-process, so nothing touches the network.

    python examples/mcp_server.py
"""

from __future__ import annotations

import asyncio

from mcp import Client
from mcp.server.mcpserver import MCPServer

from agentguard import Guard
from agentguard.integrations.mcp import META_AGENT_ID, META_RUN_ID, install

guard = Guard()
server = MCPServer("billing")
install(server, guard=guard)


@server.tool()
def refund(order_id: str) -> str:
    """Refund one order."""
    return f"refunded {order_id}"


async def main() -> None:
    async with Client(server) as client:

        async def call(agent: str, order_id: str) -> None:
            meta = {META_AGENT_ID: agent, META_RUN_ID: f"{agent}-run-1"}
            result = await client.call_tool("refund", {"order_id": order_id}, meta=meta)
            text = result.content[0].text.split(" [intervention")[0]  # type: ignore[union-attr]
            print(f"{agent}: isError={result.is_error} {text}")

        await call("billing-bot", "A-1")
        guard.kill("agent", "billing-bot", reason="Refunding the same order twice", actor="usr_ops")
        print("operator: killed agent 'billing-bot'")
        await call("billing-bot", "A-2")
        await call("support-bot", "B-1")
        guard.revive("agent", "billing-bot", actor="usr_ops")
        print("operator: revived agent 'billing-bot'")
        await call("billing-bot", "A-3")

    block = guard.interventions()[0]
    print(
        f"{block.type} recorded for {block.action!r}: "
        f"agent {block.agent_id!r}, run {block.run_id!r}"
    )


asyncio.run(main())
guard.close()
