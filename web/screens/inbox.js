// The inbox: what needs me now, kept live by the event stream.
import { html } from '../vendor/htm-preact-standalone.mjs';
import { t, fmtDate, fmtDateTime } from '../i18n.js';
import { useResource, Loaded } from './common.js';
import { ConsultationList } from './consultations.js';

const live = () => true;

function Count({ n, label }) {
  return html`<li class=${n > 0 ? 'count due' : 'count'}><span class="n">${n}</span> ${label}</li>`;
}

function patientLabel(p) { return p ? `${p.family_name.toUpperCase()} ${p.given_names}` : t('thread.no_patient'); }

export function Inbox({ user }) {
  const counts = useResource('/inbox', live);
  const threads = useResource('/threads?limit=20', live);
  const handovers = useResource(user.role === 'gp' ? '/handovers?box=inbox&limit=20' : null, (e) => e.type.startsWith('handover.'));
  const patients = useResource('/patients?limit=50', (e) => e.type.startsWith('access_request') || e.type === 'emergency_access.granted');
  return html`<section aria-labelledby="inbox-title">
    <h1 id="inbox-title">${t('inbox.title')}</h1>
    <div aria-live="polite" id="inbox-counts">
    <${Loaded} res=${counts}>${(c) => html`<ul class="counts">
      <${Count} n=${c.handovers_to_acknowledge} label=${t('inbox.handovers')} />
      <${Count} n=${c.consultations_to_answer} label=${t('inbox.to_answer')} />
      <${Count} n=${c.consultations_to_close} label=${t('inbox.to_close')} />
      <${Count} n=${c.unread_threads} label=${t('inbox.unread_threads')} />
      <${Count} n=${c.unread_notifications} label=${t('inbox.notifications')} />
      <${Count} n=${c.interventions_to_answer} label=${t('inbox.interventions')} />
      <${Count} n=${c.overdue} label=${t('inbox.overdue')} />
    </ul>`}<//></div>
    <div class="columns">
      ${user.role === 'gp' && html`<section aria-labelledby="handovers-title"><h2 id="handovers-title">${t('inbox.handover_list')}</h2>
        <${Loaded} res=${handovers}>${(page) => page.items.length === 0 ? html`<p>${t('inbox.no_handovers')}</p>` : html`<ul class="list" id="handover-list">
          ${page.items.map((h) => html`<li class=${h.status === 'sent' ? 'unread' : ''}><a href=${`#/handovers/${h.id}`}>${t('inbox.handover_item', { date: fmtDate(h.discharge_date) })}</a>
            <span class="muted"> · ${t(`handover.status_${h.status}`)}</span>${h.overdue ? html` <span class="tag">${t('inbox.overdue')}</span>` : ''}</li>`)}</ul>`}<//>
      </section>`}
      ${user.role !== 'admin' && html`<${ConsultationList} user=${user} />`}
      <section aria-labelledby="threads-title"><h2 id="threads-title">${t('inbox.threads')}</h2>
        <${Loaded} res=${threads}>${(page) => page.items.length === 0 ? html`<p>${t('inbox.no_threads')}</p>` : html`<ul class="list" id="thread-list">
          ${page.items.map((th) => html`<li class=${th.unread_count > 0 ? 'unread' : ''}>
            ${th.patient ? html`<a href=${`#/patients/${th.patient.id}`}>${patientLabel(th.patient)}</a>` : patientLabel(null)}
            <span class="muted"> · ${t(`subject.${th.subject.type}`)} · ${fmtDateTime(th.last_message_at || th.created_at)}</span>
            ${th.unread_count > 0 && html` <span class="tag">${t('inbox.unread', { n: th.unread_count })}</span>`}
          </li>`)}</ul>`}<//>
      </section>
      <section aria-labelledby="patients-title"><h2 id="patients-title">${t('inbox.my_patients')}</h2>
        <${Loaded} res=${patients}>${(page) => html`<ul class="list">
          ${page.items.map((p) => html`<li><a href=${`#/patients/${p.id}`}>${p.family_name.toUpperCase()} ${p.given_names}</a>
            ${user.role === 'pharmacist' && html` · <a href=${`#/patients/${p.id}/pharmacy`}
              aria-label=${t('pharmacy.open_for', { name: `${p.family_name} ${p.given_names}` })}>${t('pharmacy.open')}</a>`}</li>`)}
        </ul>`}<//>
      </section>
    </div>
  </section>`;
}
