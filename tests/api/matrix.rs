//! The authorisation matrix: every registered route, every kind of caller.
//! A route missing from the table fails the test.

use std::collections::BTreeSet;

use actix_web::http::Method;
use diesel::prelude::*;
use relais::api::ROUTES;
use relais::db::schema::{audit_events, consents};
use serde_json::{Value, json};

use crate::fixtures::{Network, add_member, create_patient, random_ins, set_consent};
use crate::helpers::{Session, TestApp, spawn_app, spawn_app_with};

/// Who calls, and about which patient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ctx {
    Anon,
    Admin,
    /// The referent GP.
    Referent,
    /// A hospital doctor on the team, other organisation, consent granted.
    TeamPrescriber,
    /// A pharmacist on the team, other organisation, consent granted.
    TeamOther,
    /// The same pharmacist on a patient whose consent was withdrawn.
    NoConsent,
    /// A nurse with an emergency grant.
    Emergency,
    /// A pain specialist with no basis.
    NoBasis,
}

const CTXS: [Ctx; 8] = [
    Ctx::Anon,
    Ctx::Admin,
    Ctx::Referent,
    Ctx::TeamPrescriber,
    Ctx::TeamOther,
    Ctx::NoConsent,
    Ctx::Emergency,
    Ctx::NoBasis,
];

/// One patient's setting, made fresh wherever a request could change it.
struct Scene {
    patient: String,
    ins: String,
    access_request: String,
    referent_notification: String,
    /// From the hospital doctor to the referent GP, sent.
    handover: String,
    /// From the GP to the pain centre, no patient: submitted.
    consultation: String,
    /// The same, answered.
    answered_consultation: String,
    /// From the GP to the addiction centre about the patient, answered with a plan.
    proposal_consultation: String,
    /// The patient's thread, with one message from the referent.
    thread: String,
    message: String,
    /// Raised by the pharmacist on version 1's first line: addressed to the referent.
    intervention: String,
    /// The patient's consent decision (granted, or withdrawn in the no-consent scene).
    consent: String,
    /// A pain score by the referent (its FHIR id: `<id>.pain`).
    observation: String,
    /// A row of the patient's audit trail.
    audit_event: String,
}

/// The id of the newest consent decision about `patient`.
async fn consent_of(app: &TestApp, patient: &str) -> String {
    let patient = patient.to_owned();
    app.state
        .db
        .read(move |conn| {
            Ok(consents::table
                .filter(consents::patient_id.eq(patient))
                .order(consents::recorded_at.desc())
                .select(consents::id)
                .first::<String>(conn)?)
        })
        .await
        .unwrap()
}

/// The id of one row of `patient`'s audit trail.
async fn audit_row_of(app: &TestApp, patient: &str) -> String {
    let patient = patient.to_owned();
    app.state
        .db
        .read(move |conn| {
            Ok(audit_events::table
                .filter(audit_events::patient_id.eq(patient))
                .order(audit_events::seq)
                .select(audit_events::id)
                .first::<String>(conn)?)
        })
        .await
        .unwrap()
}

/// A pain score recorded by `by` on `patient`: the observation's id.
async fn observe(app: &TestApp, by: &Session, patient: &str) -> String {
    let body = app
        .post(
            &format!("/api/v1/patients/{patient}/observations"),
            &by.token,
            json!({"pain_score": 4}),
        )
        .await
        .expect(201)
        .body;
    body["id"].as_str().unwrap().to_owned()
}

/// The patient's first clinical context, by the referent.
async fn put_clinical_context(app: &TestApp, net: &Network, patient: &str) {
    app.request(
        Method::PUT,
        &format!("/api/v1/patients/{patient}/clinical-context"),
        Some(&net.gp.token),
        Some(&clinical_context_body()),
    )
    .await
    .expect(201);
}

fn intervention_body(version: i64, line: i64) -> Value {
    json!({"plan_version": version, "line": line, "problem": "dose_too_high", "proposed_action": "adjust_dose"})
}

fn dispensation_body() -> Value {
    json!({"line": 0, "drug": "paracetamol", "dose_mg": 4000, "days_supply": 7})
}

fn clinical_context_body() -> Value {
    json!({"hepatic_impairment": "none", "breastfeeding": false, "allergies": []})
}

fn id_of(body: &Value) -> String {
    body["id"].as_str().unwrap().to_owned()
}

async fn scene(app: &TestApp, net: &Network, withdraw: bool) -> Scene {
    let ins = random_ins();
    let patient = create_patient(app, &net.gp, Some(&ins)).await;
    set_consent(app, &net.gp, &patient, "granted").await;
    add_member(app, &net.gp, &patient, &net.hospital).await;
    add_member(app, &net.gp, &patient, &net.pharmacist).await;
    let plan = crate::fixtures::design_plan(None);
    let put = format!("/api/v1/patients/{patient}/care-plan");
    app.request(Method::PUT, &put, Some(&net.gp.token), Some(&plan))
        .await
        .expect(201);
    put_clinical_context(app, net, &patient).await;
    let intervention = app
        .post(
            &format!("/api/v1/patients/{patient}/interventions"),
            &net.pharmacist.token,
            intervention_body(1, 0),
        )
        .await
        .expect(201)
        .body;
    let intervention = id_of(&intervention);
    let mut proposed = plan.clone();
    proposed.as_object_mut().unwrap().remove("change_summary");
    let handover = app
        .post(
            &format!("/api/v1/patients/{patient}/handovers"),
            &net.hospital.token,
            json!({"to_user_id": net.gp.id, "summary": "Sortie", "discharge_date": "2026-11-24", "proposed_plan": proposed}),
        )
        .await
        .expect(201);
    let consult = |centre: &str, patient: Option<&str>| json!({"centre_id": centre, "patient_id": patient, "priority": "urgent", "question": "Quel palier ?"});
    let consultation = app
        .post(
            "/api/v1/consultations",
            &net.gp.token,
            consult(&net.pain_centre, None),
        )
        .await
        .expect(201);
    let answered = app
        .post(
            "/api/v1/consultations",
            &net.gp.token,
            consult(&net.pain_centre, None),
        )
        .await
        .expect(201);
    let answered = id_of(&answered.body);
    app.post(
        &format!("/api/v1/consultations/{answered}/answer"),
        &net.specialist.token,
        json!({"answer": "Voir plan"}),
    )
    .await
    .expect(200);
    let with_plan = app
        .post(
            "/api/v1/consultations",
            &net.gp.token,
            consult(&net.addiction_centre, Some(&patient)),
        )
        .await
        .expect(201);
    let with_plan = id_of(&with_plan.body);
    app.post(
        &format!("/api/v1/consultations/{with_plan}/answer"),
        &net.addiction.token,
        json!({"answer": "Voir plan", "proposed_plan": proposed}),
    )
    .await
    .expect(200);
    if withdraw {
        set_consent(app, &net.gp, &patient, "withdrawn").await;
    } else {
        app.post(
            &format!("/api/v1/patients/{patient}/emergency-access"),
            &net.nurse.token,
            json!({"reason": "Appel du centre 15 la nuit"}),
        )
        .await
        .expect(201);
    }
    let request = app
        .post(
            &format!("/api/v1/patients/{patient}/access-requests"),
            &net.specialist.token,
            json!({"reason": "Avis de la consultation douleur"}),
        )
        .await
        .expect(201);
    let notes = app
        .get("/api/v1/notifications", &net.gp.token)
        .await
        .expect(200);
    let thread = app
        .get(&format!("/api/v1/patients/{patient}"), &net.gp.token)
        .await
        .expect(200)
        .body["thread_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let message = app
        .post(
            &format!("/api/v1/threads/{thread}/messages"),
            &net.gp.token,
            json!({"body": "Point sur le traitement demain ?"}),
        )
        .await
        .expect(201)
        .body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let observation = observe(app, &net.gp, &patient).await;
    Scene {
        consent: consent_of(app, &patient).await,
        audit_event: audit_row_of(app, &patient).await,
        observation,
        patient,
        ins,
        access_request: id_of(&request.body),
        referent_notification: notes.body["items"][0]["id"].as_str().unwrap().to_owned(),
        handover: id_of(&handover.body),
        consultation: id_of(&consultation.body),
        answered_consultation: answered,
        proposal_consultation: with_plan,
        thread,
        message,
        intervention,
    }
}

fn session(net: &Network, ctx: Ctx) -> Option<&Session> {
    match ctx {
        Ctx::Anon => None,
        Ctx::Admin => Some(&net.admin),
        Ctx::Referent => Some(&net.gp),
        Ctx::TeamPrescriber => Some(&net.hospital),
        Ctx::TeamOther | Ctx::NoConsent => Some(&net.pharmacist),
        Ctx::Emergency => Some(&net.nurse),
        Ctx::NoBasis => Some(&net.specialist),
    }
}

struct Case {
    method: &'static str,
    path: &'static str,
    /// Expected status for each of CTXS, in order.
    expect: [u16; 8],
    /// Patient-scoped through the access extractor: denials are audited.
    scoped: bool,
}

const fn case(method: &'static str, path: &'static str, expect: [u16; 8], scoped: bool) -> Case {
    Case {
        method,
        path,
        expect,
        scoped,
    }
}

#[rustfmt::skip]
const TABLE: &[Case] = &[
    //                                                              Anon Admin Ref  TeamP TeamO NoCons Emerg NoBasis
    case("get", "/api/v1/health/live",                              [200, 200, 200, 200, 200, 200, 200, 200], false),
    case("get", "/api/v1/health/ready",                             [200, 200, 200, 200, 200, 200, 200, 200], false),
    case("get", "/api/v1/openapi.json",                             [200, 200, 200, 200, 200, 200, 200, 200], false),
    case("post", "/api/v1/auth/login",                              [401, 401, 401, 401, 401, 401, 401, 401], false),
    case("post", "/api/v1/auth/refresh",                            [401, 401, 401, 401, 401, 401, 401, 401], false),
    case("post", "/api/v1/auth/logout",                             [204, 204, 204, 204, 204, 204, 204, 204], false),
    case("post", "/api/v1/auth/invitations/accept",                 [404, 404, 404, 404, 404, 404, 404, 404], false),
    // No provider is configured here: the OIDC flow itself is in tests/api/oidc.rs.
    case("get", "/api/v1/auth/oidc/{provider}/start",               [404, 404, 404, 404, 404, 404, 404, 404], false),
    case("get", "/api/v1/auth/oidc/{provider}/callback",            [404, 404, 404, 404, 404, 404, 404, 404], false),
    case("post", "/api/v1/auth/oidc/token",                         [401, 401, 401, 401, 401, 401, 401, 401], false),
    // Public: the sign-in page shows the providers' buttons before anyone signs in.
    case("get", "/api/v1/auth/oidc/providers",                      [200, 200, 200, 200, 200, 200, 200, 200], false),
    case("get", "/api/v1/me",                                       [401, 200, 200, 200, 200, 200, 200, 200], false),
    case("patch", "/api/v1/me",                                     [401, 200, 200, 200, 200, 200, 200, 200], false),
    case("post", "/api/v1/me/password",                             [401, 422, 422, 422, 422, 422, 422, 422], false),
    // Begun (not confirmed), then a wrong code; nothing enrolled to remove.
    case("post", "/api/v1/me/mfa/totp",                             [401, 201, 201, 201, 201, 201, 201, 201], false),
    case("post", "/api/v1/me/mfa/totp/confirm",                     [401, 422, 422, 422, 422, 422, 422, 422], false),
    case("delete", "/api/v1/me/mfa/totp",                           [401, 404, 404, 404, 404, 404, 404, 404], false),
    case("post", "/api/v1/organizations",                           [401, 201, 403, 403, 403, 403, 403, 403], false),
    case("get", "/api/v1/organizations",                            [401, 200, 200, 200, 200, 200, 200, 200], false),
    case("post", "/api/v1/users",                                   [401, 201, 403, 403, 403, 403, 403, 403], false),
    case("get", "/api/v1/users",                                    [401, 200, 200, 200, 200, 200, 200, 200], false),
    case("patch", "/api/v1/users/{id}",                             [401, 200, 403, 403, 403, 403, 403, 403], false),
    case("get", "/api/v1/email-outbox",                             [401, 200, 403, 403, 403, 403, 403, 403], false),
    case("post", "/api/v1/patients",                                [401, 403, 201, 201, 403, 403, 403, 201], false),
    case("get", "/api/v1/patients",                                 [401, 200, 200, 200, 200, 200, 200, 200], false),
    case("get", "/api/v1/patients/lookup",                          [401, 403, 200, 200, 200, 200, 200, 200], false),
    case("get", "/api/v1/patients/{id}",                            [401, 404, 200, 200, 200, 404, 200, 404], true),
    case("patch", "/api/v1/patients/{id}",                          [401, 404, 200, 200, 403, 404, 403, 404], true),
    case("get", "/api/v1/patients/{id}/consent",                    [401, 404, 200, 200, 200, 404, 200, 404], true),
    case("put", "/api/v1/patients/{id}/consent",                    [401, 404, 200, 200, 403, 404, 403, 404], true),
    case("get", "/api/v1/patients/{id}/care-team",                  [401, 404, 200, 200, 200, 404, 200, 404], true),
    case("post", "/api/v1/patients/{id}/care-team",                 [401, 404, 201, 201, 403, 404, 403, 404], true),
    case("delete", "/api/v1/patients/{id}/care-team/{user_id}",     [401, 404, 204, 204, 403, 404, 403, 404], true),
    case("post", "/api/v1/patients/{id}/access-requests",           [401, 403, 409, 409, 409, 201, 201, 409], false),
    case("get", "/api/v1/patients/{id}/access-requests",            [401, 404, 200, 200, 403, 404, 403, 404], true),
    case("post", "/api/v1/access-requests/{id}/approve",            [401, 404, 200, 200, 403, 404, 403, 404], true),
    case("post", "/api/v1/access-requests/{id}/deny",               [401, 404, 200, 200, 403, 404, 403, 404], true),
    case("post", "/api/v1/patients/{id}/emergency-access",          [401, 403, 201, 201, 201, 201, 201, 201], false),
    case("get", "/api/v1/patients/{id}/audit-events",               [401, 200, 200, 200, 403, 404, 403, 404], true),
    case("get", "/api/v1/audit-events",                             [401, 200, 403, 403, 403, 403, 403, 403], false),
    case("get", "/api/v1/notifications",                            [401, 200, 200, 200, 200, 200, 200, 200], false),
    case("post", "/api/v1/notifications/{id}/read",                 [401, 404, 204, 404, 404, 404, 404, 404], false),
    case("get", "/api/v1/patients/{id}/care-plan",                  [401, 404, 200, 200, 200, 404, 200, 404], true),
    case("put", "/api/v1/patients/{id}/care-plan",                  [401, 404, 200, 200, 403, 404, 403, 404], true),
    case("get", "/api/v1/patients/{id}/care-plan/versions",         [401, 404, 200, 200, 200, 404, 200, 404], true),
    case("get", "/api/v1/patients/{id}/care-plan/versions/{n}",     [401, 404, 200, 200, 200, 404, 200, 404], true),
    case("get", "/api/v1/patients/{id}/analgesic-plan",             [401, 404, 200, 200, 200, 404, 200, 404], true),
    case("get", "/api/v1/patients/{id}/clinical-context",           [401, 404, 200, 200, 200, 404, 200, 404], true),
    case("put", "/api/v1/patients/{id}/clinical-context",           [401, 404, 200, 200, 403, 404, 403, 404], true),
    case("post", "/api/v1/patients/{id}/interventions",             [401, 404, 403, 403, 201, 404, 403, 404], true),
    case("get", "/api/v1/patients/{id}/interventions",              [401, 404, 200, 200, 200, 404, 200, 404], true),
    case("post", "/api/v1/interventions/{id}/accept",               [401, 404, 200, 404, 404, 404, 404, 404], true),
    case("post", "/api/v1/interventions/{id}/refuse",               [401, 404, 200, 404, 404, 404, 404, 404], true),
    case("get", "/api/v1/organizations/{id}/intervention-metrics",  [401, 200, 403, 403, 200, 200, 403, 403], false),
    case("post", "/api/v1/patients/{id}/dispensations",             [401, 404, 403, 403, 201, 404, 403, 404], true),
    case("get", "/api/v1/patients/{id}/dispensations",              [401, 404, 200, 200, 200, 404, 200, 404], true),
    case("post", "/api/v1/care-plans/check",                        [401, 403, 200, 200, 200, 200, 200, 200], false),
    case("get", "/api/v1/drugs",                                    [401, 200, 200, 200, 200, 200, 200, 200], false),
    case("post", "/api/v1/patients/{id}/observations",              [401, 404, 201, 201, 201, 404, 201, 404], true),
    case("get", "/api/v1/patients/{id}/observations",               [401, 404, 200, 200, 200, 404, 200, 404], true),
    case("post", "/api/v1/patients/{id}/handovers",                 [401, 404, 403, 201, 403, 404, 403, 404], true),
    case("get", "/api/v1/handovers",                                [401, 200, 200, 200, 200, 200, 200, 200], false),
    case("get", "/api/v1/handovers/{id}",                           [401, 404, 200, 200, 404, 404, 404, 404], false),
    case("post", "/api/v1/handovers/{id}/acknowledge",              [401, 404, 200, 403, 404, 404, 404, 404], false),
    case("post", "/api/v1/handovers/{id}/reconcile",                [401, 404, 200, 403, 404, 404, 404, 404], false),
    case("post", "/api/v1/consultations",                           [401, 403, 201, 201, 201, 201, 201, 422], false),
    case("get", "/api/v1/consultations",                            [401, 200, 200, 200, 200, 200, 200, 200], false),
    case("get", "/api/v1/consultations/{id}",                       [401, 404, 200, 404, 404, 404, 404, 200], false),
    case("post", "/api/v1/consultations/{id}/accept",               [401, 404, 403, 404, 404, 404, 404, 200], false),
    case("post", "/api/v1/consultations/{id}/answer",               [401, 404, 403, 404, 404, 404, 404, 200], false),
    case("post", "/api/v1/consultations/{id}/decline",              [401, 404, 403, 404, 404, 404, 404, 200], false),
    case("post", "/api/v1/consultations/{id}/close",                [401, 404, 200, 404, 404, 404, 404, 403], false),
    case("post", "/api/v1/consultations/{id}/cancel",               [401, 404, 200, 404, 404, 404, 404, 403], false),
    case("post", "/api/v1/consultations/{id}/apply-proposal",       [401, 404, 200, 404, 404, 404, 404, 404], false),
    case("get", "/api/v1/organizations/{id}/consultation-metrics",  [401, 200, 403, 403, 403, 403, 403, 200], false),
    case("get", "/api/v1/threads",                                       [401, 200, 200, 200, 200, 200, 200, 200], false),
    case("get", "/api/v1/threads/{id}/messages",                         [401, 404, 200, 200, 200, 404, 200, 404], true),
    case("post", "/api/v1/threads/{id}/messages",                        [401, 404, 201, 201, 201, 404, 201, 404], true),
    case("post", "/api/v1/threads/{id}/read",                            [401, 404, 200, 200, 200, 404, 200, 404], true),
    case("get", "/api/v1/inbox",                                         [401, 200, 200, 200, 200, 200, 200, 200], false),
    // FHIR: reads by id go through the same door (404 without a basis);
    // searches answer an empty set without one (scoped: false, their
    // audit rows are checked in fhir.rs and below for ended bases).
    case("get", "/fhir/r4/metadata",                                     [200, 200, 200, 200, 200, 200, 200, 200], false),
    case("get", "/fhir/r4/Patient",                                      [401, 200, 200, 200, 200, 200, 200, 200], false),
    case("get", "/fhir/r4/Patient/{id}",                                 [401, 404, 200, 200, 200, 404, 200, 404], true),
    case("get", "/fhir/r4/Patient/{id}/$everything",                     [401, 404, 200, 200, 200, 404, 200, 404], true),
    case("get", "/fhir/r4/Practitioner/{id}",                            [401, 200, 200, 200, 200, 200, 200, 200], false),
    case("get", "/fhir/r4/PractitionerRole/{id}",                        [401, 200, 200, 200, 200, 200, 200, 200], false),
    case("get", "/fhir/r4/Organization/{id}",                            [401, 200, 200, 200, 200, 200, 200, 200], false),
    case("get", "/fhir/r4/CareTeam",                                     [401, 200, 200, 200, 200, 200, 200, 200], false),
    case("get", "/fhir/r4/CareTeam/{id}",                                [401, 404, 200, 200, 200, 404, 200, 404], true),
    case("get", "/fhir/r4/Consent/{id}",                                 [401, 404, 200, 200, 200, 404, 200, 404], true),
    case("get", "/fhir/r4/Observation/{id}",                             [401, 404, 200, 200, 200, 404, 200, 404], true),
    case("get", "/fhir/r4/Communication/{id}",                           [401, 404, 200, 200, 200, 404, 200, 404], true),
    case("get", "/fhir/r4/AuditEvent/{id}",                              [401, 200, 200, 200, 403, 404, 403, 404], true),
    case("get", "/fhir/r4/ServiceRequest",                               [401, 200, 200, 200, 200, 200, 200, 200], false),
    case("get", "/fhir/r4/Task",                                         [401, 200, 200, 200, 200, 200, 200, 200], false),
    // The consultation without a patient, as `GET /consultations/{id}`.
    case("get", "/fhir/r4/ServiceRequest/{id}",                          [401, 404, 200, 404, 404, 404, 404, 200], false),
    case("get", "/fhir/r4/Task/{id}",                                    [401, 404, 200, 404, 404, 404, 404, 200], false),
    case("get", "/fhir/r4/CarePlan",                                     [401, 200, 200, 200, 200, 200, 200, 200], false),
    case("get", "/fhir/r4/CarePlan/{id}",                                [401, 404, 200, 200, 200, 404, 200, 404], true),
    case("get", "/fhir/r4/MedicationRequest",                            [401, 200, 200, 200, 200, 200, 200, 200], false),
    case("get", "/fhir/r4/MedicationRequest/{id}",                       [401, 404, 200, 200, 200, 404, 200, 404], true),
    case("get", "/fhir/r4/Consent",                                      [401, 200, 200, 200, 200, 200, 200, 200], false),
    case("get", "/fhir/r4/Observation",                                  [401, 200, 200, 200, 200, 200, 200, 200], false),
    case("get", "/fhir/r4/Communication",                                [401, 200, 200, 200, 200, 200, 200, 200], false),
    case("get", "/fhir/r4/AuditEvent",                                   [401, 200, 200, 200, 403, 200, 403, 200], false),
    case("post", "/fhir/r4/Bundle",                                      [401, 403, 403, 201, 403, 403, 403, 403], false),
    case("get", "/api/v1/events",                                        [401, 200, 200, 200, 200, 200, 200, 200], false),
    case("post", "/api/v1/events/ticket",                                [401, 201, 201, 201, 201, 201, 201, 201], false),
];

/// The concrete path and body of a case for one caller and scene.
fn request(case: &Case, net: &Network, scene: &Scene) -> (String, Option<Value>) {
    let p = &scene.patient;
    let path = match case.path {
        "/api/v1/users/{id}" => format!("/api/v1/users/{}", net.specialist.id),
        "/api/v1/auth/oidc/{provider}/start" => {
            "/api/v1/auth/oidc/none/start?redirect_uri=https%3A%2F%2Fapp.example%2Fcb".into()
        }
        "/api/v1/auth/oidc/{provider}/callback" => {
            "/api/v1/auth/oidc/none/callback?code=c&state=s".into()
        }
        "/api/v1/patients/lookup" => format!("/api/v1/patients/lookup?ins={}", scene.ins),
        "/api/v1/patients/{id}/care-team/{user_id}" => {
            format!("/api/v1/patients/{p}/care-team/{}", net.hospital.id)
        }
        "/api/v1/access-requests/{id}/approve" => {
            format!("/api/v1/access-requests/{}/approve", scene.access_request)
        }
        "/api/v1/access-requests/{id}/deny" => {
            format!("/api/v1/access-requests/{}/deny", scene.access_request)
        }
        "/api/v1/notifications/{id}/read" => {
            format!("/api/v1/notifications/{}/read", scene.referent_notification)
        }
        "/api/v1/patients/{id}/care-plan/versions/{n}" => {
            format!("/api/v1/patients/{p}/care-plan/versions/1")
        }
        "/api/v1/handovers/{id}" => format!("/api/v1/handovers/{}", scene.handover),
        "/api/v1/handovers/{id}/acknowledge" | "/api/v1/handovers/{id}/reconcile" => {
            case.path.replace("{id}", &scene.handover)
        }
        "/api/v1/consultations/{id}/close" => {
            case.path.replace("{id}", &scene.answered_consultation)
        }
        "/api/v1/consultations/{id}/apply-proposal" => {
            case.path.replace("{id}", &scene.proposal_consultation)
        }
        path if path.starts_with("/api/v1/consultations/{id}") => {
            path.replace("{id}", &scene.consultation)
        }
        "/api/v1/organizations/{id}/consultation-metrics" => {
            case.path.replace("{id}", &net.pain_centre)
        }
        "/api/v1/organizations/{id}/intervention-metrics" => {
            case.path.replace("{id}", &net.pharmacy)
        }
        "/api/v1/interventions/{id}/accept" | "/api/v1/interventions/{id}/refuse" => {
            case.path.replace("{id}", &scene.intervention)
        }
        "/api/v1/threads/{id}/messages" | "/api/v1/threads/{id}/read" => {
            case.path.replace("{id}", &scene.thread)
        }
        "/fhir/r4/Patient" => format!(
            "/fhir/r4/Patient?identifier=urn:oid:1.2.250.1.213.1.4.8%7C{}",
            scene.ins
        ),
        "/fhir/r4/Practitioner/{id}" | "/fhir/r4/PractitionerRole/{id}" => {
            case.path.replace("{id}", &net.gp.id)
        }
        "/fhir/r4/Organization/{id}" => case.path.replace("{id}", &net.gp_practice),
        "/fhir/r4/MedicationRequest/{id}" => format!("/fhir/r4/MedicationRequest/{p}.1.omt"),
        "/fhir/r4/Consent/{id}" => case.path.replace("{id}", &scene.consent),
        "/fhir/r4/Observation/{id}" => format!("/fhir/r4/Observation/{}.pain", scene.observation),
        "/fhir/r4/Communication/{id}" => case.path.replace("{id}", &scene.message),
        "/fhir/r4/AuditEvent/{id}" => case.path.replace("{id}", &scene.audit_event),
        "/fhir/r4/ServiceRequest/{id}" | "/fhir/r4/Task/{id}" => {
            case.path.replace("{id}", &scene.consultation)
        }
        path if FHIR_PATIENT_SEARCHES.contains(&path) => format!("{path}?patient=Patient/{p}"),
        other => other.replace("{id}", p),
    };
    let unique = uuid::Uuid::now_v7().simple().to_string();
    let body = match (case.method, case.path) {
        ("post", "/api/v1/auth/login") => {
            json!({"email": format!("{unique}@relais.test"), "password": "not a password at all"})
        }
        ("post", "/api/v1/auth/refresh" | "/api/v1/auth/logout") => {
            json!({"refresh_token": "unknown"})
        }
        ("post", "/api/v1/auth/invitations/accept") => {
            json!({"token": "unknown", "password": "a long enough password"})
        }
        ("patch", "/api/v1/me") => json!({"phone": "02 99 00 00 00"}),
        ("post", "/api/v1/auth/oidc/token") => json!({"code": "unknown"}),
        // Not a code a 30 s window gives for this secret but once in a million.
        ("post", "/api/v1/me/mfa/totp/confirm") | ("delete", "/api/v1/me/mfa/totp") => {
            json!({"code": "000000"})
        }
        ("post", "/api/v1/me/password") => {
            json!({"current_password": "not my password at all", "new_password": "a new long password"})
        }
        ("post", "/api/v1/organizations") => json!({"name": "Pharmacie neuve", "kind": "pharmacy"}),
        ("post", "/api/v1/users") => {
            json!({"email": format!("{unique}@relais.test"), "full_name": "Dr New", "role": "gp", "organization_id": net.gp_practice})
        }
        ("patch", "/api/v1/users/{id}") => json!({"full_name": "Dr Renamed"}),
        ("post", "/api/v1/patients") => {
            json!({"family_name": "Nouveau", "given_names": "Patient", "birth_date": "1970-01-01", "sex": "male"})
        }
        ("patch", "/api/v1/patients/{id}") => json!({"phone": "02 99 11 22 33"}),
        ("put", "/api/v1/patients/{id}/consent") => json!({"status": "granted"}),
        ("post", "/api/v1/patients/{id}/care-team") => json!({"user_id": net.gp2.id}),
        (
            "post",
            "/api/v1/patients/{id}/access-requests" | "/api/v1/patients/{id}/emergency-access",
        ) => {
            json!({"reason": "Douleur aiguë, besoin du plan en cours"})
        }
        ("put", "/api/v1/patients/{id}/care-plan") | ("post", "/api/v1/care-plans/check") => {
            crate::fixtures::design_plan(None)
        }
        ("post", "/api/v1/patients/{id}/observations") => json!({"pain_score": 4}),
        ("put", "/api/v1/patients/{id}/clinical-context") => clinical_context_body(),
        ("post", "/api/v1/patients/{id}/interventions") => intervention_body(1, 0),
        ("post", "/api/v1/interventions/{id}/refuse") => json!({"comment": "Dose stable"}),
        ("post", "/api/v1/patients/{id}/dispensations") => dispensation_body(),
        ("post", "/api/v1/patients/{id}/handovers") => {
            let mut proposed = crate::fixtures::design_plan(None);
            proposed.as_object_mut().unwrap().remove("change_summary");
            json!({"to_user_id": net.gp.id, "summary": "Sortie", "discharge_date": "2026-11-24", "proposed_plan": proposed})
        }
        ("post", "/api/v1/handovers/{id}/reconcile") => json!({"decision": "accept"}),
        ("post", "/api/v1/consultations") => {
            json!({"centre_id": net.pain_centre, "priority": "routine", "question": "Quel palier ?"})
        }
        ("post", "/api/v1/consultations/{id}/answer") => json!({"answer": "Paracétamol et glace"}),
        ("post", "/api/v1/consultations/{id}/decline") => json!({"reason": "Hors champ"}),
        ("post", "/api/v1/consultations/{id}/close") => {
            json!({"outcome": "resolved", "referral_avoided": true})
        }
        ("post", "/api/v1/threads/{id}/messages") => {
            json!({"body": "Je passe le voir à 17 h."})
        }
        ("post", "/api/v1/threads/{id}/read") => json!({"up_to": scene.message}),
        ("post", "/fhir/r4/Bundle") => crate::fixtures::discharge_bundle(&scene.ins),
        ("post", _) => json!({}),
        _ => return (path, None),
    };
    (path, Some(body))
}

async fn count_audit(app: &TestApp, action: String, outcome: &'static str) -> i64 {
    app.state
        .db
        .read(move |conn| {
            Ok(audit_events::table
                .filter(audit_events::action.eq(action))
                .filter(audit_events::outcome.eq(outcome))
                .count()
                .get_result::<i64>(conn)?)
        })
        .await
        .unwrap()
}

#[actix_web::test]
async fn every_route_has_a_row_in_the_matrix() {
    let registered: BTreeSet<(&str, &str)> = ROUTES.iter().copied().collect();
    let listed: BTreeSet<(&str, &str)> = TABLE.iter().map(|c| (c.method, c.path)).collect();
    let missing: Vec<_> = registered.difference(&listed).collect();
    let stale: Vec<_> = listed.difference(&registered).collect();
    assert!(
        missing.is_empty(),
        "routes missing from the authorisation matrix: {missing:?}"
    );
    assert!(
        stale.is_empty(),
        "matrix rows for routes that do not exist: {stale:?}"
    );
}

#[actix_web::test]
async fn authorisation_matrix() {
    // The whole table takes minutes on a loaded machine: longer than the
    // default access-token lifetime.
    let app = spawn_app_with(|s| s.auth.access_token_ttl_s = 7200).await;
    let net = Network::new(&app).await;
    let mut failures = Vec::new();
    for case in TABLE {
        let method = Method::from_bytes(case.method.to_uppercase().as_bytes()).unwrap();
        let action = format!(
            "{} {}",
            case.method.to_uppercase(),
            case.path.trim_start_matches("/api/v1")
        );
        // Reads share a scene; every call that could change one gets its own.
        let shared = if case.method == "get" {
            Some((
                scene(&app, &net, false).await,
                scene(&app, &net, true).await,
            ))
        } else {
            None
        };
        for (ctx, expected) in CTXS.iter().zip(case.expect) {
            let own;
            let scene = match &shared {
                Some((normal, withdrawn)) => {
                    if *ctx == Ctx::NoConsent {
                        withdrawn
                    } else {
                        normal
                    }
                }
                None => {
                    own = scene(&app, &net, *ctx == Ctx::NoConsent).await;
                    &own
                }
            };
            let (path, body) = request(case, &net, scene);
            let token = session(&net, *ctx).map(|s| s.token.as_str());
            let (allowed_before, denied_before) = if case.scoped {
                (
                    count_audit(&app, action.clone(), "allowed").await,
                    count_audit(&app, action.clone(), "denied").await,
                )
            } else {
                (0, 0)
            };
            // Writes of the care plan and the clinical context are based on the scene's version 1.
            let headers = [("if-match", "\"1\"".to_owned())];
            let resp = if case.path == "/api/v1/events" {
                // A stream never ends: its head is the answer.
                let stream = app.open_events(&path, token, &[]).await;
                crate::helpers::Resp {
                    status: stream.status,
                    headers: stream.headers.clone(),
                    body: Value::Null,
                }
            } else {
                app.request_with(method.clone(), &path, token, body.as_ref(), &headers)
                    .await
            };
            if resp.status != expected {
                failures.push(format!(
                    "{} {} as {ctx:?}: expected {expected}, got {} {}",
                    case.method, case.path, resp.status, resp.body
                ));
                continue;
            }
            let error_type = if case.path.starts_with("/fhir/") {
                "application/fhir+json"
            } else {
                "application/problem+json"
            };
            if resp.status >= 400 && resp.content_type() != error_type {
                failures.push(format!(
                    "{} {} as {ctx:?}: {} without {error_type}",
                    case.method, case.path, resp.status
                ));
            }
            if case.scoped && ctx != &Ctx::Anon {
                let (outcome, before) = if resp.status < 300 {
                    ("allowed", allowed_before)
                } else {
                    ("denied", denied_before)
                };
                let after = count_audit(&app, action.clone(), outcome).await;
                if after <= before {
                    failures.push(format!(
                        "{} {} as {ctx:?}: no {outcome} audit row",
                        case.method, case.path
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatch(es):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// A caller whose basis on the patient has ended, each in a scene of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// The hospital doctor (other organisation, on the team, sender of the
    /// handover) after the patient withdrew consent.
    ConsentWithdrawn,
    /// The same hospital doctor, removed from the team (consent granted).
    RemovedFromTeam,
    /// The nurse whose emergency grant expired.
    EmergencyExpired,
    /// The pain specialist whose consultation about the patient was closed.
    ConsultationClosed,
}

const ENDED: [Ended; 4] = [
    Ended::ConsentWithdrawn,
    Ended::RemovedFromTeam,
    Ended::EmergencyExpired,
    Ended::ConsultationClosed,
];

/// What the caller could reach before their basis ended.
struct EndedScene {
    patient: String,
    handover: String,
    consultation: String,
    /// The thread the caller wrote in: the handover's (hospital doctor), the
    /// consultation's (specialist), the patient's (nurse).
    thread: String,
    message: String,
    access_request: String,
    /// One of the caller's own notifications about the patient.
    notification: String,
    /// Raised on version 2's morphine line, prescribed by the hospital doctor.
    intervention: String,
    consent: String,
    /// A pain score by the referent (its FHIR id: `<id>.pain`).
    observation: String,
    audit_event: String,
}

fn str_of(body: &Value, key: &str) -> String {
    body[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} in {body}"))
        .to_owned()
}

fn caller_of(net: &Network, ended: Ended) -> &Session {
    match ended {
        Ended::ConsentWithdrawn | Ended::RemovedFromTeam => &net.hospital,
        Ended::EmergencyExpired => &net.nurse,
        Ended::ConsultationClosed => &net.specialist,
    }
}

/// Builds the scene in which `ended`'s caller has a basis and uses it.
async fn ended_scene(app: &TestApp, net: &Network, ended: Ended) -> EndedScene {
    let patient = create_patient(app, &net.gp, Some(&random_ins())).await;
    set_consent(app, &net.gp, &patient, "granted").await;
    add_member(app, &net.gp, &patient, &net.hospital).await;
    add_member(app, &net.gp, &patient, &net.pharmacist).await;
    let plan = crate::fixtures::design_plan(None);
    let put = format!("/api/v1/patients/{patient}/care-plan");
    app.request(Method::PUT, &put, Some(&net.gp.token), Some(&plan))
        .await
        .expect(201);
    put_clinical_context(app, net, &patient).await;
    // The hospital doctor writes version 2 (and prescribes its lines); the
    // pharmacist's intervention on the morphine goes to them.
    app.request_with(
        Method::PUT,
        &put,
        Some(&net.hospital.token),
        Some(&plan),
        &[("if-match", "\"1\"".to_owned())],
    )
    .await
    .expect(200);
    let intervention = app
        .post(
            &format!("/api/v1/patients/{patient}/interventions"),
            &net.pharmacist.token,
            intervention_body(2, 1),
        )
        .await
        .expect(201)
        .body;
    assert_eq!(intervention["addressee"]["id"], json!(net.hospital.id));
    let mut proposed = plan.clone();
    proposed.as_object_mut().unwrap().remove("change_summary");
    let handover = app
        .post(
            &format!("/api/v1/patients/{patient}/handovers"),
            &net.hospital.token,
            json!({"to_user_id": net.gp.id, "summary": "Sortie", "discharge_date": "2026-11-24", "proposed_plan": proposed}),
        )
        .await
        .expect(201)
        .body;
    let consultation = app
        .post(
            "/api/v1/consultations",
            &net.gp.token,
            json!({"centre_id": net.pain_centre, "patient_id": patient, "priority": "urgent", "question": "Quel palier ?"}),
        )
        .await
        .expect(201)
        .body;
    let consultation_id = str_of(&consultation, "id");
    app.post(
        &format!("/api/v1/consultations/{consultation_id}/accept"),
        &net.specialist.token,
        json!({}),
    )
    .await
    .expect(200);
    app.post(
        &format!("/api/v1/patients/{patient}/emergency-access"),
        &net.nurse.token,
        json!({"reason": "Appel du centre 15 la nuit"}),
    )
    .await
    .expect(201);
    let access_request = app
        .post(
            &format!("/api/v1/patients/{patient}/access-requests"),
            &net.addiction.token,
            json!({"reason": "Avis du CSAPA demandé"}),
        )
        .await
        .expect(201)
        .body;
    let patient_thread = app
        .get(&format!("/api/v1/patients/{patient}"), &net.gp.token)
        .await
        .expect(200)
        .body;
    let patient_thread = str_of(&patient_thread, "thread_id");
    let thread = match ended {
        Ended::ConsentWithdrawn | Ended::RemovedFromTeam => str_of(&handover, "thread_id"),
        Ended::EmergencyExpired => patient_thread.clone(),
        Ended::ConsultationClosed => str_of(&consultation, "thread_id"),
    };
    let caller = caller_of(net, ended);
    let message = app
        .post(
            &format!("/api/v1/threads/{thread}/messages"),
            &caller.token,
            json!({"body": "Je regarde le plan ce soir."}),
        )
        .await
        .expect(201)
        .body;
    // The GP answers on the patient's thread: the nurse is told in the app.
    app.post(
        &format!("/api/v1/threads/{patient_thread}/messages"),
        &net.gp.token,
        json!({"body": "Merci, rappel demain matin."}),
    )
    .await
    .expect(201);
    let notes = app
        .get("/api/v1/notifications?limit=200", &caller.token)
        .await
        .expect(200)
        .body;
    let notification = notes["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["patient_id"] == json!(patient))
        .map(|n| str_of(n, "id"))
        .unwrap_or_else(|| panic!("{ended:?}: no notification about the patient in {notes}"));
    let observation = observe(app, &net.gp, &patient).await;
    EndedScene {
        consent: consent_of(app, &patient).await,
        audit_event: audit_row_of(app, &patient).await,
        observation,
        handover: str_of(&handover, "id"),
        consultation: consultation_id,
        thread,
        message: str_of(&message, "id"),
        access_request: str_of(&access_request, "id"),
        notification,
        intervention: str_of(&intervention, "id"),
        patient,
    }
}

/// Ends the basis of `ended`'s caller (the emergency grant expires with the clock).
async fn end_basis(app: &TestApp, net: &Network, ended: Ended, scene: &EndedScene) {
    let p = &scene.patient;
    match ended {
        Ended::ConsentWithdrawn => set_consent(app, &net.gp, p, "withdrawn").await,
        Ended::RemovedFromTeam => {
            app.request(
                Method::DELETE,
                &format!("/api/v1/patients/{p}/care-team/{}", net.hospital.id),
                Some(&net.gp.token),
                None,
            )
            .await
            .expect(204);
        }
        Ended::EmergencyExpired => {}
        Ended::ConsultationClosed => {
            let id = &scene.consultation;
            app.post(
                &format!("/api/v1/consultations/{id}/answer"),
                &net.specialist.token,
                json!({"answer": "Paracétamol et glace"}),
            )
            .await
            .expect(200);
            app.post(
                &format!("/api/v1/consultations/{id}/close"),
                &net.gp.token,
                json!({"outcome": "resolved", "referral_avoided": true}),
            )
            .await
            .expect(200);
        }
    }
}

/// Routes with an `{id}` that is not about a patient.
const NOT_ABOUT_A_PATIENT: &[&str] = &[
    "/api/v1/users/{id}",
    "/api/v1/organizations/{id}/consultation-metrics",
    "/api/v1/organizations/{id}/intervention-metrics",
    "/fhir/r4/Practitioner/{id}",
    "/fhir/r4/PractitionerRole/{id}",
    "/fhir/r4/Organization/{id}",
    // `{provider}` names a configured OpenID provider.
    "/api/v1/auth/oidc/{provider}/start",
    "/api/v1/auth/oidc/{provider}/callback",
];

/// FHIR searches naming a patient (`?patient=`): answered, but empty, for
/// a caller without a basis.
const FHIR_PATIENT_SEARCHES: &[&str] = &[
    "/fhir/r4/CareTeam",
    "/fhir/r4/CarePlan",
    "/fhir/r4/MedicationRequest",
    "/fhir/r4/Consent",
    "/fhir/r4/Observation",
    "/fhir/r4/Communication",
    "/fhir/r4/AuditEvent",
    "/fhir/r4/ServiceRequest",
    "/fhir/r4/Task",
];

/// Every route taking the id of a patient or of something of theirs, with
/// the status each caller whose basis ended gets (ConsentWithdrawn,
/// RemovedFromTeam, EmergencyExpired, ConsultationClosed). Only asking for
/// access and breaking the glass are open without a basis.
#[rustfmt::skip]
const ENDED_TABLE: &[(&str, &str, [u16; 4])] = &[
    ("get", "/api/v1/patients/{id}",                            [404, 404, 404, 404]),
    ("patch", "/api/v1/patients/{id}",                          [404, 404, 404, 404]),
    ("get", "/api/v1/patients/{id}/consent",                    [404, 404, 404, 404]),
    ("put", "/api/v1/patients/{id}/consent",                    [404, 404, 404, 404]),
    ("get", "/api/v1/patients/{id}/care-team",                  [404, 404, 404, 404]),
    ("post", "/api/v1/patients/{id}/care-team",                 [404, 404, 404, 404]),
    ("delete", "/api/v1/patients/{id}/care-team/{user_id}",     [404, 404, 404, 404]),
    ("post", "/api/v1/patients/{id}/access-requests",           [201, 201, 201, 201]),
    ("get", "/api/v1/patients/{id}/access-requests",            [404, 404, 404, 404]),
    ("post", "/api/v1/access-requests/{id}/approve",            [404, 404, 404, 404]),
    ("post", "/api/v1/access-requests/{id}/deny",               [404, 404, 404, 404]),
    ("get", "/api/v1/patients/{id}/audit-events",               [404, 404, 404, 404]),
    ("post", "/api/v1/notifications/{id}/read",                 [404, 404, 404, 404]),
    ("get", "/api/v1/patients/{id}/care-plan",                  [404, 404, 404, 404]),
    ("put", "/api/v1/patients/{id}/care-plan",                  [404, 404, 404, 404]),
    ("get", "/api/v1/patients/{id}/care-plan/versions",         [404, 404, 404, 404]),
    ("get", "/api/v1/patients/{id}/care-plan/versions/{n}",     [404, 404, 404, 404]),
    ("get", "/api/v1/patients/{id}/analgesic-plan",             [404, 404, 404, 404]),
    ("get", "/api/v1/patients/{id}/clinical-context",           [404, 404, 404, 404]),
    ("put", "/api/v1/patients/{id}/clinical-context",           [404, 404, 404, 404]),
    ("post", "/api/v1/patients/{id}/interventions",             [404, 404, 404, 404]),
    ("get", "/api/v1/patients/{id}/interventions",              [404, 404, 404, 404]),
    ("post", "/api/v1/interventions/{id}/accept",               [404, 404, 404, 404]),
    ("post", "/api/v1/interventions/{id}/refuse",               [404, 404, 404, 404]),
    ("post", "/api/v1/patients/{id}/dispensations",             [404, 404, 404, 404]),
    ("get", "/api/v1/patients/{id}/dispensations",              [404, 404, 404, 404]),
    ("post", "/api/v1/patients/{id}/observations",              [404, 404, 404, 404]),
    ("get", "/api/v1/patients/{id}/observations",               [404, 404, 404, 404]),
    ("post", "/api/v1/patients/{id}/handovers",                 [404, 404, 404, 404]),
    ("get", "/api/v1/handovers/{id}",                           [404, 404, 404, 404]),
    ("post", "/api/v1/handovers/{id}/acknowledge",              [404, 404, 404, 404]),
    ("post", "/api/v1/handovers/{id}/reconcile",                [404, 404, 404, 404]),
    ("get", "/api/v1/consultations/{id}",                       [404, 404, 404, 404]),
    ("post", "/api/v1/consultations/{id}/accept",               [404, 404, 404, 404]),
    ("post", "/api/v1/consultations/{id}/answer",               [404, 404, 404, 404]),
    ("post", "/api/v1/consultations/{id}/decline",              [404, 404, 404, 404]),
    ("post", "/api/v1/consultations/{id}/close",                [404, 404, 404, 404]),
    ("post", "/api/v1/consultations/{id}/cancel",               [404, 404, 404, 404]),
    ("post", "/api/v1/consultations/{id}/apply-proposal",       [404, 404, 404, 404]),
    ("get", "/api/v1/threads/{id}/messages",                    [404, 404, 404, 404]),
    ("post", "/api/v1/threads/{id}/messages",                   [404, 404, 404, 404]),
    ("post", "/api/v1/threads/{id}/read",                       [404, 404, 404, 404]),
    ("get", "/fhir/r4/Patient/{id}",                            [404, 404, 404, 404]),
    ("get", "/fhir/r4/Patient/{id}/$everything",                [404, 404, 404, 404]),
    ("get", "/fhir/r4/CarePlan/{id}",                           [404, 404, 404, 404]),
    ("get", "/fhir/r4/MedicationRequest/{id}",                  [404, 404, 404, 404]),
    ("get", "/fhir/r4/CareTeam/{id}",                           [404, 404, 404, 404]),
    ("get", "/fhir/r4/Consent/{id}",                            [404, 404, 404, 404]),
    ("get", "/fhir/r4/Observation/{id}",                        [404, 404, 404, 404]),
    ("get", "/fhir/r4/Communication/{id}",                      [404, 404, 404, 404]),
    ("get", "/fhir/r4/AuditEvent/{id}",                         [404, 404, 404, 404]),
    ("get", "/fhir/r4/ServiceRequest/{id}",                     [404, 404, 404, 404]),
    ("get", "/fhir/r4/Task/{id}",                               [404, 404, 404, 404]),
    // Last: it gives the caller a new basis.
    ("post", "/api/v1/patients/{id}/emergency-access",          [201, 201, 201, 201]),
];

fn ended_request(
    method: &str,
    path: &str,
    net: &Network,
    scene: &EndedScene,
) -> (String, Option<Value>) {
    let concrete = match path {
        "/api/v1/patients/{id}/care-team/{user_id}" => format!(
            "/api/v1/patients/{}/care-team/{}",
            scene.patient, net.pharmacist.id
        ),
        "/api/v1/patients/{id}/care-plan/versions/{n}" => {
            format!("/api/v1/patients/{}/care-plan/versions/1", scene.patient)
        }
        p if p.starts_with("/api/v1/access-requests/") => p.replace("{id}", &scene.access_request),
        p if p.starts_with("/api/v1/notifications/") => p.replace("{id}", &scene.notification),
        p if p.starts_with("/api/v1/handovers/") => p.replace("{id}", &scene.handover),
        p if p.starts_with("/api/v1/consultations/") => p.replace("{id}", &scene.consultation),
        p if p.starts_with("/api/v1/threads/") => p.replace("{id}", &scene.thread),
        p if p.starts_with("/api/v1/interventions/") => p.replace("{id}", &scene.intervention),
        "/fhir/r4/MedicationRequest/{id}" => {
            format!("/fhir/r4/MedicationRequest/{}.1.omt", scene.patient)
        }
        "/fhir/r4/Consent/{id}" => path.replace("{id}", &scene.consent),
        "/fhir/r4/Observation/{id}" => format!("/fhir/r4/Observation/{}.pain", scene.observation),
        "/fhir/r4/Communication/{id}" => path.replace("{id}", &scene.message),
        "/fhir/r4/AuditEvent/{id}" => path.replace("{id}", &scene.audit_event),
        "/fhir/r4/ServiceRequest/{id}" | "/fhir/r4/Task/{id}" => {
            path.replace("{id}", &scene.consultation)
        }
        p => p.replace("{id}", &scene.patient),
    };
    let mut proposed = crate::fixtures::design_plan(None);
    proposed.as_object_mut().unwrap().remove("change_summary");
    let body = match (method, path) {
        ("patch", "/api/v1/patients/{id}") => json!({"phone": "02 99 11 22 33"}),
        ("put", "/api/v1/patients/{id}/consent") => json!({"status": "granted"}),
        ("post", "/api/v1/patients/{id}/care-team") => json!({"user_id": net.gp2.id}),
        (
            "post",
            "/api/v1/patients/{id}/access-requests" | "/api/v1/patients/{id}/emergency-access",
        ) => json!({"reason": "Douleur aiguë, besoin du plan en cours"}),
        ("put", "/api/v1/patients/{id}/care-plan") => crate::fixtures::design_plan(None),
        ("put", "/api/v1/patients/{id}/clinical-context") => clinical_context_body(),
        ("post", "/api/v1/patients/{id}/interventions") => intervention_body(1, 0),
        ("post", "/api/v1/interventions/{id}/refuse") => json!({"comment": "Dose stable"}),
        ("post", "/api/v1/patients/{id}/dispensations") => dispensation_body(),
        ("post", "/api/v1/patients/{id}/observations") => json!({"pain_score": 4}),
        ("post", "/api/v1/patients/{id}/handovers") => {
            json!({"to_user_id": net.gp.id, "summary": "Sortie", "discharge_date": "2026-11-24", "proposed_plan": proposed})
        }
        ("post", "/api/v1/handovers/{id}/reconcile") => json!({"decision": "accept"}),
        ("post", "/api/v1/consultations/{id}/answer") => json!({"answer": "Paracétamol"}),
        ("post", "/api/v1/consultations/{id}/decline") => json!({"reason": "Hors champ"}),
        ("post", "/api/v1/consultations/{id}/close") => {
            json!({"outcome": "resolved", "referral_avoided": true})
        }
        ("post", "/api/v1/threads/{id}/messages") => json!({"body": "Encore là ?"}),
        ("post", "/api/v1/threads/{id}/read") => json!({"up_to": scene.message}),
        ("post", _) => json!({}),
        _ => return (concrete, None),
    };
    (concrete, Some(body))
}

#[actix_web::test]
async fn every_route_about_a_patient_has_a_row_for_ended_bases() {
    let about_a_patient: BTreeSet<(&str, &str)> = ROUTES
        .iter()
        .copied()
        .filter(|(_, path)| path.contains('{') && !NOT_ABOUT_A_PATIENT.contains(path))
        .collect();
    let listed: BTreeSet<(&str, &str)> = ENDED_TABLE.iter().map(|(m, p, _)| (*m, *p)).collect();
    let missing: Vec<_> = about_a_patient.difference(&listed).collect();
    let stale: Vec<_> = listed.difference(&about_a_patient).collect();
    assert!(
        missing.is_empty(),
        "routes about a patient missing from ENDED_TABLE: {missing:?}"
    );
    assert!(stale.is_empty(), "stale ENDED_TABLE rows: {stale:?}");
}

#[actix_web::test]
async fn callers_whose_basis_ended_reach_nothing_of_the_patient() {
    let app = spawn_app().await;
    let mut net = Network::new(&app).await;
    let mut scenes = Vec::new();
    for ended in ENDED {
        scenes.push(ended_scene(&app, &net, ended).await);
    }
    for (ended, scene) in ENDED.iter().zip(&scenes) {
        end_basis(&app, &net, *ended, scene).await;
    }
    // Emergency grants last auth.emergency_access_ttl_s (12 h): past them,
    // signed in again.
    app.clock.advance(chrono::Duration::hours(13));
    for (session, email) in [
        (&mut net.gp, "gp@relais.test"),
        (&mut net.hospital, "hospital@relais.test"),
        (&mut net.nurse, "nurse@relais.test"),
        (&mut net.specialist, "pain@relais.test"),
    ] {
        *session = app.login(email, crate::helpers::PASSWORD).await;
    }
    let mut failures = Vec::new();
    for (ended, scene) in ENDED.iter().zip(&scenes) {
        let caller = caller_of(&net, *ended);
        // The lists no longer name the patient either.
        for list in [
            "/api/v1/patients",
            "/api/v1/handovers?box=outbox",
            "/api/v1/consultations?box=received",
            "/api/v1/threads",
            "/api/v1/notifications",
        ] {
            let body = app.get(list, &caller.token).await.expect(200).body;
            if body.to_string().contains(&scene.patient) {
                failures.push(format!(
                    "{list} as {ended:?} still names the patient: {body}"
                ));
            }
        }
        // FHIR searches on the patient answer an empty set, the attempt audited.
        for search in FHIR_PATIENT_SEARCHES {
            let path = format!("{search}?patient={}", scene.patient);
            let resp = app.get(&path, &caller.token).await;
            if resp.status != 200 || resp.body["total"] != 0 || resp.body.get("entry").is_some() {
                failures.push(format!(
                    "{path} as {ended:?}: expected an empty searchset, got {} {}",
                    resp.status, resp.body
                ));
            }
        }
        for (method, path, expect) in ENDED_TABLE {
            let expected = expect[ENDED.iter().position(|e| e == ended).unwrap()];
            let (concrete, body) = ended_request(method, path, &net, scene);
            let verb = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let resp = app
                .request(verb, &concrete, Some(&caller.token), body.as_ref())
                .await;
            if resp.status != expected {
                failures.push(format!(
                    "{method} {path} as {ended:?}: expected {expected}, got {} {}",
                    resp.status, resp.body
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatch(es):\n{}",
        failures.len(),
        failures.join("\n")
    );
}
