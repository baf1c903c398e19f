"""``/internal/dashboard`` and ``/internal/stats``: a live picture of this gateway process.

The dashboard is one self-contained page (HTML, CSS, JS and SVG inline: no CDN, it works
offline). Both routes are behind ``INTERNAL_SECRET`` like the rest of the internal API. A
browser opening the page without the secret gets the 401 with a Basic challenge
(:class:`~tornado_sse.handlers.InternalHandler`), so it asks for a user name (any) and a
password (the secret) in its own login dialog and then sends them with the page's fetches of
``/internal/stats``; the page itself holds no data and never sees the secret. Both are
internal routes: only on ``INTERNAL_PORT`` when that is set, never with CORS headers.

Each process draws its own figures (see :mod:`tornado_sse.stats`).
"""

from __future__ import annotations

from .handlers import InternalHandler
from .stats import snapshot


class StatsHandler(InternalHandler):
    """``GET /internal/stats``: this process's counters (:func:`tornado_sse.stats.snapshot`)."""

    def get(self) -> None:
        metrics = self.gateway.metrics
        self.set_header("Cache-Control", "no-store")
        self.write_json(snapshot(metrics.registry, metrics.started))


class DashboardHandler(InternalHandler):
    """``GET /internal/dashboard``: the page, behind the secret like every internal route. It
    carries no data: its script fetches ``/internal/stats``."""

    def get(self) -> None:
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        # The page may only talk to this origin, and may not be framed by another site.
        self.set_header(
            "Content-Security-Policy",
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
            "connect-src 'self'; img-src data:; frame-ancestors 'none'",
        )
        self.set_header("Referrer-Policy", "no-referrer")
        self.finish(PAGE)


PAGE = r"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>tornado_sse dashboard</title>
<style>
 :root { --fg: #1d2330; --muted: #667085; --line: #e4e7ec; --bg: #f7f8fa; --card: #fff; }
 * { box-sizing: border-box; }
 body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif;
        color: var(--fg); background: var(--bg); }
 header { display: flex; align-items: baseline; gap: 1.25rem; flex-wrap: wrap;
          padding: 1rem 1.5rem; background: var(--card); border-bottom: 1px solid var(--line); }
 header h1 { font-size: 1.15rem; margin: 0; }
 header .meta { color: var(--muted); }
 #status { margin-left: auto; font-weight: 600; }
 #status.ok { color: #067647; } #status.bad { color: #b42318; }
 main { display: grid; grid-template-columns: repeat(auto-fit, minmax(380px, 1fr));
        gap: 1rem; padding: 1rem 1.5rem; }
 section { background: var(--card); border: 1px solid var(--line); border-radius: 8px;
           padding: .8rem 1rem .6rem; }
 h2 { font-size: .8rem; letter-spacing: .04em; text-transform: uppercase; color: var(--muted);
      margin: 0 0 .2rem; font-weight: 600; }
 .big { font-size: 1.7rem; font-weight: 650; font-variant-numeric: tabular-nums; }
 .big small { font-size: .85rem; color: var(--muted); font-weight: 400; }
 svg { width: 100%; height: 130px; display: block; }
 .legend { display: flex; flex-wrap: wrap; gap: .3rem .9rem; font-size: .8rem;
           color: var(--muted); }
 .legend b { display: inline-block; width: .7rem; height: .7rem; border-radius: 2px;
             margin-right: .3rem; vertical-align: -1px; }
 .legend span { font-variant-numeric: tabular-nums; }
 footer { color: var(--muted); padding: 0 1.5rem 1.5rem; font-size: .8rem; }
</style></head>
<body>
<header>
  <h1>tornado_sse</h1>
  <span class="meta" id="instance">this process</span>
  <span class="meta" id="uptime"></span>
  <span id="status">connecting</span>
</header>
<main>
  <section><h2>Open streams</h2><div class="big" id="open">-</div>
    <svg id="chart-open"></svg><div class="legend" id="legend-open"></div></section>
  <section><h2>Connects per second, by outcome</h2><div class="big" id="connects">-</div>
    <svg id="chart-connects"></svg><div class="legend" id="legend-connects"></div></section>
  <section><h2>Disconnects per second, by reason</h2><div class="big" id="disconnects">-</div>
    <svg id="chart-disconnects"></svg><div class="legend" id="legend-disconnects"></div></section>
  <section><h2>Events per second</h2><div class="big" id="events">-</div>
    <svg id="chart-events"></svg><div class="legend" id="legend-events"></div></section>
  <section><h2>Callback latency (mean over each interval)</h2><div class="big" id="latency">-</div>
    <svg id="chart-latency"></svg><div class="legend" id="legend-latency"></div></section>
  <section><h2>Slow-consumer closes per second</h2><div class="big" id="slow">-</div>
    <svg id="chart-slow"></svg><div class="legend" id="legend-slow"></div></section>
</main>
<footer>Figures of the process that served this page, since it started; rates from the
difference of two snapshots of <code>/internal/stats</code>. With several processes or machines,
each serves its own dashboard. The last <span id="window"></span> are drawn.</footer>
<script>
"use strict";
const params = new URLSearchParams(location.hash.slice(1));
// location.origin, not a relative URL: a page opened with user:secret@ in its address must
// not resolve its fetches against those credentials (fetch refuses them). The browser sends
// the credentials of its login dialog by itself.
const STATS = location.origin + "/internal/stats";
const INTERVAL = Math.max(100, Number(params.get("interval")) || 1000);
const KEEP = Math.min(3600, Math.max(10, Number(params.get("points")) || 120));  // drawn
const COLORS = ["#2e90fa", "#12b76a", "#f79009", "#f04438", "#7a5af8", "#667085"];
const samples = [];  // {t, open, connects:{}, disconnects:{}, events, heartbeats, latency:{}, slow}
let previous = null;
window.dashboard = {updates: 0, last: null, listeners: []};

function rate(now, before, read) {
  const seconds = now.now - before.now;
  return seconds > 0 ? Math.max(0, (read(now) - read(before)) / seconds) : 0;
}

function latencyMs(now, before, action) {
  const a = now.callbacks[action], b = before.callbacks[action];
  const count = a.count - b.count;
  return count > 0 ? 1000 * (a.seconds - b.seconds) / count : null;
}

function fmt(value, digits) {
  if (value === null || value === undefined) return "-";
  if (value >= 1000) return value.toLocaleString("en", {maximumFractionDigits: 0});
  return value.toLocaleString("en", {maximumFractionDigits: digits === undefined ? 1 : digits});
}

function draw(id, series, unit) {
  const svg = document.getElementById("chart-" + id);
  const width = svg.clientWidth || 400, height = svg.clientHeight || 130;
  const left = 44, bottom = 18, top = 6;
  let max = 0;
  for (const s of series) for (const v of s.values) if (v !== null && v > max) max = v;
  max = niceCeiling(max);
  const x = (i) => left + (width - left - 4) * i / (KEEP - 1);
  const y = (v) => top + (height - top - bottom) * (1 - v / max);
  let out = "";
  const label = (tx, ty, anchor, text) =>
    `<text x="${tx}" y="${ty}" font-size="10" text-anchor="${anchor}" fill="#98a2b3">` +
    `${text}</text>`;
  for (let k = 0; k <= 2; k++) {
    const v = max * k / 2, yy = y(v).toFixed(1);
    out += `<line x1="${left}" x2="${width}" y1="${yy}" y2="${yy}" stroke="#eaecf0"/>`;
    out += label(left - 6, (+yy + 4).toFixed(1), "end", fmt(v, 2));
  }
  out += label(left, height - 4, "start", "-" + Math.round(KEEP * INTERVAL / 1000) + " s");
  out += label(width, height - 4, "end", "now" + (unit ? " · " + unit : ""));
  series.forEach((s, n) => {
    const offset = KEEP - s.values.length;
    const color = COLORS[n % COLORS.length];
    let path = "", pen = false;
    s.values.forEach((v, i) => {
      if (v === null) { pen = false; return; }
      const px = x(i + offset).toFixed(1), py = y(v).toFixed(1);
      path += (pen ? "L" : "M") + px + "," + py;
      const next = s.values[i + 1];
      if (!pen && (next === null || next === undefined)) {  // a lone value: a line cannot show it
        out += `<circle cx="${px}" cy="${py}" r="2.5" fill="${color}"/>`;
      }
      pen = true;
    });
    out += `<path d="${path}" fill="none" stroke="${color}" stroke-width="1.8"/>`;
  });
  svg.innerHTML = out;
  document.getElementById("legend-" + id).innerHTML = series.map((s, n) => {
    const last = s.values.length ? s.values[s.values.length - 1] : null;
    const color = COLORS[n % COLORS.length];
    return `<span><b style="background:${color}"></b>${s.name} ${fmt(last)}</span>`;
  }).join("");
}

function niceCeiling(v) {
  if (v <= 0) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

function column(key, sub) {
  return samples.map((s) => (sub === undefined ? s[key] : s[key][sub]));
}

function render(stats) {
  document.getElementById("instance").textContent = "process " + stats.pid;
  const up = Math.round(stats.now - stats.started);
  const hours = up >= 3600 ? Math.floor(up / 3600) + " h " : "";
  document.getElementById("uptime").textContent =
    "up " + hours + Math.floor(up % 3600 / 60) + " min " + up % 60 + " s";
  document.getElementById("window").textContent = Math.round(KEEP * INTERVAL / 1000) + " s";
  const total = (o) => Object.values(o).reduce((a, b) => a + b, 0);
  const big = (id, value, note) => {
    document.getElementById(id).innerHTML = value + (note ? " <small>" + note + "</small>" : "");
  };
  big("open", fmt(stats.open_streams));
  big("connects", fmt(total(stats.connects), 0), "in total");
  big("disconnects", fmt(total(stats.disconnects), 0), "in total");
  big("events", fmt(stats.events, 0), "in total, " + fmt(stats.heartbeats, 0) + " heartbeats");
  const cb = stats.callbacks.connect;
  const mean = cb.count ? fmt(1000 * cb.seconds / cb.count, 2) + " ms" : "-";
  big("latency", mean, "mean connect callback since start");
  big("slow", fmt(stats.slow_consumer_closes, 0), "in total");
  const each = (key, names, suffix) =>
    names.map((k) => ({name: k + (suffix || ""), values: column(key, k)}));
  draw("open", [{name: "open", values: column("open")}]);
  draw("connects", each("connects", Object.keys(stats.connects)), "per s");
  draw("disconnects", each("disconnects", Object.keys(stats.disconnects)), "per s");
  draw("events", [{name: "events", values: column("events")},
                  {name: "heartbeats", values: column("heartbeats")}], "per s");
  draw("latency", each("latency", ["connect", "disconnect"], " ms"), "ms");
  draw("slow", [{name: "slow consumers", values: column("slow")}], "per s");
}

function record(stats) {
  if (previous !== null) {
    const sample = {open: stats.open_streams, connects: {}, disconnects: {}, latency: {}};
    for (const k of Object.keys(stats.connects)) {
      sample.connects[k] = rate(stats, previous, (s) => s.connects[k] || 0);
    }
    for (const k of Object.keys(stats.disconnects)) {
      sample.disconnects[k] = rate(stats, previous, (s) => s.disconnects[k] || 0);
    }
    sample.events = rate(stats, previous, (s) => s.events);
    sample.heartbeats = rate(stats, previous, (s) => s.heartbeats);
    sample.slow = rate(stats, previous, (s) => s.slow_consumer_closes);
    for (const k of ["connect", "disconnect"]) sample.latency[k] = latencyMs(stats, previous, k);
    samples.push(sample);
    if (samples.length > KEEP) samples.shift();
  }
  previous = stats;
}

async function poll() {
  const status = document.getElementById("status");
  try {
    const response = await fetch(STATS, {cache: "no-store"});
    if (response.status === 401) {  // the secret changed: a reload asks for it again
      status.textContent = "needs INTERNAL_SECRET (reload)";
      status.className = "bad";
    } else if (!response.ok) {
      status.textContent = "stats answered " + response.status;
      status.className = "bad";
    } else {
      const stats = await response.json();
      record(stats);
      render(stats);
      status.textContent = "live";
      status.className = "ok";
      window.dashboard.updates++;
      window.dashboard.last = stats;
      window.dashboard.listeners.forEach((f) => f());
    }
  } catch (e) {
    status.textContent = "gateway unreachable";
    status.className = "bad";
  }
  setTimeout(poll, INTERVAL);
}

// For tests: resolves once the dashboard has drawn `n` more updates.
window.dashboard.after = (n) => new Promise((resolve) => {
  const target = window.dashboard.updates + n;
  const check = () => {
    if (window.dashboard.updates >= target) resolve(window.dashboard.updates);
  };
  window.dashboard.listeners.push(check);
  check();
});
poll();
</script>
</body></html>
"""
