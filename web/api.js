// The one way the client talks to the server: the public API, nothing else.
//
// The access token lives in this module's memory only (never in
// localStorage, sessionStorage or a readable cookie). Surviving a reload
// uses the refresh token the server keeps in an HttpOnly cookie when asked
// with `X-Relais-Refresh: cookie` (src/api/web_auth.rs); that header is also
// what lets the cookie be used at all (the CSRF guard).

const BASE = '/api/v1';
const MODE = { 'X-Relais-Refresh': 'cookie' };

let session = null; // { token, expiresAt, user }
let refreshTimer = null;
let refreshing = null;
const listeners = new Set();

/** An API error: status, problem+json detail and field errors. */
export class ApiError extends Error {
  constructor(status, problem) {
    super((problem && (problem.detail || problem.title)) || `HTTP ${status}`);
    this.status = status;
    this.problem = problem || {};
    this.errors = (problem && problem.errors) || [];
  }
  field(name) {
    const e = this.errors.find((x) => x.field === name);
    return e ? e.message : null;
  }
}

export function currentUser() { return session && session.user; }
export function onSession(fn) { listeners.add(fn); return () => listeners.delete(fn); }
function emit(reason) { for (const fn of listeners) fn(session, reason); }

function adopt(pair) {
  session = { token: pair.access_token, expiresAt: Date.now() + pair.expires_in * 1000, user: pair.user,
    enrolOnly: !!pair.mfa_enrolment_required };
  clearTimeout(refreshTimer);
  // Renew a little before expiry; a failed renewal ends the session.
  const lead = Math.max(5, Math.min(60, pair.expires_in / 5));
  refreshTimer = setTimeout(() => refresh().catch(() => end('expired')), (pair.expires_in - lead) * 1000);
  emit('signed-in');
}

async function parse(res) {
  if (res.status === 204) return null;
  const type = res.headers.get('content-type') || '';
  const body = type.includes('json') ? await res.json() : await res.text();
  if (!res.ok) throw new ApiError(res.status, typeof body === 'object' ? body : { detail: body });
  return body;
}

async function post(path, body, headers = {}) {
  const res = await fetch(BASE + path, {
    method: 'POST', credentials: 'same-origin', cache: 'no-store',
    headers: { ...MODE, ...(body === undefined ? {} : { 'Content-Type': 'application/json' }), ...headers },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return parse(res);
}

/** Signs in with a password (and a TOTP or recovery code when asked). */
export async function signIn(email, password, otp) {
  const body = { email, password };
  if (otp) body.otp = otp;
  adopt(await post('/auth/login', body));
}

/** Exchanges an OpenID sign-in's one-time code. */
export async function signInWithCode(code) { adopt(await post('/auth/oidc/token', { code })); }

/** Renews the access token from the cookie. One renewal at a time, across tabs
 * too: two renewals with the same refresh token would look like a stolen one. */
export function refresh() {
  if (!refreshing) {
    const run = async () => adopt(await post('/auth/refresh'));
    const locked = navigator.locks ? navigator.locks.request('relais-refresh', run) : run();
    refreshing = locked.finally(() => { refreshing = null; });
  }
  return refreshing;
}

/** After a reload: resumes the session from the cookie, if there is one. */
export async function resume() {
  try { await refresh(); return true; } catch { return false; }
}

/** Clears every trace of the session in this page. */
function end(reason) {
  session = null;
  clearTimeout(refreshTimer);
  closeEvents();
  emit(reason);
}

/** Signs out: the server revokes the session and clears the cookie. */
export async function signOut() {
  try { await post('/auth/logout'); } catch { /* signed out here whatever the server says */ }
  end('signed-out');
}

/** Calls the API with the access token; renews it once on 401. `signal`
 * (an AbortController's) cancels it: the promise rejects with an AbortError. */
export async function api(method, path, { body, headers = {}, signal } = {}) {
  const send = () => fetch(BASE + path, {
    method, credentials: 'same-origin', cache: 'no-store', signal,
    headers: {
      ...(session ? { Authorization: `Bearer ${session.token}` } : {}),
      ...(body === undefined ? {} : { 'Content-Type': 'application/json' }),
      ...headers,
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let res = await send();
  if (res.status === 401 && session) {
    try { await refresh(); } catch { end('expired'); throw new ApiError(401, { detail: 'session expired' }); }
    res = await send();
  }
  const data = await parse(res);
  return { data, etag: res.headers.get('etag') };
}
export const get = async (path) => (await api('GET', path)).data;

// ---- Live events (server-sent events through a single-use ticket) ----

const EVENT_TYPES = ['message.created', 'thread.read', 'notification.created', 'handover.sent',
  'handover.acknowledged', 'handover.reconciled', 'handover.rejected', 'consultation.submitted',
  'consultation.accepted', 'consultation.answered', 'consultation.declined', 'consultation.closed',
  'consultation.cancelled', 'consultation.overdue', 'care_plan.version_created', 'observation.alert',
  'access_request.created', 'access_request.approved', 'access_request.denied',
  'emergency_access.granted', 'stream.reset', 'auth.expired'];
let source = null;
let lastId = null;
let retry = null;
const eventListeners = new Set();

/** Calls `fn(event)` for every live event; returns the unsubscribe function. */
export function onEvent(fn) { eventListeners.add(fn); return () => eventListeners.delete(fn); }

/** Opens the stream (once per session). */
export async function openEvents() {
  if (source || !session) return;
  const { data } = await api('POST', '/events/ticket');
  const query = new URLSearchParams({ ticket: data.ticket });
  if (lastId) query.set('last_event_id', lastId);
  source = new EventSource(`${BASE}/events?${query}`);
  const deliver = (e) => {
    if (e.lastEventId) lastId = e.lastEventId;
    let payload = {};
    try { payload = JSON.parse(e.data); } catch { /* ids only; ignore a malformed frame */ }
    for (const fn of eventListeners) fn({ type: e.type, ...payload });
  };
  source.addEventListener('stream.ready', (e) => { if (e.lastEventId) lastId = e.lastEventId; document.body.dataset.live = 'on'; });
  for (const type of EVENT_TYPES) source.addEventListener(type, deliver);
  source.onerror = () => {
    // A used ticket is refused: reconnect with a new one, from the last id.
    closeEvents(true);
    if (session) retry = setTimeout(() => openEvents().catch(() => {}), 2000);
  };
}

function closeEvents(keepPosition) {
  clearTimeout(retry);
  if (source) source.close();
  source = null;
  delete document.body.dataset.live;
  if (!keepPosition) lastId = null;
}
