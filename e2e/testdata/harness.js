// Test harness for the quickstart's Scenario 1 code, which runs just before
// this script and leaves three globals: ws (the socket), subscription and
// message. The quickstart only builds them; this does what its setup steps
// say: on open send `subscription`, wait for its command_response, then send
// `message`. Everything received is recorded in window.arq (and in the page's
// #log when there is a DOM) and reported through window.arqNotify when the
// runner provides it. It runs unchanged in Chromium and, with the ws package
// as WebSocket, in Node.
(function () {
  var arq = (window.arq = {
    opened: false,
    subscribed: false,
    sentText: null,
    received: [],
    errors: [],
    closed: null,
  });
  function notify(kind, data) {
    if (typeof window.arqNotify === 'function') {
      try { window.arqNotify(kind, data); } catch (e) { arq.errors.push('notify: ' + e); }
    }
  }
  function log(line) {
    if (typeof document !== 'undefined') {
      var el = document.getElementById('log');
      if (el) el.textContent += line + '\n';
    }
  }
  function onOpen() {
    if (arq.opened) return;
    arq.opened = true;
    log('open');
    ws.send(JSON.stringify(subscription));
  }
  ws.addEventListener('open', onOpen);
  // The open event could in principle have fired between the two scripts.
  if (ws.readyState === 1) onOpen();
  ws.addEventListener('message', function (ev) {
    var text = String(ev.data);
    arq.received.push(text);
    log('recv ' + text);
    notify('received', text);
    var env;
    try { env = JSON.parse(text); } catch (e) { arq.errors.push('not JSON: ' + text); return; }
    var p = env.payload || {};
    if (p.request_id === subscription.id && arq.sentText === null) {
      if (env.type !== 'command_response' || p.status !== 'success') {
        arq.errors.push('subscription failed: ' + text);
        notify('failed', text);
        return;
      }
      arq.subscribed = true;
      arq.sentText = JSON.stringify(message);
      ws.send(arq.sentText);
      log('sent ' + arq.sentText);
      notify('sent', arq.sentText);
    } else if (env.type === 'error') {
      arq.errors.push(text);
    }
  });
  ws.addEventListener('error', function () { arq.errors.push('socket error'); log('error'); });
  ws.addEventListener('close', function (ev) {
    arq.closed = { code: ev.code, reason: ev.reason };
    log('close ' + ev.code);
    notify('closed', JSON.stringify(arq.closed));
  });
})();
