/* The change stream (SSE): kill state and interventions as they happen, with reconnects. */
import { renderActive } from "./active.js";
import { API, HttpError, PROBE, call } from "./api.js";
import { byId } from "./dom.js";
import { targetKey } from "./format.js";
import { addInterventions, loadInterventions } from "./interventions.js";
import { queueRefresh } from "./refresh.js";
import { sessionEnded } from "./session.js";
import { state } from "./state.js";
import { banner, setConnection } from "./status.js";

export function connect() {
  if (state.source) state.source.close();
  const source = new EventSource(API + "kill-switch/stream?include=interventions");
  state.source = source;
  source.addEventListener("open", () => {
    if (state.source !== source) return;
    state.retry = 0;
    setConnection("live");
    if (byId("banner").dataset.kind === "error") banner("", "");
    // Back after a loss: interventions stored meanwhile were not streamed, so read them.
    if (state.openedGeneration === state.generation) loadInterventions(true);
    state.openedGeneration = state.generation;
  });
  source.addEventListener("snapshot", (event) => {
    const data = JSON.parse(event.data);
    state.active = new Map();
    for (const ks of data.active) {
      state.active.set(targetKey(ks.target_type, ks.target_id), ks);
    }
    applied();
  });
  source.addEventListener("kill", (event) => {
    const ks = JSON.parse(event.data).kill_switch;
    state.active.set(targetKey(ks.target_type, ks.target_id), ks);
    applied();
  });
  source.addEventListener("revive", (event) => {
    const ks = JSON.parse(event.data).kill_switch;
    state.active.delete(targetKey(ks.target_type, ks.target_id));
    applied();
  });
  source.addEventListener("intervention", (event) => {
    addInterventions([JSON.parse(event.data)]);
    queueRefresh();
  });
  source.addEventListener("error", () => {
    if (state.source !== source) return;
    setConnection("reconnecting");
    if (source.readyState === EventSource.CLOSED) scheduleReconnect();
    probe();
  });
}

/* The stream changed the active kill switches: show them, then what follows from them. */
function applied() {
  state.syncedAt = new Date();
  renderActive();
  queueRefresh();
}

/* After a stream error: tell "server down" apart from "signed out". */
function probe() {
  if (state.probing || !state.session) return;
  state.probing = true;
  const generation = state.generation;
  call("GET", PROBE)
    .then(
      (session) => {
        if (generation !== state.generation) return;
        if (session && session.signed_in === false) {
          sessionEnded(session.detail);
          return;
        }
        state.session = session;
        if (state.source && state.source.readyState === EventSource.CLOSED) connect();
      },
      (error) => {
        if (generation !== state.generation) return;
        if (error instanceof HttpError && error.status === 401) sessionEnded(error.message);
        else scheduleReconnect();
      }
    )
    .then(() => {
      state.probing = false;
    });
}

function scheduleReconnect() {
  if (state.reconnectTimer || !state.session) return;
  const delay = Math.min(1000 * Math.pow(2, state.retry), 15000);
  state.retry += 1;
  state.reconnectTimer = window.setTimeout(() => {
    state.reconnectTimer = null;
    if (!state.source || state.source.readyState === EventSource.CLOSED) connect();
    else probe();
  }, delay);
}
