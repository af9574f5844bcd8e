/* The organization-wide stop: a control of its own, confirmed by typing the organization's id. */
import { API, HttpError, call } from "./api.js";
import { confirmAction } from "./dialog.js";
import { byId, el, fill, isolate, setMessage, show, userText } from "./dom.js";
import { targetKey, timeNode } from "./format.js";
import { queueRefresh } from "./refresh.js";
import { canStopAll, state } from "./state.js";
import { announce } from "./status.js";

function organization() {
  return state.session ? state.session.organization_id : "";
}

function stopped() {
  return state.active.get(targetKey("organization", organization())) || null;
}

/* Show whether the organization is stopped: the form to stop it, or who stopped it and Resume. */
export function renderStopAll() {
  const panel = byId("stop-all-panel");
  if (!canStopAll()) {
    show(panel, false);
    return;
  }
  show(panel, true);
  const ks = stopped();
  panel.classList.toggle("stopped", Boolean(ks));
  show(byId("stop-all-form"), !ks);
  show(byId("resume-all-button"), Boolean(ks));
  const status = byId("stop-all-state");
  if (!ks) {
    fill(status, "Running: no organization-wide stop.");
    return;
  }
  fill(status, [
    el("strong", { text: "EVERY AGENT IS STOPPED" }),
    " by ",
    userText("span", "actor", ks.killed_by),
    " · ",
    timeNode(ks.killed_at),
    ...(ks.expires_at ? [" · resumes ", timeNode(ks.expires_at)] : []),
    ks.reason ? [" · ", userText("span", "reason", ks.reason)] : "",
  ]);
}

function applied(render) {
  render();
  queueRefresh();
}

export function setupStopAll(render) {
  const form = byId("stop-all-form");
  const confirmInput = byId("stop-all-confirm");
  const button = byId("stop-all-button");
  const error = byId("stop-all-error");
  const update = () => {
    fill(byId("stop-all-org"), isolate(organization()));
    button.disabled = confirmInput.value !== organization() || !organization();
  };
  confirmInput.addEventListener("input", update);
  byId("stop-all-panel").addEventListener("focusin", update);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    update();
    if (button.disabled) {
      setMessage(error, "Type the organization id exactly to confirm.");
      confirmInput.focus();
      return;
    }
    setMessage(error, "");
    const body = { target_type: "organization", target_id: organization() };
    const reason = byId("stop-all-reason").value;
    if (reason) body.reason = reason;
    call("POST", API + "kill-switch/kill", body).then(
      (ks) => {
        state.active.set(targetKey(ks.target_type, ks.target_id), ks);
        form.reset();
        update();
        applied(render);
        announce("Every agent of the organization is stopped.");
      },
      (failure) => {
        if (failure instanceof HttpError && failure.status === 409) {
          setMessage(error, "The organization is already stopped.");
        } else if (!(failure instanceof HttpError && failure.status === 401)) {
          setMessage(error, "Could not stop the organization: " + failure.message);
        }
      }
    );
  });
  byId("resume-all-button").addEventListener("click", () => {
    confirmAction({
      title: "Resume every agent?",
      text: "The organization-wide stop ends. Kills of single agents, runs, missions and tools still hold.",
      confirm: "Resume every agent",
      danger: false,
    }).then((answer) => {
      if (!answer) return;
      const body = { target_type: "organization", target_id: organization() };
      call("POST", API + "kill-switch/revive", body).then(
        () => {
          state.active.delete(targetKey("organization", organization()));
          applied(render);
          announce("The organization runs again.");
        },
        (failure) => {
          if (failure instanceof HttpError && failure.status === 404) {
            state.active.delete(targetKey("organization", organization()));
            applied(render);
          } else if (!(failure instanceof HttpError && failure.status === 401)) {
            announce("Could not resume the organization: " + failure.message);
          }
        }
      );
    });
  });
}
