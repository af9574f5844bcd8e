"""The console tells a refusal for want of kill state (UNAVAILABLE) from a kill's block."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from playwright.sync_api import Page, expect
from test_console_browser import (  # noqa: F401 - fixtures are used by name
    DESKTOP,
    Site,
    api,
    now,
    open_page,
    sign_in,
    site,
)

pytestmark = pytest.mark.browser


def test_unavailable_and_blocked_interventions_are_labelled_apart(
    site: Site,  # noqa: F811
    open_page: Callable[..., Page],  # noqa: F811
) -> None:
    org = "org_unavailable"
    admin = site.key(org, ["admin"], "root")
    page = open_page(DESKTOP)
    sign_in(page, site.url, admin, "root")
    refused = [
        {
            "id": "iv-unavailable",
            "type": "UNAVAILABLE",
            "action": "send_email",
            "target_type": "agent",
            "target_id": "sync-bot",
            "reason": "kill state has never been synced with http://guard",
            "occurred_at": now(),
        },
        {
            "id": "iv-blocked",
            "action": "refund",
            "target_type": "agent",
            "target_id": "rogue-bot",
            "reason": "Drained $3k",
            "occurred_at": now(),
        },
    ]
    assert api(site.url, admin, "POST", "interventions", interventions=refused).status_code == 200
    unavailable = page.locator("#iv-list > li").filter(has_text="send_email")
    expect(unavailable.locator(".badge")).to_have_text("Unavailable")
    expect(unavailable.locator(".badge")).to_have_class("badge unavailable")
    expect(unavailable).to_contain_text("refused, no kill state for")
    expect(unavailable).not_to_contain_text("blocked by")
    blocked = page.locator("#iv-list > li").filter(has_text="refund")
    expect(blocked.locator(".badge")).to_have_text("Blocked")
    expect(blocked).to_contain_text("blocked by")
