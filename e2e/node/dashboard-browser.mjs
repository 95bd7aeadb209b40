// Opens the ArqonBus live dashboard in headless Chromium and watches it for a
// client that connects after the page loaded. Prints one JSON object per line:
//   {"event":"loaded","state":{...}}  once the page is live (telemetry stream
//                                      open, first /api/snapshot applied)
//   {"event":"done","outcome":"ok"|"timeout"|..., "state":{...}}
//                                      once the events list shows CLIENT_ID and
//                                      the clients total went above its value at
//                                      "loaded" (then, after SETTLE_MS, a
//                                      screenshot is saved to SCREENSHOT)
// Usage: node dashboard-browser.mjs URL CLIENT_ID SCREENSHOT [TIMEOUT_MS] [SETTLE_MS]
// Exits non-zero (with the page state on stdout) when that never happens.
import { chromium } from 'playwright-core';

const [url, clientID, screenshot, timeoutArg, settleArg] = process.argv.slice(2);
const timeoutMs = Number(timeoutArg || 30000);
const settleMs = Number(settleArg || 2500);
const emit = (o) => process.stdout.write(JSON.stringify(o) + '\n');
const problems = [];

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
  timeout: timeoutMs,
});

// state reads what a person would see, through the page's data-testid hooks.
const state = (page) => page.evaluate(() => {
  const tid = (id) => document.querySelector(`[data-testid="${id}"]`);
  const text = (id) => { const e = tid(id); return e ? e.textContent.trim() : null; };
  const num = (id) => { const t = text(id); return t === null ? null : Number(t.replace(/[^0-9.-]/g, '')); };
  const conn = tid('connection-status');
  const events = Array.from(document.querySelectorAll('[data-testid="events"] > li')).map((li) => ({
    type: li.getAttribute('data-event-type'),
    clientID: li.getAttribute('data-client-id'),
    text: li.textContent.trim(),
  }));
  return {
    connection: conn ? conn.getAttribute('data-state') : null,
    nodeID: text('node-id'),
    version: text('version'),
    health: text('health-status'),
    clientsTotal: num('clients-total'),
    clientsHuman: num('clients-human'),
    clientsAgent: num('clients-ai-agent'),
    clientsService: num('clients-service'),
    rooms: num('rooms-total'),
    channels: num('channels-total'),
    storage: text('storage-status'),
    rateIn: text('rate-in'),
    rateOut: text('rate-out'),
    eventsCount: num('events-count'),
    eventsText: text('events'),
    events,
    channelRows: document.querySelectorAll('[data-testid="channels"] > tr').length,
    telemetryURL: text('telemetry-url'),
    chartCanvas: !!document.querySelector('[data-testid="rate-chart"] canvas'),
    pageText: document.body.innerText,
    scrollWidth: document.documentElement.scrollWidth,
    clientWidth: document.documentElement.clientWidth,
  };
});

let code = 1;
try {
  const page = await browser.newPage({ viewport: { width: 1440, height: 900 } });
  page.on('console', (m) => {
    if (m.type() === 'error' || m.type() === 'warning') problems.push(`console ${m.type()}: ${m.text()} [${(m.location() || {}).url || ''}]`);
  });
  page.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`));
  page.on('response', (r) => { if (r.status() >= 400) problems.push(`HTTP ${r.status()}: ${r.url()}`); });
  page.on('requestfailed', (r) => problems.push(`request failed: ${r.url()} ${r.failure() ? r.failure().errorText : ''}`));

  const started = Date.now();
  await page.goto(url, { timeout: timeoutMs, waitUntil: 'load' });
  await page.waitForFunction(() => {
    const c = document.querySelector('[data-testid="connection-status"]');
    const n = document.querySelector('[data-testid="node-id"]');
    return c && c.getAttribute('data-state') === 'live' && n && n.textContent.trim() !== '—';
  }, null, { timeout: timeoutMs });
  const before = await state(page);
  emit({ event: 'loaded', ms: Date.now() - started, state: { ...before, pageText: undefined } });

  let outcome = 'ok';
  try {
    await page.waitForFunction(([id, total]) => {
      const list = document.querySelector('[data-testid="events"]');
      const t = document.querySelector('[data-testid="clients-total"]');
      return list && list.textContent.includes(id) && t && Number(t.textContent.replace(/[^0-9.-]/g, '')) > total;
    }, [clientID, before.clientsTotal], { timeout: Math.max(1000, timeoutMs - (Date.now() - started)), polling: 50 });
  } catch (e) {
    outcome = 'timeout';
  }
  const seenAt = Date.now();
  if (outcome === 'ok') await page.waitForTimeout(settleMs); // let snapshots and the rate chart fill in
  if (screenshot) await page.screenshot({ path: screenshot, fullPage: true });
  const after = await state(page);
  emit({ event: 'done', outcome, seenMs: seenAt - started, state: after, problems });
  code = outcome === 'ok' ? 0 : 1;
} catch (e) {
  emit({ event: 'done', outcome: 'error', error: String(e && e.stack || e), problems });
} finally {
  await browser.close();
}
process.exit(code);
