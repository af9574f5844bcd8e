/* Agents, acknowledgements and the audit log are read, not streamed: refresh them soon after
   a change, and the fleet every few seconds while the page is visible. */
import { loadAcks } from "./active.js";
import { loadAudit } from "./audit.js";
import { loadAgents } from "./fleet.js";
import { state } from "./state.js";

const REFRESH_MS = 5000;

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
  loadAgents();
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
    }, REFRESH_MS)
  );
}
