/* The end of a session (signed out, expired or revoked): stop everything, show the sign-in. */
import { byId, clear, show } from "./dom.js";
import { state } from "./state.js";
import { banner, setConnection } from "./status.js";

export function showSignIn() {
  show(byId("console"), false);
  show(byId("identity"), false);
  show(byId("sign-in"), true);
  setConnection("signedout");
  byId("api-key").focus();
}

export function stop() {
  state.generation += 1;
  if (state.source) state.source.close();
  state.source = null;
  state.timers.forEach(window.clearInterval);
  state.timers = [];
  window.clearTimeout(state.reconnectTimer);
  state.reconnectTimer = null;
  state.session = null;
  state.active = new Map();
  state.acks = new Map();
  state.revives = [];
  state.agents = null;
  window.clearTimeout(state.timelineTimer);
  state.timelineTimer = null;
  state.timelinesLoadedAt = 0;
  state.series = new Map();
  state.orgSeries = null;
  state.timelineError = "";
  state.interventions = [];
  state.webhooks = null;
  state.openLogs = new Set();
  state.syncedAt = null;
  state.retry = 0;
  for (const id of ["active-list", "agents-body", "iv-list", "audit-list", "timeline-list", "pulse-chart", "webhooks-list", "revives-list"]) {
    clear(byId(id));
  }
  show(byId("pulse"), false);
  show(byId("revives-panel"), false);
  show(byId("webhooks-panel"), false);
  byId("webhook-secret-value").textContent = "";
  show(byId("webhook-secret"), false);
}

export function sessionEnded(detail) {
  stop();
  showSignIn();
  banner(
    "warning",
    "Your console session has ended" + (detail ? " (" + detail + ")" : "") + ". Sign in again to continue."
  );
}
