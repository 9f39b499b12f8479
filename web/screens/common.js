// Small pieces the screens share.
import { html, useEffect, useState } from '../vendor/htm-preact-standalone.mjs';
import { t } from '../i18n.js';
import { get, onEvent } from '../api.js';

/** Loads `path` and reloads it when `reloadOn(event)` says so. */
export function useResource(path, reloadOn) {
  const [state, setState] = useState({ loading: true, data: null, error: null });
  const [tick, setTick] = useState(0);
  useEffect(() => {
    let live = true;
    if (!path) return undefined;
    get(path).then((data) => live && setState({ loading: false, data, error: null }),
      (error) => live && setState({ loading: false, data: null, error }));
    return () => { live = false; };
  }, [path, tick]);
  useEffect(() => (reloadOn ? onEvent((e) => { if (reloadOn(e)) setTick((n) => n + 1); }) : undefined), [path]);
  return { ...state, reload: () => setTick((n) => n + 1) };
}

/** Loading, error or the content. */
export function Loaded({ res, children }) {
  if (res.loading) return html`<p class="muted" role="status">${t('loading')}</p>`;
  if (res.error) {
    const key = res.error.status === 404 ? 'error.not_found' : 'error.generic';
    return html`<p class="error" role="alert">${t(key)} ${res.error.status !== 404 ? res.error.message : ''}</p>`;
  }
  return children(res.data);
}

/** A field's error under its control, announced. */
export function FieldError({ id, message }) {
  return message ? html`<p class="field-error" id=${id} role="alert">${message}</p>` : null;
}

export function personName(p) { return p ? p.full_name : '—'; }
