"""Governed revive in the console, in a real headless Chromium against uvicorn: a revive that
the server's approval rules match becomes a request, explained on the page; another operator
sees it with an Approve button, and approving revives the kill on both pages (streamed).

Uses the browser fixtures of ``test_console_browser.py`` (imported: hence F811).
"""

# ruff: noqa: F811

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect
from test_console_browser import (  # noqa: F401 - fixtures are used by name
    DESKTOP,
    open_page,
    serve,
    sign_in,
    uvicorn,
)

from agentguard.server import KillSwitchServer
from support.api import bearer
from support.processes import Process, stop

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def governed(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Process, KillSwitchServer]]:
    """The console of a server where revives of agents named pay* need 2 people."""
    directory: Path = tmp_path_factory.mktemp("governed-console")
    database_url = f"sqlite:///{directory / 'agentguard.db'}"
    admin = KillSwitchServer(database_url)
    admin.start()
    env = {
        "AGENTGUARD_DATABASE_URL": database_url,
        "AGENTGUARD_REVIVE_APPROVALS": "agent:pay*=2",
    }
    process = serve(
        uvicorn("agentguard.server.asgi:create_app", "--factory"), directory / "s.log", env
    )
    try:
        yield process, admin
    finally:
        stop(process)
        admin.close()


def test_a_revive_becomes_a_request_that_another_operator_approves(
    governed: tuple[Process, KillSwitchServer], open_page: Callable[..., Page]
) -> None:
    process, admin = governed
    org = "org_governed"
    alice = admin.create_key(org, owner="alice", scopes=["operator"])
    bob = admin.create_key(org, owner="bob", scopes=["operator"])
    killed = httpx.post(
        f"{process.url}/api/v1/kill-switch/kill",
        json={"target_type": "agent", "target_id": "payments", "reason": "drained"},
        headers=bearer(alice),
    )
    assert killed.status_code == 200, killed.text

    mine = open_page(DESKTOP)
    sign_in(mine, process.url, alice, "alice")
    theirs = open_page(DESKTOP)
    sign_in(theirs, process.url, bob, "bob")
    for page in (mine, theirs):
        expect(page.locator("#revives-panel")).to_be_hidden()

    # Alice revives: the page explains that it became a request, and the kill stays.
    item = mine.locator("#active-list li").filter(has_text="payments")
    item.get_by_role("button", name="Revive agent payments").click()
    mine.get_by_role("dialog").get_by_role("button", name="Revive").click()
    expect(mine.locator("#notice")).to_contain_text("needs approval")
    expect(mine.locator("#notice")).to_contain_text("until another operator approves it")
    expect(item).to_have_count(1)
    request = mine.locator("#revives-list li")
    expect(request).to_have_count(1)
    expect(request).to_contain_text("Your request: another operator must approve it.")
    approve = "Approve the revive of agent payments"
    expect(request.get_by_role("button", name=approve)).to_have_count(0)
    withdraw = "Withdraw the revive request of agent payments"
    expect(request.get_by_role("button", name=withdraw)).to_be_visible()

    # Bob's page shows it (on its next refresh) with an Approve button.
    waiting = theirs.locator("#revives-list li")
    expect(waiting).to_have_count(1, timeout=15_000)
    expect(waiting).to_contain_text("Revive asked by alice")
    expect(waiting).to_contain_text("approved by 0 of 1")
    waiting.get_by_role("button", name=approve).click()
    dialog = theirs.get_by_role("dialog")
    dialog.get_by_label("Reason").fill("checked the loop fix")
    dialog.get_by_role("button", name="Approve").click()
    expect(theirs.locator("#notice")).to_contain_text("Approved: revived")
    expect(theirs.locator("#revives-panel")).to_be_hidden()
    expect(theirs.locator("#active-list li").filter(has_text="payments")).to_have_count(0)
    # Alice's page hears the revive on its stream; her request is gone too.
    expect(item).to_have_count(0)
    expect(mine.locator("#revives-panel")).to_be_hidden(timeout=15_000)
    audit = httpx.get(
        f"{process.url}/api/v1/audit", params={"action": "revive"}, headers=bearer(bob)
    ).json()["data"]
    assert audit[0]["actor"].startswith("alice") and "approved by bob" in audit[0]["detail"]
    # The audit list names the steps.
    expect(theirs.locator("#audit-list")).to_contain_text("Revive approved", timeout=15_000)
    expect(theirs.locator("#audit-list")).to_contain_text("Revive asked")


def test_a_target_without_a_rule_revives_at_once(
    governed: tuple[Process, KillSwitchServer], open_page: Callable[..., Page]
) -> None:
    process, admin = governed
    carol = admin.create_key("org_plain", owner="carol", scopes=["operator"])
    httpx.post(
        f"{process.url}/api/v1/kill-switch/kill",
        json={"target_type": "agent", "target_id": "mailer"},
        headers=bearer(carol),
    )
    page = open_page(DESKTOP)
    sign_in(page, process.url, carol, "carol")
    item = page.locator("#active-list li").filter(has_text="mailer")
    item.get_by_role("button", name="Revive agent mailer").click()
    page.get_by_role("dialog").get_by_role("button", name="Revive").click()
    expect(page.locator("#notice")).to_contain_text("Revived")
    expect(item).to_have_count(0)
    expect(page.locator("#revives-panel")).to_be_hidden()
