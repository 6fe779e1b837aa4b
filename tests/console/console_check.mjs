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

// WCAG AA contrast of every visible piece of text against the background it
// is drawn on (the nearest ancestor with an opaque background): 4.5:1, or
// 3:1 for large text; disabled controls are exempt (as in WCAG 1.4.3).
async function assertContrast(where) {
  const bad = await page.evaluate(() => {
    const rgb = (c) => (c.match(/[\d.]+/g) || []).map(Number);
    const lum = ([r, g, b]) => {
      const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
      return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
    };
    const background = (el) => {
      for (let e = el; e; e = e.parentElement) {
        const c = rgb(getComputedStyle(e).backgroundColor);
        if (c.length === 3 || (c.length === 4 && c[3] === 1)) return c.slice(0, 3);
      }
      return [255, 255, 255];
    };
    const out = [];
    for (const el of document.querySelectorAll('body *')) {
      if (el.closest('[hidden], .visually-hidden, .skip') || el.disabled) continue;
      const text = [...el.childNodes].filter((n) => n.nodeType === 3).map((n) => n.textContent).join('').trim();
      if (!text || !el.getClientRects().length) continue;
      const cs = getComputedStyle(el);
      if (cs.visibility === 'hidden' || Number(cs.opacity) === 0) continue;
      const fg = lum(rgb(cs.color).slice(0, 3));
      const bg = lum(background(el));
      const ratio = (Math.max(fg, bg) + 0.05) / (Math.min(fg, bg) + 0.05);
      const size = parseFloat(cs.fontSize);
      const large = size >= 24 || (size >= 18.66 && Number(cs.fontWeight) >= 700);
      if (ratio < (large ? 3 : 4.5)) out.push(`${el.tagName.toLowerCase()} "${text.slice(0, 30)}" ${ratio.toFixed(2)}`);
    }
    return out;
  });
  check(bad.length === 0, `${where}: text below WCAG AA contrast: ${bad.join(' | ')}`);
}

// Coloured (not grey) pixels painted on a canvas: the chart has bars.
async function painted(selector) {
  return page.$eval(selector, (c) => {
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let coloured = 0;
    for (let i = 0; i < d.length; i += 4) if (d[i + 3] > 0 && (d[i] !== d[i + 1] || d[i + 1] !== d[i + 2])) coloured++;
    return coloured;
  });
}

async function downloadCsv() {
  const [download] = await Promise.all([page.waitForEvent('download'), page.click('#csv')]);
  return readFileSync(await download.path(), 'utf8');
}

// The page itself never scrolls sideways (tables may, inside their box).
async function overflow() {
  return page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
}

async function shot(name) {
  await page.waitForSelector('.page[data-ready="1"]');
  await assertLabelled(name);
  await assertContrast(name);
  const path = join(cfg.screenshots, `${name}.png`);
  // A freshly minted gateway key is a live credential: painted over, so
  // screenshots kept for notes hold no secret.
  await page.screenshot({ path, fullPage: true, mask: [page.locator('#minted-key')] });
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

async function mainScenario() {
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
  // The real API has several keys per provider (issue 14): its route table
  // says so and the card shows and asks for their fields.
  check(await page.$(`${card} [data-field="weight"], ${card} input[name="weight"]`) !== null,
    'multi-key fields with the multi-key API');
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
  out.narrowOverflow = await overflow();
  await shot('keys-360');
  await page.setViewportSize({ width: 1440, height: 900 });
  step('provider key added, masked, tested');

  // ---- usage --------------------------------------------------------------
  await go('usage');
  const tokenPixels = await painted('#usage-tokens');
  check(tokenPixels > 100, `usage chart has coloured bars (${tokenPixels} px)`);
  out.usageRows = await page.$$eval('#usage-table tbody tr', (r) => r.length);
  check(out.usageRows > 0, 'usage table has rows');
  const csvLines = (await downloadCsv()).split('\r\n');
  check(csvLines[0] === 'day,provider,requests,input_tokens,output_tokens,cached_tokens,tokens_unknown,cost_usd'
    && csvLines.length === out.usageRows + 1, `CSV export (${csvLines[0]}, ${csvLines.length} lines)`);
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
  await page.fill('#page-audit input[type="search"]', 'key.add');  // the console adds keys by POST (issue 14)
  const audit = await page.$$eval('#page-audit tbody tr', (r) => r.map((x) => x.textContent));
  check(audit.length >= 1 && audit.every((t) => t.includes('key.add')), `audit filter (${audit.length})`);
  await page.fill('#page-audit input[type="search"]', '');
  await shot('audit');
  step('audit filtered');

  // Every page at 360 px: no sideways scrolling of the page, readable.
  out.narrow = {};
  await page.setViewportSize({ width: 360, height: 800 });
  for (const id of ['projects', 'gateway', 'usage', 'servers', 'audit']) {
    await go(id);
    out.narrow[id] = await overflow();
    await shot(`${id}-360`);
  }
  await page.setViewportSize({ width: 1440, height: 900 });
  step('every page at 360 px');

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
}

async function openConsole() {
  await page.goto(`${cfg.origin}/console/`);
  await page.waitForSelector('#signin input[name="credential"]');
}

async function signOut() {
  await page.click('#signout');
  await page.waitForSelector('#signin');
}

const rowsOf = (selector) => page.$$eval(`${selector} tbody tr`,
  (rows) => rows.map((r) => [...r.cells].map((c) => c.textContent)));

// Usage after real (priced) traffic: both charts painted, the CSV, who paid,
// top models, the admin's projects ranking; then the same page for the
// project's own gateway key.
async function usageScenario() {
  await openConsole();
  await signIn(cfg.adminToken);
  await go('usage');
  out.pixels = { tokens: await painted('#usage-tokens'), cost: await painted('#usage-cost') };
  check(out.pixels.tokens > 100 && out.pixels.cost > 100, `both charts painted (${JSON.stringify(out.pixels)})`);
  out.csv = await downloadCsv();
  out.tables = {};
  for (const id of ['usage-table', 'usage-routes', 'usage-models', 'usage-projects']) out.tables[id] = await rowsOf(`#${id}`);
  out.byokCost = await page.textContent('#byok-cost');
  out.operatorCost = await page.textContent('#operator-cost');
  out.totals = await page.textContent('#usage-totals');
  await shot('usage');
  await page.setViewportSize({ width: 360, height: 800 });
  // The charts are redrawn for the new width (ResizeObserver).
  await page.waitForFunction(() => document.getElementById('usage-tokens').width < 700);
  out.narrowOverflow = await overflow();
  out.narrowPixels = await painted('#usage-tokens');
  check(out.narrowPixels > 50, `chart redrawn at 360 px (${out.narrowPixels} px)`);
  await shot('usage-360');
  await page.setViewportSize({ width: 1440, height: 900 });
  // Another period: the charts and table follow the selector.
  const before = await page.textContent('#usage-totals');
  await page.selectOption('#usage-period', '7');
  await page.waitForFunction((b) => document.querySelector('#page-usage').dataset.ready === '1'
    && document.getElementById('usage-totals') && document.getElementById('usage-totals').textContent !== b, before);
  out.totals7 = await page.textContent('#usage-totals');
  step('usage as admin');

  await signOut();
  await signIn(cfg.gatewayKey);
  await go('usage');
  check(await page.$('#usage-projects') === null, 'no all-projects ranking for a gateway key');
  check(await painted('#usage-tokens') > 100, 'project key sees its chart');
  await shot('usage-project-key');
  step('usage as the project');
}

// Press Tab until `selector` has the focus (bounded): keyboard-only use.
async function tabTo(selector) {
  for (let i = 0; i < 80; i++) {
    if (await page.evaluate((s) => document.activeElement && document.activeElement.matches(s), selector)) return;
    await page.keyboard.press('Tab');
  }
  throw new Error(`check failed: ${selector} not reachable with Tab`);
}

// Gateway-key controls follow the manage_keys scope; a manage_keys key mints
// one with the keyboard only.
async function scopesScenario() {
  await openConsole();
  await signIn(cfg.gatewayKey);
  await go('gateway');
  check(await page.$('#mint') === null, 'no mint form without manage_keys');
  check((await page.$$('#page-gateway tbody button')).length === 0, 'no revoke button without manage_keys');
  check(await page.$('#no-manage') !== null, 'the page says why');
  const heads = await page.$$eval('#page-gateway thead th', (t) => t.map((x) => x.textContent));
  check(heads.includes('Expires') && heads.includes('Scopes'), `expiry and scopes columns (${heads})`);
  await shot('gateway-no-manage');
  await signOut();
  step('plain key: list only');

  // Keyboard only from here: no clicks.
  check(await page.evaluate(() => [...document.querySelectorAll('[tabindex]')].every((e) => e.tabIndex <= 0)),
    'no positive tabindex (focus order = document order)');
  await page.keyboard.insertText(cfg.managerKey);
  await page.keyboard.press('Enter');
  await page.waitForSelector('#signout');
  await page.waitForSelector('.page[data-ready="1"]');
  await tabTo('#nav-gateway');
  out.focusOutline = await page.evaluate(() => getComputedStyle(document.activeElement).outlineStyle);
  check(out.focusOutline !== 'none', 'focus is visible');
  await page.keyboard.press('Enter');
  await page.waitForSelector('#page-gateway[data-ready="1"]');
  check(await page.evaluate(() => document.activeElement.tagName === 'H2'), 'the new page\'s heading has the focus');
  out.revokeButtons = (await page.$$('#page-gateway tbody button.danger')).length;
  await tabTo('#mint input[name="label"]');
  await page.keyboard.insertText('kbd');
  await tabTo('#mint-manage');
  await page.keyboard.press('Space');
  await tabTo('#mint button[type="submit"]');
  await page.keyboard.press('Enter');
  await page.waitForSelector('#minted-key');
  check(await page.evaluate(() => document.activeElement.id === 'copy-key'), 'copy button focused');
  out.mintedByKeyboard = await page.textContent('#minted-key');
  await shot('gateway-manage');
  await tabTo('#minted-done');
  await page.keyboard.press('Enter');
  await page.waitForFunction(() => !document.getElementById('minted-key'));
  await page.waitForSelector('#page-gateway[data-ready="1"]');
  step('manage_keys key: minted with the keyboard');
}

// Limits on the Projects page: what the API refuses is said in words next
// to the form; what it accepts is shown in the table.
async function limitsScenario() {
  allowedStatus = '4';
  await openConsole();
  await signIn(cfg.adminToken);
  await page.waitForSelector('#limits');
  await page.fill('#limits input[name="requests_per_minute"]', '-5');
  const [refused] = await Promise.all([
    page.waitForResponse((r) => r.request().method() === 'PATCH'), page.click('#limits button[type="submit"]')]);
  out.refusedStatus = refused.status();
  await page.waitForSelector('#limits .error:not([hidden])');
  out.refusedText = await page.textContent('#limits .error');
  await shot('projects-limits-refused');
  await page.fill('#limits input[name="requests_per_minute"]', '100');
  await page.fill('#limits input[name="cost_per_month_usd"]', '2.5');
  await page.selectOption('#limits select[name="scope"]', 'all');
  const [saved] = await Promise.all([
    page.waitForResponse((r) => r.request().method() === 'PATCH'), page.click('#limits button[type="submit"]')]);
  out.savedStatus = saved.status();
  if (saved.ok()) {
    await page.waitForFunction(() => [...document.querySelectorAll('#page-projects .limits')]
      .some((x) => x.textContent.includes('100 requests/min')));
    out.limitsShown = (await page.$$eval('#page-projects .limits', (x) => x.map((e) => e.textContent))).join(' | ');
    out.formAfter = await page.inputValue('#limits input[name="requests_per_minute"]');
  } else {
    await page.waitForSelector('#limits .error:not([hidden])');
    out.savedText = await page.textContent('#limits .error');
  }
  await shot('projects-limits');
  step('limits');
}

// The keys page against the real API with several keys per provider (issue
// 14): the test stored two keys and sent traffic (one key cools); here the
// page shows them, tests, disables and deletes through the per-key routes,
// and adds a key (refused once by the provider, then accepted). The calls
// the page makes are only watched, never answered here.
const keyFields = (card) => page.$$eval(`${card} article.key`, (items) => items.map((it) => ({
  id: it.dataset.keyId,
  state: it.querySelector('.badge').textContent,
  label: it.querySelector('.label').textContent,
  ...Object.fromEntries([...it.querySelectorAll('[data-field]')].map((d) => [d.dataset.field, d.textContent])),
})));

async function multikeyScenario() {
  allowedStatus = 422; // the refused add
  const sent = [];
  page.on('request', (r) => {
    const path = new URL(r.url()).pathname;
    if (!/\/keys\/openai(\/|$)/.test(path)) return;
    const body = r.postData() ? JSON.parse(r.postData()) : null;
    // The typed keys are never reported, only which one was sent.
    if (body && 'key' in body) {
      body.key = { [cfg.refusedKey]: '<refused key>', [cfg.providerKey]: '<added key>' }[body.key] || '<another value>';
    }
    sent.push({ method: r.method(), path, body });
  });
  await openConsole();
  await signIn(cfg.adminToken);
  await go('keys');
  const card = '#provider-openai';
  out.keyCount = (await page.$$(`${card} article.key`)).length;
  out.cardBadge = await page.textContent(`${card} header .badge`);
  out.fields = await keyFields(card);
  const first = `${card} article.key[data-key-id="${cfg.firstId}"]`;
  const second = `${card} article.key[data-key-id="${cfg.secondId}"]`;
  await page.click(`${second} button.test`);
  await page.waitForSelector(`${second} .result[data-status]`);
  out.testResult = await page.textContent(`${second} .result`);
  await shot('keys-multikey');
  await page.click(`${first} button.toggle`);
  await page.waitForFunction((sel) => document.querySelector(sel)?.querySelector('.badge.disabled')
    && document.querySelector('#page-keys').dataset.ready === '1', first);
  await page.click(`${second} button.danger`);
  await page.click(`${second} button.danger`);
  await page.waitForFunction((sel) => !document.querySelector(sel), second);
  await page.click(`${card} summary`);
  out.summary = await page.textContent(`${card} summary`);
  // Refused: the provider answers 401 to this key and the API says so.
  await page.focus(`${card} input[name="key"]`);
  await page.keyboard.insertText(cfg.refusedKey);
  await page.fill(`${card} input[name="weight"]`, '5');
  await page.fill(`${card} input[name="expires_at"]`, '2027-01-02T03:04');
  await page.check(`${card} input[name="test_first"]`);
  await page.click(`${card} .keyform button[type="submit"]`);
  await page.waitForSelector(`${card} .keyform .error:not([hidden])`);
  out.addError = await page.textContent(`${card} .keyform .error`);
  await assertAbsent(cfg.refusedKey, 'typed key after the refused add');
  // Accepted: the same form, another key.
  await page.focus(`${card} input[name="key"]`);
  await page.keyboard.insertText(cfg.providerKey);
  await page.fill(`${card} input[name="label"]`, 'added in the console');
  await page.click(`${card} .keyform button[type="submit"]`);
  await page.waitForFunction((c) => document.querySelectorAll(`${c} article.key`).length === 2
    && document.querySelector('#page-keys').dataset.ready === '1', card);
  await assertAbsent(cfg.providerKey, 'added key');
  out.after = await keyFields(card);
  // What the page sent for the expiry: the typed local time in UTC.
  out.expectedExpiry = await page.evaluate(() => new Date('2027-01-02T03:04').toISOString().replace(/\.\d{3}Z$/, 'Z'));
  await shot('keys-multikey-after');
  out.sent = sent;
  step('multi-key page');
}

// Minting a gateway key with an expiry (issue 14's expires_at): the field
// is reached and filled with the keyboard; the list shows the expiry.
async function expiryScenario() {
  await openConsole();
  await signIn(cfg.adminToken);
  await go('gateway');
  await tabTo('#mint input[name="label"]');
  await page.keyboard.insertText('expiring');
  await tabTo('#mint-expires');
  out.expiresLabel = await page.evaluate(() => document.activeElement.labels[0].textContent);
  // Chromium's datetime-local takes digits segment by segment (en-US order:
  // month, day, year, hours, minutes, AM/PM); Tab leaves the control.
  await page.keyboard.type('03042027');
  await page.keyboard.press('ArrowRight');
  await page.keyboard.type('0506');
  await page.keyboard.type('P');
  out.expiresValue = await page.inputValue('#mint-expires');
  await tabTo('#mint button[type="submit"]');
  await page.keyboard.press('Enter');
  await page.waitForSelector('#minted-key');
  out.minted = await page.textContent('#minted-key');
  out.expectedExpiry = await page.evaluate((v) => new Date(v).toISOString().replace(/\.\d{3}Z$/, 'Z'), out.expiresValue);
  await page.click('#minted-done');
  await page.waitForFunction(() => !document.getElementById('minted-key'));
  await page.waitForSelector('#page-gateway[data-ready="1"]');
  const row = page.locator('#page-gateway tbody tr', { hasText: 'expiring' });
  out.listedExpiry = await row.locator('.expires').textContent();
  await shot('gateway-expiry');
  await page.setViewportSize({ width: 360, height: 800 });
  out.narrowOverflow = await overflow();
  out.narrowFormOverflow = await page.$eval('#mint', (f) => f.scrollWidth - f.clientWidth);
  await shot('gateway-expiry-360');
  step('gateway key minted with an expiry');
}

try {
  await ({ main: mainScenario, usage: usageScenario, scopes: scopesScenario, limits: limitsScenario,
    multikey: multikeyScenario, expiry: expiryScenario })[cfg.scenario || 'main']();
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
