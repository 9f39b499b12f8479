// Strings and formats. One catalogue per language (i18n/fr.js, i18n/en.js);
// French is the default. The choice is a preference kept in localStorage
// (never a token or patient data).

import fr from './i18n/fr.js';
import en from './i18n/en.js';

const CATALOGUES = { fr, en };
const KEY = 'relais.lang';
let lang = CATALOGUES[localStorage.getItem(KEY)] ? localStorage.getItem(KEY) : 'fr';
document.documentElement.lang = lang;

export const languages = Object.keys(CATALOGUES);
export function currentLang() { return lang; }
export function setLang(next) {
  if (!CATALOGUES[next]) return;
  lang = next;
  localStorage.setItem(KEY, next);
  document.documentElement.lang = next;
}

/** The string for `key` in the current language, `{name}` filled from `vars`. */
export function t(key, vars = {}) {
  const s = CATALOGUES[lang][key] ?? CATALOGUES.fr[key] ?? key;
  return s.replace(/\{(\w+)\}/g, (_, k) => (vars[k] ?? ''));
}

const TZ = 'Europe/Paris';
/** A calendar date (YYYY-MM-DD) as the network writes it: 01/12/2026. */
export function fmtDate(value) {
  if (!value) return '—';
  const d = /^\d{4}-\d{2}-\d{2}$/.test(value) ? new Date(`${value}T12:00:00Z`) : new Date(value);
  return new Intl.DateTimeFormat(lang, { day: '2-digit', month: '2-digit', year: 'numeric', timeZone: TZ }).format(d);
}
/** A date written out: mardi 1 décembre 2026. */
export function fmtLongDate(value) {
  const d = value ? new Date(value) : new Date();
  return new Intl.DateTimeFormat(lang, { weekday: 'long', day: 'numeric', month: 'long', year: 'numeric', timeZone: TZ }).format(d);
}
/** A time stamp: 01/12/2026 14:05. */
export function fmtDateTime(value) {
  if (!value) return '—';
  return new Intl.DateTimeFormat(lang, { dateStyle: 'short', timeStyle: 'short', timeZone: TZ }).format(new Date(value));
}
/** A dose in mg, French style: 12,5 mg. */
export function fmtDose(mg) {
  if (mg === null || mg === undefined) return '—';
  // 'milligram' is not among Intl's sanctioned units: the number, a no-break space, mg.
  return `${new Intl.NumberFormat(lang, { maximumFractionDigits: 2 }).format(mg)}\u00a0mg`;
}
/** Today in the network's time zone, YYYY-MM-DD. */
export function today() {
  return new Intl.DateTimeFormat('en-CA', { timeZone: TZ }).format(new Date());
}
