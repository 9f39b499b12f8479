// The discharge handover: the hospital's summary, its proposal beside the
// current plan, and the GP's decision (accept, amend, reject).
import { html, useEffect, useState } from '../vendor/htm-preact-standalone.mjs';
import { t, fmtDate, fmtDateTime, fmtDose } from '../i18n.js';
import { api, get, ApiError } from '../api.js';
import { useResource, Loaded, FieldError } from './common.js';
import { Warnings } from './patients.js';

function schedule(l) {
  if (l.times_per_day) return t('schedule.times', { n: l.times_per_day });
  if (l.interval_h) return t('schedule.interval', { h: l.interval_h });
  return '—';
}

function omtText(omt) {
  if (!omt || omt.medication === 'none') return t('pharmacy.no_omt');
  let s = `${t(`med.${omt.medication}`)} ${fmtDose(omt.daily_dose_mg)} ${t('omt.per_day')} · ${t('omt.doses', { n: omt.doses_per_day })}`;
  const adj = omt.temporary_adjustment;
  if (adj) s += ` — ${t('omt.temporary')} : ${fmtDose(adj.daily_dose_mg)} ${t('omt.per_day')}, ${t('omt.temporary_until', { date: fmtDate(adj.end) })}`;
  return s;
}

function lineText(l) {
  return `${l.drug} ${fmtDose(l.dose_mg)} · ${schedule(l)}${l.as_needed ? ` · ${t('line.as_needed')}` : ''} · ${fmtDate(l.start)} → ${fmtDate(l.end)}`;
}

/** One plan as a column of the side-by-side view. */
function PlanColumn({ title, plan }) {
  return html`<section class="plan-column" aria-label=${title}><h3>${title}</h3>
    ${plan ? html`<p><strong>${t('pharmacy.omt')}</strong><br />${omtText(plan.omt)}</p>
      <p><strong>${t('pharmacy.lines')}</strong></p>
      ${plan.analgesics.length ? html`<ul class="list">${plan.analgesics.map((l) => html`<li>${lineText(l)}</li>`)}</ul>` : html`<p>${t('pharmacy.no_lines')}</p>`}`
    : html`<p>${t('handover.no_current')}</p>`}</section>`;
}

function value(v) {
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

/** Editable proposal for "amend": dose and end of each line. */
function Amend({ plan, setPlan }) {
  const setLine = (i, k, v) => setPlan({ ...plan, analgesics: plan.analgesics.map((l, j) => (j === i ? { ...l, [k]: v } : l)) });
  return html`<fieldset><legend>${t('handover.amend_lines')}</legend>
    ${plan.analgesics.map((l, i) => html`<div class="grid">
      <div><label for=${`amend-dose-${i}`}>${t('handover.amend_dose', { drug: l.drug })}</label>
        <input id=${`amend-dose-${i}`} type="number" min="0" step="any" value=${l.dose_mg} onInput=${(e) => setLine(i, 'dose_mg', Number(e.target.value))} /></div>
      <div><label for=${`amend-end-${i}`}>${t('handover.amend_end', { drug: l.drug })}</label>
        <input id=${`amend-end-${i}`} type="date" value=${l.end || ''} onInput=${(e) => setLine(i, 'end', e.target.value || null)} /></div>
    </div>`)}</fieldset>`;
}

export function HandoverPage({ id }) {
  const res = useResource(`/handovers/${id}`, (e) => e.handover_id === id);
  const [current, setCurrent] = useState(undefined);
  const [decision, setDecision] = useState('accept');
  const [plan, setPlan] = useState(null);
  const [comment, setComment] = useState('');
  const [error, setError] = useState(null);
  const [done, setDone] = useState(null);

  const patientId = res.data && res.data.patient_id;
  const planVersion = res.data && res.data.current_plan_version;
  useEffect(() => {
    if (!patientId) return;
    get(`/patients/${patientId}/care-plan`).then(setCurrent, () => setCurrent(null));
  }, [patientId, planVersion]);
  useEffect(() => { if (res.data && !plan) setPlan(res.data.proposed_plan); }, [res.data]);

  async function act(path, body) {
    setError(null); setDone(null);
    try {
      await api('POST', `/handovers/${id}/${path}`, { body });
      setDone(t(`handover.done_${body ? body.decision : 'acknowledged'}`));
      res.reload();
    } catch (err) {
      // 412: the plan changed since this page read it; 409: decided meanwhile. Show the new state.
      if (err instanceof ApiError && err.status === 412) { setError(t('handover.conflict')); res.reload(); }
      else if (err instanceof ApiError && err.status === 409) { setError(t('handover.already')); res.reload(); }
      else setError(err instanceof ApiError ? `${err.message} ${err.errors.map((e) => `${e.field} : ${e.message}`).join(' ; ')}` : t('error.generic'));
    }
  }
  function reconcile(e) {
    e.preventDefault();
    const h = res.data;
    const body = { decision, expected_plan_version: h.current_plan_version ?? undefined };
    if (decision === 'amend') body.plan = plan;
    if (comment.trim()) body.comment = comment.trim();
    act('reconcile', body);
  }

  return html`<${Loaded} res=${res}>${(h) => html`<article aria-labelledby="handover-title">
    <h1 id="handover-title">${t('handover.title')}</h1>
    <p><a href=${`#/patients/${h.patient_id}`}>${t('back.patient')}</a></p>
    <dl class="facts">
      <dt>${t('handover.status')}</dt><dd id="handover-status">${t(`handover.status_${h.status}`)}${h.overdue ? ` · ${t('inbox.overdue')}` : ''}</dd>
      <dt>${t('handover.discharge')}</dt><dd>${fmtDate(h.discharge_date)}</dd>
      <dt>${t('handover.due')}</dt><dd>${fmtDateTime(h.due_at)}</dd>
    </dl>
    <h2>${t('handover.summary')}</h2><p class="prose">${h.summary}</p>
    ${h.follow_up && html`<h2>${t('handover.follow_up')}</h2><p class="prose">${h.follow_up}</p>`}
    <h2>${t('handover.compare')}</h2>
    <div class="columns side-by-side">
      <${PlanColumn} title=${current ? t('handover.current', { n: current.version }) : t('handover.current_none')} plan=${current} />
      <${PlanColumn} title=${t('handover.proposed')} plan=${h.proposed_plan} />
    </div>
    <h3>${t('handover.changes')}</h3>
    ${h.diff.length === 0 ? html`<p>${t('handover.no_changes')}</p>` : html`<table><thead><tr><th scope="col">${t('handover.change')}</th>
      <th scope="col">${t('handover.before')}</th><th scope="col">${t('handover.after')}</th></tr></thead>
      <tbody>${h.diff.map((c) => html`<tr><th scope="row">${t(`change.${c.kind}`)}</th><td>${value(c.before)}</td><td>${value(c.after)}</td></tr>`)}</tbody></table>`}
    <h3>${t('plan.warnings')}</h3><${Warnings} warnings=${h.warnings} />
    ${error && html`<p class="error" role="alert">${error}</p>`}
    ${done && html`<p class="ok" role="status">${done}</p>`}
    ${h.status === 'sent' && html`<button type="button" onClick=${() => act('acknowledge')}>${t('handover.acknowledge')}</button>`}
    ${h.status === 'acknowledged' && plan && html`<form onSubmit=${reconcile} novalidate aria-labelledby="decide-title">
      <h2 id="decide-title">${t('handover.decide')}</h2>
      <fieldset><legend>${t('handover.decision')}</legend>
        ${['accept', 'amend', 'reject'].map((d) => html`<label class="choice"><input type="radio" name="decision" value=${d}
          checked=${decision === d} onChange=${() => setDecision(d)} /> ${t(`handover.decision_${d}`)}</label>`)}
      </fieldset>
      ${decision === 'amend' && html`<${Amend} plan=${plan} setPlan=${setPlan} />`}
      <label for="handover-comment">${t(decision === 'reject' ? 'handover.comment_required' : 'handover.comment')}</label>
      <textarea id="handover-comment" rows="3" value=${comment} onInput=${(e) => setComment(e.target.value)} aria-describedby="comment-error"></textarea>
      <${FieldError} id="comment-error" message=${null} />
      <button type="submit">${t('handover.submit')}</button>
    </form>`}
    ${h.resulting_plan_version && html`<p>${t('handover.result', { n: h.resulting_plan_version })}</p>`}
  </article>`}<//>`;
}
