// Consultations: the GP's request (from the patient page), the centre's
// answer with a proposed plan, the GP's one-click apply, the requester's
// close or cancel.
import { html, useEffect, useLayoutEffect, useRef, useState } from '../vendor/htm-preact-standalone.mjs';
import { t, fmtDate, fmtDateTime } from '../i18n.js';
import { api, get, ApiError } from '../api.js';
import { useResource, Loaded, FieldError, DateField } from './common.js';
import { PlanColumn, Warnings, Justifications, blockingOf, acknowledgements, conflictText } from './plans.js';

const CONSULTATION_EVENT = (id) => (e) => e.type.startsWith('consultation.') && e.consultation_id === id;

/** The clinical content of a plan version: what a proposal carries. */
function planContent(v) {
  const { status, omt, analgesics, pain_goal, non_drug_measures, review_date } = v;
  return { status, omt, analgesics, pain_goal, non_drug_measures, review_date };
}

/** The GP's request, from the patient page: a centre, a priority, a question. */
export function ConsultationRequest({ patientId }) {
  const addiction = useResource('/organizations?kind=addiction_centre&limit=200');
  const pain = useResource('/organizations?kind=pain_centre&limit=200');
  const [open, setOpen] = useState(false);
  const [values, setValues] = useState({ centre_id: '', priority: 'routine', question: '' });
  const [errors, setErrors] = useState({});
  const key = useRef(crypto.randomUUID());
  const first = useRef(null);
  useLayoutEffect(() => { if (open && first.current) first.current.focus(); }, [open]);
  const centres = [...((pain.data && pain.data.items) || []), ...((addiction.data && addiction.data.items) || [])];
  const set = (k) => (e) => setValues({ ...values, [k]: e.target.value });
  async function submit(e) {
    e.preventDefault();
    setErrors({});
    const next = {};
    if (!values.centre_id) next.centre_id = t('consultation.centre_required');
    if (!values.question.trim()) next.question = t('consultation.question_required');
    if (Object.keys(next).length) { setErrors(next); return; }
    try {
      const { data } = await api('POST', '/consultations', {
        body: { centre_id: values.centre_id, patient_id: patientId, priority: values.priority, question: values.question.trim() },
        headers: { 'Idempotency-Key': key.current },
      });
      key.current = crypto.randomUUID();
      location.hash = `#/consultations/${data.id}`;
    } catch (err) {
      const found = {};
      for (const f of (err.errors || [])) found[f.field] = f.message;
      if (!Object.keys(found).length) found.form = err.message;
      setErrors(found);
    }
  }
  return html`<section aria-labelledby="ask-title"><h2 id="ask-title">${t('consultation.ask_title')}</h2>
    ${!open ? html`<button type="button" class="secondary" id="ask-open" aria-expanded="false" onClick=${() => setOpen(true)}>${t('consultation.ask')}</button>`
    : html`<form onSubmit=${submit} novalidate id="ask-form">
      <label for="ask-centre">${t('consultation.centre')}</label>
      <select id="ask-centre" ref=${first} value=${values.centre_id} onChange=${set('centre_id')} aria-describedby="ask-centre-error">
        <option value="">${t('consultation.centre_choose')}</option>
        ${centres.map((c) => html`<option value=${c.id}>${c.name} (${t(`org.${c.kind}`)})</option>`)}
      </select>
      <${FieldError} id="ask-centre-error" message=${errors.centre_id || errors.patient_id} />
      <fieldset><legend>${t('consultation.priority')}</legend>
        ${['routine', 'urgent'].map((p) => html`<label class="choice"><input type="radio" name="ask-priority" value=${p}
          checked=${values.priority === p} onChange=${set('priority')} /> ${t(`priority.${p}`)}</label>`)}
      </fieldset>
      <label for="ask-question">${t('consultation.question')}</label>
      <textarea id="ask-question" rows="4" value=${values.question} onInput=${set('question')} aria-describedby="ask-question-error"></textarea>
      <${FieldError} id="ask-question-error" message=${errors.question} />
      ${errors.form && html`<p class="error" role="alert">${errors.form}</p>`}
      <button type="submit">${t('consultation.send')}</button>
    </form>`}</section>`;
}

/** The consultations in the inbox: received by my centre (specialists) or sent by me. */
export function ConsultationList({ user }) {
  const received = user.role === 'specialist';
  const res = useResource(`/consultations?box=${received ? 'received' : 'sent'}&limit=20`, (e) => e.type.startsWith('consultation.'));
  return html`<section aria-labelledby="consultations-title"><h2 id="consultations-title">${t(received ? 'consultation.received' : 'consultation.sent')}</h2>
    <${Loaded} res=${res}>${(page) => page.items.length === 0 ? html`<p>${t('consultation.none')}</p>` : html`<ul class="list" id="consultation-list">
      ${page.items.map((c) => html`<li class=${(received ? c.status === 'submitted' || c.status === 'accepted' : c.status === 'answered') ? 'unread' : ''}>
        <a href=${`#/consultations/${c.id}`}>${t(received ? 'consultation.item_from' : 'consultation.item_to', { who: received ? c.requester.name : c.centre.name, date: fmtDate(c.created_at) })}</a>
        <span class="muted"> · ${t(`consultation.status_${c.status}`)} · ${t(`priority.${c.priority}`)}</span>${c.overdue ? html` <span class="tag">${t('inbox.overdue')}</span>` : ''}</li>`)}</ul>`}<//>
  </section>`;
}

/** The proposal the centre edits: a copy of the current plan, doses and ends changed, lines removed. */
function ProposalEditor({ plan, setPlan, drugs }) {
  const name = (code) => (drugs && drugs[code]) || code;
  const setOmt = (k, v) => setPlan({ ...plan, omt: { ...plan.omt, [k]: v } });
  const setLine = (i, k, v) => setPlan({ ...plan, analgesics: plan.analgesics.map((l, j) => (j === i ? { ...l, [k]: v } : l)) });
  const removeLine = (i) => setPlan({ ...plan, analgesics: plan.analgesics.filter((_, j) => j !== i) });
  const num = (v) => (v === '' ? null : Number(v));
  return html`<fieldset id="proposal-editor"><legend>${t('consultation.proposal_edit')}</legend>
    ${plan.omt.medication !== 'none' && html`<div class="grid">
      <div><label for="prop-omt-dose">${t('consultation.omt_dose', { med: t(`med.${plan.omt.medication}`) })}</label>
        <input id="prop-omt-dose" type="number" min="0" step="any" value=${plan.omt.daily_dose_mg ?? ''} onInput=${(e) => setOmt('daily_dose_mg', num(e.target.value))} /></div>
      <div><label for="prop-omt-doses">${t('consultation.omt_doses')}</label>
        <input id="prop-omt-doses" type="number" min="1" max="4" step="1" value=${plan.omt.doses_per_day ?? ''} onInput=${(e) => setOmt('doses_per_day', num(e.target.value))} /></div>
    </div>`}
    ${plan.analgesics.map((l, i) => html`<div class="grid">
      <div><label for=${`prop-dose-${i}`}>${t('handover.amend_dose', { drug: name(l.drug) })}</label>
        <input id=${`prop-dose-${i}`} type="number" min="0" step="any" value=${l.dose_mg} onInput=${(e) => setLine(i, 'dose_mg', num(e.target.value))} /></div>
      <${DateField} id=${`prop-end-${i}`} label=${t('handover.amend_end', { drug: name(l.drug) })} value=${l.end}
        onChange=${(v) => setLine(i, 'end', v)} />
      <div><button type="button" class="secondary" id=${`prop-remove-${i}`} onClick=${() => removeLine(i)}>${t('consultation.remove_line', { drug: name(l.drug) })}</button></div>
    </div>`)}
  </fieldset>`;
}

function fieldErrors(err) {
  if (!(err instanceof ApiError)) return t('error.generic');
  return `${err.message}${err.errors.length ? ` — ${err.errors.map((e) => `${e.field} : ${e.message}`).join(' ; ')}` : ''}`;
}

/** The specialist's side: accept, answer (with a proposed plan), decline. */
function CentreActions({ c, current, drugs, onDone }) {
  const [answer, setAnswer] = useState('');
  const [withPlan, setWithPlan] = useState(false);
  const [plan, setPlan] = useState(null);
  const [reason, setReason] = useState('');
  const [error, setError] = useState(null);
  useEffect(() => { if (current && !plan) setPlan(planContent(current)); }, [current]);
  async function act(path, body, check) {
    setError(null);
    if (check) { setError(check); return; }
    try { await api('POST', `/consultations/${c.id}/${path}`, { body }); onDone(t(`consultation.done_${path}`)); }
    catch (err) { setError(err instanceof ApiError && err.status === 409 ? t('consultation.already') : fieldErrors(err)); }
  }
  const answerBody = () => ({ answer: answer.trim(), ...(withPlan && plan ? { proposed_plan: plan } : {}) });
  return html`<section aria-labelledby="centre-title"><h2 id="centre-title">${t('consultation.respond')}</h2>
    ${error && html`<p class="error" role="alert" id="consultation-error">${error}</p>`}
    ${c.status === 'submitted' && html`<p><button type="button" id="consultation-accept" onClick=${() => act('accept', {})}>${t('consultation.accept')}</button></p>`}
    <form novalidate onSubmit=${(e) => { e.preventDefault(); act('answer', answerBody(), answer.trim() ? null : t('consultation.answer_required')); }} aria-labelledby="answer-title">
      <h3 id="answer-title">${t('consultation.answer_title')}</h3>
      <label for="consultation-answer">${t('consultation.answer')}</label>
      <textarea id="consultation-answer" rows="5" value=${answer} onInput=${(e) => setAnswer(e.target.value)}></textarea>
      ${c.patient_id && html`<label class="choice"><input type="checkbox" id="consultation-with-plan" checked=${withPlan} disabled=${!plan}
        onChange=${(e) => setWithPlan(e.target.checked)} /> ${t(plan ? 'consultation.with_plan' : 'consultation.no_plan_to_copy')}</label>`}
      ${withPlan && plan && html`<${ProposalEditor} plan=${plan} setPlan=${setPlan} drugs=${drugs} />`}
      <p><button type="submit" id="consultation-send-answer">${t('consultation.send_answer')}</button></p>
    </form>
    <form novalidate onSubmit=${(e) => { e.preventDefault(); act('decline', { reason: reason.trim() }, reason.trim() ? null : t('consultation.reason_required')); }} aria-labelledby="decline-title">
      <h3 id="decline-title">${t('consultation.decline_title')}</h3>
      <label for="consultation-reason">${t('consultation.reason')}</label>
      <textarea id="consultation-reason" rows="2" value=${reason} onInput=${(e) => setReason(e.target.value)}></textarea>
      <p><button type="submit" class="secondary" id="consultation-decline">${t('consultation.decline')}</button></p>
    </form></section>`;
}

/** The requester's one-click apply, with the plan version they looked at. */
function ApplyProposal({ c, current, reloadCurrent, onDone }) {
  const [justifications, setJustifications] = useState({});
  const [extra, setExtra] = useState([]);
  const [short, setShort] = useState({});
  const [error, setError] = useState(null);
  const blocking = blockingOf(c.proposed_plan_warnings, extra);
  async function apply() {
    setError(null);
    const { acks, short: tooShort } = acknowledgements(blocking, justifications);
    setShort(tooShort);
    if (Object.keys(tooShort).length) { setError(t('consultation.justify')); return; }
    try {
      await api('POST', `/consultations/${c.id}/apply-proposal`, { body: { expected_plan_version: current ? current.version : undefined, acknowledged_warnings: acks } });
      onDone(t('consultation.done_apply'));
    } catch (err) {
      if (err instanceof ApiError && err.status === 412) {
        // Someone saved a version since this page read the plan: show it, explain, let the GP look again.
        setError(conflictText(await reloadCurrent(), 'consultation.conflict'));
      } else if (err instanceof ApiError && err.status === 422 && Array.isArray(err.problem.warnings)) {
        setExtra(err.problem.warnings);
        setError(t('consultation.justify'));
      } else setError(err instanceof ApiError && err.status === 409 ? t('consultation.already') : fieldErrors(err));
    }
  }
  return html`<section aria-labelledby="apply-title"><h2 id="apply-title">${t('consultation.apply_title')}</h2>
    <${Justifications} blocking=${blocking} values=${justifications} errors=${short}
      onInput=${(code, v) => setJustifications({ ...justifications, [code]: v })} />
    ${error && html`<p class="error" role="alert" id="apply-error">${error}</p>`}
    <button type="button" id="consultation-apply" onClick=${apply}>${t('consultation.apply', { n: current ? current.version : '—' })}</button>
  </section>`;
}

/** The requester cancels a request not yet answered; a second press confirms. */
function CancelConsultation({ c, onDone }) {
  const [asked, setAsked] = useState(false);
  const [error, setError] = useState(null);
  const confirm = useRef(null);
  useLayoutEffect(() => { if (asked && confirm.current) confirm.current.focus(); }, [asked]);
  async function cancel() {
    setError(null);
    try { await api('POST', `/consultations/${c.id}/cancel`, { body: {} }); onDone(t('consultation.done_cancel')); }
    catch (err) { setError(err instanceof ApiError && err.status === 409 ? t('consultation.already') : fieldErrors(err)); }
  }
  return html`<section aria-labelledby="cancel-title" id="cancel-section"><h2 id="cancel-title">${t('consultation.cancel_title')}</h2>
    ${error && html`<p class="error" role="alert" id="cancel-error">${error}</p>`}
    ${!asked ? html`<button type="button" class="secondary" id="consultation-cancel" onClick=${() => setAsked(true)}>${t('consultation.cancel')}</button>`
    : html`<p id="cancel-confirm-text">${t('consultation.cancel_confirm_text')}</p>
      <p class="actions"><button type="button" id="consultation-cancel-confirm" ref=${confirm} aria-describedby="cancel-confirm-text" onClick=${cancel}>${t('consultation.cancel_confirm')}</button>
      <button type="button" class="secondary" id="consultation-cancel-keep" onClick=${() => setAsked(false)}>${t('consultation.cancel_keep')}</button></p>`}
  </section>`;
}

/** The requester closes an answered consultation with its outcome. */
function CloseConsultation({ c, onDone }) {
  const [outcome, setOutcome] = useState('resolved');
  const [avoided, setAvoided] = useState(false);
  const [error, setError] = useState(null);
  async function submit(e) {
    e.preventDefault();
    setError(null);
    try { await api('POST', `/consultations/${c.id}/close`, { body: { outcome, referral_avoided: avoided } }); onDone(t('consultation.done_close')); }
    catch (err) { setError(err instanceof ApiError && err.status === 409 ? t('consultation.already') : fieldErrors(err)); }
  }
  return html`<form onSubmit=${submit} novalidate aria-labelledby="close-title" id="close-form">
    <h2 id="close-title">${t('consultation.close_title')}</h2>
    <fieldset><legend>${t('consultation.outcome')}</legend>
      ${['resolved', 'referral_needed', 'no_longer_needed'].map((o) => html`<label class="choice"><input type="radio" name="close-outcome" value=${o}
        checked=${outcome === o} onChange=${() => setOutcome(o)} /> ${t(`outcome.${o}`)}</label>`)}
    </fieldset>
    <label class="choice"><input type="checkbox" id="close-avoided" checked=${avoided} onChange=${(e) => setAvoided(e.target.checked)} /> ${t('consultation.referral_avoided')}</label>
    ${error && html`<p class="error" role="alert" id="close-error">${error}</p>`}
    <p><button type="submit" class="secondary" id="consultation-close">${t('consultation.close')}</button></p>
  </form>`;
}

export function ConsultationPage({ id, user }) {
  const res = useResource(`/consultations/${id}`, CONSULTATION_EVENT(id));
  const drugs = useResource('/drugs');
  const catalogue = drugs.data ? Object.fromEntries((drugs.data.items || drugs.data).map((d) => [d.code, d.name])) : null;
  const [current, setCurrent] = useState(undefined);
  const [done, setDone] = useState(null);
  const patientId = res.data && res.data.patient_id;
  const loadCurrent = () => get(`/patients/${patientId}/care-plan`).then((v) => { setCurrent(v); return v; }, () => { setCurrent(null); return null; });
  useEffect(() => {
    if (patientId) loadCurrent();
    else if (res.data) setCurrent(null);
  }, [res.data && res.data.id, patientId, res.data && res.data.applied_plan_version]);
  const finish = (message) => { setDone(message); res.reload(); };
  return html`<${Loaded} res=${res}>${(c) => {
    const mine = c.requester.id === user.id;
    return html`<article aria-labelledby="consultation-title">
    <h1 id="consultation-title">${t('consultation.title')}</h1>
    ${c.patient_id && html`<p><a href=${`#/patients/${c.patient_id}`}>${t('back.patient')}</a></p>`}
    <dl class="facts">
      <dt>${t('handover.status')}</dt><dd id="consultation-status">${t(`consultation.status_${c.status}`)}${c.overdue ? ` · ${t('inbox.overdue')}` : ''}</dd>
      <dt>${t('consultation.from')}</dt><dd>${c.requester.name}</dd>
      <dt>${t('consultation.centre')}</dt><dd>${c.centre.name}</dd>
      <dt>${t('consultation.priority')}</dt><dd>${t(`priority.${c.priority}`)}</dd>
      <dt>${t('consultation.asked')}</dt><dd>${fmtDateTime(c.created_at)}</dd>
      <dt>${t('consultation.due')}</dt><dd>${fmtDateTime(c.due_at)}</dd>
    </dl>
    <h2>${t('consultation.question')}</h2><p class="prose">${c.question}</p>
    ${c.decline_reason && html`<h2>${t('consultation.decline_reason')}</h2><p class="prose">${c.decline_reason}</p>`}
    ${c.answer && html`<h2>${t('consultation.answer')}</h2><p class="prose" id="consultation-answer-text">${c.answer}</p>`}
    ${c.proposed_plan && html`<h2>${t('consultation.compare')}</h2>
      <div class="columns side-by-side" id="consultation-compare">
        <${PlanColumn} title=${current ? t('handover.current', { n: current.version }) : t('handover.current_none')} plan=${current} />
        <${PlanColumn} title=${t('consultation.proposed')} plan=${c.proposed_plan} />
      </div>
      <h3>${t('plan.warnings')}</h3><${Warnings} warnings=${c.proposed_plan_warnings} />`}
    ${done && html`<p class="ok" role="status" id="consultation-done">${done}</p>`}
    ${c.applied_plan_version && html`<p id="consultation-applied">${t('consultation.applied', { n: c.applied_plan_version })}</p>`}
    ${!mine && (c.status === 'submitted' || c.status === 'accepted') && current !== undefined
      && html`<${CentreActions} c=${c} current=${current} drugs=${catalogue} onDone=${finish} />`}
    ${mine && c.status === 'answered' && c.proposed_plan && !c.applied_plan_version && current !== undefined
      && html`<${ApplyProposal} c=${c} current=${current} reloadCurrent=${loadCurrent} onDone=${finish} />`}
    ${mine && c.status === 'answered' && html`<${CloseConsultation} c=${c} onDone=${finish} />`}
    ${mine && (c.status === 'submitted' || c.status === 'accepted') && html`<${CancelConsultation} c=${c} onDone=${finish} />`}
    ${c.outcome && html`<p id="consultation-outcome">${t('consultation.closed_as', { outcome: t(`outcome.${c.outcome}`) })}</p>`}
  </article>`;
  }}<//>`;
}
