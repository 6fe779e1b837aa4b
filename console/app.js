// Entry point: sign-in, who am I (GET /me), navigation between pages.
import { api, forget, remember, signedIn, whenUnauthorized } from './api.js';
import { append, clear, errorSlot, field, h, select } from './dom.js';
import { PAGES } from './pages.js';

const state = { me: null, project: '', projects: [], routes: null };
const main = document.getElementById('main');
const nav = document.getElementById('nav');
const who = document.getElementById('who');

function pagesFor(me) {
  return PAGES.filter((p) => !p.adminOnly || me.kind === 'admin');
}

function signInPage(message) {
  nav.hidden = true;
  who.hidden = true;
  clear(main);
  const input = h('input', { type: 'password', autocomplete: 'off', spellcheck: 'false',
    required: true, name: 'credential' });
  const f = field('Admin token or gateway key', input,
    'Kept in this tab only (sessionStorage) and forgotten on sign-out.');
  const err = errorSlot();
  const form = h('form', { class: 'card narrow', id: 'signin' },
    h('h2', {}, 'Sign in'), f.row, err, h('button', { type: 'submit' }, 'Sign in'));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const credential = input.value.trim();
    input.value = '';
    if (!credential) { err.show('Enter a credential.'); return; }
    remember(credential);
    try {
      await start();
    } catch (e) {
      forget();
      signInPage(e.message);
    }
  });
  append(main, form);
  if (message) err.show(message);
  input.focus();
}

function signOut() {
  forget();
  state.me = null;
  state.projects = [];
  state.project = '';
  state.routes = null;
  history.replaceState(null, '', location.pathname);
  signInPage('');
}

async function start() {
  state.me = await api('GET', 'me');
  state.routes = null;
  if (state.me.kind === 'admin') {
    state.projects = await api('GET', 'projects');
    if (!state.projects.some((p) => p.id === state.project))
      state.project = state.projects.length ? state.projects[0].id : '';
  } else {
    state.project = state.me.project;
  }
  renderChrome();
  await show(location.hash.slice(1));
}

function renderChrome() {
  clear(who);
  who.hidden = false;
  if (state.me.kind === 'admin') {
    const s = select(state.projects.map((p) => [p.id, `${p.name} (${p.id})`]), state.project);
    s.id = 'project-select';
    s.disabled = state.projects.length === 0;
    s.addEventListener('change', () => { state.project = s.value; show(currentPage()); });
    append(who, [h('span', { class: 'badge' }, 'admin'),
      h('label', { for: s.id }, 'Project'), s]);
  } else {
    append(who, [h('span', { class: 'badge' }, 'project'), h('span', { class: 'mono' }, state.project),
      state.me.scopes.length ? h('span', { class: 'hint' }, `scopes: ${state.me.scopes.join(', ')}`) : null]);
  }
  append(who, h('button', { type: 'button', class: 'secondary', id: 'signout', onclick: signOut },
    'Sign out'));
  clear(nav);
  nav.hidden = false;
  const ul = h('ul');
  for (const p of pagesFor(state.me))
    ul.append(h('li', {}, h('a', { href: `#${p.id}`, id: `nav-${p.id}` }, p.title)));
  nav.append(ul);
}

function currentPage() { return location.hash.slice(1); }

async function show(id) {
  const pages = pagesFor(state.me);
  const page = pages.find((p) => p.id === id) || pages[0];
  for (const a of nav.querySelectorAll('a'))
    if (a.id === `nav-${page.id}`) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  clear(main);
  const heading = h('h2', { tabindex: '-1' }, page.title);
  const body = h('div', { class: 'page', id: `page-${page.id}` });
  append(main, [heading, body]);
  const ctx = {
    me: state.me,
    project: state.project,
    projects: state.projects,
    refresh: () => show(page.id),
    // The API's route table (GET /), asked once per sign-in: what it can do.
    routes: () => (state.routes = state.routes || api('GET', '').catch((e) => { state.routes = null; throw e; })),
    reloadProjects: async () => { state.projects = await api('GET', 'projects'); renderChrome(); },
    open: (pid) => { state.project = pid; renderChrome(); location.hash = '#keys'; },
  };
  if (page.needsProject && !state.project) {
    body.append(h('p', {}, 'No project yet: create one on the Projects page.'));
  } else {
    const err = errorSlot();
    body.append(err);
    try {
      await page.render(body, ctx);
    } catch (e) {
      err.show(e.message);
    }
  }
  body.dataset.ready = '1';
  heading.focus();
}

whenUnauthorized(() => signInPage('Signed out: the credential was refused.'));
window.addEventListener('hashchange', () => { if (state.me) show(currentPage()); });

if (signedIn()) start().catch((e) => { forget(); signInPage(e.message); });
else signInPage('');
