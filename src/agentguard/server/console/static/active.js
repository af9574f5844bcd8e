/* The active kill switches, each with how many live instances have acknowledged it. */
import { API, call, query } from "./api.js";
import { byId, clear, el, show, userText } from "./dom.js";
import { newestFirst, targetKey, targetNode, timeNode, typeLabel } from "./format.js";
import { renderAgents } from "./fleet.js";
import { canKill, state } from "./state.js";
import { renderStopAll } from "./stopall.js";

function sortedActive() {
  return Array.from(state.active.values()).sort(newestFirst("killed_at"));
}

/* Show the active kill switches, and the agents they kill. */
export function renderActive() {
  const list = byId("active-list");
  const items = sortedActive();
  clear(list);
  for (const ks of items) list.append(activeItem(ks));
  byId("active-count").textContent = String(items.length);
  show(byId("active-empty"), items.length === 0);
  renderStopAll();
  renderAgents();
}

function activeItem(ks) {
  const head = el("div", { class: "kill-head" }, targetNode(ks.target_type, ks.target_id));
  if (canKill()) {
    // actions.js answers the click (data-action), so this module needs no actions of its own.
    head.append(
      el("button", {
        type: "button",
        class: "button small",
        text: "Revive",
        "aria-label": "Revive " + typeLabel(ks.target_type).toLowerCase() + " " + ks.target_id,
        dataset: { action: "revive", targetType: ks.target_type, targetId: ks.target_id },
      })
    );
  }
  const reason = ks.reason
    ? userText("p", "reason", ks.reason)
    : el("p", { class: "reason none", text: "No reason given" });
  const meta = el(
    "p",
    { class: "meta" },
    "Killed by ",
    userText("span", "actor", ks.killed_by),
    " · ",
    timeNode(ks.killed_at),
    ...(ks.expires_at ? [" · expires ", timeNode(ks.expires_at)] : [])
  );
  const item = el("li", { class: "kill", dataset: { targetType: ks.target_type } }, head, reason, meta);
  const ack = state.acks.get(targetKey(ks.target_type, ks.target_id));
  if (ack && ack.kill_switch_id === ks.id) item.append(ackNode(ack));
  return item;
}

function ackNode(ack) {
  const complete = ack.acknowledged >= ack.live;
  const instances = ack.live === 1 ? "instance" : "instances";
  let text = `Acknowledged by ${ack.acknowledged}/${ack.live} ${instances}`;
  if (ack.live === 0) text = "No live instances to acknowledge";
  if (ack.live > 0 && complete && typeof ack.slowest_ms === "number") {
    text += " (slowest " + Math.round(ack.slowest_ms) + " ms)";
  }
  return el("p", { class: "ack " + (complete ? "ack-done" : "ack-pending"), text: text });
}

export function loadAcks() {
  if (!state.session) return;
  const generation = state.generation;
  for (const ks of sortedActive().slice(0, 50)) {
    const key = targetKey(ks.target_type, ks.target_id);
    const target = query({ target_type: ks.target_type, target_id: ks.target_id });
    call("GET", API + "kill-switch/acks" + target).then(
      (ack) => {
        if (generation !== state.generation) return;
        state.acks.set(key, ack);
        if (state.active.has(key)) renderActive();
      },
      () => state.acks.delete(key)
    );
  }
}
