/* How targets, times, numbers and money read on the page. */
import { el, isolate, userText } from "./dom.js";

const TYPES = { agent: "Agent", run: "Run", mission: "Mission", tool: "Tool", organization: "Organization" };

export const numberFormat = new Intl.NumberFormat(undefined);
export const moneyFormat = new Intl.NumberFormat(undefined, {
  style: "currency",
  currency: "USD",
  maximumFractionDigits: 2,
});
const timeFormat = new Intl.DateTimeFormat(undefined, {
  month: "short",
  day: "numeric",
  hour: "2-digit",
  minute: "2-digit",
  second: "2-digit",
});
/* How long a call ran before a kill stopped it: "340 ms", "2.3 s", "4 min 10 s". */
export function duration(ms) {
  const n = Number(ms);
  if (!Number.isFinite(n) || n < 0) return "";
  if (n < 1000) return numberFormat.format(Math.round(n)) + " ms";
  if (n < 60000) return (n / 1000).toFixed(n < 10000 ? 1 : 0) + " s";
  const minutes = Math.floor(n / 60000);
  return numberFormat.format(minutes) + " min " + Math.round((n % 60000) / 1000) + " s";
}

export const clockFormat = new Intl.DateTimeFormat(undefined, {
  hour: "2-digit",
  minute: "2-digit",
  second: "2-digit",
});

export function timeNode(iso) {
  if (!iso) return el("span", { class: "muted", text: "never" });
  const date = new Date(iso);
  if (isNaN(date.getTime())) return el("span", { text: String(iso) });
  const today = new Date().toDateString() === date.toDateString();
  const text = (today ? clockFormat : timeFormat).format(date);
  return el("time", { datetime: iso, title: date.toString(), text: text });
}

/* How long ago an ISO time was, in a few characters: "just now", "5 min ago", "3 h ago", "2 d ago". */
export function ago(iso, now = Date.now()) {
  const then = new Date(iso).getTime();
  if (isNaN(then)) return "";
  const seconds = Math.max(0, Math.round((now - then) / 1000));
  if (seconds < 10) return "just now";
  if (seconds < 60) return seconds + " s ago";
  if (seconds < 3600) return Math.floor(seconds / 60) + " min ago";
  if (seconds < 86400) return Math.floor(seconds / 3600) + " h ago";
  return Math.floor(seconds / 86400) + " d ago";
}

/* A comparator: the latest ISO time in `field` first. */
export function newestFirst(field) {
  return (a, b) => (a[field] < b[field] ? 1 : a[field] > b[field] ? -1 : 0);
}

/* The last non-blank line of a reported crash: the exception, not "Traceback (...)". */
export function lastLine(text) {
  const lines = String(text || "")
    .split("\n")
    .map((line) => line.trim())
    .filter(Boolean);
  return lines.length ? lines[lines.length - 1] : "";
}

export function targetKey(type, id) {
  return type + "\u0000" + id;
}

export function typeLabel(type) {
  return TYPES[type] || String(type);
}

export function targetNode(type, id) {
  return el(
    "span",
    { class: "target" },
    el("span", { class: "type type-" + (TYPES[type] ? type : "other"), text: typeLabel(type) }),
    " ",
    userText("span", "target-id", id)
  );
}

/* "agent “id”", for a sentence (see fill). */
export function describe(type, id) {
  return [typeLabel(type).toLowerCase() + " \u201c", isolate(id), "\u201d"];
}
