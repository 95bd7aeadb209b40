// Runs Scenario 1 in headless Chromium: opens the page the Go test serves
// (the quickstart's JavaScript plus harness.js) and reports on stdout, one
// JSON object per line:
//   {"event":"sent","data":<the message text the page sent>}
//   {"event":"done","state":{arq, log}}   once the page got an event whose
//                                         payload.message is EXPECT
// Usage: node scenario1-browser.mjs PAGE_URL EXPECT [TIMEOUT_MS]
// Exits non-zero (with the page state on stdout) when EXPECT never arrives.
import { chromium } from 'playwright-core';

const [url, expect, timeoutArg] = process.argv.slice(2);
const timeoutMs = Number(timeoutArg || 20000);
const emit = (o) => process.stdout.write(JSON.stringify(o) + '\n');

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
  timeout: timeoutMs,
});
let code = 1;
try {
  const page = await browser.newPage();
  page.on('console', (m) => process.stderr.write(`[console] ${m.text()}\n`));
  page.on('pageerror', (e) => process.stderr.write(`[pageerror] ${e.message}\n`));
  let resolveDone;
  const done = new Promise((r) => { resolveDone = r; });
  // Installed before navigation, so the harness can call it from the start.
  await page.exposeFunction('arqNotify', (kind, data) => {
    if (kind === 'sent') emit({ event: 'sent', data });
    if (kind === 'failed' || kind === 'closed') resolveDone(kind);
    if (kind === 'received') {
      try {
        const env = JSON.parse(data);
        if (env.type === 'event' && env.payload && env.payload.message === expect) resolveDone('ok');
      } catch { /* recorded by the harness */ }
    }
  });
  await page.goto(url, { timeout: timeoutMs });
  const outcome = await Promise.race([
    done,
    new Promise((r) => setTimeout(() => r('timeout'), timeoutMs)),
  ]);
  const state = await page.evaluate(() => ({
    arq: window.arq,
    log: document.getElementById('log').textContent,
  }));
  if (process.env.ARQ_SCREENSHOT) await page.screenshot({ path: process.env.ARQ_SCREENSHOT });
  emit({ event: 'done', outcome, state });
  code = outcome === 'ok' ? 0 : 1;
} finally {
  await browser.close();
}
process.exit(code);
