"""The console in a real headless Chromium, against real uvicorn servers on loopback.

Chromium is Debian's (``apt-get install chromium``); without it these tests skip, and fail
when ``AGENTGUARD_REQUIRE_BROWSER=1``. Screenshots go to ``AGENTGUARD_SCREENSHOT_DIR`` if
set (``docs/console-desktop.png`` and ``docs/console-phone.png`` come from there), else to a
temporary directory.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect
from sqlalchemy import insert

from agentguard.server import KillSwitchServer
from agentguard.server.auth.session import SESSION_COOKIE
from agentguard.server.store.tables import interventions
from support.api import bearer
from support.db_rows import intervention_row
from support.processes import Process, free_port, stop, wait_until_serving

pytestmark = pytest.mark.browser

DESKTOP = {"viewport": {"width": 1280, "height": 900}}
PHONE = {
    "viewport": {"width": 390, "height": 844},
    "device_scale_factor": 2,
    "is_mobile": True,
    "has_touch": True,
}
PREFIX = "/ops/guard"
# A host app of its own, with the kill-switch server mounted under a prefix.
HOST_APP = f'''
import os

from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

from agentguard.server import KillSwitchServer

server = KillSwitchServer(os.environ["AGENTGUARD_DATABASE_URL"])


async def home(request):
    return PlainTextResponse("the host app")


app = Starlette(routes=[Route("/", home), Mount("{PREFIX}", server.app)])
'''


@dataclass
class Site:
    """The console served standalone and inside a host app, on one database."""

    url: str  # agentguard's own app: the console at {url}/kill-switch
    host_url: str  # the host app: the console at {host_url}/ops/guard/kill-switch
    admin: KillSwitchServer  # the same database, in this process, to make keys
    screenshots: Path

    def key(self, org: str, scopes: list[str], owner: str) -> str:
        agents = ["*"] if "agent" in scopes else None
        return self.admin.create_key(org, owner=owner, scopes=scopes, agents=agents)


def serve(
    argv: list[str], log: Path, env: dict[str, str], prefix: str = "", port: int | None = None
) -> Process:
    port = port or free_port()
    popen = subprocess.Popen(
        [a.replace("{port}", str(port)) for a in argv],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env={**os.environ, **env},
        cwd=log.parent,
        start_new_session=True,
    )
    process = Process(popen, port, log)
    process.url += prefix
    wait_until_serving(process)
    return process


def uvicorn(app: str, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "uvicorn",
        app,
        *extra,
        "--host",
        "127.0.0.1",
        "--port",
        "{port}",
        "--log-level",
        "warning",
    ]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    directory = tmp_path_factory.mktemp("console")
    database_url = f"sqlite:///{directory / 'agentguard.db'}"
    admin = KillSwitchServer(database_url)
    admin.start()
    (directory / "host_app.py").write_text(HOST_APP)
    env = {"AGENTGUARD_DATABASE_URL": database_url}
    processes = []
    try:
        standalone = serve(
            uvicorn("agentguard.server.asgi:create_app", "--factory"), directory / "s.log", env
        )
        processes.append(standalone)
        host = serve(
            uvicorn("host_app:app", "--app-dir", str(directory)), directory / "h.log", env, PREFIX
        )
        processes.append(host)
        shots = os.environ.get("AGENTGUARD_SCREENSHOT_DIR")
        screenshots = Path(shots) if shots else directory
        screenshots.mkdir(parents=True, exist_ok=True)
        yield Site(standalone.url, host.url.removesuffix(PREFIX), admin, screenshots)
    finally:
        for process in processes:
            stop(process)
        admin.close()


@pytest.fixture
def open_page(chromium: Browser) -> Iterator[Callable[..., Page]]:
    """Factory: a page in a fresh browser context; fails the test on any script error."""
    contexts = []
    errors: list[str] = []

    def make(device: dict[str, Any] = DESKTOP) -> Page:
        context = chromium.new_context(locale="en-US", timezone_id="UTC", **device)
        context.set_default_timeout(10_000)
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda error: errors.append(str(error)))
        return page

    yield make
    for context in contexts:
        context.close()
    assert errors == [], errors


def sign_in(page: Page, console_url: str, token: str, owner: str) -> None:
    page.goto(f"{console_url}/kill-switch")
    page.get_by_label("API key").fill(token)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#identity-text")).to_contain_text(owner)
    expect(page.locator("#connection")).to_have_text("Live")
    page.evaluate("window.__not_reloaded = true")


def heartbeat(url: str, token: str, agent_id: str, instance: int, **counts: Any) -> None:
    body = {
        "instance_id": f"{agent_id}-{instance}",
        "agent_id": agent_id,
        "interval": 60,
        "executed": 0,
        "refused": 0,
        "failed": 0,
        "cost_usd": 0.0,
        "version": 0,
        **counts,
    }
    response = httpx.post(f"{url}/api/v1/heartbeats", json=body, headers=bearer(token))
    assert response.status_code == 200, response.text


def api(url: str, token: str, method: str, path: str, **body: Any) -> httpx.Response:
    return httpx.request(method, f"{url}/api/v1/{path}", json=body or None, headers=bearer(token))


def now() -> str:
    return datetime.now(timezone.utc).isoformat()


def screenshot(page: Page, path: Path, *, full_page: bool = False) -> None:
    """The page at rest: no transient notice, no focus ring."""
    expect(page.locator("#notice")).not_to_have_class(re.compile(r"\bvisible\b"))
    page.evaluate("document.activeElement && document.activeElement.blur()")
    page.screenshot(path=str(path), full_page=full_page, animations="disabled")


def agent_badge(page: Page, agent_id: str) -> Any:
    row = page.locator("#agents-body tr").filter(
        has=page.get_by_role("rowheader", name=agent_id, exact=True)
    )
    return row.locator(".badge")


# -- the tests -----------------------------------------------------------------------------------


def test_an_operator_kills_and_revives_from_the_page(
    site: Site, open_page: Callable[..., Page]
) -> None:
    org = "org_ops"
    operator = site.key(org, ["operator"], "alice")
    fleet = site.key(org, ["agent"], "fleet")
    for agent, instances, executed, cost in [
        ("email-campaign", 2, 1843, 41.2),
        ("billing-sync", 2, 612, 3.9),
        ("support-triage", 3, 2290, 18.45),
        ("lead-enricher", 1, 97, 0.62),
    ]:
        for i in range(instances):
            heartbeat(site.url, fleet, agent, i, executed=executed + i * 37, cost_usd=cost / 2)

    page = open_page(DESKTOP)
    page.goto(f"{site.url}/kill-switch")
    expect(page.get_by_role("heading", name="Sign in to the kill switch")).to_be_visible()
    sign_in(page, site.url, operator, "alice")
    expect(agent_badge(page, "email-campaign")).to_have_text("active")

    # The session cookie: HttpOnly (invisible to scripts), SameSite=Strict, not Secure on http.
    cookie = next(c for c in page.context.cookies() if c["name"] == SESSION_COOKIE)
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    assert cookie["secure"] is False
    assert cookie["path"] == "/"
    assert SESSION_COOKIE not in page.evaluate("document.cookie")
    # A cookie-authenticated POST without the CSRF token is refused.
    status = page.evaluate(
        """() => fetch("api/v1/kill-switch/kill", {
            method: "POST",
            headers: {"Content-Type": "application/json"},
            body: JSON.stringify({target_type: "agent", target_id: "email-campaign"}),
        }).then((response) => response.status)"""
    )
    assert status == 403
    expect(page.locator("#active-empty")).to_be_visible()

    # Kill through the form.
    reason = "Drained $3k in 4 minutes re-sending the same invoices"
    form = page.locator("#kill-form")
    form.get_by_label("Target type").select_option("agent")
    form.get_by_label("Target id").fill("email-campaign")
    form.get_by_label("Reason").fill(reason)
    expect(form.locator(".counter")).to_have_text(f"{len(reason)} / 2,000 characters")
    form.get_by_role("button", name="Kill…").click()
    dialog = page.get_by_role("dialog")
    expect(dialog.get_by_role("heading")).to_have_text("Kill agent “email-campaign”?")
    dialog.get_by_role("button", name="Kill agent").click()
    expect(dialog).to_be_hidden()

    active = page.locator("#active-list > li")
    killed = active.filter(has_text="email-campaign")
    expect(killed.locator(".reason")).to_have_text(reason)
    expect(killed.locator(".meta")).to_contain_text("Killed by alice (key ag_")
    expect(agent_badge(page, "email-campaign")).to_have_text("killed")
    check = "kill-switch/check?target_type=agent&target_id=email-campaign"
    assert api(site.url, operator, "GET", check).json()["reason"] == reason

    # Another client kills a tool over HTTP: it shows up without a reload.
    other = site.key(org, ["operator"], "bob")
    response = api(
        site.url,
        other,
        "POST",
        "kill-switch/kill",
        target_type="tool",
        target_id="send_email",
        reason="Mail provider is bouncing everything",
    )
    assert response.status_code == 200
    expect(active.filter(has_text="send_email")).to_be_visible()
    expect(page.locator("#active-count")).to_have_text("2")

    # Both instances of the agent apply the kill; refused calls arrive as interventions.
    version = api(site.url, fleet, "GET", "kill-switch/state").json()["version"]
    for i in range(2):
        ack = api(
            site.url,
            fleet,
            "POST",
            "kill-switch/ack",
            instance_id=f"email-campaign-{i}",
            agent_id="email-campaign",
            version=version,
        )
        assert ack.status_code == 200, ack.text
        heartbeat(
            site.url,
            fleet,
            "email-campaign",
            i,
            executed=1843,
            refused=3 + i,
            cancelled=1,
            cost_usd=20.6,
            version=version,
        )
    blocked = [
        {
            "id": f"iv-{i}",
            "action": action,
            "target_type": target_type,
            "target_id": target_id,
            "agent_id": "email-campaign",
            "instance_id": f"email-campaign-{i % 2}",
            "reason": reason if target_type == "agent" else "Mail provider is bouncing everything",
            "occurred_at": now(),
        }
        for i, (action, target_type, target_id) in enumerate(
            [
                ("send_invoice", "agent", "email-campaign"),
                ("send_email", "tool", "send_email"),
                ("send_invoice", "agent", "email-campaign"),
            ]
        )
    ]
    # The call each instance had in flight when the kill came, stopped midway.
    stopped = {**blocked[0], "id": "iv-stopped", "action": "bulk_send", "type": "CANCELLED",
               "ran_for_ms": 2340.0}  # fmt: skip
    # A refused model call names its model.
    blocked[0] = {**blocked[0], "id": "iv-llm", "action": "llm", "model": "gpt-4o-mini"}
    blocked = [stopped, *blocked]
    assert api(site.url, fleet, "POST", "interventions", interventions=blocked).status_code == 200
    feed = page.locator("#iv-list > li")
    expect(feed).to_have_count(4)
    expect(feed.first).to_contain_text("send_invoice")
    cut_short = feed.filter(has_text="bulk_send")
    expect(cut_short.locator(".badge")).to_have_text("Stopped")
    expect(cut_short).to_contain_text("stopped after 2.3 s by the kill of")
    expect(feed.filter(has_text="gpt-4o-mini")).to_contain_text("llm")
    expect(feed.filter(has_text="gpt-4o-mini").locator(".scope-id").first).to_have_text(
        "gpt-4o-mini"
    )
    expect(page.locator("tr[data-agent='email-campaign'] td[data-label='Stopped']")).to_have_text(
        "2"
    )
    expect(killed.locator(".ack")).to_contain_text("Acknowledged by 2/2 instances")
    # Filtered by target: only that target's interventions, live ones included.
    page.locator("#iv-type").select_option("tool")
    expect(feed).to_have_count(1)
    expect(feed.first).to_contain_text("send_email")
    page.locator("#iv-type").select_option("")
    expect(feed).to_have_count(4)
    expect(page.locator("#audit-list > li").first).to_contain_text("send_email")
    screenshot(page, site.screenshots / "console-desktop.png", full_page=True)

    # Revive from the list, after confirming: gone, and the agent is active again.
    killed.get_by_role("button", name="Revive agent email-campaign").click()
    expect(dialog.get_by_role("heading")).to_have_text("Revive agent “email-campaign”?")
    dialog.get_by_role("button", name="Revive").click()
    expect(killed).to_have_count(0)
    expect(page.locator("#active-count")).to_have_text("1")
    expect(agent_badge(page, "email-campaign")).to_have_text("active")
    expect(page.locator("#audit-list > li").first).to_contain_text("Revive")
    assert page.evaluate("window.__not_reloaded") is True


def test_a_cancelled_confirmation_kills_nothing(site: Site, open_page: Callable[..., Page]) -> None:
    operator = site.key("org_cancel", ["operator"], "carol")
    page = open_page(DESKTOP)
    sign_in(page, site.url, operator, "carol")
    form = page.locator("#kill-form")
    form.get_by_label("Target id").fill("billing-sync")
    form.get_by_role("button", name="Kill…").click()
    page.get_by_role("dialog").get_by_role("button", name="Cancel").click()
    expect(page.get_by_role("dialog")).to_be_hidden()
    # Escape closes it too.
    form.get_by_role("button", name="Kill…").click()
    page.keyboard.press("Escape")
    expect(page.get_by_role("dialog")).to_be_hidden()
    check = "kill-switch/check?target_type=agent&target_id=billing-sync"
    assert api(site.url, operator, "GET", check).json()["is_killed"] is False
    expect(page.locator("#active-empty")).to_be_visible()


def test_a_time_limited_kill_from_the_page_and_its_expiry(
    site: Site, open_page: Callable[..., Page]
) -> None:
    operator = site.key("org_expiry", ["operator"], "erin")
    page = open_page(DESKTOP)
    sign_in(page, site.url, operator, "erin")
    form = page.locator("#kill-form")
    form.get_by_label("Target id").fill("billing-sync")
    form.get_by_label("For how long").select_option("1h")
    form.get_by_role("button", name="Kill…").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("It is revived automatically after 1 hour.")
    dialog.get_by_role("button", name="Kill agent").click()
    expect(dialog).to_be_hidden()
    item = page.locator("#active-list li").filter(has_text="billing-sync")
    expect(item.locator(".meta")).to_contain_text("expires")
    check = "kill-switch/active"
    (record,) = api(site.url, operator, "GET", check).json()["data"]
    expires = datetime.fromisoformat(record["expires_at"].replace("Z", "+00:00"))
    killed = datetime.fromisoformat(record["killed_at"].replace("Z", "+00:00"))
    assert abs((expires - killed).total_seconds() - 3600) < 2
    # A kill that expires in a second leaves the list when the server revives it (streamed).
    body = {"target_type": "run", "target_id": "run-9", "duration": "1s"}
    assert api(site.url, operator, "POST", "kill-switch/kill", **body).status_code == 200
    short = page.locator("#active-list li").filter(has_text="run-9")
    expect(short).to_have_count(1)
    expect(short).to_have_count(0, timeout=15_000)
    expect(item).to_have_count(1)


def test_an_admin_stops_the_whole_organization_by_typing_its_id(
    site: Site, open_page: Callable[..., Page]
) -> None:
    org = "org_stop"
    admin = site.key(org, ["admin"], "olga")
    check = f"kill-switch/check?target_type=organization&target_id={org}"
    page = open_page(DESKTOP)
    sign_in(page, site.url, admin, "olga")
    panel = page.locator("#stop-all-panel")
    expect(panel).to_be_visible()
    expect(panel.locator("#stop-all-state")).to_have_text("Running: no organization-wide stop.")
    button = panel.get_by_role("button", name="Stop every agent")
    expect(button).to_be_disabled()
    panel.get_by_label("Reason").fill("incident 42: prompt injection")
    confirm = panel.get_by_label("Type the organization id")
    confirm.fill("org_sto")  # not quite
    expect(button).to_be_disabled()
    confirm.fill(org)
    expect(button).to_be_enabled()
    button.click()
    expect(panel.locator("#stop-all-state")).to_contain_text("EVERY AGENT IS STOPPED")
    expect(panel.locator("#stop-all-state")).to_contain_text("incident 42: prompt injection")
    expect(panel).to_have_class(re.compile(r"\bstopped\b"))
    assert api(site.url, admin, "GET", check).json()["is_killed"] is True
    item = page.locator("#active-list li").filter(has_text="Organization")
    expect(item).to_have_count(1)
    panel.get_by_role("button", name="Resume every agent").click()
    page.get_by_role("dialog").get_by_role("button", name="Resume every agent").click()
    expect(panel.locator("#stop-all-state")).to_have_text("Running: no organization-wide stop.")
    assert api(site.url, admin, "GET", check).json()["is_killed"] is False
    # An operator of a server that keeps the stop to admins does not see the control.
    operator_page = open_page(DESKTOP)
    sign_in(operator_page, site.url, site.key(org, ["operator"], "otto"), "otto")
    expect(operator_page.locator("#kill-panel")).to_be_visible()
    expect(operator_page.locator("#stop-all-panel")).to_be_hidden()


def test_an_agents_labels_show_under_its_id(site: Site, open_page: Callable[..., Page]) -> None:
    org = "org_labels"
    operator = site.key(org, ["operator"], "lena")
    fleet = site.key(org, ["agent"], "fleet")
    heartbeat(site.url, fleet, "mailer", 0, labels={"env": "prod", "team": "growth"})
    heartbeat(site.url, fleet, "mailer", 1, labels={"env": "prod"})
    page = open_page(DESKTOP)
    sign_in(page, site.url, operator, "lena")
    row = page.locator("#agents-body tr").filter(
        has=page.get_by_role("rowheader", name=re.compile("^mailer"))
    )
    expect(row.locator(".labels .label")).to_have_text(["env=prod", "team=growth"])


def test_on_a_phone(site: Site, open_page: Callable[..., Page]) -> None:
    org = "org_phone"
    operator = site.key(org, ["operator"], "dana")
    fleet = site.key(org, ["agent"], "fleet")
    for agent, executed, refused, cost in [
        ("email-campaign", 1843, 0, 41.2),
        ("billing-sync", 612, 0, 3.9),
        ("support-triage", 2290, 0, 18.45),
    ]:
        heartbeat(site.url, fleet, agent, 0, executed=executed, refused=refused, cost_usd=cost)
    page = open_page(PHONE)
    sign_in(page, site.url, operator, "dana")

    # Kill one agent from its card, giving the reason in the confirmation.
    card = page.locator("#agents-body tr").filter(
        has=page.get_by_role("rowheader", name="email-campaign", exact=True)
    )
    card.get_by_role("button", name="Kill agent email-campaign").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("Reason").fill("Drained $3k in 4 minutes")
    expect(dialog.locator(".counter")).to_have_text("24 / 2,000 characters")
    dialog.get_by_role("button", name="Kill agent").click()
    expect(agent_badge(page, "email-campaign")).to_have_text("killed")
    expect(page.locator("#active-list > li")).to_contain_text("Drained $3k in 4 minutes")
    expect(card.get_by_role("button", name="Revive agent email-campaign")).to_be_visible()
    # Its instance applies the kill, and its next tool call is refused.
    version = api(site.url, fleet, "GET", "kill-switch/state").json()["version"]
    ack = api(
        site.url,
        fleet,
        "POST",
        "kill-switch/ack",
        instance_id="email-campaign-0",
        agent_id="email-campaign",
        version=version,
    )
    assert ack.status_code == 200
    blocked = {
        "id": "iv-phone",
        "action": "send_invoice",
        "target_type": "agent",
        "target_id": "email-campaign",
        "agent_id": "email-campaign",
        "instance_id": "email-campaign-0",
        "occurred_at": now(),
    }
    assert api(site.url, fleet, "POST", "interventions", interventions=[blocked]).status_code == 200
    expect(page.locator("#active-list > li .ack")).to_contain_text("Acknowledged by 1/1 instance ")

    # Nothing is wider than the screen.
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.evaluate("window.scrollTo(0, 0)")
    screenshot(page, site.screenshots / "console-phone.png")


def test_a_read_only_key_sees_no_kill_controls(site: Site, open_page: Callable[..., Page]) -> None:
    org = "org_readers"
    admin = site.key(org, ["admin"], "root")
    reader = site.key(org, ["read"], "erin")
    heartbeat(site.url, admin, "email-campaign", 0, executed=10)
    # Strings from users and agents hold markup, which must stay text.
    reason = "<script>window.__pwned = true</script> Looping on the same refund"
    tool = "<img src=x onerror=window.__pwned=true>"
    for target_type, target_id in [("agent", "email-campaign"), ("tool", tool)]:
        kill = api(
            site.url,
            admin,
            "POST",
            "kill-switch/kill",
            target_type=target_type,
            target_id=target_id,
            reason=reason,
        )
        assert kill.status_code == 200
    page = open_page(DESKTOP)
    sign_in(page, site.url, reader, "erin")
    blocked = {
        "id": "iv-markup",
        "action": "<b>refund</b>",
        "target_type": "tool",
        "target_id": tool,
        "reason": reason,
        "occurred_at": now(),
    }
    assert api(site.url, admin, "POST", "interventions", interventions=[blocked]).status_code == 200
    killed_tool = page.locator("#active-list > li").filter(has_text=tool)
    expect(killed_tool.locator(".target-id")).to_have_text(tool)
    expect(killed_tool.locator(".reason")).to_have_text(reason)
    expect(page.locator("#iv-list > li .action")).to_have_text("<b>refund</b>")
    expect(page.locator("#audit-list > li").first).to_contain_text(reason)
    expect(page.locator("#console").locator("script, img, b")).to_have_count(0)
    assert page.evaluate("window.__pwned") is None
    expect(agent_badge(page, "email-campaign")).to_have_text("killed")
    expect(page.locator("#kill-panel")).to_be_hidden()
    expect(page.locator("#kill-form")).to_be_hidden()
    expect(page.get_by_role("button", name=re.compile(r"^(Kill|Revive)"))).to_have_count(0)
    # The server refuses it anyway, token or not.
    status = page.evaluate(
        """() => fetch("kill-switch/session").then((r) => r.json()).then((session) =>
            fetch("api/v1/kill-switch/revive", {
                method: "POST",
                headers: {"Content-Type": "application/json", "X-CSRF-Token": session.csrf_token},
                body: JSON.stringify({target_type: "agent", target_id: "email-campaign"}),
            })).then((response) => response.status)"""
    )
    assert status == 403


def test_mounted_under_a_prefix_in_a_host_app(site: Site, open_page: Callable[..., Page]) -> None:
    org = "org_host"
    operator = site.key(org, ["operator"], "frank")
    console = site.host_url + PREFIX
    page = open_page(DESKTOP)
    sign_in(page, console, operator, "frank")
    cookie = next(c for c in page.context.cookies() if c["name"] == SESSION_COOKIE)
    assert cookie["path"] == f"{PREFIX}/"

    # Keyboard only: type the target, Enter submits, Enter confirms (focus is on Kill).
    page.locator("#kill-id").focus()
    page.keyboard.type("rogue-bot")
    page.keyboard.press("Enter")
    expect(page.get_by_role("dialog")).to_be_visible()
    expect(page.get_by_role("button", name="Kill agent")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("#active-list > li")).to_contain_text("rogue-bot")

    # A kill through the mounted API reaches the page's stream.
    kill = api(
        console,
        operator,
        "POST",
        "kill-switch/kill",
        target_type="mission",
        target_id="q3-outreach",
        reason="Wrong audience",
    )
    assert kill.status_code == 200
    expect(page.locator("#active-list > li").filter(has_text="q3-outreach")).to_be_visible()
    assert httpx.get(site.host_url + "/").text == "the host app"
    assert page.evaluate("window.__not_reloaded") is True


def test_session_ended_and_server_unreachable(
    tmp_path: Path, open_page: Callable[..., Page], make_server: Callable[..., KillSwitchServer]
) -> None:
    database_url = f"sqlite:///{tmp_path / 'agentguard.db'}"
    admin = make_server(database_url)
    admin.start()
    # One session secret for both server processes, so the session outlives the restart.
    env = {"AGENTGUARD_DATABASE_URL": database_url, "AGENTGUARD_SESSION_SECRET": "s" * 32}
    app = uvicorn("agentguard.server.asgi:create_app", "--factory")
    process = serve(app, tmp_path / "server.log", env)
    try:
        token = admin.create_key("org_a", owner="gina", scopes=["operator"])
        page = open_page(DESKTOP)
        sign_in(page, process.url, token, "gina")

        # The key is revoked: the page's next request (its periodic refresh, or any action the
        # user takes first) ends the session and asks to sign in again.
        admin.keys.revoke("org_a", token.rsplit("_", 1)[0], actor="root")
        expect(page.locator("#banner")).to_contain_text("Your console session has ended")
        expect(page.locator("#banner")).to_contain_text("revoked")
        expect(page.get_by_label("API key")).to_be_visible()
        expect(page.locator("#console")).to_be_hidden()

        fresh = admin.create_key("org_a", owner="gina", scopes=["operator"])
        page.get_by_label("API key").fill(fresh)
        page.get_by_role("button", name="Sign in").click()
        expect(page.locator("#connection")).to_have_text("Live")
        expect(page.locator("#banner")).to_be_hidden()

        # The server goes away: the page says so and keeps the last known state.
        stop(process)
        expect(page.locator("#connection")).to_have_text("Server unreachable")
        expect(page.locator("#banner")).to_contain_text("Cannot reach the agentguard server")
        expect(page.locator("#console")).to_be_visible()

        # A refusal stored while the page was away (never streamed to it) shows once it is back.
        row = intervention_row("iv-meanwhile", "org_a", action="export_contacts")
        with admin.database.write() as conn:
            conn.execute(insert(interventions).values(**row))
        process = serve(app, tmp_path / "server-again.log", env, port=process.port)
        expect(page.locator("#connection")).to_have_text("Live", timeout=30_000)
        expect(page.locator("#iv-list > li .action")).to_have_text(["export_contacts"])
    finally:
        stop(process)


def test_each_agents_last_drill_shows_as_a_badge_with_its_age(
    site: Site, open_page: Callable[..., Page]
) -> None:
    """An agent whose streaming instance answered its drill is armed; one whose only instance
    sends heartbeats (it cannot answer) is not, and the badge says who did not answer."""
    from agentguard import Guard

    org = "org_drills"
    operator = site.key(org, ["operator"], "frank")
    fleet = site.key(org, ["agent"], "fleet")
    guard = Guard(site.url, api_key=fleet, agent_id="email-campaign", instance_id="vm-11")
    try:
        assert guard.wait_until_synced(10)
        guard.start_heartbeat(interval=1.0)
        heartbeat(site.url, fleet, "billing-sync", 0)
        page = open_page(PHONE)
        sign_in(page, site.url, operator, "frank")
        expect(page.locator("#agents-body tr")).to_have_count(2)
        expect(page.locator(".drill-badge")).to_have_count(0)  # never drilled

        def drill(agent: str) -> dict[str, Any]:
            body = {"target_type": "agent", "target_id": agent, "timeout": 1}
            answer = api(site.url, operator, "POST", "drills", **body)
            assert answer.status_code == 200, answer.text
            return dict(answer.json())

        assert drill("email-campaign")["status"] == "armed"
        assert drill("billing-sync")["not_answering"] == ["billing-sync-0"]
        page.reload()  # the agents list is read again: a drill changes no kill state

        def badge(agent: str) -> Any:
            row = page.locator("#agents-body tr").filter(
                has=page.get_by_role("rowheader", name=agent, exact=True)
            )
            return row.locator(".drill-badge")

        expect(badge("email-campaign")).to_have_text(re.compile(r"^armed (just now|\d+ s ago)$"))
        expect(badge("email-campaign")).to_have_attribute(
            "title", re.compile(r"^Armed: 1/1 live instances acknowledged the last drill within ")
        )
        expect(badge("billing-sync")).to_have_text(re.compile(r"^not armed "))
        expect(badge("billing-sync")).to_have_attribute(
            "title", re.compile(r"0/1 .*; not answering: billing-sync-0$")
        )
        expect(agent_badge(page, "email-campaign")).to_have_text("active")  # nothing refused
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        page.evaluate("document.activeElement && document.activeElement.blur()")
        shot = site.screenshots / "console-drill-phone.png"
        page.locator("#agents-body").screenshot(path=str(shot), animations="disabled")
    finally:
        guard.close()
