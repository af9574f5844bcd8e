"""agentguard.scope: nesting, and propagation into asyncio tasks and context-copying threads."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from agentguard import Guard, PolicyViolationError, Scope, current_scope, scope
from agentguard.errors import InvalidInputError


def test_nesting_inherits_and_restores() -> None:
    assert current_scope() == Scope()
    with scope(agent_id="a", mission_id="m"):
        with scope(run_id="r") as inner:
            assert inner == Scope("a", "r", "m") == current_scope()
            with scope(agent_id="b"):
                assert current_scope() == Scope("b", "r", "m")
            assert current_scope() == Scope("a", "r", "m")
        assert current_scope() == Scope("a", None, "m")
    assert current_scope() == Scope()


def test_restored_after_exception() -> None:
    with pytest.raises(RuntimeError):
        with scope(agent_id="a"):
            raise RuntimeError
    assert current_scope() == Scope()


def test_invalid_ids_name_the_field() -> None:
    with pytest.raises(InvalidInputError, match="run_id"):
        with scope(run_id=""):
            pass
    with pytest.raises(InvalidInputError, match="agent_id"):
        with scope(agent_id=3):  # type: ignore[arg-type]
            pass


async def test_asyncio_tasks_inherit_scope_and_stay_isolated() -> None:
    guard = Guard()

    @guard.guarded_action
    async def tool() -> Scope:
        await asyncio.sleep(0)
        return current_scope()

    async def worker(agent: str) -> Scope:
        with scope(agent_id=agent):
            await asyncio.sleep(0)
            return await tool()

    guard.kill("agent", "bad")
    with scope(mission_id="m"):
        results = await asyncio.gather(
            worker("good"), worker("bad"), asyncio.create_task(tool()), return_exceptions=True
        )
    assert results[0] == Scope("good", None, "m")
    assert isinstance(results[1], PolicyViolationError) and results[1].target_id == "bad"
    assert results[2] == Scope(None, None, "m")


def test_threads_that_copy_the_context() -> None:
    guard = Guard()

    @guard.guarded_action
    def tool() -> Scope:
        return current_scope()

    guard.kill("agent", "bad")
    with scope(agent_id="bad"):
        ctx = contextvars.copy_context()
        with ThreadPoolExecutor(2) as pool:
            future = pool.submit(ctx.run, tool)
            with pytest.raises(PolicyViolationError):
                future.result()
            # a thread that does not copy the context runs unscoped
            assert pool.submit(tool).result() == Scope()

    result: list[object] = []
    with scope(agent_id="good", run_id="r"):
        ctx = contextvars.copy_context()
        t = threading.Thread(target=lambda: result.append(ctx.run(tool)))
        t.start()
        t.join()
    assert result == [Scope("good", "r", None)]


async def test_to_thread_carries_scope() -> None:
    guard = Guard()

    @guard.guarded_action
    def tool() -> Scope:
        return current_scope()

    guard.kill("run", "r9")
    with scope(run_id="r9"):
        with pytest.raises(PolicyViolationError):
            await asyncio.to_thread(tool)
