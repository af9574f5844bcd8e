"""The console in real Chromium: isolated user text, a quiet sign-in page, a notice beside rows.

Shares the servers and browser of ``test_console_browser.py`` (its fixtures, imported: hence
F811, the fixtures' names as test parameters).
"""
# ruff: noqa: F811

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import insert
from test_console_browser import (  # noqa: F401  (fixtures)
    DESKTOP,
    PHONE,
    Site,
    agent_badge,
    api,
    heartbeat,
    open_page,
    sign_in,
    site,
)

from agentguard.server.auth.session import SESSION_COOKIE
from agentguard.server.store.tables import interventions
from support.db_rows import intervention_row

pytestmark = pytest.mark.browser

RLO = "\u202e"  # RIGHT-TO-LEFT OVERRIDE: reverses the text after it, up to the paragraph's end

# Where the browser draws a piece of text: the first occurrence of `needle` in `root`'s text
# (across its text nodes), as the left edge of its first character.
CHAR_LEFT = """([root, needle]) => {
    if (!root.isConnected) return "detached";  // the list was redrawn since it was found
    const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
    let text = "", nodes = [];
    while (walker.nextNode()) {
        nodes.push([walker.currentNode, text.length]);
        text += walker.currentNode.data;
    }
    const at = text.indexOf(needle);
    if (at < 0) return null;
    const [node, start] = nodes.filter(([, s]) => s <= at).pop();
    const range = document.createRange();
    range.setStart(node, at - start);
    range.setEnd(node, at - start + 1);
    return range.getBoundingClientRect().left;
}"""


def char_left(page: Page, root: Any, needle: str) -> float:
    """Measured on the element ``root`` finds now (again, if the page redraws it meanwhile)."""
    deadline = time.monotonic() + 5
    left = page.evaluate(CHAR_LEFT, [root.element_handle(), needle])
    while left == "detached" and time.monotonic() < deadline:
        left = page.evaluate(CHAR_LEFT, [root.element_handle(), needle])
    assert left is not None and left != "detached", f"{needle!r} not shown"
    return float(left)


def box_left(locator: Any) -> float:
    """The left edge of what ``locator`` finds now (again, if the page redraws it meanwhile:
    the active list is redrawn as acknowledgements arrive)."""
    deadline = time.monotonic() + 5
    box = locator.bounding_box()
    while box is None and time.monotonic() < deadline:
        box = locator.bounding_box()
    assert box is not None, f"{locator} not shown"
    return float(box["x"])


def watch(page: Page) -> tuple[list[str], list[str]]:
    """The page's console errors, and its responses with an error status."""
    errors: list[str] = []
    failed: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    return errors, failed


def test_loading_the_sign_in_page_logs_no_console_error(
    site: Site, open_page: Callable[..., Page]
) -> None:
    for cookie in (None, "forged.session.cookie"):
        page = open_page(DESKTOP)
        if cookie:
            page.context.add_cookies([{"name": SESSION_COOKIE, "value": cookie, "url": site.url}])
        errors, failed = watch(page)
        page.goto(f"{site.url}/kill-switch")
        expect(page.get_by_role("heading", name="Sign in to the kill switch")).to_be_visible()
        page.wait_for_load_state("networkidle")
        assert errors == [] and failed == [], (errors, failed)
        # Signed in, a reload goes straight to the console through the same probe.
        operator = site.key("org_quiet", ["operator"], "quinn")
        sign_in(page, site.url, operator, "quinn")
        page.reload()
        expect(page.locator("#connection")).to_have_text("Live")
        assert errors == [] and failed == [], (errors, failed)


def test_user_text_cannot_reorder_the_text_around_it(
    site: Site, open_page: Callable[..., Page]
) -> None:
    org = "org_bidi"
    # Text written before ids were checked, or by a host app's user: a reason and an actor
    # ending in RLO, an intervention whose agent id holds one.
    site.admin.store.kill(
        org, "agent", "bidi-bot", reason=f"Drained funds{RLO}", actor=f"mallory{RLO}"
    )
    row = intervention_row("iv-bidi", org, target_id="bidi-bot")
    row.update(agent_id=f"ag{RLO}", run_id="r-1", reason=f"loops{RLO}")
    with site.admin.database.write() as conn:
        conn.execute(insert(interventions).values(**row))
    page = open_page(DESKTOP)
    sign_in(page, site.url, site.key(org, ["operator"], "olga"), "olga")

    item = page.locator("#active-list > li").filter(has_text="bidi-bot")
    expect(item.locator(".reason")).to_have_text(f"Drained funds{RLO}")
    meta = item.locator(".meta")
    # "Killed by mallory‮ · <time>": the separator stays left of the time after it.
    time_left = box_left(meta.locator("time"))
    assert char_left(page, meta, "·") < time_left
    assert char_left(page, meta, "mallory") < char_left(page, meta, "·")

    scope = page.locator("#iv-list > li .meta")
    expect(scope).to_contain_text("run r-1")
    # "agent ag‮ · run r-1": "run" stays right of the separator, "r-1" right of "run".
    assert char_left(page, scope, "ag") < char_left(page, scope, "·")
    assert char_left(page, scope, "·") < char_left(page, scope, "run")
    assert char_left(page, scope, "run") < char_left(page, scope, "r-1")

    # Every piece of user text is isolated (dir=auto, as <bdi>).
    for selector in (".target-id", ".reason", ".actor"):
        for handle in page.locator(f"#active-list {selector}").element_handles():
            assert handle.get_attribute("dir") == "auto", selector
    audit = page.locator("#audit-list > li").filter(has_text="bidi-bot")
    expect(audit.locator(".actor")).to_have_attribute("dir", "auto")


@pytest.mark.parametrize("device", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_the_notice_does_not_cover_the_audit_rows(
    site: Site, open_page: Callable[..., Page], device: dict[str, Any]
) -> None:
    org = f"org_notice_{device['viewport']['width']}"
    operator = site.key(org, ["operator"], "nina")
    for n in range(15):  # a long audit log: it ends the page
        target = {"target_type": "agent", "target_id": f"bot-{n}"}
        assert api(site.url, operator, "POST", "kill-switch/kill", **target).status_code == 200
        assert api(site.url, operator, "POST", "kill-switch/revive", **target).status_code == 200
    page = open_page(device)
    sign_in(page, site.url, operator, "nina")
    expect(page.locator("#audit-list > li")).to_have_count(31)  # and the key.create

    form = page.locator("#kill-form")
    form.get_by_label("Target id").fill("last-bot")
    form.get_by_role("button", name="Kill…").click()
    page.get_by_role("dialog").get_by_role("button", name="Kill agent").click()
    expect(page.locator("#notice")).to_have_class("notice visible")
    # Under each point of the notice (it lets pointer events through, so elementFromPoint sees
    # what it covers), at the page's end and with the audit rows scrolled to either edge.
    covered = page.evaluate(
        """() => {
            const notice = document.getElementById("notice");
            const covered = [];
            const positions = {
                end: () => window.scrollTo(0, document.documentElement.scrollHeight),
                "last row at the bottom": () =>
                    document.querySelector("#audit-list > li:last-child").scrollIntoView(false),
                "first row at the top": () =>
                    document.querySelector("#audit-list > li").scrollIntoView(true),
            };
            for (const [where, scroll] of Object.entries(positions)) {
                scroll();
                const box = notice.getBoundingClientRect();
                for (let i = 0; i <= 8; i++) {
                    for (let j = 0; j <= 4; j++) {
                        const x = box.left + (box.width * i) / 8;
                        const y = box.top + (box.height * j) / 4;
                        const under = document.elementFromPoint(x, y);
                        if (under && under.closest("#audit-list > li")) covered.push(where);
                    }
                }
            }
            return {covered: [...new Set(covered)], shown: notice.textContent};
        }"""
    )
    assert covered == {"covered": [], "shown": "Killed agent “last-bot”."}


def test_a_crashed_agent_shows_the_exceptions_last_line(
    site: Site, open_page: Callable[..., Page]
) -> None:
    org = "org_crash"
    fleet = site.key(org, ["agent"], "fleet")
    report = (
        "Traceback (most recent call last):\n"
        '  File "/srv/campaign.py", line 12, in <module>\n'
        "    send_all()\n"
        "RuntimeError: disk full in thread worker-2"
    )
    heartbeat(site.url, fleet, "crashy", 0, status="crashed", error=report)
    page = open_page(DESKTOP)
    sign_in(page, site.url, site.key(org, ["operator"], "cora"), "cora")
    expect(agent_badge(page, "crashy")).to_have_text("crashed")
    error = page.locator("#agents-body tr .crash-error")
    expect(error).to_have_text("RuntimeError: disk full in thread worker-2")
    expect(error).to_have_attribute("title", report)
