// ArqonBus live dashboard. Vanilla JS, no framework, nothing loaded from another host.
// Live data: the telemetry WebSocket (URL from /api/config). Fallback and reconciliation: /api/snapshot
// polled every 2 s.
(function () {
  "use strict";

  var POLL_MS = 2000;
  var WINDOW_S = 300; // chart: last 5 minutes
  var serverStart = 0; // unix seconds; the chart's axis never starts before it
  var MAX_EVENTS = 50;
  var CLIENT_TYPES = ["human", "ai-agent", "dashboard", "service"];

  var $ = function (id) { return document.getElementById(id); };
  var fmt = new Intl.NumberFormat("en-US");
  var fmt1 = new Intl.NumberFormat("en-US", { maximumFractionDigits: 1 });

  var state = {
    clients: { human: 0, "ai-agent": 0, dashboard: 0, service: 0 },
    total: 0,
    channels: new Map(), // "room\u0000channel" -> {room, channel, members, published}
    events: 0,
    wsOpen: false,
    pollOK: false,
    lastTelemetrySnapshot: 0, // ms, when the last metrics_snapshot arrived
    wsURL: "",
  };

  // ---------- small helpers ----------
  function setText(id, v) {
    var el = $(id);
    if (el && el.textContent !== String(v)) el.textContent = String(v);
  }
  function num(v) { return typeof v === "number" && isFinite(v) ? v : Number(v) || 0; }
  function n(v) { return fmt.format(num(v)); }
  function rate(v) { v = num(v); return v >= 100 ? fmt.format(Math.round(v)) : fmt1.format(v); }
  function sum(o) { var s = 0; for (var k in o) if (Object.prototype.hasOwnProperty.call(o, k)) s += num(o[k]); return s; }
  function duration(sec) {
    sec = Math.floor(num(sec));
    var d = Math.floor(sec / 86400), h = Math.floor(sec % 86400 / 3600), m = Math.floor(sec % 3600 / 60), s = sec % 60;
    if (d) return d + "d " + h + "h";
    if (h) return h + "h " + m + "m";
    if (m) return m + "m " + s + "s";
    return s + "s";
  }
  function clock(ts) {
    var d = ts ? new Date(ts) : new Date();
    if (isNaN(d.getTime())) d = new Date();
    return d.toLocaleTimeString([], { hour12: false });
  }
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function touched() { setText("last-update", clock()); }

  // ---------- connection indicator ----------
  function renderConn() {
    var c = $("conn"), st, txt;
    if (state.wsOpen) { st = "live"; txt = "live"; }
    else if (state.pollOK) { st = "polling"; txt = "polling (stream reconnecting)"; }
    else if (state.everConnected) { st = "offline"; txt = "offline, retrying"; }
    else { st = "connecting"; txt = "connecting…"; }
    c.setAttribute("data-state", st);
    setText("conn-text", txt);
  }

  // ---------- clients ----------
  function renderClients() {
    CLIENT_TYPES.forEach(function (t) { setText("clients-" + t, n(state.clients[t])); });
    setText("clients-total", n(state.total));
  }
  function setClients(byType, total) {
    if (byType && typeof byType === "object") {
      CLIENT_TYPES.forEach(function (t) { state.clients[t] = num(byType[t]); });
    }
    state.total = total !== undefined && total !== null ? num(total) : sum(state.clients);
    renderClients();
  }
  function bumpClient(type, delta) {
    if (!Object.prototype.hasOwnProperty.call(state.clients, type)) type = "human";
    state.clients[type] = Math.max(0, state.clients[type] + delta);
    state.total = Math.max(0, state.total + delta);
    renderClients();
  }

  // ---------- storage / health ----------
  function renderStorage(st) {
    if (!st) return;
    var status = st.status || "ok";
    var b = $("storage-status");
    b.setAttribute("data-state", status);
    setText("storage-status", status);
    setText("storage-mode", st.mode || "—");
    setText("storage-backlog", n(st.backlog));
    var e = $("storage-error");
    if (st.last_error && status !== "ok") { e.hidden = false; e.textContent = st.last_error; }
    else e.hidden = true;
  }
  // ---------- cluster ----------
  function renderCluster(c) {
    var card = $("cluster-card");
    if (!c) { card.hidden = true; return; }
    card.hidden = false;
    var status = c.reachable ? "ok" : "degraded";
    $("cluster-status").setAttribute("data-state", status);
    setText("cluster-status", c.reachable ? (c.nodes || []).length + " nodes" : "on its own");
    var body = $("cluster-nodes");
    while (body.firstChild) body.removeChild(body.firstChild);
    (c.nodes || []).forEach(function (nd) {
      var tr = document.createElement("tr");
      if (nd.self) tr.className = "self";
      [nd.node_id + (nd.self ? " (this node)" : ""), n(nd.clients), nd.started ? new Date(nd.started).toLocaleTimeString() : "—"]
        .forEach(function (v, i) {
          var td = document.createElement("td");
          if (i === 1) td.className = "num";
          td.textContent = v;
          tr.appendChild(td);
        });
      body.appendChild(tr);
    });
    setText("cluster-published", n(c.events_published));
    setText("cluster-received", n(c.events_received));
    setText("cluster-local-only", n(c.events_local_only));
  }
  function renderHealth(status) {
    var h = $("health");
    h.setAttribute("data-state", status || "unknown");
    setText("health", status || "—");
  }

  // ---------- chart ----------
  var chart = null;
  var series = [[], [], []]; // t (s), in/s, out/s
  function makeChart() {
    var box = $("chart");
    if (typeof uPlot === "undefined" || !box) return;
    var axis = {
      stroke: "#8a94a6",
      grid: { stroke: "rgba(255,255,255,0.05)", width: 1 },
      ticks: { stroke: "rgba(255,255,255,0.08)", width: 1 },
      font: "11px system-ui, sans-serif",
    };
    var opts = {
      width: Math.max(300, box.clientWidth),
      height: Math.max(220, box.clientHeight || 260),
      legend: { show: false },
      cursor: { drag: { x: false, y: false }, points: { size: 6 } },
      scales: {
        x: { time: true, range: function () {
          var now = Date.now() / 1000;
          // A young server gets an axis that starts at its start (at least a minute wide), not an empty past.
          var from = Math.max(now - WINDOW_S, Math.min(serverStart, now - 60));
          return [from, now];
        } },
        y: { range: function (u, min, max) { return [0, Math.max(5, Math.ceil((max || 0) * 1.15))]; } },
      },
      axes: [
        Object.assign({}, axis, { space: 70, values: function (u, vals) {
          return vals.map(function (v) {
            var d = new Date(v * 1000);
            return d.toLocaleTimeString([], { hour12: false, hour: "2-digit", minute: "2-digit", second: v % 60 ? "2-digit" : undefined });
          });
        } }),
        Object.assign({}, axis, { size: 56, values: function (u, vals) { return vals.map(function (v) { return rate(v); }); } }),
      ],
      series: [
        {},
        { label: "in/s", stroke: "#22d3ee", width: 2, fill: "rgba(34,211,238,0.10)" },
        { label: "out/s", stroke: "#a78bfa", width: 2, fill: "rgba(167,139,250,0.08)" },
      ],
    };
    chart = new uPlot(opts, series, box);
    if (typeof ResizeObserver !== "undefined") {
      new ResizeObserver(function () {
        chart.setSize({ width: Math.max(300, box.clientWidth), height: Math.max(220, box.clientHeight) });
      }).observe(box);
    }
  }
  function addRatePoint(tsSec, rin, rout) {
    var t = series[0];
    if (t.length && tsSec <= t[t.length - 1]) {
      if (tsSec > t[t.length - 1] - 0.5) return; // same instant
      tsSec = t[t.length - 1] + 0.001;
    }
    t.push(tsSec); series[1].push(num(rin)); series[2].push(num(rout));
    var cut = tsSec - WINDOW_S - 5;
    while (t.length && t[0] < cut) { t.shift(); series[1].shift(); series[2].shift(); }
    setText("rate-in", rate(rin));
    setText("rate-out", rate(rout));
    if (chart) chart.setData(series);
  }
  // keep the time axis moving when no data comes
  setInterval(function () { if (chart) chart.setData(series); }, 5000);

  // ---------- channels table ----------
  function chKey(room, channel) { return String(room) + "\u0000" + String(channel); }
  var chDirty = false;
  function renderChannels() {
    chDirty = false;
    var rows = Array.from(state.channels.values());
    rows.sort(function (a, b) { return num(b.members) - num(a.members) || (a.room + ":" + a.channel).localeCompare(b.room + ":" + b.channel); });
    var maxM = rows.reduce(function (m, r) { return Math.max(m, num(r.members)); }, 1);
    var body = $("channels-body");
    var frag = document.createDocumentFragment();
    rows.slice(0, 200).forEach(function (r) {
      var tr = el("tr");
      tr.setAttribute("data-room", r.room);
      tr.setAttribute("data-channel", r.channel);
      if (r.flash) { tr.className = "flash"; r.flash = false; }
      tr.appendChild(el("td", null, r.room)).title = r.room;
      tr.appendChild(el("td", null, r.channel)).title = r.channel;
      var tdm = el("td", "num");
      var bar = el("span", "bar");
      bar.style.width = Math.round(40 * num(r.members) / maxM) + "px";
      tdm.appendChild(bar);
      tdm.appendChild(document.createTextNode(n(r.members)));
      tr.appendChild(tdm);
      tr.appendChild(el("td", "num", r.published === undefined ? "—" : n(r.published)));
      frag.appendChild(tr);
    });
    body.replaceChildren(frag);
    $("channels-empty").hidden = rows.length > 0;
  }
  function scheduleChannels() {
    if (chDirty) return;
    chDirty = true;
    requestAnimationFrame(renderChannels);
  }
  function setChannels(list) {
    if (!Array.isArray(list)) return;
    var next = new Map();
    list.forEach(function (c) {
      if (!c) return;
      var k = chKey(c.room, c.channel);
      var old = state.channels.get(k);
      next.set(k, { room: String(c.room), channel: String(c.channel), members: num(c.members), published: c.published,
        flash: old ? old.members !== num(c.members) : false });
    });
    state.channels = next;
    scheduleChannels();
  }
  function touchChannel(room, channel, members, remove) {
    if (room === undefined || channel === undefined) return;
    var k = chKey(room, channel);
    if (remove) { state.channels.delete(k); scheduleChannels(); return; }
    var r = state.channels.get(k) || { room: String(room), channel: String(channel), members: 0 };
    if (members !== undefined && members !== null) r.members = num(members);
    r.flash = true;
    state.channels.set(k, r);
    scheduleChannels();
  }

  // ---------- events list ----------
  var EV_CLASS = {
    client_connected: "ev-connect", client_disconnected: "ev-disconnect",
    channel_joined: "ev-channel", channel_left: "ev-channel", channel_created: "ev-channel", channel_deleted: "ev-channel",
    command_executed: "ev-command", storage_degraded: "ev-storage-bad", storage_recovered: "ev-storage-ok",
    agent_activity: "ev-agent", welcome: "ev-system", system: "ev-system",
  };
  function where(p) {
    if (!p.room && !p.channel) return "";
    return (p.room !== undefined ? p.room : "?") + ":" + (p.channel !== undefined ? p.channel : "?");
  }
  // describe returns [text pieces]: strings are plain, {id: x} render monospace, {dim: x} muted.
  function describe(type, p) {
    switch (type) {
      case "client_connected":
      case "client_disconnected":
        return [{ id: p.client_id }, { dim: " " + (p.client_type || "") + (p.screen_name ? " · " + p.screen_name : "") }];
      case "channel_joined":
      case "channel_left":
        return [{ id: p.client_id }, type === "channel_joined" ? " → " : " ← ", where(p),
          { dim: p.members !== undefined ? " (" + n(p.members) + " members)" : "" }];
      case "channel_created":
      case "channel_deleted":
        return [where(p), p.client_id ? { dim: " by " } : "", p.client_id ? { id: p.client_id } : ""];
      case "command_executed":
        return [String(p.command || p.name || "command"), p.client_id ? { dim: " by " } : "", p.client_id ? { id: p.client_id } : "",
          p.status || p.success !== undefined ? { dim: " · " + (p.status || (p.success ? "ok" : "error")) } : ""];
      case "storage_degraded":
      case "storage_recovered":
        return [String(p.mode || ""), { dim: " " + String(p.status || "") + (p.error || p.last_error ? " · " + (p.error || p.last_error) : "") }];
      case "agent_activity":
        return [{ id: p.agent_id || p.client_id }, " " + String(p.activity || ""), where(p) ? " in " + where(p) : "",
          { dim: (p.personality ? " · " + p.personality : "") + (p.count !== undefined ? " ×" + n(p.count) : "") }];
      case "metrics_snapshot":
        return [{ dim: n(p.active_clients) + " clients · " + rate(p.messages_received_per_second) + " in/s · " + rate(p.messages_sent_per_second) + " out/s" }];
      default:
        return [{ dim: generic(p) }];
    }
  }
  function generic(p) {
    var parts = [];
    for (var k in p) {
      if (!Object.prototype.hasOwnProperty.call(p, k) || k === "eventType") continue;
      var v = p[k];
      if (v !== null && typeof v === "object") v = JSON.stringify(v);
      parts.push(k + "=" + v);
      if (parts.length >= 6) break;
    }
    return parts.join(" ");
  }
  function addEvent(type, p, ts) {
    if (type === "metrics_snapshot") return; // periodic; shown in the numbers and chart, not the list
    state.events++;
    setText("events-count", n(state.events));
    var list = $("events");
    var li = el("li", (EV_CLASS[type] || "ev-other") + " new");
    li.setAttribute("data-event-type", type);
    if (p.client_id) li.setAttribute("data-client-id", p.client_id);
    li.appendChild(el("span", "ev-time", clock(ts)));
    li.appendChild(el("span", "ev-type", type));
    var txt = el("span", "ev-text");
    describe(type, p).forEach(function (piece) {
      if (piece === "" || piece === undefined || piece === null) return;
      if (typeof piece === "string") txt.appendChild(document.createTextNode(piece));
      else if (piece.id !== undefined) { if (piece.id) txt.appendChild(el("span", "id", piece.id)); }
      else if (piece.dim) txt.appendChild(el("span", "dim", piece.dim));
    });
    txt.title = txt.textContent;
    li.appendChild(txt);
    list.insertBefore(li, list.firstChild);
    while (list.children.length > MAX_EVENTS) list.removeChild(list.lastChild);
    $("events-empty").hidden = true;
  }

  // ---------- telemetry handling ----------
  function onEnvelope(env) {
    if (!env || typeof env !== "object") return;
    touched();
    if (env.type === "system") {
      var sp = env.payload && typeof env.payload === "object" ? env.payload : {};
      addEvent(env.channel === "welcome" ? "welcome" : "system", Object.assign({}, sp), env.timestamp);
      return;
    }
    var p = env.payload && typeof env.payload === "object" ? env.payload : {};
    if (p.data && typeof p.data === "object" && !Array.isArray(p.data)) p = Object.assign({}, p.data, p);
    var type = String(p.eventType || p.event_type || env.type || "event");
    switch (type) {
      case "client_connected": bumpClient(p.client_type, +1); break;
      case "client_disconnected": bumpClient(p.client_type, -1); break;
      case "channel_joined":
      case "channel_left":
      case "channel_created":
        touchChannel(p.room, p.channel, p.members, false); break;
      case "channel_deleted": touchChannel(p.room, p.channel, 0, true); break;
      case "storage_degraded":
      case "storage_recovered":
        renderStorage({ mode: p.mode || $("storage-mode").textContent, status: p.status || (type === "storage_degraded" ? "degraded" : "ok"),
          backlog: p.backlog, last_error: p.error || p.last_error });
        break;
      case "metrics_snapshot":
        state.lastTelemetrySnapshot = Date.now();
        setClients(p.clients, p.active_clients);
        if (p.rooms !== undefined) setText("rooms-total", n(Array.isArray(p.rooms) ? p.rooms.length : p.rooms));
        if (Array.isArray(p.channels)) { setText("channels-total", n(p.channels.length)); setChannels(p.channels); }
        if (p.storage) renderStorage(p.storage);
        var ts = Date.parse(env.timestamp);
        addRatePoint((isNaN(ts) ? Date.now() : ts) / 1000, p.messages_received_per_second, p.messages_sent_per_second);
        $("channels-hint").textContent = "live · " + clock(env.timestamp);
        break;
    }
    addEvent(type, p, env.timestamp);
  }

  var ws = null, backoff = 500, wsTimer = null;
  function connectWS() {
    clearTimeout(wsTimer);
    if (!state.wsURL) return;
    try { ws = new WebSocket(state.wsURL); } catch (e) { scheduleWS(); return; }
    ws.onopen = function () { state.wsOpen = true; state.everConnected = true; backoff = 500; renderConn(); };
    ws.onmessage = function (ev) {
      if (typeof ev.data !== "string") return;
      var env;
      try { env = JSON.parse(ev.data); } catch (e) { return; }
      try { onEnvelope(env); } catch (e) { if (window.console) console.error("telemetry", e); }
    };
    ws.onclose = function () { ws = null; state.wsOpen = false; renderConn(); scheduleWS(); };
    ws.onerror = function () { /* onclose follows */ };
  }
  function scheduleWS() {
    clearTimeout(wsTimer);
    var wait = backoff * (0.75 + Math.random() * 0.5);
    backoff = Math.min(backoff * 2, 15000);
    wsTimer = setTimeout(connectWS, wait);
  }

  // ---------- polling ----------
  var pollFails = 0;
  function applySnapshot(s) {
    setText("node-id", s.node_id || "—");
    setText("version", s.version || "—");
    setText("uptime", duration(s.uptime_seconds));
    if (s.uptime_seconds >= 0) serverStart = Date.now() / 1000 - s.uptime_seconds;
    renderHealth(s.health_status);
    setClients(s.clients_by_type, s.active_clients);
    setText("rooms-total", n(s.rooms));
    setText("channels-total", n(s.channels));
    setText("ws-conns", n(s.websocket_connections));
    setText("tel-conns", n(s.telemetry_connections));
    setText("msgs-in", n(s.messages_received));
    setText("msgs-out", n(s.messages_sent));
    setText("commands", n(s.commands));
    setText("errors", n(sum(s.errors_by_code || {})));
    setText("persist-depth", n(s.persist_queue_depth));
    setText("storage-writes", n(s.storage_writes));
    setText("storage-errors", n(s.storage_errors));
    setText("tel-dropped", n(s.telemetry_dropped));
    renderStorage(s.storage);
    renderCluster(s.cluster);
    // Chart from polling only while the live stream gives no snapshots.
    if (Date.now() - state.lastTelemetrySnapshot > 10000) {
      var ts = Date.parse(s.server_time);
      addRatePoint((isNaN(ts) ? Date.now() : ts) / 1000, s.messages_received_per_second, s.messages_sent_per_second);
    }
    touched();
  }
  function poll() {
    fetch("api/snapshot", { cache: "no-store" })
      .then(function (r) { if (!r.ok) throw new Error("HTTP " + r.status); return r.json(); })
      .then(function (s) { pollFails = 0; state.pollOK = true; state.everConnected = true; applySnapshot(s); })
      .catch(function () { pollFails++; state.pollOK = false; })
      .then(function () {
        renderConn();
        setTimeout(poll, pollFails ? Math.min(POLL_MS * Math.pow(2, pollFails - 1), 15000) : POLL_MS);
      });
  }
  function loadConfig(attempt) {
    fetch("api/config", { cache: "no-store" })
      .then(function (r) { if (!r.ok) throw new Error("HTTP " + r.status); return r.json(); })
      .then(function (c) {
        state.wsURL = c && c.telemetry_ws ? String(c.telemetry_ws) : "";
        setText("ws-url", state.wsURL || "not configured");
        connectWS();
      })
      .catch(function () { setTimeout(function () { loadConfig(attempt + 1); }, Math.min(500 * Math.pow(2, attempt), 15000)); });
  }

  // ---------- start ----------
  renderConn();
  renderClients();
  renderChannels();
  makeChart();
  loadConfig(0);
  poll();
})();
