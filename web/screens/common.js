// Small pieces the screens share.
import { html, useEffect, useState } from '../vendor/htm-preact-standalone.mjs';
import { t, dateInput, parseDateInput } from '../i18n.js';
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

/** A calendar date typed as jj/mm/aaaa (a native date input would show the
 * browser's locale, mm/dd/yyyy in an English Chromium). `onChange` gets
 * YYYY-MM-DD, null when emptied, or the text itself when it is not a date
 * (so that a save names the field rather than sending the previous date).
 * `error` (from the server or the form) wins over the field's own. */
export function DateField({ id, label, value, onChange, error, required }) {
  // What was typed, with the value it gave. When the value comes back
  // unchanged the typed text stays (no effect resetting it between two
  // key presses); a value set from outside (a reload, a merge) is shown.
  const [typed, setTyped] = useState({ text: dateInput(value), value, blurred: false });
  const mine = typed.value === value;
  const text = mine ? typed.text : dateInput(value);
  const own = mine && typed.blurred && parseDateInput(text) === undefined ? t('date.invalid') : null;
  const onInput = (e) => {
    const s = e.target.value;
    const iso = parseDateInput(s);
    const next = iso === undefined ? s : iso;
    // A wrong date shows at once once it has the length of one; before, on leaving the field.
    setTyped({ text: s, value: next, blurred: typed.blurred || (iso === undefined && s.trim().length >= 10) });
    onChange(next);
  };
  const message = error || own;
  const errId = `${id}-error`;
  return html`<div><label for=${id}>${label}</label>
    <input id=${id} type="text" inputmode="numeric" autocomplete="off" placeholder=${t('date.placeholder')} value=${text}
      onInput=${onInput} onBlur=${() => setTyped({ text, value, blurred: true })}
      aria-invalid=${message ? 'true' : undefined} aria-required=${required ? 'true' : undefined}
      aria-describedby=${`${id}-help${message ? ` ${errId}` : ''}`} />
    <p class="help" id=${`${id}-help`}>${t('date.help')}</p>
    <${FieldError} id=${errId} message=${message} /></div>`;
}
