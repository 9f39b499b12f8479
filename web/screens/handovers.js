// The discharge handover: the hospital's summary, its proposal beside the
// current plan, and the GP's decision (accept, amend, reject).
import { html, useEffect, useState } from '../vendor/htm-preact-standalone.mjs';
import { t, fmtDate, fmtDateTime } from '../i18n.js';
import { api, get, ApiError } from '../api.js';
import { useResource, Loaded, FieldError, DateField } from './common.js';
import { PlanColumn, Warnings, changeValue } from './plans.js';

/** Editable proposal for "amend": dose and end of each line. */
function Amend({ plan, setPlan }) {
  const setLine = (i, k, v) => setPlan({ ...plan, analgesics: plan.analgesics.map((l, j) => (j === i ? { ...l, [k]: v } : l)) });
  return html`<fieldset><legend>${t('handover.amend_lines')}</legend>
    ${plan.analgesics.map((l, i) => html`<div class="grid">
      <div><label for=${`amend-dose-${i}`}>${t('handover.amend_dose', { drug: l.drug })}</label>
        <input id=${`amend-dose-${i}`} type="number" min="0" step="any" value=${l.dose_mg} onInput=${(e) => setLine(i, 'dose_mg', Number(e.target.value))} /></div>
      <${DateField} id=${`amend-end-${i}`} label=${t('handover.amend_end', { drug: l.drug })} value=${l.end}
        onChange=${(v) => setLine(i, 'end', v)} />
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
      <tbody>${h.diff.map((c) => html`<tr><th scope="row">${t(`change.${c.kind}`)}</th><td>${changeValue(c.before)}</td><td>${changeValue(c.after)}</td></tr>`)}</tbody></table>`}
    <h3>${t('plan.warnings')}</h3><${Warnings} warnings=${h.warnings} />
    ${error && html`<p class="error" role="alert">${error}</p>`}
    ${done && html`<p class="ok" role="status">${done}</p>`}
    ${h.status === 'sent' && html`<button type="button" id="handover-acknowledge" onClick=${() => act('acknowledge')}>${t('handover.acknowledge')}</button>`}
    ${h.status === 'acknowledged' && plan && html`<form onSubmit=${reconcile} novalidate aria-labelledby="decide-title" id="handover-form">
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
