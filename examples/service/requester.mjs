// Scenario 4 of the quickstart, the requester side: an `api_service` asks the database service for
// its connection pool status (command `status` with {check: "connection_pool"} on services:database)
// and prints the answer. The command goes to the member that registered as its handler (the Go
// service in ./handler); with none, the bus's built-in status answers instead.
// Usage: node requester.mjs [--url ws://localhost:9100] [--room services] [--channel database]
// In Node 20, the `ws` package must be installed here or in the current directory (npm install ws).
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';
import { ArqonBus, ArqonBusError } from '../../sdk/js/arqonbus.js';

const args = {};
for (let i = 2; i < process.argv.length; i += 2) args[process.argv[i].replace(/^--/, '')] = process.argv[i + 1];
const url = args.url || process.env.ARQONBUS_URL || 'ws://localhost:9100';
const room = args.room || 'services';
const channel = args.channel || 'database';

function loadWebSocket() {
  if (globalThis.WebSocket) return globalThis.WebSocket;
  for (const base of [import.meta.url, pathToFileURL(`${process.cwd()}/`).href]) {
    try { return createRequire(base)('ws'); } catch { /* try the next place */ }
  }
  console.error('this Node has no WebSocket: run `npm install ws` next to requester.mjs');
  process.exit(2);
}

const bus = new ArqonBus(url, { clientId: `api_service_${process.pid}`, clientType: 'service', WebSocket: loadWebSocket() });
try {
  await bus.connect();
  const started = Date.now();
  const result = await bus.command('status', { check: 'connection_pool' }, { room, channel, timeoutMs: 10000 });
  console.log(`status of ${room}:${channel} (${Date.now() - started} ms):`);
  console.log(`result ${JSON.stringify(result)}`);
} catch (e) {
  console.error(e instanceof ArqonBusError ? `failed: ${e.code}: ${e.message}` : e);
  process.exitCode = 1;
} finally {
  bus.close();
}
