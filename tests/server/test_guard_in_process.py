"""``Guard(server)``: the in-process guard reads the server's index; spans and listeners."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import agentguard
from agentguard import Guard, KillChange, KillStore, PolicyViolationError


def test_guard_refuses_after_a_kill_through_the_http_api(server: Any, api: Any) -> None:
    guard = Guard(server, organization_id="org_a", agent_id="email-campaign")
    sent: list[str] = []

    @guard.guarded_action
    def send_email(to: str) -> None:
        sent.append(to)

    send_email("a@example.com")
    operator = api(server, org="org_a", owner="usr_ops", scopes=("operator",))
    ks = operator.kill("agent", "email-campaign", reason="broken link").json()
    with pytest.raises(PolicyViolationError) as caught:
        send_email("b@example.com")
    assert sent == ["a@example.com"]
    error = caught.value
    assert (error.target_type, error.target_id) == ("agent", "email-campaign")
    assert error.reason == "broken link"
    assert error.killed_by == operator.actor
    assert error.kill_switch_id == ks["id"]
    # The refusal is stored as a HARD_BLOCK naming the kill switch and its killer.
    assert guard.flush()
    blocks = operator.get("/api/v1/interventions").json()["data"]
    assert [(b["type"], b["kill_switch_id"], b["killed_by"]) for b in blocks] == [
        ("HARD_BLOCK", ks["id"], operator.actor)
    ]
    operator.revive("agent", "email-campaign")
    send_email("c@example.com")
    assert sent == ["a@example.com", "c@example.com"]
    guard.close()


def test_other_orgs_kills_do_not_reach_the_guard(server: Any, api: Any) -> None:
    guard = Guard(server, organization_id="org_a")
    api(server, org="org_b").kill("agent", "bot")
    assert guard.check("agent", "bot").is_killed is False
    guard.close()


def test_kills_through_the_guard_are_audited_with_its_actor(server: Any, api: Any) -> None:
    guard = Guard(server, organization_id="org_a", actor="usr_local")
    guard.kill("run", "run-1", reason="manual")
    reader = api(server, org="org_a", scopes=("read",))
    assert reader.check("run", "run-1").json()["is_killed"] is True
    entry = reader.get("/api/v1/audit", action="kill").json()["data"][0]
    assert (entry["actor"], entry["target_id"], entry["detail"]) == ("usr_local", "run-1", "manual")
    guard.revive("run", "run-1", actor="usr_other")
    assert reader.get("/api/v1/audit", action="revive").json()["data"][0]["actor"] == "usr_other"
    guard.close()


def test_server_store_is_a_kill_store(server: Any) -> None:
    assert isinstance(server.store, KillStore)
    agentguard.Guard(server.store, organization_id="org_s").kill("tool", "send_email")
    assert server.store.get_active("org_s", "tool", "send_email") is not None


def test_listeners_see_every_change_in_version_order(server: Any) -> None:
    seen: list[tuple[str, int, str]] = []
    unsubscribe = server.store.subscribe(lambda org, c: seen.append((org, c.version, c.kind)))

    def churn(n: int) -> None:
        for i in range(5):
            server.store.kill("org_l", "agent", f"bot-{n}-{i}", reason=None, actor="t")
            server.store.revive("org_l", "agent", f"bot-{n}-{i}", actor="t")

    threads = [threading.Thread(target=churn, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    unsubscribe()
    server.store.kill("org_l", "agent", "after", reason=None, actor="t")
    assert [v for _, v, _ in seen] == list(range(1, 41))
    assert {org for org, _, _ in seen} == {"org_l"}


def test_changes_since_returns_records_as_they_were(server: Any) -> None:
    store = server.store
    store.kill("org_c", "agent", "bot", reason="r", actor="t")
    store.revive("org_c", "agent", "bot", actor="u")
    changes: list[KillChange] = store.changes_since("org_c", 0)
    assert [(c.version, c.kind, c.kill_switch.is_active) for c in changes] == [
        (1, "kill", True),
        (2, "revive", False),
    ]
    assert changes[0].kill_switch.revived_by is None
    assert changes[1].kill_switch.revived_by == "u"
    assert store.changes_since("org_c", 2) == []
    assert store.snapshot("org_c").version == 2


def test_http_kills_and_revives_emit_spans(make_server: Any, database_url: str, api: Any) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    server = make_server(database_url, tracer_provider=provider)
    a = api(server, owner="usr_abc")
    ks = a.kill("agent", "bot", reason="why").json()
    a.revive("agent", "bot")
    spans = exporter.get_finished_spans()
    assert [s.name for s in spans] == ["agentguard.kill", "agentguard.revive"]
    attributes = spans[0].attributes or {}
    assert attributes["agentguard.actor"] == a.actor
    assert attributes["agentguard.kill_switch.id"] == ks["id"]
    assert attributes["agentguard.reason"] == "why"
    assert attributes["agentguard.version"] == 1
