// Runs one of the shared SDK tests in headless Chromium: opens PAGE_URL (page.html, which imports
// the SDK from the server's /sdk/arqonbus.js) and prints, one JSON object per line, what the page
// emits through window.arqEmit; ends after {event:'done'} (or prints {event:'done', error} on a
// page error or timeout).
// Usage: node sdk/js/test/browser.mjs PAGE_URL [TIMEOUT_MS]
import { createRequire } from 'node:module';

const require = createRequire(new URL('../../../e2e/node/package.json', import.meta.url));
const { chromium } = require('playwright-core');
const [url, timeoutArg] = process.argv.slice(2);
const timeoutMs = Number(timeoutArg || 30000);
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
  let finish;
  const done = new Promise((r) => { finish = r; });
  page.on('console', (m) => process.stderr.write(`[console] ${m.text()}\n`));
  page.on('pageerror', (e) => finish({ event: 'done', error: `page error: ${e.message}` }));
  await page.exposeFunction('arqEmit', (o) => {
    if (o && o.event === 'done') finish(o);
    else emit(o);
  });
  await page.goto(url, { timeout: timeoutMs });
  const last = await Promise.race([done, new Promise((r) => setTimeout(() => r({ event: 'done', error: 'timeout' }), timeoutMs))]);
  emit(last);
  code = last.error ? 1 : 0;
} finally {
  await browser.close();
}
process.exit(code);
