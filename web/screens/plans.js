// What the screens that show or change a care plan share: the plan as text,
// the side-by-side column, the warnings, the justifications a blocking
// warning needs, and how a plan saved meanwhile (412) is explained. Used by
// the patient page, the discharge handover, consultations and the editor.
import { html } from '../vendor/htm-preact-standalone.mjs';
import { t, fmtDate, fmtDose } from '../i18n.js';
import { FieldError } from './common.js';

export function schedule(l) {
  if (l.times_per_day) return t('schedule.times', { n: l.times_per_day });
  if (l.interval_h) return t('schedule.interval', { h: l.interval_h });
  return '—';
}

export function omtText(omt) {
  if (!omt || omt.medication === 'none') return t('pharmacy.no_omt');
  let s = `${t(`med.${omt.medication}`)} ${fmtDose(omt.daily_dose_mg)} ${t('omt.per_day')} · ${t('omt.doses', { n: omt.doses_per_day })}`;
  const adj = omt.temporary_adjustment;
  if (adj) s += ` — ${t('omt.temporary')} : ${fmtDose(adj.daily_dose_mg)} ${t('omt.per_day')}, ${t('omt.temporary_until', { date: fmtDate(adj.end) })}`;
  return s;
}

export function lineText(l, name = (code) => code) {
  const max = l.max_daily_mg ? ` · ${t('line.max')} ${fmtDose(l.max_daily_mg)}` : '';
  return `${name(l.drug)} ${fmtDose(l.dose_mg)} · ${schedule(l)}${max}${l.as_needed ? ` · ${t('line.as_needed')}` : ''} · ${fmtDate(l.start)} → ${fmtDate(l.end)}`;
}

/** One plan as a column of the side-by-side view. */
export function PlanColumn({ title, plan }) {
  return html`<section class="plan-column" aria-label=${title}><h3>${title}</h3>
    ${plan ? html`<p><strong>${t('pharmacy.omt')}</strong><br />${omtText(plan.omt)}</p>
      <p><strong>${t('pharmacy.lines')}</strong></p>
      ${plan.analgesics.length ? html`<ul class="list">${plan.analgesics.map((l) => html`<li>${lineText(l)}</li>`)}</ul>` : html`<p>${t('pharmacy.no_lines')}</p>`}`
    : html`<p>${t('handover.no_current')}</p>`}</section>`;
}

/** One side of a change of the server's diff (a line, the OMT, an adjustment). */
export function changeValue(v) {
  if (v === null || v === undefined) return '—';
  if (typeof v === 'object') {
    if (v.drug) return lineText(v);
    if (v.medication) return omtText({ ...v, temporary_adjustment: null });
    if (v.daily_dose_mg !== undefined) {
      return `${fmtDose(v.daily_dose_mg)} ${t('omt.per_day')} · ${t('omt.doses', { n: v.doses_per_day })} · ${fmtDate(v.start)} → ${fmtDate(v.end)}${v.reason ? ` · ${v.reason}` : ''}`;
    }
    return Object.entries(v).map(([k, x]) => `${k} : ${x}`).join(' · ');
  }
  return String(v);
}

export function Warnings({ warnings, id }) {
  if (!warnings || warnings.length === 0) return html`<p class="ok" id=${id}>${t('plan.no_warnings')}</p>`;
  return html`<ul class="warnings" id=${id}>${warnings.map((w) => html`<li class=${`sev-${w.severity}`} data-code=${w.code}>
    <strong>${t(`severity.${w.severity}`)}</strong> — ${w.message} <span class="muted">(${w.code} · ${w.source})</span></li>`)}</ul>`;
}

/** The blocking warnings among `lists`, each code once. */
export function blockingOf(...lists) {
  return lists.flat().filter((w, i, all) => w.severity === 'blocking' && all.findIndex((x) => x.code === w.code) === i);
}

/** The justification field of a blocking warning. */
export const ackId = (code) => `ack-${code.replace(/[^a-z0-9_]+/gi, '-')}`;

/** The least a justification says (the API's JUSTIFICATION_MIN). */
export const JUSTIFICATION_MIN = 10;

/** One labelled field per blocking warning; `errors` by code. */
export function Justifications({ blocking, values, onInput, errors = {} }) {
  return blocking.map((w) => {
    const id = ackId(w.code);
    const error = errors[w.code];
    return html`<div class="justification"><label for=${id}>${t('consultation.justification', { code: w.code })}</label>
      <textarea id=${id} rows="2" value=${values[w.code] || ''} onInput=${(e) => onInput(w.code, e.target.value)}
        aria-invalid=${error ? 'true' : undefined} aria-describedby=${error ? `${id}-error` : undefined}></textarea>
      <${FieldError} id=${`${id}-error`} message=${error} /></div>`;
  });
}

/** The acknowledgements to send, and the codes whose justification is too short. */
export function acknowledgements(blocking, values) {
  const acks = blocking.map((w) => ({ code: w.code, justification: (values[w.code] || '').trim() }));
  const short = {};
  for (const a of acks) if (a.justification.length < JUSTIFICATION_MIN) short[a.code] = t('ack.too_short', { n: JUSTIFICATION_MIN });
  return { acks, short };
}

/** "Dr X saved version 5 while you were …": `key` says what the user was doing. */
export function conflictText(fresh, key) {
  return fresh ? t(key, { who: fresh.author ? fresh.author.full_name : '—', n: fresh.version }) : t('handover.conflict');
}
