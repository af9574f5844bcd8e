"""Whether a call blocks the event loop: a ticker task beside it measures the gaps."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any


async def beside_a_ticker(call: Awaitable[Any]) -> tuple[Any, float, float]:
    """Await ``call`` while a task ticks every 10 ms: its result, the longest gap between
    ticks, and how long the call took (import what the call needs beforehand, so no import
    stalls the loop here)."""
    loop = asyncio.get_running_loop()
    gaps: list[float] = []
    done = asyncio.Event()

    async def tick() -> None:
        last = loop.time()
        while not done.is_set():
            await asyncio.sleep(0.01)
            now = loop.time()
            gaps.append(now - last)
            last = now

    ticker = asyncio.create_task(tick())
    await asyncio.sleep(0.03)
    started = loop.time()
    try:
        result = await call
    finally:
        took = loop.time() - started
        done.set()
        await ticker
    return result, max(gaps), took
