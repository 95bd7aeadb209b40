// Runs one of the shared SDK tests (api.mjs, resume.mjs) in Node against a running server, with
// the `ws` package of e2e/node as WebSocket. Prints the test's JSON lines on stdout.
// Usage: node sdk/js/test/node.mjs TEST BUS_URL [JSON_OPTIONS]
import { createRequire } from 'node:module';
import { ArqonBus, ArqonBusError } from '../arqonbus.js';

const require = createRequire(new URL('../../../e2e/node/package.json', import.meta.url));
const WebSocket = require('ws');
const [test, url, json] = process.argv.slice(2);
const mod = await import(`./${test}.mjs`);
const emit = (o) => process.stdout.write(JSON.stringify(o) + '\n');
await mod.run({ ArqonBus, ArqonBusError, url, WebSocket, emit, ...(json ? JSON.parse(json) : {}) });
process.exit(0);
