"""The contract every integration keeps, run by each adapter's tests with its real framework.

An adapter's test module subclasses :class:`IntegrationContract` as ``TestContract`` and says
how to guard a tool whose body is ``body()``, how to call it the way a user does, and how to
undo the guarding. The contract checks: a refused call never runs its body; a body that fails
counts as failed; the ``on_block`` message; undo; scope precedence; and that a strict guard's
per-call check does not block the event loop.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any, ClassVar

import pytest

from agentguard import Guard, MemoryStore, PolicyViolationError, scope
from agentguard.sources import CLEAR, LocalSource, Verdict
from support.event_loop import beside_a_ticker

Body = Callable[[], str]
DELAY = 0.4  # how long a strict guard's check takes


class Boom(RuntimeError):
    """What a failing body raises."""


class SlowStrictSource(LocalSource):
    """A strict source whose every check takes ``DELAY`` (as a slow ``GET /check`` would)."""

    strict = True

    def __init__(self) -> None:
        super().__init__(MemoryStore(), "local")
        self.index.fresh_until = -math.inf  # no trusted view: every call is verified

    def verify(self, action: str, scope: Any) -> Verdict:
        time.sleep(DELAY)
        return CLEAR


class IntegrationContract:
    """Subclass as ``TestContract`` and fill in the hooks and class attributes below."""

    action: ClassVar[str] = "lookup"  # the name the guarded call is checked as
    sync_path: ClassVar[bool] = True  # the adapter has a sync path too: run it as well
    on_block: ClassVar[tuple[str, ...]] = ("raise", "message")  # what refusals can be
    fixed_ids: ClassVar[bool] = True  # ids can be fixed on the adapter
    found_agent: ClassVar[str | None] = None  # the agent id the framework gives in ``call``
    found_wins: ClassVar[bool] = False  # it wins over agentguard.scope (a request's claim)
    sees_the_body: ClassVar[bool] = True  # False: a check only (a guardrail), counts no failure

    # -- hooks -----------------------------------------------------------------------------

    def make(self, guard: Guard, body: Body, *, on_block: str | None, **ids: str) -> Any:
        """A guarded tool (or app, server, client) whose body is ``body()``."""
        raise NotImplementedError

    async def call(self, made: Any, *, sync: bool) -> Any:
        """Call it as a user does; what the caller gets (a refusal may be raised)."""
        raise NotImplementedError

    def undo(self, made: Any) -> Any:
        """Undo the guarding; what ``call`` takes to call the original."""
        raise NotImplementedError

    def refusal(self, outcome: Any) -> str | None:
        """The refusal's text if ``outcome`` is a refusal (raised or answered), else None."""
        return str(outcome) if isinstance(outcome, PolicyViolationError) else None

    # -- fixtures --------------------------------------------------------------------------

    @pytest.fixture(params=["async", "sync"])
    def sync(self, request: pytest.FixtureRequest) -> bool:
        if request.param == "sync" and not self.sync_path:
            pytest.skip("no sync path")
        return bool(request.param == "sync")

    @pytest.fixture
    def ran(self) -> list[str]:
        return []

    @pytest.fixture
    def body(self, ran: list[str]) -> Body:
        def body() -> str:
            ran.append("ran")
            return "done"

        return body

    @pytest.fixture
    def guard(self, make_guard: Callable[..., Guard]) -> Guard:
        return make_guard()

    async def attempt(self, made: Any, sync: bool) -> Any:
        try:
            return await self.call(made, sync=sync)
        except PolicyViolationError as error:
            return error

    # -- the contract ----------------------------------------------------------------------

    async def test_a_refused_call_never_runs_its_body(
        self, guard: Guard, body: Body, ran: list[str], sync: bool
    ) -> None:
        made = self.make(guard, body, on_block=None)
        assert self.refusal(await self.attempt(made, sync)) is None
        assert ran == ["ran"]
        guard.kill("tool", self.action, reason="runaway")
        assert self.refusal(await self.attempt(made, sync)) is not None
        assert ran == ["ran"]
        counts = guard.counts(action=self.action)
        assert (counts.executed, counts.refused, counts.failed) == (1, 1, 0)
        guard.revive("tool", self.action)
        assert self.refusal(await self.attempt(made, sync)) is None
        assert ran == ["ran", "ran"]

    async def test_a_failing_body_counts_as_failed(self, guard: Guard, sync: bool) -> None:
        if not self.sees_the_body:
            pytest.skip("a check only: the body runs after it, out of its sight")

        def fails() -> str:
            raise Boom("tool broke")

        made = self.make(guard, fails, on_block=None)
        try:
            outcome = await self.call(made, sync=sync)
        except Exception as error:  # the framework passes the failure on, or answers it
            outcome = error
        assert self.refusal(outcome) is None
        counts = guard.counts(action=self.action)
        assert (counts.executed, counts.refused, counts.failed) == (1, 0, 1)

    async def test_the_on_block_message(
        self, guard: Guard, body: Body, ran: list[str], sync: bool
    ) -> None:
        if "message" not in self.on_block:
            pytest.skip("refusals are always raised")
        made = self.make(guard, body, on_block="message")
        guard.kill("tool", self.action, reason="quota blown", actor="usr_ops")
        outcome = await self.call(made, sync=sync)  # answered, not raised
        text = self.refusal(outcome)
        assert text is not None and not isinstance(outcome, PolicyViolationError)
        assert f"tool '{self.action}' was killed by usr_ops" in text and "quota blown" in text
        assert ran == []
        (block,) = guard.interventions()
        assert block.action == self.action

    async def test_undo_restores_the_original(
        self, guard: Guard, body: Body, ran: list[str]
    ) -> None:
        made = self.make(guard, body, on_block=None)
        guard.kill("tool", self.action)
        original = self.undo(made)
        assert self.refusal(await self.attempt(original, False)) is None
        assert ran == ["ran"] and guard.interventions() == []

    async def test_scope_precedence(self, guard: Guard, body: Body) -> None:
        guard.kill("tool", self.action)  # every call is refused: the refusals show the ids

        async def agent_of(made: Any) -> str | None:
            assert self.refusal(await self.attempt(made, False)) is not None
            return guard.interventions()[0].agent_id

        made = self.make(guard, body, on_block=None)
        assert await agent_of(made) == self.found_agent
        with scope(agent_id="scoped"):
            inner = self.found_agent if self.found_wins else "scoped"
            assert await agent_of(self.make(guard, body, on_block=None)) == inner
            if self.fixed_ids:
                fixed = self.make(guard, body, on_block=None, agent_id="fixed")
                assert await agent_of(fixed) == "fixed"

    async def test_a_strict_check_does_not_block_the_event_loop(
        self, body: Body, ran: list[str]
    ) -> None:
        with Guard(SlowStrictSource()) as guard:
            made = self.make(guard, body, on_block=None)
            outcome, gap, took = await beside_a_ticker(self.call(made, sync=False))
        assert self.refusal(outcome) is None and ran == ["ran"]
        assert took >= DELAY, took  # the check really waited
        assert gap < DELAY / 2, gap  # and the loop went on meanwhile
