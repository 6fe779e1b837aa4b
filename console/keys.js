// The Provider keys page: one card per catalog provider with the keys it
// holds. Several keys per provider (issue 14: id, weight, health, expiry,
// last use, per-key routes, test on save) when the API's route table has
// POST /projects/{pid}/keys/{provider}; one key per provider on the
// single-key routes otherwise. Fields the API does not return are left out.
import { api, enc } from './api.js';
import { announce, append, confirmButton, errorSlot, field, h } from './dom.js';
import { P, expiry, has, optionalFacts, rfc3339, usd, when } from './fmt.js';

const ADD_ROUTE = /^\/projects\/\{[^}]+\}\/keys\/\{[^}]+\}$/;

// Several keys per provider? The API says so in GET / (its route table).
export function multiKey(routes) {
  return (routes || []).some((r) => r.method === 'POST' && ADD_ROUTE.test(r.path));
}

const keyId = (rec) => rec.id || rec.key_id || '';

// Health is a state (healthy, invalid, exhausted, cooling, breaker) or an
// object with the state and until when it holds (ISO time or until_ms).
function healthText(v) {
  if (v === null || typeof v !== 'object') return String(v);
  const until = v.until || v.retry_at || v.cooldown_until
    || (Number(v.until_ms) > 0 ? new Date(Number(v.until_ms)).toISOString().replace(/\.\d{3}Z$/, 'Z') : '');
  return [v.state || v.status, until ? `until ${when(until)}` : '', v.reason ? `(${v.reason})` : '']
    .filter(Boolean).join(' ');
}
const healthState = (v) => (v && typeof v === 'object' ? v.state || v.status : v) || '';

function keyState(rec) {
  if (rec.error) return 'unreadable';
  if (!rec.is_active) return 'disabled';
  if (has(rec, 'expires_at') && Date.parse(rec.expires_at) <= Date.now()) return 'expired';
  const hs = healthState(rec.health);
  return hs && hs !== 'healthy' && hs !== 'ok' ? hs : 'active';
}

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
  const s = stats.savings_30d;
  if (s) text += ` Last 30 days: ${usd(s.byok_cost_usd)} on your keys, ${usd(s.operator_cost_usd)} on the operator's.`;
  return h('p', { class: cls, id: 'route-banner' }, text);
}

// Keys about to expire, when the stats list them (issue 14).
function expiringNote(stats) {
  const list = ['expiring_keys', 'keys_expiring', 'expiring'].map((k) => stats[k]).find(Array.isArray);
  if (!list || list.length === 0) return null;
  return h('div', { class: 'banner warn', id: 'expiring' }, h('p', {}, 'Expiring within 7 days:'),
    h('ul', {}, list.map((x) => h('li', {},
      `${x.provider || x.kind || 'key'} ${x.label || x.id || x.key_id || ''} — ${when(x.expires_at)}`))));
}

function keyForm(ctx, provider, multi, existing, onDone) {
  const secret = h('input', { type: 'password', name: 'key', autocomplete: 'off', spellcheck: 'false',
    required: true, placeholder: provider.key_prefix ? `${provider.key_prefix}…` : '' });
  const hint = provider.key_prefix
    ? `Format: starts with "${provider.key_prefix}". Stored encrypted; never shown again.`
    : 'Stored encrypted; never shown again.';
  const key = field(!multi && existing ? 'New key (replaces the stored one)' : 'Key', secret, hint);
  const toggle = h('button', { type: 'button', class: 'secondary', 'aria-pressed': 'false',
    'aria-controls': secret.id }, 'Show');
  toggle.addEventListener('click', () => {
    const show = secret.type === 'password';
    secret.type = show ? 'text' : 'password';
    toggle.textContent = show ? 'Hide' : 'Show';
    toggle.setAttribute('aria-pressed', String(show));
  });
  key.row.append(toggle);
  const label = field('Label', h('input', { name: 'label', maxlength: '200',
    value: !multi && existing ? existing.label : '' }));
  const endpoint = provider.id === 'custom'
    ? field('Endpoint (https)', h('input', { name: 'endpoint', type: 'url', required: true,
      value: !multi && existing ? existing.endpoint : '' }))
    : null;
  const weight = multi ? field('Weight', h('input', { name: 'weight', type: 'number', min: '1', max: '100',
    step: '1', inputmode: 'numeric' }), '1–100, share of the traffic among the active keys; 1 when empty') : null;
  const expires = multi ? field('Expires', h('input', { name: 'expires_at', type: 'datetime-local' }),
    'optional; never used after this time (your local time)') : null;
  const testFirst = h('input', { type: 'checkbox', name: 'test_first', id: `tf-${provider.id}` });
  const testRow = h('div', { class: 'field inline' }, testFirst, h('label', { for: testFirst.id },
    multi ? 'Test before saving (refused when the provider rejects it)'
      : 'Test before saving (saved inactive, enabled only when the test passes)'));
  const err = errorSlot();
  const form = h('form', { class: 'keyform', 'data-provider': provider.id }, key.row, label.row,
    endpoint ? endpoint.row : null, weight ? weight.row : null, expires ? expires.row : null, testRow, err,
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
    if (weight && weight.input.value !== '') req.weight = Number(weight.input.value);
    if (expires && expires.input.value) req.expires_at = rfc3339(expires.input.value);
    const path = `${P(ctx)}/keys/${enc(provider.id)}`;
    try {
      let note = 'Key saved.';
      if (multi) {
        // The API tests the key before storing it and refuses an invalid one.
        req.test = testFirst.checked;
        const r = api('POST', path, req);
        req.key = '';
        const added = await r;
        note = testFirst.checked ? `Key ${keyId(added)} tested and saved.` : `Key ${keyId(added)} saved.`;
      } else {
        if (testFirst.checked) req.is_active = false;
        const r = api('PUT', path, req);
        req.key = '';
        await r;
        if (testFirst.checked) {
          const t = await api('POST', `${path}/test`);
          if (t.status === 'valid') {
            await api('PATCH', path, { is_active: true });
            note = `Key saved, tested (${t.message}) and enabled.`;
          } else {
            note = `Key saved but left disabled: the test said ${t.status} (${t.message}).`;
          }
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

// One stored key: what the API says about it and its controls.
function keyItem(ctx, provider, multi, rec, reload) {
  const state = keyState(rec);
  const err = errorSlot();
  const result = h('p', { class: 'result', 'aria-live': 'polite' });
  const id = keyId(rec);
  const item = h('article', { class: 'key', 'data-key-id': id || null,
    'aria-label': `${provider.name} key ${rec.key_hint || id}` });
  append(item, h('p', { class: 'keyhead' }, h('span', { class: `badge ${state}` }, state)));
  if (rec.error) {
    append(item, [h('p', {}, rec.error), err]);
    return item;
  }
  // The API gives the health as a state and, while it holds, health_until.
  const health = typeof rec.health === 'string' && has(rec, 'health_until')
    ? { state: rec.health, until: rec.health_until } : rec.health;
  // Per-key routes when the API has several keys per provider.
  const path = `${P(ctx)}/keys/${enc(provider.id)}${multi && id ? `/${enc(id)}` : ''}`;
  append(item, h('dl', { class: 'facts' },
    h('div', { class: 'fact' }, h('dt', {}, 'Key'), h('dd', { class: 'mono key-hint' }, rec.key_hint)),
    h('div', { class: 'fact' }, h('dt', {}, 'Label'), h('dd', { class: 'label' }, rec.label || '—')),
    optionalFacts({ ...rec, health }, [['endpoint', 'Endpoint'], ['weight', 'Weight'], ['health', 'Health', healthText],
      ['expires_at', 'Expires', expiry], ['last_used_at', 'Last used', when], ['last_used', 'Last used', when]]),
    h('div', { class: 'fact' }, h('dt', {}, 'Last test'),
      h('dd', { class: 'test-status' }, rec.last_tested ? `${rec.test_status} at ${when(rec.last_tested)}`
        : has(rec, 'test_status') && rec.test_status !== 'untested' ? rec.test_status : 'never'))));
  const test = h('button', { type: 'button', class: 'secondary test' }, 'Test');
  test.addEventListener('click', async () => {
    err.show(''); test.disabled = true; result.textContent = 'Testing…';
    try {
      const t = await api('POST', `${path}/test`);
      const detail = [has(t, 'http_status') ? `HTTP ${t.http_status}` : '', has(t, 'latency_ms') ? `${t.latency_ms} ms` : '']
        .filter(Boolean).join(', ');
      result.textContent = `${t.status}: ${t.message || ''}${detail ? ` (${detail})` : ''}`;
      result.dataset.status = t.status;
    } catch (e) { result.textContent = ''; err.show(e.message); }
    test.disabled = false;
  });
  const toggle = h('button', { type: 'button', class: 'secondary toggle' }, rec.is_active ? 'Disable' : 'Enable');
  toggle.addEventListener('click', async () => {
    err.show('');
    try {
      await api('PATCH', path, { is_active: !rec.is_active });
      announce(`${provider.name} key ${rec.is_active ? 'disabled' : 'enabled'}`);
      await reload();
    } catch (e) { err.show(e.message); }
  });
  const del = confirmButton('Delete', 'Really delete?', async () => {
    await api('DELETE', path);
    announce(`${provider.name} key deleted`);
    await reload();
  }, err);
  append(item, [h('span', { class: 'actions' }, test, toggle, del), result, err]);
  return item;
}

function providerCard(ctx, provider, multi, recs, reload) {
  const card = h('section', { class: 'card provider', id: `provider-${provider.id}`,
    'aria-labelledby': `ph-${provider.id}` });
  const summary = recs.length === 0 ? 'not configured' : `${recs.length} key${recs.length > 1 ? 's' : ''}`;
  append(card, h('header', {}, h('h3', { id: `ph-${provider.id}` }, provider.name),
    h('span', { class: `badge ${recs.length ? 'count' : 'not-configured'}` }, summary)));
  for (const rec of recs) card.append(keyItem(ctx, provider, multi, rec, reload));
  const existing = recs.find((r) => !r.error) || null;
  const details = h('details', {}, h('summary', {},
    multi ? (recs.length ? 'Add another key' : 'Add key') : existing ? 'Replace key' : 'Add key'));
  details.append(keyForm(ctx, provider, multi, existing, async (note) => {
    await reload();
    const again = document.querySelector(`#provider-${CSS.escape(provider.id)} .result`);
    if (again) again.textContent = note;
  }));
  card.append(details);
  return card;
}

// One row per key, whether the API lists rows with `provider`, rows per
// provider with their `keys`, or an object keyed by provider.
function flatKeys(keys) {
  const list = Array.isArray(keys) ? keys
    : Object.entries(keys || {}).map(([provider, v]) => (Array.isArray(v) ? { provider, keys: v } : { provider, ...v }));
  return list.flatMap((k) => (Array.isArray(k.keys) ? k.keys.map((x) => ({ provider: k.provider, ...x })) : [k]));
}

export async function keysPage(body, ctx) {
  const [providers, routes] = await Promise.all([
    api('GET', `providers?project=${enc(ctx.project)}`), ctx.routes()]);
  const multi = multiKey(routes);
  const view = h('div');
  body.append(view);
  // Cards are rebuilt from the API after every change, so what is shown is
  // what is stored (and no form keeps a typed key around).
  const load = async () => {
    const [keys, st] = await Promise.all([api('GET', `${P(ctx)}/keys`), api('GET', `${P(ctx)}/stats`)]);
    const byProvider = new Map();
    for (const k of flatKeys(keys)) byProvider.set(k.provider, [...(byProvider.get(k.provider) || []), k]);
    const grid = h('div', { class: 'grid' });
    for (const p of providers) grid.append(providerCard(ctx, p, multi, byProvider.get(p.id) || [], load));
    view.replaceChildren(routeBanner(st), expiringNote(st) || '',
      h('p', { class: 'hint' }, `Tier ${st.tier}: ${st.configured_providers} of ${st.total_providers} providers configured, ${st.valid_providers} tested valid.`
        + (multi ? ' Several keys per provider: traffic is shared by weight among the active, healthy ones.' : '')),
      grid);
  };
  await load();
}
