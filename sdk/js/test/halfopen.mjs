// Node only: a connection the client has given up on but the server still thinks alive (half-open:
// no close frame, TCP still open, as after a network change). The SDK's reconnect presents the
// resume token of its last welcome and must take its client id over at once (no CONFLICT until
// the server's idle timeout); the server closes the old connection with 1008. A command in flight
// on the old connection rejects with DISCONNECTED at once.
// Emits {event:'done', checks:[{name, ok, detail}]}.

export async function run({ ArqonBus, url, WebSocket, emit }) {
  const checks = [];
  const check = (name, ok, detail) => checks.push({ name, ok: !!ok, detail: detail === undefined ? '' : String(detail) });
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  const waitUntil = async (cond, ms) => {
    const end = Date.now() + ms;
    while (!cond() && Date.now() < end) await sleep(10);
    return cond();
  };
  const suffix = Math.random().toString(36).slice(2, 8);
  const channel = `sdk:halfopen-${suffix}`;
  const opts = { WebSocket, reconnect: { minDelayMs: 50, maxDelayMs: 500 } };
  const a = new ArqonBus(url, { ...opts, clientId: `arq_a_${suffix}` });
  const b = new ArqonBus(url, { ...opts, clientId: `arq_b_${suffix}` });
  const errors = [];
  a.on('error', (e) => errors.push(e.code));
  try {
    await a.connect();
    await b.connect();
    check('welcome gives a resume token', typeof a.welcome.resume_token === 'string' && a.welcome.resume_token.length > 0,
      JSON.stringify(a.welcome));
    const sa = await a.join(channel);
    await b.join(channel);
    await b.handle(channel, 'hang', () => new Promise(() => {}));
    const got = [];
    sa.on('event', (e) => got.push(e.payload.n));
    await b.publish(channel, { n: 1 }, { ack: true });
    await waitUntil(() => got.length === 1, 3000);

    const inflight = a.command('hang', {}, { room: channel, timeoutMs: 30000 }).then(() => 'resolved', (e) => e.code);
    await sleep(50);
    // The test hook: the SDK gives the socket up without closing it, so the server still has it.
    const old = a._ws;
    let oldClose = null;
    old.addEventListener('close', (ev) => { oldClose = ev.code; });
    old.close = () => {};
    const t0 = Date.now();
    a._lost(old, 4000, 'test: socket given up without a close');
    const code = await Promise.race([inflight, sleep(1000).then(() => 'still pending after 1 s')]);
    check('command in flight rejects DISCONNECTED at once', code === 'DISCONNECTED', code);
    const open = await waitUntil(() => a.state === 'open', 10000);
    const ms = Date.now() - t0;
    check('reconnect with the resume token takes the id over at once', open && ms < 3000, `open=${open} after ${ms} ms`);
    check('no CONFLICT on the takeover', !errors.includes('CONFLICT'), `${errors.length} errors: ${[...new Set(errors)].join(',')}`);
    check('same client id after the takeover', a.clientId === `arq_a_${suffix}`, a.clientId);
    await b.publish(channel, { n: 2 }, { ack: true });
    await waitUntil(() => got.length === 2, 3000);
    check('events flow on the new connection, once each', got.join(',') === '1,2', got.join(','));
    await waitUntil(() => oldClose !== null, 3000);
    check('server closed the old connection with 1008', oldClose === 1008, oldClose);
    try { old._socket && old._socket.destroy(); } catch { /* gone */ }
  } catch (e) {
    check('no unexpected exception', false, e && (e.stack || e.message || e));
  } finally {
    a.close();
    b.close();
  }
  emit({ event: 'done', checks });
}
