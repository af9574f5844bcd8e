"""guarded_action on every kind of callable: allowed, refused before the body, metadata kept."""

from __future__ import annotations

import asyncio
import functools
import inspect
import math
import threading
import types

import pytest

import agentguard
from agentguard import Guard, MemoryStore, PolicyViolationError, Scope, scope
from agentguard.errors import GuardNotConfiguredError, InvalidInputError
from agentguard.sources import CLEAR, LocalSource, Verdict


@pytest.fixture
def guard() -> Guard:
    return Guard()


def test_plain_function_allowed_then_refused_before_body(guard: Guard) -> None:
    ran: list[str] = []

    @guard.guarded_action
    def send_email(to: str, body: str = "hi") -> str:
        """Send one email."""
        ran.append(to)
        return to

    with scope(agent_id="email-campaign"):
        assert send_email("a@x") == "a@x"
        guard.kill("agent", "email-campaign", reason="broken link", actor="usr_abc")
        with pytest.raises(PolicyViolationError) as info:
            send_email("b@x")
    assert ran == ["a@x"]
    e = info.value
    assert (e.target_type, e.target_id, e.reason, e.killed_by) == (
        "agent",
        "email-campaign",
        "broken link",
        "usr_abc",
    )
    assert e.action == "send_email" and e.killed_at is not None and e.intervention_id
    message = str(e)
    for part in (
        "send_email",
        "agent 'email-campaign'",
        "usr_abc",
        "broken link",
        e.intervention_id,
    ):
        assert part in message
    assert "\n" not in message


def test_metadata_signature_and_isinstance_preserved(guard: Guard) -> None:
    def send_email(to: str, *, cc: list[str] | None = None) -> str:
        """Send one email."""
        return to

    guarded = guard.guarded_action(send_email)
    assert guarded.__name__ == "send_email"
    assert guarded.__doc__ == "Send one email."
    assert guarded.__wrapped__ is send_email
    assert inspect.signature(guarded) == inspect.signature(send_email)
    assert isinstance(guarded, types.FunctionType)
    assert agentguard.is_guarded(guarded)


def test_decorator_arguments_name_and_fixed_scope(guard: Guard) -> None:
    @guard.guarded_action(name="send_email", agent_id="email-campaign", run_id="r1")
    def send(to: str) -> str:
        return to

    guard.kill("run", "r1")
    with pytest.raises(PolicyViolationError) as info:
        send("a")
    assert info.value.action == "send_email"
    assert (info.value.target_type, info.value.target_id) == ("run", "r1")
    guard.revive("run", "r1")
    assert send("a") == "a"
    guard.kill("tool", "send_email")
    with pytest.raises(PolicyViolationError):
        send("a")


def test_any_target_refuses_mission_run_agent_tool(guard: Guard) -> None:
    @guard.guarded_action
    def act() -> int:
        return 1

    with scope(agent_id="a", run_id="r", mission_id="m"):
        assert act() == 1
        for target_type, target_id in [
            ("mission", "m"),
            ("run", "r"),
            ("agent", "a"),
            ("tool", "act"),
        ]:
            guard.kill(target_type, target_id)
            with pytest.raises(PolicyViolationError) as info:
                act()
            assert (info.value.target_type, info.value.target_id) == (target_type, target_id)
            guard.revive(target_type, target_id)
            assert act() == 1
    # an unrelated kill does not touch this scope
    guard.kill("agent", "other")
    with scope(agent_id="a"):
        assert act() == 1


class Mailer:
    sent: list[str]

    def __init__(self) -> None:
        self.sent = []


def _make_mailer_class(guard: Guard) -> type:
    class GuardedMailer(Mailer):
        @guard.guarded_action
        def send(self, to: str) -> str:
            self.sent.append(to)
            return to

        @guard.guarded_action
        @classmethod
        def kind(cls) -> str:
            return cls.__name__

        @guard.guarded_action
        @staticmethod
        def version() -> int:
            return 2

        @classmethod
        @guard.guarded_action
        def kind_outer(cls) -> str:
            return cls.__name__

    return GuardedMailer


def test_methods_classmethods_staticmethods(guard: Guard) -> None:
    cls = _make_mailer_class(guard)
    m = cls()
    with scope(agent_id="bot"):
        assert m.send("a") == "a" and m.sent == ["a"]
        assert cls.send(m, "b") == "b"
        assert m.kind() == cls.__name__ and cls.kind() == cls.__name__
        assert m.version() == 2 and cls.version() == 2
        assert cls.kind_outer() == cls.__name__
        assert list(inspect.signature(m.send).parameters) == ["to"]
        assert all(agentguard.is_guarded(f) for f in (m.send, cls.send, m.kind, cls.version))
        guard.kill("agent", "bot")
        for call in (
            lambda: m.send("c"),
            lambda: cls.kind(),
            lambda: cls.version(),
            lambda: cls.kind_outer(),
        ):
            with pytest.raises(PolicyViolationError):
                call()
    assert m.sent == ["a", "b"]


async def test_async_function_refused_before_body(guard: Guard) -> None:
    ran: list[int] = []

    @guard.guarded_action
    async def fetch(n: int) -> int:
        ran.append(n)
        await asyncio.sleep(0)
        return n

    assert inspect.iscoroutinefunction(fetch)
    with scope(agent_id="bot"):
        assert await fetch(1) == 1
        guard.kill("agent", "bot")
        with pytest.raises(PolicyViolationError):
            await fetch(2)
    assert ran == [1]


async def test_async_method(guard: Guard) -> None:
    class Client:
        @guard.guarded_action(agent_id="bot")
        async def call(self, x: int) -> int:
            return x * 2

    c = Client()
    assert await c.call(2) == 4
    guard.kill("agent", "bot")
    with pytest.raises(PolicyViolationError):
        await c.call(2)


def test_generator_refused_before_first_item(guard: Guard) -> None:
    started: list[bool] = []

    @guard.guarded_action(agent_id="bot")
    def batches(n: int):  # type: ignore[no-untyped-def]
        started.append(True)
        for i in range(n):
            received = yield i
            if received:
                started.append(received)
        return "done"

    assert inspect.isgeneratorfunction(batches)
    gen = batches(3)
    assert next(gen) == 0
    assert gen.send("hello") == 1
    assert list(gen) == [2]
    assert started == [True, "hello"]
    guard.kill("agent", "bot")
    gen = batches(3)  # creating the generator is fine; the first item is refused
    with pytest.raises(PolicyViolationError):
        next(gen)
    assert started == [True, "hello"]


async def test_async_generator_refused_before_first_item(guard: Guard) -> None:
    started: list[object] = []

    @guard.guarded_action(agent_id="bot")
    async def stream(n: int):  # type: ignore[no-untyped-def]
        started.append(True)
        for i in range(n):
            got = yield i
            if got is not None:
                started.append(got)

    assert inspect.isasyncgenfunction(stream)
    agen = stream(3)
    assert await agen.__anext__() == 0
    assert await agen.asend("x") == 1
    assert [i async for i in agen] == [2]
    assert started == [True, "x"]
    guard.kill("agent", "bot")
    with pytest.raises(PolicyViolationError):
        async for _ in stream(3):
            pass
    assert started == [True, "x"]


def test_module_level_decorator_needs_configure() -> None:
    @agentguard.guarded_action
    def tool() -> str:
        return "ok"

    agentguard.configure(None)
    with pytest.raises(GuardNotConfiguredError, match="agentguard.configure"):
        tool()
    guard = Guard()
    agentguard.configure(guard)
    try:
        with scope(agent_id="bot"):
            assert tool() == "ok"
            guard.kill("agent", "bot")
            with pytest.raises(PolicyViolationError):
                tool()
        # the guard is resolved at call time: a new default guard applies at once
        agentguard.configure(Guard())
        with scope(agent_id="bot"):
            assert tool() == "ok"
    finally:
        agentguard.configure(None)


def test_module_level_decorator_with_arguments() -> None:
    guard = Guard()
    agentguard.configure(guard)
    try:

        @agentguard.guarded_action(name="charge", agent_id="billing")
        def charge_card(amount: int) -> int:
            return amount

        assert charge_card(3) == 3
        guard.kill("tool", "charge")
        with pytest.raises(PolicyViolationError) as info:
            charge_card(3)
        assert info.value.action == "charge"
    finally:
        agentguard.configure(None)


def test_configure_rejects_non_guard() -> None:
    with pytest.raises(InvalidInputError, match="guard"):
        agentguard.configure("nope")  # type: ignore[arg-type]


def test_decorator_validation(guard: Guard) -> None:
    with pytest.raises(InvalidInputError, match="agent_id"):
        guard.guarded_action(agent_id="")(lambda: None)
    with pytest.raises(InvalidInputError, match="fn"):
        guard.guarded_action(42)
    g = guard.guarded_action(lambda: None)
    with pytest.raises(InvalidInputError, match="already a guarded action"):
        guard.guarded_action(g)


def test_callable_object_and_partial(guard: Guard) -> None:
    class Tool:
        def __call__(self, x: int) -> int:
            return x + 1

    guarded = guard.guarded_action(name="inc", agent_id="bot")(Tool())
    assert guarded(1) == 2
    p = guard.guarded_action(name="p")(functools.partial(lambda a, b: a + b, 1))
    assert p(2) == 3
    guard.kill("agent", "bot")
    with pytest.raises(PolicyViolationError):
        guarded(1)


def test_exceptions_of_the_body_pass_through_and_are_counted(guard: Guard) -> None:
    @guard.guarded_action(agent_id="bot")
    def boom() -> None:
        raise KeyError("x")

    with pytest.raises(KeyError):
        boom()
    assert guard.counts("agent", "bot").model_dump() == {
        "executed": 1,
        "refused": 0,
        "failed": 1,
        "unavailable": 0,
        "cancelled": 0,
    }


def test_policy_violation_error_pickles(guard: Guard) -> None:
    import pickle

    guard.kill("agent", "bot", reason="r")

    @guard.guarded_action(agent_id="bot")
    def f() -> None: ...

    with pytest.raises(PolicyViolationError) as info:
        f()
    copy = pickle.loads(pickle.dumps(info.value))
    assert str(copy) == str(info.value) and copy.killed_by == info.value.killed_by


class StrictSource(LocalSource):
    """Asks "the server" on every call, noting which thread asked."""

    strict = True

    def __init__(self) -> None:
        super().__init__(MemoryStore(), "org")
        self.index.fresh_until = -math.inf  # nothing cached is ever current
        self.askers: list[threading.Thread] = []

    def verify(self, action: str, scope: Scope) -> Verdict:
        self.askers.append(threading.current_thread())
        return CLEAR


async def test_strict_async_calls_and_async_generators_ask_off_the_event_loop() -> None:
    source = StrictSource()
    guard = Guard(source)

    @guard.guarded_action
    async def fetch() -> int:
        return 1

    @guard.guarded_action
    async def stream():  # type: ignore[no-untyped-def]
        yield 1

    assert await fetch() == 1
    assert [i async for i in stream()] == [1]
    assert len(source.askers) == 2
    assert threading.current_thread() not in source.askers
