//! The one door (§5): what belongs to a patient needs a basis on the patient
//! now, consultations mint no basis of their own, and everyone a record
//! names has a team basis. Each test here failed before the fix.

use actix_web::http::Method;
use diesel::prelude::*;
use relais::db::schema::audit_events;
use serde_json::{Value, json};

use crate::fixtures::design_plan;
use crate::fixtures::{Network, add_member, create_patient, random_ins, set_consent};
use crate::helpers::{TestApp, spawn_app};

/// A patient of the GP with consent granted, the hospital doctor and the
/// pharmacist on the team, and a care plan.
async fn patient(app: &TestApp, net: &Network) -> String {
    let patient = create_patient(app, &net.gp, Some(&random_ins())).await;
    set_consent(app, &net.gp, &patient, "granted").await;
    add_member(app, &net.gp, &patient, &net.hospital).await;
    add_member(app, &net.gp, &patient, &net.pharmacist).await;
    app.request(
        Method::PUT,
        &format!("/api/v1/patients/{patient}/care-plan"),
        Some(&net.gp.token),
        Some(&design_plan(None)),
    )
    .await
    .expect(201);
    patient
}

fn consultation(centre: &str, patient: Option<&str>) -> Value {
    json!({"centre_id": centre, "patient_id": patient, "priority": "urgent", "question": "Quel palier ?"})
}

#[actix_web::test]
async fn an_emergency_grant_cannot_attach_a_patient_to_a_consultation() {
    let app = spawn_app().await;
    let net = Network::new(&app).await;
    let patient = patient(&app, &net).await;
    app.post(
        &format!("/api/v1/patients/{patient}/emergency-access"),
        &net.addiction.token,
        json!({"reason": "Appel du centre 15 la nuit"}),
    )
    .await
    .expect(201);
    // To another centre: an emergency basis is not a team basis.
    app.post(
        "/api/v1/consultations",
        &net.addiction.token,
        consultation(&net.pain_centre, Some(&patient)),
    )
    .await
    .problem(403);
    // To their own centre: refused whatever the basis.
    app.post(
        "/api/v1/consultations",
        &net.addiction.token,
        consultation(&net.addiction_centre, Some(&patient)),
    )
    .await
    .invalid_field("centre_id");
    app.post(
        "/api/v1/consultations",
        &net.specialist.token,
        consultation(&net.pain_centre, None),
    )
    .await
    .invalid_field("centre_id");
    // When the grant expires, nothing is left.
    app.clock.advance(chrono::Duration::hours(13));
    let addiction = app
        .login("csapa@relais.test", crate::helpers::PASSWORD)
        .await;
    app.get(&format!("/api/v1/patients/{patient}"), &addiction.token)
        .await
        .problem(404);
}

#[actix_web::test]
async fn a_consultation_basis_obeys_consent_and_lapses() {
    let app = spawn_app().await;
    let net = Network::new(&app).await;
    let patient = patient(&app, &net).await;
    let id = app
        .post(
            "/api/v1/consultations",
            &net.gp.token,
            consultation(&net.pain_centre, Some(&patient)),
        )
        .await
        .expect(201)
        .body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let patient_url = format!("/api/v1/patients/{patient}");
    let consultation_url = format!("/api/v1/consultations/{id}");
    app.get(&patient_url, &net.specialist.token)
        .await
        .expect(200);
    app.get(&consultation_url, &net.specialist.token)
        .await
        .expect(200);
    // The requester's team basis is what the audit records.
    let bases: Vec<Option<String>> = {
        let id = id.clone();
        app.state
            .db
            .read(move |conn| {
                Ok(audit_events::table
                    .filter(audit_events::resource_id.eq(id))
                    .filter(audit_events::resource_type.eq("consultation"))
                    .order(audit_events::seq)
                    .select(audit_events::basis)
                    .load(conn)?)
            })
            .await
            .unwrap()
    };
    assert_eq!(
        bases,
        [Some("team".to_owned()), Some("consultation".to_owned())],
        "creation by the GP, then the specialist's read"
    );

    // Consent withdrawn: the centre is another organisation, so it loses the patient.
    set_consent(&app, &net.gp, &patient, "withdrawn").await;
    app.get(&patient_url, &net.specialist.token)
        .await
        .problem(404);
    app.get(&consultation_url, &net.specialist.token)
        .await
        .problem(404);
    // And a consultation cannot be opened to a centre consent does not cover.
    app.post(
        "/api/v1/consultations",
        &net.gp.token,
        consultation(&net.addiction_centre, Some(&patient)),
    )
    .await
    .invalid_field("patient_id");

    // Consent again: back, until consultations.basis_max_days (30) after submission.
    set_consent(&app, &net.gp, &patient, "granted").await;
    app.get(&consultation_url, &net.specialist.token)
        .await
        .expect(200);
    app.clock.advance(chrono::Duration::days(31));
    let specialist = app
        .login("pain@relais.test", crate::helpers::PASSWORD)
        .await;
    let gp = app.login("gp@relais.test", crate::helpers::PASSWORD).await;
    app.get(&patient_url, &specialist.token).await.problem(404);
    app.get(&consultation_url, &specialist.token)
        .await
        .problem(404);
    // The requester keeps it: their basis is the team.
    app.get(&consultation_url, &gp.token).await.expect(200);
}

#[actix_web::test]
async fn everyone_a_record_names_has_a_team_basis() {
    let app = spawn_app().await;
    let net = Network::new(&app).await;
    let patient = patient(&app, &net).await;
    let plan_url = format!("/api/v1/patients/{patient}/care-plan");
    // The nurse is no prescriber; the addiction specialist has no basis; the
    // GP of the same practice is a prescriber but not on the team.
    for stranger in [&net.nurse.id, &net.addiction.id, &net.gp2.id] {
        let mut plan = design_plan(None);
        plan["analgesics"][1]["prescriber_id"] = json!(stranger);
        app.request_with(
            Method::PUT,
            &plan_url,
            Some(&net.gp.token),
            Some(&plan),
            &[("if-match", "\"1\"".to_owned())],
        )
        .await
        .invalid_field("analgesics[1].prescriber_id");
        let mut plan = design_plan(None);
        plan["omt"]["prescriber_id"] = json!(stranger);
        app.request_with(
            Method::PUT,
            &plan_url,
            Some(&net.gp.token),
            Some(&plan),
            &[("if-match", "\"1\"".to_owned())],
        )
        .await
        .invalid_field("omt.prescriber_id");
    }
    // The hospital doctor, on the team with consent, may be named...
    let mut plan = design_plan(None);
    plan["analgesics"][1]["prescriber_id"] = json!(net.hospital.id);
    app.request_with(
        Method::PUT,
        &plan_url,
        Some(&net.gp.token),
        Some(&plan),
        &[("if-match", "\"1\"".to_owned())],
    )
    .await
    .expect(200);
    // ...not once consent is withdrawn (another organisation).
    set_consent(&app, &net.gp, &patient, "withdrawn").await;
    app.request_with(
        Method::PUT,
        &plan_url,
        Some(&net.gp.token),
        Some(&plan),
        &[("if-match", "\"2\"".to_owned())],
    )
    .await
    .invalid_field("analgesics[1].prescriber_id");

    // A handover's addressee and its proposal's prescribers likewise.
    set_consent(&app, &net.gp, &patient, "granted").await;
    let mut proposed = design_plan(None);
    proposed.as_object_mut().unwrap().remove("change_summary");
    let handovers = format!("/api/v1/patients/{patient}/handovers");
    app.post(
        &handovers,
        &net.hospital.token,
        json!({"to_user_id": net.gp2.id, "summary": "Sortie", "discharge_date": "2026-11-24", "proposed_plan": proposed}),
    )
    .await
    .invalid_field("to_user_id");
    proposed["omt"]["prescriber_id"] = json!(net.addiction.id);
    app.post(
        &handovers,
        &net.hospital.token,
        json!({"to_user_id": net.gp.id, "summary": "Sortie", "discharge_date": "2026-11-24", "proposed_plan": proposed}),
    )
    .await
    .invalid_field("proposed_plan.omt.prescriber_id");
}

#[actix_web::test]
async fn approving_an_access_request_that_consent_blocks_is_refused() {
    let app = spawn_app().await;
    let net = Network::new(&app).await;
    let patient = create_patient(&app, &net.gp, Some(&random_ins())).await;
    // No consent recorded: only the referent's organisation shares the patient.
    let request = app
        .post(
            &format!("/api/v1/patients/{patient}/access-requests"),
            &net.pharmacist.token,
            json!({"reason": "Dispensation de ce soir"}),
        )
        .await
        .expect(201)
        .body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let approve = format!("/api/v1/access-requests/{request}/approve");
    app.post(&approve, &net.gp.token, json!({}))
        .await
        .problem(409);
    app.get(
        &format!("/api/v1/patients/{patient}"),
        &net.pharmacist.token,
    )
    .await
    .problem(404);
    // Still pending: once consent is recorded, approving grants access.
    set_consent(&app, &net.gp, &patient, "granted").await;
    app.post(&approve, &net.gp.token, json!({}))
        .await
        .expect(200);
    app.get(
        &format!("/api/v1/patients/{patient}"),
        &net.pharmacist.token,
    )
    .await
    .expect(200);
}
