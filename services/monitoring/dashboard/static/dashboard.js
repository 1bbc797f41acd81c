// recsys dashboard: each page fetches api/<view> every refresh and redraws its charts with Plotly.react.
"use strict";

const CONFIG = { displayModeBar: false, responsive: true };
const LAYOUT = { margin: { l: 55, r: 15, t: 36, b: 40 }, height: 320, legend: { orientation: "h", y: -0.2 },
                 font: { size: 11 } };

function el(tag, attrs, text) {
  const node = document.createElement(tag);
  Object.entries(attrs || {}).forEach(([k, v]) => node.setAttribute(k, v));
  if (text !== undefined) node.textContent = text;
  return node;
}

function fmt(v, digits) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  return typeof v === "number" ? v.toFixed(digits === undefined ? 2 : digits) : String(v);
}

function pct(v) { return v === null || v === undefined ? "–" : (100 * v).toFixed(2) + "%"; }

function cards(items) {
  const box = document.getElementById("cards");
  box.replaceChildren(...items.map(([k, v, cls]) => {
    const c = el("div", { class: "card" });
    c.append(el("div", { class: "v " + (cls || "") }, v), el("div", { class: "k" }, k));
    return c;
  }));
}

function panel(id, kind) {
  let node = document.getElementById(id);
  if (!node) {
    node = el("div", { id: id, class: "panel" + (kind === "table" ? " table" : "") });
    document.getElementById("panels").append(node);
  }
  return node;
}

function chart(id, title, traces, extra) {
  const node = panel(id);
  const layout = Object.assign({}, LAYOUT, { title: { text: title, font: { size: 13 } } }, extra || {});
  if (!traces.length || traces.every(t => !(t.y || []).some(v => v !== null && v !== undefined))) {
    layout.annotations = [{ text: "no data yet", showarrow: false, xref: "paper", yref: "paper", x: 0.5, y: 0.5 }];
  }
  Plotly.react(node, traces, layout, CONFIG);
}

function lines(table, x, extra) {
  return Object.keys(table).sort().map(name =>
    Object.assign({ type: "scatter", mode: "lines+markers", marker: { size: 3 }, name: name, x: x, y: table[name],
                    connectgaps: false }, extra || {}));
}

function table(id, title, header, rows) {
  const node = panel(id, "table");
  const t = el("table");
  const head = el("tr");
  header.forEach(h => head.append(el("th", {}, h)));
  t.append(head);
  rows.forEach(r => {
    const tr = el("tr");
    r.forEach(cell => {
      const td = el("td");
      if (cell instanceof Node) td.append(cell); else td.textContent = cell;
      tr.append(td);
    });
    t.append(tr);
  });
  node.replaceChildren(el("h4", {}, title), rows.length ? t : el("div", { class: "empty" }, "none"));
}

function link(href, text) { const a = el("a", { href: href, target: "_blank" }, text); return a; }

const RENDER = {
  overview(d) {
    const c = d.current;
    cards([["answers/s", fmt(c.answers_per_s, 1)], ["Recommend p99 (ms)", fmt(c.recommend_p99_ms, 1)],
           ["degraded", pct(c.degraded_share), c.degraded_share > 0.01 ? "bad" : "ok"],
           ["errors/s", fmt(c.errors_per_s, 2), c.errors_per_s > 0 ? "bad" : "ok"],
           ["targets up", `${c.targets_up}/${c.targets}`, c.targets_up < c.targets ? "bad" : "ok"]]);
    chart("requests", `Requests per second (rate over ${d.rate_window_s} s)`, lines(d.requests_per_s, d.time));
    chart("hop_p99", "Gateway hops: p99 latency (ms)", lines(d.hop_p99_ms, d.time));
    chart("hop_p50", "Gateway hops: p50 latency (ms)", lines(d.hop_p50_ms, d.time));
    chart("service_p99", "Services: p99 handler latency (ms)", lines(d.service_p99_ms, d.time));
    const degraded = lines(d.degraded_share, d.time);
    degraded.unshift({ type: "scatter", mode: "lines", name: "all reasons", x: d.time, y: d.degraded_share_all,
                       line: { width: 3, color: "#1d2330" } });
    chart("degraded", "Degraded share of answers, by reason", degraded, { yaxis: { tickformat: ".1%" } });
    chart("errors", "gRPC errors per second (service, code)", lines(d.errors_per_s, d.time));
    table("targets", "Scraped processes", ["process", "address", "state"],
          d.targets.map(t => [t.name, t.address, t.up ? "up" : "DOWN"]));
  },

  experiments(d) {
    cards(d.variants.map(v => [`${v.variant}: CTR (${v.impressions} impressions)`, pct(v.ctr)]));
    const traces = [];
    Object.keys(d.over_time).sort().forEach((name, i) => {
      const s = d.over_time[name];
      traces.push({ type: "scatter", mode: "lines", x: s.time, y: s.ci_high, line: { width: 0 }, showlegend: false,
                    hoverinfo: "skip", legendgroup: name, name: name + " 95% high" });
      traces.push({ type: "scatter", mode: "lines", x: s.time, y: s.ci_low, line: { width: 0 }, fill: "tonexty",
                    fillcolor: `hsla(${(i * 97) % 360}, 70%, 50%, 0.15)`, showlegend: false, hoverinfo: "skip",
                    legendgroup: name, name: name + " 95% low" });
      traces.push({ type: "scatter", mode: "lines+markers", x: s.time, y: s.ctr, name: name, legendgroup: name,
                    line: { color: `hsl(${(i * 97) % 360}, 70%, 40%)` }, marker: { size: 4 } });
    });
    chart("ctr", `CTR per variant with 95% interval (last ${Math.round(d.window_s / 60)} min)`, traces,
          { yaxis: { tickformat: ".1%" } });
    const lifts = d.variants.filter(v => v.variant !== d.control);
    chart("lift", `CTR lift against ${d.control} (95% interval)`, [{
      type: "bar", x: lifts.map(v => v.variant), y: lifts.map(v => v.lift),
      error_y: { type: "data", symmetric: false, array: lifts.map(v => v.lift_high - v.lift),
                 arrayminus: lifts.map(v => v.lift - v.lift_low) } }], { yaxis: { tickformat: ".0%" } });
    chart("impressions", "Impressions per variant", Object.keys(d.over_time).sort().map(name => ({
      type: "bar", name: name, x: d.over_time[name].time, y: d.over_time[name].impressions })),
          { barmode: "stack" });
    chart("positions", "CTR by position (all variants)", [{ type: "scatter", mode: "lines+markers", name: "CTR",
      x: d.positions.map(p => p.position), y: d.positions.map(p => p.ctr) }],
          { xaxis: { title: { text: "position" } }, yaxis: { tickformat: ".1%" } });
    table("variants", "Variants", ["variant", "impressions", "clicks", "CTR", "CTR 95%", "lift", "lift 95%"],
          d.variants.map(v => [v.variant, v.impressions, v.clicks, pct(v.ctr),
                               `${pct(v.ctr_ci[0])} – ${pct(v.ctr_ci[1])}`,
                               v.variant === d.control ? "control" : pct(v.lift),
                               v.variant === d.control ? "" : `${pct(v.lift_low)} – ${pct(v.lift_high)}`]));
  },

  drift(d) {
    const last = d.windows[d.windows.length - 1];
    cards([["windows", String(d.windows.length)],
           ["latest dataset drift", last ? (last.dataset_drift ? "yes" : "no") : "–", last && last.dataset_drift ? "bad" : "ok"],
           ["latest drifted share", last ? pct(last.drifted_share) : "–"]]);
    const x = d.windows.map(w => w.end);
    const scores = {};
    Object.keys(d.columns).forEach(c => { scores[`${c} (${d.columns[c].method})`] = d.columns[c].score; });
    chart("scores", "Drift score per column, per window", lines(scores, x));
    chart("share", "Share of drifted columns", [
      { type: "scatter", mode: "lines+markers", name: "drifted share", x: x, y: d.windows.map(w => w.drifted_share) },
      { type: "scatter", mode: "lines", name: "dataset-drift threshold", x: x, y: x.map(() => d.share_threshold),
        line: { dash: "dash", color: "#c62828" } }], { yaxis: { tickformat: ".0%", range: [0, 1] } });
    table("windows", "Windows (newest first)", ["window end", "rows", "dataset drift", "drifted share",
                                                  "prediction drift", "CTR", "report"],
          d.windows.slice().reverse().map(w => [w.end, w.rows, w.dataset_drift ? "yes" : "no", pct(w.drifted_share),
                                                w.prediction_drift ? "yes" : "no", pct(w.ctr),
                                                w.report_url ? link(w.report_url, "Evidently report") : "(not drawn)"]));
  },

  models(d) {
    cards([["latest (champion)", d.latest || "–"],
           ["canary", d.canary ? `${d.canary.challenger} at ${pct(d.canary.share)}` : "none"],
           ["versions", String(d.versions.length)]]);
    const kinds = [...new Set(d.history.map(e => e.kind))].sort();
    chart("timeline", "Model lifecycle: gate decisions, canaries, promotions, rollbacks", kinds.map(k => ({
      type: "scatter", mode: "markers", name: k, marker: { size: 10 },
      x: d.history.filter(e => e.kind === k).map(e => e.at), y: d.history.filter(e => e.kind === k).map(() => k),
      text: d.history.filter(e => e.kind === k).map(e => JSON.stringify(e)), hoverinfo: "text+x" })),
          { yaxis: { type: "category" }, showlegend: false });
    table("served", "Which variant serves which version (from the impressions)", ["variant", "model", "version",
                                                                                    "last seen"],
          d.served.map(s => [s.variant, s.model, s.version, `${s.seen_s_ago} s ago`]));
    table("versions", "Registry versions", ["version", "created", "metrics", "latest"],
          d.versions.slice().reverse().map(v => [v.version, v.created_at,
            Object.entries(v.metrics).slice(0, 6).map(([k, x]) => `${k}=${fmt(x, 4)}`).join("  "),
            v.version === d.latest ? "latest" : ""]));
    table("history", "History (newest first)", ["at", "kind", "details"],
          d.history.map(e => [e.at, e.kind, Object.entries(e).filter(([k]) => k !== "at" && k !== "kind")
                                              .map(([k, v]) => `${k}=${typeof v === "object" ? JSON.stringify(v) : v}`)
                                              .join("  ")]));
  },

  alerts(d) {
    cards([["open", String(d.open.length), d.open.length ? "bad" : "ok"], ["past", String(d.past.length)]]);
    const row = a => [a.created, a.kind, a.message, a.report_url ? link(a.report_url, "report") : ""];
    table("open", `Open (raised in the last ${Math.round(d.open_s / 60)} min)`, ["raised", "kind", "message", ""],
          d.open.map(row));
    table("past", "Past", ["raised", "kind", "message", ""], d.past.map(row));
  },
};

async function refresh(view) {
  const status = document.getElementById("status");
  try {
    const resp = await fetch(`api/${view}`, { credentials: "same-origin" });
    if (resp.status === 401 || resp.status === 403) { window.location = "login"; return; }
    if (!resp.ok) throw new Error(`api/${view}: HTTP ${resp.status}`);
    RENDER[view](await resp.json());
    document.body.dataset.rendered = String(Number(document.body.dataset.rendered || 0) + 1);
    status.textContent = "updated " + new Date().toLocaleTimeString();
  } catch (err) {
    status.textContent = "update failed: " + err.message;
    console.warn(err);
  }
}

function startDashboard(view, refreshMs) {
  window.addEventListener("DOMContentLoaded", () => {
    refresh(view);
    setInterval(() => refresh(view), refreshMs);
  });
}
