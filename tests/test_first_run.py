"""What a new user meets first: misconfiguration caught at construction, ``Guard.from_env``,
``wait_until_revived`` after a refusal wherever its ids came from, heartbeat ids from the scope,
and refusals for want of kill state told apart from a kill's."""

from __future__ import annotations

import pickle
import threading
from collections.abc import Iterator
from typing import Any

import pytest

import agentguard
from agentguard import (
    AgentGuardWarning,
    Guard,
    InterventionType,
    InvalidInputError,
    KillStateUnavailableError,
    MemoryStore,
    PolicyViolationError,
    scope,
)
from agentguard.sources import LocalSource

# -- 3. misconfiguration raises at construction, naming the argument -----------------------------


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: Guard(api_key="ag_key"), "api_key"),
        (lambda: Guard(bootstrap="state.json"), "bootstrap"),
        (lambda: Guard(mode="strict"), "mode"),
        (lambda: Guard("http://127.0.0.1:9"), "api_key"),
        (lambda: Guard("http://127.0.0.1:9", api_key=123), "api_key"),
        (lambda: Guard("http://127.0.0.1:9", api_key=""), "api_key"),
        (lambda: Guard("http://127.0.0.1:9", api_key="k", start_wait=-1), "start_wait"),
        (lambda: Guard("http://127.0.0.1:9", api_key="k", start_wait="5"), "start_wait"),
        (lambda: Guard(""), "url"),
        (lambda: Guard(agent_id=""), "agent_id"),
        (lambda: Guard(agent_id=7), "agent_id"),
        (lambda: Guard(run_id="  "), "run_id"),
        (lambda: Guard(mission_id=""), "mission_id"),
        (lambda: Guard(instance_id=""), "instance_id"),
    ],
)
def test_misconfigured_guards_raise_naming_the_argument(make: Any, field: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        make()
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}:")


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"name": 123}, "name"),
        ({"name": ""}, "name"),
        ({"agent_id": ""}, "agent_id"),
        ({"run_id": 5}, "run_id"),
    ],
)
def test_guarded_action_options_are_validated_when_given(
    options: dict[str, Any], field: str
) -> None:
    guard = Guard()
    for decorate in (guard.guarded_action, agentguard.guarded_action):
        with pytest.raises(InvalidInputError) as caught:
            decorate(**options)
        assert caught.value.field == field


def test_from_env_reads_url_key_and_agent(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AGENTGUARD_URL", "AGENTGUARD_API_KEY", "AGENTGUARD_AGENT_ID"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(InvalidInputError) as caught:
        Guard.from_env()
    assert caught.value.field == "AGENTGUARD_URL"
    monkeypatch.setenv("AGENTGUARD_URL", "http://127.0.0.1:9")
    with pytest.raises(InvalidInputError) as caught:
        Guard.from_env()
    assert caught.value.field == "AGENTGUARD_API_KEY"
    monkeypatch.setenv("AGENTGUARD_API_KEY", "ag_env_key")
    monkeypatch.setenv("AGENTGUARD_AGENT_ID", "env-bot")
    guard = Guard.from_env(start_wait=0, mode="strict")
    try:
        assert guard.source.url == "http://127.0.0.1:9"  # type: ignore[attr-defined]
        assert guard.source.client.http.headers["Authorization"] == "Bearer ag_env_key"  # type: ignore[attr-defined]
        with pytest.raises(KillStateUnavailableError) as refused:
            guard.enforce("probe")  # nothing listens there: refused, with the env's agent id
        assert (refused.value.target_type, refused.value.target_id) == ("agent", "env-bot")
    finally:
        guard.close()
    other = Guard.from_env(start_wait=0, mode="strict", agent_id="explicit-bot")
    try:
        with pytest.raises(KillStateUnavailableError) as refused:
            other.enforce("probe")
        assert refused.value.target_id == "explicit-bot"
    finally:
        other.close()


# -- 1. refusals for want of kill state are not a kill's --------------------------------------


class NeverSynced(LocalSource):
    """A store-backed source whose view has never been confirmed, like a remote one at start."""

    def __init__(self) -> None:
        super().__init__(MemoryStore(), "org")
        self.index.fresh_until = float("-inf")
        self.index.synced_at = None


def test_unavailable_kill_state_raises_its_own_error_and_intervention_type() -> None:
    source = NeverSynced()
    guard = Guard(source, agent_id="bot")
    with pytest.raises(KillStateUnavailableError, match="never been synced") as caught:
        guard.enforce("send_email")
    error = caught.value
    assert isinstance(error, PolicyViolationError) and not error.killed
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is KillStateUnavailableError and str(again) == str(error)
    (iv,) = guard.interventions()
    assert iv.type is InterventionType.UNAVAILABLE and iv.kill_switch_id is None
    counts = guard.counts("agent", "bot")
    assert (counts.refused, counts.unavailable) == (0, 1)

    source.index.mark_authoritative()
    guard.kill("agent", "bot", reason="runaway")
    with pytest.raises(PolicyViolationError) as killed:
        guard.enforce("send_email")
    assert not isinstance(killed.value, KillStateUnavailableError)
    assert guard.interventions(type="HARD_BLOCK")[0].kill_switch_id is not None
    assert guard.counts("agent", "bot").refused == 1
    guard.close()


# -- 4. wait_until_revived waits on what refused the last call ---------------------------------


def _revive_soon(guard: Guard, target_type: str, target_id: str) -> threading.Timer:
    timer = threading.Timer(0.3, guard.revive, (target_type, target_id))
    timer.start()
    return timer


def test_wait_until_revived_without_arguments_waits_on_the_last_refusal() -> None:
    guard = Guard()
    guard.kill("agent", "named-bot")

    @guard.guarded_action(agent_id="named-bot")  # ids from the decorator, not from a scope
    def act() -> None: ...

    with pytest.raises(PolicyViolationError):
        act()
    assert guard.wait_until_revived(timeout=0.2) is False  # still killed: it does wait
    assert guard.wait_until_revived(0.2) is False  # a number alone is the timeout
    _revive_soon(guard, "agent", "named-bot").join()
    assert guard.wait_until_revived(timeout=5) is True
    act()


def test_wait_until_revived_takes_the_error_and_follows_a_scope_into_threads() -> None:
    guard = Guard()
    guard.kill("tool", "send_email")
    send = guard.guarded_action(name="send_email")(lambda: "sent")
    errors: list[PolicyViolationError] = []

    def worker() -> None:
        try:
            send()
        except PolicyViolationError as error:
            errors.append(error)

    with scope(run_id="run-1"):
        import contextvars

        ctx = contextvars.copy_context()
        thread = threading.Thread(target=ctx.run, args=(worker,))
        thread.start()
        thread.join()
        assert errors
        assert guard.wait_until_revived(timeout=0.2) is False  # the refusal in the thread
        timer = _revive_soon(guard, "tool", "send_email")
        assert guard.wait_until_revived(errors[0], timeout=5) is True
        timer.join()
    guard.kill("agent", "a")
    with scope(agent_id="a"), pytest.raises(PolicyViolationError) as caught:
        send()
    with scope(agent_id="b"):
        assert guard.wait_until_revived(timeout=0) is True  # another scope: nothing refused it
    assert guard.wait_until_revived(caught.value, timeout=0.1) is False
    with pytest.raises(InvalidInputError):
        guard.wait_until_revived("agent")  # type: ignore[arg-type]


async def test_await_revived_accepts_the_error() -> None:
    guard = Guard()
    guard.kill("agent", "async-bot")

    @guard.guarded_action(agent_id="async-bot")
    async def act() -> None: ...

    with pytest.raises(PolicyViolationError) as caught:
        await act()
    assert await guard.await_revived(timeout=0.1) is False
    assert await guard.await_revived(caught.value, timeout=0.1) is False
    timer = _revive_soon(guard, "agent", "async-bot")
    assert await guard.await_revived(caught.value, timeout=5) is True
    timer.join()


def test_wait_until_revived_after_an_unavailable_refusal_waits_for_kill_state() -> None:
    source = NeverSynced()
    guard = Guard(source, agent_id="bot")
    with pytest.raises(KillStateUnavailableError):
        guard.enforce("probe")
    assert guard.wait_until_revived(timeout=0.2) is False
    threading.Timer(0.2, source.index.mark_authoritative).start()
    assert guard.wait_until_revived(timeout=5) is True
    guard.enforce("probe")


# -- 5. heartbeats take their ids from the scope they start in ----------------------------------


@pytest.fixture
def server() -> Iterator[Any]:
    from agentguard.server import KillSwitchServer

    s = KillSwitchServer()
    s.start()
    yield s
    s.close()


def test_heartbeat_ids_explicit_then_scope_then_guard(server: Any) -> None:
    guard = Guard(server, agent_id="default-bot", run_id="default-run")
    with scope(agent_id="scoped-bot", mission_id="scoped-mission"):
        heartbeat = guard.start_heartbeat(interval=3600)
    assert tuple(heartbeat.scope) == ("scoped-bot", "default-run", "scoped-mission")
    guard.stop_heartbeat()
    assert server.fleet.agents("default", "scoped-bot")  # the server heard it as scoped-bot
    with scope(agent_id="scoped-bot"):
        heartbeat = guard.start_heartbeat(interval=3600, agent_id="explicit-bot")
    assert heartbeat.scope.agent_id == "explicit-bot"
    guard.stop_heartbeat()
    guard.close()


def test_a_heartbeat_without_an_agent_id_warns(server: Any) -> None:
    guard = Guard(server)
    with pytest.warns(AgentGuardWarning, match="names no agent"):
        guard.start_heartbeat(interval=3600)
    guard.close()
