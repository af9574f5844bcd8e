/* The agents table: health, instances, totals and cost, read from the server. */
import { API, HttpError, Unreachable, call } from "./api.js";
import { byId, clear, el, setMessage, show, userText } from "./dom.js";
import { ago, lastLine, moneyFormat, newestFirst, numberFormat, targetKey, timeNode } from "./format.js";
import { canKill, state } from "./state.js";

const HEALTH = ["active", "killed", "stale", "crashed", "exited"];

/* Read the agents; the promise settles once they are shown (or could not be read). */
export function loadAgents() {
  const note = byId("agents-note");
  if (!state.session.can_read) {
    setMessage(note, "Your credential cannot read agent health (it needs the read or operator scope).");
    show(byId("agents-table"), false);
    return Promise.resolve();
  }
  const generation = state.generation;
  return call("GET", API + "agents").then(
    (page) => {
      if (generation !== state.generation) return;
      state.agents = page.data;
      renderAgents();
    },
    (error) => {
      if (generation !== state.generation || error instanceof Unreachable) return;
      if (error instanceof HttpError && error.status === 401) return;
      setMessage(note, "Agent health is unavailable: " + error.message);
    }
  );
}

export function renderAgents() {
  const agents = state.agents;
  if (!agents || !state.session) return;
  const body = byId("agents-body");
  clear(body);
  for (const agent of agents) body.append(agentRow(agent));
  const count = byId("agents-count");
  count.textContent = String(agents.length);
  show(count, true);
  show(byId("agents-table"), agents.length > 0);
  setMessage(
    byId("agents-note"),
    agents.length ? "" : "No agents have reported yet. Agents appear here once a guard sends heartbeats."
  );
}

function agentRow(agent) {
  const killed = state.active.get(targetKey("agent", agent.agent_id));
  let health = agent.health;
  if (killed && health !== "exited" && health !== "crashed") health = "killed";
  const badgeClass = HEALTH.indexOf(health) >= 0 ? health : "unknown";
  const instances = agent.instances || [];
  const live = instances.filter((i) => i.health === "active" || i.health === "killed").length;
  const actions = el("td", { class: "actions", "data-label": "" });
  if (canKill()) {
    // actions.js answers the click (data-action), so this module needs no actions of its own.
    const target = { targetType: "agent", targetId: agent.agent_id };
    actions.append(
      killed
        ? el("button", {
            type: "button",
            class: "button small",
            text: "Revive",
            "aria-label": "Revive agent " + agent.agent_id,
            dataset: { action: "revive", ...target },
          })
        : el("button", {
            type: "button",
            class: "button small danger",
            text: "Kill",
            "aria-label": "Kill agent " + agent.agent_id,
            dataset: { action: "kill", ...target },
          })
    );
  }
  const refused = Number(agent.refused) || 0;
  const cancelled = Number(agent.cancelled) || 0;
  return el(
    "tr",
    { dataset: { agent: agent.agent_id } },
    el("th", { scope: "row", class: "agent-id" }, userText("span", "", agent.agent_id), labelsNode(instances)),
    el(
      "td",
      { "data-label": "Health" },
      el("span", { class: "badge health health-" + badgeClass, text: health }),
      drillNode(agent.last_drill),
      crashNode(instances)
    ),
    el("td", {
      class: "num",
      "data-label": "Instances",
      title: live + " live of " + instances.length,
      text: numberFormat.format(instances.length),
    }),
    el("td", {
      class: "num",
      "data-label": "Executed",
      text: numberFormat.format(Number(agent.executed) || 0),
    }),
    el("td", {
      class: "num" + (refused > 0 ? " refused" : ""),
      "data-label": "Refused",
      text: numberFormat.format(refused),
    }),
    el("td", {
      class: "num" + (cancelled > 0 ? " refused" : ""),
      "data-label": "Stopped",
      title: "Calls a kill stopped while they ran",
      text: numberFormat.format(cancelled),
    }),
    el("td", {
      class: "num",
      "data-label": "Cost",
      text: moneyFormat.format(Number(agent.cost_usd) || 0),
    }),
    el("td", { "data-label": "Last seen" }, timeNode(agent.last_seen)),
    actions
  );
}

/* The agent's last drill: "armed 2 h ago" when every live instance answered it, else
   "not armed", with the counts, the slowest answer and who did not answer in the tooltip. */
function drillNode(drill) {
  if (!drill) return null;
  const armed = drill.status === "armed";
  const when = ago(drill.finished_at || drill.started_at);
  let title =
    (armed ? "Armed: " : "Not armed: ") +
    drill.acknowledged + "/" + drill.live + " live instances acknowledged the last drill";
  if (drill.slowest_ms !== null && drill.slowest_ms !== undefined) {
    title += " within " + numberFormat.format(Math.round(drill.slowest_ms)) + " ms";
  }
  const silent = drill.not_answering || [];
  if (silent.length) title += "; not answering: " + silent.join(", ");
  return el("span", {
    class: "drill-badge " + (armed ? "drill-armed" : "drill-failed"),
    title: title,
    "aria-label": title,
    text: (armed ? "armed " : "not armed ") + when,
  });
}

/* The labels of an agent's instances (what selector kills match), each key=value once. */
function labelsNode(instances) {
  const pairs = new Set();
  for (const instance of instances) {
    for (const [key, value] of Object.entries(instance.labels || {})) pairs.add(key + "=" + value);
  }
  if (!pairs.size) return null;
  return el(
    "span",
    { class: "labels", "aria-label": "Labels" },
    ...Array.from(pairs)
      .sort()
      .map((pair) => userText("span", "label", pair))
  );
}

/* A crashed instance's error, by its last line (the whole report in the tooltip). */
function crashNode(instances) {
  const crashed = instances
    .filter((i) => i.status === "crashed" && i.error)
    .sort(newestFirst("last_seen"));
  if (!crashed.length) return null;
  const node = userText("span", "crash-error", lastLine(crashed[0].error));
  node.title = crashed[0].error;
  return node;
}
