/* Interventions: refused tool calls, and calls a kill stopped while they ran, streamed as they
   happen and filtered by target. */
import { API, HttpError, call, query } from "./api.js";
import { byId, clear, el, setMessage, userText } from "./dom.js";
import { duration, newestFirst, targetNode, timeNode } from "./format.js";
import { state } from "./state.js";

const FEED_LIMIT = 100;

function ivFilter() {
  return { type: byId("iv-type").value, id: byId("iv-target").value.trim() };
}

function matches(item, filter) {
  if (filter.type && item.target_type !== filter.type) return false;
  if (filter.id && item.target_id !== filter.id) return false;
  return true;
}

/* The latest interventions; `merge` adds them to those shown (after a reconnect). */
export function loadInterventions(merge) {
  const panel = byId("interventions-panel");
  if (!state.session.can_read) {
    setMessage(
      byId("iv-empty"),
      "Your credential cannot read interventions (it needs the read or operator scope)."
    );
    byId("iv-filter").hidden = true;
    return;
  }
  panel.dataset.loading = "true";
  const filter = ivFilter();
  const generation = state.generation;
  const params = query({ limit: FEED_LIMIT, target_type: filter.type, target_id: filter.id });
  call("GET", API + "interventions" + params).then(
    (page) => {
      if (generation !== state.generation) return;
      const now = ivFilter();
      if (now.type !== filter.type || now.id !== filter.id) return; // a newer filter is loading
      delete panel.dataset.loading;
      if (merge) {
        addInterventions(page.data);
        return;
      }
      state.interventions = page.data;
      renderInterventions();
    },
    (error) => {
      delete panel.dataset.loading;
      if (error instanceof HttpError && error.status !== 401) {
        setMessage(byId("iv-empty"), "Interventions are unavailable: " + error.message);
      }
    }
  );
}

export function addInterventions(items) {
  if (!state.session || !state.session.can_read) return;
  const filter = ivFilter();
  const known = new Set(state.interventions.map((i) => i.id));
  for (const item of items) {
    if (matches(item, filter) && !known.has(item.id)) state.interventions.push(item);
  }
  state.interventions.sort(newestFirst("occurred_at"));
  state.interventions = state.interventions.slice(0, FEED_LIMIT * 2);
  renderInterventions();
}

function renderInterventions() {
  const list = byId("iv-list");
  clear(list);
  for (const item of state.interventions) {
    const scope = [];
    for (const [kind, id] of [
      ["model", item.model],
      ["agent", item.agent_id],
      ["run", item.run_id],
      ["mission", item.mission_id],
      ["instance", item.instance_id],
    ]) {
      if (!id) continue;
      if (scope.length) scope.push(" \u00b7 ");
      scope.push(kind + " ", userText("span", "scope-id", id));
    }
    const unavailable = item.type === "UNAVAILABLE"; // refused without a kill: not a block
    const cancelled = item.type === "CANCELLED"; // stopped by the kill while it ran
    const ran = cancelled ? duration(item.ran_for_ms) : "";
    list.append(
      el(
        "li",
        { class: "feed-item" },
        el(
          "div",
          { class: "feed-head" },
          el("span", {
            class: unavailable ? "badge unavailable" : cancelled ? "badge cancelled" : "badge block",
            text:
              item.type === "HARD_BLOCK"
                ? "Blocked"
                : unavailable
                  ? "Unavailable"
                  : cancelled
                    ? "Stopped"
                    : item.type,
          }),
          " ",
          userText("code", "action", item.action),
          el("span", {
            class: "muted",
            text: unavailable
              ? "refused, no kill state for"
              : cancelled
                ? (ran ? "stopped after " + ran + " by" : "stopped by") + " the kill of"
                : "blocked by",
          }),
          targetNode(item.target_type, item.target_id),
          el("span", { class: "feed-time" }, timeNode(item.occurred_at))
        ),
        scope.length ? el("p", { class: "meta" }, ...scope) : null,
        item.reason ? userText("p", "reason small", item.reason) : null
      )
    );
  }
  const filter = ivFilter();
  setMessage(
    byId("iv-empty"),
    state.interventions.length
      ? ""
      : filter.type || filter.id
        ? "No interventions match this target."
        : "No interventions yet. A refused tool call of a killed target, or one a kill stopped, appears here."
  );
}

export function setupFilter() {
  let timer = null;
  function changed() {
    window.clearTimeout(timer);
    timer = window.setTimeout(loadInterventions, 250);
  }
  byId("iv-type").addEventListener("change", changed);
  byId("iv-target").addEventListener("input", changed);
  byId("iv-filter").addEventListener("submit", (event) => {
    event.preventDefault();
    window.clearTimeout(timer);
    loadInterventions();
  });
}
