/* What the page knows. `generation` counts sessions: an answer for an ended one is dropped. */

export const state = {
  session: null,
  source: null,
  active: new Map(),
  acks: new Map(),
  revives: [], // the pending revive requests
  agents: null,
  series: new Map(), // agent id -> its series (the timelines)
  orgSeries: null, // the organization's series (the sparkline)
  timelinesLoadedAt: 0,
  timelineTimer: null,
  timelineError: "",
  interventions: [],
  webhooks: null, // the organization's webhooks (admins only)
  openLogs: new Set(), // ids of the webhooks whose delivery log is shown
  syncedAt: null,
  timers: [],
  reconnectTimer: null,
  retry: 0,
  probing: false,
  refreshQueued: false,
  generation: 0,
  openedGeneration: -1, // the session whose stream has opened once already
};

export function canStopAll() {
  return Boolean(state.session && state.session.can_stop_all);
}

export function canKill() {
  return Boolean(state.session && state.session.can_kill);
}
