// The admin API client. The credential (admin token or gateway key) lives in
// sessionStorage only and is sent as a Bearer header: no cookie, so no CSRF
// surface. Any 401 forgets it and signs out.
const STORE = 'byok.console.credential';

export const apiBase = document.querySelector('meta[name="byok-api"]').content;

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

let onUnauthorized = () => {};
export function whenUnauthorized(fn) { onUnauthorized = fn; }

export function signedIn() { return sessionStorage.getItem(STORE) !== null; }
export function remember(credential) { sessionStorage.setItem(STORE, credential); }
export function forget() { sessionStorage.removeItem(STORE); }

export async function api(method, path, body) {
  const credential = sessionStorage.getItem(STORE);
  if (credential === null) throw new ApiError(401, 'unauthorized', 'not signed in');
  const init = {
    method,
    headers: { Authorization: `Bearer ${credential}` },
    cache: 'no-store',
    credentials: 'omit',
    redirect: 'error',
  };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(apiBase + path, init);
  } catch {
    throw new ApiError(0, 'unreachable', 'the admin API could not be reached');
  }
  const text = await res.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  if (res.status === 401) {
    forget();
    onUnauthorized();
    throw new ApiError(401, 'unauthorized', 'the credential was refused; signed out');
  }
  if (!res.ok) {
    const e = data && data.error ? data.error : {};
    // A refused key test also says what the provider answered (http_status).
    const detail = [e.code || res.status, Number(e.http_status) > 0 ? `provider answered HTTP ${e.http_status}` : '']
      .filter(Boolean).join(', ');
    throw new ApiError(res.status, e.code || `http_${res.status}`,
      e.message ? `${e.message} (${detail})` : `HTTP ${res.status}`);
  }
  return data;
}

export const enc = encodeURIComponent;
