// ArqonBus JavaScript SDK: one dependency-free ES module for browsers and Node 20+.
//
// It hides the wire protocol (envelopes, ids, request/response correlation) and, above all, makes a
// dropped connection cost the application nothing: it reconnects with backoff, takes its client id
// back with the resume token of the last welcome, rejoins every channel with `since` = the last
// position it saw there and drops what it already delivered, so each event reaches the application
// once and in order. See README.md beside this file for the semantics.

const PROTOCOL_VERSION = '1.0';
const DEFAULT_TARGET = ['arqonbus', 'commands']; // where room-less commands (status, ping) are addressed
// Join errors worth retrying on a fresh connection; any other makes a rejoin give the channel up.
const TRANSIENT = new Set(['UNAVAILABLE', 'TIMEOUT', 'RATE_LIMITED', 'INTERNAL', 'DISCONNECTED']);

/** An error from the bus (its `code` is the protocol's, e.g. COMMAND_NOT_FOUND) or from the SDK
 * (DISCONNECTED, CLOSED, TIMEOUT, CONNECT_FAILED). */
export class ArqonBusError extends Error {
  constructor(code, message, { field, retryAfterMs, requestId, status, details } = {}) {
    super(message || code);
    this.name = 'ArqonBusError';
    this.code = code;
    this.field = field;
    this.retryAfterMs = retryAfterMs;
    this.requestId = requestId;
    this.status = status;
    this.details = details;
  }

  // fromPayload reads the error of an `error` envelope or of a command_response with status error.
  static fromPayload(p, requestId) {
    p = p && typeof p === 'object' ? p : { message: String(p) };
    return new ArqonBusError(p.code || 'ERROR', p.message || p.code || 'error', {
      field: p.field, retryAfterMs: p.retry_after_ms, requestId: p.request_id || requestId, status: p.status, details: p,
    });
  }
}

// A tiny event emitter that works the same in browsers and Node. A throwing listener is reported but
// must not break the SDK's frame handling (that would lose the events after it).
class Emitter {
  constructor() { this._listeners = new Map(); }
  on(name, fn) {
    if (!this._listeners.has(name)) this._listeners.set(name, new Set());
    this._listeners.get(name).add(fn);
    return this;
  }
  off(name, fn) { this._listeners.get(name)?.delete(fn); return this; }
  once(name, fn) {
    const w = (...a) => { this.off(name, w); fn(...a); };
    return this.on(name, w);
  }
  _emit(name, ...args) {
    for (const fn of [...(this._listeners.get(name) || [])]) {
      try { fn(...args); } catch (e) { console.error(`arqonbus: a '${name}' listener threw:`, e); }
    }
  }
}

/** One joined channel. Emits 'event' (each envelope once, in order), 'gap' and 'error'. */
export class Subscription extends Emitter {
  constructor(bus, room, channel, { filter, since } = {}) {
    super();
    this.bus = bus;
    this.room = room;
    this.channel = channel;
    this.key = `${room}:${channel}`;
    this.filter = filter && Object.keys(filter).length ? { ...filter } : undefined;
    this.position = since || null; // last position delivered (or the join's), the `since` of a rejoin
    this.result = null; // the last join_channel result
    this.handlers = new Map(); // command name -> async (params, envelope) => result
    this._conn = -1; // connection number this channel was (being) joined on
    this._joinedConn = -1; // connection number it was last joined on successfully
    this._joining = null;
  }
  leave() { return this.bus._leave(this); }
}

// comparePositions orders "<ms>-<seq>" positions numerically without BigInt: digit strings compare by
// length, then lexically.
export function comparePositions(a, b) {
  const [am, as = '0'] = String(a).split('-');
  const [bm, bs = '0'] = String(b).split('-');
  return cmpDigits(am, bm) || cmpDigits(as, bs);
}
function cmpDigits(x, y) {
  x = x.replace(/^0+(?=\d)/, '');
  y = y.replace(/^0+(?=\d)/, '');
  if (x.length !== y.length) return x.length < y.length ? -1 : 1;
  return x < y ? -1 : x > y ? 1 : 0;
}

function randomString(n) {
  const alphabet = 'abcdefghijklmnopqrstuvwxyz0123456789';
  const bytes = new Uint8Array(n);
  globalThis.crypto.getRandomValues(bytes);
  let s = '';
  for (const b of bytes) s += alphabet[b % alphabet.length];
  return s;
}

// splitTarget accepts 'room:channel', ('room', 'channel') or {room, channel}.
function splitTarget(target, channel) {
  if (target && typeof target === 'object') return [target.room, target.channel];
  if (typeof channel === 'string') return [target, channel];
  const i = String(target).indexOf(':');
  if (i < 0) throw new TypeError(`'${target}' is not 'room:channel'`);
  return [target.slice(0, i), target.slice(i + 1)];
}

function isObject(v) { return v !== null && typeof v === 'object' && !Array.isArray(v); }

// matchesFilter mirrors the server's join filter: every key must equal metadata[key] or
// payload.metadata[key]. The server does not filter a `since` replay, so the SDK does.
function matchesFilter(filter, env) {
  if (!filter) return true;
  const m = env.metadata || {};
  const pm = (env.payload && env.payload.metadata) || {};
  for (const [k, v] of Object.entries(filter)) if (m[k] !== v && pm[k] !== v) return false;
  return true;
}

export class ArqonBus extends Emitter {
  /**
   * @param {string} url ws:// or wss:// address of the bus
   * @param {object} [options] see arqonbus.d.ts (ArqonBusOptions)
   */
  constructor(url, options = {}) {
    super();
    this.url = url;
    this.options = options;
    this.clientId = options.clientId || `arq_${randomString(12)}`;
    this.nodeId = null;
    this.state = 'idle';
    this.WebSocket = options.WebSocket || globalThis.WebSocket;
    if (!this.WebSocket) throw new TypeError("no WebSocket: pass one, e.g. new ArqonBus(url, { WebSocket }) with WebSocket from 'ws'");
    this.reconnect = options.reconnect === false ? null : { minDelayMs: 250, maxDelayMs: 10000, ...options.reconnect };
    this.commandTimeoutMs = options.commandTimeoutMs ?? 10000;
    this.heartbeatMs = options.heartbeatMs ?? 30000;
    this._subs = new Map(); // 'room:channel' -> Subscription
    this._pending = new Map(); // request id -> { resolve, reject, timer }
    this._waiters = new Set(); // calls waiting for 'open'
    this._ws = null;
    this._conn = 0; // number of the current connection, to tell a channel's joins apart
    this._resumeToken = null;
    this._attempt = 0;
    this._ids = 0;
    this._idBase = randomString(6);
    this._everOpened = false;
    this._first = null; // connect()'s promise and its settlers
    this._lastError = null;
  }

  /** Opens the connection; resolves after the welcome (bus.clientId, bus.nodeId are set). Rejects
   * when the first connection cannot be made; after that the bus reconnects by itself. */
  connect() {
    if (this.state === 'open') return Promise.resolve(this);
    if (this._first) return this._first.promise;
    let resolve, reject;
    const promise = new Promise((res, rej) => { resolve = res; reject = rej; });
    this._first = { promise, resolve, reject };
    this._closedByUser = false;
    this._everOpened = false;
    this._setState('connecting');
    this._open();
    return promise;
  }

  /** Closes the connection for good: no reconnect; calls in flight reject with CLOSED. */
  close() {
    this._closedByUser = true;
    clearTimeout(this._retryTimer);
    const ws = this._ws;
    this._ws = null;
    this._stopHeartbeat();
    if (ws) try { ws.close(1000, 'client closed'); } catch { /* already closing */ }
    this._failAll(new ArqonBusError('CLOSED', 'the bus was closed'));
    if (this._first) { this._first.reject(new ArqonBusError('CLOSED', 'closed before connecting')); this._first = null; }
    this._setState('closed');
  }

  /** Joins 'room:channel' (or room, channel). opts: { filter, since }. Resolves with the Subscription
   * once the server answered (a replay asked with since has been delivered by then). */
  async join(target, channelOrOpts, maybeOpts) {
    const opts = (typeof channelOrOpts === 'string' ? maybeOpts : channelOrOpts) || {};
    const [room, channel] = splitTarget(target, typeof channelOrOpts === 'string' ? channelOrOpts : undefined);
    let sub = this._subs.get(`${room}:${channel}`);
    const created = !sub;
    if (created) {
      sub = new Subscription(this, room, channel, opts);
      this._subs.set(sub.key, sub);
    } else if (opts.filter) {
      sub.filter = { ...opts.filter };
      sub._conn = -1; // join again to change the filter
    }
    try {
      await this._ready();
      await this._join(sub);
    } catch (e) {
      if (created && !sub.handlers.size && this._subs.get(sub.key) === sub) this._subs.delete(sub.key);
      throw e;
    }
    return sub;
  }

  /** Publishes an event to a joined channel. With ack: true, resolves with the server's ack result
   * ({routed, delivered, position, persisted?}); without, once the frame is written. */
  async publish(target, payload, { metadata, ack = false, timeoutMs } = {}) {
    const [room, channel] = splitTarget(target);
    checkPayload(payload);
    await this._ready();
    const env = this._envelope('event', room, channel, payload, ack ? { ...metadata, ack: true } : metadata);
    if (!ack) { this._send(env); return undefined; }
    return this._request(env, timeoutMs);
  }

  /** Sends a private message to one client id. Acked by default so that TARGET_NOT_FOUND rejects. */
  async sendPrivate(targetId, payload, { metadata, ack = true, room, channel, timeoutMs } = {}) {
    checkPayload(payload);
    await this._ready();
    const env = this._envelope('private', room, channel, { ...payload, target: targetId }, ack ? { ...metadata, ack: true } : metadata);
    if (!ack) { this._send(env); return undefined; }
    return this._request(env, timeoutMs);
  }

  /** Runs a command (built-in or served by a handler on room/channel); resolves with its result,
   * rejects with ArqonBusError (code from the server, or TIMEOUT/DISCONNECTED). */
  async command(name, params = {}, { room, channel, timeoutMs } = {}) {
    let r = room, c = channel;
    if (r && !c) [r, c] = splitTarget(r);
    if (!r) [r, c] = DEFAULT_TARGET;
    await this._ready();
    return this._request(this._envelope('command', r, c, { command: name, parameters: params || {} }), timeoutMs);
  }

  /** Serves command `name` on a channel (joining it when needed). fn(params, envelope) may be async;
   * what it returns is the result; what it throws answers status error (its .code, or HANDLER_ERROR).
   * Resolves once the server knows. Handlers come back by themselves after a reconnect. */
  async handle(target, name, fn) {
    const [room, channel] = splitTarget(target);
    let sub = this._subs.get(`${room}:${channel}`);
    if (!sub) {
      sub = new Subscription(this, room, channel);
      this._subs.set(sub.key, sub);
    }
    sub.handlers.set(name, fn);
    sub._conn = -1; // join again: the server learns handles from join_channel
    await this._ready();
    await this._join(sub);
  }

  /** A channel's stored events, oldest first: an array of { position, envelope } that also carries
   * .more, .nextSince and .nextUntil for paging. opts: { limit, since, until, timeoutMs }. */
  async history(target, { limit, since, until, timeoutMs } = {}) {
    const [room, channel] = splitTarget(target);
    const params = {};
    if (limit !== undefined) params.limit = limit;
    if (since) params.since = since;
    if (until) params.until = until;
    const r = await this.command('history', params, { room, channel, timeoutMs });
    const entries = r.entries || [];
    entries.more = !!r.more;
    entries.nextSince = r.next_since;
    entries.nextUntil = r.next_until;
    return entries;
  }

  // --- connection --------------------------------------------------------------------------------

  _setState(s) {
    if (this.state === s) return;
    this.state = s;
    this._emit('state', s);
  }

  async _open() {
    let url;
    try {
      url = new URL(this.url);
      const o = this.options;
      const token = typeof o.token === 'function' ? await o.token() : o.token; // a fresh token per connection
      const q = { client_id: this.clientId, client_type: o.clientType, personality: o.personality,
        screen_name: o.screenName, avatar: o.avatar, token, resume_token: this._resumeToken, ...o.query };
      for (const [k, v] of Object.entries(q)) if (v !== undefined && v !== null && v !== '') url.searchParams.set(k, v);
    } catch (e) {
      this._lost(null, 0, `bad url or token: ${e.message}`);
      return;
    }
    if (this._closedByUser) return;
    let ws;
    try {
      ws = new this.WebSocket(url.toString());
    } catch (e) {
      this._lost(null, 0, e.message);
      return;
    }
    this._ws = ws;
    this._welcomed = false;
    this._lastError = null;
    // Handlers check ws === this._ws: a socket given up on must not touch the new one's state.
    ws.onmessage = (ev) => { if (this._ws === ws) this._onFrame(ev.data); };
    ws.onclose = (ev) => { if (this._ws === ws) this._lost(ws, ev.code, ev.reason); };
    ws.onerror = () => {}; // a close event always follows
  }

  // _lost handles the end of a connection (or of an attempt): fail what waited on it, then
  // reconnect unless the application closed the bus or the very first connect failed.
  _lost(ws, code, reason) {
    if (ws && this._ws !== ws) return;
    this._ws = null;
    this._stopHeartbeat();
    if (ws) try { ws.close(); } catch { /* closed */ }
    const why = `connection lost (${code || 'no code'}${reason ? `: ${reason}` : ''})`;
    this._failPending(new ArqonBusError('DISCONNECTED', `${why} before the answer came; the request may or may not have been applied`));
    if (this._closedByUser) return;
    if (code === 1008 && /replaced/.test(reason || '')) {
      // Another connection took this id over with our resume token: coming back would fight it.
      const err = new ArqonBusError('CONFLICT', `${why}: another connection took over this client id`);
      this._failWaiters(err);
      this._emit('error', err);
      this._setState('closed');
      if (this._first) { this._first.reject(err); this._first = null; }
      return;
    }
    if (!this._everOpened) {
      // connect() reports the first failure instead of retrying forever against a wrong address.
      const err = this._lastError || new ArqonBusError('CONNECT_FAILED', `could not connect to ${this.url}: ${why}`);
      this._failWaiters(err);
      this._setState('closed');
      if (this._first) { this._first.reject(err); this._first = null; }
      return;
    }
    if (!this.reconnect) {
      this._failWaiters(new ArqonBusError('DISCONNECTED', `${why}; reconnect is off`));
      this._setState('closed');
      return;
    }
    this._setState('reconnecting');
    // Exponential backoff with full jitter: clients dropped together by a restart do not come back
    // in one herd.
    const { minDelayMs, maxDelayMs } = this.reconnect;
    const cap = Math.min(maxDelayMs, minDelayMs * 2 ** Math.min(this._attempt++, 30));
    clearTimeout(this._retryTimer);
    this._retryTimer = setTimeout(() => { if (!this._closedByUser) this._open(); }, Math.random() * cap);
  }

  _onFrame(data) {
    let env;
    try { env = JSON.parse(typeof data === 'string' ? data : new TextDecoder().decode(data)); } catch { return; }
    if (!env || typeof env !== 'object') return;
    this._lastFrameAt = Date.now();
    const p = env.payload || {};
    switch (env.type) {
      case 'event':
      case 'telemetry':
        this._onEvent(env);
        break;
      case 'private':
        this._emit('private', env);
        break;
      case 'command_response': {
        const w = this._take(p.request_id);
        if (!w) break;
        if (p.status === 'error') w.reject(ArqonBusError.fromPayload(p.error, p.request_id));
        else w.resolve(p.result);
        break;
      }
      case 'error': {
        const err = ArqonBusError.fromPayload(p);
        const w = this._take(p.request_id);
        if (w) w.reject(err);
        else { this._lastError = err; this._emit('error', err); }
        break;
      }
      case 'command':
        this._onCommand(env);
        break;
      case 'system':
        if (env.channel === 'welcome' && p.event === 'welcome') {
          this._onWelcome(p);
          break;
        }
        this._emit('system', env);
        // Go at once rather than wait for the close: the server is leaving, and what is in flight
        // will not be answered.
        if (p.event === 'shutdown') this._lost(this._ws, 1001, 'server shutting down');
        break;
      default:
        break;
    }
  }

  _onEvent(env) {
    const key = `${env.room}:${env.channel}`;
    const sub = this._subs.get(key);
    const pos = env.metadata && env.metadata.position;
    if (sub) {
      if (pos) {
        // A rejoin replays from the last position seen; anything at or before it was delivered.
        if (sub.position && comparePositions(pos, sub.position) <= 0) return;
        sub.position = pos;
      }
      if (!matchesFilter(sub.filter, env)) return;
      sub._emit('event', env);
    }
    this._emit('event', env);
  }

  async _onWelcome(p) {
    const ws = this._ws;
    this.clientId = p.client_id || this.clientId;
    this.nodeId = p.node_id || null;
    if (p.resume_token) this._resumeToken = p.resume_token;
    this._welcomed = true;
    this._conn++;
    this.welcome = p;
    // Rejoin everything before saying open, so that calls waiting for 'open' find their channels.
    const subs = [...this._subs.values()];
    const results = await Promise.allSettled(subs.map((s) => this._join(s)));
    if (this._ws !== ws) return; // dropped meanwhile: the next welcome starts over
    for (let i = 0; i < subs.length; i++) {
      const r = results[i];
      if (r.status === 'fulfilled') continue;
      const err = r.reason;
      if (TRANSIENT.has(err.code)) { // try the whole resume again on a new connection
        this._lost(ws, 0, `rejoining ${subs[i].key} failed: ${err.message}`);
        return;
      }
      this._subs.delete(subs[i].key);
      subs[i]._emit('error', err);
      this._emit('error', err);
    }
    this._attempt = 0;
    this._everOpened = true;
    this._startHeartbeat(ws);
    this._setState('open');
    for (const w of this._waiters) { clearTimeout(w.timer); w.resolve(); }
    this._waiters.clear();
    if (this._first) { this._first.resolve(this); this._first = null; }
  }

  // _join sends sub's join_channel once per connection (a second caller gets the same promise), with
  // since = the last position seen, its filter and its handles.
  _join(sub) {
    if (sub._conn === this._conn && sub._joining) return sub._joining;
    sub._conn = this._conn;
    const params = {};
    if (sub.filter) params.filter = sub.filter;
    if (sub.handlers.size) params.handles = [...sub.handlers.keys()];
    // since only on a connection the channel was not joined on yet: a second join on the same one
    // (new handles or filter) must not replay.
    if (sub.position && sub._joinedConn !== this._conn) params.since = sub.position;
    const env = this._envelope('command', sub.room, sub.channel, { command: 'join_channel', parameters: params });
    const since = sub.position;
    const conn = this._conn;
    sub._joining = this._request(env).then((result) => {
      sub.result = result;
      sub._joinedConn = conn;
      // Live events after the join come after result.position; keep whichever is newer.
      if (result && result.position && (!sub.position || comparePositions(result.position, sub.position) > 0)) {
        sub.position = result.position;
      }
      const rp = result && result.replay;
      if (rp && rp.complete === false) {
        const gap = { room: sub.room, channel: sub.channel, since, omittedUntil: rp.omitted_until, replay: rp };
        sub._emit('gap', gap);
        this._emit('gap', gap);
      }
      return sub;
    }, (e) => { if (sub._conn === this._conn) sub._conn = -1; throw e; });
    return sub._joining;
  }

  async _leave(sub) {
    if (this._subs.get(sub.key) !== sub) return;
    this._subs.delete(sub.key); // nothing more is delivered to it from now on
    if (this.state !== 'open') return; // a reconnect will not rejoin it: that is a leave already
    try {
      await this.command('leave_channel', {}, { room: sub.room, channel: sub.channel });
    } catch (e) {
      if (e.code !== 'DISCONNECTED') throw e; // the new connection will not rejoin it: left all the same
    }
  }

  async _onCommand(env) {
    const p = env.payload || {};
    const sub = this._subs.get(`${env.room}:${env.channel}`);
    const fn = sub && sub.handlers.get(p.command);
    let payload;
    try {
      if (!fn) throw new ArqonBusError('COMMAND_NOT_FOUND', `this client does not serve ${p.command} on ${env.room}:${env.channel}`);
      const result = await fn(p.parameters || {}, env);
      payload = { request_id: env.id, status: 'success', result: result === undefined ? {} : result };
    } catch (e) {
      const code = (e && typeof e.code === 'string' && e.code) || 'HANDLER_ERROR';
      payload = { request_id: env.id, status: 'error', error: { code, message: (e && e.message) || String(e) } };
    }
    // Answered on whatever connection is current; if none, the requester gets TIMEOUT or DISCONNECTED.
    try { this._send(this._envelope('command_response', env.room, env.channel, payload)); } catch { /* dropped */ }
  }

  // The heartbeat finds a half-open connection (no close will ever come): after heartbeatMs without
  // a frame it pings, and a ping left unanswered drops the socket so that the reconnect starts.
  _startHeartbeat(ws) {
    this._stopHeartbeat();
    if (!this.heartbeatMs) return;
    this._lastFrameAt = Date.now();
    this._hbTimer = setInterval(() => {
      if (this._ws !== ws || Date.now() - this._lastFrameAt < this.heartbeatMs || this._hbBusy) return;
      this._hbBusy = true;
      const [r, c] = DEFAULT_TARGET;
      this._request(this._envelope('command', r, c, { command: 'ping', parameters: {} }), this.heartbeatMs)
        .catch(() => this._lost(ws, 0, 'no answer to ping'))
        .finally(() => { this._hbBusy = false; });
    }, Math.max(1000, this.heartbeatMs / 3));
  }

  _stopHeartbeat() { clearInterval(this._hbTimer); this._hbBusy = false; }

  // --- requests ----------------------------------------------------------------------------------

  _envelope(type, room, channel, payload, metadata) {
    const env = { version: PROTOCOL_VERSION, id: `arq_${this._idBase}_${++this._ids}`, type };
    if (room) env.room = room;
    if (channel) env.channel = channel;
    env.from = this.clientId;
    env.timestamp = new Date().toISOString();
    env.payload = payload;
    if (metadata && Object.keys(metadata).length) env.metadata = metadata;
    return env;
  }

  _send(env) {
    const ws = this._ws;
    if (!ws || ws.readyState !== 1 || !this._welcomed) throw new ArqonBusError('DISCONNECTED', 'not connected', { requestId: env.id });
    ws.send(JSON.stringify(env));
  }

  // _request sends env and waits for the command_response or error that names it.
  _request(env, timeoutMs = this.commandTimeoutMs) {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this._pending.delete(env.id);
        reject(new ArqonBusError('TIMEOUT', `no answer to ${env.payload.command || env.type} within ${timeoutMs} ms`, { requestId: env.id }));
      }, timeoutMs);
      this._pending.set(env.id, { resolve, reject, timer });
      try { this._send(env); } catch (e) { this._take(env.id); reject(e); }
    });
  }

  _take(id) {
    const w = id && this._pending.get(id);
    if (!w) return null;
    this._pending.delete(id);
    clearTimeout(w.timer);
    return w;
  }

  // _ready resolves when the bus is open. Calls made before connect() finishes or while it
  // reconnects wait for it, up to commandTimeoutMs; on a closed bus they reject at once.
  _ready() {
    if (this.state === 'open' && this._ws) return Promise.resolve();
    if (this.state === 'closed') return Promise.reject(new ArqonBusError('CLOSED', 'the bus is closed'));
    return new Promise((resolve, reject) => {
      const w = { resolve, reject };
      w.timer = setTimeout(() => {
        this._waiters.delete(w);
        reject(new ArqonBusError('DISCONNECTED', `not connected within ${this.commandTimeoutMs} ms (state ${this.state})`));
      }, this.commandTimeoutMs);
      this._waiters.add(w);
    });
  }

  _failPending(err) {
    const all = [...this._pending.values()];
    this._pending.clear();
    for (const w of all) { clearTimeout(w.timer); w.reject(err); }
  }

  _failWaiters(err) {
    for (const w of this._waiters) { clearTimeout(w.timer); w.reject(err); }
    this._waiters.clear();
  }

  _failAll(err) { this._failPending(err); this._failWaiters(err); }
}

function checkPayload(payload) {
  if (!isObject(payload)) throw new TypeError('payload must be a plain object');
}
