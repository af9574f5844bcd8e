"""Webhook deliveries survive crashes and are not doubled by replicas, with real
``agentguard serve`` processes on SQLite and PostgreSQL and a real receiver on loopback.

- A kill committed, its delivery attempted and failed (the receiver is down), then the
  server SIGKILLed: after a restart the delivery arrives (the outbox row was committed with
  the kill).
- A server SIGKILLed while the receiver holds its attempt open: after a restart the lease
  expires and the delivery is sent again, under the same ``webhook-id`` (at least once; a
  receiver drops the repeat by that id).
- Two server processes on one database, kills through both: every event is delivered to
  every webhook exactly once.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
from standardwebhooks import Webhook as Verifier

from support import eventually
from support.api import bearer
from support.processes import free_port
from support.receiver import Received, Receiver
from support.reliability import Serve, keys_for

OPTIONS = ("--webhooks-allow-private", "--webhook-timeout", "2")


class Admin:
    def __init__(self, server: Serve, key: str) -> None:
        self.http = httpx.Client(base_url=f"{server.url}/api/v1", headers=bearer(key), timeout=10)

    def hook(self, url: str) -> dict[str, Any]:
        answer = self.http.post("/webhooks", json={"url": url, "events": ["kill", "revive"]})
        assert answer.status_code == 200, answer.text
        return dict(answer.json())

    def deliveries(self, webhook_id: str) -> list[dict[str, Any]]:
        return list(self.http.get(f"/webhooks/{webhook_id}/deliveries").json()["data"])


def test_a_delivery_committed_before_a_sigkill_is_sent_after_the_restart(
    database_url: str, tmp_path: Path
) -> None:
    keys = keys_for(database_url, "org_a", admin=["admin"])
    server = Serve(database_url, tmp_path, *OPTIONS)
    try:
        admin = Admin(server, keys["admin"])
        port = free_port()  # the receiver is down: nothing listens here yet
        hook = admin.hook(f"http://127.0.0.1:{port}/hook")
        killed = admin.http.post(
            "/kill-switch/kill", json={"target_type": "agent", "target_id": "rogue"}
        ).json()
        [failed] = eventually(lambda: [d for d in admin.deliveries(hook["id"]) if d["attempts"]])
        assert failed["status"] == "pending" and "could not connect" in failed["error"]
        server.crash()
        with Receiver(port) as receiver:
            server.start()
            [request] = receiver.wait_for(1, timeout=30)
            event = Verifier(hook["secret"]).verify(request.body, request.headers)
            assert event["type"] == "kill" and event["data"]["kill_switch"]["id"] == killed["id"]
            assert request.headers["webhook-id"] == failed["event_id"]
            admin = Admin(server, keys["admin"])
            [done] = eventually(
                lambda: [d for d in admin.deliveries(hook["id"]) if d["status"] == "delivered"]
            )
            assert done["attempts"] == 2 and done["response_status"] == 200
            time.sleep(1)
            assert len(receiver.received()) == 1
    finally:
        server.stop()
    assert "Traceback" not in server.output()


def test_an_attempt_cut_by_a_sigkill_is_sent_again_under_the_same_id(
    database_url: str, tmp_path: Path
) -> None:
    keys = keys_for(database_url, "org_a", admin=["admin"])
    server = Serve(database_url, tmp_path, *OPTIONS)
    with Receiver() as receiver:
        try:
            admin = Admin(server, keys["admin"])
            hook = admin.hook(receiver.url())
            receiver.hold()  # the first attempt reaches the receiver and waits there
            admin.http.post("/kill-switch/kill", json={"target_type": "agent", "target_id": "a"})
            assert receiver.arrived.wait(15)
            server.crash()  # mid-attempt: the server never hears the answer
            receiver.release()
            server.start()
            first, again = receiver.wait_for(2, timeout=45)  # after the lease (2 x 2 + 5 s)
            assert first.headers["webhook-id"] == again.headers["webhook-id"]
            verifier = Verifier(hook["secret"])
            assert verifier.verify(again.body, again.headers) == first.json()
            admin = Admin(server, keys["admin"])
            [done] = eventually(
                lambda: [d for d in admin.deliveries(hook["id"]) if d["status"] == "delivered"]
            )
            assert done["attempts"] == 1  # the cut attempt was never recorded
        finally:
            server.stop()


def test_two_replicas_deliver_each_event_once(database_url: str, tmp_path: Path) -> None:
    keys = keys_for(database_url, "org_a", admin=["admin"])
    replicas = [Serve(database_url, tmp_path, *OPTIONS) for _ in range(2)]
    with Receiver() as receiver:

        def slowly(request: Received) -> tuple[int, dict[str, str], bytes]:
            time.sleep(0.05)  # a backlog builds up, so both senders find work at once
            return 200, {}, b"ok"

        receiver.answer = slowly
        try:
            admins = [Admin(r, keys["admin"]) for r in replicas]
            hooks = [admins[0].hook(receiver.url(f"/{n}")) for n in range(2)]
            targets = 20
            for n in range(targets):  # kills and revives through both replicas, interleaved
                target = {"target_type": "agent", "target_id": f"bot-{n}"}
                assert admins[n % 2].http.post("/kill-switch/kill", json=target).is_success
                assert admins[(n + 1) % 2].http.post("/kill-switch/revive", json=target).is_success
            expected = 2 * targets
            for n in range(2):
                receiver.wait_for(expected, f"/{n}", timeout=60)
            time.sleep(3)  # time for a second copy to show up, if one were coming
            for n, hook in enumerate(hooks):
                got = receiver.received(f"/{n}")
                ids = Counter(r.headers["webhook-id"] for r in got)
                assert len(got) == expected and set(ids.values()) == {1}, ids.most_common(3)
                verifier = Verifier(hook["secret"])
                events = [verifier.verify(r.body, r.headers) for r in got]
                by_target: dict[str, list[str]] = {}
                for e in events:
                    by_target.setdefault(e["data"]["kill_switch"]["target_id"], []).append(
                        e["type"]
                    )
                assert all(kinds == ["kill", "revive"] for kinds in by_target.values())
                log = admins[1].deliveries(hook["id"])
                assert {(d["status"], d["attempts"]) for d in log} == {("delivered", 1)}
        finally:
            for replica in replicas:
                replica.stop()
    assert not [r for r in replicas if "Traceback" in r.output()]
