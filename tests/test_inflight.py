"""A kill stops guarded calls already running: coroutines, generators and cooperative sync code.

In-process guards here; tests/test_inflight_processes.py does the same with a real server and
agent processes.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

import agentguard
from agentguard import (
    Call,
    Guard,
    InterventionType,
    KillSwitch,
    PolicyViolationError,
    Snapshot,
    current_call,
    scope,
)


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def guard(exporter: InMemorySpanExporter) -> Iterator[Guard]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    g = Guard(tracer_provider=provider, instance_id="inst-1", actor="usr_ops")
    yield g
    g.close()


def kill_soon(guard: Guard, target_id: str = "bot", *, after: float = 0.1, **kw: str) -> None:
    """Kill the agent from another thread (as a feed thread applies a remote kill)."""
    threading.Timer(after, lambda: guard.kill("agent", target_id, **kw)).start()


def the_cancellation(guard: Guard) -> agentguard.Intervention:
    recorded = guard.interventions()
    assert [iv.type for iv in recorded] == [InterventionType.CANCELLED], recorded
    return recorded[0]


# -- coroutines ----------------------------------------------------------------------------------


async def test_a_running_coroutine_is_cancelled_with_the_kills_details(
    guard: Guard, exporter: InMemorySpanExporter
) -> None:
    reached: list[str] = []

    @guard.guarded_action(name="bulk_send", agent_id="bot")
    async def bulk_send() -> None:
        reached.append("started")
        await asyncio.sleep(30)
        reached.append("finished")

    kill_soon(guard, reason="Drained $3k in 4 minutes")
    started = time.monotonic()
    with pytest.raises(PolicyViolationError) as caught:
        await bulk_send()
    took = time.monotonic() - started
    error = caught.value
    assert reached == ["started"]
    assert took < 5
    assert not isinstance(error, asyncio.CancelledError)
    assert (error.target_type, error.target_id, error.action) == ("agent", "bot", "bulk_send")
    assert error.reason == "Drained $3k in 4 minutes"
    assert error.killed_by == "usr_ops"
    assert error.cancelled and error.ran_for is not None and 0.05 < error.ran_for < took + 0.01
    assert "'bulk_send' stopped after" in str(error)
    assert "agent 'bot' was killed by usr_ops" in str(error)
    assert isinstance(error.__cause__, asyncio.CancelledError)  # where the work was cut off
    ks = guard.check("agent", "bot")
    iv = the_cancellation(guard)
    assert (iv.action, iv.target_type, iv.target_id) == ("bulk_send", "agent", "bot")
    assert iv.kill_switch_id == ks.kill_switch_id == error.kill_switch_id
    assert iv.killed_by == "usr_ops" and iv.reason == "Drained $3k in 4 minutes"
    assert iv.id == error.intervention_id and iv.instance_id == "inst-1"
    assert iv.ran_for_ms == pytest.approx(error.ran_for * 1000, abs=0.01)
    assert guard.counts("agent", "bot").model_dump() == {
        "executed": 1,
        "refused": 0,
        "failed": 0,
        "unavailable": 0,
        "cancelled": 1,
    }
    [span] = [s for s in exporter.get_finished_spans() if s.name == "execute_tool bulk_send"]
    attrs = span.attributes or {}
    assert span.status.status_code is StatusCode.ERROR
    assert attrs["agentguard.intervention.type"] == "CANCELLED"
    assert attrs["agentguard.kill_switch.id"] == ks.kill_switch_id
    assert attrs["agentguard.call.ran_for_ms"] == iv.ran_for_ms
    assert span.end_time is not None and span.start_time is not None
    assert (span.end_time - span.start_time) / 1e9 == pytest.approx(error.ran_for, abs=0.05)


async def test_the_task_goes_on_after_the_kill_is_handled(guard: Guard) -> None:
    @guard.guarded_action(agent_id="bot")
    async def wait() -> None:
        await asyncio.sleep(30)

    kill_soon(guard)
    with pytest.raises(PolicyViolationError):
        await wait()
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0  # the kill's cancel was consumed
    await asyncio.sleep(0.01)  # not cancelled: the task carries on


async def test_a_cancel_from_outside_stays_a_plain_cancelled_error(guard: Guard) -> None:
    @guard.guarded_action(agent_id="bot")
    async def wait() -> None:
        await asyncio.sleep(30)

    task = asyncio.create_task(wait())
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert guard.interventions() == []
    assert guard.counts().model_dump() == {
        "executed": 1,
        "refused": 0,
        "failed": 0,
        "unavailable": 0,
        "cancelled": 0,
    }


async def test_a_kill_while_an_outside_cancel_is_under_way_leaves_the_cancel(guard: Guard) -> None:
    started = asyncio.Event()

    @guard.guarded_action(agent_id="bot")
    async def wait() -> None:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            await asyncio.sleep(0.1)  # cleanup, during which the kill arrives
            raise

    task = asyncio.create_task(wait())
    await started.wait()
    task.cancel()
    await asyncio.sleep(0.02)
    guard.kill("agent", "bot")
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_other_agents_calls_run_on(guard: Guard) -> None:
    @guard.guarded_action(agent_id="other")
    async def work() -> str:
        await asyncio.sleep(0.3)
        return "done"

    kill_soon(guard, "bot")
    assert await work() == "done"
    assert guard.interventions() == []


async def test_every_target_of_the_call_stops_it(guard: Guard) -> None:
    @guard.guarded_action(name="crawl")
    async def crawl() -> None:
        await asyncio.sleep(30)

    for target_type, target_id in (
        ("tool", "crawl"),
        ("run", "r-1"),
        ("mission", "m-1"),
        ("agent", "a-1"),
        ("organization", guard.organization_id),  # the organization-wide stop
    ):
        with scope(agent_id="a-1", run_id="r-1", mission_id="m-1"):
            threading.Timer(0.05, lambda t=target_type, i=target_id: guard.kill(t, i)).start()
            with pytest.raises(PolicyViolationError) as caught:
                await crawl()
        assert (caught.value.target_type, caught.value.target_id) == (target_type, target_id)
        guard.revive(target_type, target_id)
    assert guard.counts().cancelled == 5


async def test_concurrent_calls_are_all_stopped(guard: Guard) -> None:
    @guard.guarded_action(agent_id="bot")
    async def wait(i: int) -> int:
        await asyncio.sleep(30)
        return i

    kill_soon(guard)
    results = await asyncio.gather(*(wait(i) for i in range(20)), return_exceptions=True)
    assert all(isinstance(r, PolicyViolationError) for r in results)
    assert guard.counts("agent", "bot").cancelled == 20
    assert len(guard.interventions()) == 20


async def test_nested_calls_are_each_recorded_and_the_innermost_error_raised(
    guard: Guard,
) -> None:
    @guard.guarded_action(agent_id="bot")
    async def inner() -> None:
        await asyncio.sleep(30)

    @guard.guarded_action(agent_id="bot")
    async def outer() -> None:
        await inner()

    kill_soon(guard)
    with pytest.raises(PolicyViolationError) as caught:
        await outer()
    assert caught.value.action == "inner"
    assert sorted(iv.action for iv in guard.interventions()) == ["inner", "outer"]
    assert guard.counts().cancelled == 2


async def test_a_kill_that_only_the_outer_call_matches(guard: Guard) -> None:
    @guard.guarded_action(name="inner")
    async def inner() -> None:
        await asyncio.sleep(30)

    @guard.guarded_action(name="outer")
    async def outer() -> None:
        await inner()

    threading.Timer(0.05, lambda: guard.kill("tool", "outer")).start()
    with pytest.raises(PolicyViolationError) as caught:
        await outer()
    assert caught.value.action == "outer"
    assert [iv.action for iv in guard.interventions()] == ["outer"]


async def test_opting_out_lets_a_call_finish(guard: Guard) -> None:
    @guard.guarded_action(agent_id="bot", cancel_in_flight=False)
    async def settle() -> str:
        await asyncio.sleep(0.3)
        call = current_call()
        assert call is not None and not call.cancellable
        assert not call.cancelled.is_set()
        return "settled"

    kill_soon(guard)
    assert await settle() == "settled"
    assert guard.interventions() == []
    with pytest.raises(PolicyViolationError) as caught:  # the next call is refused
        await settle()
    assert not caught.value.cancelled


def test_cancel_in_flight_must_be_a_bool(guard: Guard) -> None:
    with pytest.raises(agentguard.InvalidInputError) as caught:
        guard.guarded_action(cancel_in_flight="no")  # type: ignore[arg-type]
    assert caught.value.field == "cancel_in_flight"


async def test_a_resync_snapshot_carrying_a_new_kill_stops_calls(guard: Guard) -> None:
    """A kill that reaches the index in a snapshot (after missed events) stops calls too."""

    @guard.guarded_action(agent_id="bot")
    async def wait() -> None:
        await asyncio.sleep(30)

    ks = KillSwitch(
        id="ks-snap",
        target_type="agent",
        target_id="bot",
        reason="resync",
        is_active=True,
        killed_by="usr_b",
        killed_at=agentguard.records.utcnow(),
        organization_id=guard.organization_id,
    )
    snapshot = Snapshot(
        organization_id=guard.organization_id, version=guard.version + 5, active=[ks]
    )
    threading.Timer(0.05, lambda: guard.index.replace(snapshot)).start()
    with pytest.raises(PolicyViolationError) as caught:
        await wait()
    assert caught.value.kill_switch_id == "ks-snap" and caught.value.killed_by == "usr_b"


# -- generators and async generators -------------------------------------------------------------


async def test_an_async_generator_waiting_for_its_next_item_is_cancelled(guard: Guard) -> None:
    @guard.guarded_action(name="stream_tokens", agent_id="bot")
    async def stream_tokens() -> AsyncIterator[str]:
        yield "first"
        await asyncio.sleep(30)
        yield "never"

    got: list[str] = []
    kill_soon(guard)
    with pytest.raises(PolicyViolationError) as caught:
        async for token in stream_tokens():
            got.append(token)
    assert got == ["first"]
    assert caught.value.cancelled and caught.value.action == "stream_tokens"
    assert the_cancellation(guard).action == "stream_tokens"
    assert guard.counts().model_dump()["cancelled"] == 1


async def test_an_async_generator_refuses_its_next_item_after_a_kill(guard: Guard) -> None:
    @guard.guarded_action(agent_id="bot")
    async def numbers() -> AsyncIterator[int]:
        for i in range(10):
            yield i

    got: list[int] = []
    with pytest.raises(PolicyViolationError):
        async for i in numbers():
            got.append(i)
            if i == 2:
                guard.kill("agent", "bot")  # between items: the consumer's own code
                await asyncio.sleep(0.01)  # the consumer waits: nothing to cancel in it
    assert got == [0, 1, 2]
    assert guard.counts().cancelled == 1


async def test_the_consumer_of_an_async_generator_is_not_cancelled_between_items(
    guard: Guard,
) -> None:
    @guard.guarded_action(agent_id="bot")
    async def numbers() -> AsyncIterator[int]:
        yield 1
        yield 2

    gen = numbers()
    assert await gen.__anext__() == 1
    guard.kill("agent", "bot")
    await asyncio.sleep(0.05)  # the consumer's own wait: a kill now does not cancel it
    with pytest.raises(PolicyViolationError):
        await gen.__anext__()


def test_a_sync_generator_refuses_its_next_item_after_a_kill(guard: Guard) -> None:
    @guard.guarded_action(name="rows", agent_id="bot")
    def rows() -> Iterator[int]:
        yield from range(100)

    got = []
    with pytest.raises(PolicyViolationError) as caught:
        for row in rows():
            got.append(row)
            if row == 3:
                guard.kill("agent", "bot", reason="enough")
    assert got == [0, 1, 2, 3]
    assert caught.value.cancelled and caught.value.reason == "enough"
    assert the_cancellation(guard).action == "rows"
    assert guard.counts().model_dump() == {
        "executed": 1,
        "refused": 0,
        "failed": 0,
        "unavailable": 0,
        "cancelled": 1,
    }


def test_generators_still_delegate_send_throw_and_return(guard: Guard) -> None:
    @guard.guarded_action(agent_id="bot")
    def echo() -> Iterator[object]:
        received = yield "ready"
        while received != "stop":
            try:
                received = yield f"got {received}"
            except KeyError:
                received = yield "caught"
        return "done"

    gen = echo()
    assert next(gen) == "ready"
    assert gen.send("a") == "got a"
    assert gen.throw(KeyError("k")) == "caught"
    with pytest.raises(StopIteration) as stop:
        gen.send("stop")
    assert stop.value.value == "done"


def test_an_opted_out_generator_runs_to_its_end(guard: Guard) -> None:
    @guard.guarded_action(agent_id="bot", cancel_in_flight=False)
    def rows() -> Iterator[int]:
        yield from range(5)

    got = []
    for row in rows():
        got.append(row)
        if row == 1:
            guard.kill("agent", "bot")
    assert got == [0, 1, 2, 3, 4]
    assert guard.interventions() == []


# -- sync code: the token and raise_if_killed ----------------------------------------------------


def test_a_cooperative_sync_loop_stops_at_raise_if_killed(guard: Guard) -> None:
    done: list[int] = []

    @guard.guarded_action(name="bulk_send", agent_id="bot")
    def bulk_send() -> None:
        for i in range(1000):
            guard.raise_if_killed()
            done.append(i)
            time.sleep(0.005)

    kill_soon(guard, reason="stop mailing")
    with pytest.raises(PolicyViolationError) as caught:
        bulk_send()
    assert 5 < len(done) < 1000
    assert caught.value.cancelled and caught.value.reason == "stop mailing"
    iv = the_cancellation(guard)
    assert iv.action == "bulk_send" and iv.ran_for_ms is not None and iv.ran_for_ms > 50
    assert guard.counts().model_dump() == {
        "executed": 1,
        "refused": 0,
        "failed": 0,
        "unavailable": 0,
        "cancelled": 1,
    }


def test_the_token_is_set_by_a_kill_and_threads_can_wait_on_it(guard: Guard) -> None:
    seen: list[object] = []

    @guard.guarded_action(name="export", agent_id="bot")
    def export() -> None:
        call = current_call()
        assert isinstance(call, Call) and call == current_call()
        assert (call.action, call.scope.agent_id, call.cancellable) == ("export", "bot", True)
        assert call.stopped_by is None

        def worker(call: Call = call) -> None:  # a pool thread gets the call passed to it
            seen.append(call.cancelled.wait(10))
            try:
                call.raise_if_cancelled()
            except PolicyViolationError as error:
                seen.append(error)

        thread = threading.Thread(target=worker)
        thread.start()
        thread.join(15)
        assert call.stopped_by is not None and call.stopped_by.target_id == "bot"
        call.raise_if_cancelled()

    kill_soon(guard)
    with pytest.raises(PolicyViolationError) as caught:
        export()
    assert seen[0] is True and seen[1] is caught.value  # one error, recorded once
    assert len(guard.interventions()) == 1


def test_a_token_asked_for_after_the_kill_is_set_at_once(guard: Guard) -> None:
    @guard.guarded_action(agent_id="bot")
    def late() -> bool:
        guard.kill("agent", "bot")
        call = current_call()
        assert call is not None
        return call.cancelled.is_set()

    assert late() is True


def test_current_call_outside_a_guarded_call_is_none(guard: Guard) -> None:
    assert current_call() is None

    @guard.guarded_action
    def inner() -> str:
        call = current_call()
        assert call is not None
        return call.action

    @guard.guarded_action
    def outer() -> tuple[str, str]:
        mine = current_call()
        assert mine is not None
        return mine.action, inner()

    assert outer() == ("outer", "inner")
    assert current_call() is None


def test_a_sync_call_that_ignores_the_kill_finishes_and_is_not_counted_cancelled(
    guard: Guard,
) -> None:
    @guard.guarded_action(agent_id="bot")
    def stubborn() -> str:
        guard.kill("agent", "bot")
        return "finished anyway"

    assert stubborn() == "finished anyway"
    assert guard.counts().model_dump()["cancelled"] == 0
    assert guard.interventions() == []


def test_raise_if_killed_in_an_opted_out_call_is_an_explicit_check(guard: Guard) -> None:
    @guard.guarded_action(agent_id="bot", cancel_in_flight=False)
    def ledger() -> None:
        guard.kill("agent", "bot")
        call = current_call()
        assert call is not None and not call.cancelled.is_set()
        guard.raise_if_killed()

    with pytest.raises(PolicyViolationError) as caught:
        ledger()
    assert caught.value.cancelled


def test_raise_if_killed_outside_a_guarded_call_checks_the_scope(guard: Guard) -> None:
    with scope(agent_id="bot"):
        guard.raise_if_killed()  # nothing killed
        guard.kill("agent", "bot")
        with pytest.raises(PolicyViolationError) as caught:
            guard.raise_if_killed()
    assert not caught.value.cancelled and caught.value.action == "raise_if_killed"
    guard.raise_if_killed()  # outside the scope: nothing killed


def test_an_exception_the_kill_causes_becomes_the_calls_error(guard: Guard) -> None:
    """A body whose I/O a kill cut short raises something else: the caller gets the kill."""

    @guard.guarded_action(agent_id="bot")
    def read() -> None:
        call = current_call()
        assert call is not None
        aborted = threading.Event()
        call.on_cancel(aborted.set)  # what a transport does with its socket
        threading.Timer(0.05, lambda: guard.kill("agent", "bot")).start()
        if aborted.wait(10):
            raise ConnectionResetError("connection reset by peer")

    with pytest.raises(PolicyViolationError) as caught:
        read()
    assert isinstance(caught.value.__cause__, ConnectionResetError)
    assert guard.counts().model_dump()["failed"] == 0
    assert guard.counts().model_dump()["cancelled"] == 1


def test_lanes_hold_only_calls_in_flight(guard: Guard) -> None:
    @guard.guarded_action(agent_id="bot")
    def quick() -> None:
        call = current_call()
        assert call is not None
        call.cancelled  # registers it  # noqa: B018

    @guard.guarded_action(agent_id="bot")
    async def aquick() -> None:
        await asyncio.sleep(0)

    for _ in range(3):
        quick()
        asyncio.run(aquick())
    guard.kill("agent", "bot")  # finds nothing left to stop
    assert guard.interventions() == []


async def test_a_guard_closed_stops_nothing_more() -> None:
    guard = Guard()

    @guard.guarded_action(agent_id="bot", name="slow")
    async def slow() -> str:
        await asyncio.sleep(0.2)
        return "done"

    task = asyncio.create_task(slow())
    await asyncio.sleep(0.05)
    guard.close()
    guard.index.apply(  # a late event after close
        agentguard.KillChange(
            version=guard.version + 1,
            kind="kill",
            kill_switch=KillSwitch(
                id="ks-late",
                target_type="agent",
                target_id="bot",
                is_active=True,
                killed_by="x",
                killed_at=agentguard.records.utcnow(),
                organization_id=guard.organization_id,
            ),
        )
    )
    assert await task == "done"


async def test_a_call_begun_after_a_quick_revive_is_not_stopped(guard: Guard) -> None:
    """A kill sweeps the event loop after it was applied: a call begun since (after a revive)
    is not one it stops."""

    @guard.guarded_action(agent_id="bot")
    async def wait() -> str:
        await asyncio.sleep(0.05)
        return "done"

    guard.kill("agent", "bot")  # its sweep of this loop runs once this task waits
    guard.revive("agent", "bot")
    assert await wait() == "done"
    assert guard.interventions() == []
