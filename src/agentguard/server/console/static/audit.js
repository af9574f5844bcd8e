/* The audit log: who killed, revived, created or revoked what. */
import { API, HttpError, call, query } from "./api.js";
import { byId, clear, el, setMessage, userText } from "./dom.js";
import { targetNode, timeNode } from "./format.js";
import { state } from "./state.js";

const ACTIONS = {
  kill: "Kill",
  revive: "Revive",
  "key.create": "Key created",
  "key.revoke": "Key revoked",
  "revive.request": "Revive asked",
  "revive.approve": "Revive approved",
  "revive.reject": "Revive rejected",
  "revive.expire": "Revive request expired",
};

export function loadAudit() {
  if (!state.session.can_read) {
    setMessage(
      byId("audit-empty"),
      "Your credential cannot read the audit log (it needs the read or operator scope)."
    );
    return;
  }
  const generation = state.generation;
  call("GET", API + "audit" + query({ limit: 50 })).then(
    (page) => {
      if (generation !== state.generation) return;
      renderAudit(page.data);
    },
    (error) => {
      if (error instanceof HttpError && error.status !== 401) {
        setMessage(byId("audit-empty"), "The audit log is unavailable: " + error.message);
      }
    }
  );
}

function renderAudit(entries) {
  const list = byId("audit-list");
  clear(list);
  for (const entry of entries) {
    const action = String(entry.action);
    const target =
      entry.target_type && entry.target_id
        ? entry.target_type === "api_key"
          ? userText("code", "", entry.target_id)
          : targetNode(entry.target_type, entry.target_id)
        : null;
    list.append(
      el(
        "li",
        { class: "feed-item" },
        el(
          "div",
          { class: "feed-head" },
          el("span", { class: "badge audit-" + action.replace(".", "-"), text: ACTIONS[action] || action }),
          " ",
          target,
          el("span", { class: "feed-time" }, timeNode(entry.created_at))
        ),
        el("p", { class: "meta" }, "by ", userText("span", "actor", entry.actor)),
        entry.detail ? userText("p", "reason small", entry.detail) : null
      )
    );
  }
  setMessage(byId("audit-empty"), entries.length ? "" : "No operator actions yet.");
}
