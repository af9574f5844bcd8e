"""``/api/v1/webhooks``: register (a signing secret shown once), list, test, remove, and read
each webhook's delivery log; admin keys only; URLs checked."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from agentguard.server import KillSwitchServer, WebhookSettings
from support.api import Api
from support.polling import eventually
from support.receiver import Receiver

PUBLIC_URL = "https://hooks.example.com/agentguard"


@pytest.fixture
def quiet_server(
    make_server: Callable[..., KillSwitchServer], database_url: str
) -> KillSwitchServer:
    """A server that queues deliveries but sends none (nothing here needs them sent)."""
    server = make_server(database_url, webhooks=WebhookSettings(send=False))
    server.start()
    return server


def create(admin: Api, **body: Any) -> Any:
    return admin.client.post(
        "/api/v1/webhooks", json={"url": PUBLIC_URL, "events": ["kill"], **body}
    )


def test_a_standard_webhook_shows_its_secret_once(
    quiet_server: KillSwitchServer, api: Callable[..., Api]
) -> None:
    admin = api(quiet_server)
    answer = create(admin, events=["kill", "revive", "kill"], name="on-call")
    assert answer.status_code == 200, answer.text
    created = answer.json()
    assert created["secret"].startswith("whsec_")
    assert created["events"] == ["kill", "revive"]  # each event once
    assert (created["format"], created["name"], created["url"]) == (
        "standard",
        "on-call",
        PUBLIC_URL,
    )
    assert created["created_by"] == admin.actor and created["id"].startswith("wh_")
    listed = admin.get("/api/v1/webhooks").json()
    assert listed["count"] == 1
    [row] = listed["data"]
    assert "secret" not in row and created["secret"] not in str(listed)
    assert row == {k: v for k, v in created.items() if k != "secret"}
    audit = admin.get("/api/v1/audit", action="webhook.create").json()["data"]
    assert [(e["target_type"], e["target_id"]) for e in audit] == [("webhook", created["id"])]
    assert created["secret"] not in str(audit)


def test_pagerduty_needs_a_routing_key_which_is_never_echoed(
    quiet_server: KillSwitchServer, api: Callable[..., Api]
) -> None:
    admin = api(quiet_server)
    missing = create(admin, format="pagerduty")
    assert missing.status_code == 422 and missing.json()["field"] == "routing_key"
    assert "required for a pagerduty webhook" in missing.json()["detail"]
    stray = create(admin, format="slack", routing_key="abc123")
    assert stray.status_code == 422 and stray.json()["field"] == "routing_key"
    key = "R0123456789abcdef0123456789abcde"
    page = create(admin, format="pagerduty", routing_key=key)
    assert page.status_code == 200 and page.json()["secret"] is None
    slack = create(admin, format="slack")
    assert slack.status_code == 200 and slack.json()["secret"] is None
    assert key not in admin.get("/api/v1/webhooks").text


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("http://127.0.0.1:9/hook", "not a public address"),
        ("http://169.254.169.254/latest/meta-data/", "not a public address"),
        ("http://localhost/hook", "this machine"),
        ("https://user:pw@hooks.example.com/x", "user name or password"),
        ("gopher://hooks.example.com/", "http:// or https://"),
        ("https://hooks.example.com/a b", "printable ASCII"),
    ],
)
def test_unsafe_urls_are_refused(
    quiet_server: KillSwitchServer, api: Callable[..., Api], url: str, words: str
) -> None:
    admin = api(quiet_server)
    answer = create(admin, url=url)
    assert answer.status_code == 422, answer.text
    assert answer.json()["field"] == "url" and words in answer.json()["detail"]
    assert admin.get("/api/v1/webhooks").json()["count"] == 0


def test_private_addresses_need_the_servers_consent(
    make_server: Callable[..., KillSwitchServer], api: Callable[..., Api]
) -> None:
    server = make_server(None, webhooks=WebhookSettings(allow_private_addresses=True, send=False))
    server.start()
    assert create(api(server), url="http://127.0.0.1:9/hook").status_code == 200


def test_unknown_webhooks_are_404_naming_the_id(
    quiet_server: KillSwitchServer, api: Callable[..., Api]
) -> None:
    admin = api(quiet_server)
    for method, path in (
        ("DELETE", "/api/v1/webhooks/wh_nope"),
        ("POST", "/api/v1/webhooks/wh_nope/test"),
        ("GET", "/api/v1/webhooks/wh_nope/deliveries"),
    ):
        answer = admin.client.request(method, path)
        assert answer.status_code == 404, (method, path)
        assert answer.json()["field"] == "webhook_id"
        assert answer.json()["detail"] == "no webhook 'wh_nope' in this organization"


def test_the_delivery_log_and_its_filters(
    quiet_server: KillSwitchServer, api: Callable[..., Api]
) -> None:
    admin = api(quiet_server)
    webhook_id = create(admin, events=["kill", "revive"]).json()["id"]
    admin.kill("agent", "a")
    admin.revive("agent", "a")
    test = admin.client.post(f"/api/v1/webhooks/{webhook_id}/test").json()
    assert (test["event"], test["status"], test["attempts"]) == ("webhook.test", "pending", 0)
    log = admin.get(f"/api/v1/webhooks/{webhook_id}/deliveries").json()
    assert log["count"] == 3
    assert [d["event"] for d in log["data"]] == ["webhook.test", "revive", "kill"]  # newest first
    only = admin.get(f"/api/v1/webhooks/{webhook_id}/deliveries", event_id=test["event_id"])
    assert [d["event_id"] for d in only.json()["data"]] == [test["event_id"]]
    assert admin.get(f"/api/v1/webhooks/{webhook_id}/deliveries", status="delivered").json() == {
        "data": [],
        "count": 0,
    }
    [row] = admin.get("/api/v1/webhooks").json()["data"]
    assert row["pending"] == 3 and row["last_delivery"] is None  # nothing attempted yet


def test_removing_a_webhook_is_audited_and_stops_its_events(
    quiet_server: KillSwitchServer, api: Callable[..., Api]
) -> None:
    admin = api(quiet_server)
    webhook_id = create(admin).json()["id"]
    removed = admin.client.delete(f"/api/v1/webhooks/{webhook_id}")
    assert removed.status_code == 200 and "secret" not in removed.json()
    assert admin.client.delete(f"/api/v1/webhooks/{webhook_id}").status_code == 404
    admin.kill("agent", "a")
    assert admin.get("/api/v1/webhooks").json()["count"] == 0
    audit = admin.get("/api/v1/audit", action="webhook.delete").json()["data"]
    assert [(e["target_id"], e["actor"]) for e in audit] == [(webhook_id, admin.actor)]


def test_only_admins_manage_webhooks_and_orgs_stay_apart(
    quiet_server: KillSwitchServer, api: Callable[..., Api]
) -> None:
    admin = api(quiet_server)
    webhook_id = create(admin).json()["id"]
    for scope in ("operator", "read", "agent"):
        other = api(quiet_server, scopes=(scope,), owner=f"usr_{scope}")
        answer = create(other)
        assert answer.status_code == 403 and answer.json()["required_scope"] == "admin"
        assert other.get("/api/v1/webhooks").status_code == 403
    stranger = api(quiet_server, org="org_b")
    assert stranger.get("/api/v1/webhooks").json() == {"data": [], "count": 0}
    assert stranger.client.delete(f"/api/v1/webhooks/{webhook_id}").status_code == 404
    assert stranger.client.post(f"/api/v1/webhooks/{webhook_id}/test").status_code == 404
    # org_b's kills are not sent to org_a's webhooks
    stranger.kill("agent", "a")
    log = admin.get(f"/api/v1/webhooks/{webhook_id}/deliveries").json()
    assert log["count"] == 0


def test_a_test_event_reaches_the_receiver(
    make_server: Callable[..., KillSwitchServer], api: Callable[..., Api]
) -> None:
    server = make_server(None, webhooks=WebhookSettings(allow_private_addresses=True))
    server.start()
    admin = api(server)
    with Receiver() as receiver:
        webhook_id = create(admin, url=receiver.url(), format="slack").json()["id"]
        test = admin.client.post(f"/api/v1/webhooks/{webhook_id}/test").json()
        [request] = receiver.wait_for(1)
        assert request.json() == {
            "text": f":wave: agentguard test message for webhook {webhook_id} "
            "(agentguard, organization org_a)"
        }
        delivered = eventually(
            lambda: (
                admin.get(
                    f"/api/v1/webhooks/{webhook_id}/deliveries", event_id=test["event_id"]
                ).json()["data"][0]["status"]
                == "delivered"
            ),
            10,
        )
        assert delivered
