// The admin dashboard: polls the admin API every two seconds and renders this node's
// routes, plugins, upstream targets, call log and reloads. No library, no build step.
"use strict";

const POLL_MS = 2000;
const HISTORY = 60;
let previous = null;           // the last poll's counters, for rates
const trend = new Map();       // route -> recent req/s
let callFilter = new URLSearchParams();

function token() { return sessionStorage.getItem("sluice-admin-token"); }

async function get(path, asText) {
  const headers = token() ? { authorization: "Bearer " + token() } : {};
  const resp = await fetch(path, { headers });
  if (resp.status === 401) {
    document.getElementById("token-form").hidden = false;
    throw new Error("the admin API needs a token");
  }
  if (resp.status === 404 && path.startsWith("/-/calls")) return null; // call log off
  if (!resp.ok) throw new Error(path + ": " + resp.status);
  return asText ? resp.text() : resp.json();
}

// Prometheus text format -> [{name, labels, value}].
function parseMetrics(text) {
  const out = [];
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const m = line.match(/^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/);
    if (!m) continue;
    const labels = {};
    const re = /(\w+)="((?:[^"\\]|\\.)*)"/g;
    let l;
    while ((l = re.exec(m[2] || "")) !== null) {
      labels[l[1]] = l[2].replace(/\\n/g, "\n").replace(/\\(.)/g, "$1");
    }
    out.push({ name: m[1], labels, value: m[3] === "+Inf" ? Infinity : Number(m[3]) });
  }
  return out;
}

function sumBy(samples, name, key, keep) {
  const out = new Map();
  for (const s of samples) {
    if (s.name !== name || (keep && !keep(s.labels))) continue;
    const k = key(s.labels);
    out.set(k, (out.get(k) || 0) + s.value);
  }
  return out;
}

// A quantile from cumulative histogram buckets [[le, count]…] (linear within a bucket).
function quantile(buckets, q) {
  const total = buckets.length ? buckets[buckets.length - 1][1] : 0;
  if (total <= 0) return null;
  const rank = q * total;
  let prevLe = 0, prevCount = 0;
  for (const [le, count] of buckets) {
    if (count >= rank) {
      if (le === Infinity) return prevLe;
      const inBucket = count - prevCount;
      return inBucket > 0 ? prevLe + (le - prevLe) * (rank - prevCount) / inBucket : le;
    }
    prevLe = le; prevCount = count;
  }
  return prevLe;
}

function routeBuckets(samples) {
  const byRoute = new Map();
  for (const s of samples) {
    if (s.name !== "sluice_request_duration_seconds_bucket") continue;
    const le = s.labels.le === "+Inf" ? Infinity : Number(s.labels.le);
    const m = byRoute.get(s.labels.route) || new Map();
    m.set(le, (m.get(le) || 0) + s.value);
    byRoute.set(s.labels.route, m);
  }
  const out = new Map();
  for (const [route, m] of byRoute) out.set(route, [...m.entries()].sort((a, b) => a[0] - b[0]));
  return out;
}

function cell(text, cls) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "–" : String(text);
  if (cls) td.className = cls;
  return td;
}

function fill(id, rows) {
  const body = document.querySelector("#" + id + " tbody");
  if (rows.length === 0) rows = [[cell("none yet", "muted")]];
  body.replaceChildren(...rows.map(cells => {
    const tr = document.createElement("tr");
    tr.append(...cells);
    return tr;
  }));
}

function fixed(n, digits) { return n === null || n === undefined || Number.isNaN(n) ? null : n.toFixed(digits); }

function spark(values) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("class", "spark");
  svg.setAttribute("viewBox", "0 0 120 24");
  const max = Math.max(1, ...values);
  const line = document.createElementNS(ns, "polyline");
  const step = 120 / Math.max(1, values.length - 1);
  line.setAttribute("points", values.map((v, i) => `${i * step},${23 - 22 * v / max}`).join(" "));
  svg.append(line);
  const td = document.createElement("td");
  td.append(svg);
  return td;
}

function renderRoutes(status, samples, now) {
  const totals = sumBy(samples, "sluice_requests_total", l => l.route);
  const errors = sumBy(samples, "sluice_requests_total", l => l.route, l => l.code.startsWith("5"));
  const buckets = routeBuckets(samples);
  const dt = previous ? (now - previous.time) / 1000 : 0;
  const names = [...status.routes];
  if (totals.has("")) names.push("");
  fill("routes", names.map(route => {
    const total = totals.get(route) || 0;
    const errs = errors.get(route) || 0;
    let rate = null, errRate = null, window = buckets.get(route) || [];
    if (previous && dt > 0) {
      rate = (total - (previous.totals.get(route) || 0)) / dt;
      errRate = (errs - (previous.errors.get(route) || 0)) / dt;
      const before = new Map(previous.buckets.get(route) || []);
      const delta = window.map(([le, c]) => [le, c - (before.get(le) || 0)]);
      if (delta.length && delta[delta.length - 1][1] > 0) window = delta;
    }
    const history = trend.get(route) || [];
    history.push(rate || 0);
    while (history.length > HISTORY) history.shift();
    trend.set(route, history);
    const p50 = quantile(window, 0.5), p99 = quantile(window, 0.99);
    const chain = (status.chains && status.chains[route]) || [];
    return [
      cell(route === "" ? "(no route)" : route),
      cell(chain.length ? chain.join(" → ") : "none", "muted"),
      cell(fixed(rate, 1), "num"),
      cell(fixed(errRate, 2), errRate > 0 ? "num bad" : "num"),
      cell(total ? fixed(100 * errs / total, 1) : null, "num"),
      cell(p50 === null ? null : fixed(p50 * 1000, 2), "num"),
      cell(p99 === null ? null : fixed(p99 * 1000, 2), "num"),
      cell(total, "num"),
      spark(history),
    ];
  }));
  return { totals, errors, buckets };
}

function renderTargets(status) {
  const rows = [];
  for (const [name, up] of Object.entries(status.upstreams || {})) {
    for (const t of up.targets) {
      const healthy = t.healthy && !t.ejected;
      rows.push([cell(name), cell(t.address), cell(healthy ? "up" : (t.ejected ? "ejected" : "down"), healthy ? "ok" : "bad"),
        cell(t.circuit, t.circuit === "closed" ? "ok" : "bad"), cell(t.in_flight, "num")]);
    }
  }
  fill("targets", rows);
}

function renderPlugins(samples, now) {
  const calls = sumBy(samples, "sluice_plugin_calls_total", l => l.plugin);
  const sum = sumBy(samples, "sluice_plugin_call_duration_seconds_sum", l => l.plugin);
  const count = sumBy(samples, "sluice_plugin_call_duration_seconds_count", l => l.plugin);
  const errors = sumBy(samples, "sluice_plugin_errors_total", l => l.plugin);
  const answered = sumBy(samples, "sluice_plugin_responses_total", l => l.plugin);
  const dt = previous ? (now - previous.time) / 1000 : 0;
  fill("plugins", [...calls.keys()].sort().map(p => [
    cell(p),
    cell(previous && dt > 0 ? fixed((calls.get(p) - (previous.pluginCalls.get(p) || 0)) / dt, 1) : null, "num"),
    cell(count.get(p) ? fixed(1e6 * sum.get(p) / count.get(p), 1) : null, "num"),
    cell(errors.get(p) || 0, errors.get(p) ? "num bad" : "num"),
    cell(answered.get(p) || 0, "num"),
  ]));
  return calls;
}

function renderAi(samples) {
  const rows = new Map();
  for (const s of samples) {
    if (s.name !== "sluice_plugin_custom_total" || !s.labels.name || !s.labels.name.startsWith("ai_")) continue;
    const key = (s.labels.consumer || "-") + "\u0000" + (s.labels.model || "-");
    const r = rows.get(key) || { consumer: s.labels.consumer || "-", model: s.labels.model || "-", in: 0, out: 0, cost: 0 };
    if (s.labels.name === "ai_tokens" && s.labels.type === "input") r.in += s.value;
    if (s.labels.name === "ai_tokens" && s.labels.type === "output") r.out += s.value;
    if (s.labels.name === "ai_cost_micros") r.cost += s.value / 1e6;
    rows.set(key, r);
  }
  fill("ai", [...rows.values()].map(r => [cell(r.consumer), cell(r.model), cell(r.in, "num"), cell(r.out, "num"), cell(fixed(r.cost, 4), "num")]));
}

async function renderCallLog() {
  const page = await get("/-/calls?limit=25&" + callFilter.toString());
  if (page === null) {
    fill("calls", [[cell("the call log is off: set server.call_log", "muted")]]);
    fill("consumers", [[cell("the call log is off", "muted")]]);
    return;
  }
  fill("calls", page.calls.map(c => [
    cell(new Date(c.time_ms).toLocaleTimeString()), cell(c.route), cell(c.consumer), cell(c.method), cell(c.path),
    cell(c.status, c.status >= 500 ? "bad" : ""), cell(fixed(c.duration_us / 1000, 2), "num"), cell(c.upstream),
  ]));
  const stats = await get("/-/calls/stats?bucket=hour&by=consumer&from=" + (Date.now() - 3600e3));
  const byConsumer = new Map();
  for (const r of stats.rows) {
    const k = r.consumer || "(anonymous)";
    const a = byConsumer.get(k) || { requests: 0, errors: 0, p95: 0, tokens: 0, cost: 0 };
    a.requests += r.requests; a.errors += r.client_errors + r.server_errors;
    a.p95 = Math.max(a.p95, r.p95_ms); a.tokens += r.tokens_in + r.tokens_out; a.cost += r.cost;
    byConsumer.set(k, a);
  }
  fill("consumers", [...byConsumer.entries()].sort((a, b) => b[1].requests - a[1].requests).slice(0, 10).map(([k, a]) => [
    cell(k), cell(a.requests, "num"), cell(a.errors, "num"), cell(fixed(a.p95, 2), "num"), cell(a.tokens, "num"), cell(fixed(a.cost, 4), "num"),
  ]));
}

function renderReload(status) {
  const dl = document.getElementById("reload");
  const r = status.reload;
  const when = t => (t ? new Date(t * 1000).toLocaleString() : "never");
  const items = [
    ["generation", status.generation], ["reloads", r.reloads_total], ["failed reloads", r.failures_total],
    ["last success", when(r.last_success_unix)], ["last attempt", when(r.last_attempt_unix)],
    ["last error", r.last_error || "none"],
  ];
  dl.replaceChildren(...items.flatMap(([k, v]) => {
    const dt = document.createElement("dt"); dt.textContent = k;
    const dd = document.createElement("dd"); dd.textContent = String(v);
    if (k === "last error" && r.last_error) dd.className = "bad";
    return [dt, dd];
  }));
  fill("reloads", (r.history || []).slice().reverse().map(a => [
    cell(when(a.at_unix)),
    cell(a.error ? "failed" : "generation " + a.generation, a.error ? "bad" : "ok"),
    cell(a.error || ""),
  ]));
}

async function poll() {
  const state = document.getElementById("state");
  try {
    const [status, text] = await Promise.all([get("/-/status"), get("/metrics", true)]);
    const samples = parseMetrics(text);
    const now = Date.now();
    const addresses = Object.entries(status.listeners).map(([k, v]) => `${k} ${v}`).join(", ");
    document.getElementById("node").textContent = "this node: " + addresses;
    const routes = renderRoutes(status, samples, now);
    renderTargets(status);
    const pluginCalls = renderPlugins(samples, now);
    renderAi(samples);
    renderReload(status);
    await renderCallLog();
    previous = { time: now, totals: routes.totals, errors: routes.errors, buckets: routes.buckets, pluginCalls };
    document.getElementById("updated").textContent = "updated " + new Date(now).toLocaleTimeString();
    state.textContent = "live"; state.className = "pill";
  } catch (e) {
    state.textContent = e.message; state.className = "pill bad";
  }
}

document.getElementById("token-form").addEventListener("submit", e => {
  e.preventDefault();
  sessionStorage.setItem("sluice-admin-token", document.getElementById("token").value);
  document.getElementById("token-form").hidden = true;
  poll();
});
document.getElementById("filters").addEventListener("submit", e => {
  e.preventDefault();
  callFilter = new URLSearchParams();
  for (const [k, v] of new FormData(e.target)) if (v) callFilter.set(k, v);
  renderCallLog().catch(err => console.warn(err));
});
poll();
setInterval(poll, POLL_MS);
