// Drives Debian's chromium (headless, through playwright-core) against a real
// gateway's console. Driven by tests/integration/test_console.py, which
// passes its inputs in BYOK_CONSOLE_CHECK (JSON) and asserts on the JSON
// this prints as its last line. Every step throws on failure with a message
// that says which step.
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const cfg = JSON.parse(process.env.BYOK_CONSOLE_CHECK);
const out = { screenshots: {}, consoleErrors: [], cspViolations: [], steps: [] };
const STEP_TIMEOUT = 20000; // guards against hangs only

function check(cond, what) { if (!cond) throw new Error(`check failed: ${what}`); }

const context = await chromium.launchPersistentContext(mkdtempSync(join(tmpdir(), 'byok-chromium-')), {
  executablePath: '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  viewport: { width: 1440, height: 900 },
});
context.setDefaultTimeout(STEP_TIMEOUT);
await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: cfg.origin });
// CSP violations are reported to the page as events; say them on the console.
await context.addInitScript(() => {
  document.addEventListener('securitypolicyviolation', (e) => {
    console.error(`CSP violation: ${e.violatedDirective} blocked ${e.blockedURI}`);
  });
});

// Chromium itself logs every refused request ("Failed to load resource: the
// server responded with a status of 4xx"); only the steps that provoke one on
// purpose allow exactly that status.
let allowedStatus = null;
const page = context.pages()[0] || await context.newPage();
page.on('console', (m) => {
  if (m.type() !== 'error') return;
  const text = m.text();
  if (allowedStatus && text.includes(`status of ${allowedStatus}`)) return;
  (/CSP violation|Content Security Policy/.test(text) ? out.cspViolations : out.consoleErrors).push(text);
});
page.on('pageerror', (e) => out.consoleErrors.push(`pageerror: ${e.message}`));

// Every control has an accessible name (a <label>, aria-label or its text).
async function assertLabelled(where) {
  const unnamed = await page.evaluate(() => [...document.querySelectorAll('input, select, textarea, button')]
    .filter((e) => !(e.labels && e.labels.length) && !e.getAttribute('aria-label') && !e.textContent.trim())
    .map((e) => e.outerHTML.slice(0, 100)));
  check(unnamed.length === 0, `${where}: controls without a name: ${unnamed.join(' | ')}`);
}

// The JS heap holds no copy of `secret` (after a full GC): the page dropped
// every reference once the form was sent. Typed through CDP Input (never
// through the page's or Playwright's JS), so a hit can only be the page's.
async function heapHas(...needles) {
  const cdp = await context.newCDPSession(page);
  const chunks = [];
  cdp.on('HeapProfiler.addHeapSnapshotChunk', (e) => chunks.push(e.chunk));
  await cdp.send('HeapProfiler.enable');
  await cdp.send('HeapProfiler.collectGarbage');
  await cdp.send('HeapProfiler.takeHeapSnapshot', { reportProgress: false });
  await cdp.detach();
  const snapshot = chunks.join('');
  return needles.map((n) => snapshot.includes(n));
}

async function shot(name) {
  await page.waitForSelector('.page[data-ready="1"]');
  await assertLabelled(name);
  const path = join(cfg.screenshots, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  out.screenshots[name] = path;
}

async function go(id) {
  await page.click(`#nav-${id}`);
  await page.waitForSelector(`#page-${id}[data-ready="1"]`);
}

// Nothing secret anywhere in the page: markup, form values, storage.
async function assertAbsent(secret, what, storageToo = true) {
  const found = await page.evaluate((s) => {
    const inDom = document.documentElement.outerHTML.includes(s);
    const inValues = [...document.querySelectorAll('input, textarea')].some((e) => e.value.includes(s));
    const inStorage = [sessionStorage, localStorage].some((st) =>
      Object.keys(st).some((k) => k.includes(s) || (st.getItem(k) || '').includes(s)));
    return { inDom, inValues, inStorage };
  }, secret);
  check(!found.inDom && !found.inValues && (!storageToo || !found.inStorage), `${what} absent (${JSON.stringify(found)})`);
}

async function signIn(credential) {
  await page.fill('#signin input[name="credential"]', credential);
  await page.click('#signin button[type="submit"]');
  await page.waitForSelector('#signout');
  await page.waitForSelector('.page[data-ready="1"]');
}

const step = (name) => out.steps.push(name);

try {
  // ---- load -------------------------------------------------------------
  const t0 = Date.now();
  await page.goto(`${cfg.origin}/console/`);
  await page.waitForSelector('#signin input[name="credential"]');
  out.loadMs = Date.now() - t0;
  out.navigation = await page.evaluate(() => {
    const n = performance.getEntriesByType('navigation')[0];
    return { domContentLoaded: Math.round(n.domContentLoadedEventEnd), load: Math.round(n.loadEventEnd) };
  });
  step('loaded');

  // ---- sign in as admin --------------------------------------------------
  await signIn(cfg.adminToken);
  check(await page.textContent('#who .badge') === 'admin', 'admin badge');
  await assertAbsent(cfg.adminToken, 'admin token in DOM', false);
  check(await page.evaluate((t) => sessionStorage.getItem('byok.console.credential') === t
    && localStorage.length === 0 && document.cookie === '', cfg.adminToken), 'token in sessionStorage only');
  await shot('projects');
  // Create a project through the form.
  await page.fill('#project-create input[name="name"]', 'Made in the console');
  await page.fill('#project-create input[name="id"]', 'webmade');
  await page.click('#project-create button[type="submit"]');
  await page.waitForSelector('#page-keys[data-ready="1"]');
  check(await page.inputValue('#project-select') === 'webmade', 'new project opened');
  await page.selectOption('#project-select', cfg.project);
  await page.waitForSelector('#page-keys[data-ready="1"]');
  step('admin sign-in, project created');

  // ---- provider keys ------------------------------------------------------
  const card = `#provider-openai`;
  await page.click(`${card} summary`);
  const keyInput = `${card} input[name="key"]`;
  const hint = await page.textContent(`${card} .keyform .hint`);
  check(hint.includes('"sk-"'), `format hint names the prefix (${hint})`);
  check(await page.getAttribute(keyInput, 'type') === 'password', 'key hidden while typing');
  await page.focus(keyInput);
  await page.keyboard.insertText(cfg.providerKey);
  await page.click(`${card} .keyform button[aria-pressed]`);
  check(await page.getAttribute(keyInput, 'type') === 'text', 'show toggle shows the key');
  await page.click(`${card} .keyform button[aria-pressed]`);
  check(await page.getAttribute(keyInput, 'type') === 'password', 'hide toggle hides it again');
  await page.fill(`${card} input[name="label"]`, cfg.xssLabel);
  await page.check(`${card} input[name="test_first"]`);
  await page.click(`${card} .keyform button[type="submit"]`);
  await page.waitForSelector(`${card} .badge.active`);
  const hintShown = await page.textContent(`${card} .key-hint`);
  check(hintShown.startsWith('sk-...') && hintShown.endsWith(cfg.providerKey.slice(-4)), `masked hint (${hintShown})`);
  check(await page.textContent(`${card} .label`) === cfg.xssLabel, 'label rendered as text');
  await assertAbsent(cfg.providerKey, 'provider key');
  // The project id is in memory (positive control: the snapshot sees the
  // page's strings; it is JSON, so the needles are plain ASCII), the key not.
  const [hintInHeap, keyInHeap] = await heapHas(cfg.project, cfg.providerKey);
  check(hintInHeap, 'heap snapshot sees the page\'s strings');
  check(!keyInHeap, 'provider key not in the page\'s memory');
  await page.click(`${card} button.test`);
  await page.waitForSelector(`${card} .result[data-status]`);
  out.keyTest = await page.textContent(`${card} .result`);
  check(out.keyTest.startsWith('valid'), `key test result (${out.keyTest})`);
  out.banner = await page.textContent('#route-banner');
  await shot('keys');
  // 360 px wide: no horizontal scrolling of the page itself.
  await page.setViewportSize({ width: 360, height: 800 });
  out.narrowOverflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  await shot('keys-360');
  await page.setViewportSize({ width: 1440, height: 900 });
  step('provider key added, masked, tested');

  // ---- usage --------------------------------------------------------------
  await go('usage');
  const painted = await page.evaluate(() => {
    const c = document.getElementById('usage-chart');
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let coloured = 0;
    for (let i = 0; i < d.length; i += 4) if (d[i + 3] > 0 && (d[i] !== d[i + 1] || d[i + 1] !== d[i + 2])) coloured++;
    return coloured;
  });
  check(painted > 100, `usage chart has coloured bars (${painted} px)`);
  out.usageRows = await page.$$eval('#page-usage tbody tr', (r) => r.length);
  check(out.usageRows > 0, 'usage table has rows');
  const [download] = await Promise.all([page.waitForEvent('download'), page.click('#csv')]);
  const csvText = readFileSync(await download.path(), 'utf8').split('\r\n');
  check(csvText[0] === 'day,provider,byok,system,fallback' && csvText.length === out.usageRows + 1,
    `CSV export (${csvText[0]}, ${csvText.length} lines)`);
  await shot('usage');
  step('usage chart drawn, CSV exported');

  // ---- gateway keys --------------------------------------------------------
  await go('gateway');
  await page.fill('#mint input[name="label"]', cfg.xssLabel);
  await page.click('#mint button[type="submit"]');
  await page.waitForSelector('#minted-key');
  const minted = await page.textContent('#minted-key');
  check(minted.startsWith('byok_') && minted.length > 40, 'minted key shown once');
  await page.click('#copy-key');
  await page.waitForFunction(() => /Copied|selected/.test(document.querySelector('#minted-key ~ .actions .hint').textContent));
  out.clipboardMatches = await page.evaluate(async (k) => (await navigator.clipboard.readText()) === k, minted);
  await shot('gateway-minted');
  await page.click('#minted-done');
  await page.waitForSelector('#page-gateway[data-ready="1"]');
  await page.waitForFunction(() => !document.getElementById('minted-key'));
  await assertAbsent(minted, 'minted key after Done');
  [out.mintedKeyInHeapAfterDone] = await heapHas(minted);
  const row = page.locator('#page-gateway tbody tr', { hasText: minted.slice(0, 12) });
  await row.locator('button.danger').click();
  await row.locator('button.danger').click();
  await page.waitForSelector('#page-gateway[data-ready="1"]');
  await page.locator('#page-gateway tbody tr', { hasText: minted.slice(0, 12) }).getByText('revoked', { exact: true }).waitFor();
  out.mintedKey = minted;
  await shot('gateway');
  step('gateway key minted, copied, revoked');

  // ---- execution servers ----------------------------------------------------
  await go('servers');
  await page.selectOption('#server-add select', 'local');
  await page.fill('#server-add input[name="name"]', cfg.xssLabel);
  await page.fill('#server-add input[name="id"]', 'local1');
  await page.fill('#server-add input[name="workspace_path"]', cfg.workspace);
  await page.click('#server-add button[type="submit"]');
  await page.waitForSelector('#page-servers[data-ready="1"] tbody tr');
  const srow = page.locator('#page-servers tbody tr', { hasText: 'local1' });
  await srow.locator('button.test').click();
  await srow.locator('.result[data-status]').waitFor();
  out.serverTest = await srow.locator('.result').textContent();
  check(out.serverTest.startsWith('ok'), `server test (${out.serverTest})`);
  await srow.getByText('Set default').click();
  await page.locator('#page-servers tbody tr', { hasText: 'local1' }).getByText('default', { exact: true }).waitFor();
  await shot('servers');
  step('local server added, tested, made default');

  // ---- audit -------------------------------------------------------------------
  await go('audit');
  await page.fill('#page-audit input[type="search"]', 'key.put');
  const audit = await page.$$eval('#page-audit tbody tr', (r) => r.map((x) => x.textContent));
  check(audit.length >= 1 && audit.every((t) => t.includes('key.put')), `audit filter (${audit.length})`);
  await page.fill('#page-audit input[type="search"]', '');
  await shot('audit');
  step('audit filtered');

  // The hostile label went through four pages: it never became markup.
  out.xss = await page.evaluate(() => ({ fired: window.__xss === 1, imgs: document.querySelectorAll('img').length }));

  // ---- sign out, then in with the gateway key ---------------------------------------
  await page.click('#signout');
  await page.waitForSelector('#signin');
  check(await page.evaluate(() => sessionStorage.length === 0), 'sign-out clears sessionStorage');
  // Keyboard only: the credential field has focus, Enter submits.
  check(await page.evaluate(() => document.activeElement && document.activeElement.name === 'credential'),
    'sign-in field focused');
  await page.keyboard.insertText(cfg.gatewayKey);
  await page.keyboard.press('Enter');
  await page.waitForSelector('#signout');
  await page.waitForSelector('.page[data-ready="1"]');
  check(await page.textContent('#who .badge') === 'project', 'project badge');
  check(await page.$('#nav-projects') === null, 'no Projects page for a gateway key');
  check((await page.textContent('#who')).includes(cfg.project), 'own project shown');
  await shot('project-keys');
  step('gateway-key sign-in');

  // ---- an API error is said next to the control ----------------------------------------
  allowedStatus = 422;
  const acard = '#provider-anthropic';
  await page.click(`${acard} summary`);
  await page.focus(`${acard} input[name="key"]`);
  await page.keyboard.insertText(`wrong-${cfg.providerKey}`);
  await page.click(`${acard} .keyform button[type="submit"]`);
  await page.waitForSelector(`${acard} .keyform .error:not([hidden])`);
  out.keyError = await page.textContent(`${acard} .keyform .error`);
  check(out.keyError.includes('invalid_key_format'), `key format error in words (${out.keyError})`);
  await assertAbsent(`wrong-${cfg.providerKey}`, 'refused key');
  step('API error shown next to the form');

  // ---- any 401 signs out ----------------------------------------------------------------
  allowedStatus = 401;
  const r = await fetch(`${cfg.origin}/admin/v1/projects/${cfg.project}/api-keys/${cfg.gatewayKeyId}`,
    { method: 'DELETE', headers: { Authorization: `Bearer ${cfg.adminToken}` } });
  check(r.status === 200, 'revoke the signed-in key');
  await page.click('#nav-gateway');
  await page.waitForSelector('#signin .error:not([hidden])');
  check(await page.evaluate(() => sessionStorage.length === 0), '401 clears sessionStorage');
  step('401 signs out');
} catch (e) {
  out.failure = String(e && e.stack || e);
  try {
    const p = join(cfg.screenshots, 'failure.png');
    await page.screenshot({ path: p, fullPage: true });
    out.screenshots.failure = p;
  } catch { /* the failure itself is reported */ }
}
await context.close();
console.log(JSON.stringify(out));
