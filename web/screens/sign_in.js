// Sign-in: password, the second factor when the account has one, and the
// configured OpenID providers.
import { html, useEffect, useLayoutEffect, useRef, useState } from '../vendor/htm-preact-standalone.mjs';
import { t } from '../i18n.js';
import { signIn, ApiError } from '../api.js';
import { FieldError } from './common.js';

const PROVIDER_LABELS = { psc: 'Pro Santé Connect' };

export function SignIn() {
  const [email, setEmail] = useState('');
  const [password, setPassword] = useState('');
  const [otp, setOtp] = useState('');
  const [needOtp, setNeedOtp] = useState(false);
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const [providers, setProviders] = useState([]);
  const otpRef = useRef(null);

  useEffect(() => {
    fetch('/api/v1/auth/oidc/providers', { cache: 'no-store' })
      .then((r) => (r.ok ? r.json() : { items: [] }))
      .then((page) => setProviders(page.items), () => {});
  }, []);
  useLayoutEffect(() => { if (needOtp && otpRef.current) otpRef.current.focus(); }, [needOtp]);

  async function submit(e) {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      await signIn(email, password, needOtp ? otp : undefined);
    } catch (err) {
      if (err instanceof ApiError && err.field('otp')) {
        if (needOtp) setError({ otp: t('signin.otp_wrong') });
        setNeedOtp(true);
      } else if (err instanceof ApiError && err.status === 429) {
        setError({ form: t('signin.throttled') });
      } else if (err instanceof ApiError && err.status === 401) {
        setError({ form: t('signin.wrong') });
      } else {
        setError({ form: t('error.generic') });
      }
    } finally {
      setBusy(false);
    }
  }

  function startOidc(name) {
    // Our own state, checked on return: a code we did not ask for (an
    // attacker's link signing us in as them) is refused.
    const state = crypto.randomUUID();
    sessionStorage.setItem('relais.oidc_state', state);
    const query = new URLSearchParams({ redirect_uri: `${location.origin}/`, state });
    location.assign(`/api/v1/auth/oidc/${encodeURIComponent(name)}/start?${query}`);
  }

  return html`<section class="card narrow" aria-labelledby="signin-title">
    <h1 id="signin-title">${t('signin.title')}</h1>
    <form onSubmit=${submit} novalidate>
      ${error && error.form && html`<p class="error" role="alert">${error.form}</p>`}
      <label for="email">${t('signin.email')}</label>
      <input id="email" name="email" type="email" autocomplete="username" required
        value=${email} onInput=${(e) => setEmail(e.target.value)} />
      <label for="password">${t('signin.password')}</label>
      <input id="password" name="password" type="password" autocomplete="current-password" required
        value=${password} onInput=${(e) => setPassword(e.target.value)} />
      ${needOtp && html`
        <label for="otp">${t('signin.otp')}</label>
        <input id="otp" name="otp" ref=${otpRef} inputmode="numeric" autocomplete="one-time-code"
          aria-describedby="otp-help otp-error" value=${otp} onInput=${(e) => setOtp(e.target.value)} />
        <p class="help" id="otp-help">${t('signin.otp_help')}</p>
        <${FieldError} id="otp-error" message=${error && error.otp} />`}
      <button type="submit" disabled=${busy}>${t('signin.submit')}</button>
    </form>
    ${providers.length > 0 && html`<div class="oidc">
      <p>${t('signin.or')}</p>
      ${providers.map((p) => html`<button type="button" class="secondary" onClick=${() => startOidc(p.name)}>
        ${t('signin.with', { provider: PROVIDER_LABELS[p.name] || p.name })}</button>`)}
    </div>`}
  </section>`;
}
