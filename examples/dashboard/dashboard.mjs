// Scenario 2 of the quickstart: a real-time dashboard. A `dashboard` client joins
// integriguard:telemetry-stream (connects, disconnects, joins, commands, periodic metrics snapshots)
// and integriguard:dashboard-events (AI agents' activity), and also reads the telemetry WebSocket
// (port 9101), and prints what it sees, one line per event:
//   [bus integriguard:telemetry-stream] client_connected client_id=... client_type=...
//   [telemetry-ws] metrics_snapshot clients=3 in=120.0/s out=240.0/s
// Usage: node dashboard.mjs [--url ws://localhost:9100] [--telemetry ws://localhost:9101]
// In Node 20, the `ws` package must be installed here or in the current directory (npm install ws).
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';
import { ArqonBus } from '../../sdk/js/arqonbus.js';

const args = Object.fromEntries(process.argv.slice(2).join(' ').split('--').filter(Boolean)
  .map((a) => a.trim().split(/\s+/)).map(([k, v]) => [k, v]));
const url = args.url || process.env.ARQONBUS_URL || 'ws://localhost:9100';
const telemetryURL = args.telemetry || process.env.ARQONBUS_TELEMETRY_URL || 'ws://localhost:9101';

// Node 22 and browsers have a global WebSocket; Node 20 needs the ws package.
function loadWebSocket() {
  if (globalThis.WebSocket) return globalThis.WebSocket;
  for (const base of [import.meta.url, pathToFileURL(`${process.cwd()}/`).href]) {
    try { return createRequire(base)('ws'); } catch { /* try the next place */ }
  }
  console.error('this Node has no WebSocket: run `npm install ws` next to dashboard.mjs');
  process.exit(2);
}
const WebSocket = loadWebSocket();

// describe turns a telemetry or event envelope into one short line.
function describe(env) {
  const p = env.payload || {};
  const type = p.eventType || p.event || env.type;
  if (type === 'metrics_snapshot') {
    const byType = Object.entries(p.clients || {}).map(([t, n]) => `${t}:${n}`).join(',');
    return `metrics_snapshot clients=${p.active_clients} (${byType}) in=${fmt(p.messages_received_per_second)}/s ` +
      `out=${fmt(p.messages_sent_per_second)}/s rooms=${p.rooms} channels=${p.channels_total} storage=${p.storage && p.storage.status}`;
  }
  const fields = Object.entries(p.payload && typeof p.payload === 'object' ? { ...p, ...p.payload } : p)
    .filter(([k, v]) => k !== 'eventType' && k !== 'payload' && (typeof v !== 'object' || v === null))
    .map(([k, v]) => `${k}=${v}`);
  return `${type} ${fields.join(' ')}${env.from && env.from !== 'arqonbus_server' ? ` from=${env.from}` : ''}`;
}
const fmt = (n) => (typeof n === 'number' ? n.toFixed(1) : '?');

const bus = new ArqonBus(url, { clientType: 'dashboard', WebSocket });
bus.on('state', (s) => console.log(`[state] ${s}`));
bus.on('error', (e) => console.log(`[error] ${e.code} ${e.message}`));
await bus.connect();
console.log(`[state] connected to ${url} as ${bus.clientId} (node ${bus.nodeId})`);
for (const channel of ['integriguard:telemetry-stream', 'integriguard:dashboard-events']) {
  const sub = await bus.join(channel);
  sub.on('event', (env) => console.log(`[bus ${channel}] ${describe(env)}`));
}

// The telemetry WebSocket is read-only: a welcome, then every telemetry envelope.
// It has no resume: just reconnect after a pause.
function telemetry() {
  const ws = new WebSocket(telemetryURL);
  ws.onopen = () => console.log(`[telemetry-ws] connected to ${telemetryURL}`);
  ws.onmessage = (ev) => {
    try { console.log(`[telemetry-ws] ${describe(JSON.parse(String(ev.data)))}`); } catch { /* not JSON */ }
  };
  ws.onclose = () => { console.log('[telemetry-ws] closed, retrying in 2 s'); setTimeout(telemetry, 2000); };
  ws.onerror = () => {};
}
telemetry();
console.log('ready');

process.on('SIGINT', () => { bus.close(); process.exit(0); });
process.on('SIGTERM', () => { bus.close(); process.exit(0); });
