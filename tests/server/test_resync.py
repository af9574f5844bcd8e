"""Resyncing a guard: only the changes missed while the change log has them, compressed
snapshots otherwise; over a real uvicorn on loopback, on SQLite and PostgreSQL."""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest

from agentguard.server import KillSwitchServer
from agentguard.server.store.database import Database
from agentguard.server.store.sqlstore import SQLStore
from support.api import bearer
from support.live import Live
from support.stream_client import StreamReader, ThreadServer

STATE = "/api/v1/kill-switch/state"
STREAM = "/api/v1/kill-switch/stream"


@pytest.fixture
def reader(live: Live) -> Iterator[Callable[..., StreamReader]]:
    readers: list[StreamReader] = []

    def make(**options: Any) -> StreamReader:
        headers = {**bearer(live.agent), **options.pop("headers", {})}
        r = StreamReader(live.url, headers=headers, **options)
        readers.append(r)
        return r

    yield make
    for r in readers:
        r.close()


def prune_change_log(database_url: str) -> dict[str, int]:
    """``db prune --change-log`` of every change written so far."""
    database = Database(database_url)
    try:
        later = datetime.now(timezone.utc) + timedelta(seconds=1)
        return SQLStore(database).prune(later, change_log_too=True)
    finally:
        database.dispose()


def state(live: Live, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.get(f"{live.url}{STATE}", headers={**bearer(live.agent), **(headers or {})})


def test_a_resume_across_a_change_log_gap_falls_back_to_a_snapshot(
    live: Live, reader: Callable[..., StreamReader]
) -> None:
    live.kill("a")
    live.kill("b")
    assert prune_change_log(live.database_url)["change-log entries"] == 2
    live.kill("c")  # version 3: the log has it, not 1 or 2
    covered = reader(headers={"Last-Event-ID": "2"})
    events = covered.wait_for(lambda e: len(e) >= 2)
    assert [(k, i) for k, i, _ in events] == [("kill", "3"), ("resumed", "3")]
    gap = reader(headers={"Last-Event-ID": "1"})
    kind, event_id, data = gap.wait_for(lambda e: len(e) >= 1)[0]
    assert (kind, event_id) == ("snapshot", "3")
    assert sorted(ks["target_id"] for ks in data["active"]) == ["a", "b", "c"]
    live.kill("d")  # and the stream goes on from the snapshot
    assert gap.wait_for(lambda e: len(e) >= 2)[1][:2] == ("kill", "4")
    # Pruned up to the newest change: nothing after 2 is in the log any more.
    prune_change_log(live.database_url)
    behind = reader(headers={"Last-Event-ID": "2"})
    assert behind.wait_for(lambda e: len(e) >= 1)[0][:2] == ("snapshot", "4")


def test_a_poll_gets_the_changes_since_its_etag_when_it_asks(live: Live) -> None:
    live.kill("a")
    first = state(live)
    assert first.status_code == 200 and first.headers["etag"] == '"1"'
    live.kill("b")
    live.revive("a")
    delta = state(live, {"If-None-Match": '"1"', "A-IM": "changes"})
    assert delta.status_code == 226 and delta.headers["im"] == "changes"
    assert delta.headers["etag"] == '"3"'
    body = delta.json()
    assert (body["organization_id"], body["version"]) == ("org_a", 3)
    assert [(c["version"], c["kind"], c["kill_switch"]["target_id"]) for c in body["changes"]] == [
        (2, "kill", "b"),
        (3, "revive", "a"),
    ]
    # Current: 304, with or without A-IM.
    assert state(live, {"If-None-Match": '"3"', "A-IM": "changes"}).status_code == 304
    assert state(live, {"If-None-Match": '"3"'}).status_code == 304
    # Without A-IM the seed's answer: the whole state.
    whole = state(live, {"If-None-Match": '"1"'})
    assert whole.status_code == 200 and [k["target_id"] for k in whole.json()["active"]] == ["b"]
    # Past the change log: the whole state, though asked for the changes.
    prune_change_log(live.database_url)
    pruned = state(live, {"If-None-Match": '"1"', "A-IM": "changes"})
    assert pruned.status_code == 200 and pruned.json()["version"] == 3
    assert pruned.json()["active"][0]["target_id"] == "b"


def test_snapshots_are_gzipped_for_clients_that_take_gzip(live: Live) -> None:
    for i in range(30):
        live.kill(f"bot-{i}")
    plain = state(live, {"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers
    with httpx.Client() as client:
        raw = client.send(
            client.build_request(
                "GET",
                f"{live.url}{STATE}",
                headers={**bearer(live.agent), "Accept-Encoding": "gzip"},
            ),
            stream=True,
        )
        compressed = b"".join(raw.iter_raw())
        raw.close()
    assert raw.headers["content-encoding"] == "gzip"
    assert gzip.decompress(compressed) == plain.content
    assert len(compressed) * 4 < len(plain.content)


def test_the_stream_is_gzipped_event_by_event(live: Live) -> None:
    """A spliced, precompressed snapshot, then changes compressed as they come: each decodes
    as soon as it arrives, and the whole is one valid gzip member."""
    for i in range(30):
        live.kill(f"bot-{i}")
    headers = {**bearer(live.agent), "Accept-Encoding": "gzip"}
    with (
        httpx.Client(timeout=httpx.Timeout(5.0, read=10.0)) as client,
        client.stream("GET", f"{live.url}{STREAM}", headers=headers) as response,
    ):
        assert response.headers["content-encoding"] == "gzip"
        decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
        text = ""
        chunks = response.iter_raw()
        while "event: snapshot" not in text or not text.endswith("\r\n\r\n"):
            text += decoder.decompress(next(chunks)).decode()
        data = next(line for line in text.split("\r\n") if line.startswith("data: "))
        assert len(json.loads(data[6:])["active"]) == 30
        live.kill("late")
        while "event: kill" not in text:
            text += decoder.decompress(next(chunks)).decode()
        assert '"target_id": "late"' in text.split("event: kill")[1]


def test_one_snapshot_build_serves_many_streams(
    make_server: Callable[..., KillSwitchServer],
) -> None:
    server = make_server(None, keepalive=0.3)
    server.start()
    key = server.create_key("org_a", owner="bot", scopes=["agent"], agents=["*"])
    server.store.kill("org_a", "agent", "a", reason="r", actor="usr")
    served = ThreadServer(server)
    readers: list[StreamReader] = []
    try:
        readers = [StreamReader(served.url, headers=bearer(key)) for _ in range(8)]
        for r in readers:
            assert r.wait_for(lambda e: len(e) >= 1)[0][:2] == ("snapshot", "1")
        assert server.snapshots.built == 1
        server.store.kill("org_a", "agent", "b", reason="r", actor="usr")
        late = StreamReader(served.url, headers=bearer(key))
        readers.append(late)
        assert late.wait_for(lambda e: len(e) >= 1)[0][:2] == ("snapshot", "2")
        assert server.snapshots.built == 2
    finally:
        for r in readers:
            r.close()
        served.close()
