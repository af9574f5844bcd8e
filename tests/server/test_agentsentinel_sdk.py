"""The seed product's own SDK, ``agentsentinel-sdk`` 0.4 unchanged, against a real
``agentguard serve`` over loopback, on SQLite and PostgreSQL.

Its ``KillSwitchClient`` and ``@guarded_action`` stop on our kills with an agentguard API key
as their token; what else it sends (its interventions, its ledger with cost, its
``X-Sentinel-*`` identity) lands in our interventions, fleet and usage, where a server budget
rule sees it; and the console shows the agent's refusal and spend (in Chromium).
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import agent_sentinel as sentinel
import httpx
import pytest
from agent_sentinel import (
    AgentKilledError,
    ExecutionContext,
    InterventionTracker,
    KillSwitchClient,
    Ledger,
    ManualSync,
    NoPolicyForWriteError,
    PolicyEngine,
    PolicyViolationError,
    SyncConfig,
    guarded_action,
)

from agentguard.server import KillSwitchServer
from support.api import bearer
from support.processes import Process

AGENT = "sdk-mailer"
RUN = "run-1"


@dataclass
class Deployment:
    """``agentguard serve`` on a database, an operator's key and the SDK's agent key."""

    url: str
    admin: str
    sdk_key: str  # an agent key bound to AGENT: what the SDK is configured with
    process: Process
    keys: Callable[..., str]

    def get(self, path: str, **params: Any) -> Any:
        answer = httpx.get(f"{self.url}/api/v1{path}", params=params, headers=bearer(self.admin))
        assert answer.status_code == 200, answer.text
        return answer.json()

    def post(self, path: str, **body: Any) -> httpx.Response:
        return httpx.post(f"{self.url}/api/v1{path}", json=body, headers=bearer(self.admin))

    def killed(self, target_type: str, target_id: str) -> bool:
        check = self.get("/kill-switch/check", target_type=target_type, target_id=target_id)
        return bool(check["is_killed"])


@pytest.fixture
def serve(start_process: Callable[..., Process], database_url: str) -> Callable[..., Deployment]:
    """Factory: ``serve(*options)`` runs ``agentguard serve OPTIONS`` on the test's database."""

    def start(*options: str) -> Deployment:
        argv = [sys.executable, "-m", "agentguard.cli", "serve", "--database-url", database_url,
                "--port", "{port}", "--log-level", "warning", *options]  # fmt: skip
        process = start_process(argv)
        keys = KillSwitchServer(database_url)
        try:
            admin = keys.create_key("org_a", owner="usr_ops", scopes=["admin"])
            sdk_key = keys.create_key("org_a", owner="sdk", scopes=["agent"], agents=[AGENT])
        finally:
            keys.close()

        def key(*agents: str) -> str:
            other = KillSwitchServer(database_url)
            try:
                return other.create_key("org_a", owner="sdk", scopes=["agent"], agents=agents)
            finally:
                other.close()

        return Deployment(process.url, admin, sdk_key, process, key)

    return start


@pytest.fixture
def sdk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The SDK's process-wide state, fresh: its ledger and interventions files in a directory of
    this test (returned), no kill-switch client, no policy, no spend."""
    home = tmp_path / "agent-sentinel"
    home.mkdir()
    monkeypatch.setenv("AGENT_SENTINEL_HOME", str(home))
    monkeypatch.delenv("AGENT_SENTINEL_ENFORCEMENT", raising=False)

    def reset() -> None:
        PolicyEngine.stop_remote_sync()
        KillSwitchClient.reset()
        PolicyEngine.reset(clear_pin=True)
        sentinel.CostTracker.reset_all()
        Ledger.reset()

    reset()
    InterventionTracker.initialize(str(home / "interventions.jsonl"))
    yield home
    reset()


def lines(path: Path) -> list[dict[str, Any]]:
    """The records of one of the SDK's JSONL files (what it has not uploaded yet)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def sync_of(deployment: Deployment, token: str | None = None, **config: Any) -> ManualSync:
    """The SDK's own uploader, flushed by hand (its background thread does the same on a timer)."""
    return ManualSync(
        SyncConfig(
            deployment.url, token or deployment.sdk_key, run_id=RUN, agent_id=AGENT, **config
        )
    )


def mailer() -> tuple[Callable[..., str], Callable[..., str], list[str]]:
    """Two guarded actions of the SDK: ``send_email`` ($0.40 each, ``fail=True`` raises) and
    ``wire_funds`` ($2); and the list of what their bodies did."""
    done: list[str] = []

    @guarded_action(name="send_email", cost_usd=0.40)
    def send_email(to: str, fail: bool = False) -> str:
        if fail:
            raise ConnectionError("mail server down")
        done.append(to)
        return "sent"

    @guarded_action(name="wire_funds", cost_usd=2.0)
    def wire_funds(amount: int) -> str:
        done.append(f"wired {amount}")
        return "wired"

    return send_email, wire_funds, done


# -- its kill switch: the seed contract ---------------------------------------------------------


def test_its_kill_switch_client_and_guarded_action_stop_on_our_kills(
    serve: Callable[..., Deployment], sdk: Path
) -> None:
    ops = serve()
    KillSwitchClient.configure(ops.url, ops.sdk_key, cache_ttl=0)
    PolicyEngine.configure(run_budget=100.0)
    send_email, _, done = mailer()

    @guarded_action(name="summarise", mission_id="launch")
    async def summarise(text: str) -> str:
        done.append("summary")
        return text[:10]

    with ExecutionContext(agent_id=AGENT, run_id=RUN):
        assert send_email("a@example.com") == "sent"
        assert KillSwitchClient.is_killed("agent", AGENT) is False
        for target_type, target_id in (("agent", AGENT), ("run", RUN), ("mission", "launch")):
            killed = ops.post("/kill-switch/kill", target_type=target_type, target_id=target_id,
                              reason=f"stop the {target_type}")  # fmt: skip
            assert killed.status_code == 200, killed.text
            assert KillSwitchClient.is_killed(target_type, target_id) is True
            before = list(done)
            with pytest.raises(AgentKilledError) as stopped:
                if target_type == "mission":
                    asyncio.run(summarise("a long report"))
                else:
                    send_email("b@example.com")
            assert stopped.value.details["target_type"] == target_type
            assert done == before, "the body ran after our kill"
            with pytest.raises(AgentKilledError):
                KillSwitchClient.check_or_raise(agent_id=AGENT, run_id=RUN, mission_id="launch")
            assert ops.post("/kill-switch/revive", target_type=target_type,
                            target_id=target_id).status_code == 200  # fmt: skip
        assert send_email("c@example.com") == "sent"
        assert asyncio.run(summarise("a long report")) == "a long rep"
    assert done == ["a@example.com", "c@example.com", "summary"]


def test_without_a_local_policy_it_refuses_its_own_writes(
    serve: Callable[..., Deployment], sdk: Path
) -> None:
    """agentguard serves no AgentSentinel policies: pointed at it for them, the SDK finds none,
    and its default mode (fail_closed_writes) refuses actions of impact medium or high (README)."""
    ops = serve()
    KillSwitchClient.configure(ops.url, ops.sdk_key, cache_ttl=0)
    PolicyEngine.enable_remote_sync(ops.url, ops.sdk_key, agent_id=AGENT)  # answered 404
    send_email, _, done = mailer()

    @guarded_action(name="read_inbox", impact="read")
    def read_inbox() -> str:
        return "3 new"

    with ExecutionContext(agent_id=AGENT, run_id=RUN):
        with pytest.raises(NoPolicyForWriteError):
            send_email("a@example.com")
        assert read_inbox() == "3 new"
    assert done == []


# -- what else it sends: interventions, its ledger, its identity ---------------------------------


def test_its_refusals_and_spend_reach_our_interventions_and_fleet(
    serve: Callable[..., Deployment], sdk: Path
) -> None:
    ops = serve()
    KillSwitchClient.configure(ops.url, ops.sdk_key, cache_ttl=0)
    PolicyEngine.configure(denied_actions=["wire_funds"], run_budget=100.0)
    send_email, wire_funds, done = mailer()
    with ExecutionContext(agent_id=AGENT, run_id=RUN):
        for to in ("a@example.com", "b@example.com", "c@example.com"):
            send_email(to)
        with pytest.raises(ConnectionError):
            send_email("d@example.com", fail=True)
        with pytest.raises(PolicyViolationError):
            wire_funds(500)  # refused by the SDK's own policy
    assert len(lines(sdk / "ledger.jsonl")) == 5 and len(lines(sdk / "interventions.jsonl")) == 1

    sync_of(ops).flush()
    # The SDK got the answers it expects (202, 201), so it dropped what it uploaded.
    assert lines(sdk / "ledger.jsonl") == [] and lines(sdk / "interventions.jsonl") == []
    agent = ops.get(f"/agents/{AGENT}")
    assert (agent["executed"], agent["refused"], agent["failed"]) == (4, 1, 1)
    assert agent["cost_usd"] == pytest.approx(1.60) and agent["health"] == "active"
    assert [i["instance_id"] for i in agent["instances"]] == [f"agentsentinel:{AGENT}:{RUN}"]
    (refusal,) = ops.get("/interventions", agent_id=AGENT)["data"]
    assert (refusal["type"], refusal["action"], refusal["target_type"]) == (
        "HARD_BLOCK",
        "wire_funds",
        "tool",
    )
    assert (refusal["agent_id"], refusal["run_id"]) == (AGENT, RUN)
    assert refusal["reason"] == (
        "AgentSentinel hard_block (blocked): Action 'wire_funds' is on the denied list"
    )
    counts = ops.get("/interventions/counts")["data"]
    assert [(c["target_id"], c["type"], c["count"]) for c in counts] == [
        ("wire_funds", "HARD_BLOCK", 1)
    ]
    assert done == ["a@example.com", "b@example.com", "c@example.com"]


def test_a_server_budget_rule_trips_on_its_spend_and_it_stops(
    serve: Callable[..., Deployment], sdk: Path
) -> None:
    ops = serve("--rule", "budget:name=sdk-budget,limit_usd=1,window=3600")
    KillSwitchClient.configure(ops.url, ops.sdk_key, cache_ttl=0)
    PolicyEngine.configure(run_budget=100.0)
    send_email, _, done = mailer()
    sync = sync_of(ops)
    with ExecutionContext(agent_id=AGENT, run_id=RUN):
        send_email("a@example.com")
        send_email("b@example.com")
        sync.flush()
        assert not ops.killed("agent", AGENT)  # $0.80
        send_email("c@example.com")
        sync.flush()  # $1.20: over the limit
        assert ops.killed("agent", AGENT)
        with pytest.raises(AgentKilledError):
            send_email("d@example.com")
    assert done == ["a@example.com", "b@example.com", "c@example.com"]
    (kill,) = ops.get("/audit", action="kill")["data"]
    assert kill["actor"] == "rule:sdk-budget" and kill["target_id"] == AGENT
    assert f"AgentSentinel ledger of instance 'agentsentinel:{AGENT}:{RUN}'" in kill["detail"]
    check = ops.get("/kill-switch/check", target_type="agent", target_id=AGENT)
    assert "spent $1.20" in check["reason"]


def test_a_key_bound_to_another_agent_writes_nothing_and_the_sdk_keeps_its_records(
    serve: Callable[..., Deployment], sdk: Path
) -> None:
    ops = serve()
    PolicyEngine.configure(denied_actions=["wire_funds"], run_budget=100.0)
    send_email, wire_funds, _ = mailer()
    with ExecutionContext(agent_id=AGENT, run_id=RUN):
        send_email("a@example.com")
        with pytest.raises(PolicyViolationError):
            wire_funds(1)
    sync_of(ops, ops.keys("payments-bot")).flush()  # refused (403): the SDK keeps its records
    assert len(lines(sdk / "ledger.jsonl")) == 2 and len(lines(sdk / "interventions.jsonl")) == 1
    assert ops.get("/agents")["count"] == 0 and ops.get("/interventions")["count"] == 0
    sync_of(ops).flush()  # the right key: everything lands, once
    assert lines(sdk / "ledger.jsonl") == [] and lines(sdk / "interventions.jsonl") == []
    agent = ops.get(f"/agents/{AGENT}")
    assert (agent["executed"], agent["refused"], agent["cost_usd"]) == (1, 1, pytest.approx(0.40))
    assert ops.get("/interventions")["count"] == 1


def test_a_flush_that_failed_part_way_is_counted_once_when_sent_again(
    serve: Callable[..., Deployment], sdk: Path
) -> None:
    """Its runs go in separate batches; when a later one is refused, the SDK sends every one
    again next time. Our server counts each entry once."""
    ops = serve()
    PolicyEngine.configure(run_budget=100.0)
    send_email, _, _ = mailer()

    @guarded_action(name="charge", cost_usd=5.0, agent_id="payments-bot")
    def charge() -> None:
        """An action of an agent the SDK's key does not speak for."""

    with ExecutionContext(agent_id=AGENT, run_id=RUN):
        send_email("a@example.com")
    with ExecutionContext(agent_id=AGENT, run_id="run-2"):
        charge()
    sync = sync_of(ops)
    for _ in range(3):
        sync.flush()  # run-1: 202; run-2: 403 (payments-bot), so all is kept and re-sent
        assert len(lines(sdk / "ledger.jsonl")) == 2
        agent = ops.get(f"/agents/{AGENT}")
        assert (agent["executed"], agent["cost_usd"]) == (1, pytest.approx(0.40))
    assert ops.get("/agents")["count"] == 1  # payments-bot: nothing


# -- the console -------------------------------------------------------------------------------


@pytest.mark.browser
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_console_shows_its_refusal_and_spend(
    serve: Callable[..., Deployment], sdk: Path, chromium: Any
) -> None:
    from playwright.sync_api import expect

    ops = serve()
    KillSwitchClient.configure(ops.url, ops.sdk_key, cache_ttl=0)
    PolicyEngine.configure(denied_actions=["wire_funds"], run_budget=100.0)
    send_email, wire_funds, _ = mailer()
    with ExecutionContext(agent_id=AGENT, run_id=RUN):
        send_email("a@example.com")
        send_email("b@example.com")
        with pytest.raises(PolicyViolationError):
            wire_funds(500)
    sync_of(ops).flush()

    context = chromium.new_context(locale="en-US", timezone_id="UTC")
    context.set_default_timeout(10_000)
    errors: list[str] = []
    try:
        page = context.new_page()
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(f"{ops.url}/kill-switch")
        page.get_by_label("API key").fill(ops.admin)
        page.get_by_role("button", name="Sign in").click()
        expect(page.locator("#connection")).to_have_text("Live")
        row = page.locator("#agents-body tr").filter(
            has=page.get_by_role("rowheader", name=AGENT, exact=True)
        )
        expect(row.locator(".badge")).to_have_text("active")
        expect(row.locator("td[data-label=Executed]")).to_have_text("2")
        expect(row.locator("td[data-label=Refused]")).to_have_text("1")
        expect(row.locator("td[data-label=Cost]")).to_have_text("$0.80")
        refusal = page.locator("#iv-list > li").filter(has_text="wire_funds")
        expect(refusal).to_have_count(1)
        expect(refusal.locator(".reason")).to_have_text(
            "AgentSentinel hard_block (blocked): Action 'wire_funds' is on the denied list"
        )
        expect(refusal.locator(".meta")).to_contain_text(f"agent {AGENT}")
    finally:
        context.close()
    assert errors == []
