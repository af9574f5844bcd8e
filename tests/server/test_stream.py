"""The change stream and the polled state, over a real uvicorn on loopback."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from support.api import bearer
from support.live import Live
from support.stream_client import StreamReader


def read_stream(
    live: Live, key: str, headers: dict[str, str] | None = None, **options: Any
) -> StreamReader:
    """The stream of ``live`` read with ``key`` (plus ``headers``) in a thread."""
    return StreamReader(live.url, headers={**bearer(key), **(headers or {})}, **options)


@pytest.fixture
def reader(live: Live) -> Iterator[Callable[..., StreamReader]]:
    """Factory: ``reader(key=live.agent, headers=..., params=...)``, a stream read in a thread."""
    readers: list[StreamReader] = []

    def make(key: str | None = None, **options: Any) -> StreamReader:
        r = read_stream(live, key or live.agent, **options)
        readers.append(r)
        return r

    yield make
    for r in readers:
        r.close()


def test_snapshot_then_versioned_changes(live: Live, reader: Callable[..., StreamReader]) -> None:
    assert live.kill("early").status_code == 200
    r = reader()
    assert r.status == 200 and r.headers["x-agentguard-keepalive"] == "0.3"
    assert r.headers["content-type"].startswith("text/event-stream")
    events = r.wait_for(lambda e: len(e) >= 1)
    kind, event_id, data = events[0]
    assert kind == "snapshot" and event_id == "1" and data["version"] == 1
    assert data["organization_id"] == "org_a" and [k["target_id"] for k in data["active"]] == [
        "early"
    ]
    live.kill("rogue-bot")
    live.revive("rogue-bot")
    events = r.wait_for(lambda e: len(e) >= 3)
    assert [(k, i) for k, i, _ in events[1:3]] == [("kill", "2"), ("revive", "3")]
    kill = events[1][2]
    assert kill["version"] == 2 and kill["kind"] == "kill"
    assert kill["kill_switch"]["target_id"] == "rogue-bot" and kill["kill_switch"]["is_active"]
    assert events[2][2]["kill_switch"]["revived_by"].startswith("usr_ops")


def test_keepalive_comments_flow_while_quiet(live: Live) -> None:
    with httpx.stream(
        "GET", f"{live.url}/api/v1/kill-switch/stream", headers=bearer(live.agent), timeout=5
    ) as response:
        comments = 0
        for line in response.iter_lines():
            if line.startswith(":"):
                comments += 1
                if comments == 2:
                    break
    assert comments == 2


def test_last_event_id_resumes_with_the_missed_changes(
    live: Live, reader: Callable[..., StreamReader]
) -> None:
    for name in ("a", "b", "c"):
        live.kill(name)
    r = reader(headers={"Last-Event-ID": "1"})
    events = r.wait_for(lambda e: len(e) >= 3)
    assert [(k, i, d["kill_switch"]["target_id"]) for k, i, d in events[:2]] == [
        ("kill", "2", "b"),
        ("kill", "3", "c"),
    ]
    # Then: caught up, at version 3 (no snapshot).
    assert events[2] == ("resumed", "3", {"organization_id": "org_a", "version": 3})
    live.kill("d")
    assert r.wait_for(lambda e: len(e) >= 4)[3][1] == "4"
    current = reader(headers={"Last-Event-ID": "4"})
    assert current.wait_for(lambda e: len(e) >= 1) == [
        ("resumed", "4", {"organization_id": "org_a", "version": 4})
    ]


# "\xb2" is "²" as the server decodes header bytes (Latin-1): str.isdigit() says yes, int() no.
UNKNOWN_LAST_EVENT_IDS = ["99", "not-a-number", "", b"\xb2", b"1\xb9", "9" * 30, "+1", "1_0"]


def test_unknown_last_event_id_gets_a_fresh_snapshot(
    live: Live, reader: Callable[..., StreamReader]
) -> None:
    """Each unknown or malformed ID on a stream of its own, all against one server process (a
    process per ID took a server start each)."""
    live.kill("a")
    for last_id in UNKNOWN_LAST_EVENT_IDS:
        r = reader(headers={"Last-Event-ID": last_id})
        assert r.status == 200, last_id
        kind, event_id, data = r.wait_for(lambda e: len(e) >= 1)[0]
        assert (kind, event_id, data["version"]) == ("snapshot", "1", 1), last_id
    assert "Traceback" not in live.process.output()


def test_interventions_are_streamed_on_request(
    live: Live, reader: Callable[..., StreamReader]
) -> None:
    r = reader(live.admin, params={"include": "interventions"})
    r.wait_for(lambda e: len(e) >= 1)
    iv = {
        "id": "iv-1",
        "action": "send_email",
        "target_type": "agent",
        "target_id": "bot",
        "occurred_at": "2026-11-22T10:00:00Z",
    }
    assert live.post("/interventions", live.agent, interventions=[iv]).status_code == 200
    events = r.wait_for(lambda e: any(k == "intervention" for k, _, _ in e))
    (item,) = [d for k, _, d in events if k == "intervention"]
    assert item["id"] == "iv-1" and item["action"] == "send_email"
    plain = reader(live.admin)
    plain.wait_for(lambda e: len(e) >= 1)
    live.post("/interventions", live.agent, interventions=[{**iv, "id": "iv-2"}])
    r.wait_for(lambda e: sum(k == "intervention" for k, _, _ in e) == 2)
    assert all(k != "intervention" for k, _, _ in plain.events)


@pytest.mark.postgres
def test_an_intervention_committed_out_of_order_is_still_streamed_once(
    start_process: Callable[..., Any], make_postgres_url: Callable[[], str]
) -> None:
    """PostgreSQL can commit a row after a row with a later sequence number has been streamed;
    the stream still sends it (here: taken before the stream opened, committed after a later
    row was streamed), and sends every row once."""
    from sqlalchemy import create_engine, insert

    from agentguard.server.store.database import Database
    from agentguard.server.store.tables import interventions
    from support.db_rows import intervention_row
    from support.live import start_live

    live = start_live(start_process, make_postgres_url())
    engine = create_engine(Database(live.database_url).url)
    r = None
    try:
        with engine.connect() as held:
            transaction = held.begin()
            # Takes a sequence number, and commits only at the end.
            held.execute(insert(interventions).values(**intervention_row("iv-late", "org_a")))
            r = read_stream(live, live.admin, params={"include": "interventions"})
            r.wait_for(lambda e: len(e) >= 1)
            early = {
                "id": "iv-early",
                "action": "send_email",
                "target_type": "agent",
                "target_id": "bot",
                "occurred_at": "2026-11-22T10:00:00Z",
            }
            assert live.post("/interventions", live.agent, interventions=[early]).status_code == 200
            r.wait_for(lambda e: any(k == "intervention" for k, _, _ in e))
            time.sleep(1.2)  # two more reads past the held row's sequence number
            transaction.commit()
        r.wait_for(lambda e: sum(k == "intervention" for k, _, _ in e) >= 2)
        time.sleep(1.2)  # nothing is sent twice meanwhile: a wait for no event
        ids = [d["id"] for k, _, d in r.events if k == "intervention"]
        assert ids == ["iv-early", "iv-late"]
    finally:
        if r is not None:
            r.close()
        engine.dispose()


def test_stream_is_scoped_to_the_callers_organization(
    live: Live, reader: Callable[..., StreamReader]
) -> None:
    theirs = reader(live.other)
    ours = reader(live.agent)
    live.kill("bot", key=live.other)
    live.kill("mine")
    ours.wait_for(lambda e: len(e) >= 2)
    theirs.wait_for(lambda e: len(e) >= 2)
    assert [d["kill_switch"]["target_id"] for k, _, d in ours.events if k == "kill"] == ["mine"]
    assert [d["kill_switch"]["target_id"] for k, _, d in theirs.events if k == "kill"] == ["bot"]
    assert all(d["organization_id"] == "org_b" for k, _, d in theirs.events if k == "snapshot")


def _new_key(live: Live, scopes: list[str]) -> dict[str, Any]:
    created = live.post("/keys", scopes=scopes, name="streamer")
    assert created.status_code == 200, created.text
    return dict(created.json())


def _revoke(live: Live, key_id: str) -> None:
    revoked = httpx.delete(f"{live.url}/api/v1/keys/{key_id}", headers=bearer(live.admin))
    assert revoked.status_code == 200, revoked.text


def test_revoking_a_key_ends_its_open_streams(
    live: Live, reader: Callable[..., StreamReader]
) -> None:
    key = _new_key(live, ["agent"])
    doomed = [reader(key["secret"]), reader(key["secret"], params={"include": "interventions"})]
    other = reader(live.agent)
    for r in (*doomed, other):
        r.wait_for(lambda e: len(e) >= 1)  # the snapshot: the stream is open
    _revoke(live, key["id"])
    for r in doomed:
        assert r.ended.wait(5), "the revoked key's stream is still open"
        assert r.error is None, r.error  # closed by the server, not broken
    again = httpx.get(f"{live.url}/api/v1/kill-switch/stream", headers=bearer(key["secret"]))
    assert again.status_code == 401 and again.json()["error"] == "unauthorized"
    live.kill("after-revoke")  # another key's stream is unaffected
    other.wait_for(lambda e: any(k == "kill" for k, _, _ in e))
    assert not other.ended.is_set()


def test_a_revocation_on_another_replica_ends_the_stream(
    live: Live, start_process: Callable[..., Any], reader: Callable[..., StreamReader]
) -> None:
    from support.live import start_live

    replica = start_live(start_process, live.database_url, keys=False).with_keys_of(live)
    key = _new_key(live, ["agent"])
    streamed = reader(key["secret"])
    streamed.wait_for(lambda e: len(e) >= 1)
    _revoke(replica, key["id"])  # through the other process
    assert streamed.ended.wait(5), "the stream outlived its key's revocation on another replica"
    assert streamed.error is None, streamed.error


def _last_seen(database_url: str, instance_id: str) -> Any:
    from sqlalchemy import select

    from agentguard.server.store.database import Database
    from agentguard.server.store.tables import instances

    database = Database(database_url)
    try:
        with database.read() as conn:
            return conn.execute(
                select(instances.c.last_seen).where(instances.c.instance_id == instance_id)
            ).scalar()
    finally:
        database.dispose()


def test_a_streaming_instance_is_live_without_heartbeats(
    live: Live, reader: Callable[..., StreamReader]
) -> None:
    """An instance that only streams (no heartbeats, no acks yet) is counted by acks and ?wait=,
    kept seen while connected (keep-alive here: 0.3 s), and no longer once it disconnects."""
    from support import eventually

    params = {"instance_id": "i-stream", "agent_id": "mailer"}
    streaming = reader(params=params)
    streaming.wait_for(lambda e: len(e) >= 1)
    killed = httpx.post(
        f"{live.url}/api/v1/kill-switch/kill",
        params={"wait": 0.5},
        json={"target_type": "agent", "target_id": "mailer"},
        headers=bearer(live.admin),
    )
    assert killed.status_code == 200, killed.text
    assert killed.headers["x-agentguard-acknowledged"] == "0/1"  # this reader never acks
    acks = httpx.get(
        f"{live.url}/api/v1/kill-switch/acks",
        params={"target_type": "agent", "target_id": "mailer"},
        headers=bearer(live.admin),
    ).json()
    assert [(i["instance_id"], i["agent_id"], i["acknowledged"]) for i in acks["instances"]] == [
        ("i-stream", "mailer", False)
    ]
    live.kill("another-agent")  # the instance named its agent: another agent's kill skips it
    others = httpx.get(
        f"{live.url}/api/v1/kill-switch/acks",
        params={"target_type": "agent", "target_id": "another-agent"},
        headers=bearer(live.admin),
    ).json()
    assert others["live"] == 0
    first = _last_seen(live.database_url, "i-stream")
    eventually(lambda: _last_seen(live.database_url, "i-stream") > first)
    streaming.close()
    assert streaming.ended.wait(5)
    # Nothing to wait on: what is checked is that last_seen stops moving once the server
    # notices the disconnect (within a second), over three keep-alive rounds after that.
    time.sleep(1.0)
    gone = _last_seen(live.database_url, "i-stream")
    time.sleep(1.0)
    assert _last_seen(live.database_url, "i-stream") == gone


def test_stream_needs_credentials_and_valid_parameters(live: Live) -> None:
    url = f"{live.url}/api/v1/kill-switch/stream"
    missing = httpx.get(url)
    assert missing.status_code == 401 and missing.json()["error"] == "unauthorized"
    bad = httpx.get(url, params={"include": "everything"}, headers=bearer(live.agent))
    assert bad.status_code == 422 and bad.json()["field"] == "include"
    long = httpx.get(url, params={"agent_id": "x" * 257}, headers=bearer(live.agent))
    assert long.status_code == 422 and long.json()["field"] == "agent_id"
    # Ids as heartbeats take them: a NUL (PostgreSQL text cannot hold one) would fail the
    # batched presence write of every streaming instance; blank ids name nothing.
    for field, value in (("instance_id", "i\x00"), ("run_id", " "), ("mission_id", "\u3000")):
        bad = httpx.get(url, params={field: value}, headers=bearer(live.agent))
        assert bad.status_code == 422 and bad.json()["field"] == field, bad.text
    assert "Traceback" not in live.process.output()


def test_state_has_an_etag_and_answers_304_when_unchanged(live: Live) -> None:
    url = f"{live.url}/api/v1/kill-switch/state"
    first = httpx.get(url, headers=bearer(live.agent))
    assert first.status_code == 200 and first.json() == {
        "organization_id": "org_a",
        "version": 0,
        "active": [],
    }
    etag = first.headers["etag"]
    same = httpx.get(url, headers={**bearer(live.agent), "If-None-Match": etag})
    assert same.status_code == 304 and same.content == b""
    live.kill("bot")
    changed = httpx.get(url, headers={**bearer(live.agent), "If-None-Match": etag})
    assert changed.status_code == 200 and changed.json()["version"] == 1
    assert changed.headers["etag"] != etag
    assert httpx.get(url, headers=bearer(live.other)).json()["active"] == []
