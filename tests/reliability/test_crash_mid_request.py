"""The server SIGKILLed mid-request, again and again, while writers keep writing.

``test_crash_restart.py`` crashes the server between an operator's requests; here several
writers keep requests in flight all the time (kills and revives, batches of 1,000
interventions, 200 KiB checkpoints), the server is SIGKILLed under them ``CRASHES`` times and
restarted on the same port and database, and each writer retries what it lost.

What must hold, on SQLite and on PostgreSQL:

- a lost request was applied whole or not at all: a lost batch is stored entirely or not at
  all (checked before it is retried), a lost checkpoint reads back as the old or the new one;
- retrying a lost request applies it exactly once: each writer's audit trail is exactly its
  alternating kills and revives, the final state is each writer's, the interventions stored
  are exactly the ones sent, once each;
- versions are never lost or skipped: the kill and revive versions of the organization are
  exactly 1..V, V being the version the server reports;
- requests really were cut mid-flight (the client saw the connection drop after sending),
  so the checks above are not vacuous.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from support.api import bearer
from support.reliability import Uvicorn, keys_for

WRITERS = 4
CRASHES = 3
BATCH = 1000
CHECKPOINT_BYTES = 200 * 1024
pytestmark = pytest.mark.slow

# The connection was open and the request (partly) sent when the answer was lost. A refused
# connection (ConnectError) is the outage itself, not a request cut mid-flight.
MID_FLIGHT = (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError, httpx.ReadTimeout)


class ServerGone(Exception):
    """The answer was lost: a connection error or a 5xx."""

    def __init__(self, cause: str, mid_flight: bool) -> None:
        super().__init__(cause)
        self.mid_flight = mid_flight


@dataclass
class Writer:
    """One thread's writes, against its own target, batches and checkpoint key."""

    index: int
    url: str
    key: str
    stop: threading.Event
    toggles: list[str] = field(default_factory=list)  # "kill"/"revive", each applied once
    batches: list[str] = field(default_factory=list)  # the action name of each stored batch
    checkpoints: int = 0  # the last checkpoint number acknowledged
    lost: list[str] = field(default_factory=list)  # what was cut mid-flight
    torn: list[str] = field(default_factory=list)  # a lost write found half-applied
    error: BaseException | None = None

    def __post_init__(self) -> None:
        self.client = httpx.Client(base_url=f"{self.url}/api/v1", headers=bearer(self.key),
                                   timeout=httpx.Timeout(10.0, connect=2.0))  # fmt: skip
        self.target = {"target_type": "agent", "target_id": f"writer-{self.index}"}

    def run(self) -> None:
        try:
            step = 0
            while not self.stop.is_set():
                [self.toggle, self.report, self.checkpoint][step % 3]()
                step += 1
        except BaseException as exc:  # reported by the test thread
            self.error = exc

    # -- each kind of write, retried until the server answers -------------------------------

    def toggle(self) -> None:
        kind = "revive" if self.toggles and self.toggles[-1] == "kill" else "kill"
        gone = False
        while True:
            try:
                response = self._send("POST", f"/kill-switch/{kind}", json=self.target)
            except ServerGone as lost:
                gone = self._note(lost, kind) or gone
                continue
            if response.status_code == 200:
                break
            # 409 to a kill, 404 to a revive: only after a loss, and then the lost one committed.
            assert gone and response.status_code == (409 if kind == "kill" else 404), (
                response.status_code,
                response.text,
            )
            break
        self.toggles.append(kind)

    def report(self) -> None:
        action = f"batch-{self.index}-{len(self.batches)}"
        items = [
            {"id": f"{action}-{i}", "action": action, **self.target,
             "occurred_at": "2026-11-22T12:00:00Z", "instance_id": f"writer-{self.index}"}
            for i in range(BATCH)
        ]  # fmt: skip
        gone = False
        while True:
            try:
                response = self._send("POST", "/interventions", json={"interventions": items})
            except ServerGone as lost:
                gone = self._note(lost, action) or gone
                stored = self.stored(action)
                if stored not in (0, BATCH):
                    self.torn.append(f"{action}: {stored} of {BATCH} stored")
                continue
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["received"] == BATCH
            assert body["created"] == BATCH or (gone and body["created"] == 0), body
            break
        self.batches.append(action)

    def checkpoint(self) -> None:
        number = self.checkpoints + 1
        state = {"n": number, "blob": f"{number}" * (CHECKPOINT_BYTES // len(str(number)))}
        path = f"/checkpoints/writer-{self.index}"
        while True:
            try:
                response = self._send("PUT", path, json={"state": state})
            except ServerGone as lost:
                self._note(lost, f"checkpoint {number}")
                read = self._answer("GET", path)
                if read.status_code == 404:
                    if self.checkpoints:
                        self.torn.append(f"checkpoint {self.checkpoints} vanished")
                    continue
                got = read.json()["state"]
                if got["n"] not in (number - 1, number) or got["blob"] != f"{got['n']}" * (
                    CHECKPOINT_BYTES // len(str(got["n"]))
                ):
                    self.torn.append(f"checkpoint read back as {got['n']}, partly written")
                continue
            assert response.status_code == 200, response.text
            break
        self.checkpoints = number

    # -- transport ----------------------------------------------------------------------------

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self.client.request(method, path, **kwargs)
        except MID_FLIGHT as exc:
            raise ServerGone(f"{type(exc).__name__}: {exc}", mid_flight=True) from exc
        except httpx.TransportError as exc:
            raise ServerGone(f"{type(exc).__name__}: {exc}", mid_flight=False) from exc
        if response.status_code >= 500:
            raise ServerGone(f"{response.status_code}: {response.text}", mid_flight=False)
        return response

    def _answer(self, method: str, path: str, **params: Any) -> httpx.Response:
        """Once the server is back: the answer to a read."""
        deadline = time.monotonic() + 60
        while True:
            try:
                return self._send(method, path, params=params)
            except ServerGone:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stored(self, action: str) -> int:
        return int(self._answer("GET", "/interventions", action=action, limit=1).json()["count"])

    def _note(self, lost: ServerGone, what: str) -> bool:
        if lost.mid_flight:
            self.lost.append(what)
        time.sleep(0.02)
        return True


def crash_under_writers(server: Uvicorn, key: str) -> list[Writer]:
    stop = threading.Event()
    writers = [Writer(i, server.url, key, stop) for i in range(WRITERS)]
    threads = [threading.Thread(target=w.run, name=f"writer-{w.index}") for w in writers]
    for thread in threads:
        thread.start()
    chance = random.Random(2026)
    try:
        for _ in range(CRASHES):
            time.sleep(chance.uniform(0.8, 1.6))  # let requests pile up in flight
            server.crash()
            server.start()  # same port, same database
        time.sleep(1.0)  # the writers' retries land on the last restart
    finally:
        stop.set()
        for thread in threads:
            thread.join(120)
    for w in writers:
        if w.error is not None:
            raise w.error
    return writers


def check_everything(server: Uvicorn, key: str, writers: list[Writer]) -> None:
    assert not [t for w in writers for t in w.torn], [t for w in writers for t in w.torn]
    lost = [what for w in writers for what in w.lost]
    assert lost, "no request was in flight at any crash: the test proved nothing"
    print(f"cut mid-flight: {lost}")

    client = httpx.Client(base_url=f"{server.url}/api/v1", headers=bearer(key), timeout=30)
    audit = all_of(client, "/audit")
    changes = sorted(
        (e for e in audit if e["action"] in ("kill", "revive")), key=lambda e: e["version"]
    )
    version = int(client.get("/kill-switch/state").json()["version"])
    assert [e["version"] for e in changes] == list(range(1, version + 1)), (
        "kill/revive versions must be exactly 1..V: none lost, none skipped"
    )
    active = {ks["target_id"] for ks in all_of(client, "/kill-switch/active")}
    for w in writers:
        mine = [e["action"] for e in changes if e["target_id"] == w.target["target_id"]]
        assert mine == w.toggles, f"writer {w.index}: audit {mine} != sent {w.toggles}"
        assert (w.target["target_id"] in active) == (w.toggles[-1:] == ["kill"])
        for action in w.batches:
            assert w.stored(action) == BATCH, action
        stored = client.get(f"/checkpoints/writer-{w.index}").json()["state"]["n"]
        assert stored == w.checkpoints
    counts = client.get("/interventions/counts", params={"limit": 1000}).json()["data"]
    assert sum(c["count"] for c in counts) == BATCH * sum(len(w.batches) for w in writers)


def all_of(client: httpx.Client, path: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    while True:
        page = client.get(path, params={"skip": len(items), "limit": 1000}).json()
        items.extend(page["data"])
        if not page["data"] or len(items) >= page["count"]:
            return items


def test_sqlite_server_sigkilled_mid_request(
    start_uvicorn: Callable[..., Uvicorn], tmp_path: Path
) -> None:
    path = tmp_path / "agentguard.db"
    url = f"sqlite:///{path}"
    key = keys_for(url, "org_a", admin=["admin"])["admin"]
    server = start_uvicorn(url)
    writers = crash_under_writers(server, key)
    check_everything(server, key, writers)
    server.stop()
    with create_engine(url).connect() as conn:  # the file itself survived the crashes intact
        assert conn.execute(text("PRAGMA integrity_check")).scalar_one() == "ok"


@pytest.mark.postgres
def test_postgres_server_sigkilled_mid_request(
    make_postgres_url: Callable[[], str], start_uvicorn: Callable[..., Uvicorn]
) -> None:
    url = make_postgres_url()
    key = keys_for(url, "org_a", admin=["admin"])["admin"]
    server = start_uvicorn(url)
    writers = crash_under_writers(server, key)
    check_everything(server, key, writers)
