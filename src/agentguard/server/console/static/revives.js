/* Revive requests: revives waiting for another person's approval (serve --revive-approvals).
   Each pending request shows who asked and why, with Approve and Reject for other operators
   and Withdraw for its requester (the server refuses a requester's own approval anyway). */
import { renderActive } from "./active.js";
import { API, HttpError, call, query } from "./api.js";
import { confirmAction } from "./dialog.js";
import { byId, clear, el, show, userText } from "./dom.js";
import { describe, targetKey, targetNode, timeNode, typeLabel } from "./format.js";
import { queueRefresh } from "./refresh.js";
import { canKill, state } from "./state.js";
import { announce } from "./status.js";

export function loadRevives() {
  if (!state.session || !state.session.can_read) return;
  const generation = state.generation;
  call("GET", API + "kill-switch/revive-requests" + query({ limit: 100 })).then(
    (page) => {
      if (generation !== state.generation) return;
      state.revives = page.data;
      renderRevives();
    },
    () => {} // an older server, or an outage: the panel stays as it was
  );
}

/* Whether the signed-in user asked for it: records name a key's user as "user (key id)". */
function mine(request) {
  const user = state.session && state.session.user_id;
  return Boolean(user) && (request.requested_by === user || request.requested_by.startsWith(user + " (key "));
}

export function renderRevives() {
  const list = byId("revives-list");
  const items = state.revives || [];
  clear(list);
  for (const request of items) list.append(reviveItem(request));
  byId("revives-count").textContent = String(items.length);
  show(byId("revives-panel"), items.length > 0);
}

function button(text, label, action, request) {
  return el("button", {
    type: "button",
    class: "button small" + (action === "approve" ? " primary" : ""),
    text: text,
    "aria-label": label + " " + typeLabel(request.target_type).toLowerCase() + " " + request.target_id,
    dataset: { reviveAction: action, requestId: request.id },
  });
}

function reviveItem(request) {
  const head = el("div", { class: "kill-head" }, targetNode(request.target_type, request.target_id));
  const own = mine(request);
  if (canKill()) {
    const buttons = el("span", { class: "revive-actions" });
    if (own) buttons.append(button("Withdraw", "Withdraw the revive request of", "reject", request));
    else {
      buttons.append(button("Approve", "Approve the revive of", "approve", request));
      buttons.append(button("Reject", "Reject the revive of", "reject", request));
    }
    head.append(buttons);
  }
  const others = request.people_required - 1;
  const approvals = request.approvals.length;
  const meta = el(
    "p",
    { class: "meta" },
    "Revive asked by ",
    userText("span", "actor", request.requested_by),
    " · ",
    timeNode(request.requested_at),
    ` · approved by ${approvals} of ${others} · expires `,
    timeNode(request.expires_at)
  );
  const reason = request.reason
    ? userText("p", "reason", request.reason)
    : el("p", { class: "reason none", text: "No reason given" });
  const note = own
    ? el("p", { class: "ack ack-pending", text: "Your request: another operator must approve it." })
    : null;
  return el("li", { class: "kill revive-request", dataset: { requestId: request.id } }, head, reason, meta, note);
}

function answer(request, action) {
  const what = describe(request.target_type, request.target_id);
  const approving = action === "approve";
  confirmAction({
    title: [approving ? "Approve the revive of " : "Reject the revive of ", what, "?"],
    text: approving
      ? "If yours is the last approval needed, the kill is revived now and its instances may make tool calls again."
      : "The kill stays in force; the request is closed.",
    confirm: approving ? "Approve" : mine(request) ? "Withdraw" : "Reject",
    danger: false,
    withReason: true,
  }).then((given) => {
    if (!given) return;
    const body = given.reason ? { reason: given.reason } : {};
    call("POST", API + "kill-switch/revive-requests/" + encodeURIComponent(request.id) + "/" + action, body).then(
      (closed) => {
        if (closed.status === "approved") {
          state.active.delete(targetKey(request.target_type, request.target_id));
          renderActive();
          announce(["Approved: revived ", what, "."]);
        } else if (closed.status === "pending") {
          announce(["Approved the revive of ", what, "; it waits for more approvals."]);
        } else {
          announce(["Rejected the revive of ", what, "; the kill stays."]);
        }
        loadRevives();
        queueRefresh();
      },
      (error) => {
        if (!(error instanceof HttpError && error.status === 401)) {
          announce(["Could not " + action + " the revive of ", what, ": " + error.message]);
        }
        loadRevives();
      }
    );
  });
}

export function setupReviveActions() {
  byId("revives-list").addEventListener("click", (event) => {
    const target = event.target.closest("button[data-revive-action]");
    if (!target) return;
    const request = (state.revives || []).find((r) => r.id === target.dataset.requestId);
    if (request) answer(request, target.dataset.reviveAction);
  });
}
