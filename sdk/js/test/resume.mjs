// The resume test, in Node (node.mjs) or a browser page (page.html): a publisher sends {seq} with ack
// at a steady rate to a channel a subscriber has joined. After `before` acks it emits
// {event:'ready'}: the Go test then kills the server (SIGKILL) and restarts it on the same port.
// Both clients reconnect by themselves; `after` more acks later the publisher stops, the
// subscriber catches up, and {event:'done', acked, received, failed, hang, ...} reports what the
// Go test checks: received strictly increasing, every acked seq received.
// A command is in flight (to a handler that never answers) at the kill: it must reject with
// DISCONNECTED at once, not hang.

export async function run({ ArqonBus, url, WebSocket, emit, before = 200, after = 300, intervalMs = 5, maxMs = 40000 }) {
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  const suffix = Math.random().toString(36).slice(2, 8);
  const channel = `sdk:resume-${suffix}`;
  const opts = { WebSocket, reconnect: { minDelayMs: 100, maxDelayMs: 1000 }, commandTimeoutMs: 20000 };
  const pub = new ArqonBus(url, { ...opts, clientId: `arq_pub_${suffix}` });
  const sub = new ArqonBus(url, { ...opts, clientId: `arq_sub_${suffix}` });
  const t0 = Date.now();
  const states = { pub: [], sub: [] };
  const watch = (name, bus) => bus.on('state', (s) => states[name].push(`${s}@${Date.now() - t0}`));
  watch('pub', pub);
  watch('sub', sub);
  const errors = [];
  pub.on('error', (e) => errors.push(`pub ${e.code}: ${e.message}`));
  sub.on('error', (e) => errors.push(`sub ${e.code}: ${e.message}`));
  const gaps = [];
  sub.on('gap', (g) => gaps.push(g));
  const acked = [], failed = [], received = [];
  const out = { event: 'done', acked, received, failed, gaps, errors, states };
  try {
    await pub.connect();
    await sub.connect();
    await pub.join(channel);
    await pub.handle(channel, 'hang', () => new Promise(() => {}));
    const s = await sub.join(channel);
    s.on('event', (e) => received.push(e.payload.seq));

    let dropAt = 0;
    sub.on('state', (st) => { if (st === 'reconnecting' && !dropAt) dropAt = Date.now(); });
    let hang = null;
    const reconnected = (name) => {
      const l = states[name].map((x) => x.split('@')[0]);
      const i = l.indexOf('reconnecting');
      return i >= 0 && l.lastIndexOf('open') > i;
    };
    let seq = 0, afterAcks = 0, phase = 'before';
    while (Date.now() - t0 < maxMs) {
      const started = Date.now();
      const n = ++seq;
      try {
        await pub.publish(channel, { seq: n }, { ack: true });
        acked.push(n);
        if (phase === 'after') afterAcks++;
      } catch (e) {
        failed.push({ seq: n, code: e.code, message: e.message });
      }
      if (phase === 'before' && acked.length >= before) {
        phase = 'ready';
        hang = sub.command('hang', {}, { room: channel, timeoutMs: 30000 }).then(
          () => ({ code: 'resolved' }),
          (e) => ({ code: e.code, message: e.message, msAfterDrop: dropAt ? Date.now() - dropAt : -1 }));
        await sleep(50); // the command reaches the handler before the kill
        emit({ event: 'ready', count: acked.length });
      }
      if (phase === 'ready' && reconnected('pub') && reconnected('sub') && pub.state === 'open' && sub.state === 'open') phase = 'after';
      if (phase === 'after' && afterAcks >= after) break;
      const wait = intervalMs - (Date.now() - started);
      if (wait > 0) await sleep(wait);
    }
    out.phase = phase;
    out.hang = hang ? await Promise.race([hang, sleep(2000).then(() => ({ code: 'pending' }))]) : null;
    const last = acked[acked.length - 1];
    const end = Date.now() + 10000;
    while (!received.includes(last) && Date.now() < end) await sleep(20);
  } catch (e) {
    out.error = String(e && (e.stack || e.message || e));
  } finally {
    pub.close();
    sub.close();
  }
  out.ms = Date.now() - t0;
  emit(out);
}
