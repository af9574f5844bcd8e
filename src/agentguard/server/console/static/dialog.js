/* The confirmation dialog, and the character counter of a reason. */
import { byId, fill, show } from "./dom.js";
import { numberFormat } from "./format.js";

const MAX_REASON = 2000;

let pending = null;

/* Resolves to {reason} when confirmed, to null when cancelled. */
export function confirmAction(options) {
  const dialog = byId("confirm");
  if (pending) pending(null);
  fill(byId("confirm-title"), options.title);
  fill(byId("confirm-text"), options.text);
  const ok = byId("confirm-ok");
  ok.textContent = options.confirm;
  ok.className = "button " + (options.danger ? "danger" : "primary");
  const reason = byId("confirm-reason");
  reason.value = "";
  reason.dispatchEvent(new Event("input"));
  show(byId("confirm-reason-field"), Boolean(options.withReason));
  const opener = document.activeElement;
  return new Promise((resolve) => {
    pending = (answer) => {
      pending = null;
      if (dialog.open) dialog.close();
      if (opener && opener.isConnected && typeof opener.focus === "function") opener.focus();
      resolve(answer);
    };
    dialog.showModal();
    // Killing is the safe direction: its button takes the focus. Reviving starts on Cancel.
    if (options.withReason) reason.focus();
    else if (options.danger) ok.focus();
    else byId("confirm-cancel").focus();
  });
}

export function setupDialog() {
  const dialog = byId("confirm");
  const cancel = () => {
    if (pending) pending(null);
  };
  byId("confirm-form").addEventListener("submit", (event) => {
    event.preventDefault();
    if (pending) pending({ reason: byId("confirm-reason").value });
  });
  byId("confirm-cancel").addEventListener("click", cancel);
  dialog.addEventListener("close", cancel);
  dialog.addEventListener("cancel", cancel);
  counter(byId("confirm-reason"), byId("confirm-reason-count"));
}

export function counter(textarea, output) {
  function update() {
    const used = textarea.value.length;
    output.textContent =
      numberFormat.format(used) + " / " + numberFormat.format(MAX_REASON) + " characters";
    output.classList.toggle("near", used > MAX_REASON * 0.9);
  }
  textarea.addEventListener("input", update);
  update();
}
