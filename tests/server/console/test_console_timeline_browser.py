"""The console's timelines and refusals sparkline in a real Chromium, against real uvicorn.

A day of history is written through the server's own code on the shared SQLite file, with
its clock set back: heartbeats every five minutes (the fleet's clock), kills and revives (the
kill store's clock), and the refusals and two calls a kill stopped while they ran (CANCELLED)
reported with the times they occurred. The page draws it from ``GET /api/v1/series`` and
``GET /api/v1/agents/{id}/series``. Screenshots go to ``AGENTGUARD_SCREENSHOT_DIR`` if set
(``docs/console-timeline.png`` comes from there), else to a temporary directory.

Uses the browser fixtures of ``test_console_browser.py`` (imported: hence F811).
"""
# ruff: noqa: F811

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect
from test_console_browser import (  # noqa: F401 - fixtures are used by name
    DESKTOP,
    PHONE,
    open_page,
    serve,
    sign_in,
    uvicorn,
)

from agentguard.protocol import HeartbeatReport
from agentguard.records import Intervention, InterventionType, utcnow
from agentguard.server import KillSwitchServer
from agentguard.server.store import killstate
from support.api import bearer
from support.processes import stop

pytestmark = pytest.mark.browser

ORG = "org_story"
MINUTES = timedelta(minutes=1)
AGENTS = ("billing-sync", "email-campaign", "support-triage")
DRAINED = "Drained $3k in 4 minutes re-sending the same invoices"
BOUNCING = "Mail provider is bouncing everything"


class Clock:
    """A clock set by hand: the fleet's, and the kill store's while history is written."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


@dataclass
class Story:
    url: str
    operator: str  # an operator key of the organization
    agent: str  # an agent key of it
    screenshots: Path

    def api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.request(
            method, f"{self.url}/api/v1/{path}", headers=bearer(self.operator), **kwargs
        )


def write_history(server: KillSwitchServer, clock: Clock, now: datetime) -> None:
    """A day of three agents: email-campaign killed and revived, billing-sync refused by a
    killed tool, support-triage undisturbed."""
    store = server.store
    start = now - timedelta(hours=23, minutes=50)
    kill_at, revive_at = now - timedelta(hours=5, minutes=10), now - timedelta(hours=4, minutes=25)
    tool_kill_at, tool_revive_at = now - timedelta(hours=2, minutes=5), now - 80 * MINUTES
    totals = {agent: {"executed": 0, "refused": 0, "cost_usd": 0.0} for agent in AGENTS}
    killed = None
    refusals: list[Intervention] = []
    when = start
    while when <= now:
        clock.at = when
        if killed is None and when >= kill_at:
            killed = store.kill(ORG, "agent", "email-campaign", reason=DRAINED, actor="alice")
        if killed is not None and when >= revive_at and killed.kind == "kill":
            killed = store.revive(ORG, "agent", "email-campaign", actor="bob")
        hour = when.hour + when.minute / 60
        busy = 1 + math.sin((hour - 9) / 24 * 2 * math.pi)  # busiest mid-afternoon
        for n, agent in enumerate(AGENTS):
            calls = int(12 + 30 * busy * (1 + n / 2))
            count = totals[agent]
            if agent == "email-campaign" and kill_at <= when < revive_at:
                calls = 0
                count["refused"] += 3
                refusals += [
                    Intervention(
                        action="send_invoice",
                        target_type="agent",
                        target_id="email-campaign",
                        agent_id=agent,
                        kill_switch_id=killed.kill_switch.id if killed else None,
                        reason=DRAINED,
                        occurred_at=when + k * MINUTES,
                    )  # fmt: skip
                    for k in range(3)
                ]
            if agent == "billing-sync" and tool_kill_at <= when < tool_revive_at:
                count["refused"] += 1
                refusals.append(
                    Intervention(
                        action="send_email",
                        target_type="tool",
                        target_id="send_email",
                        agent_id=agent,
                        reason=BOUNCING,
                        occurred_at=when,
                    )  # fmt: skip
                )
            count["executed"] += calls
            pricier = 1 + 0.6 * math.sin((hour + 2 * n) / 6 * 2 * math.pi)  # longer prompts
            count["cost_usd"] += calls * (0.012 if agent == "email-campaign" else 0.004) * pricier
            server.fleet.heartbeat(
                ORG,
                HeartbeatReport(
                    instance_id=f"{agent}-0",
                    agent_id=agent,
                    interval=300,
                    executed=count["executed"],
                    refused=count["refused"],
                    cost_usd=round(count["cost_usd"], 4),
                ),
            )
        if tool_kill_at <= when < tool_kill_at + 5 * MINUTES:
            store.kill(ORG, "tool", "send_email", reason=BOUNCING, actor="carol")
        if tool_revive_at <= when < tool_revive_at + 5 * MINUTES:
            store.revive(ORG, "tool", "send_email", actor="carol")
        when += 5 * MINUTES
    stopped = [  # two calls the kill stopped while they ran
        Intervention(
            type=InterventionType.CANCELLED,
            action="send_invoice",
            target_type="agent",
            target_id="email-campaign",
            agent_id="email-campaign",
            kill_switch_id=killed.kill_switch.id if killed else None,
            reason=DRAINED,
            occurred_at=kill_at + k * MINUTES,
            ran_for_ms=1200.0 + k,
        )  # fmt: skip
        for k in range(2)
    ]
    store.add_interventions(ORG, refusals + stopped)


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Story]:
    directory = tmp_path_factory.mktemp("timeline")
    database_url = f"sqlite:///{directory / 'agentguard.db'}"
    now = utcnow().replace(second=0, microsecond=0)
    now -= (now.minute % 5) * MINUTES  # the story's steps fall in the page's 5-minute buckets
    clock = Clock(now)
    writer = KillSwitchServer(database_url, clock=clock)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(killstate, "utcnow", clock)  # kills and revives at the story's times
        write_history(writer, clock, now)
    operator = writer.create_key(ORG, owner="dana", scopes=["operator"])
    agent = writer.create_key(ORG, owner="fleet", scopes=["agent"], agents=["*"])
    writer.close()
    env = {"AGENTGUARD_DATABASE_URL": database_url}
    process = serve(uvicorn("agentguard.server.asgi:create_app", "--factory"),
                    directory / "server.log", env)  # fmt: skip
    shots = os.environ.get("AGENTGUARD_SCREENSHOT_DIR")
    screenshots = Path(shots) if shots else directory
    screenshots.mkdir(parents=True, exist_ok=True)
    try:
        yield Story(process.url, operator, agent, screenshots)
    finally:
        stop(process)


def timeline(page: Page, agent: str) -> Any:
    return page.locator(f'#timeline-list > li[data-agent="{agent}"]')


def buckets_with(series: dict[str, Any], field: str) -> int:
    return sum(1 for p in series["points"] if p[field] > 0)


def test_each_agent_has_a_timeline_with_its_kills_and_revives(
    story: Story, open_page: Callable[..., Page]
) -> None:
    page = open_page(DESKTOP)
    sign_in(page, story.url, story.operator, "dana")
    expect(page.locator("#timeline-list > li")).to_have_count(3)
    expect(page.locator("#timeline-list > li .agent-id")).to_have_text(list(AGENTS))

    # The bars are the series the API answers (5-minute buckets on a wide screen).
    for agent in AGENTS:
        series = story.api("GET", f"agents/{agent}/series", params={"step": "5m"}).json()
        chart = timeline(page, agent).locator("svg.timeline-chart")
        expect(chart).to_be_visible()
        refused = chart.locator(".bars-refused")
        assert refused.get_attribute("data-bars") == str(buckets_with(series, "refused"))
        executed = chart.locator(".bars-executed").get_attribute("data-bars")
        assert executed == str(buckets_with(series, "executed"))
        cancelled = chart.locator(".bars-cancelled").get_attribute("data-bars")
        assert cancelled == str(buckets_with(series, "cancelled"))
        assert chart.locator(".cost-line").get_attribute("d").count("L") == 287
    mailer = timeline(page, "email-campaign")
    assert mailer.locator(".bars-refused").get_attribute("data-bars") == "9"
    assert mailer.locator(".bars-cancelled").get_attribute("data-bars") == "1"
    expect(mailer.locator(".timeline-totals")).to_contain_text("27 refused · 2 stopped")

    # Kill and revive markers, each saying who and why; the span between them is shaded.
    markers = mailer.locator("g.marker")
    expect(markers).to_have_count(2)
    assert [markers.nth(i).get_attribute("data-kind") for i in range(2)] == ["kill", "revive"]
    kill_title = markers.nth(0).locator("title").text_content() or ""
    assert kill_title.startswith("Killed agent “\u2068email-campaign\u2069” at ")
    assert kill_title.endswith(f"by \u2068alice\u2069: \u2068{DRAINED}\u2069")
    revive_title = markers.nth(1).locator("title").text_content() or ""
    assert "by \u2068bob\u2069" in revive_title and f"killed for: \u2068{DRAINED}" in revive_title
    expect(mailer.locator(".killed-span")).to_have_count(1)
    billing = timeline(page, "billing-sync").locator("g.marker title")
    expect(billing).to_have_count(2)
    expect(billing.first).to_contain_text("Killed tool “\u2068send_email\u2069”")
    expect(billing.first).to_contain_text(BOUNCING)
    expect(timeline(page, "support-triage").locator("g.marker")).to_have_count(0)
    # The same, in words under the chart (touch screens have no hover).
    events = mailer.locator(".timeline-event")
    expect(events).to_have_count(2)
    expect(events.first).to_contain_text("Revived")
    expect(events.first).to_contain_text("by bob")
    expect(events.nth(1)).to_contain_text(f"by alice{DRAINED}")

    # Hovering a marker lands on it: the browser shows its <title> as the tooltip.
    markers.nth(0).hover()  # scrolled into view, the pointer on its middle
    box = markers.nth(0).bounding_box()
    assert box is not None
    hovered = page.evaluate(
        """([x, y]) => {
            const node = document.elementFromPoint(x, y).closest("g.marker");
            return node && node.querySelector("title").textContent;
        }""",
        [box["x"] + box["width"] / 2, box["y"] + box["height"] / 2],
    )
    assert hovered == kill_title
    expect(page.locator("g.marker:hover")).to_have_count(1)

    # The organization's refusals at the top: a sparkline of 15-minute buckets and the total.
    org = story.api("GET", "series", params={"step": "15m"}).json()
    assert org["totals"]["refused"] == 27 + 9
    expect(page.locator("#pulse")).to_be_visible()
    expect(page.locator("#pulse-total")).to_have_text(str(org["totals"]["refused"]))
    line = page.locator("#pulse svg.sparkline .spark-line").get_attribute("d") or ""
    assert line.count("L") == len(org["points"]) - 1 == 95
    page.evaluate("document.activeElement && document.activeElement.blur()")
    page.mouse.move(0, 0)
    page.locator("#timeline-panel").screenshot(
        path=str(story.screenshots / "console-timeline.png"), animations="disabled"
    )

    # A kill now shows on its agent's timeline without a reload, and so does the revive.
    body = {"target_type": "agent", "target_id": "support-triage", "reason": "Answering in Latin"}
    assert story.api("POST", "kill-switch/kill", json=body).status_code == 200
    triage = timeline(page, "support-triage").locator("g.marker")
    expect(triage).to_have_count(1)
    expect(triage.locator("title")).to_contain_text("Answering in Latin")
    expect(triage.locator("title")).to_contain_text("dana (key ag_")
    revive = {"target_type": "agent", "target_id": "support-triage"}
    assert story.api("POST", "kill-switch/revive", json=revive).status_code == 200
    expect(triage).to_have_count(2)
    assert page.evaluate("window.__not_reloaded") is True


def test_timelines_on_a_phone(story: Story, open_page: Callable[..., Page]) -> None:
    page = open_page(PHONE)
    sign_in(page, story.url, story.operator, "dana")
    expect(page.locator("#timeline-list > li")).to_have_count(3)
    chart = timeline(page, "email-campaign").locator("svg.timeline-chart")
    # 15-minute buckets on a narrow screen, and nothing wider than it.
    assert chart.locator(".cost-line").get_attribute("d").count("L") == 95
    expect(chart.locator("g.marker")).to_have_count(2)
    assert float(chart.get_attribute("width") or 0) <= 390
    expect(page.locator("#pulse svg.sparkline")).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= 390


def test_a_key_that_cannot_read_sees_no_timelines(
    story: Story, open_page: Callable[..., Page]
) -> None:
    """An agent key has no read scope: the page asks for no series and says why."""
    page = open_page(DESKTOP)
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url) if "series" in r.url else None)
    sign_in(page, story.url, story.agent, "fleet")
    expect(page.locator("#timeline-note")).to_contain_text("needs the read or operator scope")
    expect(page.locator("#pulse")).to_be_hidden()
    expect(page.locator("#timeline-list > li")).to_have_count(0)
    assert asked == []
