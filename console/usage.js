// The Usage page: tokens and cost per day by provider (two stacked bar
// charts), who paid (the project's keys or the operator's), top models, the
// table behind the charts with CSV export, and for the admin the projects
// ranked by cost. Everything comes from GET …/usage, GET …/stats and (admin)
// GET /usage; the API groups by one dimension, so "per day by provider" is
// one group_by=provider query per day that had traffic.
import { api } from './api.js';
import { drawStacked } from './chart.js';
import { append, clear, field, h, select, table } from './dom.js';
import { P, count, has, usd } from './fmt.js';

const DAY_MS = 86400000;
const isoDay = (ms) => new Date(ms).toISOString().slice(0, 10);
const tokensOf = (r) => (r.input_tokens || 0) + (r.output_tokens || 0);

// The table behind the charts, and the CSV export: the same columns.
export const USAGE_COLUMNS = ['day', 'provider', 'requests', 'input_tokens', 'output_tokens',
  'cached_tokens', 'tokens_unknown', 'cost_usd'];

const ROUTE_NAMES = { byok: 'your keys (BYOK)', system: "operator's key (system default)",
  fallback: "operator's key (fallback)" };

// fn over items, at most n at a time (a long period is many small queries).
async function pool(items, n, fn) {
  const out = new Array(items.length);
  let next = 0;
  await Promise.all(Array.from({ length: Math.min(n, items.length) }, async () => {
    while (next < items.length) { const i = next++; out[i] = await fn(items[i]); }
  }));
  return out;
}

async function usageData(ctx, days) {
  const base = `${P(ctx)}/usage`;
  // The period ends on the server's UTC today, whatever this machine's clock says.
  const probe = await api('GET', `${base}?group_by=day`);
  const to = probe.to;
  const from = isoDay(Date.parse(to) - (days - 1) * DAY_MS);
  const range = `from=${from}&to=${to}`;
  const [byDay, byRoute, byModel, projects] = await Promise.all([
    api('GET', `${base}?group_by=day&${range}`),
    api('GET', `${base}?group_by=route&${range}`),
    api('GET', `${base}?group_by=model&${range}`),
    ctx.me.kind === 'admin' ? api('GET', `usage?${range}&top=20`) : null,
  ]);
  const active = byDay.rows.filter((r) => r.requests > 0 || tokensOf(r) > 0).map((r) => r.day);
  const perDay = await pool(active, 4, (d) => api('GET', `${base}?group_by=provider&from=${d}&to=${d}`));
  const rows = [];
  perDay.forEach((res, i) => { for (const r of res.rows) rows.push({ ...r, day: active[i] }); });
  const labels = Array.from({ length: days }, (_, i) => isoDay(Date.parse(from) + i * DAY_MS));
  return { from, to, labels, rows, totals: byDay.totals, routes: byRoute.rows, models: byModel.rows, projects };
}

function csv(rows, cols) {
  // Quoted when needed; a leading = + - @ is quoted too so a spreadsheet
  // does not run a provider or model name as a formula.
  const q = (v) => {
    const s = String(v ?? '');
    return /[",\n\r]/.test(s) || /^[=+\-@]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
  };
  return [cols.join(','), ...rows.map((r) => cols.map((c) => q(r[c] ?? 0)).join(','))].join('\r\n');
}

// The last 30 days from GET …/stats: totals and who paid.
function thirtyDays(st) {
  if (!has(st, 'usage_30d')) return null;
  const u = st.usage_30d;
  const s = st.savings_30d || {};
  return h('section', { class: 'card', id: 'usage-30d', 'aria-labelledby': 'u30-h' },
    h('h3', { id: 'u30-h' }, 'Last 30 days'),
    h('dl', { class: 'facts' },
      h('div', { class: 'fact' }, h('dt', {}, 'Requests'), h('dd', {}, count(u.requests))),
      h('div', { class: 'fact' }, h('dt', {}, 'Tokens in / out'),
        h('dd', {}, `${count(u.input_tokens)} / ${count(u.output_tokens)}`)),
      h('div', { class: 'fact' }, h('dt', {}, 'Estimated cost'), h('dd', {}, usd(u.cost_usd))),
      h('div', { class: 'fact' }, h('dt', {}, 'On your keys (BYOK)'),
        h('dd', { id: 'byok-cost' }, `${usd(s.byok_cost_usd)} · ${count(s.byok_requests)} request(s)`)),
      h('div', { class: 'fact' }, h('dt', {}, "On the operator's keys"),
        h('dd', { id: 'operator-cost' }, `${usd(s.operator_cost_usd)} · ${count(s.operator_requests)} request(s)`))));
}

function chart(id, title, labels, series, fmt) {
  const canvas = h('canvas', { id, role: 'img',
    'aria-label': `${title}; the table "Usage by day and provider" below has the numbers` });
  return { canvas, el: h('figure', { class: 'chart-wrap' }, h('figcaption', {}, title), canvas),
    draw: () => drawStacked(canvas, labels, series, fmt) };
}

export async function usagePage(body, ctx) {
  const daysSel = select([['7', '7 days'], ['30', '30 days'], ['90', '90 days']], '30');
  daysSel.id = 'usage-period';
  const period = field('Period', daysSel);
  const out = h('div');
  const st = await api('GET', `${P(ctx)}/stats`);
  append(body, [thirtyDays(st), period.row, out]);
  let observer = null;
  const draw = async () => {
    const days = Number(daysSel.value);
    const d = await usageData(ctx, days);
    clear(out);
    if (observer) observer.disconnect();
    const providers = [...new Set(d.rows.map((r) => r.provider))].sort();
    const per = (metric) => providers.map((p) => ({
      name: p,
      values: d.labels.map((l) => d.rows.filter((r) => r.provider === p && r.day === l)
        .reduce((s, r) => s + metric(r), 0)),
    }));
    const short = d.labels.map((l) => l.slice(5));
    const charts = [
      chart('usage-tokens', `Tokens (in + out) per day by provider, ${d.from} to ${d.to}`, short, per(tokensOf)),
      chart('usage-cost', `Estimated cost (USD) per day by provider, ${d.from} to ${d.to}`, short,
        per((r) => r.cost_usd || 0), (v) => usd(v)),
    ];
    const legend = h('ul', { class: 'legend', 'aria-label': 'Providers' }, providers.map((p, i) =>
      h('li', {}, h('span', { class: `swatch c${i % 12}`, 'aria-hidden': 'true' }), p)));
    const t = d.totals;
    append(out, [
      h('p', { class: 'banner', id: 'usage-totals' },
        `${d.from} to ${d.to}: ${count(t.requests)} request(s), ${count(tokensOf(t))} tokens, ${usd(t.cost_usd)} estimated.`),
      d.rows.length ? null : h('p', { id: 'usage-empty' }, 'No traffic in this period.'),
      h('div', { class: 'charts' }, charts.map((c) => c.el)), legend]);
    for (const c of charts) c.draw();
    // Redrawn when the layout changes width (360 px phone, 1440 px desktop).
    const widths = new Map();
    observer = new ResizeObserver((entries) => {
      for (const e of entries) {
        const c = charts.find((x) => x.canvas === e.target);
        const w = Math.round(e.contentRect.width);
        if (c && widths.get(c) !== undefined && widths.get(c) !== w) c.draw();
        widths.set(c, w);
      }
    });
    for (const c of charts) observer.observe(c.canvas);

    const byRoute = Object.fromEntries(d.routes.map((r) => [r.route, r]));
    out.append(table(['Paid with', 'Requests', 'Tokens', 'Estimated cost'],
      ['byok', 'system', 'fallback'].filter((k) => byRoute[k]).map((k) =>
        [ROUTE_NAMES[k], count(byRoute[k].requests), count(tokensOf(byRoute[k])), usd(byRoute[k].cost_usd)]),
      'BYOK versus operator-paid', 'usage-routes'));
    const models = [...d.models].sort((a, b) => (b.cost_micro_usd - a.cost_micro_usd) || (b.requests - a.requests)).slice(0, 10);
    out.append(table(['Model', 'Requests', 'Tokens', 'Estimated cost'],
      models.map((m) => [m.model || '(unknown)', count(m.requests), count(tokensOf(m)), usd(m.cost_usd)]),
      'Top models', 'usage-models'));
    out.append(table(USAGE_COLUMNS, d.rows.map((r) => USAGE_COLUMNS.map((c) => String(r[c] ?? 0))),
      'Usage by day and provider', 'usage-table'));
    const exportBtn = h('button', { type: 'button', class: 'secondary', id: 'csv' }, 'Export CSV');
    exportBtn.addEventListener('click', () => {
      const url = URL.createObjectURL(new Blob([csv(d.rows, USAGE_COLUMNS)], { type: 'text/csv' }));
      const a = h('a', { href: url, download: `usage-${ctx.project}-${d.from}-${d.to}.csv` });
      document.body.append(a); a.click(); a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 1000);
    });
    out.append(exportBtn);
    if (d.projects) {
      out.append(table(['Project', 'Requests', 'Tokens', 'Estimated cost'],
        d.projects.projects.map((p) => [h('span', { class: 'mono' }, p.project), count(p.requests),
          count(tokensOf(p)), usd(p.cost_usd)]),
        `All projects by cost, ${d.from} to ${d.to} (top 20)`, 'usage-projects'));
    }
  };
  daysSel.addEventListener('change', () => {
    body.dataset.ready = '';
    draw().catch((e) => out.replaceChildren(h('p', { class: 'error', role: 'alert' }, e.message)))
      .finally(() => { body.dataset.ready = '1'; });
  });
  await draw();
}
