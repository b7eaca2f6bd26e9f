// asgi-perf live dashboard: polls ./summary, ./history and ./alerts (relative to this page) and
// renders them with plain DOM calls; the charts are drawn by the vendored uPlot (./uplot.js).
// No framework, no CDN, no build step. Every value is written with textContent, never as markup:
// route names and SQL text come from the application.
"use strict";
(function () {
  // The server writes the clamped ?refresh= into data-refresh; clamp again so no value can make
  // a timer overflow (setInterval treats delays past 2^31-1 ms as 0 and polls in a tight loop).
  const refresh = Math.min(3600, Math.max(1, Number(document.body.dataset.refresh) || 5)) * 1000;
  // Rates and percentiles cover the last `win` seconds, never less than the refresh period, so
  // a request between two polls is always in the next figures (the server clamps it too).
  const win = Math.min(300, Math.max(refresh / 1000, Number(document.body.dataset.window) || 30));
  const $ = (id) => document.getElementById(id);

  const dash = "\u2013";
  const num = (v, d) => (v === null || v === undefined ? dash : Number(v).toFixed(d));
  const int = (v) => (v === null || v === undefined ? dash : String(Math.round(v)));
  const ms = (s) => (s === null || s === undefined ? dash : (s * 1000).toFixed(1) + " ms");
  const pct = (r) => (r === null || r === undefined ? dash : (r * 100).toFixed(1) + "%");
  const pct100 = (p) => (p === null || p === undefined ? dash : Number(p).toFixed(1) + "%");
  const bytes = (b) => (b === null || b === undefined ? dash : (b / 1048576).toFixed(1) + " MiB");
  const dur = (s) => {
    if (s === null || s === undefined) return dash;
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = Math.floor(s % 60);
    return (h ? h + "h " : "") + (h || m ? m + "m " : "") + sec + "s";
  };
  const secs = (s) => (s < 120 ? Math.round(s) + " s" : dur(s));

  function cell(text, cls, field) {
    const td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    if (field) td.dataset.field = field;
    return td;
  }

  function fillTable(id, rows, key, columns) {
    const body = $(id).tBodies[0];
    body.replaceChildren();
    for (const row of rows) {
      const tr = document.createElement("tr");
      tr.dataset.key = key(row);
      for (const [field, fmt, cls] of columns) tr.append(cell(fmt(row), cls, field));
      body.append(tr);
    }
    if (!rows.length) {
      const tr = document.createElement("tr");
      const td = cell("no data yet", "text muted");
      td.colSpan = $(id).tHead.rows[0].cells.length;
      tr.append(td);
      body.append(tr);
    }
  }

  function fillKv(id, pairs) {
    const dl = $(id);
    dl.replaceChildren();
    for (const [label, value, field] of pairs) {
      const dt = document.createElement("dt");
      dt.textContent = label;
      const dd = document.createElement("dd");
      dd.textContent = value;
      dd.dataset.field = field;
      dl.append(dt, dd);
    }
  }

  // One uPlot per chart, made once and fed new data on every poll: a time axis, a value axis
  // and the values under the cursor in its legend.
  const charts = {};
  const css = getComputedStyle(document.documentElement);
  const colour = (name) => css.getPropertyValue(name).trim();
  const HEIGHT = 150;

  function makeChart(id, label, fmt) {
    const el = $(id);
    const axis = {
      stroke: colour("--muted"),
      grid: { stroke: colour("--grid"), width: 1 },
      ticks: { stroke: colour("--grid"), width: 1 },
    };
    const plot = new uPlot(
      {
        width: Math.max(200, el.clientWidth),
        height: HEIGHT,
        scales: { x: { time: true }, y: { range: (u, min, max) => [0, max > 0 ? max * 1.1 : 1] } },
        series: [
          { label: "time", value: (u, v) => (v === null ? dash : new Date(v * 1000).toLocaleTimeString()) },
          {
            label: label,
            stroke: colour("--accent"),
            width: 1.5,
            spanGaps: false,
            points: { show: false },
            value: (u, v) => (v === null || v === undefined ? dash : fmt(v)),
          },
        ],
        axes: [axis, Object.assign({ size: 56 }, axis)],
        cursor: { drag: { x: false, y: false } },
        // Off the plot, the legend shows the latest point instead of blanks.
        hooks: { setCursor: [(u) => { if (u.cursor.idx === null || u.cursor.idx === undefined) showLast(u); }] },
      },
      [[], []],
      el,
    );
    new ResizeObserver(() => {
      const width = Math.max(200, el.clientWidth);
      if (width !== plot.width) plot.setSize({ width: width, height: HEIGHT });
    }).observe(el);
    charts[id] = plot;
    return plot;
  }

  function showLast(u) {
    const n = u.data[0].length;
    if (n) u.setLegend({ idx: n - 1 });
  }

  function chart(id, times, values, label, fmt) {
    const plot = charts[id] || makeChart(id, label, fmt);
    const points = values.filter((v) => v !== null && v !== undefined);
    const el = $(id);
    el.dataset.points = String(points.length);
    el.dataset.last = points.length ? fmt(points[points.length - 1]) : "";
    plot.setData([times, values]);
    if (!(plot.cursor.left >= 0)) showLast(plot);
  }

  function renderSummary(s) {
    const h = s.http;
    $("http-rate").textContent = num(h.rate, 1);
    $("http-p95").textContent = ms(h.p95);
    $("http-error-rate").textContent = pct(h.error_rate);
    $("http-requests").textContent = int(h.requests);
    $("http-in-progress").textContent = int(h.in_progress);
    $("alerts-firing").textContent = int(s.alerts.firing.length);
    $("uptime").textContent = dur(s.uptime_seconds);
    // The time the figures really cover: shorter than asked while the app is young.
    $("window").textContent = "last " + secs(s.window.seconds);
    $("window").dataset.seconds = String(s.window.seconds);
    fillTable("routes", h.routes, (r) => `${r.method} ${r.route}`, [
      ["method", (r) => r.method],
      ["route", (r) => r.route, "text"],
      ["requests", (r) => int(r.requests)],
      ["rate", (r) => num(r.rate, 2)],
      ["errors", (r) => int(r.errors)],
      ["error_rate", (r) => pct(r.error_rate)],
      ["avg", (r) => ms(r.avg)],
      ["p50", (r) => ms(r.p50)],
      ["p95", (r) => ms(r.p95)],
      ["p99", (r) => ms(r.p99)],
    ]);
    fillTable("db", s.db.engines, (e) => e.engine, [
      ["engine", (e) => e.engine],
      ["queries", (e) => int(e.queries)],
      ["rate", (e) => num(e.rate, 2)],
      ["errors", (e) => int(e.errors)],
      ["p95", (e) => ms(e.p95)],
      ["slow", (e) => int(e.slow)],
      ["pool_size", (e) => int(e.pool.size)],
      ["checked_out", (e) => int(e.pool.checked_out)],
      ["overflow", (e) => int(e.pool.overflow)],
    ]);
    fillTable("caches", s.cache.caches, (c) => c.cache, [
      ["cache", (c) => c.cache],
      ["hit_ratio", (c) => pct(c.hit_ratio)],
      ["hits", (c) => int(c.hits)],
      ["misses", (c) => int(c.misses)],
      ["entries", (c) => int(c.entries)],
      ["evictions", (c) => int(Object.values(c.evictions).reduce((a, b) => a + b, 0))],
      ["redis_hit_ratio", (c) => (c.redis ? pct(c.redis.hit_ratio) : dash)],
      ["redis_errors", (c) => (c.redis ? int(c.redis.errors) : dash)],
    ]);
    fillTable("slow-queries", s.db.slow_query_groups, (q) => q.fingerprint, [
      ["engine", (q) => q.engine],
      ["operation", (q) => q.operation],
      ["count", (q) => int(q.count)],
      ["p95", (q) => ms(q.p95)],
      ["max", (q) => ms(q.max)],
      ["last_seen", (q) => secs(Math.max(0, s.generated_at - q.last_seen)) + " ago"],
      ["sql", (q) => q.sql, "sql"],
    ]);
    const t = s.timers.timers;
    fillTable("timers", Object.keys(t).map((k) => Object.assign({ name: k }, t[k])), (x) => x.name, [
      ["name", (x) => x.name],
      ["count", (x) => int(x.count)],
      ["avg", (x) => ms(x.avg)],
      ["min", (x) => ms(x.min)],
      ["max", (x) => ms(x.max)],
      ["p95", (x) => ms(x.p95)],
      ["errors", (x) => int(x.errors)],
    ]);
    const io = s.socketio;
    fillKv("socketio", [
      ["connections", int(io.connections), "connections"],
      ["events in/s", num(io.events_received_rate, 1), "events_received_rate"],
      ["events out/s", num(io.events_emitted_rate, 1), "events_emitted_rate"],
      ["events in", int(io.events_received), "events_received"],
      ["events out", int(io.events_emitted), "events_emitted"],
      ["batches", int(io.batches), "batches"],
      ["items per batch", num(io.batch_items_avg, 1), "batch_items_avg"],
      ["batch wait p95", ms(io.batch_wait_p95), "batch_wait_p95"],
      ["pending items", int(io.batch_pending), "batch_pending"],
      ["queue depth (max)", int(io.queue_depth_max), "queue_depth_max"],
    ]);
    const sys = s.system;
    fillKv("system", [
      ["CPU", pct100(sys.cpu_percent), "cpu_percent"],
      ["memory", pct100(sys.memory_percent), "memory_percent"],
      ["disk " + sys.disk_path, pct100(sys.disk_percent), "disk_percent"],
      ["process CPU", pct100(sys.process_cpu_percent), "process_cpu_percent"],
      ["process RSS", bytes(sys.rss_bytes), "rss_bytes"],
      ["open files", int(sys.open_fds), "open_fds"],
    ]);
  }

  function renderHistory(h) {
    const snaps = h.snapshots || [];
    const times = snaps.map((x) => x.time);
    const scaled = (v, k) => (v === null || v === undefined ? null : v * k);
    chart("chart-rate", times, snaps.map((x) => x.http.rate), "req/s", (v) => num(v, 2));
    chart("chart-p95", times, snaps.map((x) => scaled(x.http.p95, 1000)), "p95", (v) => num(v, 1) + " ms");
    chart("chart-errors", times, snaps.map((x) => scaled(x.http.error_rate, 100)), "errors", (v) => num(v, 1) + "%");
    chart("chart-cpu", times, snaps.map((x) => x.system.cpu_percent), "CPU", (v) => num(v, 1) + "%");
    $("charts-note").textContent = h.enabled
      ? `Charts: one point per monitor sample (each covering ${secs(h.interval)}), the last ${snaps.length}; hover for values.`
      : "Charts need the monitor: asgi_perf.operations.enable(app, registry).";
  }

  function renderAlerts(a) {
    const list = $("alerts");
    list.replaceChildren();
    const active = (a.alerts || []).filter((x) => x.state === "firing" || x.state === "pending");
    for (const x of active) {
      const li = document.createElement("li");
      li.className = x.severity;
      li.dataset.rule = x.rule;
      li.dataset.state = x.state;
      const ack = x.acknowledged_by ? " · acknowledged by " + x.acknowledged_by : "";
      const silenced = x.silenced_until ? " · silenced" : "";
      li.textContent = `${x.rule} (${x.severity}, ${x.state}): ${x.metric} ${x.op} ${x.threshold}, value ${num(x.value, 3)}${ack}${silenced}`;
      list.append(li);
    }
    if (!active.length) {
      const li = document.createElement("li");
      li.className = "none";
      li.textContent = a.enabled ? "no alerts firing" : "alerts are not enabled";
      list.append(li);
    }
  }

  async function get(path) {
    const response = await fetch(path, { cache: "no-store", credentials: "same-origin" });
    if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
    return response.json();
  }

  async function tick() {
    try {
      const [summary, history, alerts] = await Promise.all([
        get("summary?window=" + win), get("history?limit=120"), get("alerts"),
      ]);
      renderSummary(summary);
      renderHistory(history);
      renderAlerts(alerts);
      $("status").textContent = "updated " + new Date(summary.generated_at * 1000).toLocaleTimeString();
      $("status").classList.remove("bad");
      document.body.dataset.state = "ready";
    } catch (err) {
      $("status").textContent = "update failed: " + err.message;
      $("status").classList.add("bad");
      if (document.body.dataset.state === "loading") document.body.dataset.state = "error";
    }
  }

  $("refresh").textContent = secs(refresh / 1000);
  tick();
  setInterval(tick, refresh);
})();
