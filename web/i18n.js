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

// ---- Dates and numbers typed by the user ----
// A native <input type=date> shows the browser's locale (mm/dd/yyyy in an
// English Chromium), whatever the page's language: dates are typed as text,
// jj/mm/aaaa as the network writes them, and checked here.

const ISO = /^\d{4}-\d{2}-\d{2}$/;
/** Whether `value` is a calendar date the API takes (YYYY-MM-DD). */
export function isIsoDate(value) { return typeof value === 'string' && ISO.test(value); }
/** YYYY-MM-DD as typed in a date field: 01/12/2026 (anything else as it is). */
export function dateInput(value) {
  if (!value) return '';
  if (!isIsoDate(value)) return value;
  const [y, m, d] = value.split('-');
  return `${d}/${m}/${y}`;
}
/** A typed date to YYYY-MM-DD: '' → null, a wrong or impossible date → undefined.
 * Takes 1/12/2026, 01/12/2026, 01-12-2026, 01.12.2026 (day first). */
export function parseDateInput(text) {
  const s = (text || '').trim();
  if (!s) return null;
  const m = /^(\d{1,2})[/.-](\d{1,2})[/.-](\d{4})$/.exec(s);
  if (!m) return undefined;
  const [d, mo, y] = [Number(m[1]), Number(m[2]), Number(m[3])];
  const date = new Date(Date.UTC(y, mo - 1, d));
  if (date.getUTCFullYear() !== y || date.getUTCMonth() !== mo - 1 || date.getUTCDate() !== d) return undefined;
  return `${m[3]}-${String(mo).padStart(2, '0')}-${String(d).padStart(2, '0')}`;
}
/** A number as typed in a field: 12,5 in French. */
export function numInput(value) {
  if (value === null || value === undefined) return '';
  return lang === 'fr' ? String(value).replace('.', ',') : String(value);
}
/** A typed number: '' → null, not a number → undefined; 12,5 and 12.5 both read. */
export function parseNum(text) {
  const s = (text || '').trim().replace(/\s/g, '');
  if (!s) return null;
  if (!/^\d+(?:[.,]\d+)?$/.test(s)) return undefined;
  return Number(s.replace(',', '.'));
}
