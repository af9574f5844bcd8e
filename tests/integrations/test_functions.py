"""Plain callables: a guarded registry, and functions patched where they live."""

from __future__ import annotations

import asyncio
import inspect
import sys
import types
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest
from integration_contract import Body, IntegrationContract

from agentguard import Guard, InvalidInputError, PolicyViolationError, is_guarded, scope
from agentguard.integrations.functions import (
    guard_registry,
    instrument,
    instrumented,
    unguard_registry,
    uninstrument,
)

if TYPE_CHECKING:
    from conftest import HardBlock, MakeGuard, Spans


def send_email(to: str, body: str = "") -> str:
    """Send an email."""
    return f"sent to {to}"


def search(query: str) -> list[str]:
    return [query]


async def fetch(url: str) -> str:
    return url


@pytest.fixture
def tools_module(monkeypatch: pytest.MonkeyPatch) -> Iterator[types.ModuleType]:
    """An importable module ``fake_tools`` with a function, a class and its methods."""
    module = types.ModuleType("fake_tools")

    def notify(user: str) -> str:
        return f"notified {user}"

    class Mailer:
        def send(self, to: str) -> str:
            return f"mailed {to}"

        @classmethod
        def create(cls) -> Mailer:
            return cls()

        @staticmethod
        def ping() -> str:
            return "pong"

    module.notify = notify  # type: ignore[attr-defined]
    module.Mailer = Mailer  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fake_tools", module)
    yield module
    for target in instrumented():
        if target.startswith("fake_tools:"):
            uninstrument(target)


def test_registry_dict_allowed_refused_revived(
    make_guard: MakeGuard, spans: Spans, hard_block: HardBlock
) -> None:
    guard = make_guard()
    registry = {"send_email": send_email, "web_search": search}
    tools = guard_registry(registry, guard=guard)

    assert type(tools) is dict and list(tools) == ["send_email", "web_search"]
    assert all(is_guarded(fn) for fn in tools.values())
    assert inspect.signature(tools["send_email"]) == inspect.signature(send_email)
    assert tools["send_email"].__doc__ == send_email.__doc__
    assert registry["send_email"] is send_email  # the input is left alone

    with scope(agent_id="mailer", run_id="run-1"):
        assert tools["send_email"]("a@example.com") == "sent to a@example.com"
        guard.kill("tool", "web_search", reason="search quota blown", actor="ops")
        assert tools["send_email"]("b@example.com") == "sent to b@example.com"
        with spans.tracer.start_as_current_span("invoke_agent mailer") as agent_span:
            with pytest.raises(PolicyViolationError) as caught:
                tools["web_search"]("cats")  # the registry key is the action name

    assert caught.value.target_type == "tool" and caught.value.target_id == "web_search"
    assert caught.value.reason == "search quota blown" and caught.value.killed_by == "ops"
    block = hard_block(guard)
    assert (block.action, block.agent_id, block.run_id) == ("web_search", "mailer", "run-1")
    span = spans.one_block("execute_tool web_search", "web_search")
    assert span.parent is not None
    assert span.parent.span_id == agent_span.get_span_context().span_id

    guard.revive("tool", "web_search")
    assert tools["web_search"]("dogs") == ["dogs"]
    counts = guard.counts(action="web_search")
    assert (counts.executed, counts.refused, counts.failed) == (1, 1, 0)


@pytest.mark.parametrize("shape", [list, tuple])
def test_registry_sequences_keep_their_shape(
    make_guard: MakeGuard, shape: Callable[..., object]
) -> None:
    guard = make_guard()
    tools = guard_registry(shape([send_email, search]), guard=guard)
    assert type(tools) is shape
    guard.kill("tool", "send_email")
    with pytest.raises(PolicyViolationError):
        tools[0]("a@example.com")
    assert tools[1]("x") == ["x"]


def test_registry_is_idempotent_and_reversible(make_guard: MakeGuard) -> None:
    guard = make_guard()
    registry = OrderedDict(send_email=send_email, fetch=fetch)
    tools = guard_registry(registry, guard=guard)
    again = guard_registry(tools, guard=guard)
    assert type(tools) is OrderedDict
    assert all(again[k] is tools[k] for k in tools)

    original = unguard_registry(tools)
    assert original == registry and all(original[k] is registry[k] for k in registry)
    assert unguard_registry(original) == registry  # nothing left to undo


def test_registry_guards_async_functions(make_guard: MakeGuard) -> None:
    guard = make_guard()
    tools = guard_registry({"fetch": fetch}, guard=guard, agent_id="crawler")
    assert asyncio.run(tools["fetch"]("https://example.com")) == "https://example.com"
    guard.kill("agent", "crawler")
    with pytest.raises(PolicyViolationError):
        asyncio.run(tools["fetch"]("https://example.com"))


def test_registry_rejects_what_it_cannot_guard(make_guard: MakeGuard) -> None:
    guard = make_guard()
    with pytest.raises(InvalidInputError, match="registry"):
        guard_registry(send_email, guard=guard)
    with pytest.raises(InvalidInputError, match="fn"):
        guard_registry({"x": 42}, guard=guard)


def test_instrument_function_idempotent_and_reversible(
    tools_module: Any, make_guard: MakeGuard, hard_block: HardBlock
) -> None:
    guard = make_guard()
    original = tools_module.notify

    wrapper = instrument("fake_tools:notify", guard=guard, agent_id="notifier")
    assert instrument("fake_tools:notify", guard=guard) is wrapper  # idempotent
    assert tools_module.notify is wrapper and wrapper.__wrapped__ is original
    assert instrumented() == ["fake_tools:notify"]

    import fake_tools  # type: ignore[import-not-found]  # callers look it up at call time

    assert fake_tools.notify("ann") == "notified ann"
    guard.kill("agent", "notifier", reason="spamming")
    with pytest.raises(PolicyViolationError, match="spamming"):
        fake_tools.notify("bob")
    assert hard_block(guard).action == "notify"

    assert uninstrument("fake_tools:notify") is True
    assert tools_module.notify is original
    assert uninstrument("fake_tools:notify") is False  # already gone
    assert fake_tools.notify("bob") == "notified bob"  # unguarded again


def test_instrument_methods_for_every_instance(tools_module: Any, make_guard: MakeGuard) -> None:
    guard = make_guard()
    Mailer = tools_module.Mailer
    originals = {name: vars(Mailer)[name] for name in ("send", "create", "ping")}
    for name in originals:
        instrument(f"fake_tools:Mailer.{name}", guard=guard, name=f"mailer.{name}")

    mailer = Mailer()
    assert mailer.send("a") == "mailed a"
    assert isinstance(Mailer.create(), Mailer) and Mailer.ping() == "pong"
    guard.kill("tool", "mailer.send")
    with pytest.raises(PolicyViolationError):
        mailer.send("b")
    assert Mailer.ping() == "pong"
    guard.kill("tool", "mailer.create")
    with pytest.raises(PolicyViolationError):
        Mailer.create()

    for name in originals:
        assert uninstrument(f"fake_tools:Mailer.{name}")
        assert vars(Mailer)[name] is originals[name]
    assert mailer.send("c") == "mailed c"


def test_instrument_rejects_bad_targets(tools_module: Any, make_guard: MakeGuard) -> None:
    guard = make_guard()
    with pytest.raises(InvalidInputError, match="target"):
        instrument("fake_tools.notify", guard=guard)
    guarded = guard.guarded_action(tools_module.notify)
    tools_module.already = guarded
    with pytest.raises(InvalidInputError, match="already a guarded action"):
        instrument("fake_tools:already", guard=guard)


class TestContract(IntegrationContract):
    """A registry's sync and async functions keep the integration contract."""

    on_block = ("raise",)

    def make(self, guard: Guard, body: Body, *, on_block: str | None, **ids: str) -> Any:
        def lookup() -> str:
            return body()

        async def alookup() -> str:
            return body()

        return (
            guard_registry({"lookup": lookup}, guard=guard, **ids),
            guard_registry({"lookup": alookup}, guard=guard, **ids),
        )

    async def call(self, made: Any, *, sync: bool) -> Any:
        sync_tools, async_tools = made
        return sync_tools["lookup"]() if sync else await async_tools["lookup"]()

    def undo(self, made: Any) -> Any:
        return tuple(unguard_registry(tools) for tools in made)


class TestInstrumentContract(TestContract):
    """Functions patched where they live keep the contract too; undo is ``uninstrument``."""

    TARGETS = ("contract_tools:lookup", "contract_tools:alookup")

    @pytest.fixture(autouse=True)
    def forget_the_module(self) -> Iterator[None]:
        yield
        for target in self.TARGETS:
            uninstrument(target)
        sys.modules.pop("contract_tools", None)

    def make(self, guard: Guard, body: Body, *, on_block: str | None, **ids: str) -> Any:
        module = types.ModuleType("contract_tools")

        def lookup() -> str:
            return body()

        async def alookup() -> str:
            return body()

        module.lookup, module.alookup = lookup, alookup  # type: ignore[attr-defined]
        sys.modules["contract_tools"] = module
        for target in self.TARGETS:
            instrument(target, guard=guard, name="lookup", **ids)
        return module

    async def call(self, made: Any, *, sync: bool) -> Any:
        return made.lookup() if sync else await made.alookup()

    def undo(self, made: Any) -> Any:
        assert all(uninstrument(target) for target in self.TARGETS)
        assert not is_guarded(made.lookup) and not is_guarded(made.alookup)
        return made
