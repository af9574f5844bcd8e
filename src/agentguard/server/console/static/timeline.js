/* The story at a glance: the organization's refusals over the last 24 hours at the top, and
 * each agent's last 24 hours (calls, cost, kills and revives), from the series endpoints. */
import { API, Unreachable, call, query } from "./api.js";
import { describeEvent, sparkline, timelineChart, totalsText } from "./charts.js";
import { byId, clear, el, isolate, setMessage, show, userText } from "./dom.js";
import { numberFormat, timeNode } from "./format.js";
import { state } from "./state.js";

const WINDOW = "24h";
const MIN_GAP_MS = 3000; // between two loads: a burst of refusals asks once
const MAX_AGENTS = 50;
const EVENTS_LISTED = 3;
const SPARK_HEIGHT = 40;

/* Finer buckets when there is room for them. */
function stepFor(width) {
  return width >= 640 ? "5m" : "15m";
}

export function setupTimelines() {
  const list = byId("timeline-list");
  let width = 0;
  new ResizeObserver(() => {
    if (Math.abs(list.clientWidth - width) < 8) return;
    width = list.clientWidth;
    renderTimelines();
    renderPulse();
  }).observe(list);
}

export function loadTimelines() {
  if (!state.session) return;
  if (!state.session.can_read) {
    show(byId("pulse"), false);
    setMessage(
      byId("timeline-note"),
      "Your credential cannot read the fleet's history (it needs the read or operator scope)."
    );
    return;
  }
  const wait = state.timelinesLoadedAt + MIN_GAP_MS - Date.now();
  if (wait > 0) {
    if (state.timelineTimer === null) {
      state.timelineTimer = window.setTimeout(() => {
        state.timelineTimer = null;
        loadTimelines();
      }, wait);
    }
    return;
  }
  state.timelinesLoadedAt = Date.now();
  const generation = state.generation;
  const step = stepFor(byId("timeline-list").clientWidth);
  const agents = (state.agents || []).slice(0, MAX_AGENTS).map((a) => a.agent_id);
  const org = call("GET", API + "series" + query({ window: WINDOW, step: "15m" }));
  const each = agents.map((id) =>
    call("GET", API + "agents/" + encodeURIComponent(id) + "/series" + query({ window: WINDOW, step: step }))
  );
  Promise.allSettled([org, ...each]).then(([pulse, ...answers]) => {
    if (generation !== state.generation) return;
    if (pulse.status === "fulfilled") state.orgSeries = pulse.value;
    const series = new Map();
    answers.forEach((answer, i) => {
      if (answer.status === "fulfilled") series.set(agents[i], answer.value);
      else if (state.series.has(agents[i])) series.set(agents[i], state.series.get(agents[i]));
    });
    state.series = series;
    // Unreachable and signed out say so elsewhere; an agent gone meanwhile (404) is just left out.
    const failed = [pulse, ...answers].find(
      (a) => a.status === "rejected" && !(a.reason instanceof Unreachable) && ![401, 404].includes(a.reason.status)
    );
    state.timelineError = failed ? "The fleet's history is unavailable: " + failed.reason.message : "";
    renderPulse();
    renderTimelines();
  });
}

/* The organization's refusals: a sparkline and its total. */
function renderPulse() {
  const data = state.orgSeries;
  const box = byId("pulse-chart");
  if (!data) return;
  show(byId("pulse"), true);
  const total = data.totals.refused;
  byId("pulse-total").textContent = numberFormat.format(total);
  const lastHour = data.points.slice(-4).reduce((sum, p) => sum + p.refused, 0);
  byId("pulse-detail").textContent =
    (total === 1 ? "call refused" : "calls refused") + " · " + numberFormat.format(lastHour) + " in the last hour";
  const width = Math.max(box.clientWidth, 120);
  box.replaceChildren(sparkline(data, width, SPARK_HEIGHT));
}

function renderTimelines() {
  const list = byId("timeline-list");
  if (!state.session || !state.session.can_read || !state.agents) return;
  const width = list.clientWidth;
  if (width === 0) return; // not laid out yet: the resize observer draws it
  clear(list);
  for (const agent of state.agents.slice(0, MAX_AGENTS)) {
    const series = state.series.get(agent.agent_id);
    if (series) list.append(timelineItem(agent.agent_id, series, width));
  }
  let note = state.timelineError;
  if (!note && !state.agents.length) note = "No agents have reported yet: their last 24 hours show here.";
  if (!note && state.agents.length > MAX_AGENTS) note = "The first " + MAX_AGENTS + " agents, by id.";
  setMessage(byId("timeline-note"), note);
}

function timelineItem(agentId, series, width) {
  const totals = totalsText(series.totals);
  const label = "Agent \u2068" + agentId + "\u2069, last 24 hours: " + totals + eventsSummary(series);
  return el(
    "li",
    { class: "timeline", dataset: { agent: agentId } },
    el(
      "div",
      { class: "timeline-head" },
      userText("span", "agent-id", agentId),
      el("span", { class: "timeline-totals", text: totals })
    ),
    timelineChart(series, width, label),
    eventList(series)
  );
}

function eventsSummary(series) {
  const kills = series.events.filter((e) => e.kind === "kill").length;
  const revives = series.events.length - kills;
  if (!series.events.length) return "";
  return "; " + kills + (kills === 1 ? " kill, " : " kills, ") + revives + (revives === 1 ? " revive" : " revives");
}

/* The newest kills and revives in words: what hovering a marker shows, for touch screens too. */
function eventList(series) {
  if (!series.events.length) return null;
  const newest = series.events.slice(-EVENTS_LISTED).reverse();
  const list = el("ul", { class: "timeline-events" });
  for (const event of newest) {
    list.append(
      el(
        "li",
        { class: "timeline-event event-" + event.kind, title: describeEvent(event) },
        el("span", { class: "event-mark", "aria-hidden": "true" }),
        el("span", { class: "event-kind", text: event.kind === "kill" ? "Killed" : "Revived" }),
        " ",
        timeNode(event.at),
        " by ",
        userText("span", "actor", event.actor),
        event.reason
          ? el("span", { class: "event-reason" }, event.kind === "revive" ? "killed for: " : "", isolate(event.reason))
          : null
      )
    );
  }
  const more = series.events_count - newest.length;
  if (more > 0) {
    const text = "and " + numberFormat.format(more) + " earlier";
    list.append(el("li", { class: "timeline-event more muted", text: text }));
  }
  return list;
}
