"""``agentguard webhooks add / list / test / remove / deliveries`` as subprocesses against
``agentguard serve --webhooks-allow-private``, delivering to a receiver on loopback."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from standardwebhooks import Webhook as Verifier

from support.cli import Server, start_server
from support.processes import stop
from support.receiver import Receiver


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = start_server(tmp_path_factory.mktemp("cli-webhooks"), "--webhooks-allow-private")
    yield s
    stop(s.popen)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


def test_add_list_test_and_remove(server: Server, receiver: Receiver) -> None:
    admin = server.key("admin")
    added = server.cli(admin, "webhooks", "add", receiver.url(), "--name", "on-call")
    assert added.code == 0, added
    first, intro, secret = added.stdout.splitlines()
    webhook_id = first.split()[1]
    assert first == (
        f"added {webhook_id} (standard; kill, revive, rule.tripped, rule.observed, "
        f"ack.timeout, fail_closed, drill.failed) for {receiver.url()}"
    )
    assert intro == "its signing secret is shown only this once:"
    assert secret.startswith("whsec_")

    listed = server.cli(admin, "webhooks", "list")
    assert listed.code == 0, listed
    header, row = listed.stdout.splitlines()
    assert header.split() == [
        "ID",
        "FORMAT",
        "EVENTS",
        "PENDING",
        "LAST",
        "DELIVERY",
        "NAME",
        "URL",
    ]
    assert row.split()[:2] == [webhook_id, "standard"] and receiver.url() in row
    assert secret not in listed.stdout

    tested = server.cli(admin, "webhooks", "test", webhook_id)
    assert tested.code == 0, tested
    assert (
        tested.stdout.startswith("delivered msg_")
        and f" to {webhook_id}: answered 200" in tested.stdout
    )
    [request] = receiver.wait_for(1)
    event = Verifier(secret).verify(request.body, request.headers)
    assert event["type"] == "webhook.test" and event["data"]["webhook_id"] == webhook_id

    log = server.cli(admin, "webhooks", "deliveries", webhook_id)
    assert log.code == 0, log
    header, row = log.stdout.splitlines()
    assert header.split()[:4] == ["QUEUED", "EVENT", "EVENT", "ID"]
    assert "webhook.test" in row and "delivered" in row and " 200 " in row
    as_json = server.cli(admin, "webhooks", "deliveries", webhook_id, "--json").json()
    assert as_json["count"] == 1 and as_json["data"][0]["status"] == "delivered"
    listed = server.cli(admin, "webhooks", "list", "--json").json()
    assert listed["data"][0]["last_delivery"]["event"] == "webhook.test"

    removed = server.cli(admin, "webhooks", "remove", webhook_id)
    assert (
        removed.code == 0 and removed.stdout.strip() == f"removed {webhook_id} ({receiver.url()})"
    )
    again = server.cli(admin, "webhooks", "remove", webhook_id)
    assert again.code == 3 and f"no webhook '{webhook_id}'" in again.stderr
    empty = server.cli(admin, "webhooks", "list")
    assert empty.code == 0 and empty.stdout.strip() == "no webhooks"


def test_a_failing_test_exits_1_and_says_why(server: Server, receiver: Receiver) -> None:
    admin = server.key("admin")
    receiver.answer = lambda request: (500, {}, b"receiver broke")
    made = server.cli(admin, "webhooks", "add", receiver.url(), "--format", "slack", "--json")
    assert made.code == 0, made
    hook = made.json()
    assert hook["format"] == "slack" and hook["secret"] is None
    tested = server.cli(admin, "webhooks", "test", hook["id"])
    assert tested.code == 1, tested
    assert f"was not delivered to {hook['id']}: answered 500: receiver broke" in tested.stderr
    assert "the server retries it" in tested.stderr
    pending = server.cli(admin, "webhooks", "deliveries", hook["id"], "--status", "pending")
    assert "retrying in" in pending.stdout and "answered 500: receiver broke" in pending.stdout


def test_usage_and_input_errors(server: Server) -> None:
    admin = server.key("admin")
    no_key = server.cli(admin, "webhooks", "add", "https://e.example/x", "--format", "pagerduty")
    assert no_key.code == 2 and "--format pagerduty needs --routing-key" in no_key.stderr
    stray = server.cli(admin, "webhooks", "add", "https://e.example/x", "--routing-key", "R0")
    assert stray.code == 2 and "--routing-key goes with --format pagerduty" in stray.stderr
    creds = server.cli(admin, "webhooks", "add", "https://u:p@e.example/x")
    assert creds.code == 2 and "must not carry a user name or password" in creds.stderr
    bad_event = server.cli(admin, "webhooks", "add", "https://e.example/x", "--event", "drill")
    assert bad_event.code == 2 and "'drill' is not one of" in bad_event.stderr
    paged = server.cli(
        admin, "webhooks", "add", "https://events.pagerduty.com/v2/enqueue", "--format",
        "pagerduty", "--routing-key", "R0123", "--event", "kill", "--event", "revive",
    )  # fmt: skip
    assert paged.code == 0, paged
    assert paged.stdout.strip().endswith(
        "(pagerduty; kill, revive) for https://events.pagerduty.com/v2/enqueue"
    )
    assert "R0123" not in paged.stdout


def test_only_an_admin_key_manages_webhooks(server: Server) -> None:
    operator = server.key("operator")
    denied = server.cli(operator, "webhooks", "list")
    assert denied.code == 1 and "permission denied" in denied.stderr
