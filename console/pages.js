// The console's pages. Each render(body, ctx) fills `body` from the admin
// API and says every API error in words next to the control that caused it.
// Fields the API may add later (weight, health, expiry, last use, tokens,
// cost, models, limits) are shown when present and left out otherwise.
import { api, enc } from './api.js';
import { colorOf, drawStacked } from './chart.js';
import {
  announce, append, clear, confirmButton, errorSlot, field, h, select, table,
} from './dom.js';

const TIERS = ['free', 'starter', 'pro', 'enterprise'];
const POLICIES = ['auto', 'no_key', 'off'];
const P = (ctx) => `projects/${enc(ctx.project)}`;

function when(iso) { return iso ? String(iso).replace('T', ' ').replace('Z', ' UTC') : '—'; }
function has(o, k) { return o && o[k] !== undefined && o[k] !== null && o[k] !== ''; }

function optionalFacts(obj, names) {
  return names.filter(([k]) => has(obj, k)).map(([k, label, fmt]) =>
    h('div', { class: 'fact' }, h('dt', {}, label), h('dd', {}, fmt ? fmt(obj[k]) : String(obj[k]))));
}

// ---- Projects (admin) ----------------------------------------------------

async function projectsPage(body, ctx) {
  const projects = await api('GET', 'projects');
  const rows = projects.map((p) => {
    const tier = select(TIERS, p.tier);
    const fb = select(POLICIES, p.fallback);
    tier.setAttribute('aria-label', `Tier of ${p.id}`);
    fb.setAttribute('aria-label', `Fallback policy of ${p.id}`);
    const err = errorSlot();
    const save = h('button', { type: 'button', class: 'secondary' }, 'Save');
    save.addEventListener('click', async () => {
      err.show('');
      try {
        await api('PATCH', `projects/${enc(p.id)}`, { tier: tier.value, fallback: fb.value });
        announce(`Project ${p.id} saved`);
        await ctx.reloadProjects();
      } catch (e) { err.show(e.message); }
    });
    const limits = has(p, 'limits') ? JSON.stringify(p.limits) : '—';
    return [h('span', { class: 'mono' }, p.id), p.name, tier, fb, limits, when(p.created_at),
      h('span', { class: 'actions' }, save,
        h('button', { type: 'button', class: 'secondary', onclick: () => ctx.open(p.id) }, 'Open'), err)];
  });
  body.append(table(['ID', 'Name', 'Tier', 'Fallback', 'Limits', 'Created', ''], rows, 'Projects'));

  const id = field('ID (optional)', h('input', { name: 'id', pattern: '[a-z0-9][a-z0-9_\\-]{0,63}',
    autocomplete: 'off' }), 'lower-case letters, digits, - and _; generated when empty');
  const name = field('Name', h('input', { name: 'name', required: true, maxlength: '200' }));
  const tier = field('Tier', select(TIERS, 'starter'));
  const fb = field('Fallback', select(POLICIES, 'auto'),
    'auto: operator key when the project has none or it fails; no_key: only when it has none; off: never');
  const err = errorSlot();
  const form = h('form', { class: 'card', id: 'project-create' }, h('h3', {}, 'Create a project'),
    id.row, name.row, tier.row, fb.row, err, h('button', { type: 'submit' }, 'Create'));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    err.show('');
    const req = { name: name.input.value, tier: tier.input.value, fallback: fb.input.value };
    if (id.input.value) req.id = id.input.value;
    try {
      const p = await api('POST', 'projects', req);
      announce(`Project ${p.id} created`);
      await ctx.reloadProjects();
      ctx.open(p.id);
    } catch (e) { err.show(e.message); }
  });
  body.append(form);
}

// ---- Provider keys ---------------------------------------------------------

function routeBanner(stats) {
  let own = 0; let op = 0;
  for (const u of Object.values(stats.usage || {})) {
    own += u.byok || 0;
    op += (u.system || 0) + (u.fallback || 0);
  }
  const total = own + op;
  let cls = 'banner'; let text;
  if (total === 0) {
    text = stats.configured_providers > 0
      ? `No traffic today. ${stats.configured_providers} provider key(s) configured: requests for those providers use your key.`
      : 'No traffic today and no provider key configured: requests use the system default (operator key).';
  } else if (op === 0) {
    cls += ' ok'; text = `Using your key: all ${own} request(s) today went on the project's own keys.`;
  } else if (own === 0) {
    cls += ' warn'; text = `System default: all ${op} request(s) today went on the operator's key.`;
  } else {
    cls += ' warn';
    text = `Mixed: ${own} request(s) on your keys, ${op} on the operator's key (system default or fallback) today.`;
  }
  return h('p', { class: cls, id: 'route-banner' }, text);
}

function keyForm(ctx, provider, existing, onDone) {
  const secret = h('input', { type: 'password', name: 'key', autocomplete: 'off', spellcheck: 'false',
    required: true, placeholder: provider.key_prefix ? `${provider.key_prefix}…` : '' });
  const hint = provider.key_prefix
    ? `Format: starts with "${provider.key_prefix}". Stored encrypted; never shown again.`
    : 'Stored encrypted; never shown again.';
  const key = field(existing ? 'New key (replaces the stored one)' : 'Key', secret, hint);
  const toggle = h('button', { type: 'button', class: 'secondary', 'aria-pressed': 'false',
    'aria-controls': secret.id }, 'Show');
  toggle.addEventListener('click', () => {
    const show = secret.type === 'password';
    secret.type = show ? 'text' : 'password';
    toggle.textContent = show ? 'Hide' : 'Show';
    toggle.setAttribute('aria-pressed', String(show));
  });
  key.row.append(toggle);
  const label = field('Label', h('input', { name: 'label', maxlength: '200', value: existing ? existing.label : '' }));
  const endpoint = provider.id === 'custom'
    ? field('Endpoint (https)', h('input', { name: 'endpoint', type: 'url', required: true,
      value: existing ? existing.endpoint : '' }))
    : null;
  const testFirst = h('input', { type: 'checkbox', name: 'test_first' });
  const testRow = h('div', { class: 'field inline' }, testFirst,
    h('label', { for: testFirst.id = `tf-${provider.id}` }, 'Test before enabling (saved inactive, enabled only when the test passes)'));
  const err = errorSlot();
  const form = h('form', { class: 'keyform', 'data-provider': provider.id }, key.row, label.row,
    endpoint ? endpoint.row : null, testRow, err,
    h('span', { class: 'actions' }, h('button', { type: 'submit' }, 'Save key'),
      h('button', { type: 'reset', class: 'secondary' }, 'Clear')));
  form.addEventListener('reset', () => { secret.type = 'password'; toggle.textContent = 'Show'; });
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    err.show('');
    const req = { key: secret.value, label: label.input.value };
    // The key leaves the page with this request: the field is emptied now,
    // whatever the answer, and no other reference to it is kept.
    secret.value = '';
    secret.type = 'password';
    if (endpoint) req.endpoint = endpoint.input.value;
    if (testFirst.checked) req.is_active = false;
    const path = `${P(ctx)}/keys/${enc(provider.id)}`;
    try {
      await api('PUT', path, req);
      req.key = '';
      let note = 'Key saved.';
      if (testFirst.checked) {
        const t = await api('POST', `${path}/test`);
        if (t.status === 'valid') {
          await api('PATCH', path, { is_active: true });
          note = `Key saved, tested (${t.message}) and enabled.`;
        } else {
          note = `Key saved but left disabled: the test said ${t.status} (${t.message}).`;
        }
      }
      announce(note);
      onDone(note);
    } catch (e) {
      req.key = '';
      err.show(e.message);
    }
  });
  return form;
}

function keyCard(ctx, provider, rec, reload) {
  const status = !rec ? 'not configured' : rec.error ? 'unreadable' : rec.is_active ? 'active' : 'disabled';
  const err = errorSlot();
  const result = h('p', { class: 'result', 'aria-live': 'polite' });
  const card = h('section', { class: 'card provider', id: `provider-${provider.id}`,
    'aria-labelledby': `ph-${provider.id}` });
  append(card, h('header', {}, h('h3', { id: `ph-${provider.id}` }, provider.name),
    h('span', { class: `badge ${status.replace(' ', '-')}` }, status)));
  if (rec && !rec.error) {
    append(card, h('dl', { class: 'facts' },
      h('div', { class: 'fact' }, h('dt', {}, 'Key'), h('dd', { class: 'mono key-hint' }, rec.key_hint)),
      h('div', { class: 'fact' }, h('dt', {}, 'Label'), h('dd', { class: 'label' }, rec.label || '—')),
      rec.endpoint ? h('div', { class: 'fact' }, h('dt', {}, 'Endpoint'), h('dd', {}, rec.endpoint)) : null,
      h('div', { class: 'fact' }, h('dt', {}, 'Last test'),
        h('dd', { class: 'test-status' }, rec.last_tested ? `${rec.test_status} at ${when(rec.last_tested)}` : 'never')),
      optionalFacts(rec, [['weight', 'Weight'], ['health', 'Health'], ['expires_at', 'Expires', when],
        ['last_used', 'Last used', when], ['last_used_at', 'Last used', when]])));
    const test = h('button', { type: 'button', class: 'secondary test' }, 'Test');
    test.addEventListener('click', async () => {
      err.show(''); test.disabled = true; result.textContent = 'Testing…';
      try {
        const t = await api('POST', `${P(ctx)}/keys/${enc(provider.id)}/test`);
        result.textContent = `${t.status}: ${t.message} (HTTP ${t.http_status}, ${t.latency_ms} ms)`;
        result.dataset.status = t.status;
      } catch (e) { result.textContent = ''; err.show(e.message); }
      test.disabled = false;
    });
    const toggle = h('button', { type: 'button', class: 'secondary toggle' }, rec.is_active ? 'Disable' : 'Enable');
    toggle.addEventListener('click', async () => {
      err.show('');
      try {
        await api('PATCH', `${P(ctx)}/keys/${enc(provider.id)}`, { is_active: !rec.is_active });
        announce(`${provider.name} key ${rec.is_active ? 'disabled' : 'enabled'}`);
        await reload();
      } catch (e) { err.show(e.message); }
    });
    const del = confirmButton('Delete', 'Really delete?', async () => {
      await api('DELETE', `${P(ctx)}/keys/${enc(provider.id)}`);
      announce(`${provider.name} key deleted`);
      await reload();
    }, err);
    append(card, [h('span', { class: 'actions' }, test, toggle, del), result]);
  } else if (rec && rec.error) {
    append(card, h('p', {}, rec.error));
  }
  append(card, err);
  const details = h('details', {}, h('summary', {}, rec ? 'Replace key' : 'Add key'));
  details.append(keyForm(ctx, provider, rec && !rec.error ? rec : null, async (note) => {
    await reload();
    const again = document.querySelector(`#provider-${CSS.escape(provider.id)} .result`);
    if (again) again.textContent = note;
  }));
  card.append(details);
  return card;
}

async function keysPage(body, ctx) {
  const providers = await api('GET', `providers?project=${enc(ctx.project)}`);
  const view = h('div');
  body.append(view);
  // Cards are rebuilt from the API after every change, so what is shown is
  // what is stored (and no form keeps a typed key around).
  const load = async () => {
    const [keys, st] = await Promise.all([api('GET', `${P(ctx)}/keys`), api('GET', `${P(ctx)}/stats`)]);
    const byProvider = new Map();
    for (const k of keys) byProvider.set(k.provider, [...(byProvider.get(k.provider) || []), k]);
    const grid = h('div', { class: 'grid' });
    for (const p of providers)
      for (const rec of byProvider.get(p.id) || [null]) grid.append(keyCard(ctx, p, rec, load));
    view.replaceChildren(routeBanner(st),
      h('p', { class: 'hint' }, `Tier ${st.tier}: ${st.configured_providers} of ${st.total_providers} providers configured, ${st.valid_providers} tested valid.`),
      grid);
  };
  await load();
}

// ---- Gateway keys ----------------------------------------------------------

async function gatewayPage(body, ctx) {
  const keys = await api('GET', `${P(ctx)}/api-keys`);
  const slot = h('div');
  const rows = keys.map((k) => {
    const err = errorSlot();
    const revoke = k.revoked ? h('span', {}, `revoked ${when(k.revoked_at)}`)
      : confirmButton('Revoke', 'Really revoke?', async () => {
        await api('DELETE', `${P(ctx)}/api-keys/${enc(k.id)}`);
        announce(`Gateway key ${k.id} revoked`);
        ctx.refresh();
      }, err);
    return [h('span', { class: 'mono' }, k.id), h('span', { class: 'mono' }, `${k.prefix}…`),
      h('span', { class: 'label' }, k.label || '—'), when(k.created_at),
      has(k, 'expires_at') ? when(k.expires_at) : '—',
      k.revoked ? 'revoked' : 'active', h('span', { class: 'actions' }, revoke, err)];
  });
  body.append(table(['ID', 'Prefix', 'Label', 'Created', 'Expires', 'State', ''], rows, 'Gateway keys'));

  const label = field('Label', h('input', { name: 'label', maxlength: '200' }));
  const err = errorSlot();
  const form = h('form', { class: 'card', id: 'mint' }, h('h3', {}, 'Mint a gateway key'), label.row, err,
    h('button', { type: 'submit' }, 'Mint'));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    err.show('');
    try {
      const k = await api('POST', `${P(ctx)}/api-keys`, { label: label.input.value });
      form.reset();
      showOnce(slot, k, ctx);
    } catch (e) { err.show(e.message); }
  });
  body.append(slot, form);
}

// The minted key, once: a copy button and a warning; "Done" removes it from
// the page for good.
function showOnce(slot, k, ctx) {
  clear(slot);
  const out = h('output', { class: 'mono secret', id: 'minted-key' }, k.key);
  const msg = h('span', { class: 'hint', 'aria-live': 'polite' });
  const copy = h('button', { type: 'button', id: 'copy-key' }, 'Copy');
  copy.addEventListener('click', async () => {
    try {
      await navigator.clipboard.writeText(out.textContent);
      msg.textContent = 'Copied.';
    } catch {
      getSelection().selectAllChildren(out);
      msg.textContent = 'Copying is not allowed here: the key is selected, press Ctrl+C.';
    }
  });
  const done = h('button', { type: 'button', class: 'secondary', id: 'minted-done' }, 'Done');
  done.addEventListener('click', () => { clear(slot); ctx.refresh(); });
  append(slot, h('div', { class: 'card once', role: 'region', 'aria-label': 'New gateway key' },
    h('p', { class: 'banner warn' }, 'Copy this key now: it is shown only once and cannot be recovered.'),
    out, h('span', { class: 'actions' }, copy, done, msg)));
  copy.focus();
}

// ---- Usage -------------------------------------------------------------------

const ROUTES = ['byok', 'system', 'fallback'];

// stats?days=N is cumulative over N days; day i = days(i+1) - days(i).
async function dailyUsage(ctx, days) {
  const cum = await Promise.all(Array.from({ length: days }, (_, i) =>
    api('GET', `${P(ctx)}/stats?days=${i + 1}`)));
  const rows = [];
  const today = Date.parse(new Date().toISOString().slice(0, 10));
  for (let i = 0; i < days; i++) {
    const day = new Date(today - i * 86400000).toISOString().slice(0, 10);
    const cur = cum[i].usage || {};
    const prev = i ? cum[i - 1].usage || {} : {};
    for (const [prov, u] of Object.entries(cur)) {
      const row = { day, provider: prov };
      let any = false;
      for (const k of Object.keys(u)) {
        if (typeof u[k] !== 'number') continue;
        row[k] = u[k] - ((prev[prov] || {})[k] || 0);
        any = any || row[k] !== 0;
      }
      if (any) rows.push(row);
    }
  }
  return rows.sort((a, b) => (a.day < b.day ? -1 : a.day > b.day ? 1 : a.provider < b.provider ? -1 : 1));
}

function csv(rows, cols) {
  const q = (v) => {
    const s = String(v ?? '');
    return /[",\n\r]/.test(s) || /^[=+\-@]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
  };
  return [cols.join(','), ...rows.map((r) => cols.map((c) => q(r[c])).join(','))].join('\r\n');
}

async function usagePage(body, ctx) {
  const daysSel = select([['7', '7 days'], ['14', '14 days'], ['31', '31 days']], '7');
  const d = field('Period', daysSel);
  const out = h('div');
  append(body, [d.row, out]);
  const draw = async () => {
    clear(out);
    const days = Number(daysSel.value);
    const rows = await dailyUsage(ctx, days);
    const extra = ['tokens', 'input_tokens', 'output_tokens', 'cost'].filter((k) => rows.some((r) => has(r, k)));
    const providers = [...new Set(rows.map((r) => r.provider))].sort();
    const labels = Array.from({ length: days }, (_, i) =>
      new Date(Date.parse(new Date().toISOString().slice(0, 10)) - (days - 1 - i) * 86400000).toISOString().slice(5, 10));
    const metric = extra.includes('tokens') ? 'tokens' : null;
    const value = (r) => (metric ? r[metric] || 0 : ROUTES.reduce((s, k) => s + (r[k] || 0), 0));
    const series = providers.map((p) => ({
      name: p,
      values: labels.map((l) => rows.filter((r) => r.provider === p && r.day.slice(5) === l)
        .reduce((s, r) => s + value(r), 0)),
    }));
    let own = 0; let op = 0;
    for (const r of rows) { own += r.byok || 0; op += (r.system || 0) + (r.fallback || 0); }
    const canvas = h('canvas', { id: 'usage-chart', role: 'img',
      'aria-label': `${metric || 'Requests'} per day by provider over ${days} days; the table below has the numbers` });
    const legend = h('ul', { class: 'legend' }, series.map((s, i) =>
      h('li', {}, h('span', { class: `swatch c${i % 12}` }), s.name)));
    append(out, [
      h('p', { class: 'banner' }, `BYOK (your keys): ${own} request(s) · operator-paid (system default and fallback): ${op} request(s)`),
      h('h3', {}, `${metric ? 'Tokens' : 'Requests'} per day by provider`),
      h('div', { class: 'chart-wrap' }, canvas), legend]);
    if (rows.length === 0) out.append(h('p', {}, 'No traffic in this period.'));
    drawStacked(canvas, labels, series);
    if (rows.some((r) => has(r, 'models'))) {
      const models = {};
      for (const r of rows) for (const [m, n] of Object.entries(r.models || {})) models[m] = (models[m] || 0) + n;
      const top = Object.entries(models).sort((a, b) => b[1] - a[1]).slice(0, 10);
      out.append(table(['Model', 'Requests'], top, 'Top models'));
    }
    const cols = ['day', 'provider', ...ROUTES, ...extra];
    out.append(table(cols, rows.map((r) => cols.map((c) => String(r[c] ?? 0))), 'Usage by day and provider'));
    const exportBtn = h('button', { type: 'button', class: 'secondary', id: 'csv' }, 'Export CSV');
    exportBtn.addEventListener('click', () => {
      const url = URL.createObjectURL(new Blob([csv(rows, cols)], { type: 'text/csv' }));
      const a = h('a', { href: url, download: `usage-${ctx.project}-${days}d.csv` });
      document.body.append(a); a.click(); a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 1000);
    });
    out.append(exportBtn);
  };
  daysSel.addEventListener('change', () => draw().catch((e) => out.replaceChildren(h('p', { class: 'error', role: 'alert' }, e.message))));
  await draw();
}

// ---- Execution servers ---------------------------------------------------------

const SERVER_FIELDS = {
  local: [],
  ssh: [['host', 'Host'], ['port', 'Port', 'number'], ['username', 'User name'],
    ['auth_method', 'Authentication', ['key', 'password']], ['private_key', 'Private key', 'textarea', true],
    ['password', 'Password', 'password', true], ['host_key_fingerprint', 'Host key fingerprint (SHA256:…, empty = trust on first use)']],
  docker: [['endpoint', 'Docker engine URL']],
  kubernetes: [['api_url', 'API URL (https)'], ['token', 'Token', 'password', true], ['kubeconfig', 'kubeconfig', 'textarea', true]],
};

function serverForm(ctx) {
  const type = select(Object.keys(SERVER_FIELDS), 'local');
  const t = field('Type', type);
  const name = field('Name', h('input', { name: 'name', required: true, maxlength: '200' }));
  const id = field('ID (optional)', h('input', { name: 'id', autocomplete: 'off' }));
  const ws = field('Workspace path', h('input', { name: 'workspace_path' }), 'absolute path; required for ssh and local');
  const def = h('input', { type: 'checkbox', name: 'is_default' });
  const defRow = h('div', { class: 'field inline' }, def, h('label', { for: def.id = 'srv-default' }, 'Default server'));
  const conn = h('div');
  let inputs = {};
  const drawConn = () => {
    clear(conn); inputs = {};
    for (const [k, label, kind] of SERVER_FIELDS[type.value]) {
      let el;
      if (Array.isArray(kind)) el = select(kind, kind[0]);
      else if (kind === 'textarea') el = h('textarea', { rows: '3', spellcheck: 'false', autocomplete: 'off' });
      else el = h('input', { type: kind || 'text', autocomplete: 'off' });
      el.name = k;
      inputs[k] = el;
      conn.append(field(label, el).row);
    }
  };
  type.addEventListener('change', drawConn);
  drawConn();
  const err = errorSlot();
  const form = h('form', { class: 'card', id: 'server-add' }, h('h3', {}, 'Add a server'),
    t.row, name.row, id.row, ws.row, conn, defRow, err, h('button', { type: 'submit' }, 'Add server'));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    err.show('');
    const req = { name: name.input.value, server_type: type.value };
    if (id.input.value) req.id = id.input.value;
    if (ws.input.value) req.workspace_path = ws.input.value;
    if (def.checked) req.is_default = true;
    const cc = {};
    for (const [k, el] of Object.entries(inputs)) {
      if (el.value === '') continue;
      cc[k] = el.type === 'number' ? Number(el.value) : el.value;
    }
    // Secrets leave the page with this request; the fields are emptied now.
    for (const el of Object.values(inputs)) if (el.type === 'password' || el.tagName === 'TEXTAREA') el.value = '';
    if (Object.keys(cc).length) req.connection_config = cc;
    try {
      const s = await api('POST', `${P(ctx)}/servers`, req);
      announce(`Server ${s.id} added`);
      ctx.refresh();
    } catch (e) { err.show(e.message); }
  });
  return form;
}

async function serversPage(body, ctx) {
  const servers = await api('GET', `${P(ctx)}/servers`);
  const rows = servers.map((s) => {
    const err = errorSlot();
    const result = h('span', { class: 'result', 'aria-live': 'polite' });
    if (s.error) return [h('span', { class: 'mono' }, s.id), s.error, '', '', '', '', err];
    const test = h('button', { type: 'button', class: 'secondary test' }, 'Test');
    test.addEventListener('click', async () => {
      err.show(''); test.disabled = true; result.textContent = 'Testing…';
      try {
        const r = await api('POST', `${P(ctx)}/servers/${enc(s.id)}/test`);
        const parts = [`${r.status} at ${r.stage}: ${r.message}`];
        if (r.host_key_fingerprint) {
          parts.push(`host key ${r.host_key_fingerprint}`);
          if (r.trusted_on_first_use) parts.push('(trusted on first use: compare it with ssh-keygen -lf on the server)');
        }
        result.textContent = parts.join(' · ');
        result.dataset.status = r.status;
      } catch (e) { result.textContent = ''; err.show(e.message); }
      test.disabled = false;
    });
    const mkDefault = s.is_default ? null : h('button', { type: 'button', class: 'secondary' }, 'Set default');
    if (mkDefault) mkDefault.addEventListener('click', async () => {
      try { await api('PATCH', `${P(ctx)}/servers/${enc(s.id)}`, { is_default: true }); ctx.refresh(); } catch (e) { err.show(e.message); }
    });
    const del = confirmButton('Delete', 'Really delete?', async () => {
      await api('DELETE', `${P(ctx)}/servers/${enc(s.id)}`);
      ctx.refresh();
    }, err);
    const cc = s.connection_config || {};
    const where = s.server_type === 'ssh' ? `${cc.username}@${cc.host}:${cc.port}`
      : cc.endpoint || cc.api_url || '';
    return [h('span', { class: 'mono' }, s.id), h('span', { class: 'label' }, s.name), s.server_type,
      [where, where && s.workspace_path ? ' ' : '', s.workspace_path || ''],
      [s.is_default ? 'default' : '', s.is_active ? '' : ' inactive', has(s, 'health') ? ` ${s.health}` : ''],
      s.test_status ? `${s.test_status}: ${s.test_message || ''} (${when(s.last_tested_at)})` : 'never tested',
      h('span', { class: 'actions' }, test, mkDefault, del, result, err)];
  });
  body.append(table(['ID', 'Name', 'Type', 'Where', 'State', 'Last test', ''], rows, 'Execution servers'));
  body.append(serverForm(ctx));
}

// ---- Audit ---------------------------------------------------------------------

async function auditPage(body, ctx) {
  const admin = ctx.me.kind === 'admin';
  const scope = admin ? field('Project', select([['', 'all projects'], ...ctx.projects.map((p) => [p.id, p.id])], ctx.project)) : null;
  const limit = field('Entries', select(['50', '200', '1000'], '50'));
  const filter = field('Filter', h('input', { type: 'search', name: 'filter' }), 'matches action, actor or target');
  const out = h('div');
  const err = errorSlot();
  append(body, [h('div', { class: 'filters' }, scope ? scope.row : null, limit.row, filter.row), err, out]);
  let entries = [];
  const draw = () => {
    const q = filter.input.value.toLowerCase();
    const shown = entries.filter((e) => !q || [e.action, e.actor, e.target, e.project].some((x) => String(x).toLowerCase().includes(q)));
    out.replaceChildren(table(['At', 'Actor', 'Action', 'Project', 'Target'],
      shown.map((e) => [when(e.at), e.actor, e.action, e.project, e.target]), `${shown.length} of ${entries.length} entries`));
  };
  const load = async () => {
    err.show('');
    const project = scope ? scope.input.value : ctx.project;
    const qs = `limit=${limit.input.value}${project ? `&project=${enc(project)}` : ''}`;
    try { entries = await api('GET', `audit?${qs}`); } catch (e) { err.show(e.message); entries = []; }
    draw();
  };
  if (scope) scope.input.addEventListener('change', load);
  limit.input.addEventListener('change', load);
  filter.input.addEventListener('input', draw);
  await load();
}

export const PAGES = [
  { id: 'projects', title: 'Projects', adminOnly: true, render: projectsPage },
  { id: 'keys', title: 'Provider keys', needsProject: true, render: keysPage },
  { id: 'gateway', title: 'Gateway keys', needsProject: true, render: gatewayPage },
  { id: 'usage', title: 'Usage', needsProject: true, render: usagePage },
  { id: 'servers', title: 'Execution servers', needsProject: true, render: serversPage },
  { id: 'audit', title: 'Audit', render: auditPage },
];
