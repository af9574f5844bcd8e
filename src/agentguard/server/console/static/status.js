/* The connection indicator, the banner and the passing notice. */
import { byId, fill, setMessage } from "./dom.js";
import { clockFormat } from "./format.js";
import { state } from "./state.js";

const CONNECTION_TEXT = {
  connecting: "Connecting…",
  live: "Live",
  reconnecting: "Reconnecting…",
  unreachable: "Server unreachable",
  signedout: "Signed out",
};

export function setConnection(name) {
  const node = byId("connection");
  node.dataset.state = name;
  node.textContent = CONNECTION_TEXT[name];
}

export function banner(kind, text) {
  const node = byId("banner");
  node.dataset.kind = kind || "";
  setMessage(node, text);
}

export function unreachable() {
  setConnection("unreachable");
  const since = state.syncedAt ? " as of " + clockFormat.format(state.syncedAt) : "";
  banner(
    "error",
    "Cannot reach the agentguard server. Showing the last known state" + since + "; retrying."
  );
}

let noticeTimer = null;

export function announce(text) {
  const notice = byId("notice");
  fill(notice, text);
  notice.classList.add("visible");
  window.clearTimeout(noticeTimer);
  noticeTimer = window.setTimeout(() => notice.classList.remove("visible"), 3000);
}
