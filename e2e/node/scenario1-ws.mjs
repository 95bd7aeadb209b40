// Runs Scenario 1 in Node with the ws package standing in for the browser's
// WebSocket: the quickstart's code and harness.js run unchanged, in one
// script so that their top-level `const`s share scope as in a page.
// Output is the same as scenario1-browser.mjs.
// Usage: node scenario1-ws.mjs SCENARIO_JS HARNESS_JS EXPECT [TIMEOUT_MS]
import fs from 'node:fs';
import vm from 'node:vm';
import WebSocket from 'ws';

const [scenarioPath, harnessPath, expect, timeoutArg] = process.argv.slice(2);
const timeoutMs = Number(timeoutArg || 15000);
const emit = (o) => process.stdout.write(JSON.stringify(o) + '\n');

let finish;
const done = new Promise((r) => { finish = r; });
globalThis.window = globalThis;
globalThis.WebSocket = WebSocket;
globalThis.arqNotify = (kind, data) => {
  if (kind === 'sent') emit({ event: 'sent', data });
  if (kind === 'failed' || kind === 'closed') finish(kind);
  if (kind === 'received') {
    try {
      const env = JSON.parse(data);
      if (env.type === 'event' && env.payload && env.payload.message === expect) finish('ok');
    } catch { /* recorded by the harness */ }
  }
};
const source = fs.readFileSync(scenarioPath, 'utf8') + '\n;\n' + fs.readFileSync(harnessPath, 'utf8');
vm.runInThisContext(source, { filename: 'scenario1+harness.js' });

const timer = setTimeout(() => finish('timeout'), timeoutMs);
const outcome = await done;
clearTimeout(timer);
emit({ event: 'done', outcome, state: { arq: globalThis.arq, log: '' } });
// `ws` is the quickstart's global socket.
vm.runInThisContext('ws.close()');
process.exit(outcome === 'ok' ? 0 : 1);
