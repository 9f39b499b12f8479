// The web client: hash routes (the fragment never reaches the server or its
// logs), one screen per route, the session from api.js.
import { html, render, useEffect, useState } from './vendor/htm-preact-standalone.mjs';
import { t, setLang, currentLang, languages } from './i18n.js';
import { currentUser, onSession, resume, signOut, openEvents, signInWithCode } from './api.js';
import { SignIn } from './screens/sign_in.js';
import { Inbox } from './screens/inbox.js';
import { PatientSearch, PatientPage } from './screens/patients.js';
import { PharmacyPage } from './screens/pharmacy.js';
import { HandoverPage } from './screens/handovers.js';
import { ConsultationPage } from './screens/consultations.js';
import { PlanEditor } from './screens/plan_editor.js';

function route() {
  const parts = location.hash.replace(/^#\/?/, '').split('/').filter(Boolean);
  return parts;
}

function Screen({ parts, user }) {
  const [first, id, sub, action] = parts;
  if (first === 'patients' && id && sub === 'plan' && action === 'edit') return html`<${PlanEditor} id=${id} user=${user} />`;
  if (first === 'patients' && id && sub === 'pharmacy') return html`<${PharmacyPage} id=${id} />`;
  if (first === 'patients' && id) return html`<${PatientPage} id=${id} user=${user} />`;
  if (first === 'patients') return html`<${PatientSearch} />`;
  if (first === 'handovers' && id) return html`<${HandoverPage} id=${id} />`;
  if (first === 'consultations' && id) return html`<${ConsultationPage} id=${id} user=${user} />`;
  return html`<${Inbox} user=${user} />`;
}

function LangSwitch({ onChange }) {
  return html`<label class="lang">${t('language')}
    <select value=${currentLang()} onChange=${(e) => { setLang(e.target.value); onChange(); }}>
      ${languages.map((l) => html`<option value=${l}>${t(`language.${l}`)}</option>`)}
    </select></label>`;
}

function App() {
  const [user, setUser] = useState(currentUser());
  const [ready, setReady] = useState(false);
  const [parts, setParts] = useState(route());
  const [, setLangTick] = useState(0);
  const [notice, setNotice] = useState(null);

  useEffect(() => onSession((session, reason) => {
    setUser(session ? session.user : null);
    if (!session) {
      setNotice(reason === 'expired' ? t('session.expired') : null);
      location.hash = '#/';
    } else {
      setNotice(null);
      openEvents().catch(() => {});
    }
  }), []);
  useEffect(() => {
    const onHash = () => { setParts(route()); document.getElementById('main')?.focus(); };
    addEventListener('hashchange', onHash);
    // Back from an OpenID provider: ?code=… (one-time), then clean the URL.
    const query = new URLSearchParams(location.search);
    const expected = sessionStorage.getItem('relais.oidc_state');
    sessionStorage.removeItem('relais.oidc_state');
    const ours = expected && query.get('state') === expected;
    const start = query.get('code')
      ? (ours ? signInWithCode(query.get('code')) : Promise.reject(new Error('state')))
        .catch(() => setNotice(t('signin.oidc_failed')))
        .finally(() => history.replaceState(null, '', '/'))
      : query.get('error')
        ? Promise.resolve(setNotice(t('signin.oidc_failed'))).finally(() => history.replaceState(null, '', '/'))
        : resume();
    start.finally(() => setReady(true));
    return () => removeEventListener('hashchange', onHash);
  }, []);

  if (!ready) return html`<p class="loading" role="status">${t('loading')}</p>`;
  const header = html`<header class="top">
      <a class="brand" href="#/">Relais</a>
      ${user && html`<nav aria-label=${t('nav.label')}>
        <a href="#/" aria-current=${parts.length === 0 ? 'page' : undefined}>${t('nav.inbox')}</a>
        <a href="#/patients" aria-current=${parts[0] === 'patients' ? 'page' : undefined}>${t('nav.patients')}</a>
      </nav>`}
      <div class="who">
        <${LangSwitch} onChange=${() => setLangTick((n) => n + 1)} />
        ${user && html`<span class="user">${user.full_name} · ${t(`role.${user.role}`)}</span>
          <button type="button" class="secondary" onClick=${() => signOut()}>${t('signout')}</button>`}
      </div>
    </header>`;
  return html`${header}
    <main id="main" tabindex="-1">
      ${notice && html`<p class="notice" role="status">${notice}</p>`}
      ${user ? html`<${Screen} parts=${parts} user=${user} />` : html`<${SignIn} />`}
    </main>`;
}

render(html`<${App} />`, document.getElementById('app'));
