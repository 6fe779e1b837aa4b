// DOM helpers. Everything the API returns is tenant-controlled (labels,
// messages, audit fields), so text only ever goes in as text nodes or
// attribute values; nothing here parses HTML.

// h('button', {class: 'x', onclick: fn}, 'text', child, ...)
export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const c of [children].flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export function clear(el) {
  while (el.firstChild) el.firstChild.remove();
  return el;
}

let seq = 0;
export const uid = (p) => `${p}-${++seq}`;

// A labelled form field: returns {row, input}.
export function field(label, input, hint) {
  const id = input.id || (input.id = uid('f'));
  const hintEl = hint ? h('span', { class: 'hint', id: `${id}-hint` }, hint) : null;
  if (hintEl) input.setAttribute('aria-describedby', hintEl.id);
  return { row: h('div', { class: 'field' }, h('label', { for: id }, label), input, hintEl), input };
}

export function select(options, value) {
  const s = h('select');
  for (const o of options) {
    const [v, text] = Array.isArray(o) ? o : [o, o];
    const opt = h('option', { value: v }, text);
    if (v === value) opt.selected = true;
    s.append(opt);
  }
  return s;
}

// The place where a control's API error is said in words, right next to it.
export function errorSlot() {
  const el = h('p', { class: 'error', role: 'alert', hidden: true });
  el.show = (msg) => { el.textContent = msg; el.hidden = !msg; };
  return el;
}

// On a narrow screen (app.css) each row becomes a block of "header: value"
// lines, the header coming from data-label; the explicit roles keep it a
// table for screen readers whatever its CSS display.
export function table(headers, rows, caption, id) {
  return h('div', { class: 'table-wrap', id },
    h('table', { role: 'table' },
      caption ? h('caption', {}, caption) : null,
      h('thead', { role: 'rowgroup' }, h('tr', { role: 'row' },
        headers.map((x) => h('th', { scope: 'col', role: 'columnheader' }, x)))),
      h('tbody', { role: 'rowgroup' }, rows.map((r) => h('tr', { role: 'row' }, r.map((c, i) =>
        h('td', { role: 'cell', 'data-label': headers[i] || null }, h('span', { class: 'cell' }, c))))))));
}

// A button that asks once more before acting (no modal dialogs).
export function confirmButton(label, question, action, errEl) {
  const b = h('button', { type: 'button', class: 'danger' }, label);
  let armed = false;
  b.addEventListener('click', async () => {
    if (!armed) { armed = true; b.textContent = question; return; }
    b.disabled = true;
    try { await action(); } catch (e) { errEl.show(e.message); b.disabled = false; }
    armed = false; b.textContent = label;
  });
  b.addEventListener('blur', () => { if (armed) { armed = false; b.textContent = label; } });
  return b;
}

export function announce(msg) {
  const s = document.getElementById('status');
  s.textContent = '';
  s.textContent = msg;
}
