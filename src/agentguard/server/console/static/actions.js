/* Killing and reviving: the kill form, and the Kill and Revive buttons of the lists. */
import { renderActive } from "./active.js";
import { API, HttpError, call } from "./api.js";
import { confirmAction, counter } from "./dialog.js";
import { byId, isolate, setMessage } from "./dom.js";
import { describe, targetKey, typeLabel } from "./format.js";
import { queueRefresh } from "./refresh.js";
import { loadRevives } from "./revives.js";
import { state } from "./state.js";
import { announce } from "./status.js";

function kill(type, id, reason, duration) {
  const body = { target_type: type, target_id: id };
  if (reason) body.reason = reason;
  if (duration) body.duration = duration; // the server revives it then, as "expiry"
  return call("POST", API + "kill-switch/kill", body).then((ks) => {
    state.active.set(targetKey(ks.target_type, ks.target_id), ks);
    renderActive();
    queueRefresh();
    announce(["Killed ", describe(type, id), "."]);
    return ks;
  });
}

function revive(type, id) {
  confirmAction({
    title: ["Revive ", describe(type, id), "?"],
    text: "Its instances will be allowed to make tool calls again, and resume from their checkpoints.",
    confirm: "Revive",
    danger: false,
  }).then((answer) => {
    if (!answer) return;
    call("POST", API + "kill-switch/revive", { target_type: type, target_id: id }).then(
      (answer) => {
        if (answer && answer.status === "pending") {
          // 202: this server wants another person to approve revives of this target.
          const others = answer.people_required - 1;
          announce([
            "The revive of ",
            describe(type, id),
            " needs approval: it is a request now, and the kill stays until " +
              (others === 1 ? "another operator approves it." : others + " other operators approve it."),
          ]);
          loadRevives();
          return;
        }
        state.active.delete(targetKey(type, id));
        renderActive();
        queueRefresh();
        announce(["Revived ", describe(type, id), "."]);
      },
      (error) => {
        if (error instanceof HttpError && error.status === 409) {
          announce(["A revive of ", describe(type, id), " is waiting for approval already."]);
          loadRevives();
        } else if (error instanceof HttpError && error.status === 404) {
          state.active.delete(targetKey(type, id));
          renderActive();
          announce([describe(type, id), " was already revived."]);
        } else if (!(error instanceof HttpError && error.status === 401)) {
          announce(["Could not revive ", describe(type, id), ": " + error.message]);
        }
      }
    );
  });
}

/* Kill from a row of the agents table: the reason is asked in the dialog. */
function killFromList(type, id) {
  confirmAction({
    title: ["Kill ", describe(type, id), "?"],
    text: "Every running instance will refuse its next tool call.",
    confirm: "Kill " + typeLabel(type).toLowerCase(),
    danger: true,
    withReason: true,
  }).then((answer) => {
    if (!answer) return;
    kill(type, id, answer.reason).catch((error) => {
      if (!(error instanceof HttpError && error.status === 401)) {
        announce(["Could not kill ", describe(type, id), ": ", killError(error, type, id)]);
      }
    });
  });
}

function killError(error, type, id) {
  if (error instanceof HttpError) {
    if (error.status === 409) return [typeLabel(type) + " \u201c", isolate(id), "\u201d is already killed."];
    if (error.status === 403) return "Your credential cannot kill: " + error.message;
  }
  return error.message;
}

export function setupKillForm() {
  const form = byId("kill-form");
  const reason = byId("kill-reason");
  counter(reason, byId("kill-reason-count"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const type = byId("kill-type").value;
    const id = byId("kill-id").value;
    const error = byId("kill-error");
    if (!id.trim()) {
      setMessage(error, "Enter the id of the " + typeLabel(type).toLowerCase() + " to kill.");
      byId("kill-id").focus();
      return;
    }
    setMessage(error, "");
    const text = reason.value;
    const picker = byId("kill-duration");
    const duration = picker.value;
    const lasting = duration
      ? "It is revived automatically after " + picker.selectedOptions[0].textContent + ". "
      : "It lasts until someone revives it. ";
    confirmAction({
      title: ["Kill ", describe(type, id), "?"],
      text: [
        "Every running instance will refuse its next tool call. ",
        lasting,
        text ? ["Reason: \u201c", isolate(text), "\u201d"] : "No reason given.",
      ],
      confirm: "Kill " + typeLabel(type).toLowerCase(),
      danger: true,
    }).then((answer) => {
      if (!answer) return;
      kill(type, id, text, duration).then(
        () => {
          form.reset();
          reason.dispatchEvent(new Event("input"));
          byId("kill-id").focus();
        },
        (failure) => setMessage(error, killError(failure, type, id))
      );
    });
  });
}

/* The buttons of the active list and the agents table carry data-action and their target;
   one listener per list answers them, however often the lists are drawn again. */
export function setupListActions() {
  for (const id of ["active-list", "agents-body"]) {
    byId(id).addEventListener("click", (event) => {
      const button = event.target.closest("button[data-action]");
      if (!button) return;
      const { action, targetType, targetId } = button.dataset;
      if (action === "revive") revive(targetType, targetId);
      else if (action === "kill") killFromList(targetType, targetId);
    });
  }
}
