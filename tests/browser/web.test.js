// Browser tests of the web client: the release binary serving the demo
// network, driven through Debian's Chromium by playwright-core, with
// axe-core on every screen. Run by .ci/browser (or `npm test` with
// RELAIS_BIN pointing at a built binary).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, readFileSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createServer } from 'node:net';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, '../..');
const BIN = process.env.RELAIS_BIN || join(root, 'target/release/relais');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const SHOTS = join(root, 'docs/screenshots');
const PASSWORD = 'relais-demo-password';
const AXE = readFileSync(join(here, 'node_modules/axe-core/axe.min.js'), 'utf8');

// RELAIS_BROWSER_POSTGRES=postgres://user@host:port/db runs the same flows on a fresh
// PostgreSQL database (created on that server with psql, dropped at the end).
const PG = process.env.RELAIS_BROWSER_POSTGRES;
let server; let base; let browser; let work; let pgDb;
const figures = {};

function freePort() {
  return new Promise((ok) => { const s = createServer(); s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => ok(port)); }); });
}

before(async () => {
  work = mkdtempSync(join(tmpdir(), 'relais-browser-'));
  const port = await freePort();
  base = `http://127.0.0.1:${port}`;
  let url = `sqlite://${work}/relais.db`;
  if (PG) {
    pgDb = `relais_browser_${process.pid}_${Date.now()}`;
    execFileSync('psql', [PG, '-qAtc', `CREATE DATABASE ${pgDb}`]);
    const u = new URL(PG); u.pathname = `/${pgDb}`; url = u.toString();
  }
  const env = { ...process.env, RELAIS__DATABASE__URL: url, RELAIS__SERVER__DATA_DIR: work,
    RELAIS__SERVER__BIND: `127.0.0.1:${port}`, RELAIS__SERVER__PUBLIC_URL: base, RELAIS__EMAIL__TRANSPORT: 'file',
    RUST_LOG: 'warn' };
  execFileSync(BIN, ['demo'], { env, stdio: ['ignore', 'ignore', 'inherit'] });
  server = spawn(BIN, ['serve'], { env, stdio: ['ignore', 'ignore', 'inherit'] });
  for (let i = 0; i < 100; i += 1) {
    try { if ((await fetch(`${base}/api/v1/health/ready`)).ok) break; } catch { /* not up yet */ }
    await new Promise((r) => setTimeout(r, 100));
  }
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--disable-gpu', '--disable-quic',
    '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'] });
  mkdirSync(SHOTS, { recursive: true });
});

after(async () => {
  if (browser) await browser.close();
  if (server && server.exitCode === null) {
    const exited = new Promise((ok) => server.once('exit', ok));
    server.kill('SIGTERM');
    await exited;
  }
  if (pgDb) execFileSync('psql', [PG, '-qAtc', `DROP DATABASE IF EXISTS ${pgDb}`]);
  if (work) rmSync(work, { recursive: true, force: true });
  writeFileSync(join(here, 'figures.json'), `${JSON.stringify(figures, null, 2)}\n`);
  console.log('figures', JSON.stringify(figures));
});

// ---- API helpers (the test's own calls, as another user would make them) ----
async function token(email) {
  const res = await fetch(`${base}/api/v1/auth/login`, { method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ email, password: PASSWORD }) });
  assert.equal(res.status, 200);
  return (await res.json()).access_token;
}
async function call(tok, method, path, body) {
  const res = await fetch(`${base}/api/v1${path}`, { method, headers: { authorization: `Bearer ${tok}`,
    ...(body ? { 'content-type': 'application/json' } : {}) }, body: body ? JSON.stringify(body) : undefined });
  const text = await res.text();
  assert.ok(res.ok, `${method} ${path}: ${res.status} ${text}`);
  return text ? JSON.parse(text) : null;
}
async function patient(tok, q) { return (await call(tok, 'GET', `/patients?q=${encodeURIComponent(q)}`)).items[0]; }

// ---- Browser helpers ----
async function newPage() {
  const context = await browser.newContext({ locale: 'fr-FR', timezoneId: 'Europe/Paris', viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  page.on('console', (m) => { if (m.type() === 'error' && !/401|Failed to load resource/.test(m.text())) errors.push(m.text()); });
  page.errors = errors;
  return page;
}

/** Signs in with the keyboard only: Tab to each field, type, Enter. */
async function signIn(page, email, hash = '') {
  await page.goto(`${base}/${hash}`);
  await page.locator('#email').waitFor();
  await tabTo(page, '#email');
  await page.keyboard.type(email);
  await page.keyboard.press('Tab');
  await page.keyboard.type(PASSWORD);
  await page.keyboard.press('Enter');
}

async function axe(page, screen) {
  // The page's CSP refuses inline scripts (as it should): evaluate through the devtools protocol.
  if (!(await page.evaluate(() => !!window.axe))) await page.evaluate(AXE);
  const result = await page.evaluate(async () => window.axe.run(document, { runOnly: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice'] }));
  const bad = result.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  assert.deepEqual(bad.map((v) => `${v.id}: ${v.nodes.map((n) => n.target.join(' ')).join(', ')}`), [], `axe on ${screen}`);
  figures[`axe_${screen}`] = { violations: result.violations.map((v) => `${v.impact}:${v.id}`), passes: result.passes.length };
}

async function shot(page, name) { await page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true }); }

/** Presses Tab until the element matching `selector` has the focus (keyboard only). */
async function tabTo(page, selector, { max = 200, back = false } = {}) {
  for (let i = 0; i < max; i += 1) {
    if (await page.evaluate((s) => !!document.activeElement && document.activeElement.matches(s), selector)) return;
    await page.keyboard.press(back ? 'Shift+Tab' : 'Tab');
  }
  throw new Error(`Tab never reached ${selector}`);
}
/** Replaces the focused field's text by typing. */
async function retype(page, text) {
  await page.keyboard.press('Control+A');
  await page.keyboard.press('Backspace');
  await page.keyboard.type(text);
}
/** 2026-12-01 → 01/12/2026 */
const fr = (iso) => iso.split('-').reverse().join('/');
const isoPlusDays = (days) => { const d = new Date(); d.setUTCDate(d.getUTCDate() + days); return d.toISOString().slice(0, 10); };

// ---- The flows ----

test('the sign-in page is accessible and French first', async () => {
  const page = await newPage();
  await page.goto(`${base}/`);
  await page.locator('h1').waitFor();
  assert.equal(await page.locator('h1').textContent(), 'Connexion à Relais');
  assert.equal(await page.getAttribute('html', 'lang'), 'fr');
  await axe(page, 'sign_in');
  await shot(page, 'sign-in');
  // A wrong password: a clear message, nothing stored.
  await page.fill('#email', 'pharmacist@demo.relais.test');
  await page.fill('#password', 'not the password');
  await page.click('button[type=submit]');
  await page.locator('.error[role=alert]').waitFor();
  assert.match(await page.locator('.error[role=alert]').textContent(), /incorrect/);
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test('the pharmacist prints today\'s page', async () => {
  const tok = await token('pharmacist@demo.relais.test');
  const p = await patient(tok, 'Le Gall');
  const page = await newPage();
  const started = { t: 0 };
  await page.goto(`${base}/#/patients/${p.id}/pharmacy`);
  await page.locator('#email').waitFor();
  await tabTo(page, '#email');
  await page.keyboard.type('pharmacist@demo.relais.test');
  await page.keyboard.press('Tab');
  await page.keyboard.type(PASSWORD);
  started.t = Date.now();
  await page.keyboard.press('Enter');
  await page.locator('.pharmacy table tbody tr').first().waitFor();
  await page.locator('button', { hasText: 'Imprimer' }).waitFor({ state: 'visible' });
  figures.pharmacy_interactive_after_sign_in_ms = Date.now() - started.t;
  const text = await page.locator('.pharmacy').textContent();
  assert.match(text, /Méthadone/);
  assert.match(text, /Modification temporaire/);
  assert.match(text, /jusqu’au \d{2}\/\d{2}\/\d{4} inclus/);
  assert.match(text, /version \d+/);
  assert.match(text, /80\smg par jour/);
  assert.match(text, /1\s000\smg/);
  assert.match(text, /Paracétamol|paracetamol/i);
  await axe(page, 'pharmacy');
  await shot(page, 'pharmacy');
  // One A4 page when printed, dated, the navigation hidden.
  await page.emulateMedia({ media: 'print' });
  assert.equal(await page.locator('header.top').isVisible(), false);
  assert.equal(await page.locator('.print-only').isVisible(), true);
  const pdf = await page.pdf({ format: 'A4', printBackground: true });
  const pages = (pdf.toString('latin1').match(/\/Type\s*\/Page[^s]/g) || []).length;
  assert.equal(pages, 1, 'the printed page fits one A4 sheet');
  writeFileSync(join(SHOTS, 'pharmacy-print.pdf'), pdf);
  await page.emulateMedia({ media: 'screen' });
  // No token anywhere a script or another tab could read it.
  const storage = await page.evaluate(() => ({ local: { ...localStorage }, session: { ...sessionStorage }, cookie: document.cookie }));
  assert.deepEqual(Object.keys(storage.session), []);
  assert.ok(Object.keys(storage.local).every((k) => k === 'relais.lang'), JSON.stringify(storage.local));
  assert.equal(storage.cookie, '');
  // Printed from the keyboard: the print button starts the browser's printing (last: headless
  // Chromium keeps its print job open, and page.pdf() above could not run beside it).
  await page.evaluate(() => addEventListener('beforeprint', () => { document.body.dataset.printed = 'yes'; }));
  await tabTo(page, '.pharmacy button');
  assert.match(await page.evaluate(() => document.activeElement.textContent), /Imprimer/);
  await page.keyboard.press('Enter');
  await page.waitForFunction(() => document.body.dataset.printed === 'yes');
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test('a reload keeps the session through the cookie; sign-out clears every trace', async () => {
  const page = await newPage();
  await signIn(page, 'gp@demo.relais.test');
  await page.locator('#inbox-title').waitFor();
  await axe(page, 'inbox');
  await shot(page, 'inbox');
  await page.reload();
  await page.locator('#inbox-title').waitFor();
  const cookies = await page.context().cookies();
  const refresh = cookies.find((c) => c.name === 'relais_refresh');
  assert.ok(refresh && refresh.httpOnly && refresh.sameSite === 'Strict' && refresh.path === '/api/v1/auth');
  await tabTo(page, 'header.top button');
  assert.equal(await page.evaluate(() => document.activeElement.textContent), 'Se déconnecter');
  await page.keyboard.press('Enter');
  await page.locator('#email').waitFor();
  assert.equal((await page.context().cookies()).find((c) => c.name === 'relais_refresh'), undefined);
  await page.reload();
  await page.locator('#email').waitFor();
  assert.equal(await page.locator('#inbox-title').count(), 0);
  await page.context().close();
});

test('the language choice is remembered', async () => {
  const page = await newPage();
  await page.goto(`${base}/`);
  await page.locator('h1').waitFor();
  await page.selectOption('.lang select', 'en');
  await page.locator('h1', { hasText: 'Sign in to Relais' }).waitFor();
  await page.reload();
  await page.locator('h1', { hasText: 'Sign in to Relais' }).waitFor();
  assert.equal(await page.getAttribute('html', 'lang'), 'en');
  await page.context().close();
});

test('patient search and the patient page', async () => {
  const page = await newPage();
  await signIn(page, 'gp@demo.relais.test');
  await page.locator('#inbox-title').waitFor();
  // Keyboard only: the navigation, the search field, the result's link.
  await tabTo(page, 'nav a[href="#/patients"]');
  await page.keyboard.press('Enter');
  await page.locator('#q').waitFor();
  await tabTo(page, '#q');
  await page.keyboard.type('Morvan');
  await page.keyboard.press('Enter');
  await page.locator('table >> text=MORVAN Loïc').waitFor();
  await axe(page, 'search');
  await shot(page, 'search');
  await tabTo(page, 'table a[href^="#/patients/"]');
  assert.equal(await page.evaluate(() => document.activeElement.textContent), 'MORVAN Loïc');
  await page.keyboard.press('Enter');
  await page.locator('#plan-title').waitFor();
  await page.locator('#versions-title + table tbody tr').first().waitFor();
  await page.locator('.warnings li, .ok').first().waitFor();
  const text = await page.locator('main').textContent();
  assert.match(text, /Buprénorphine/);
  assert.match(text, /Consentement au partage/);
  assert.match(text, /référent/);
  await axe(page, 'patient');
  await shot(page, 'patient');
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test('a message arrives live', async () => {
  const gp = await newPage();
  await signIn(gp, 'gp@demo.relais.test');
  const tok = await token('nurse@demo.relais.test');
  const p = await patient(tok, 'Le Gall');
  await gp.locator('#inbox-title').waitFor();
  await gp.goto(`${base}/#/patients/${p.id}`);
  await gp.locator('#messages').waitFor({ state: 'attached' });
  await gp.waitForFunction(() => document.body.dataset.live === 'on');
  const body = `Passage à domicile ${Date.now()}`;
  const sent = Date.now();
  await call(tok, 'POST', `/threads/${p.thread_id}/messages`, { body });
  await gp.locator('#messages li', { hasText: body }).waitFor({ timeout: 10000 });
  figures.message_live_ms = Date.now() - sent;
  // The GP answers from the keyboard; the nurse reads it through the API.
  const reply = `Bien reçu, je passe demain ${Date.now()}`;
  await tabTo(gp, '#message');
  await gp.keyboard.type(reply);
  await tabTo(gp, '.thread button[type=submit]');
  await gp.keyboard.press('Enter');
  await gp.locator('#messages li', { hasText: reply }).waitFor();
  assert.equal(await gp.locator('#message').inputValue(), '');
  const thread = await call(tok, 'GET', `/threads/${p.thread_id}/messages?limit=100`);
  assert.ok(thread.items.some((m) => m.body === reply));
  assert.deepEqual(gp.errors, []);
  await gp.context().close();
});

test("a nurse's observation alerts the referent without a reload", async () => {
  const tok = await token('nurse@demo.relais.test');
  const p = await patient(tok, 'Le Gall');
  const watch = (await call(tok, 'GET', `/patients/${p.id}/analgesic-plan`)).destabilisation_watch;
  const gp = await newPage();
  await signIn(gp, 'gp@demo.relais.test', `#/patients/${p.id}`);
  await gp.locator('#plan-title').waitFor();
  await gp.waitForFunction(() => document.body.dataset.live === 'on');
  const nurse = await newPage();
  await signIn(nurse, 'nurse@demo.relais.test', `#/patients/${p.id}`);
  await nurse.locator('#obs-cows_score').waitFor();
  await axe(nurse, 'observation');
  // Keyboard only: Tab to each score, type, Enter submits.
  await tabTo(nurse, '#obs-pain_score');
  await nurse.keyboard.type(String(watch.pain_threshold));
  await tabTo(nurse, '#obs-cows_score');
  await nurse.keyboard.type(String(watch.cows_threshold + 2));
  await nurse.keyboard.press('Enter');
  await nurse.locator('.ok[role=status]').waitFor();
  await shot(nurse, 'observation');
  await gp.locator('#live-alert').waitFor({ timeout: 10000 });
  await shot(gp, 'alert');
  // A bad value: the field is named, nothing recorded.
  await tabTo(nurse, '#obs-pain_score', { back: true });
  await retype(nurse, '11');
  await nurse.keyboard.press('Enter');
  await nurse.locator('#obs-pain_score-error').waitFor();
  assert.match(await nurse.locator('#obs-pain_score').getAttribute('aria-describedby'), /obs-pain_score-error/);
  await gp.context().close();
  await nurse.context().close();
});

test('the GP reconciles a discharge handover with an amendment', async () => {
  const page = await newPage();
  await signIn(page, 'gp@demo.relais.test');
  // Keyboard only: Tab, Enter, the arrow keys in the radio group, typing.
  await page.locator('#handover-list a').first().waitFor();
  await tabTo(page, '#handover-list a');
  await page.keyboard.press('Enter');
  await page.locator('#handover-title').waitFor();
  await page.locator('.side-by-side .plan-column').nth(1).waitFor();
  await axe(page, 'handover');
  await tabTo(page, '#handover-acknowledge');
  await page.keyboard.press('Enter');
  await page.locator('#handover-status', { hasText: 'reçue' }).waitFor();
  await tabTo(page, 'input[name=decision]:checked');
  assert.equal(await page.evaluate(() => document.activeElement.value), 'accept');
  await page.keyboard.press('ArrowDown');
  assert.equal(await page.evaluate(() => document.activeElement.value), 'amend');
  const end = page.locator('#amend-end-0');
  await end.waitFor();
  // Dates are shown and typed day first (jj/mm/aaaa), not in the browser's locale.
  const before = await end.inputValue();
  assert.match(before, /^\d{2}\/\d{2}\/\d{4}$/);
  const shorter = new Date(`${before.split('/').reverse().join('-')}T12:00:00Z`);
  shorter.setUTCDate(shorter.getUTCDate() - 1);
  await tabTo(page, '#amend-end-0');
  await retype(page, fr(shorter.toISOString().slice(0, 10)));
  await tabTo(page, '#handover-comment');
  await page.keyboard.type('Paracétamol arrêté un jour plus tôt, à revoir en consultation.');
  await axe(page, 'handover_amend');
  await shot(page, 'handover');
  await tabTo(page, '#handover-form button[type=submit]');
  await page.keyboard.press('Enter');
  await page.locator('#handover-status', { hasText: 'intégrée' }).waitFor();
  const result = await page.locator('main').textContent();
  assert.match(result, /Plan issu de cette sortie : version \d+/);
  // The new plan version carries the amendment and names its source.
  const tok = await token('gp@demo.relais.test');
  const h = (await call(tok, 'GET', '/handovers?box=inbox')).items.find((x) => x.status === 'reconciled');
  assert.equal(h.decision, 'amend');
  const plan = await call(tok, 'GET', `/patients/${h.patient_id}/care-plan`);
  assert.equal(plan.version, h.resulting_plan_version);
  assert.equal(plan.source.type, 'handover');
  assert.equal(plan.source.id, h.id);
  assert.ok(plan.analgesics.some((l) => l.end === shorter.toISOString().slice(0, 10)));
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test('the specialist answers and the GP applies the proposal', async () => {
  const gpTok = await token('gp@demo.relais.test');
  const p = await patient(gpTok, 'Morvan');
  const centre = (await call(gpTok, 'GET', '/organizations?kind=pain_centre')).items[0];
  const before = await call(gpTok, 'GET', `/patients/${p.id}/care-plan`);
  assert.ok(before.omt.medication !== 'none' && before.omt.doses_per_day < 4);
  const proposedDoses = before.omt.doses_per_day + 1;

  // The GP asks the pain centre from the patient page, keyboard only.
  const gp = await newPage();
  await signIn(gp, 'gp@demo.relais.test', `#/patients/${p.id}`);
  await gp.locator('#ask-open').waitFor();
  await tabTo(gp, '#ask-open');
  await gp.keyboard.press('Enter');
  await gp.locator('#ask-form').waitFor();
  assert.equal(await gp.evaluate(() => document.activeElement.id), 'ask-centre');
  // Nothing chosen: each field named, nothing sent.
  await tabTo(gp, '#ask-form button[type=submit]');
  await gp.keyboard.press('Enter');
  await gp.locator('#ask-centre-error').waitFor();
  assert.match(await gp.locator('#ask-centre-error').textContent(), /Choisissez un centre/);
  assert.match(await gp.locator('#ask-question-error').textContent(), /Écrivez votre question/);
  assert.equal(gp.url().includes('#/consultations/'), false);
  await tabTo(gp, '#ask-centre', { back: true });
  for (let i = 0; i < 20 && (await gp.locator('#ask-centre').inputValue()) !== centre.id; i += 1) await gp.keyboard.press('ArrowDown');
  assert.equal(await gp.locator('#ask-centre').inputValue(), centre.id);
  await tabTo(gp, '#ask-question');
  await gp.keyboard.type('Douleur lombaire persistante : faut-il fractionner la buprénorphine ?');
  await axe(gp, 'consultation_request');
  await tabTo(gp, '#ask-form button[type=submit]');
  await gp.keyboard.press('Enter');
  await gp.locator('#consultation-title').waitFor();
  const id = gp.url().split('#/consultations/')[1];
  assert.match(id, /^[0-9a-f-]{36}$/);
  assert.match(await gp.locator('#consultation-status').textContent(), /envoyée/);

  // The specialist finds it in the inbox, accepts, answers with an edited copy of the plan.
  const sp = await newPage();
  await signIn(sp, 'pain@demo.relais.test');
  const link = sp.locator(`#consultation-list a[href="#/consultations/${id}"]`);
  await link.waitFor();
  await axe(sp, 'inbox_specialist');
  await link.focus();
  await sp.keyboard.press('Enter');
  await sp.locator('#consultation-accept').waitFor();
  await tabTo(sp, '#consultation-accept');
  await sp.keyboard.press('Enter');
  await sp.locator('#consultation-status', { hasText: 'prise en charge' }).waitFor();
  // An empty answer is refused before anything is sent.
  await tabTo(sp, '#consultation-send-answer');
  await sp.keyboard.press('Enter');
  await sp.locator('#consultation-error').waitFor();
  assert.match(await sp.locator('#consultation-error').textContent(), /Écrivez votre avis/);
  assert.equal((await call(await token('pain@demo.relais.test'), 'GET', `/consultations/${id}`)).status, 'accepted');
  await tabTo(sp, '#consultation-answer', { back: true });
  await sp.keyboard.type('Fractionner la buprénorphine, même dose quotidienne ; réévaluer dans sept jours.');
  await tabTo(sp, '#consultation-with-plan');
  await sp.keyboard.press('Space');
  await sp.locator('#prop-omt-doses').waitFor();
  await tabTo(sp, '#prop-omt-doses');
  await retype(sp, String(proposedDoses));
  await axe(sp, 'consultation_answer');
  await shot(sp, 'consultation-answer');
  await tabTo(sp, '#consultation-send-answer');
  await sp.keyboard.press('Enter');
  await sp.locator('#consultation-status', { hasText: 'avis rendu' }).waitFor();
  assert.deepEqual(sp.errors, []);

  // Meanwhile another version of the plan is saved: the GP's apply is refused (412) and explained.
  await gp.reload();
  await gp.locator('#consultation-apply').waitFor();
  const res = await fetch(`${base}/api/v1/patients/${p.id}/care-plan`, { headers: { authorization: `Bearer ${gpTok}` } });
  const etag = res.headers.get('etag');
  const current = await res.json();
  const put = await fetch(`${base}/api/v1/patients/${p.id}/care-plan`, { method: 'PUT',
    headers: { authorization: `Bearer ${gpTok}`, 'content-type': 'application/json', 'if-match': etag },
    body: JSON.stringify({ status: current.status, omt: current.omt, analgesics: current.analgesics, pain_goal: current.pain_goal,
      non_drug_measures: current.non_drug_measures, review_date: current.review_date, change_summary: 'Relecture du plan',
      acknowledged_warnings: current.acknowledged_warnings }) });
  assert.ok(put.ok, `PUT care-plan: ${put.status} ${await put.text()}`);
  await tabTo(gp, '#consultation-apply');
  await gp.keyboard.press('Enter');
  await gp.locator('#apply-error', { hasText: `version ${current.version + 1}` }).waitFor();
  assert.match(await gp.locator('#apply-error').textContent(), /relisez les différences/);
  assert.match(await gp.locator('#consultation-apply').textContent(), new RegExp(`version ${current.version + 1}\\b`));
  await axe(gp, 'consultation_apply');
  await shot(gp, 'consultation');

  // One press applies it on the version now read.
  await tabTo(gp, '#consultation-apply');
  await gp.keyboard.press('Enter');
  await gp.locator('#consultation-applied').waitFor();
  const c = await call(gpTok, 'GET', `/consultations/${id}`);
  assert.equal(c.status, 'answered');
  const plan = await call(gpTok, 'GET', `/patients/${p.id}/care-plan`);
  assert.equal(plan.version, current.version + 2);
  assert.equal(c.applied_plan_version, plan.version);
  assert.equal(plan.source.type, 'consultation');
  assert.equal(plan.source.id, id);
  assert.equal(plan.omt.doses_per_day, proposedDoses);
  assert.equal(plan.omt.daily_dose_mg, before.omt.daily_dose_mg);
  assert.match(await gp.locator('#consultation-applied').textContent(), new RegExp(`version ${plan.version}\\b`));
  // The GP closes it: the advice avoided a referral.
  await gp.locator('#close-form').waitFor();
  await tabTo(gp, 'input[name=close-outcome]:checked');
  assert.equal(await gp.evaluate(() => document.activeElement.value), 'resolved');
  await tabTo(gp, '#close-avoided');
  await gp.keyboard.press('Space');
  await axe(gp, 'consultation_close');
  await tabTo(gp, '#consultation-close');
  await gp.keyboard.press('Enter');
  await gp.locator('#consultation-status', { hasText: 'close' }).waitFor();
  await gp.locator('#consultation-outcome').waitFor();
  const closed = await call(gpTok, 'GET', `/consultations/${id}`);
  assert.equal(closed.status, 'closed');
  assert.equal(closed.outcome, 'resolved');
  assert.equal(closed.referral_avoided, true);
  assert.deepEqual(gp.errors, []);
  await gp.context().close();
  await sp.context().close();
});

test('the requester cancels a consultation from the client, by keyboard', async () => {
  const gpTok = await token('gp@demo.relais.test');
  const p = await patient(gpTok, 'Le Gall');
  const centre = (await call(gpTok, 'GET', '/organizations?kind=addiction_centre')).items[0];
  const c = await call(gpTok, 'POST', '/consultations', { centre_id: centre.id, patient_id: p.id, priority: 'routine',
    question: 'Faut-il fractionner la méthadone pendant la période post-opératoire ?' });
  // The centre's specialist sees nothing to cancel; the requester does.
  const sp = await newPage();
  await signIn(sp, 'addiction@demo.relais.test', `#/consultations/${c.id}`);
  await sp.locator('#consultation-accept').waitFor();
  assert.equal(await sp.locator('#consultation-cancel').count(), 0);
  await sp.context().close();
  const page = await newPage();
  await signIn(page, 'gp@demo.relais.test', `#/consultations/${c.id}`);
  await page.locator('#consultation-title').waitFor();
  await tabTo(page, '#consultation-cancel');
  await page.keyboard.press('Enter');
  // A second, explicit step; the focus is on it.
  await page.locator('#consultation-cancel-confirm').waitFor();
  assert.equal(await page.evaluate(() => document.activeElement.id), 'consultation-cancel-confirm');
  assert.equal((await call(gpTok, 'GET', `/consultations/${c.id}`)).status, 'submitted');
  await axe(page, 'consultation_cancel');
  await page.keyboard.press('Enter');
  await page.locator('#consultation-status', { hasText: 'annulée' }).waitFor();
  await page.locator('#consultation-done', { hasText: 'Demande annulée' }).waitFor();
  assert.equal(await page.locator('#consultation-cancel').count(), 0);
  const after = await call(gpTok, 'GET', `/consultations/${c.id}`);
  assert.equal(after.status, 'cancelled');
  assert.ok(after.cancelled_at);
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test('the GP edits the plan by keyboard: live warnings, a justification, a conflict explained and resolved', async () => {
  const gpTok = await token('gp@demo.relais.test');
  const p = await patient(gpTok, 'Morvan');
  const before = await call(gpTok, 'GET', `/patients/${p.id}/care-plan`);
  const para = before.analgesics.findIndex((l) => l.drug === 'paracetamol');
  const ibu = before.analgesics.findIndex((l) => l.drug === 'ibuprofen');
  assert.ok(para >= 0 && ibu >= 0, 'the demo plan has paracetamol and ibuprofen lines');

  const page = await newPage();
  await signIn(page, 'gp@demo.relais.test', `#/patients/${p.id}`);
  await page.locator('#plan-title').waitFor();
  // From the patient page to the editor, keyboard only.
  await tabTo(page, '#plan-edit-link');
  await page.keyboard.press('Enter');
  await page.locator('#editor-title').waitFor();
  await page.locator('#check-status', { hasText: 'Alertes à jour' }).waitFor();
  assert.match(await page.locator('#editor-base').textContent(), new RegExp(`version ${before.version}\\b`));
  // Dates are shown and typed day first, whatever the browser's locale.
  const review = page.locator('#pe-review_date');
  assert.equal(await review.inputValue(), fr(before.review_date));
  assert.equal(await review.getAttribute('placeholder'), 'jj/mm/aaaa');

  // A daily maximum above the usual one: a warning, live, that needs no justification.
  await tabTo(page, `#pe-analgesics-${ibu}-max_daily_mg`);
  await retype(page, '3200');
  await page.locator('#editor-warnings li.sev-warning[data-code="dose.above_usual_max"]').waitFor();
  assert.equal(await page.locator('#editor-warnings li.sev-blocking').count(), 0);
  assert.equal(await page.locator('.justification textarea').count(), 0);
  // Paracetamol up to 5 g a day: blocking, live; a justification is asked for.
  await tabTo(page, `#pe-analgesics-${para}-max_daily_mg`);
  await retype(page, '5000');
  await page.locator('#editor-warnings li.sev-blocking[data-code="paracetamol.daily_total"]').waitFor();
  const ack = page.locator('#ack-paracetamol-daily_total');
  await ack.waitFor();
  await axe(page, 'plan_editor');
  await shot(page, 'plan-editor');
  // A date that does not exist is named under its field.
  await tabTo(page, '#pe-review_date');
  await retype(page, '31/02/2027');
  await page.locator('#pe-review_date-error', { hasText: 'jj/mm/aaaa' }).waitFor();
  assert.equal(await review.getAttribute('aria-describedby'), 'pe-review_date-help pe-review_date-error');
  const reviewDate = isoPlusDays(30);
  await retype(page, fr(reviewDate));
  await page.locator('#pe-review_date-error').waitFor({ state: 'detached' });
  assert.equal(await review.inputValue(), fr(reviewDate));
  await tabTo(page, '#pe-change_summary');
  await page.keyboard.type('Douleur lombaire : paracétamol et ibuprofène au maximum pour une semaine.');
  // Every blocking warning shown needs its justification (the patient's context may add one).
  const blocking = await page.locator('#editor-warnings li.sev-blocking').evaluateAll((els) => els.map((e) => e.dataset.code));
  assert.ok(blocking.includes('paracetamol.daily_total'), blocking.join());
  const ackOf = (code) => `#ack-${code.replace(/[^a-z0-9_]+/gi, '-')}`;
  // No save without the justification: the field says so and has the focus.
  await tabTo(page, '#pe-save');
  await page.keyboard.press('Enter');
  await page.locator(`${ackOf(blocking[0])}-error`).waitFor();
  assert.equal(await page.evaluate(() => `#${document.activeElement.id}`), ackOf(blocking[0]));
  assert.equal((await call(gpTok, 'GET', `/patients/${p.id}/care-plan`)).version, before.version);
  const justification = 'Patient de 92 kg, bilan hépatique normal, réévaluation dans cinq jours.';
  for (const code of blocking) {
    await tabTo(page, ackOf(code));
    await page.keyboard.type(justification);
  }
  await tabTo(page, '#pe-save');
  await page.keyboard.press('Enter');
  await page.locator('#editor-notice', { hasText: `Version ${before.version + 1} enregistrée` }).waitFor();
  const saved = await call(gpTok, 'GET', `/patients/${p.id}/care-plan`);
  assert.equal(saved.version, before.version + 1);
  assert.equal(saved.analgesics[para].max_daily_mg, 5000);
  assert.equal(saved.analgesics[ibu].max_daily_mg, 3200);
  assert.equal(saved.review_date, reviewDate);
  assert.deepEqual(saved.acknowledged_warnings, blocking.map((code) => ({ code, justification })));
  // Whoever changes a line signs it (the pharmacist's page names them); a line left alone keeps its prescriber.
  const me = await call(gpTok, 'GET', '/me');
  assert.equal(saved.analgesics[para].prescriber_id, me.id);
  assert.equal(saved.analgesics[ibu].prescriber_id, me.id);
  before.analgesics.forEach((l, i) => {
    if (i !== para && i !== ibu) assert.equal(saved.analgesics[i].prescriber_id ?? null, l.prescriber_id ?? null);
  });
  assert.equal(saved.omt.prescriber_id ?? null, before.omt.prescriber_id ?? null);

  // Editing again while the plan is saved elsewhere (another device, through the API).
  await tabTo(page, `#pe-analgesics-${ibu}-dose_mg`);
  await retype(page, '600');
  await tabTo(page, '#pe-change_summary');
  await page.keyboard.type('Ibuprofène 600 mg par prise.');
  const res = await fetch(`${base}/api/v1/patients/${p.id}/care-plan`, { headers: { authorization: `Bearer ${gpTok}` } });
  const etag = res.headers.get('etag');
  const current = await res.json();
  const theirGoal = 'Marcher 45 minutes sans s’arrêter';
  const put = await fetch(`${base}/api/v1/patients/${p.id}/care-plan`, { method: 'PUT',
    headers: { authorization: `Bearer ${gpTok}`, 'content-type': 'application/json', 'if-match': etag },
    body: JSON.stringify({ status: current.status, omt: current.omt, analgesics: current.analgesics, pain_goal: theirGoal,
      non_drug_measures: current.non_drug_measures, review_date: current.review_date, change_summary: 'Objectif revu avec le patient',
      acknowledged_warnings: current.acknowledged_warnings }) });
  const putText = await put.text();
  assert.ok(put.ok, `PUT care-plan: ${put.status} ${putText}`);
  const theirs = JSON.parse(putText);
  assert.equal(theirs.version, before.version + 2);
  // The event stream tells the open editor at once.
  await page.locator('#editor-newer', { hasText: `version ${theirs.version}` }).waitFor();
  await tabTo(page, '#pe-save');
  await page.keyboard.press('Enter');
  // The 412 explained: who saved which version, and how it differs from what was typed.
  const conflict = page.locator('#editor-conflict');
  await conflict.waitFor();
  const explained = await conflict.textContent();
  assert.match(explained, new RegExp(`${theirs.author.full_name} a enregistré la version ${theirs.version} pendant que vous modifiiez`));
  const goalRow = page.locator('#conflict-diff tr', { hasText: 'Objectif antalgique' });
  assert.match(await goalRow.textContent(), /Marcher 45 minutes/);
  assert.match(await page.locator('#conflict-diff').textContent(), /600\smg/);
  // Nothing typed is lost.
  assert.equal(await page.locator(`#pe-analgesics-${ibu}-dose_mg`).inputValue(), '600');
  assert.equal(await page.locator('#pe-change_summary').inputValue(), 'Ibuprofène 600 mg par prise.');
  assert.equal((await call(gpTok, 'GET', `/patients/${p.id}/care-plan`)).version, theirs.version);
  await axe(page, 'plan_editor_conflict');
  await shot(page, 'plan-editor-conflict');
  // Reapplied on the new version: my change kept, theirs followed; saved.
  await tabTo(page, '#editor-reapply', { back: true });
  await page.keyboard.press('Enter');
  await page.locator('#editor-notice', { hasText: `version ${theirs.version}` }).waitFor();
  assert.equal(await page.locator('#pe-pain_goal').inputValue(), theirGoal);
  assert.equal(await page.locator(`#pe-analgesics-${ibu}-dose_mg`).inputValue(), '600');
  assert.match(await page.locator('#pe-save').textContent(), new RegExp(`version ${theirs.version}\\b`));
  await tabTo(page, '#pe-save');
  await page.keyboard.press('Enter');
  await page.locator('#editor-notice', { hasText: `Version ${theirs.version + 1} enregistrée` }).waitFor();
  const last = await call(gpTok, 'GET', `/patients/${p.id}/care-plan`);
  assert.equal(last.version, theirs.version + 1);
  assert.equal(last.analgesics[ibu].dose_mg, 600);
  assert.equal(last.analgesics[para].max_daily_mg, 5000);
  assert.equal(last.pain_goal, theirGoal);
  assert.equal(last.review_date, reviewDate);
  assert.equal(last.change_summary, 'Ibuprofène 600 mg par prise.');
  assert.deepEqual(last.acknowledged_warnings, blocking.map((code) => ({ code, justification })));
  assert.ok(last.warnings.some((w) => w.code === 'paracetamol.daily_total' && w.severity === 'blocking'));
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test('a first plan is written from the editor, doses with a decimal comma', async () => {
  const gpTok = await token('gp@demo.relais.test');
  const p = await call(gpTok, 'POST', '/patients', { family_name: 'Quéméner', given_names: 'Anne', birth_date: '1990-03-14', sex: 'female' });
  const page = await newPage();
  await signIn(page, 'gp@demo.relais.test', `#/patients/${p.id}/plan/edit`);
  await page.locator('#editor-base', { hasText: 'première version' }).waitFor();
  await tabTo(page, '#pe-omt-medication');
  for (let i = 0; i < 6 && (await page.locator('#pe-omt-medication').inputValue()) !== 'methadone'; i += 1) await page.keyboard.press('ArrowUp');
  await tabTo(page, '#pe-omt-daily_dose_mg');
  await page.keyboard.type('42,5');
  await tabTo(page, '#pe-omt-doses_per_day');
  await page.keyboard.type('1');
  await tabTo(page, '#pe-add-line');
  await page.keyboard.press('Enter');
  // The new line's drug list has the focus.
  await page.locator('#pe-analgesics-0-drug').waitFor();
  assert.equal(await page.evaluate(() => document.activeElement.id), 'pe-analgesics-0-drug');
  for (let i = 0; i < 60 && (await page.locator('#pe-analgesics-0-drug').inputValue()) !== 'paracetamol'; i += 1) await page.keyboard.press('ArrowDown');
  await tabTo(page, '#pe-analgesics-0-dose_mg');
  await page.keyboard.type('500');
  await tabTo(page, '#pe-analgesics-0-times_per_day');
  await page.keyboard.type('3');
  const end = isoPlusDays(10);
  await tabTo(page, '#pe-analgesics-0-end');
  await page.keyboard.type(fr(end));
  await page.locator('#check-status', { hasText: 'Alertes à jour' }).waitFor();
  await tabTo(page, '#pe-change_summary');
  await page.keyboard.type('Première prescription : méthadone et paracétamol.');
  await tabTo(page, '#pe-save');
  await page.keyboard.press('Enter');
  await page.locator('#editor-notice', { hasText: 'Version 1 enregistrée' }).waitFor();
  const plan = await call(gpTok, 'GET', `/patients/${p.id}/care-plan`);
  assert.equal(plan.version, 1);
  assert.equal(plan.omt.medication, 'methadone');
  assert.equal(plan.omt.daily_dose_mg, 42.5);
  assert.equal(plan.omt.doses_per_day, 1);
  assert.equal(plan.analgesics.length, 1);
  assert.equal(plan.analgesics[0].drug, 'paracetamol');
  assert.equal(plan.analgesics[0].dose_mg, 500);
  assert.equal(plan.analgesics[0].times_per_day, 3);
  assert.equal(plan.analgesics[0].end, end);
  assert.equal(plan.analgesics[0].route, 'oral');
  assert.equal(await page.locator('#pe-omt-daily_dose_mg').inputValue(), '42,5');
  assert.deepEqual(page.errors, []);
  await page.context().close();
});
