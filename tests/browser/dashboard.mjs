// Headless-Chromium test of sluice's operator dashboard: log in, find a dead-lettered command,
// replay it with a fixed payload, and watch it succeed, as an operator would.
//
//   SLUICE_URL=http://127.0.0.1:41234 SLUICE_ADMIN_KEY=... DEAD_COMMAND_ID=<uuid> \
//   FIXED_PAYLOAD='{"...":...}' SCREENSHOT_DIR=tests/browser/artifacts node tests/browser/dashboard.mjs
//
// Exit 0: every step passed (screenshot dashboard-replay.png). Exit 1: a step failed (screenshot
// dashboard-failure.png, URL, step, error and page text printed). Exit 2: bad configuration.
// Needs Debian's Chromium at /usr/bin/chromium and `npm ci --prefix tests/browser`.
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';

const DEADLINE_MS = 60_000; // the whole run, browser launch included
const STEP_TIMEOUT_MS = 10_000; // one navigation, click or fill
const APPEAR_TIMEOUT_MS = 30_000; // dead letter showing up / command reaching `succeeded`
const RELOAD_EVERY_MS = 3_000; // fallback to htmx's own polling while waiting

// ---- configuration (environment only) ---------------------------------------------------------
const REQUIRED = ['SLUICE_URL', 'SLUICE_ADMIN_KEY', 'DEAD_COMMAND_ID', 'FIXED_PAYLOAD', 'SCREENSHOT_DIR'];
const missing = REQUIRED.filter((name) => !process.env[name]);
if (missing.length > 0) {
  console.error(`dashboard.mjs: missing environment variable(s): ${missing.join(', ')}`);
  console.error(`  required: ${REQUIRED.join(', ')}`);
  process.exit(2);
}
function configError(message) {
  console.error(`dashboard.mjs: ${message}`);
  process.exit(2);
}
const BASE = process.env.SLUICE_URL.replace(/\/+$/, '');
try {
  new URL(BASE);
} catch {
  configError(`SLUICE_URL is not a URL: ${JSON.stringify(process.env.SLUICE_URL)}`);
}
const ADMIN_KEY = process.env.SLUICE_ADMIN_KEY;
const COMMAND_ID = process.env.DEAD_COMMAND_ID;
if (!/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(COMMAND_ID)) {
  configError(`DEAD_COMMAND_ID is not a uuid: ${JSON.stringify(COMMAND_ID)}`);
}
const FIXED_PAYLOAD = process.env.FIXED_PAYLOAD;
try {
  JSON.parse(FIXED_PAYLOAD);
} catch (e) {
  configError(`FIXED_PAYLOAD is not JSON (${e.message}): ${FIXED_PAYLOAD}`);
}
const SCREENSHOT_DIR = process.env.SCREENSHOT_DIR;
mkdirSync(SCREENSHOT_DIR, { recursive: true });

// ---- helpers ----------------------------------------------------------------------------------
const started = Date.now();
const elapsed = () => Date.now() - started;
/** A timeout no longer than `ms` and no later than the overall deadline. */
function budget(ms) {
  const left = DEADLINE_MS - elapsed();
  if (left <= 0) throw new Error(`overall deadline of ${DEADLINE_MS} ms passed`);
  return Math.max(1, Math.min(ms, left));
}
const pathOf = (url) => new URL(url).pathname;
const isTimeout = (e) => e?.name === 'TimeoutError';

function check(condition, message) {
  if (!condition) throw new Error(message);
}

/**
 * Waits up to `totalMs` for `attempt(timeoutMs)` to resolve, reloading the page every
 * RELOAD_EVERY_MS in between in case the page's own htmx polling is broken or slow.
 * `attempt` must use Playwright's auto-waiting and throw a TimeoutError when not there yet.
 */
async function waitWithReloads(page, totalMs, what, attempt, lastSeen = () => '') {
  const until = Date.now() + totalMs;
  let reloads = 0;
  let reloadError = null;
  for (;;) {
    const left = until - Date.now();
    if (left <= 0) break;
    try {
      return await attempt(budget(Math.min(RELOAD_EVERY_MS, left)));
    } catch (e) {
      if (!isTimeout(e)) throw e;
    }
    if (until - Date.now() <= 0) break;
    try {
      await page.reload({ timeout: budget(STEP_TIMEOUT_MS), waitUntil: 'load' });
      reloads += 1;
      reloadError = null;
    } catch (e) {
      if (!isTimeout(e) && elapsed() < DEADLINE_MS) {
        reloadError = e; // a blip while the server is busy: keep trying until the wait is over
      } else {
        throw e;
      }
    }
  }
  const seen = await lastSeen().catch(() => '');
  throw new Error(
    `timed out after ${totalMs} ms (${reloads} reloads) waiting for ${what}` +
      (seen ? `; last seen: ${seen}` : '') +
      (reloadError ? `; last reload failed: ${reloadError.message.split('\n')[0]}` : ''),
  );
}

// ---- the operator's walk ----------------------------------------------------------------------
let browser = null;
let page = null;
let context = null;
let currentStep = 'launch browser';
const browserErrors = []; // console errors and uncaught exceptions, shown on failure

async function step(name, fn) {
  currentStep = name;
  const t0 = Date.now();
  await fn();
  console.log(`ok   ${name.padEnd(48)} ${String(Date.now() - t0).padStart(6)} ms  (elapsed ${elapsed()} ms)`);
}

async function run() {
  await step('launch browser', async () => {
    browser = await chromium.launch({
      executablePath: '/usr/bin/chromium',
      headless: true,
      args: ['--no-sandbox', '--disable-background-networking', '--disable-dev-shm-usage'],
      timeout: budget(20_000),
    });
    context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    page = await context.newPage();
    page.setDefaultTimeout(STEP_TIMEOUT_MS);
    page.setDefaultNavigationTimeout(STEP_TIMEOUT_MS);
    page.on('pageerror', (e) => browserErrors.push(`pageerror: ${e.message}`));
    page.on('console', (m) => {
      // "Failed to load resource" repeats an HTTP error that the response handler records with its URL.
      if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) browserErrors.push(`console.error: ${m.text()}`);
    });
    page.on('response', (r) => {
      if (r.status() >= 400 && !r.url().endsWith('/favicon.ico')) browserErrors.push(`HTTP ${r.status()} ${r.request().method()} ${r.url()}`);
    });
  });

  await step('a1. /dashboard redirects to login', async () => {
    const response = await page.goto(`${BASE}/dashboard`, { timeout: budget(STEP_TIMEOUT_MS) });
    check(response, 'no response for /dashboard');
    check(
      pathOf(page.url()) === '/dashboard/login',
      `expected to end up on /dashboard/login, got ${page.url()} (HTTP ${response.status()})`,
    );
    const first = response.request().redirectedFrom();
    check(first, 'reached /dashboard/login but not through an HTTP redirect from /dashboard');
    check(response.ok(), `login page answered HTTP ${response.status()}`);
  });

  await step('a2. log in with the admin key', async () => {
    await page.locator('input[name=key]').fill(ADMIN_KEY, { timeout: budget(STEP_TIMEOUT_MS) });
    await page.locator('button[type=submit]').click({ timeout: budget(STEP_TIMEOUT_MS) });
    await page.waitForURL((u) => u.pathname === '/dashboard', { timeout: budget(STEP_TIMEOUT_MS) }).catch((e) => {
      throw isTimeout(e) ? new Error(`expected to land on /dashboard after logging in, still at ${page.url()}`) : e;
    });
  });

  await step('a3. session cookie is HttpOnly, SameSite=Strict', async () => {
    const cookies = await context.cookies(`${BASE}/dashboard`);
    const session = cookies.find((c) => c.name === 'sluice_session');
    check(session, `no sluice_session cookie; cookies: ${cookies.map((c) => c.name).join(', ') || 'none'}`);
    check(session.httpOnly === true, `sluice_session is not HttpOnly: ${JSON.stringify(session)}`);
    check(session.sameSite === 'Strict', `sluice_session SameSite is ${session.sameSite}, want Strict`);
  });

  const row = page.locator(`tr[data-command-id="${COMMAND_ID}"]`);
  await step('b1. dead letter listed', async () => {
    await page.goto(`${BASE}/dashboard/dead-letters`, { timeout: budget(STEP_TIMEOUT_MS) });
    check(
      pathOf(page.url()) === '/dashboard/dead-letters',
      `expected /dashboard/dead-letters, got ${page.url()}`,
    );
    await waitWithReloads(page, APPEAR_TIMEOUT_MS, `tr[data-command-id="${COMMAND_ID}"]`, (timeout) =>
      row.first().waitFor({ state: 'visible', timeout }),
    );
  });

  await step('b2. open the dead letter', async () => {
    await row.first().locator('a.dead-letter-link').click({ timeout: budget(STEP_TIMEOUT_MS) });
    await page.waitForURL((u) => /^\/dashboard\/dead-letters\/[0-9a-f-]{36}$/i.test(u.pathname), {
      timeout: budget(STEP_TIMEOUT_MS),
    });
  });

  await step('c. replay with the fixed payload', async () => {
    const form = page.locator('form#replay-form');
    const textarea = form.locator('textarea[name=payload]');
    await textarea.waitFor({ state: 'visible', timeout: budget(STEP_TIMEOUT_MS) });
    const current = await textarea.inputValue({ timeout: budget(STEP_TIMEOUT_MS) });
    try {
      JSON.parse(current);
    } catch (e) {
      throw new Error(`textarea[name=payload] does not hold JSON (${e.message}): ${current.slice(0, 200)}`);
    }
    await textarea.fill(FIXED_PAYLOAD, { timeout: budget(STEP_TIMEOUT_MS) });
    const now = await textarea.inputValue({ timeout: budget(STEP_TIMEOUT_MS) });
    check(now === FIXED_PAYLOAD, `textarea holds ${JSON.stringify(now)} after fill`);
    await form.locator('button[type=submit]').click({ timeout: budget(STEP_TIMEOUT_MS) });
    const want = `/dashboard/commands/${COMMAND_ID}`;
    await page.waitForURL((u) => u.pathname.toLowerCase() === want.toLowerCase(), {
      timeout: budget(STEP_TIMEOUT_MS),
    });
  });

  await step('d. command reaches `succeeded`', async () => {
    const status = page.locator('[data-command-status]');
    await waitWithReloads(
      page,
      APPEAR_TIMEOUT_MS,
      '[data-command-status] to read "succeeded"',
      (timeout) =>
        page.waitForFunction(
          () => {
            const el = document.querySelector('[data-command-status]');
            return el !== null && el.textContent.trim() === 'succeeded';
          },
          null,
          { timeout, polling: 100 },
        ),
      async () => {
        const n = await status.count();
        return n === 0 ? 'no [data-command-status] element' : JSON.stringify((await status.first().textContent()).trim());
      },
    );
  });

  await step('e. screenshot', async () => {
    const file = path.join(SCREENSHOT_DIR, 'dashboard-replay.png');
    await page.screenshot({ path: file, fullPage: true, timeout: budget(STEP_TIMEOUT_MS) });
    console.log(`     screenshot: ${file}`);
  });
}

// Bounds every cleanup action, so a wedged browser cannot hold the process past its deadline.
const within = (ms, promise) =>
  Promise.race([promise, new Promise((_, reject) => setTimeout(() => reject(new Error(`timed out after ${ms} ms`)), ms).unref())]);

async function fail(error) {
  console.error(`FAIL step: ${currentStep} (elapsed ${elapsed()} ms)`);
  console.error(`     url: ${page ? page.url() : '(no page)'}`);
  console.error(`     error: ${error?.stack || error}`);
  if (page) {
    const file = path.join(SCREENSHOT_DIR, 'dashboard-failure.png');
    await within(10_000, page.screenshot({ path: file, fullPage: true, timeout: 8_000 }))
      .then(() => console.error(`     screenshot: ${file}`))
      .catch((e) => console.error(`     screenshot failed: ${e.message}`));
    const text = await within(5_000, page.evaluate(() => document.body?.innerText ?? document.documentElement.outerHTML)).catch(
      (e) => `(could not read the page: ${e.message})`,
    );
    console.error('     page text (first 2000 chars):');
    console.error(String(text).slice(0, 2000).replace(/^/gm, '     | '));
  }
  if (browserErrors.length > 0) {
    console.error('     browser errors (last 10):');
    for (const line of browserErrors.slice(-10)) console.error(`     ! ${line}`);
  }
}

// Last resort: if even the failure path hangs, leave anyway.
setTimeout(() => {
  console.error(`FAIL: hard exit, ${DEADLINE_MS + 20_000} ms passed`);
  process.exit(1);
}, DEADLINE_MS + 20_000).unref();

let deadlineTimer;
const deadline = new Promise((_, reject) => {
  deadlineTimer = setTimeout(
    () => reject(new Error(`overall deadline of ${DEADLINE_MS} ms passed`)),
    Math.max(0, DEADLINE_MS - elapsed()),
  );
});

let code = 0;
try {
  await Promise.race([run(), deadline]);
  console.log(`PASS dashboard replay in ${elapsed()} ms`);
} catch (error) {
  code = 1;
  await fail(error);
} finally {
  clearTimeout(deadlineTimer);
  if (browser) await within(10_000, browser.close()).catch(() => {});
}
process.exit(code);
