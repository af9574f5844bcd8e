/* Agents, acknowledgements, the audit log and the timelines are read, not streamed: refresh
   them soon after a change, the fleet every few seconds and the timelines every half minute
   while the page is visible. */
import { loadAcks } from "./active.js";
import { loadAudit } from "./audit.js";
import { loadAgents } from "./fleet.js";
import { state } from "./state.js";
import { loadTimelines } from "./timeline.js";

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
  loadAudit();
}

export function startRefreshing() {
  refresh();
  state.timers.push(
    window.setInterval(() => {
      if (!document.hidden) {
        loadAgents();
        loadAcks();
      }
    }, REFRESH_MS),
    window.setInterval(() => {
      if (!document.hidden) loadTimelines();
    }, TIMELINES_MS)
  );
}
