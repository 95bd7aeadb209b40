// What one Node SDK client costs: the events per second it receives and the latency from publish
// to its 'event' callback, at a series of offered rates.
//
// Publishers are child processes sending raw frames (so that the SDK under test is only the
// receiver); each carries its send time (performance.timeOrigin + now(), comparable across
// processes). Start a server without the per-client rate limit first:
//   bin/arqonbus --port 9100 --rate-limit 0
//   node sdk/js/bench/receive.mjs --url ws://127.0.0.1:9100 --rates 5000,10000,20000,40000 --seconds 5
// Node 20 needs the ws package: run from e2e/node (or anywhere ws is installed).
// Prints one line per rate: offered, received/s, p50, p99 and max latency (ms), the receiver's CPU (% of a core).
import { fork } from 'node:child_process';
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';

const args = {};
for (let i = 2; i < process.argv.length; i += 2) args[process.argv[i].replace(/^--/, '')] = process.argv[i + 1];
const url = args.url || 'ws://127.0.0.1:9100';
const channel = args.channel || `bench:receive-${process.pid}`;

function loadWebSocket() {
  if (globalThis.WebSocket) return globalThis.WebSocket;
  for (const base of [import.meta.url, pathToFileURL(`${process.cwd()}/`).href]) {
    try { return createRequire(base)('ws'); } catch { /* next */ }
  }
  throw new Error('no WebSocket: run where the ws package is installed');
}
const now = () => performance.timeOrigin + performance.now();

if (args.role === 'publisher') {
  // Publisher: joins, then on each {rate, ms} message from the parent sends rate/s for ms.
  const WebSocket = loadWebSocket();
  const id = `arq_benchpub_${process.pid}`;
  const [room, ch] = channel.split(':');
  const ws = new WebSocket(`${url}${url.includes('?') ? '&' : '?'}client_id=${id}&client_type=service`);
  const head = `{"version":"1.0","type":"event","room":"${room}","channel":"${ch}","from":"${id}","timestamp":"`;
  let n = 0;
  ws.onopen = () => ws.send(JSON.stringify({ version: '1.0', id: 'arq_join', type: 'command', room, channel: ch, from: id,
    timestamp: new Date().toISOString(), payload: { command: 'join_channel', parameters: {} } }));
  ws.onmessage = (ev) => { if (String(ev.data).includes('"request_id":"arq_join"')) process.send({ ready: true }); };
  process.on('message', ({ rate, ms }) => {
    const end = Date.now() + ms;
    const perTick = rate / 100; // a tick every 10 ms
    let owed = 0;
    const tick = setInterval(() => {
      if (Date.now() >= end) { clearInterval(tick); process.send({ sent: n }); return; }
      owed += perTick;
      const ts = new Date().toISOString();
      for (; owed >= 1; owed--) {
        if (ws.bufferedAmount > 4 << 20) { owed = 0; break; } // never queue without bound
        ws.send(`{"id":"arq_b${process.pid}_${++n}",${head.slice(1)}${ts}","payload":{"t":${now()},"n":${n}}}`);
      }
    }, 10);
  });
} else {
  const { ArqonBus } = await import('../arqonbus.js');
  const rates = (args.rates || '5000,10000,20000,40000').split(',').map(Number);
  const seconds = Number(args.seconds || 5);
  const publishers = Number(args.publishers || 2);
  const bus = new ArqonBus(url, { WebSocket: loadWebSocket(), clientType: 'dashboard', heartbeatMs: 0 });
  bus.on('state', (s) => { if (s === 'reconnecting') console.error('receiver lost its connection (a slow consumer?)'); });
  await bus.connect();
  const sub = await bus.join(channel);
  let recording = false, count = 0, lat = [];
  sub.on('event', (env) => {
    if (!recording) return;
    count++;
    lat.push(now() - env.payload.t);
  });
  const kids = await Promise.all(Array.from({ length: publishers }, () => new Promise((resolve) => {
    const k = fork(new URL(import.meta.url).pathname, [...process.argv.slice(2), '--role', 'publisher', '--channel', channel]);
    k.once('message', () => resolve(k));
  })));
  const q = (a, p) => a[Math.min(a.length - 1, Math.floor(p * a.length))];
  console.log('offered/s  received/s  p50_ms  p99_ms  max_ms  receiver_cpu');
  for (const rate of rates) {
    const warm = 1000, ms = seconds * 1000;
    const sent = kids.map((k) => new Promise((r) => k.once('message', (m) => r(m.sent))));
    kids.forEach((k) => k.send({ rate: rate / publishers, ms: warm + ms }));
    await new Promise((r) => setTimeout(r, warm));
    count = 0; lat = []; recording = true;
    const t0 = now(), cpu0 = process.cpuUsage();
    await new Promise((r) => setTimeout(r, ms));
    recording = false;
    const secs = (now() - t0) / 1000;
    const cpu = process.cpuUsage(cpu0);
    const cpuPct = (cpu.user + cpu.system) / 1e4 / secs;
    await Promise.all(sent);
    await new Promise((r) => setTimeout(r, 500)); // drain before the next rate
    lat.sort((a, b) => a - b);
    console.log(`${String(rate).padStart(9)}  ${(count / secs).toFixed(0).padStart(10)}  ${q(lat, 0.5).toFixed(2).padStart(6)}  ` +
      `${q(lat, 0.99).toFixed(2).padStart(6)}  ${lat[lat.length - 1].toFixed(1).padStart(6)}  ${cpuPct.toFixed(0).padStart(10)}%`);
  }
  kids.forEach((k) => k.kill());
  bus.close();
}
