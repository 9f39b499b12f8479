// The plan editor (`#/patients/<id>/plan/edit`): the prescriber edits a copy
// of the current plan; the safety rules run as they type
// (`POST /care-plans/check`, 300 ms after the last key, the previous check
// aborted so only the latest answer shows); each blocking warning needs a
// justification; the save is `PUT /patients/{id}/care-plan` with `If-Match`
// the version the edit started from. A 412 (someone saved meanwhile) shows
// who saved which version and how it differs from what was typed; the
// prescriber's edits are then reapplied on that version (what they changed
// wins, what they did not change follows the new version) and saved again.
// Nothing typed is lost: the form keeps the text as typed (12,5 ; 01/12/2026)
// and turns it into the API's shape only to check or save.
import { html, useEffect, useLayoutEffect, useRef, useState } from '../vendor/htm-preact-standalone.mjs';
import { t, fmtDate, fmtDose, numInput, parseNum, isIsoDate, today } from '../i18n.js';
import { api, onEvent, ApiError } from '../api.js';
import { useResource, Loaded, FieldError, DateField } from './common.js';
import { Warnings, Justifications, blockingOf, acknowledgements, conflictText, omtText, lineText, ackId } from './plans.js';
import { canEdit } from './patients.js';

const MEDICATIONS = ['methadone', 'buprenorphine', 'buprenorphine_naloxone', 'none'];
const CHECK_DELAY_MS = 300;
let lineSeq = 0;

/** The control of an API field path: analgesics[0].dose_mg → pe-analgesics-0-dose_mg. */
const fid = (path) => `pe-${path.replace(/[^a-z0-9_]+/gi, '-').replace(/-$/, '')}`;

function lineForm(l) {
  lineSeq += 1;
  return { key: `line-${lineSeq}`, drug: l.drug, dose: numInput(l.dose_mg), route: l.route,
    every: l.interval_h ? 'interval' : 'times', n: String(l.interval_h || l.times_per_day || ''),
    max: numInput(l.max_daily_mg), as_needed: !!l.as_needed, start: l.start, end: l.end || null,
    prescriber_id: l.prescriber_id || null, note: l.note ?? null };
}

/** The form of a plan version (or of no plan): text as the user will see it. */
function toForm(plan) {
  const omt = plan ? plan.omt : { medication: 'none' };
  const adj = omt.temporary_adjustment;
  return {
    status: plan ? plan.status : 'active',
    medication: omt.medication,
    omt_dose: numInput(omt.daily_dose_mg), omt_doses: omt.doses_per_day ? String(omt.doses_per_day) : '',
    omt_keep: { dispensing_pharmacy_id: omt.dispensing_pharmacy_id || null }, omt_prescriber: omt.prescriber_id || null,
    temp: !!adj, temp_dose: adj ? numInput(adj.daily_dose_mg) : '', temp_doses: adj ? String(adj.doses_per_day) : '',
    temp_start: adj ? adj.start : today(), temp_end: adj ? adj.end : null, temp_reason: adj ? adj.reason : '',
    lines: plan ? plan.analgesics.map(lineForm) : [],
    pain_goal: (plan && plan.pain_goal) || '', non_drug_measures: (plan && plan.non_drug_measures) || '',
    review_date: (plan && plan.review_date) || null,
  };
}

/** The fields of the OMT's prescription (a change to any of them is signed by its author). */
const OMT_FIELDS = ['medication', 'omt_dose', 'omt_doses', 'temp', 'temp_dose', 'temp_doses', 'temp_start', 'temp_end', 'temp_reason'];

const GROUPS = ['status', 'medication', 'omt_dose', 'omt_doses', 'omt_keep', 'omt_prescriber', 'temp', 'temp_dose', 'temp_doses',
  'temp_start', 'temp_end', 'temp_reason', 'lines', 'pain_goal', 'non_drug_measures', 'review_date'];
const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);
const bare = (lines) => lines.map(({ key, ...rest }) => rest);

/** The user's edits (`mine` against `origin`, the version they started from) on `theirs`. */
function reapply(origin, mine, theirs) {
  const out = { ...theirs };
  for (const g of GROUPS) {
    const changed = g === 'lines' ? !same(bare(mine.lines), bare(origin.lines)) : !same(mine[g], origin[g]);
    if (changed) out[g] = mine[g];
  }
  return out;
}

/** The API body of a form, and its errors by API field path (`required`: those shown only
 * on save: empty fields, and dates, which their own field checks as they are typed). */
function toBody(f) {
  const errors = {};
  const required = new Set();
  const num = (text, path, { need = false, int = false, max = 100000 } = {}) => {
    const v = parseNum(text);
    if (v === undefined) { errors[path] = t('editor.not_a_number'); return null; }
    if (v === null) { if (need) { errors[path] = t('editor.required'); required.add(path); } return null; }
    if (int && !Number.isInteger(v)) { errors[path] = t('editor.whole'); return null; }
    if (v <= 0 || v > max) { errors[path] = t('editor.range', { max: numInput(max) }); return null; }
    return v;
  };
  const date = (v, path, need = false) => {
    // The field itself says so as the user types; the form, on save.
    if (v && !isIsoDate(v)) { errors[path] = t('date.invalid'); required.add(path); return null; }
    if (!v && need) { errors[path] = t('editor.required'); required.add(path); }
    return v || null;
  };
  const text = (v) => (v && v.trim() ? v : null);
  const omt = { medication: f.medication, ...f.omt_keep, prescriber_id: f.omt_prescriber };
  if (f.medication !== 'none') {
    omt.daily_dose_mg = num(f.omt_dose, 'omt.daily_dose_mg', { need: true });
    omt.doses_per_day = num(f.omt_doses, 'omt.doses_per_day', { need: true, int: true, max: 4 });
    if (f.temp) {
      const at = 'omt.temporary_adjustment';
      omt.temporary_adjustment = {
        daily_dose_mg: num(f.temp_dose, `${at}.daily_dose_mg`, { need: true }),
        doses_per_day: num(f.temp_doses, `${at}.doses_per_day`, { need: true, int: true, max: 4 }),
        start: date(f.temp_start, `${at}.start`, true),
        // No end is the rules' business (a blocking warning), not the form's.
        end: date(f.temp_end, `${at}.end`),
        reason: f.temp_reason,
      };
      if (!f.temp_reason.trim()) { errors[`${at}.reason`] = t('editor.required'); required.add(`${at}.reason`); }
    }
  } else {
    omt.dispensing_pharmacy_id = null;
    omt.prescriber_id = null;
  }
  const analgesics = f.lines.map((l, i) => {
    const at = (k) => `analgesics[${i}].${k}`;
    if (!l.drug) { errors[at('drug')] = t('editor.required'); required.add(at('drug')); }
    const n = num(l.n, at(l.every === 'interval' ? 'interval_h' : 'times_per_day'), { need: true, int: true, max: 24 });
    const line = { drug: l.drug, dose_mg: num(l.dose, at('dose_mg'), { need: true }), route: l.route,
      times_per_day: l.every === 'times' ? n : null, interval_h: l.every === 'interval' ? n : null,
      max_daily_mg: num(l.max, at('max_daily_mg')), as_needed: l.as_needed,
      start: date(l.start, at('start'), true), end: date(l.end, at('end')) };
    if (l.prescriber_id) line.prescriber_id = l.prescriber_id;
    if (l.note !== null) line.note = l.note;
    return line;
  });
  const body = { status: f.status, omt, analgesics, pain_goal: text(f.pain_goal),
    non_drug_measures: text(f.non_drug_measures), review_date: date(f.review_date, 'review_date') };
  return { body, errors, required };
}

/** What differs between the version saved meanwhile and what the user typed. */
function differences(theirs, mine, name) {
  const rows = [];
  const add = (label, a, b) => { if (a !== b) rows.push({ label, theirs: a, mine: b }); };
  add(t('editor.status'), t(`status.${theirs.status}`), t(`status.${mine.status}`));
  add(t('pharmacy.omt'), omtText(theirs.omt), omtText(mine.omt));
  const n = Math.max(theirs.analgesics.length, mine.analgesics.length);
  for (let i = 0; i < n; i += 1) {
    const a = theirs.analgesics[i]; const b = mine.analgesics[i];
    add(t('editor.line', { n: i + 1 }), a ? lineText(a, name) : '—', b ? lineText(b, name) : '—');
  }
  add(t('editor.pain_goal'), theirs.pain_goal || '—', mine.pain_goal || '—');
  add(t('editor.non_drug'), theirs.non_drug_measures || '—', mine.non_drug_measures || '—');
  add(t('editor.review_date'), fmtDate(theirs.review_date), fmtDate(mine.review_date));
  return rows;
}

function TextField({ path, label, value, onInput, errors, inputmode = 'decimal', help }) {
  const id = fid(path);
  const error = errors[path];
  const describedBy = [help ? `${id}-help` : '', error ? `${id}-error` : ''].filter(Boolean).join(' ');
  return html`<div><label for=${id}>${label}</label>
    <input id=${id} type="text" inputmode=${inputmode} autocomplete="off" value=${value} onInput=${(e) => onInput(e.target.value)}
      aria-invalid=${error ? 'true' : undefined} aria-describedby=${describedBy || undefined} />
    ${help && html`<p class="help" id=${`${id}-help`}>${help}</p>`}
    <${FieldError} id=${`${id}-error`} message=${error} /></div>`;
}

function Line({ l, i, set, remove, drugs, errors }) {
  const at = (k) => `analgesics[${i}].${k}`;
  const name = (drugs.find((d) => d.code === l.drug) || {}).name || t('editor.new_line');
  const drugError = errors[at('drug')];
  const nPath = at(l.every === 'interval' ? 'interval_h' : 'times_per_day');
  return html`<fieldset class="line" id=${`pe-line-${i}`}><legend>${t('editor.line_named', { n: i + 1, drug: name })}</legend>
    <div class="grid">
      <div><label for=${fid(at('drug'))}>${t('editor.line_drug', { n: i + 1 })}</label>
        <select id=${fid(at('drug'))} value=${l.drug} aria-invalid=${drugError ? 'true' : undefined}
          aria-describedby=${drugError ? `${fid(at('drug'))}-error` : undefined}
          onChange=${(e) => { const d = drugs.find((x) => x.code === e.target.value); set({ drug: e.target.value, route: d ? d.route : l.route }); }}>
          <option value="">${t('editor.choose_drug')}</option>
          ${drugs.map((d) => html`<option value=${d.code}>${d.name}</option>`)}
        </select><${FieldError} id=${`${fid(at('drug'))}-error`} message=${drugError} /></div>
      <${TextField} path=${at('dose_mg')} label=${t('editor.line_dose', { n: i + 1 })} value=${l.dose} errors=${errors} onInput=${(v) => set({ dose: v })} />
      <div><label for=${fid(at('every'))}>${t('editor.line_every', { n: i + 1 })}</label>
        <select id=${fid(at('every'))} value=${l.every} onChange=${(e) => set({ every: e.target.value })}>
          <option value="times">${t('editor.every_times')}</option><option value="interval">${t('editor.every_interval')}</option>
        </select></div>
      <${TextField} path=${nPath} label=${t(l.every === 'interval' ? 'editor.line_interval' : 'editor.line_times', { n: i + 1 })}
        value=${l.n} errors=${errors} inputmode="numeric" onInput=${(v) => set({ n: v })} />
      <${TextField} path=${at('max_daily_mg')} label=${t('editor.line_max', { n: i + 1 })} value=${l.max} errors=${errors} onInput=${(v) => set({ max: v })} />
      <${DateField} id=${fid(at('end'))} label=${t('editor.line_end', { n: i + 1 })} value=${l.end} error=${errors[at('end')]} onChange=${(v) => set({ end: v })} />
    </div>
    <label class="choice"><input type="checkbox" id=${fid(at('as_needed'))} checked=${l.as_needed} onChange=${(e) => set({ as_needed: e.target.checked })} /> ${t('editor.line_as_needed', { n: i + 1 })}</label>
    <p class="muted">${t('editor.line_start', { date: fmtDate(l.start) })}</p>
    <button type="button" class="secondary" id=${`pe-remove-${i}`} onClick=${remove}>${t('editor.remove_line', { n: i + 1, drug: name })}</button>
  </fieldset>`;
}

export function PlanEditor({ id, user }) {
  const patient = useResource(`/patients/${id}`);
  const drugRes = useResource('/drugs');
  const drugs = drugRes.data ? [...(drugRes.data.items || drugRes.data)].sort((a, b) => a.name.localeCompare(b.name)) : [];
  const [base, setBase] = useState(undefined); // { plan, etag } | null (no plan yet)
  const [origin, setOrigin] = useState(null);
  const [form, setForm] = useState(null);
  const [summary, setSummary] = useState('');
  const [justifications, setJustifications] = useState({});
  const [check, setCheck] = useState({ state: 'idle', warnings: [] });
  const [extra, setExtra] = useState([]);
  const [serverErrors, setServerErrors] = useState({});
  const [ackErrors, setAckErrors] = useState({});
  const [attempted, setAttempted] = useState(false);
  const [conflict, setConflict] = useState(null);
  const [notice, setNotice] = useState(null);
  const [failure, setFailure] = useState(null);
  const [saving, setSaving] = useState(false);
  const [newer, setNewer] = useState(null);
  const focusAfter = useRef(null);
  // Someone saves a version while this one is edited: say so before the save is refused.
  useEffect(() => onEvent((e) => {
    if (e.type === 'care_plan.version_created' && e.patient_id === id) setNewer(Number(e.version));
  }), [id]);

  function adopt(plan, etag) {
    setBase(plan ? { plan, etag } : null);
    const f = toForm(plan);
    setOrigin(f); setForm(f);
    setJustifications(Object.fromEntries(((plan && plan.acknowledged_warnings) || []).map((a) => [a.code, a.justification])));
  }
  useEffect(() => {
    api('GET', `/patients/${id}/care-plan`).then(({ data, etag }) => adopt(data, etag),
      (err) => (err instanceof ApiError && err.status === 404 ? adopt(null, null) : setFailure(err.message)));
  }, [id]);
  useLayoutEffect(() => {
    if (focusAfter.current) { document.getElementById(focusAfter.current)?.focus(); focusAfter.current = null; }
  });

  const built = form ? toBody(form) : null;
  // The live check: the content as typed, once it reads; the last request only.
  const payload = built && Object.keys(built.errors).length === 0 ? JSON.stringify({ ...built.body, patient_id: id }) : null;
  useEffect(() => {
    if (!payload) return undefined;
    const control = new AbortController();
    const timer = setTimeout(() => {
      setCheck((c) => ({ ...c, state: 'checking' }));
      api('POST', '/care-plans/check', { body: JSON.parse(payload), signal: control.signal }).then(({ data }) => {
        setCheck({ state: 'done', warnings: data.warnings });
        setExtra([]);
      }, (err) => {
        if (err.name === 'AbortError') return;
        if (err instanceof ApiError && err.status === 422) setServerErrors(fieldMap(err));
        setCheck((c) => ({ ...c, state: 'failed' }));
      });
    }, CHECK_DELAY_MS);
    return () => { clearTimeout(timer); control.abort(); };
  }, [payload]);

  // Whoever changes a prescription signs it: the OMT or the line then names them, so that the
  // pharmacist's page gives the number of the prescriber who wrote what is dispensed.
  const update = (patch) => {
    const omt = OMT_FIELDS.some((k) => k in patch);
    setForm((f) => ({ ...f, ...patch, ...(omt ? { omt_prescriber: user.id } : {}) }));
    setServerErrors({}); setNotice(null);
  };
  const setLine = (i, patch) => update({ lines: form.lines.map((l, j) => (j === i ? { ...l, ...patch, prescriber_id: user.id } : l)) });
  const blocking = blockingOf(check.warnings, extra);

  /** The server's field errors by path; an acknowledgement's index back to its code. */
  function fieldMap(err, acks = []) {
    const out = {};
    for (const e of err.errors) {
      const m = /^acknowledged_warnings\[(\d+)\]/.exec(e.field);
      if (m && acks[Number(m[1])]) out[`ack:${acks[Number(m[1])].code}`] = e.message;
      else out[e.field] = e.message;
    }
    return out;
  }

  async function save(e) {
    e.preventDefault();
    setAttempted(true); setNotice(null); setFailure(null);
    const local = { ...built.errors };
    if (!summary.trim()) local.change_summary = t('editor.summary_required');
    const { acks, short } = acknowledgements(blocking, justifications);
    setAckErrors(short);
    const firstBad = Object.keys(local)[0];
    if (firstBad || Object.keys(short).length) {
      setFailure(t('editor.fix'));
      focusAfter.current = firstBad ? (firstBad === 'change_summary' ? 'pe-change_summary' : fid(firstBad)) : ackId(Object.keys(short)[0]);
      setServerErrors(local.change_summary ? { change_summary: local.change_summary } : {});
      return;
    }
    const body = { ...built.body, change_summary: summary.trim(), acknowledged_warnings: acks };
    setSaving(true);
    try {
      const headers = base ? { 'If-Match': base.etag || `"${base.plan.version}"` } : {};
      const { data, etag } = await api('PUT', `/patients/${id}/care-plan`, { body, headers });
      adopt(data, etag);
      setSummary(''); setAttempted(false); setConflict(null);
      setNotice(t('editor.saved', { n: data.version }));
      focusAfter.current = 'editor-notice';
    } catch (err) {
      if (err instanceof ApiError && err.status === 412) {
        // Saved by someone else meanwhile: show who, which version, how it differs from what was typed.
        try {
          const fresh = await api('GET', `/patients/${id}/care-plan`);
          setConflict({ plan: fresh.data, etag: fresh.etag });
        } catch { setFailure(t('handover.conflict')); }
        focusAfter.current = 'editor-conflict';
      } else if (err instanceof ApiError && err.status === 422 && Array.isArray(err.problem.warnings)) {
        setExtra(err.problem.warnings);
        const codes = blockingOf(err.problem.warnings).map((w) => w.code);
        setAckErrors(Object.fromEntries(codes.map((c) => [c, t('editor.justify_this')])));
        setFailure(t('consultation.justify'));
        if (codes[0]) focusAfter.current = ackId(codes[0]);
      } else if (err instanceof ApiError && err.errors.length) {
        const map = fieldMap(err, acks);
        setServerErrors(map);
        setAckErrors(Object.fromEntries(Object.entries(map).filter(([k]) => k.startsWith('ack:')).map(([k, v]) => [k.slice(4), v])));
        setFailure(err.message);
      } else setFailure(err instanceof ApiError && err.status === 403 ? t('editor.not_allowed') : (err.message || t('error.generic')));
    } finally { setSaving(false); }
  }

  function reapplyOnFresh() {
    const fresh = conflict;
    const theirs = toForm(fresh.plan);
    setForm(reapply(origin, form, theirs));
    setOrigin(theirs);
    setBase(fresh);
    setJustifications((j) => ({ ...Object.fromEntries((fresh.plan.acknowledged_warnings || []).map((a) => [a.code, a.justification])), ...j }));
    setConflict(null);
    setNotice(t('editor.reapplied', { n: fresh.plan.version }));
    focusAfter.current = 'editor-notice';
  }

  return html`<${Loaded} res=${patient}>${(p) => {
    if (!canEdit(user, p)) return html`<p class="error" role="alert">${t('editor.not_allowed')}</p>`;
    // The drug lists need the catalogue before the first render (a select keeps the value it met).
    if (base === undefined || !form || drugRes.loading) return failure ? html`<p class="error" role="alert">${failure}</p>` : html`<p class="muted" role="status">${t('loading')}</p>`;
    const shown = { ...(attempted ? built.errors : Object.fromEntries(Object.entries(built.errors).filter(([k]) => !built.required.has(k)))), ...serverErrors };
    const acksShown = { ...ackErrors, ...Object.fromEntries(Object.entries(serverErrors).filter(([k]) => k.startsWith('ack:')).map(([k, v]) => [k.slice(4), v])) };
    const name = (code) => (drugs.find((d) => d.code === code) || {}).name || code;
    const treated = form.medication !== 'none';
    return html`<article aria-labelledby="editor-title" class="editor">
    <h1 id="editor-title">${t('editor.title', { name: `${p.family_name.toUpperCase()} ${p.given_names}` })}</h1>
    <p><a href=${`#/patients/${id}`}>${t('back.patient')}</a></p>
    <p id="editor-base">${base ? t('editor.base', { n: base.plan.version, who: base.plan.author.full_name }) : t('editor.first')}</p>
    ${notice && html`<p class="ok" role="status" id="editor-notice" tabindex="-1">${notice}</p>`}
    ${!conflict && base && newer > base.plan.version && html`<p class="notice" role="status" id="editor-newer">${t('editor.newer', { n: newer })}</p>`}
    ${conflict && html`<section class="conflict" role="alert" id="editor-conflict" tabindex="-1" aria-labelledby="conflict-text">
      <p id="conflict-text"><strong>${conflictText(conflict.plan, 'editor.conflict')}</strong></p>
      ${(() => {
        const rows = differences(conflict.plan, built.body, name);
        return rows.length === 0 ? html`<p>${t('editor.no_difference')}</p>` : html`<table id="conflict-diff">
          <caption>${t('editor.diff_caption', { n: conflict.plan.version })}</caption>
          <thead><tr><th scope="col">${t('handover.change')}</th><th scope="col">${t('editor.theirs', { n: conflict.plan.version, who: conflict.plan.author.full_name })}</th>
          <th scope="col">${t('editor.mine')}</th></tr></thead>
          <tbody>${rows.map((r) => html`<tr><th scope="row">${r.label}</th><td>${r.theirs}</td><td>${r.mine}</td></tr>`)}</tbody></table>`;
      })()}
      <p>${t('editor.reapply_help')}</p>
      <button type="button" id="editor-reapply" onClick=${reapplyOnFresh}>${t('editor.reapply', { n: conflict.plan.version })}</button>
    </section>`}
    <form novalidate onSubmit=${save} id="plan-editor">
      <fieldset><legend>${t('pharmacy.omt')}</legend>
        <div class="grid">
          <div><label for="pe-omt-medication">${t('omt.medication')}</label>
            <select id="pe-omt-medication" value=${form.medication} onChange=${(e) => update({ medication: e.target.value, temp: e.target.value === 'none' ? false : form.temp })}>
              ${MEDICATIONS.map((m) => html`<option value=${m}>${t(`med.${m}`)}</option>`)}
            </select></div>
          ${treated && html`<${TextField} path="omt.daily_dose_mg" label=${t('editor.omt_dose')} value=${form.omt_dose} errors=${shown} onInput=${(v) => update({ omt_dose: v })} />
            <${TextField} path="omt.doses_per_day" label=${t('consultation.omt_doses')} value=${form.omt_doses} errors=${shown} inputmode="numeric" onInput=${(v) => update({ omt_doses: v })} />`}
        </div>
        ${treated && html`<label class="choice"><input type="checkbox" id="pe-temp" checked=${form.temp} onChange=${(e) => update({ temp: e.target.checked })} /> ${t('editor.temp')}</label>
          ${form.temp && html`<div class="grid" id="pe-temp-fields">
            <${TextField} path="omt.temporary_adjustment.daily_dose_mg" label=${t('editor.temp_dose')} value=${form.temp_dose} errors=${shown} onInput=${(v) => update({ temp_dose: v })} />
            <${TextField} path="omt.temporary_adjustment.doses_per_day" label=${t('editor.temp_doses')} value=${form.temp_doses} errors=${shown} inputmode="numeric" onInput=${(v) => update({ temp_doses: v })} />
            <${DateField} id=${fid('omt.temporary_adjustment.start')} label=${t('editor.temp_start')} value=${form.temp_start} required error=${shown['omt.temporary_adjustment.start']} onChange=${(v) => update({ temp_start: v })} />
            <${DateField} id=${fid('omt.temporary_adjustment.end')} label=${t('editor.temp_end')} value=${form.temp_end} error=${shown['omt.temporary_adjustment.end']} onChange=${(v) => update({ temp_end: v })} />
            <div class="wide"><${TextField} path="omt.temporary_adjustment.reason" label=${t('editor.temp_reason')} value=${form.temp_reason} errors=${shown} inputmode="text" onInput=${(v) => update({ temp_reason: v })} /></div>
          </div>`}`}
      </fieldset>
      <fieldset><legend>${t('pharmacy.lines')}</legend>
        ${form.lines.length === 0 && html`<p>${t('pharmacy.no_lines')}</p>`}
        ${form.lines.map((l, i) => html`<${Line} key=${l.key} l=${l} i=${i} drugs=${drugs} errors=${shown}
          set=${(patch) => setLine(i, patch)}
          remove=${() => { update({ lines: form.lines.filter((_, j) => j !== i) }); focusAfter.current = 'pe-add-line'; }} />`)}
        <button type="button" class="secondary" id="pe-add-line" onClick=${() => {
          update({ lines: [...form.lines, lineForm({ drug: '', dose_mg: null, route: 'oral', times_per_day: null, start: today(), prescriber_id: user.id })] });
          focusAfter.current = fid(`analgesics[${form.lines.length}].drug`);
        }}>${t('editor.add_line')}</button>
      </fieldset>
      <fieldset><legend>${t('editor.goals')}</legend>
        <label for="pe-pain_goal">${t('editor.pain_goal')}</label>
        <textarea id="pe-pain_goal" rows="2" value=${form.pain_goal} onInput=${(e) => update({ pain_goal: e.target.value })}
          aria-invalid=${shown.pain_goal ? 'true' : undefined} aria-describedby=${shown.pain_goal ? 'pe-pain_goal-error' : undefined}></textarea>
        <${FieldError} id="pe-pain_goal-error" message=${shown.pain_goal} />
        <label for="pe-non_drug_measures">${t('editor.non_drug')}</label>
        <textarea id="pe-non_drug_measures" rows="2" value=${form.non_drug_measures} onInput=${(e) => update({ non_drug_measures: e.target.value })}
          aria-invalid=${shown.non_drug_measures ? 'true' : undefined} aria-describedby=${shown.non_drug_measures ? 'pe-non_drug_measures-error' : undefined}></textarea>
        <${FieldError} id="pe-non_drug_measures-error" message=${shown.non_drug_measures} />
        <${DateField} id="pe-review_date" label=${t('editor.review_date')} value=${form.review_date} error=${shown.review_date} onChange=${(v) => update({ review_date: v })} />
      </fieldset>
      <section aria-labelledby="check-title" class="check">
        <h2 id="check-title">${t('editor.check_title')}</h2>
        <p class="muted" role="status" id="check-status">${t(`editor.check_${payload ? check.state : 'incomplete'}`)}</p>
        <${Warnings} warnings=${check.warnings} id="editor-warnings" />
      </section>
      <fieldset><legend>${t('editor.save_title')}</legend>
        ${blocking.length > 0 && html`<p id="ack-help">${t('editor.ack_help')}</p>`}
        <${Justifications} blocking=${blocking} values=${justifications} errors=${acksShown}
          onInput=${(code, v) => { setJustifications({ ...justifications, [code]: v }); setAckErrors({ ...ackErrors, [code]: null }); }} />
        <label for="pe-change_summary">${t('editor.summary')}</label>
        <textarea id="pe-change_summary" rows="2" value=${summary} onInput=${(e) => { setSummary(e.target.value); setServerErrors({ ...serverErrors, change_summary: null }); }}
          aria-invalid=${shown.change_summary ? 'true' : undefined} aria-describedby=${shown.change_summary ? 'pe-change_summary-error' : undefined}></textarea>
        <${FieldError} id="pe-change_summary-error" message=${shown.change_summary} />
        ${failure && html`<p class="error" role="alert" id="editor-error">${failure}</p>`}
        <button type="submit" id="pe-save" disabled=${saving}>${base ? t('editor.save', { n: base.plan.version }) : t('editor.save_first')}</button>
      </fieldset>
    </form>
    <p class="muted">${t('editor.doses_hint', { example: fmtDose(12.5) })}</p>
  </article>`;
  }}<//>`;
}
