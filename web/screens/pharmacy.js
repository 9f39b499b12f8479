// The pharmacist's page: what to dispense today, on one printable A4 page.
import { html } from '../vendor/htm-preact-standalone.mjs';
import { t, fmtDate, fmtLongDate, fmtDateTime, fmtDose, today } from '../i18n.js';
import { useResource, Loaded, personName } from './common.js';
import { schedule } from './plans.js';

function Contact({ person }) {
  if (!person) return '—';
  return html`${person.full_name}${person.phone && html`<br /><a href=${`tel:${person.phone}`}>${person.phone}</a>`}`;
}

function Omt({ omt }) {
  if (!omt) return html`<p>${t('pharmacy.no_omt')}</p>`;
  return html`<dl class="omt">
    <dt>${t('omt.medication')}</dt><dd>${t(`med.${omt.medication}`)}</dd>
    <dt>${t('omt.dose')}</dt><dd class="dose">${fmtDose(omt.daily_dose_mg)} ${t('omt.per_day')} · ${t('omt.doses', { n: omt.doses_per_day })}</dd>
    ${omt.temporary && html`<dt>${t('omt.temporary')}</dt>
      <dd class="temporary"><strong>${t('omt.temporary_until', { date: fmtDate(omt.until) })}</strong>
      ${omt.usual_daily_dose_mg != null && html` — ${t('omt.usual', { dose: fmtDose(omt.usual_daily_dose_mg), n: omt.usual_doses_per_day })}`}</dd>`}
    <dt>${t('omt.prescriber')}</dt><dd><${Contact} person=${omt.prescriber} /></dd>
    ${omt.dispensing_pharmacy && html`<dt>${t('omt.pharmacy')}</dt><dd>${omt.dispensing_pharmacy.name}</dd>`}
  </dl>`;
}

export function PharmacyPage({ id }) {
  const day = today();
  const res = useResource(`/patients/${id}/analgesic-plan?on=${day}`,
    (e) => e.patient_id === id && e.type === 'care_plan.version_created');
  return html`<${Loaded} res=${res}>${(plan) => html`<article class="pharmacy" aria-labelledby="pharmacy-title">
    <div class="no-print actions">
      <a href=${`#/patients/${id}`}>${t('back.patient')}</a>
      <button type="button" onClick=${() => print()}>${t('pharmacy.print')}</button>
    </div>
    <header>
      <h1 id="pharmacy-title">${t('pharmacy.title')}</h1>
      <p class="subject"><strong>${plan.patient.display_name}</strong> · ${t('patient.born', { date: fmtDate(plan.patient.birth_date) })}</p>
      <p>${t('pharmacy.on', { date: fmtLongDate(`${plan.on}T12:00:00Z`) })} · <span class="version">${t('plan.version', { n: plan.plan_version })}</span> · ${t(`status.${plan.status}`)}</p>
      ${plan.valid_until && html`<p class="valid">${t('pharmacy.valid_until', { date: fmtDate(plan.valid_until) })}</p>`}
    </header>
    <section aria-labelledby="omt-title"><h2 id="omt-title">${t('pharmacy.omt')}</h2><${Omt} omt=${plan.omt} /></section>
    <section aria-labelledby="lines-title"><h2 id="lines-title">${t('pharmacy.lines')}</h2>
      ${plan.analgesics.length === 0 ? html`<p>${t('pharmacy.no_lines')}</p>` : html`<table>
        <thead><tr><th scope="col">${t('line.drug')}</th><th scope="col">${t('line.dose')}</th>
          <th scope="col">${t('line.schedule')}</th><th scope="col">${t('line.max')}</th>
          <th scope="col">${t('line.end')}</th><th scope="col">${t('line.prescriber')}</th></tr></thead>
        <tbody>${plan.analgesics.map((l) => html`<tr>
          <th scope="row">${l.drug_name}${l.as_needed && html` <span class="tag">${t('line.as_needed')}</span>`}</th>
          <td class="dose">${fmtDose(l.dose_mg)} · ${t(`route.${l.route}`)}</td>
          <td>${schedule(l)}</td><td>${l.max_daily_mg != null ? fmtDose(l.max_daily_mg) : '—'}</td>
          <td>${fmtDate(l.end)}${l.days_left != null && html`<br /><small>${t('line.days_left', { n: l.days_left })}</small>`}</td>
          <td><${Contact} person=${l.prescriber} /></td></tr>`)}</tbody></table>`}
    </section>
    ${plan.destabilisation_watch && plan.destabilisation_watch.tightened && html`<p class="warning">
      ${t('pharmacy.watch', { date: fmtDate(plan.destabilisation_watch.until) })}</p>`}
    <footer><p>${t('pharmacy.last_change', { date: fmtDateTime(plan.last_changed_at), who: personName(plan.last_changed_by) })}</p>
      <p class="print-only">${t('pharmacy.printed', { date: fmtDateTime(new Date().toISOString()) })}</p></footer>
  </article>`}<//>`;
}
