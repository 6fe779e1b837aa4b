// Small formatting helpers shared by the pages.
import { enc } from './api.js';
import { h } from './dom.js';

// The admin API path of the current project.
export const P = (ctx) => `projects/${enc(ctx.project)}`;

export function when(iso) { return iso ? String(iso).replace('T', ' ').replace('Z', ' UTC') : '—'; }
// An expiry with how far away it is: "2026-12-03 10:00:00 UTC (in 3 days)".
export function expiry(iso) {
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return when(iso);
  const days = Math.floor((t - Date.now()) / 86400000);
  const rel = t <= Date.now() ? 'expired' : days < 1 ? 'within a day' : `in ${days} day${days > 1 ? 's' : ''}`;
  return `${when(iso)} (${rel})`;
}
// "2026-12-01T10:00" from <input type=datetime-local> (the user's local
// time) → RFC 3339 UTC, the form the API takes for expires_at.
export function rfc3339(local) {
  const t = Date.parse(local);
  return Number.isNaN(t) ? local : new Date(t).toISOString().replace(/\.\d{3}Z$/, 'Z');
}
export function has(o, k) { return o && o[k] !== undefined && o[k] !== null && o[k] !== ''; }

// Dollars as the API counts them (micro-dollar precision), without float noise.
export function usd(v) { return `$${String(Math.round(Number(v || 0) * 1e6) / 1e6)}`; }
export function count(v) { return Number(v || 0).toLocaleString('en-US'); }

// <dt>/<dd> pairs for the fields of `obj` that are present: [key, label, fmt?].
export function optionalFacts(obj, names) {
  return names.filter(([k]) => has(obj, k)).map(([k, label, fmt]) =>
    h('div', { class: 'fact' }, h('dt', {}, label), h('dd', { 'data-field': k }, fmt ? fmt(obj[k]) : String(obj[k]))));
}
