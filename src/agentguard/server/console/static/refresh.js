/* Agents, acknowledgements, revive requests, the audit log, the timelines and the webhooks are read, not
   streamed: refresh them soon after a change, the fleet every few seconds and the timelines
   and webhooks every half minute while the page is visible. */
import { loadAcks } from "./active.js";
import { loadAudit } from "./audit.js";
import { loadAgents } from "./fleet.js";
import { loadRevives } from "./revives.js";
import { state } from "./state.js";
import { loadTimelines } from "./timeline.js";
import { loadWebhooks } from "./webhooks.js";

const REFRESH_MS = 5000;
const TIMELINES_MS = 30000;

export function queueRefresh() {
  if (state.refreshQueued) return;
  state.refreshQueued = true;
  window.setTimeout(() => {
    state.refreshQueued = false;
    refresh();
  }, 150);
}

function refresh() {
  if (!state.session) return;
  loadAgents().then(loadTimelines);
  loadAcks();
  loadRevives();
  loadAudit();
  loadWebhooks(); // a kill or revive queues deliveries
}

export function startRefreshing() {
  refresh();
  state.timers.push(
    window.setInterval(() => {
      if (!document.hidden) {
        loadAgents();
        loadAcks();
        loadRevives();
      }
    }, REFRESH_MS),
    window.setInterval(() => {
      if (!document.hidden) {
        loadTimelines();
        loadWebhooks();
      }
    }, TIMELINES_MS)
  );
}
