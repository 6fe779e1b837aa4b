// The console's pages. Each render(body, ctx) fills `body` from the admin
// API and says every API error in words next to the control that caused it.
// Fields the API may add later (weight, health, expiry, last use, tokens,
// cost, models, limits) are shown when present and left out otherwise.
import { api, enc } from './api.js';
import {
  announce, append, clear, confirmButton, errorSlot, field, h, select, table,
} from './dom.js';
import { P, expiry, has, rfc3339, when } from './fmt.js';
import { keysPage } from './keys.js';
import { usagePage } from './usage.js';

const TIERS = ['free', 'starter', 'pro', 'enterprise'];
const POLICIES = ['auto', 'no_key', 'off'];

// ---- Projects (admin) ----------------------------------------------------

// Project limits (issue 13): {requests_per_minute, tokens_per_day,
// cost_per_month_usd, scope}; 0 or absent = no limit.
const LIMITS = [['requests_per_minute', 'Requests per minute'],
  ['tokens_per_day', 'Tokens per day (in + out)'], ['cost_per_month_usd', 'Cost per month (USD)']];
const SCOPES = [['operator', "operator-paid traffic only (the operator's keys)"], ['all', 'all traffic']];

function limitsText(l) {
  if (!l || typeof l !== 'object') return 'none';
  const parts = [];
  if (Number(l.requests_per_minute) > 0) parts.push(`${l.requests_per_minute} requests/min`);
  if (Number(l.tokens_per_day) > 0) parts.push(`${l.tokens_per_day} tokens/day`);
  if (Number(l.cost_per_month_usd) > 0) parts.push(`$${l.cost_per_month_usd}/month`);
  if (!parts.length) return 'none';
  return `${parts.join(', ')} (${l.scope === 'all' ? 'all traffic' : 'operator-paid traffic'})`;
}

function limitsForm(ctx, projects) {
  const start = projects.some((p) => p.id === ctx.project) ? ctx.project : projects[0].id;
  const which = field('Project', select(projects.map((p) => [p.id, `${p.name} (${p.id})`]), start));
  // No min/step in the browser: the API is the one judge of a value, and
  // says why in words next to the form.
  const inputs = Object.fromEntries(LIMITS.map(([k, label]) =>
    [k, field(label, h('input', { name: k, type: 'number', step: 'any', inputmode: 'decimal' }),
      'empty or 0: no limit')]));
  const scope = field('Counts', select(SCOPES, 'operator'));
  scope.input.name = 'scope';
  const fill = () => {
    const l = (projects.find((p) => p.id === which.input.value) || {}).limits || {};
    for (const [k] of LIMITS) inputs[k].input.value = Number(l[k]) > 0 ? String(l[k]) : '';
    scope.input.value = l.scope === 'all' ? 'all' : 'operator';
  };
  which.input.addEventListener('change', fill);
  fill();
  const err = errorSlot();
  const form = h('form', { class: 'card', id: 'limits' }, h('h3', {}, 'Limits'),
    h('p', { class: 'hint' }, 'Over a limit the gateway answers 429 before calling the provider.'),
    which.row, h('div', { class: 'filters' }, LIMITS.map(([k]) => inputs[k].row)), scope.row, err,
    h('button', { type: 'submit' }, 'Save limits'));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    err.show('');
    const limits = { scope: scope.input.value };
    for (const [k] of LIMITS) limits[k] = inputs[k].input.value === '' ? 0 : Number(inputs[k].input.value);
    try {
      await api('PATCH', `projects/${enc(which.input.value)}`, { limits });
      announce(`Limits of ${which.input.value} saved`);
      ctx.refresh();
    } catch (e) { err.show(e.message); }
  });
  return form;
}

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
    return [h('span', { class: 'mono' }, p.id), p.name, tier, fb,
      h('span', { class: 'limits' }, limitsText(p.limits)), when(p.created_at),
      h('span', { class: 'actions' }, save,
        h('button', { type: 'button', class: 'secondary', onclick: () => ctx.open(p.id) }, 'Open'), err)];
  });
  body.append(table(['ID', 'Name', 'Tier', 'Fallback', 'Limits', 'Created', ''], rows, 'Projects'));
  if (projects.length) body.append(limitsForm(ctx, projects));

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

// ---- Gateway keys ----------------------------------------------------------

// Minting and revoking need the admin token or a gateway key with the
// manage_keys scope (GET /me says which); other keys only see the list.
function canManageKeys(me) {
  return me.kind === 'admin' || (me.scopes || []).includes('manage_keys');
}

async function gatewayPage(body, ctx) {
  const keys = await api('GET', `${P(ctx)}/api-keys`);
  const manage = canManageKeys(ctx.me);
  const slot = h('div');
  const rows = keys.map((k) => {
    const err = errorSlot();
    let action = null;
    if (k.revoked) action = h('span', {}, `revoked ${when(k.revoked_at)}`);
    else if (manage) {
      action = confirmButton('Revoke', 'Really revoke?', async () => {
        await api('DELETE', `${P(ctx)}/api-keys/${enc(k.id)}`);
        announce(`Gateway key ${k.id} revoked`);
        ctx.refresh();
      }, err);
    }
    const expired = has(k, 'expires_at') && Date.parse(k.expires_at) <= Date.now();
    return [h('span', { class: 'mono' }, k.id), h('span', { class: 'mono' }, `${k.prefix}…`),
      h('span', { class: 'label' }, k.label || '—'), (k.scopes || []).join(', ') || '—', when(k.created_at),
      h('span', { class: 'expires' }, has(k, 'expires_at') ? expiry(k.expires_at) : 'never'),
      has(k, 'last_used_at') ? when(k.last_used_at) : '—',
      k.revoked ? 'revoked' : expired ? 'expired' : 'active', h('span', { class: 'actions' }, action, err)];
  });
  body.append(table(['ID', 'Prefix', 'Label', 'Scopes', 'Created', 'Expires', 'Last used', 'State', ''],
    rows, 'Gateway keys'));
  if (!manage) {
    body.append(h('p', { class: 'banner', id: 'no-manage' },
      'This gateway key may list the project\'s gateway keys but not mint or revoke them: that needs the admin token or a key with the manage_keys scope.'));
    return;
  }

  const label = field('Label', h('input', { name: 'label', maxlength: '200' }));
  const expires = field('Expires', h('input', { name: 'expires_at', type: 'datetime-local', id: 'mint-expires' }),
    'optional; the key is refused after this time (your local time); empty = never');
  const scope = h('input', { type: 'checkbox', name: 'manage_keys', id: 'mint-manage' });
  const scopeRow = h('div', { class: 'field inline' }, scope,
    h('label', { for: scope.id }, 'May mint and revoke gateway keys (manage_keys scope)'));
  const err = errorSlot();
  const form = h('form', { class: 'card', id: 'mint' }, h('h3', {}, 'Mint a gateway key'), label.row,
    expires.row, scopeRow, err, h('button', { type: 'submit' }, 'Mint'));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    err.show('');
    const req = { label: label.input.value };
    if (expires.input.value) req.expires_at = rfc3339(expires.input.value);
    if (scope.checked) req.scopes = ['manage_keys'];
    try {
      const k = await api('POST', `${P(ctx)}/api-keys`, req);
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
