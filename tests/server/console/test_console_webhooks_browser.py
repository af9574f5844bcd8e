"""The console's webhooks view in a real Chromium, against real uvicorn, delivering to
receivers on loopback: an admin adds, tests and removes webhooks and reads their delivery
logs; other keys do not see the view. Screenshots go to ``AGENTGUARD_SCREENSHOT_DIR`` if set.

Uses the browser fixtures of ``test_console_browser.py`` (imported: hence F811).
"""
# ruff: noqa: F811

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect
from standardwebhooks import Webhook as Verifier
from test_console_browser import (  # noqa: F401 - fixtures are used by name
    DESKTOP,
    PHONE,
    open_page,
    screenshot,
    serve,
    sign_in,
    uvicorn,
)

from agentguard.protocol import WEBHOOK_EVENTS
from agentguard.server import KillSwitchServer
from support.api import bearer
from support.processes import stop
from support.receiver import Receiver

pytestmark = pytest.mark.browser

ORG = "org_hooks"


@dataclass
class Hooks:
    url: str
    keys: KillSwitchServer  # the same database, in this process, to make keys
    screenshots: Path

    def key(self, scopes: list[str], owner: str) -> str:
        return self.keys.create_key(ORG, owner=owner, scopes=scopes)

    def webhooks(self, token: str) -> list[dict[str, object]]:
        answer = httpx.get(f"{self.url}/api/v1/webhooks", headers=bearer(token))
        assert answer.status_code == 200, answer.text
        data: list[dict[str, object]] = answer.json()["data"]
        return data


@pytest.fixture(scope="module")
def hooks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hooks]:
    directory = tmp_path_factory.mktemp("console-webhooks")
    database_url = f"sqlite:///{directory / 'agentguard.db'}"
    keys = KillSwitchServer(database_url)
    keys.start()
    env = {"AGENTGUARD_DATABASE_URL": database_url, "AGENTGUARD_WEBHOOKS_ALLOW_PRIVATE": "1"}
    process = serve(
        uvicorn("agentguard.server.asgi:create_app", "--factory"), directory / "s.log", env
    )
    shots = os.environ.get("AGENTGUARD_SCREENSHOT_DIR")
    screenshots = Path(shots) if shots else directory
    screenshots.mkdir(parents=True, exist_ok=True)
    try:
        yield Hooks(process.url, keys, screenshots)
    finally:
        stop(process)
        keys.close()


def webhook_item(page: Page, text: str) -> object:
    return page.locator("#webhooks-list > li").filter(has_text=text)


def test_an_admin_adds_tests_reads_and_removes_webhooks(
    hooks: Hooks, open_page: Callable[..., Page]
) -> None:
    admin = hooks.key(["admin"], "root")
    page = open_page(DESKTOP)
    sign_in(page, hooks.url, admin, "root")
    panel = page.locator("#webhooks-panel")
    expect(panel).to_be_visible()
    expect(page.locator("#webhooks-empty")).to_have_text(
        "No webhooks: nobody is notified when a kill switch fires."
    )
    # A cookie-authenticated POST without the CSRF token is refused.
    status = page.evaluate(
        """() => fetch("api/v1/webhooks", {
            method: "POST",
            headers: {"Content-Type": "application/json"},
            body: JSON.stringify({url: "http://127.0.0.1:9/x", events: ["kill"]}),
        }).then((response) => response.status)"""
    )
    assert status == 403

    with Receiver() as good, Receiver() as bad:
        bad.answer = lambda request: (500, {}, b"pager service is down")
        # Add a standard webhook: every event offered (and ticked) by default.
        page.get_by_text("Add a webhook").click()
        form = page.locator("#webhook-form")
        boxes = form.get_by_role("checkbox")
        assert [boxes.nth(i).get_attribute("value") for i in range(boxes.count())] == list(
            WEBHOOK_EVENTS
        )
        expect(page.locator("#webhook-routing-field")).to_be_hidden()
        form.get_by_label("Format").select_option("pagerduty")
        expect(form.get_by_label("PagerDuty routing key")).to_be_visible()
        form.get_by_label("Format").select_option("standard")
        form.get_by_label("URL").fill(good.url())
        form.get_by_label("Name").fill("on-call")
        form.get_by_role("button", name="Add webhook").click()
        secret_box = page.locator("#webhook-secret")
        expect(secret_box).to_be_visible()
        secret = page.locator("#webhook-secret-value").inner_text()
        assert secret.startswith("whsec_")
        expect(secret_box).to_contain_text("on-call")
        page.get_by_role("button", name="Done").click()
        expect(secret_box).to_be_hidden()
        assert secret not in page.content()

        # A Slack webhook for kills only, to an endpoint that fails.
        page.get_by_text("Add a webhook").click()
        form.get_by_label("Format").select_option("slack")
        form.get_by_label("URL").fill(bad.url("/slack"))
        for event in WEBHOOK_EVENTS:
            if event != "kill":
                form.get_by_role("checkbox", name=event, exact=True).uncheck()
        form.get_by_role("button", name="Add webhook").click()
        expect(page.locator("#webhooks-count")).to_have_text("2")
        expect(secret_box).to_be_hidden()  # Slack's URL is its credential: no secret

        # A URL the server refuses: the form says why.
        page.get_by_text("Add a webhook").click()
        form.get_by_label("URL").fill("ftp://example.com/hook")
        form.get_by_role("button", name="Add webhook").click()
        expect(page.locator("#webhook-error")).to_contain_text("url")
        page.get_by_text("Add a webhook").click()  # closed again

        listed = {str(h["name"] or h["url"]): h for h in hooks.webhooks(admin)}
        assert set(listed) == {"on-call", bad.url("/slack")}
        assert listed["on-call"]["format"] == "standard"
        assert listed[bad.url("/slack")]["events"] == ["kill"]
        on_call = webhook_item(page, "on-call")
        expect(on_call).to_contain_text(good.url())
        expect(on_call.locator(".badge")).to_have_text("Standard")
        expect(on_call).to_contain_text("Events: " + ", ".join(WEBHOOK_EVENTS))
        slack = webhook_item(page, bad.url("/slack"))
        expect(slack.locator(".badge")).to_have_text("Slack")
        expect(slack).to_contain_text("Events: kill")

        # Send a test to each: one is delivered, signed; the other fails and is retried.
        on_call.get_by_role("button", name="Send a test event to on-call").click()
        [request] = good.wait_for(1)
        assert request.json()["type"] == "webhook.test"
        Verifier(secret).verify(request.body, request.headers)
        expect(on_call.locator(".webhook-log")).to_be_visible()
        log = on_call.locator(".webhook-log tbody tr")
        expect(log).to_have_count(1)
        expect(log.locator(".badge")).to_have_text("Delivered")
        expect(log).to_contain_text("webhook.test")
        expect(log.locator("td").nth(3)).to_contain_text("200")
        summary = on_call.locator(".webhook-summary")
        expect(summary).to_contain_text("0 pending · last delivery: Delivered · ")
        expect(summary.locator("time")).to_have_count(1)

        slack.get_by_role("button", name=f"Send a test event to {bad.url('/slack')}").click()
        bad.wait_for(1)
        failed = slack.locator(".webhook-log tbody tr")
        expect(failed.locator(".badge")).to_have_text("Pending")
        expect(failed.locator("td").nth(2)).to_have_text("1")
        expect(failed.locator("td").nth(3)).to_contain_text("500")
        expect(failed.locator(".delivery-error")).to_contain_text(
            "answered 500: pager service is down"
        )
        expect(slack.locator(".webhook-summary")).to_contain_text("1 pending")
        screenshot(page, hooks.screenshots / "console-webhooks.png", full_page=True)

        # Hide a log, and show it again.
        toggle = on_call.get_by_role("button", name="Hide the deliveries of on-call")
        expect(toggle).to_have_attribute("aria-expanded", "true")
        toggle.click()
        expect(on_call.locator(".webhook-log")).to_be_hidden()
        on_call.get_by_role("button", name="Deliveries of on-call").click()
        expect(on_call.locator(".webhook-log tbody tr")).to_have_count(1)

        # Remove the failing one, through the confirmation dialog.
        slack.get_by_role("button", name=f"Remove the webhook {bad.url('/slack')}").click()
        dialog = page.get_by_role("dialog")
        expect(dialog.get_by_role("heading")).to_have_text(
            f"Remove the webhook {bad.url('/slack')}?"
        )
        dialog.get_by_role("button", name="Remove webhook").click()
        expect(page.locator("#webhooks-count")).to_have_text("1")
        assert [h["name"] for h in hooks.webhooks(admin)] == ["on-call"]

        # On a phone the view stays usable: one card per delivery.
        phone = open_page(PHONE)
        sign_in(phone, hooks.url, admin, "root")
        phone_item = webhook_item(phone, "on-call")
        phone_item.get_by_role("button", name="Deliveries of on-call").click()
        expect(phone_item.locator(".webhook-log tbody tr")).to_have_count(1)
        width = phone.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, width  # nothing wider than the screen
        screenshot(phone, hooks.screenshots / "console-webhooks-phone.png", full_page=True)


@pytest.mark.parametrize("scopes", [["operator"], ["read"]], ids=["operator", "read"])
def test_only_admins_see_the_webhooks(
    hooks: Hooks, open_page: Callable[..., Page], scopes: list[str]
) -> None:
    token = hooks.key(scopes, f"not-admin-{scopes[0]}")
    page = open_page(DESKTOP)
    sign_in(page, hooks.url, token, f"not-admin-{scopes[0]}")
    expect(page.locator("#agents-panel")).to_be_visible()
    expect(page.locator("#webhooks-panel")).to_be_hidden()
    status = page.evaluate(
        """() => fetch("api/v1/webhooks", {credentials: "same-origin"})
            .then((response) => response.status)"""
    )
    assert status == 403
