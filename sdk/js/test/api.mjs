// Exercises every call of the SDK against a real server; runs unchanged in Node (node.mjs) and in
// a browser page (page.html). The server must run with ARQONBUS_HISTORY_SIZE=5 (for the gap) and
// ARQONBUS_COMMAND_TIMEOUT=1s (for a handler's TIMEOUT).
// run() emits one line: {event:'done', checks:[{name, ok, detail}]}.

export async function run({ ArqonBus, ArqonBusError, url, WebSocket, emit }) {
  const checks = [];
  const check = (name, ok, detail) => checks.push({ name, ok: !!ok, detail: detail === undefined ? '' : String(detail) });
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  // waitUntil polls cond (up to ms) so that checks of asynchronous deliveries do not race.
  const waitUntil = async (cond, ms = 3000) => {
    const end = Date.now() + ms;
    while (!cond() && Date.now() < end) await sleep(10);
    return cond();
  };
  const expectError = async (name, p, code) => {
    try {
      const r = await p;
      check(name, false, `resolved with ${JSON.stringify(r)}, want ${code}`);
    } catch (e) {
      check(name, e instanceof ArqonBusError && e.code === code, `${e && e.name} ${e && e.code}: ${e && e.message}`);
      return e;
    }
  };
  const suffix = Math.random().toString(36).slice(2, 8);
  const opts = { WebSocket, reconnect: { minDelayMs: 50, maxDelayMs: 500 } };
  const alice = new ArqonBus(url, { ...opts, clientId: `arq_alice_${suffix}`, clientType: 'ai-agent', personality: 'analytical' });
  const bob = new ArqonBus(url, { ...opts, commandTimeoutMs: 4000 });
  const states = [];
  alice.on('state', (s) => states.push(s));
  try {
    // connect: the welcome sets clientId and nodeId.
    check('state before connect is idle', alice.state === 'idle', alice.state);
    const connected = await alice.connect();
    await bob.connect();
    check('connect resolves with the bus', connected === alice);
    check('clientId is the one given', alice.clientId === `arq_alice_${suffix}`, alice.clientId);
    check('generated clientId is arq_<random>', /^arq_[a-z0-9]{8,}$/.test(bob.clientId), bob.clientId);
    check('nodeId set by the welcome', typeof alice.nodeId === 'string' && alice.nodeId.length > 0, alice.nodeId);
    check('state open after connect', alice.state === 'open', alice.state);

    // join with a filter: bob sees only high-priority events, and bus.on('event') sees them too.
    const aGeneral = await alice.join('science:general');
    check('join result joined', aGeneral.result && aGeneral.result.joined === true, JSON.stringify(aGeneral.result));
    const bFiltered = await bob.join('science', 'general', { filter: { priority: 'high' } });
    check('join(room, channel, opts) form', bFiltered.key === 'science:general', bFiltered.key);
    const subGot = [], busGot = [];
    bFiltered.on('event', (e) => subGot.push(e));
    bob.on('event', (e) => busGot.push(e));
    const ackLow = await alice.publish('science:general', { message: 'low' }, { metadata: { priority: 'low' }, ack: true });
    const ackHigh = await alice.publish('science:general', { message: 'high' }, { metadata: { priority: 'high' }, ack: true });
    check('publish ack result', ackHigh && ackHigh.routed === true && typeof ackHigh.position === 'string' && ackHigh.delivered >= 1,
      JSON.stringify(ackHigh));
    check('ack of a filtered-out event delivered to nobody', ackLow && ackLow.delivered === 0, JSON.stringify(ackLow));
    await waitUntil(() => subGot.length >= 1);
    await sleep(100);
    check('filtered sub gets only the matching event', subGot.length === 1 && subGot[0].payload.message === 'high',
      JSON.stringify(subGot.map((e) => e.payload)));
    check('event as sent, with position', subGot[0] && subGot[0].from === alice.clientId && subGot[0].metadata.position === ackHigh.position,
      JSON.stringify(subGot[0]));
    check('bus.on(event) sees the channel event', busGot.some((e) => e.payload.message === 'high'));
    check('sub.position follows delivered events', bFiltered.position === ackHigh.position, bFiltered.position);
    const nowait = await alice.publish('science:general', { message: 'no ack' }, { metadata: { priority: 'high' } });
    check('publish without ack resolves undefined', nowait === undefined);
    await waitUntil(() => subGot.length >= 2);
    check('event without ack delivered', subGot.length === 2 && subGot[1].payload.message === 'no ack');

    // join with since: the replay comes before join resolves, nothing at or before since.
    await alice.join('science:explore');
    const acks = [];
    for (let i = 1; i <= 3; i++) acks.push(await alice.publish('science:explore', { n: i }, { ack: true }));
    const replayed = [];
    const explore = bob.join('science:explore', { since: acks[0].position });
    bob.on('event', (e) => { if (e.channel === 'explore') replayed.push(e); });
    const bExplore = await explore;
    check('since replays what came after it', replayed.map((e) => e.payload.n).join(',') === '2,3',
      JSON.stringify(replayed.map((e) => e.payload)));
    check('join result replay complete', bExplore.result.replay && bExplore.result.replay.complete === true,
      JSON.stringify(bExplore.result.replay));
    check('join result position', typeof bExplore.result.position === 'string', JSON.stringify(bExplore.result));

    // a since older than the kept history: 'gap' on the sub and the bus.
    await alice.join('sdk:gap');
    const gapAcks = [];
    for (let i = 1; i <= 9; i++) gapAcks.push(await alice.publish('sdk:gap', { n: i }, { ack: true }));
    const gaps = [];
    bob.on('gap', (g) => gaps.push(g));
    const gapSub = await bob.join('sdk:gap', { since: gapAcks[0].position });
    check('incomplete replay emits gap', gaps.length === 1 && gaps[0].room === 'sdk' && gaps[0].replay.complete === false,
      JSON.stringify(gaps));
    check('gap sub still joined', gapSub.result.joined === true);

    // private messages.
    const privates = [];
    bob.on('private', (e) => privates.push(e));
    const pack = await alice.sendPrivate(bob.clientId, { text: 'psst' });
    check('sendPrivate resolves with the ack', pack && pack.delivered === 1, JSON.stringify(pack));
    await waitUntil(() => privates.length >= 1);
    check('private received', privates.length === 1 && privates[0].payload.text === 'psst' && privates[0].from === alice.clientId,
      JSON.stringify(privates));
    await expectError('sendPrivate to an absent client rejects TARGET_NOT_FOUND', alice.sendPrivate('arq_nobody_here', { text: 'x' }), 'TARGET_NOT_FOUND');

    // commands: a built-in, and errors.
    const status = await alice.command('status');
    check('command status', status && typeof status.clients_total === 'number' && status.clients_total >= 2, JSON.stringify(status).slice(0, 200));
    const ping = await alice.command('ping', {}, { room: 'science:general' });
    check('command ping with room:channel', ping && JSON.stringify(ping).includes('pong'), JSON.stringify(ping));
    const nf = await expectError('unknown command rejects COMMAND_NOT_FOUND', alice.command('no_such_command'), 'COMMAND_NOT_FOUND');
    check('ArqonBusError carries field and requestId', nf && nf.field === 'payload.command' && /^arq_/.test(nf.requestId || ''),
      nf && `${nf.field} ${nf.requestId}`);

    // handlers: success, a thrown error, and no answer (server TIMEOUT).
    await bob.handle('science:services', 'get_status', async (params, env) => {
      if (params.fail) throw Object.assign(new Error('database unreachable'), { code: 'DB_DOWN' });
      if (params.hang) return new Promise(() => {});
      return { ok: true, echo: params.x, asker: env.from };
    });
    const served = await alice.command('get_status', { x: 42 }, { room: 'science', channel: 'services' });
    check('handled command resolves with the result', served && served.ok === true && served.echo === 42 && served.asker === alice.clientId,
      JSON.stringify(served));
    const failed = await expectError('a thrown handler error answers status error', alice.command('get_status', { fail: true }, { room: 'science:services' }), 'DB_DOWN');
    check('handler error message', failed && failed.message === 'database unreachable', failed && failed.message);
    await expectError('unanswered handler command rejects TIMEOUT', alice.command('get_status', { hang: true }, { room: 'science:services' }), 'TIMEOUT');
    await expectError('client-side timeoutMs rejects TIMEOUT', alice.command('get_status', { hang: true }, { room: 'science:services', timeoutMs: 200 }), 'TIMEOUT');

    // an error not tied to a request: bus 'error'.
    const errors = [];
    alice.on('error', (e) => errors.push(e));
    await alice.publish('science:design', { message: 'not a member' });
    await waitUntil(() => errors.length >= 1);
    check("unsolicited error envelope -> bus 'error'", errors.length === 1 && errors[0] instanceof ArqonBusError && errors[0].code === 'FORBIDDEN',
      errors.map((e) => e.code).join(','));

    // history.
    const h = await bob.history('science:explore', { limit: 2 });
    check('history returns entries oldest first', h.length === 2 && h[0].envelope.payload.n === 2 && h[1].envelope.payload.n === 3,
      JSON.stringify(h.map((e) => e.envelope.payload)));
    check('history entries have positions and paging', h[1].position === acks[2].position && h.more === true, `${h[1].position} more=${h.more}`);
    const hs = await bob.history('science:explore', { since: acks[1].position });
    check('history since', hs.length === 1 && hs[0].envelope.payload.n === 3, JSON.stringify(hs.map((e) => e.envelope.payload)));

    // leave: nothing more is delivered.
    await bExplore.leave();
    const before = replayed.length;
    const afterLeave = await alice.publish('science:explore', { n: 4 }, { ack: true });
    await sleep(200);
    check('leave stops delivery', replayed.length === before && afterLeave.delivered === 0, `${replayed.length - before} delivered=${afterLeave.delivered}`);

    // close: state closed, later calls reject CLOSED.
    alice.close();
    check('state transitions', states.join(',') === 'connecting,open,closed', states.join(','));
    await expectError('calls after close reject CLOSED', alice.publish('science:general', { message: 'x' }), 'CLOSED');
  } catch (e) {
    check('no unexpected exception', false, e && (e.stack || e.message || e));
  } finally {
    alice.close();
    bob.close();
  }
  emit({ event: 'done', checks });
}
