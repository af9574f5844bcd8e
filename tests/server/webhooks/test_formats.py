"""The wire formats: Standard Webhooks signatures against the spec's published test vector and
its reference library, Slack's escaping, PagerDuty's trigger and resolve."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timezone

import pytest
from standardwebhooks import Webhook as Verifier
from standardwebhooks import WebhookVerificationError

from agentguard.records import KillChange, KillSwitch
from agentguard.server.webhooks.events import change_events
from agentguard.server.webhooks.formats import (
    new_signing_secret,
    pagerduty_event,
    render,
    sign,
    slack_text,
)

# The test vector of the Standard Webhooks spec (its libraries' tests sign exactly this).
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_MSG_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TIMESTAMP = 1614265330
SPEC_PAYLOAD = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
NOW = datetime(2026, 4, 18, 17, 0, tzinfo=timezone.utc)


def kill_switch(**changes: object) -> KillSwitch:
    fields: dict[str, object] = dict(
        id="ks-1", target_type="agent", target_id="rogue-bot", reason="Drained $3k",
        is_active=True, killed_by="usr_abc", killed_at=NOW, organization_id="org_a",
    )  # fmt: skip
    fields.update(changes)
    return KillSwitch.model_validate(fields)


def test_signature_matches_the_spec_test_vector() -> None:
    assert sign(SPEC_SECRET, SPEC_MSG_ID, SPEC_TIMESTAMP, SPEC_PAYLOAD) == SPEC_SIGNATURE
    # The secret without its prefix signs alike (the spec allows either form).
    bare = SPEC_SECRET.removeprefix("whsec_")
    assert sign(bare, SPEC_MSG_ID, SPEC_TIMESTAMP, SPEC_PAYLOAD) == SPEC_SIGNATURE
    # The reference library signs the vector the same way.
    when = datetime.fromtimestamp(SPEC_TIMESTAMP, timezone.utc)
    assert Verifier(SPEC_SECRET).sign(SPEC_MSG_ID, when, SPEC_PAYLOAD) == SPEC_SIGNATURE


def test_a_new_secret_is_32_random_bytes_with_the_prefix() -> None:
    secrets = {new_signing_secret() for _ in range(50)}
    assert len(secrets) == 50
    for secret in secrets:
        assert secret.startswith("whsec_")
        assert len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) == 32


def test_a_standard_request_verifies_with_the_reference_library() -> None:
    secret = new_signing_secret()
    [event] = change_events(KillChange(version=7, kind="kill", kill_switch=kill_switch()))
    sent_at = datetime.now(timezone.utc)
    request = render(
        "standard",
        secret=secret,
        event_id=event.id,
        subject=event.subject,
        envelope=event.envelope(),
        now=sent_at,
    )
    headers = dict(request.headers)
    assert headers["webhook-id"] == event.id
    assert headers["webhook-timestamp"] == str(int(sent_at.timestamp()))
    assert headers["Content-Type"] == "application/json"
    body = Verifier(secret).verify(request.body, headers)
    assert body == {
        "type": "kill",
        "timestamp": "2026-04-18T17:00:00Z",
        "data": {
            "organization_id": "org_a",
            "version": 7,
            "kill_switch": kill_switch().model_dump(mode="json"),
        },
    }
    with pytest.raises(WebhookVerificationError):  # another endpoint's secret
        Verifier(new_signing_secret()).verify(request.body, headers)
    with pytest.raises(WebhookVerificationError):  # another body
        Verifier(secret).verify(request.body.replace(b"rogue-bot", b"other-bot"), headers)
    with pytest.raises(WebhookVerificationError):  # the same body under another id: a replay
        Verifier(secret).verify(request.body, {**headers, "webhook-id": "msg_other"})


def envelope(kind: str, ks: KillSwitch, **data: object) -> dict[str, object]:
    [event, *_] = [
        e
        for e in change_events(
            KillChange(version=3, kind=kind, kill_switch=ks),  # type: ignore[arg-type]
            rule=data.pop("rule", None),  # type: ignore[arg-type]
        )
    ]
    body: dict[str, object] = json.loads(event.envelope())
    return body


def test_slack_text_cannot_ping_a_channel_or_hide_a_link() -> None:
    ks = kill_switch(reason="<!channel> & <https://evil.example|your bank>", target_id="<@U1>")
    text = slack_text(envelope("kill", ks))
    assert "<" not in text and ">" not in text
    assert text == (
        ":octagonal_sign: Killed agent '&lt;@U1&gt;' by usr_abc: &lt;!channel&gt; &amp; "
        "&lt;https://evil.example|your bank&gt; (agentguard, organization org_a)"
    )


def test_pagerduty_triggers_on_kill_and_resolves_the_same_alert_on_revive() -> None:
    killed = pagerduty_event(envelope("kill", kill_switch()), routing_key="R0", subject="ks-1")
    assert killed["event_action"] == "trigger" and killed["dedup_key"] == "ks-1"
    assert killed["payload"]["severity"] == "critical"
    assert killed["payload"]["summary"] == "Killed agent 'rogue-bot' by usr_abc: Drained $3k"
    assert killed["payload"]["timestamp"] == "2026-04-18T17:00:00Z"
    revived_ks = kill_switch(is_active=False, revived_by="usr_ops", revived_at=NOW)
    revived = pagerduty_event(envelope("revive", revived_ks), routing_key="R0", subject="ks-1")
    assert revived == {"routing_key": "R0", "event_action": "resolve", "dedup_key": "ks-1"}


def test_pagerduty_summary_and_dedup_key_stay_within_its_limits() -> None:
    long = kill_switch(reason="x" * 2000)
    event = pagerduty_event(envelope("kill", long), routing_key="R0", subject="ks-1")
    assert len(event["payload"]["summary"]) == 1024
    fail_closed = {
        "type": "fail_closed",
        "timestamp": "2026-04-18T17:00:00Z",
        "data": {"organization_id": "o" * 256, "instance_id": "i" * 256, "refused": 2},
    }
    page = pagerduty_event(fail_closed, routing_key="R0", subject="instance/" + "i" * 256)
    assert len(page["dedup_key"]) == 255 and page["payload"]["severity"] == "error"
