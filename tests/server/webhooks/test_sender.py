"""The sender: retries with backoff and gives up, follows no redirect, connects only to
allowed addresses, stops a hanging attempt at its timeout; leases never overlap."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone

import pytest

from agentguard.records import utcnow
from agentguard.server import KillSwitchServer, WebhookSettings
from agentguard.server.webhooks.events import WebhookEvent
from support.api import Api
from support.polling import eventually
from support.receiver import Received, Receiver

Answer = tuple[int, dict[str, str], bytes]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


def hook(admin: Api, url: str, events: list[str] | None = None) -> str:
    answer = admin.client.post(
        "/api/v1/webhooks", json={"url": url, "events": events or ["kill", "revive"]}
    )
    assert answer.status_code == 200, answer.text
    return str(answer.json()["id"])


def log(admin: Api, webhook_id: str) -> list[dict]:
    return list(admin.get(f"/api/v1/webhooks/{webhook_id}/deliveries").json()["data"])


def test_failed_attempts_are_retried_with_backoff_then_given_up(
    make_server: Callable[..., KillSwitchServer],
    api: Callable[..., Api],
    receiver: Receiver,
    tmp_path: object,
) -> None:
    settings = WebhookSettings(
        allow_private_addresses=True, first_retry=0.2, max_retry_interval=0.4, retry_for=1.5
    )
    server = make_server(None, webhooks=settings)
    server.start()
    admin = api(server)
    arrivals: list[datetime] = []

    def fail(request: Received) -> Answer:
        arrivals.append(datetime.now(timezone.utc))
        return 500, {}, b"database\x00 is down\n" + b"x" * 1000

    receiver.answer = fail
    webhook_id = hook(admin, receiver.url())
    admin.kill("agent", "a")
    [delivery] = eventually(
        lambda: [d for d in log(admin, webhook_id) if d["status"] == "failed"], 10
    )
    attempts = delivery["attempts"]
    assert attempts == len(arrivals) >= 4
    gaps = [(b - a).total_seconds() for a, b in zip(arrivals, arrivals[1:], strict=False)]
    assert gaps[0] >= 0.2 * 0.8 and gaps[1] >= 0.4 * 0.8  # doubling, up to the maximum
    assert delivery["response_status"] == 500
    assert delivery["error"].startswith("answered 500: database is down xxx")
    assert len(delivery["error"]) < 230  # a bit of the body, printable only
    assert delivery["next_attempt_at"] is None
    last = datetime.fromisoformat(delivery["last_attempt_at"])
    created = datetime.fromisoformat(delivery["created_at"])
    assert last - created >= timedelta(seconds=1.5)  # retried until retry_for, then given up
    counts = server.webhook_sender.counts()
    assert (counts.delivered, counts.failed, counts.gave_up) == (0, attempts, 1)
    [summary] = admin.get("/api/v1/webhooks").json()["data"]
    assert summary["pending"] == 0 and summary["last_delivery"]["status"] == "failed"


def test_a_redirect_is_never_followed(
    make_server: Callable[..., KillSwitchServer], api: Callable[..., Api], receiver: Receiver
) -> None:
    server = make_server(None, webhooks=WebhookSettings(allow_private_addresses=True, retry_for=60))
    server.start()
    admin = api(server)
    with Receiver() as elsewhere:
        receiver.answer = lambda request: (307, {"Location": elsewhere.url("/stolen")}, b"")
        webhook_id = hook(admin, receiver.url())
        admin.kill("agent", "a")
        [delivery] = eventually(lambda: [d for d in log(admin, webhook_id) if d["attempts"]], 10)
        assert delivery["status"] == "pending" and delivery["response_status"] == 307
        assert delivery["error"] == (
            "answered 307, a redirect to 127.0.0.1; webhooks never follow redirects: "
            "register the final URL"
        )
        assert elsewhere.received() == []


def test_a_replica_refuses_private_addresses_when_connecting(
    make_server: Callable[..., KillSwitchServer],
    database_url: str,
    api: Callable[..., Api],
    receiver: Receiver,
) -> None:
    """A webhook registered where private addresses were allowed is not sent by a replica
    that does not allow them: the check happens on the address connected to."""
    lenient = make_server(
        database_url, webhooks=WebhookSettings(allow_private_addresses=True, send=False)
    )
    lenient.start()
    admin = api(lenient)
    webhook_id = hook(admin, f"http://localhost:{receiver.port}/hook")
    admin.kill("agent", "a")
    strict = make_server(database_url, webhooks=WebhookSettings(retry_for=60))
    strict.start()
    [delivery] = eventually(lambda: [d for d in log(admin, webhook_id) if d["attempts"]], 10)
    assert delivery["status"] == "pending" and delivery["response_status"] is None
    assert delivery["error"] == (
        "could not connect to localhost: localhost resolves to 127.0.0.1, which is not a "
        "public address; not sent (this server sends webhooks to public addresses only)"
    )
    assert not receiver.arrived.is_set()


def test_an_attempt_that_hangs_ends_at_the_timeout(
    make_server: Callable[..., KillSwitchServer], api: Callable[..., Api], receiver: Receiver
) -> None:
    server = make_server(
        None, webhooks=WebhookSettings(allow_private_addresses=True, timeout=0.5, retry_for=60)
    )
    server.start()
    admin = api(server)
    receiver.hold()
    webhook_id = hook(admin, receiver.url())
    admin.kill("agent", "a")
    [delivery] = eventually(lambda: [d for d in log(admin, webhook_id) if d["attempts"]], 10)
    assert delivery["status"] == "pending"
    assert delivery["error"].startswith("no answer within 0.5 s")
    assert 500 <= delivery["duration_ms"] < 5000


def test_removing_a_webhook_drops_what_it_had_pending(
    make_server: Callable[..., KillSwitchServer], api: Callable[..., Api], receiver: Receiver
) -> None:
    server = make_server(None, webhooks=WebhookSettings(allow_private_addresses=True, send=False))
    server.start()
    admin = api(server)
    webhook_id = hook(admin, receiver.url())
    admin.kill("agent", "a")
    assert len(log(admin, webhook_id)) == 1
    removed = admin.client.delete(f"/api/v1/webhooks/{webhook_id}")
    assert removed.status_code == 200 and removed.json()["id"] == webhook_id
    assert admin.get(f"/api/v1/webhooks/{webhook_id}/deliveries").status_code == 404
    assert not server.store.deliveries_due(utcnow())


# -- leases ----------------------------------------------------------------------------------------


def queue(server: KillSwitchServer, admin: Api, receiver: Receiver, n: int) -> None:
    hook(admin, receiver.url(), events=["kill"])
    now = utcnow()
    events = [WebhookEvent("kill", f"subject-{i}", now, {"n": i}) for i in range(n)]
    assert server.store.queue_webhook_events("org_a", events) == n


def test_concurrent_claims_never_lease_one_delivery_twice(
    make_server: Callable[..., KillSwitchServer],
    database_url: str,
    api: Callable[..., Api],
    receiver: Receiver,
) -> None:
    """Senders in four threads (each its own connection) claim side by side until nothing is
    left: every delivery is leased exactly once (PostgreSQL: SKIP LOCKED; SQLite: its write
    lock)."""
    server = make_server(
        database_url, webhooks=WebhookSettings(allow_private_addresses=True, send=False)
    )
    server.start()
    queue(server, api(server), receiver, 60)
    claimed: dict[str, list[int]] = {f"sender-{i}": [] for i in range(4)}
    start = threading.Barrier(len(claimed))

    def claim(owner: str) -> None:
        start.wait()
        while True:
            batch = server.store.claim_deliveries(
                owner, now=utcnow(), lease=timedelta(minutes=1), limit=3
            )
            if not batch:
                return
            claimed[owner].extend(c.seq for c in batch)

    threads = [threading.Thread(target=claim, args=(owner,)) for owner in claimed]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    every = [seq for seqs in claimed.values() for seq in seqs]
    assert len(every) == 60 and len(set(every)) == 60
    assert not server.store.deliveries_due(utcnow())


def test_a_stopping_sender_gives_its_leases_back(
    make_server: Callable[..., KillSwitchServer], api: Callable[..., Api], receiver: Receiver
) -> None:
    server = make_server(None, webhooks=WebhookSettings(allow_private_addresses=True, send=False))
    server.start()
    queue(server, api(server), receiver, 2)
    store = server.store
    lease = timedelta(minutes=1)
    assert len(store.claim_deliveries("a", now=utcnow(), lease=lease, limit=5)) == 2
    assert store.claim_deliveries("b", now=utcnow(), lease=lease, limit=5) == []
    # An expired lease is free again (its sender died mid-attempt).
    later = utcnow() + lease + timedelta(seconds=1)
    assert len(store.claim_deliveries("b", now=later, lease=lease, limit=5)) == 2
    assert store.release_deliveries("b") == 2
    assert len(store.claim_deliveries("c", now=utcnow(), lease=lease, limit=5)) == 2


def test_settings_are_checked_naming_the_field() -> None:
    from agentguard.errors import InvalidInputError

    for field, value in (("timeout", 0), ("retry_for", float("inf")), ("first_retry", True)):
        with pytest.raises(InvalidInputError) as refused:
            WebhookSettings(**{field: value})  # type: ignore[arg-type]
        assert refused.value.field == field
    with pytest.raises(InvalidInputError, match="concurrency"):
        WebhookSettings(concurrency=0)
