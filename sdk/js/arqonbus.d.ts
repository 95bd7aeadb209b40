// Types for arqonbus.js, the ArqonBus JavaScript SDK.

/** A wire envelope as the server sends it. */
export interface Envelope<P = Record<string, any>> {
  version: '1.0';
  id: string;
  type: 'event' | 'private' | 'command' | 'command_response' | 'telemetry' | 'system' | 'error';
  room?: string;
  channel?: string;
  from: string;
  timestamp: string;
  payload: P;
  /** Routed events carry `position` ("<ms>-<seq>") and `received_at`. */
  metadata?: Record<string, any> & { position?: string; received_at?: string };
}

export type State = 'idle' | 'connecting' | 'open' | 'reconnecting' | 'closed';

/** 'room:channel', or an object with both. */
export type Target = string | { room: string; channel: string };

export interface ReconnectOptions {
  /** Cap of the first retry's delay (full jitter: a random delay in [0, cap)); default 250. */
  minDelayMs?: number;
  /** Largest cap as it doubles per failed attempt; default 10000. */
  maxDelayMs?: number;
}

export interface ArqonBusOptions {
  /** Kept across reconnects; default `arq_<random>`. */
  clientId?: string;
  clientType?: 'human' | 'ai-agent' | 'dashboard' | 'service' | string;
  /** JWT; a function is called before each connection (to refresh it). */
  token?: string | (() => string | Promise<string>);
  personality?: string;
  screenName?: string;
  avatar?: string;
  /** More upgrade query parameters (e.g. admin_token). */
  query?: Record<string, string>;
  /** WebSocket constructor; default globalThis.WebSocket (in Node 20 pass the `ws` package's). */
  WebSocket?: any;
  /** false: no reconnect (a dropped connection closes the bus). */
  reconnect?: ReconnectOptions | false;
  /** Timeout of commands and acked publishes, and how long calls wait for a connection; default 10000. */
  commandTimeoutMs?: number;
  /** Inbound silence after which a ping checks the connection (a dead one is dropped and
   * reconnected); default 30000, 0 turns it off. */
  heartbeatMs?: number;
}

export interface ErrorDetails {
  field?: string;
  retryAfterMs?: number;
  requestId?: string;
  status?: number;
  details?: any;
}

/** Protocol codes (VALIDATION_ERROR, FORBIDDEN, NOT_FOUND, TARGET_NOT_FOUND, COMMAND_NOT_FOUND, CONFLICT,
 * RATE_LIMITED, TIMEOUT, UNAVAILABLE, INTERNAL, or a handler's own), and the SDK's: DISCONNECTED
 * (the connection dropped before the answer, or none came back within commandTimeoutMs), CLOSED,
 * TIMEOUT (no answer in time), CONNECT_FAILED (the first connection failed). */
export declare class ArqonBusError extends Error {
  constructor(code: string, message?: string, details?: ErrorDetails);
  readonly code: string;
  readonly field?: string;
  readonly retryAfterMs?: number;
  readonly requestId?: string;
  readonly status?: number;
  readonly details?: any;
  static fromPayload(payload: any, requestId?: string): ArqonBusError;
}

export interface JoinOptions {
  /** Receive only events whose metadata (or payload.metadata) has all these values. */
  filter?: Record<string, string | number | boolean | null>;
  /** Replay what was published after this history position before going live. */
  since?: string;
}

export interface ReplayResult {
  replayed: number;
  last_position?: string;
  complete: boolean;
  omitted_until?: string;
}

export interface JoinResult {
  room: string;
  channel: string;
  joined: boolean;
  members: number;
  filter?: Record<string, any> | null;
  handles?: string[];
  position?: string;
  replay?: ReplayResult;
}

/** Part of a replay could not be delivered: page it with history(since..omittedUntil). */
export interface Gap {
  room: string;
  channel: string;
  since: string | null;
  omittedUntil?: string;
  replay: ReplayResult;
}

type Listener<A extends any[]> = (...args: A) => void;

declare class Emitter<M extends Record<string, any[]>> {
  on<K extends keyof M & string>(name: K, fn: Listener<M[K]>): this;
  once<K extends keyof M & string>(name: K, fn: Listener<M[K]>): this;
  off<K extends keyof M & string>(name: K, fn: Listener<M[K]>): this;
}

export declare class Subscription extends Emitter<{
  event: [Envelope];
  gap: [Gap];
  error: [ArqonBusError];
}> {
  readonly bus: ArqonBus;
  readonly room: string;
  readonly channel: string;
  readonly key: string;
  readonly filter?: Record<string, any>;
  /** The last position delivered (or the join's): the since of the next rejoin. */
  readonly position: string | null;
  /** The last join_channel result. */
  readonly result: JoinResult | null;
  leave(): Promise<void>;
}

export interface AckResult {
  routed: boolean;
  delivered: number;
  position?: string;
  persisted?: boolean;
}

export interface PublishOptions {
  metadata?: Record<string, any>;
  /** Wait for the server's ack (and its history position). */
  ack?: boolean;
  timeoutMs?: number;
}

export interface PrivateOptions extends PublishOptions {
  room?: string;
  channel?: string;
}

export interface CommandOptions {
  /** Room, or 'room:channel'; default arqonbus:commands (fine for built-ins such as status). */
  room?: string;
  channel?: string;
  timeoutMs?: number;
}

export interface HistoryOptions {
  limit?: number;
  since?: string;
  until?: string;
  timeoutMs?: number;
}

export interface HistoryEntry {
  position: string;
  envelope: Envelope;
}

export type HistoryPage = HistoryEntry[] & { more: boolean; nextSince?: string; nextUntil?: string };

export type Handler = (params: Record<string, any>, envelope: Envelope) => any | Promise<any>;

export declare class ArqonBus extends Emitter<{
  state: [State];
  event: [Envelope];
  private: [Envelope];
  gap: [Gap];
  error: [ArqonBusError];
  system: [Envelope];
}> {
  constructor(url: string, options?: ArqonBusOptions);
  readonly url: string;
  /** Set after the welcome. */
  clientId: string;
  nodeId: string | null;
  state: State;
  /** The last welcome payload. */
  welcome?: Record<string, any>;

  connect(): Promise<this>;
  close(): void;
  join(target: Target, options?: JoinOptions): Promise<Subscription>;
  join(room: string, channel: string, options?: JoinOptions): Promise<Subscription>;
  publish(target: Target, payload: Record<string, any>, options?: PublishOptions & { ack: true }): Promise<AckResult>;
  publish(target: Target, payload: Record<string, any>, options?: PublishOptions): Promise<AckResult | undefined>;
  sendPrivate(targetId: string, payload: Record<string, any>, options?: PrivateOptions): Promise<AckResult | undefined>;
  command<R = any>(name: string, params?: Record<string, any>, options?: CommandOptions): Promise<R>;
  handle(target: Target, name: string, fn: Handler): Promise<void>;
  history(target: Target, options?: HistoryOptions): Promise<HistoryPage>;
}

/** Orders two history positions: negative, 0 or positive. */
export declare function comparePositions(a: string, b: string): number;
