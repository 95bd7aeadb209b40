// Drives examples/chat in headless Chromium: two pages (alice, bob) chat through the real server.
// Prints {"event":"chatted"} once both have talked: the Go test then kills and restarts the server.
// Both pages must show reconnecting then open by themselves, and a message sent after the restart
// must arrive once. Ends with {"event":"done", checks:[{name, ok, detail}]}.
// Usage: node sdk/js/test/chat-browser.mjs PAGE_URL [TIMEOUT_MS]   (PAGE_URL carries bus= and sdk=)
import { createRequire } from 'node:module';

const require = createRequire(new URL('../../../e2e/node/package.json', import.meta.url));
const { chromium } = require('playwright-core');
const [pageURL, timeoutArg] = process.argv.slice(2);
const timeoutMs = Number(timeoutArg || 40000);
const emit = (o) => process.stdout.write(JSON.stringify(o) + '\n');
const checks = [];
const check = (name, ok, detail) => checks.push({ name, ok: !!ok, detail: detail === undefined ? '' : String(detail) });

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
  timeout: timeoutMs,
});
const deadline = Date.now() + timeoutMs;
const left = () => Math.max(1000, deadline - Date.now());
try {
  const open = async (name) => {
    const page = await browser.newPage();
    page.on('console', (m) => process.stderr.write(`[${name}] ${m.text()}\n`));
    page.on('pageerror', (e) => process.stderr.write(`[${name} pageerror] ${e.message}\n`));
    await page.goto(`${pageURL}&name=${name}`, { timeout: left() });
    await page.waitForSelector('[data-testid="status"][data-state="open"]', { timeout: left() });
    return page;
  };
  const alice = await open('alice');
  const bob = await open('bob');
  check('status shows open', true);
  const say = async (page, text) => {
    await page.fill('[data-testid="text"]', text);
    await page.click('[data-testid="send"]');
  };
  // messagesFrom lists the texts page shows from client id `from`.
  const messagesFrom = (page, from) => page.$$eval(`[data-testid="messages"] li[data-from="${from}"]`,
    (lis) => lis.map((li) => li.lastChild.textContent));
  const waitText = (page, from, text) => page.waitForFunction(([f, t]) =>
    [...document.querySelectorAll(`[data-testid="messages"] li[data-from="${f}"]`)].some((li) => li.lastChild.textContent === t),
  [from, text], { timeout: left() });

  await say(alice, 'hello from alice');
  await waitText(bob, 'web_client_alice', 'hello from alice');
  await waitText(alice, 'web_client_alice', 'hello from alice'); // shown as her own once acked
  await say(bob, 'hi alice, bob here');
  await waitText(alice, 'web_client_bob', 'hi alice, bob here');
  check('two pages chat', true);
  emit({ event: 'chatted' });

  // The server is killed and restarted now: both pages reconnect on their own.
  const reconnected = (page) => page.waitForFunction(() => {
    const s = window.chat.states;
    const i = s.indexOf('reconnecting');
    return i >= 0 && s.lastIndexOf('open') > i && document.querySelector('[data-testid="status"]').dataset.state === 'open';
  }, null, { timeout: left() });
  await Promise.all([reconnected(alice), reconnected(bob)]);
  check('both pages showed reconnecting, then open', true,
    JSON.stringify(await alice.evaluate(() => window.chat.states)));
  await say(alice, 'still here after the restart');
  await waitText(bob, 'web_client_alice', 'still here after the restart');
  await bob.waitForTimeout(300);
  const got = await messagesFrom(bob, 'web_client_alice');
  check('bob saw each of alice\'s messages once, in order',
    JSON.stringify(got) === JSON.stringify(['hello from alice', 'still here after the restart']), JSON.stringify(got));
  const own = await messagesFrom(alice, 'web_client_alice');
  check('alice\'s page shows her messages once', own.length === 2, JSON.stringify(own));
  if (process.env.ARQ_SCREENSHOT) await bob.screenshot({ path: process.env.ARQ_SCREENSHOT });
} catch (e) {
  check('no unexpected exception', false, e && (e.stack || e.message || e));
} finally {
  emit({ event: 'done', checks });
  await browser.close();
}
process.exit(0);
