/* Charts drawn as inline SVG by this script (no library): an agent's timeline of calls, cost,
 * kills and revives, and a sparkline. Each function takes a series from the API and the width
 * to fill in CSS pixels, and returns an <svg>. Text from users (ids, reasons, actors) goes in as
 * text only (textContent of <title>), wrapped in Unicode isolates so it cannot reorder the
 * sentence around it.
 */
import { clockFormat, moneyFormat, numberFormat, typeLabel } from "./format.js";

const hourFormat = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
const dayFormat = new Intl.DateTimeFormat(undefined, {
  month: "short",
  day: "numeric",
  hour: "2-digit",
  minute: "2-digit",
});

const NS = "http://www.w3.org/2000/svg";
const HEAD = 12; // room above the bars for the markers' heads
const MADE = 52; // the band of calls made, above the axis
const STOPPED = 20; // the band of calls refused or cancelled, below it
const AXIS = 16; // room below them for the hour labels
const TICK_HOURS = 6;
const MIN_BAR = 2; // a bucket with any calls is at least this tall

/* svg("rect", {class: "x", width: 3}, child, ...) */
export function svg(tag, attrs, ...children) {
  const node = document.createElementNS(NS, tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "text") node.textContent = String(value);
    else node.setAttribute(name, String(value));
  }
  for (const child of children) {
    if (child) node.append(child);
  }
  return node;
}

/* User text inside a plain-text sentence (a <title> or an aria-label): first-strong isolated. */
function isolated(text) {
  return "\u2068" + String(text) + "\u2069";
}

function round(value) {
  return Math.round(value * 10) / 10;
}

/* Where times and buckets sit across `width` pixels. */
function scaleOf(series, width) {
  const start = Date.parse(series.start);
  const end = Date.parse(series.end);
  const n = series.points.length;
  return {
    n: n,
    slot: width / n,
    xAt(time) {
      const t = Math.min(Math.max(Date.parse(time), start), end);
      return ((t - start) / (end - start)) * width;
    },
    xNow() {
      return ((Math.min(Math.max(Date.now(), start), end) - start) / (end - start)) * width;
    },
  };
}

/* One path of rectangles, one per bucket with a height: fewer nodes than a <rect> each. */
function bars(className, rects) {
  const d = rects.map((r) => `M${round(r.x)} ${round(r.y)}h${round(r.w)}v${round(r.h)}h${-round(r.w)}Z`);
  return svg("path", { class: className, d: d.join(""), "data-bars": rects.length });
}

export function describeEvent(event) {
  const what = event.kind === "kill" ? "Killed " : "Revived ";
  const target = typeLabel(event.target_type).toLowerCase() + " \u201c" + isolated(event.target_id) + "\u201d";
  const at = new Date(event.at);
  const when = (at.toDateString() === new Date().toDateString() ? clockFormat : dayFormat).format(at);
  let text = what + target + " at " + when + " by " + isolated(event.actor);
  if (event.reason) {
    text += event.kind === "kill" ? ": " : " (killed for: ";
    text += isolated(event.reason) + (event.kind === "kill" ? "" : ")");
  }
  return text;
}

/* Spans during which a kill of the series' events held: kill to revive (or the window's ends). */
function killedSpans(series, scale) {
  const spans = [];
  const open = new Map();
  for (const event of series.events) {
    const key = event.kill_switch_id || event.target_type + "\u0000" + event.target_id;
    if (event.kind === "kill") open.set(key, scale.xAt(event.at));
    else {
      spans.push([open.has(key) ? open.get(key) : 0, scale.xAt(event.at)]);
      open.delete(key);
    }
  }
  for (const from of open.values()) spans.push([from, scale.xNow()]);
  return spans;
}

/* The axis between the two bands, and a label every few hours below them. */
function ticks(series, scale, axis, bottom) {
  const group = svg("g", { class: "axis", "aria-hidden": "true" });
  const width = scale.slot * scale.n;
  group.append(svg("line", { class: "baseline", x1: 0, x2: width, y1: axis + 0.5, y2: axis + 0.5 }));
  series.points.forEach((point, i) => {
    const at = new Date(point.at);
    if (at.getMinutes() !== 0 || at.getHours() % TICK_HOURS !== 0) return;
    const x = round(i * scale.slot);
    group.append(svg("line", { class: "tick", x1: x, x2: x, y1: axis, y2: bottom + 3 }));
    const anchor = x < 24 ? "start" : x > width - 24 ? "end" : "middle";
    group.append(
      svg("text", { class: "tick-label", x: x, y: bottom + 13, "text-anchor": anchor, text: hourFormat.format(at) })
    );
  });
  return group;
}

/* An agent's timeline. Above the axis, the calls it made per bucket and its cost as a line;
   below it, on a scale of their own so that a few stand out, the calls refused and those a
   kill stopped while they ran (cancelled); across both, the spans a kill held and the kill
   and revive markers, whose <title> says who and why. */
export function timelineChart(series, width, label) {
  const made = { top: HEAD, bottom: HEAD + MADE };
  const stopped = { top: made.bottom + 1, bottom: made.bottom + 1 + STOPPED };
  const height = stopped.bottom + AXIS;
  const scale = scaleOf(series, width);
  const chart = svg("svg", {
    class: "timeline-chart",
    width: width,
    height: height,
    viewBox: `0 0 ${width} ${height}`,
    role: "img",
    "aria-label": label,
  });

  for (const [from, to] of killedSpans(series, scale)) {
    chart.append(
      svg("rect", {
        class: "killed-span",
        x: round(from),
        y: made.top,
        width: round(Math.max(to - from, 1)),
        height: stopped.bottom - made.top,
      })
    );
  }

  const gap = scale.slot > 3 ? 1 : 0;
  const w = Math.max(scale.slot - gap, 0.5);
  const mostMade = Math.max(1, ...series.points.map((p) => p.executed));
  const mostStopped = Math.max(1, ...series.points.map((p) => p.refused + p.cancelled));
  const stacks = { executed: [], cancelled: [], refused: [] };
  series.points.forEach((p, i) => {
    const x = i * scale.slot;
    if (p.executed > 0) {
      const h = Math.max((p.executed / mostMade) * MADE, MIN_BAR);
      stacks.executed.push({ x: x, y: made.bottom - h, w: w, h: h }); // upwards from the axis
    }
    let y = stopped.top; // downwards from it: refused, then cancelled
    for (const [name, count] of [["refused", p.refused], ["cancelled", p.cancelled]]) {
      if (count <= 0) continue;
      const h = Math.min(Math.max((count / mostStopped) * STOPPED, MIN_BAR), stopped.bottom - y);
      if (h > 0) stacks[name].push({ x: x, y: y, w: w, h: h });
      y += h;
    }
  });
  chart.append(bars("bars bars-executed", stacks.executed));
  chart.append(bars("bars bars-cancelled", stacks.cancelled));
  chart.append(bars("bars bars-refused", stacks.refused));

  const costliest = Math.max(...series.points.map((p) => p.cost_usd));
  if (costliest > 0) {
    const d = series.points.map((p, i) => {
      const x = round((i + 0.5) * scale.slot);
      const y = round(made.bottom - (p.cost_usd / costliest) * MADE * 0.9);
      return (i ? "L" : "M") + x + " " + y;
    });
    chart.append(svg("path", { class: "cost-line", d: d.join("") }));
  }

  chart.append(ticks(series, scale, made.bottom, stopped.bottom));

  for (const event of series.events) {
    const x = round(scale.xAt(event.at));
    const head = event.kind === "kill" ? `M${x - 5} 1L${x + 5} 1L${x} 10Z` : `M${x - 5} 10L${x + 5} 10L${x} 1Z`;
    chart.append(
      svg(
        "g",
        { class: "marker marker-" + event.kind, "data-kind": event.kind },
        svg("title", { text: describeEvent(event) }),
        svg("rect", { class: "marker-hit", x: x - 6, y: 0, width: 12, height: stopped.bottom }),
        svg("line", { class: "marker-line", x1: x, x2: x, y1: 10, y2: stopped.bottom }),
        svg("path", { class: "marker-head", d: head })
      )
    );
  }
  return chart;
}

/* A sparkline of one count per bucket (refusals, by default), as an area under a line. */
export function sparkline(series, width, height, field = "refused") {
  const values = series.points.map((p) => p[field]);
  const top = Math.max(1, ...values);
  const step = values.length > 1 ? width / (values.length - 1) : width;
  const pad = 2;
  const ys = values.map((v) => round(height - pad - (v / top) * (height - 2 * pad)));
  const line = ys.map((y, i) => (i ? "L" : "M") + round(i * step) + " " + y).join("");
  const area = line + `L${round(width)} ${height}L0 ${height}Z`;
  const total = values.reduce((a, b) => a + b, 0);
  const most = Math.max(0, ...values);
  const last = values.length - 1;
  return svg(
    "svg",
    {
      class: "sparkline",
      width: width,
      height: height,
      viewBox: `0 0 ${width} ${height}`,
      role: "img",
      "aria-label": `${numberFormat.format(total)} ${field}, at most ${numberFormat.format(most)} in one step`,
    },
    svg("path", { class: "spark-area", d: area }),
    svg("path", { class: "spark-line", d: line }),
    svg("circle", { class: "spark-dot", cx: round(last * step), cy: ys[last], r: 2.5 })
  );
}

/* "1,843 executed · 5 refused · 0 stopped · $41.20" ("stopped": cancelled by a kill midway) */
export function totalsText(totals) {
  return [
    numberFormat.format(totals.executed) + " executed",
    numberFormat.format(totals.refused) + " refused",
    numberFormat.format(totals.cancelled) + " stopped",
    moneyFormat.format(totals.cost_usd),
  ].join(" \u00b7 ");
}
