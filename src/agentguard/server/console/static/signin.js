/* Signing in with an API key, starting the console for a session, and signing out. */
import { SESSION, Unreachable, call } from "./api.js";
import { byId, fill, isolate, setMessage, show } from "./dom.js";
import { loadInterventions } from "./interventions.js";
import { startRefreshing } from "./refresh.js";
import { showSignIn, stop } from "./session.js";
import { canKill, canStopAll, state } from "./state.js";
import { announce, banner, setConnection } from "./status.js";
import { connect } from "./stream.js";

export function start(session) {
  state.session = session;
  state.generation += 1;
  banner("", "");
  show(byId("sign-in"), false);
  show(byId("console"), true);
  show(byId("kill-panel"), canKill());
  show(byId("stop-all-panel"), canStopAll());
  document.body.classList.toggle("read-only", !canKill());
  const scopes = " · " + session.scopes.join(", ");
  fill(byId("identity-text"), [isolate(session.user_id), " · ", isolate(session.organization_id), scopes]);
  byId("identity-text").title = session.actor;
  show(byId("sign-out"), session.method === "console");
  show(byId("identity"), true);
  setConnection("connecting");
  connect();
  loadInterventions();
  startRefreshing();
}

export function setupSignIn() {
  byId("sign-in-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = byId("api-key");
    const error = byId("sign-in-error");
    const key = input.value.trim();
    if (!key) {
      setMessage(error, "Paste an API key (it starts with ag_).");
      input.focus();
      return;
    }
    setMessage(error, "");
    call("POST", SESSION, { api_key: key }).then(
      (session) => {
        input.value = "";
        start(session);
      },
      (failure) => {
        if (failure instanceof Unreachable) setMessage(error, failure.message);
        else if (failure.status === 401) setMessage(error, "This API key is not valid or has been revoked.");
        else setMessage(error, failure.message);
        input.focus();
      }
    );
  });
  byId("sign-out").addEventListener("click", () => {
    call("DELETE", SESSION).then(
      () => {
        stop();
        showSignIn();
        announce("Signed out.");
      },
      (failure) => announce("Could not sign out: " + failure.message)
    );
  });
}
