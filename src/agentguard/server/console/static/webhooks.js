/* Webhooks (admins only): the endpoints told when a kill switch fires, each one's delivery
   log, a test event, and adding and removing them. */
import { API, HttpError, call, query } from "./api.js";
import { confirmAction } from "./dialog.js";
import { byId, clear, el, fill, isolate, setMessage, show, userText } from "./dom.js";
import { duration, numberFormat, timeNode } from "./format.js";
import { state } from "./state.js";
import { announce } from "./status.js";

// The events a webhook may subscribe to (agentguard.protocol.WEBHOOK_EVENTS), by default all.
const EVENTS = [
  "kill",
  "revive",
  "rule.tripped",
  "rule.observed",
  "ack.timeout",
  "fail_closed",
  "drill.failed",
];
const FORMATS = { standard: "Standard", slack: "Slack", pagerduty: "PagerDuty" };
const STATUSES = { pending: "Pending", delivered: "Delivered", failed: "Given up" };
const LOG_SIZE = 20;

export function canManageWebhooks() {
  return Boolean(state.session && state.session.can_manage_webhooks);
}

export function loadWebhooks() {
  show(byId("webhooks-panel"), canManageWebhooks());
  if (!canManageWebhooks()) return Promise.resolve();
  const generation = state.generation;
  return call("GET", API + "webhooks" + query({ limit: 100 })).then(
    (page) => {
      if (generation !== state.generation) return;
      state.webhooks = page.data;
      renderWebhooks();
    },
    (error) => {
      if (error instanceof HttpError && error.status !== 401) {
        setMessage(byId("webhooks-empty"), "The webhooks are unavailable: " + error.message);
      }
    }
  );
}

function renderWebhooks() {
  const list = byId("webhooks-list");
  const hooks = state.webhooks || [];
  clear(list);
  for (const hook of hooks) list.append(webhookItem(hook));
  byId("webhooks-count").textContent = String(hooks.length);
  setMessage(
    byId("webhooks-empty"),
    hooks.length ? "" : "No webhooks: nobody is notified when a kill switch fires."
  );
  for (const id of state.openLogs) {
    if (hooks.some((hook) => hook.id === id)) loadLog(id);
  }
}

function webhookItem(hook) {
  const label = hook.name || hook.url;
  const open = state.openLogs.has(hook.id);
  const head = el(
    "div",
    { class: "webhook-head" },
    el("span", { class: "badge format-" + hook.format, text: FORMATS[hook.format] || hook.format }),
    " ",
    hook.name ? userText("span", "webhook-name", hook.name) : null,
    userText("code", "webhook-url", hook.url),
    el(
      "span",
      { class: "webhook-actions" },
      el("button", {
        type: "button",
        class: "button small",
        text: "Send test",
        "aria-label": "Send a test event to " + label,
        dataset: { action: "test", webhookId: hook.id },
      }),
      el("button", {
        type: "button",
        class: "button small ghost",
        text: open ? "Hide deliveries" : "Deliveries",
        "aria-expanded": open ? "true" : "false",
        "aria-controls": "log-" + hook.id,
        "aria-label": (open ? "Hide the deliveries of " : "Deliveries of ") + label,
        dataset: { action: "log", webhookId: hook.id },
      }),
      el("button", {
        type: "button",
        class: "button small danger",
        text: "Remove",
        "aria-label": "Remove the webhook " + label,
        dataset: { action: "remove", webhookId: hook.id },
      })
    )
  );
  const events = el("p", { class: "meta webhook-events" }, "Events: ", hook.events.join(", "));
  const last = hook.last_delivery;
  const summary = el(
    "p",
    { class: "meta webhook-summary" },
    numberFormat.format(hook.pending) + " pending · last delivery: ",
    last ? deliveryStatus(last) : el("span", { class: "muted", text: "none yet" }),
    last ? " · " : null,
    last ? timeNode(last.last_attempt_at || last.created_at) : null
  );
  const log = el("div", { id: "log-" + hook.id, class: "webhook-log", hidden: !open });
  return el("li", { class: "webhook", dataset: { webhookId: hook.id } }, head, events, summary, log);
}

function deliveryStatus(delivery) {
  return el("span", {
    class: "badge delivery-" + delivery.status,
    text: STATUSES[delivery.status] || delivery.status,
  });
}

function loadLog(webhookId) {
  const generation = state.generation;
  const path = API + "webhooks/" + encodeURIComponent(webhookId) + "/deliveries";
  call("GET", path + query({ limit: LOG_SIZE })).then(
    (page) => {
      if (generation !== state.generation) return;
      const box = byId("log-" + webhookId);
      if (box) renderLog(box, page);
    },
    (error) => {
      const box = byId("log-" + webhookId);
      if (box && error instanceof HttpError && error.status !== 401) {
        fill(box, el("p", { class: "empty", text: "The delivery log is unavailable: " + error.message }));
      }
    }
  );
}

function renderLog(box, page) {
  if (!page.data.length) {
    fill(box, el("p", { class: "empty", text: "No deliveries yet. Send a test to try the endpoint." }));
    return;
  }
  const head = el(
    "tr",
    {},
    ...["Event", "Status", "Attempts", "Answer", "Last attempt", "Last error"].map((name) =>
      el("th", { scope: "col", class: name === "Attempts" ? "num" : null, text: name })
    )
  );
  const rows = page.data.map((d) =>
    el(
      "tr",
      {},
      el("td", { "data-label": "Event" }, el("code", { text: d.event })),
      el("td", { "data-label": "Status" }, deliveryStatus(d)),
      el("td", { class: "num", "data-label": "Attempts", text: numberFormat.format(d.attempts) }),
      el(
        "td",
        { "data-label": "Answer" },
        d.response_status === null ? "—" : String(d.response_status),
        d.duration_ms === null ? null : el("span", { class: "muted", text: " in " + duration(d.duration_ms) })
      ),
      el("td", { "data-label": "Last attempt" }, timeNode(d.last_attempt_at)),
      el(
        "td",
        { class: "delivery-error-cell", "data-label": "Last error" },
        d.error ? userText("span", "delivery-error", d.error) : "—"
      )
    )
  );
  const more = page.count > page.data.length ? "Latest " + page.data.length + " of " + numberFormat.format(page.count) : "";
  fill(box, [
    el("div", { class: "table-wrap" }, el("table", { class: "table deliveries" }, el("thead", {}, head), el("tbody", {}, ...rows))),
    more ? el("p", { class: "meta", text: more }) : null,
  ]);
}

function findHook(webhookId) {
  return (state.webhooks || []).find((hook) => hook.id === webhookId);
}

function sendTest(webhookId) {
  const hook = findHook(webhookId);
  const label = hook ? hook.name || hook.url : webhookId;
  call("POST", API + "webhooks/" + encodeURIComponent(webhookId) + "/test").then(
    () => {
      announce(["Test event queued for ", isolate(label), "."]);
      state.openLogs.add(webhookId);
      loadWebhooks();
      // The sender delivers within a moment: look again for its answer.
      window.setTimeout(() => loadWebhooks(), 1500);
    },
    (error) => {
      if (!(error instanceof HttpError && error.status === 401)) {
        announce(["Could not send a test to ", isolate(label), ": " + error.message]);
      }
    }
  );
}

function remove(webhookId) {
  const hook = findHook(webhookId);
  const label = hook ? hook.name || hook.url : webhookId;
  confirmAction({
    title: ["Remove the webhook ", isolate(label), "?"],
    text: "It will not be told about kills any more, and its delivery log is deleted.",
    confirm: "Remove webhook",
    danger: true,
  }).then((answer) => {
    if (!answer) return;
    call("DELETE", API + "webhooks/" + encodeURIComponent(webhookId)).then(
      () => {
        state.openLogs.delete(webhookId);
        announce(["Removed the webhook ", isolate(label), "."]);
        loadWebhooks();
      },
      (error) => {
        if (error instanceof HttpError && error.status === 404) loadWebhooks();
        else if (!(error instanceof HttpError && error.status === 401)) {
          announce(["Could not remove ", isolate(label), ": " + error.message]);
        }
      }
    );
  });
}

function toggleLog(webhookId) {
  if (state.openLogs.has(webhookId)) state.openLogs.delete(webhookId);
  else state.openLogs.add(webhookId);
  renderWebhooks();
}

function setupForm() {
  const fieldset = byId("webhook-events");
  for (const name of EVENTS) {
    const id = "webhook-event-" + name.replace(/\W/g, "-");
    fieldset.append(
      el(
        "span",
        { class: "check" },
        el("input", { type: "checkbox", id: id, name: "events", value: name, checked: true }),
        el("label", { for: id }, el("code", { text: name }))
      )
    );
  }
  const format = byId("webhook-format");
  format.addEventListener("change", () => show(byId("webhook-routing-field"), format.value === "pagerduty"));
  byId("webhook-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const error = byId("webhook-error");
    const url = byId("webhook-url").value.trim();
    const events = Array.from(fieldset.querySelectorAll("input:checked"), (box) => box.value);
    if (!url) {
      setMessage(error, "Enter the URL to deliver to.");
      byId("webhook-url").focus();
      return;
    }
    if (!events.length) {
      setMessage(error, "Choose at least one event.");
      return;
    }
    setMessage(error, "");
    const body = { url: url, format: format.value, events: events };
    const name = byId("webhook-name").value.trim();
    if (name) body.name = name;
    if (format.value === "pagerduty") body.routing_key = byId("webhook-routing").value.trim();
    call("POST", API + "webhooks", body).then(
      (made) => {
        byId("webhook-form").reset();
        show(byId("webhook-routing-field"), false);
        byId("webhook-add").open = false;
        announce(["Added the webhook ", isolate(made.name || made.url), "."]);
        if (made.secret) {
          fill(byId("webhook-secret-for"), isolate(made.name || made.url));
          byId("webhook-secret-value").textContent = made.secret;
          show(byId("webhook-secret"), true);
        }
        loadWebhooks();
      },
      (failure) => {
        if (!(failure instanceof HttpError && failure.status === 401)) setMessage(error, failure.message);
      }
    );
  });
  byId("webhook-secret-done").addEventListener("click", () => {
    byId("webhook-secret-value").textContent = "";
    show(byId("webhook-secret"), false);
  });
}

export function setupWebhooks() {
  setupForm();
  byId("webhooks-list").addEventListener("click", (event) => {
    const button = event.target.closest("button[data-action]");
    if (!button) return;
    const { action, webhookId } = button.dataset;
    if (action === "test") sendTest(webhookId);
    else if (action === "log") toggleLog(webhookId);
    else if (action === "remove") remove(webhookId);
  });
}
