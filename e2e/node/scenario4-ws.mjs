// Runs the quickstart's Scenario 4 (command / response between services) over
// Node's ws package: db_service joins services:database as handler of
// "status", api_service sends the seed's command text exactly as written,
// db_service answers with the seed's response text exactly as written.
// Prints JSON lines: {event:"db_received",data}, {event:"api_received",data},
// then {event:"done",outcome,errors,db,api} with everything each side got.
// Usage: node scenario4-ws.mjs WS_URL COMMAND_JSON RESPONSE_JSON [TIMEOUT_MS]
import fs from 'node:fs';
import WebSocket from 'ws';

const [base, cmdPath, respPath, timeoutArg] = process.argv.slice(2);
const timeoutMs = Number(timeoutArg || 10000);
const commandText = fs.readFileSync(cmdPath, 'utf8');
const responseText = fs.readFileSync(respPath, 'utf8');
const emit = (o) => process.stdout.write(JSON.stringify(o) + '\n');

const errors = [];
const received = { db: [], api: [] };
let finish;
const done = new Promise((r) => { finish = r; });
const timer = setTimeout(() => finish('timeout'), timeoutMs);

const url = (id) => `${base}${base.includes('?') ? '&' : '?'}client_id=${id}&client_type=service`;

function open(name) {
  const sock = new WebSocket(url(name));
  const welcomed = new Promise((resolve) => {
    sock.on('message', (data) => {
      const text = data.toString();
      received[name === 'db_service' ? 'db' : 'api'].push(text);
      let env;
      try { env = JSON.parse(text); } catch { errors.push(`${name}: not JSON: ${text}`); return; }
      if (env.type === 'system' && env.channel === 'welcome') resolve();
      sock.emit('envelope', env, text);
    });
  });
  sock.on('error', (e) => { errors.push(`${name}: ${e.message}`); finish('failed'); });
  sock.on('close', (code, reason) => {
    if (!closing) { errors.push(`${name}: closed ${code} ${reason}`); finish('closed'); }
  });
  return { sock, welcomed };
}

let closing = false;
const db = open('db_service');
const api = open('api_service');

db.sock.on('envelope', (env, text) => {
  if (env.type === 'error') errors.push(`db_service got error: ${text}`);
  if (env.type === 'command_response' && env.payload && env.payload.request_id === 'arq_join_db_1') {
    if (env.payload.status !== 'success') { errors.push(`join failed: ${text}`); finish('join-failed'); return; }
    api.sock.send(commandText);
  }
  if (env.type === 'command' && env.id === 'arq_cmd_001') {
    emit({ event: 'db_received', data: text });
    db.sock.send(responseText);
  }
});
api.sock.on('envelope', (env, text) => {
  if (env.payload && env.payload.request_id === 'arq_cmd_001') {
    if (env.type !== 'command_response') { errors.push(`api_service got: ${text}`); finish('error'); return; }
    emit({ event: 'api_received', data: text });
    // Linger briefly so that a second answer, if any, shows up in `api`.
    setTimeout(() => finish('ok'), 300);
  }
});

Promise.all([db.welcomed, api.welcomed]).then(() => db.sock.send(JSON.stringify({
  version: '1.0', id: 'arq_join_db_1', type: 'command', room: 'services', channel: 'database',
  from: 'db_service', timestamp: new Date().toISOString(),
  payload: { command: 'join_channel', parameters: { handles: ['status'] } },
})));

const outcome = await done;
clearTimeout(timer);
emit({ event: 'done', outcome, errors, db: received.db, api: received.api });
closing = true;
db.sock.close();
api.sock.close();
process.exit(outcome === 'ok' && errors.length === 0 ? 0 : 1);
