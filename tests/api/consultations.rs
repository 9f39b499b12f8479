//! Consultation requests to addiction and pain centres, end to end.

use actix_web::http::Method;
use serde_json::{Value, json};

use crate::fixtures::{Network, design_plan, patient_with_plan, proposal};
use crate::helpers::{Session, TestApp, spawn_app};

/// Submits a consultation as `by`; returns its view.
pub async fn consult(
    app: &TestApp,
    by: &Session,
    centre: &str,
    patient: Option<&str>,
    priority: &str,
) -> Value {
    app.post(
        "/api/v1/consultations",
        &by.token,
        json!({"centre_id": centre, "patient_id": patient, "priority": priority, "question": "Douleur aiguë sous méthadone : quel palier ?"}),
    )
    .await
    .expect(201)
    .body
}

#[actix_web::test]
async fn consultation_from_request_to_close() {
    let app = spawn_app().await;
    let net = Network::new(&app).await;
    let patient = patient_with_plan(&app, &net).await;
    let plan_url = format!("/api/v1/patients/{patient}/care-plan");

    // A centre of another kind is refused; the patient needs a basis.
    app.post(
        "/api/v1/consultations",
        &net.gp.token,
        json!({"centre_id": net.gp_practice, "priority": "urgent", "question": "?"}),
    )
    .await
    .invalid_field("centre_id");
    app.post("/api/v1/consultations", &net.nurse.token, json!({"centre_id": net.pain_centre, "patient_id": patient, "priority": "urgent", "question": "?"}))
        .await
        .problem(404);
    app.post(
        "/api/v1/consultations",
        &net.gp.token,
        json!({"centre_id": net.pain_centre, "priority": "soon", "question": "?"}),
    )
    .await
    .invalid_field("priority");

    // Before the request, the specialist cannot read the plan.
    app.get(&plan_url, &net.specialist.token).await.problem(404);
    let created = consult(&app, &net.gp, &net.pain_centre, Some(&patient), "urgent").await;
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["status"], "submitted");
    let created_at: chrono::DateTime<chrono::Utc> =
        created["created_at"].as_str().unwrap().parse().unwrap();
    let due_at: chrono::DateTime<chrono::Utc> =
        created["due_at"].as_str().unwrap().parse().unwrap();
    assert_eq!((due_at - created_at).num_hours(), 4);
    app.smtp
        .mail_to_containing("pain_centre@relais.test", "consultation request is waiting")
        .await;

    // While it is open, the centre's specialist reads the patient (basis consultation), read only.
    let seen = app
        .get(
            &format!("/api/v1/patients/{patient}"),
            &net.specialist.token,
        )
        .await
        .expect(200);
    assert_eq!(seen.body["access_basis"], "consultation");
    app.get(&plan_url, &net.specialist.token).await.expect(200);
    app.request_with(
        Method::PUT,
        &plan_url,
        Some(&net.specialist.token),
        Some(&design_plan(None)),
        &[("if-match", "\"1\"".into())],
    )
    .await
    .problem(403);
    app.post(
        &format!("/api/v1/patients/{patient}/observations"),
        &net.specialist.token,
        json!({"pain_score": 5}),
    )
    .await
    .problem(403);
    // Not the other centre.
    app.get(&format!("/api/v1/consultations/{id}"), &net.addiction.token)
        .await
        .problem(404);

    let received = app
        .get("/api/v1/consultations?box=received", &net.specialist.token)
        .await
        .expect(200);
    assert_eq!(received.body["items"][0]["id"], id);
    let sent = app
        .get(
            "/api/v1/consultations?box=sent&status=submitted",
            &net.gp.token,
        )
        .await
        .expect(200);
    assert_eq!(sent.body["items"][0]["id"], id);

    // The requester cannot answer; the centre accepts then answers with a plan.
    app.post(
        &format!("/api/v1/consultations/{id}/accept"),
        &net.gp.token,
        json!({}),
    )
    .await
    .problem(403);
    app.post(
        &format!("/api/v1/consultations/{id}/close"),
        &net.gp.token,
        json!({"outcome": "resolved", "referral_avoided": true}),
    )
    .await
    .problem(409);
    app.post(
        &format!("/api/v1/consultations/{id}/accept"),
        &net.specialist.token,
        json!({}),
    )
    .await
    .expect(200);
    let mut advice = proposal();
    advice["analgesics"][1]["drug"] = json!("oxycodone");
    advice["analgesics"][1]["dose_mg"] = json!(5);
    advice["analgesics"][1]["max_daily_mg"] = json!(20);
    let answered = app
        .post(
            &format!("/api/v1/consultations/{id}/answer"),
            &net.specialist.token,
            json!({"answer": "Oxycodone 5 mg, pas de tramadol.", "proposed_plan": advice}),
        )
        .await
        .expect(200);
    assert_eq!(answered.body["status"], "answered");
    let told = app
        .get("/api/v1/notifications", &net.gp.token)
        .await
        .expect(200);
    assert_eq!(told.body["items"][0]["kind"], "consultation_answered");

    // The requester applies the proposal: a new version whose source is the consultation.
    app.post(
        &format!("/api/v1/consultations/{id}/apply-proposal"),
        &net.gp.token,
        json!({"expected_plan_version": 5}),
    )
    .await
    .problem(412);
    let applied = app
        .post(
            &format!("/api/v1/consultations/{id}/apply-proposal"),
            &net.gp.token,
            json!({"expected_plan_version": 1}),
        )
        .await
        .expect(200);
    assert_eq!(applied.body["applied_plan_version"], 2);
    let plan = app.get(&plan_url, &net.gp.token).await.expect(200);
    assert_eq!(
        plan.body["source"],
        json!({"type": "consultation", "id": id})
    );
    assert_eq!(plan.body["analgesics"][1]["drug"], "oxycodone");
    app.post(
        &format!("/api/v1/consultations/{id}/apply-proposal"),
        &net.gp.token,
        json!({}),
    )
    .await
    .problem(409);

    // Closing ends the specialist's access.
    let closed = app
        .post(
            &format!("/api/v1/consultations/{id}/close"),
            &net.gp.token,
            json!({"outcome": "resolved", "referral_avoided": true}),
        )
        .await
        .expect(200);
    assert_eq!(closed.body["status"], "closed");
    app.get(
        &format!("/api/v1/patients/{patient}"),
        &net.specialist.token,
    )
    .await
    .problem(404);
    // So does it to the consultation itself: it belongs to the patient.
    app.get(
        &format!("/api/v1/consultations/{id}"),
        &net.specialist.token,
    )
    .await
    .problem(404);

    // Metrics of the centre.
    let metrics = app
        .get(
            &format!(
                "/api/v1/organizations/{}/consultation-metrics",
                net.pain_centre
            ),
            &net.specialist.token,
        )
        .await
        .expect(200);
    assert_eq!(metrics.body["count"], 1);
    assert_eq!(metrics.body["answered"], 1);
    assert_eq!(metrics.body["answered_within_due_share"], 1.0);
    assert_eq!(metrics.body["referral_avoided_share"], 1.0);
    app.get(
        &format!(
            "/api/v1/organizations/{}/consultation-metrics",
            net.pain_centre
        ),
        &net.gp.token,
    )
    .await
    .problem(403);
}

#[actix_web::test]
async fn decline_and_cancel() {
    let app = spawn_app().await;
    let net = Network::new(&app).await;
    let a = consult(&app, &net.gp, &net.pain_centre, None, "routine").await;
    let a = a["id"].as_str().unwrap().to_owned();
    let b = consult(&app, &net.gp, &net.pain_centre, None, "routine").await;
    let b = b["id"].as_str().unwrap().to_owned();
    app.post(
        &format!("/api/v1/consultations/{a}/decline"),
        &net.specialist.token,
        json!({"reason": " "}),
    )
    .await
    .invalid_field("reason");
    let declined = app
        .post(
            &format!("/api/v1/consultations/{a}/decline"),
            &net.specialist.token,
            json!({"reason": "Hors de notre champ"}),
        )
        .await
        .expect(200);
    assert_eq!(declined.body["status"], "declined");
    let told = app
        .get("/api/v1/notifications", &net.gp.token)
        .await
        .expect(200);
    assert_eq!(told.body["items"][0]["kind"], "consultation_declined");
    app.post(
        &format!("/api/v1/consultations/{a}/cancel"),
        &net.gp.token,
        json!({}),
    )
    .await
    .problem(409);

    app.post(
        &format!("/api/v1/consultations/{b}/cancel"),
        &net.specialist.token,
        json!({}),
    )
    .await
    .problem(403);
    let cancelled = app
        .post(
            &format!("/api/v1/consultations/{b}/cancel"),
            &net.gp.token,
            json!({}),
        )
        .await
        .expect(200);
    assert_eq!(cancelled.body["status"], "cancelled");
    let due: chrono::DateTime<chrono::Utc> =
        cancelled.body["due_at"].as_str().unwrap().parse().unwrap();
    let created: chrono::DateTime<chrono::Utc> = cancelled.body["created_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!((due - created).num_hours(), 72);
}
