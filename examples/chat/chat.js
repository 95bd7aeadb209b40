// Scenario 1 of the quickstart with the SDK: a browser chat on science:general. It shows the
// connection state; after a drop or a server restart the SDK reconnects and resumes the channel,
// so no message is missed or shown twice.
// Query parameters (all optional): name (client id suffix), bus (ws://host:9100), sdk (the SDK's URL,
// default the bus's HTTP port 8080 at /sdk/arqonbus.js).
const q = new URLSearchParams(location.search);
const host = location.hostname || 'localhost';
const busURL = q.get('bus') || `ws://${host}:9100`;
const sdkURL = q.get('sdk') || `http://${host}:8080/sdk/arqonbus.js`;
const name = (q.get('name') || `web_${Math.random().toString(36).slice(2, 7)}`).replace(/[^A-Za-z0-9_.:-]/g, '_');

const $ = (id) => document.getElementById(id);
const status = $('status');
const list = $('messages');

function show(from, text, cls) {
  const li = document.createElement('li');
  if (cls) li.className = cls;
  li.dataset.from = from;
  const who = document.createElement('span');
  who.className = 'from';
  who.textContent = from;
  li.append(who, document.createTextNode(text));
  list.append(li);
  li.scrollIntoView({ block: 'nearest' });
}

const { ArqonBus } = await import(sdkURL);
const bus = new ArqonBus(busURL, { clientId: `web_client_${name}`, clientType: 'human', screenName: name });
window.chat = { bus, states: [] }; // for tests and the console

bus.on('state', (s) => {
  status.dataset.state = s;
  status.textContent = s;
  window.chat.states.push(s);
  if (s === 'reconnecting') show('·', 'connection lost, reconnecting…', 'system');
});
bus.on('error', (e) => show('·', `error ${e.code}: ${e.message}`, 'system'));

try {
  await bus.connect();
} catch (e) {
  status.dataset.state = 'closed';
  status.textContent = `cannot connect: ${e.message}`;
  throw e;
}
$('me').textContent = `you are ${bus.clientId}`;
const sub = await bus.join('science:general');
sub.on('event', (env) => show(env.from, String(env.payload.message ?? JSON.stringify(env.payload))));
sub.on('gap', () => show('·', 'some older messages could not be replayed', 'system'));

$('send').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const input = $('text');
  const message = input.value.trim();
  if (!message) return;
  input.value = '';
  try {
    // The sender does not get its own event back: show it once the bus has routed it.
    await bus.publish('science:general', { message }, { ack: true });
    show(bus.clientId, message, 'mine');
  } catch (e) {
    show('·', `not sent (${e.code}): ${message}`, 'system');
  }
});
