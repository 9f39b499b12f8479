// Patient search and the patient page: identity, consent, care team, the
// current plan with its warnings and sources, its history, the thread
// (live) and, for those who may record one, an observation.
import { html, useState, useEffect, useRef } from '../vendor/htm-preact-standalone.mjs';
import { t, fmtDate, fmtDateTime, fmtDose } from '../i18n.js';
import { api, onEvent, ApiError } from '../api.js';
import { useResource, Loaded, FieldError, personName } from './common.js';
import { ConsultationRequest } from './consultations.js';
import { Warnings, schedule } from './plans.js';

export function PatientSearch() {
  const [q, setQ] = useState('');
  const [query, setQuery] = useState('');
  const path = query ? `/patients?q=${encodeURIComponent(query)}&limit=50` : '/patients?limit=50';
  const res = useResource(path);
  return html`<section aria-labelledby="search-title">
    <h1 id="search-title">${t('search.title')}</h1>
    <form role="search" class="inline" onSubmit=${(e) => { e.preventDefault(); setQuery(q.trim()); }}>
      <label for="q">${t('search.label')}</label>
      <input id="q" type="search" value=${q} onInput=${(e) => setQ(e.target.value)} aria-describedby="q-help" />
      <button type="submit">${t('search.submit')}</button>
      <p id="q-help" class="help">${t('search.help')}</p>
    </form>
    <${Loaded} res=${res}>${(page) => page.items.length === 0 ? html`<p role="status">${t('search.none')}</p>` : html`
      <table><caption class="sr-only">${t('search.results')}</caption>
      <thead><tr><th scope="col">${t('patient.name')}</th><th scope="col">${t('patient.birth_date')}</th><th scope="col">INS</th></tr></thead>
      <tbody>${page.items.map((p) => html`<tr><th scope="row"><a href=${`#/patients/${p.id}`}>${p.family_name.toUpperCase()} ${p.given_names}</a></th>
        <td>${fmtDate(p.birth_date)}</td><td>${p.ins || '—'}</td></tr>`)}</tbody></table>`}<//>
  </section>`;
}

function Identity({ p }) {
  return html`<dl class="facts">
    <dt>${t('patient.birth_date')}</dt><dd>${fmtDate(p.birth_date)}</dd>
    <dt>${t('patient.sex')}</dt><dd>${t(`sex.${p.sex}`)}</dd>
    <dt>INS</dt><dd>${p.ins || '—'}</dd>
    <dt>${t('patient.phone')}</dt><dd>${p.phone || '—'}</dd>
    <dt>${t('patient.basis')}</dt><dd>${t(`basis.${p.access_basis}`)}</dd>
  </dl>`;
}

function Consent({ id }) {
  const res = useResource(`/patients/${id}/consent`);
  return html`<section aria-labelledby="consent-title"><h2 id="consent-title">${t('consent.title')}</h2>
    <${Loaded} res=${res}>${(c) => html`<p><strong>${c.status ? t(`consent.${c.status}`) : t('consent.none')}</strong>
      ${c.history[0] && html` <span class="muted">· ${fmtDateTime(c.history[0].recorded_at)}</span>`}</p>`}<//></section>`;
}

function CareTeam({ id }) {
  const res = useResource(`/patients/${id}/care-team`);
  return html`<section aria-labelledby="team-title"><h2 id="team-title">${t('team.title')}</h2>
    <${Loaded} res=${res}>${(page) => html`<ul class="list">${(page.items || page).map((m) => html`<li>
      ${m.full_name} · ${t(`role.${m.role}`)}${m.team_role === 'referent' ? html` <span class="tag">${t('team.referent')}</span>` : ''}
      ${m.organization_name && html`<span class="muted"> · ${m.organization_name}</span>`}
      ${m.phone && html` · <a href=${`tel:${m.phone}`}>${m.phone}</a>`}</li>`)}</ul>`}<//></section>`;
}

function Plan({ id, drugs }) {
  const res = useResource(`/patients/${id}/care-plan`, (e) => e.patient_id === id && e.type === 'care_plan.version_created');
  const name = (code) => (drugs && drugs[code]) || code;
  return html`<section aria-labelledby="plan-title"><h2 id="plan-title">${t('plan.title')}</h2>
    <${Loaded} res=${res}>${(v) => html`<p><span class="version">${t('plan.version', { n: v.version })}</span> · ${t(`status.${v.status}`)} · ${t('plan.by', { who: personName(v.author), date: fmtDateTime(v.created_at) })}
      ${v.source && html` · ${t('plan.source', { kind: t(`subject.${v.source.type}`) })}`}</p>
      <p><em>${v.change_summary}</em></p>
      <h3>${t('pharmacy.omt')}</h3>
      ${v.omt.medication === 'none' ? html`<p>${t('pharmacy.no_omt')}</p>` : html`<p class="dose">${t(`med.${v.omt.medication}`)} ${fmtDose(v.omt.daily_dose_mg)} ${t('omt.per_day')} · ${t('omt.doses', { n: v.omt.doses_per_day })}
        ${v.omt.temporary_adjustment && html`<br /><strong>${t('omt.temporary')}</strong> : ${fmtDose(v.omt.temporary_adjustment.daily_dose_mg)} ${t('omt.per_day')}, ${t('omt.temporary_until', { date: fmtDate(v.omt.temporary_adjustment.end) })}`}</p>`}
      <h3>${t('pharmacy.lines')}</h3>
      ${v.analgesics.length === 0 ? html`<p>${t('pharmacy.no_lines')}</p>` : html`<ul class="list">${v.analgesics.map((l) => html`<li>
        <strong>${name(l.drug)}</strong> ${fmtDose(l.dose_mg)} · ${t(`route.${l.route}`)} · ${schedule(l)}${l.as_needed ? ` · ${t('line.as_needed')}` : ''} · ${fmtDate(l.start)} → ${fmtDate(l.end)}</li>`)}</ul>`}
      <h3>${t('plan.warnings')}</h3><${Warnings} warnings=${v.warnings} />
      ${v.acknowledged_warnings.length > 0 && html`<h3>${t('plan.acknowledged')}</h3><ul class="list">${v.acknowledged_warnings.map((a) => html`<li>${a.code} — ${a.justification}</li>`)}</ul>`}`}<//>
  </section>`;
}

function Versions({ id }) {
  const res = useResource(`/patients/${id}/care-plan/versions`, (e) => e.patient_id === id && e.type === 'care_plan.version_created');
  return html`<section aria-labelledby="versions-title"><h2 id="versions-title">${t('versions.title')}</h2>
    <${Loaded} res=${res}>${(page) => html`<table><thead><tr><th scope="col">${t('versions.n')}</th><th scope="col">${t('versions.when')}</th>
      <th scope="col">${t('versions.who')}</th><th scope="col">${t('versions.why')}</th><th scope="col">${t('versions.source')}</th></tr></thead>
      <tbody>${page.items.map((v) => html`<tr><th scope="row">${v.version}</th><td>${fmtDateTime(v.created_at)}</td>
        <td>${personName(v.author)}</td><td>${v.change_summary}</td><td>${v.source ? t(`subject.${v.source.type}`) : '—'}</td></tr>`)}</tbody></table>`}<//>
  </section>`;
}

/** A thread's messages, live: a new one appears without a reload. */
export function Thread({ threadId, title }) {
  const res = useResource(`/threads/${threadId}/messages?limit=100`, (e) => e.type === 'message.created' && e.thread_id === threadId);
  const [body, setBody] = useState('');
  const [error, setError] = useState(null);
  const key = useRef(crypto.randomUUID());
  useEffect(() => {
    const items = res.data && res.data.items;
    if (items && items.length) api('POST', `/threads/${threadId}/read`, { body: { up_to: items[items.length - 1].id } }).catch(() => {});
  }, [res.data]);
  async function send(e) {
    e.preventDefault();
    setError(null);
    try {
      await api('POST', `/threads/${threadId}/messages`, { body: { body }, headers: { 'Idempotency-Key': key.current } });
      key.current = crypto.randomUUID();
      setBody('');
      res.reload();
    } catch (err) {
      setError(err instanceof ApiError ? (err.field('body') || err.message) : t('error.generic'));
    }
  }
  return html`<section aria-labelledby="thread-title" class="thread"><h2 id="thread-title">${title}</h2>
    <${Loaded} res=${res}>${(page) => html`<ol class="messages" aria-live="polite" id="messages">${page.items.map((m) => html`<li>
      <p class="meta">${m.author.full_name} · ${fmtDateTime(m.created_at)}</p><p>${m.body}</p></li>`)}</ol>`}<//>
    <form onSubmit=${send}>
      <label for="message">${t('thread.new')}</label>
      <textarea id="message" rows="3" value=${body} onInput=${(e) => setBody(e.target.value)} aria-describedby="message-error"></textarea>
      <${FieldError} id="message-error" message=${error} />
      <button type="submit" disabled=${!body.trim()}>${t('thread.send')}</button>
    </form></section>`;
}

function ObservationForm({ id }) {
  const [values, setValues] = useState({ pain_score: '', sedation_score: '', cows_score: '', note: '' });
  const [errors, setErrors] = useState({});
  const [done, setDone] = useState(null);
  const set = (k) => (e) => setValues({ ...values, [k]: e.target.value });
  async function submit(e) {
    e.preventDefault();
    setErrors({}); setDone(null);
    const body = {};
    for (const k of ['pain_score', 'sedation_score', 'cows_score']) if (values[k] !== '') body[k] = Number(values[k]);
    if (values.note.trim()) body.note = values.note.trim();
    try {
      await api('POST', `/patients/${id}/observations`, { body });
      setValues({ pain_score: '', sedation_score: '', cows_score: '', note: '' });
      setDone(t('obs.saved'));
    } catch (err) {
      const next = {};
      for (const f of (err.errors || [])) next[f.field] = f.message;
      if (!Object.keys(next).length) next.form = err.message;
      setErrors(next);
    }
  }
  const field = (k, max) => html`<div><label for=${`obs-${k}`}>${t(`obs.${k}`, { max })}</label>
    <input id=${`obs-${k}`} type="number" min="0" max=${max} step="1" value=${values[k]} onInput=${set(k)} aria-describedby=${`obs-${k}-error`} />
    <${FieldError} id=${`obs-${k}-error`} message=${errors[k]} /></div>`;
  return html`<section aria-labelledby="obs-title"><h2 id="obs-title">${t('obs.title')}</h2>
    <form onSubmit=${submit} class="grid" novalidate>
      ${field('pain_score', 10)}${field('sedation_score', 4)}${field('cows_score', 48)}
      <div class="wide"><label for="obs-note">${t('obs.note')}</label><textarea id="obs-note" rows="2" value=${values.note} onInput=${set('note')}></textarea></div>
      ${errors.form && html`<p class="error wide" role="alert">${errors.form}</p>`}
      ${done && html`<p class="ok wide" role="status">${done}</p>`}
      <div class="wide"><button type="submit">${t('obs.submit')}</button></div>
    </form></section>`;
}

function Alerts({ id }) {
  const [alerts, setAlerts] = useState([]);
  useEffect(() => onEvent((e) => { if (e.type === 'observation.alert' && e.patient_id === id) setAlerts((a) => [e, ...a]); }), [id]);
  if (!alerts.length) return null;
  return html`<div class="alert" role="alert" id="live-alert">${t('obs.alert', { date: fmtDateTime(alerts[0].at) })}</div>`;
}

/** Who may write the plan: a prescriber on the team (the server decides). */
export function canEdit(user, p) {
  return ['gp', 'hospital_doctor', 'specialist'].includes(user.role) && p.access_basis === 'team';
}

export function PatientPage({ id, user }) {
  const res = useResource(`/patients/${id}`);
  const drugs = useResource('/drugs');
  const catalogue = drugs.data ? Object.fromEntries((drugs.data.items || drugs.data).map((d) => [d.code, d.name])) : null;
  const canAsk = ['gp', 'hospital_doctor'].includes(user.role);
  const canObserve = ['nurse', 'gp', 'hospital_doctor', 'specialist', 'pharmacist'].includes(user.role);
  return html`<${Loaded} res=${res}>${(p) => html`<article aria-labelledby="patient-title">
    <h1 id="patient-title">${p.family_name.toUpperCase()} ${p.given_names}</h1>
    <${Alerts} id=${id} />
    <p class="actions"><a href=${`#/patients/${id}/pharmacy`}>${t('pharmacy.open')}</a>
      ${canEdit(user, p) && html`<a href=${`#/patients/${id}/plan/edit`} id="plan-edit-link">${t('editor.open')}</a>`}</p>
    <div class="columns">
      <div><section aria-labelledby="identity-title"><h2 id="identity-title">${t('patient.identity')}</h2><${Identity} p=${p} /></section>
        <${Consent} id=${id} /><${CareTeam} id=${id} /></div>
      <div><${Plan} id=${id} drugs=${catalogue} /></div>
    </div>
    <${Versions} id=${id} />
    ${canObserve && html`<${ObservationForm} id=${id} />`}
    ${canAsk && p.access_basis === 'team' && html`<${ConsultationRequest} patientId=${id} />`}
    <${Thread} threadId=${p.thread_id} title=${t('thread.patient')} />
  </article>`}<//>`;
}
