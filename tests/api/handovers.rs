//! Discharge handovers end to end, and what they share with consultations
//! (idempotent creation, threads, escalation of overdue items).

use actix_web::http::Method;
use serde_json::{Value, json};

use crate::consultations::consult;
use crate::fixtures::{Network, add_member, patient_with_plan, proposal};
use crate::helpers::{Session, TestApp, spawn_app};

fn handover_body(to: &Session) -> Value {
    json!({
        "to_user_id": to.id,
        "summary": "Prothèse de genou, douleur post-opératoire",
        "discharge_date": "2026-11-24",
        "follow_up": "Kinésithérapie, revoir à J7",
        "proposed_plan": proposal()
    })
}

async fn reconcile(app: &TestApp, by: &Session, id: &str, body: Value) -> crate::helpers::Resp {
    app.post(
        &format!("/api/v1/handovers/{id}/reconcile"),
        &by.token,
        body,
    )
    .await
}

#[actix_web::test]
async fn hospital_sends_gp_reconciles_plan_names_the_handover() {
    let app = spawn_app().await;
    let net = Network::new(&app).await;
    let patient = patient_with_plan(&app, &net).await;
    let url = format!("/api/v1/patients/{patient}/handovers");

    // Only hospital doctors send, to a GP of the team, with a valid plan.
    app.post(&url, &net.gp.token, handover_body(&net.gp))
        .await
        .problem(403);
    app.post(&url, &net.hospital.token, handover_body(&net.gp2))
        .await
        .invalid_field("to_user_id");
    let mut bad = handover_body(&net.gp);
    bad["proposed_plan"]["analgesics"][1]["drug"] = json!("unobtainium");
    app.post(&url, &net.hospital.token, bad)
        .await
        .invalid_field("proposed_plan.analgesics[1].drug");

    let sent = app
        .post(&url, &net.hospital.token, handover_body(&net.gp))
        .await
        .expect(201);
    let id = sent.body["id"].as_str().unwrap().to_owned();
    assert_eq!(sent.body["status"], "sent");
    assert_eq!(sent.body["current_plan_version"], 1);

    // The GP finds it in the inbox, with the diff.
    let inbox = app
        .get("/api/v1/handovers?box=inbox&status=sent", &net.gp.token)
        .await
        .expect(200);
    assert_eq!(inbox.body["items"][0]["id"], id);
    let outbox = app
        .get("/api/v1/handovers?box=outbox", &net.hospital.token)
        .await
        .expect(200);
    assert_eq!(outbox.body["items"][0]["id"], id);
    let handover = app
        .get(&format!("/api/v1/handovers/{id}"), &net.gp.token)
        .await
        .expect(200);
    let diff = handover.body["diff"].as_array().unwrap();
    let kinds: Vec<&str> = diff.iter().map(|c| c["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["omt_dose_changed", "line_added"]);
    assert_eq!(diff[0]["before"], 60.0);
    assert_eq!(diff[0]["after"], 80.0);
    assert_eq!(diff[1]["after"]["drug"], "morphine");
    app.get(&format!("/api/v1/handovers/{id}"), &net.pharmacist.token)
        .await
        .problem(404);
    let told = app
        .smtp
        .mail_to_containing("gp@relais.test", "discharge handover is waiting")
        .await;
    assert!(!told.data.contains("genou"));

    // Only the addressee acknowledges and reconciles.
    app.request(
        Method::POST,
        &format!("/api/v1/handovers/{id}/acknowledge"),
        Some(&net.hospital.token),
        None,
    )
    .await
    .problem(403);
    let acked = app
        .request(
            Method::POST,
            &format!("/api/v1/handovers/{id}/acknowledge"),
            Some(&net.gp.token),
            None,
        )
        .await
        .expect(200);
    assert_eq!(acked.body["status"], "acknowledged");
    app.request(
        Method::POST,
        &format!("/api/v1/handovers/{id}/acknowledge"),
        Some(&net.gp.token),
        None,
    )
    .await
    .problem(409);

    // A stale view of the plan is refused; then the GP accepts.
    reconcile(
        &app,
        &net.gp,
        &id,
        json!({"decision": "accept", "expected_plan_version": 7}),
    )
    .await
    .problem(412);
    let done = reconcile(
        &app,
        &net.gp,
        &id,
        json!({"decision": "accept", "expected_plan_version": 1}),
    )
    .await
    .expect(200);
    assert_eq!(done.body["status"], "reconciled");
    assert_eq!(done.body["resulting_plan_version"], 2);
    reconcile(
        &app,
        &net.gp,
        &id,
        json!({"decision": "reject", "comment": "changed my mind"}),
    )
    .await
    .problem(409);

    let plan = app
        .get(
            &format!("/api/v1/patients/{patient}/care-plan"),
            &net.gp.token,
        )
        .await
        .expect(200);
    assert_eq!(plan.body["version"], 2);
    assert_eq!(plan.body["source"], json!({"type": "handover", "id": id}));
    assert_eq!(plan.body["omt"]["daily_dose_mg"], 80.0);
    assert_eq!(plan.body["author"]["id"], net.gp.id);
    let told = app
        .get("/api/v1/notifications", &net.hospital.token)
        .await
        .expect(200);
    assert_eq!(told.body["items"][0]["kind"], "handover_reconciled");
}

#[actix_web::test]
async fn amend_and_reject() {
    let app = spawn_app().await;
    let net = Network::new(&app).await;
    let patient = patient_with_plan(&app, &net).await;
    let url = format!("/api/v1/patients/{patient}/handovers");
    let first = app
        .post(&url, &net.hospital.token, handover_body(&net.gp))
        .await
        .expect(201);
    let first = first.body["id"].as_str().unwrap().to_owned();
    let second = app
        .post(&url, &net.hospital.token, handover_body(&net.gp))
        .await
        .expect(201);
    let second = second.body["id"].as_str().unwrap().to_owned();

    reconcile(&app, &net.gp, &first, json!({"decision": "amend"}))
        .await
        .invalid_field("plan");
    let mut amended = proposal();
    amended["omt"]["daily_dose_mg"] = json!(70);
    let done = reconcile(
        &app,
        &net.gp,
        &first,
        json!({"decision": "amend", "plan": amended, "comment": "70 mg suffit"}),
    )
    .await
    .expect(200);
    assert_eq!(done.body["decision"], "amend");
    let plan = app
        .get(
            &format!("/api/v1/patients/{patient}/care-plan"),
            &net.gp.token,
        )
        .await
        .expect(200);
    assert_eq!(plan.body["omt"]["daily_dose_mg"], 70.0);
    assert_eq!(plan.body["change_summary"], "70 mg suffit");

    reconcile(&app, &net.gp, &second, json!({"decision": "reject"}))
        .await
        .invalid_field("comment");
    let rejected = reconcile(
        &app,
        &net.gp,
        &second,
        json!({"decision": "reject", "comment": "Déjà adapté"}),
    )
    .await
    .expect(200);
    assert_eq!(rejected.body["status"], "rejected");
    assert!(rejected.body["resulting_plan_version"].is_null());
    let told = app
        .get("/api/v1/notifications", &net.hospital.token)
        .await
        .expect(200);
    assert_eq!(told.body["items"][0]["kind"], "handover_rejected");
    let versions = app
        .get(
            &format!("/api/v1/patients/{patient}/care-plan/versions"),
            &net.gp.token,
        )
        .await
        .expect(200);
    assert_eq!(
        versions.body["items"].as_array().unwrap().len(),
        2,
        "reject writes no plan"
    );
}

async fn count_kind(app: &TestApp, who: &Session, kind: &str) -> usize {
    let notes = app
        .get("/api/v1/notifications?limit=200", &who.token)
        .await
        .expect(200);
    notes.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["kind"] == kind)
        .count()
}

#[actix_web::test]
async fn overdue_items_are_escalated_once_and_counted_in_the_inbox() {
    let app = spawn_app().await;
    let net = Network::new(&app).await;
    let patient = patient_with_plan(&app, &net).await;
    app.post(
        &format!("/api/v1/patients/{patient}/handovers"),
        &net.hospital.token,
        handover_body(&net.gp),
    )
    .await
    .expect(201);
    let consultation = consult(&app, &net.gp, &net.pain_centre, None, "urgent").await;
    let id = consultation["id"].as_str().unwrap().to_owned();

    let inbox = app.get("/api/v1/inbox", &net.gp.token).await.expect(200);
    assert_eq!(inbox.body["handovers_to_acknowledge"], 1);
    assert_eq!(inbox.body["overdue"], 0);
    let inbox = app
        .get("/api/v1/inbox", &net.specialist.token)
        .await
        .expect(200);
    assert_eq!(inbox.body["consultations_to_answer"], 1);
    let overdue = app
        .get(
            "/api/v1/consultations?box=received&overdue=true",
            &net.specialist.token,
        )
        .await
        .expect(200);
    assert!(overdue.body["items"].as_array().unwrap().is_empty());

    // Five hours later the urgent consultation is overdue: escalated once.
    app.clock.advance(chrono::Duration::hours(5));
    crate::helpers::eventually("consultation escalated", || async {
        count_kind(&app, &net.gp, "consultation_overdue").await == 1
    })
    .await;
    assert_eq!(
        count_kind(&app, &net.specialist, "consultation_overdue").await,
        1
    );
    app.smtp
        .mail_to_containing("pain_centre@relais.test", "overdue")
        .await;
    let overdue = app
        .get(
            "/api/v1/consultations?box=received&overdue=true",
            &net.specialist.token,
        )
        .await
        .expect(200);
    assert_eq!(overdue.body["items"][0]["id"], id);
    assert!(overdue.body["items"][0]["escalated_at"].is_string());
    let inbox = app
        .get("/api/v1/inbox", &net.specialist.token)
        .await
        .expect(200);
    assert_eq!(inbox.body["overdue"], 1);
    assert_eq!(
        count_kind(&app, &net.gp, "handover_overdue").await,
        0,
        "the handover is not due yet"
    );

    // Two days later the handover is overdue: GP reminded and sender told, once each.
    app.clock.advance(chrono::Duration::hours(44));
    crate::helpers::eventually("handover reminder", || async {
        count_kind(&app, &net.gp, "handover_overdue").await == 1
            && count_kind(&app, &net.hospital, "handover_overdue").await == 1
    })
    .await;
    let inbox = app.get("/api/v1/inbox", &net.gp.token).await.expect(200);
    assert_eq!(inbox.body["overdue"], 1);
    // Many more ticks change nothing.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(count_kind(&app, &net.gp, "handover_overdue").await, 1);
    assert_eq!(count_kind(&app, &net.hospital, "handover_overdue").await, 1);
    assert_eq!(count_kind(&app, &net.gp, "consultation_overdue").await, 1);
    let centre_mails = app
        .smtp
        .mails()
        .into_iter()
        .filter(|m| {
            m.to.iter().any(|t| t == "pain_centre@relais.test") && m.body().contains("overdue")
        })
        .count();
    assert_eq!(centre_mails, 1);
}

#[actix_web::test]
async fn creating_consultations_and_handovers_is_idempotent() {
    let app = spawn_app().await;
    let net = Network::new(&app).await;
    let patient = patient_with_plan(&app, &net).await;
    let body =
        json!({"centre_id": net.pain_centre, "priority": "routine", "question": "Quel palier ?"});
    let key = [("idempotency-key", "consult-0001".to_owned())];
    let first = app
        .request_with(
            Method::POST,
            "/api/v1/consultations",
            Some(&net.gp.token),
            Some(&body),
            &key,
        )
        .await
        .expect(201);
    let again = app
        .request_with(
            Method::POST,
            "/api/v1/consultations",
            Some(&net.gp.token),
            Some(&body),
            &key,
        )
        .await
        .expect(201);
    assert_eq!(again.headers.get("idempotent-replayed").unwrap(), "true");
    assert_eq!(first.body["id"], again.body["id"]);
    let mut other = body.clone();
    other["question"] = json!("Autre question");
    app.request_with(
        Method::POST,
        "/api/v1/consultations",
        Some(&net.gp.token),
        Some(&other),
        &key,
    )
    .await
    .invalid_field("Idempotency-Key");
    let sent = app
        .get("/api/v1/consultations?box=sent", &net.gp.token)
        .await
        .expect(200);
    assert_eq!(sent.body["items"].as_array().unwrap().len(), 1);

    let url = format!("/api/v1/patients/{patient}/handovers");
    let key = [("idempotency-key", "handover-0001".to_owned())];
    let body = handover_body(&net.gp);
    let first = app
        .request_with(
            Method::POST,
            &url,
            Some(&net.hospital.token),
            Some(&body),
            &key,
        )
        .await
        .expect(201);
    let again = app
        .request_with(
            Method::POST,
            &url,
            Some(&net.hospital.token),
            Some(&body),
            &key,
        )
        .await
        .expect(201);
    assert_eq!(first.body["id"], again.body["id"]);
    let outbox = app
        .get("/api/v1/handovers?box=outbox", &net.hospital.token)
        .await
        .expect(200);
    assert_eq!(outbox.body["items"].as_array().unwrap().len(), 1);
}

#[actix_web::test]
async fn consultations_and_handovers_have_their_own_threads() {
    let app = spawn_app().await;
    let net = Network::new(&app).await;
    let patient = patient_with_plan(&app, &net).await;
    add_member(&app, &net.gp, &patient, &net.pharmacist).await;
    let consultation = consult(&app, &net.gp, &net.pain_centre, Some(&patient), "routine").await;
    let thread = consultation["thread_id"]
        .as_str()
        .expect("thread_id")
        .to_owned();
    let handover = app
        .post(
            &format!("/api/v1/patients/{patient}/handovers"),
            &net.hospital.token,
            handover_body(&net.gp),
        )
        .await
        .expect(201);
    let handover_thread = handover.body["thread_id"]
        .as_str()
        .expect("thread_id")
        .to_owned();

    // The requester and the centre's specialist talk; the team's pharmacist is not a party.
    app.post(
        &format!("/api/v1/threads/{thread}/messages"),
        &net.specialist.token,
        json!({"body": "Pouvez-vous préciser l'EVA ?"}),
    )
    .await
    .expect(201);
    let reply = app
        .post(
            &format!("/api/v1/threads/{thread}/messages"),
            &net.gp.token,
            json!({"body": "EVA 8 au repos."}),
        )
        .await
        .expect(201);
    app.get(
        &format!("/api/v1/threads/{thread}/messages"),
        &net.pharmacist.token,
    )
    .await
    .problem(404);
    app.post(
        &format!("/api/v1/threads/{thread}/messages"),
        &net.addiction.token,
        json!({"body": "?"}),
    )
    .await
    .problem(404);
    let read = app
        .get(
            &format!("/api/v1/threads/{thread}/messages"),
            &net.specialist.token,
        )
        .await
        .expect(200);
    assert_eq!(read.body["items"].as_array().unwrap().len(), 2);
    let listed = app
        .get("/api/v1/threads?unread=true", &net.specialist.token)
        .await
        .expect(200);
    let entry = listed.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == thread)
        .expect("listed")
        .clone();
    assert_eq!(
        entry["subject"],
        json!({"type": "consultation", "id": consultation["id"]})
    );
    assert_eq!(entry["unread_count"], 1);
    let inbox = app
        .get("/api/v1/inbox", &net.specialist.token)
        .await
        .expect(200);
    assert!(inbox.body["unread_threads"].as_i64().unwrap() >= 1);
    app.post(
        &format!("/api/v1/threads/{thread}/read"),
        &net.specialist.token,
        json!({"up_to": reply.body["id"]}),
    )
    .await
    .expect(200);
    let pharmacist_threads = app
        .get("/api/v1/threads", &net.pharmacist.token)
        .await
        .expect(200);
    assert!(
        pharmacist_threads.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["id"] != thread && t["id"] != handover_thread)
    );

    // The handover's thread is the sender's and the addressee's.
    app.post(
        &format!("/api/v1/threads/{handover_thread}/messages"),
        &net.gp.token,
        json!({"body": "Reçu, je revois la patiente lundi."}),
    )
    .await
    .expect(201);
    let told = app
        .get("/api/v1/notifications", &net.hospital.token)
        .await
        .expect(200);
    assert_eq!(told.body["items"][0]["kind"], "new_message");
    app.get(
        &format!("/api/v1/threads/{handover_thread}/messages"),
        &net.hospital.token,
    )
    .await
    .expect(200);
    app.get(
        &format!("/api/v1/threads/{handover_thread}/messages"),
        &net.pharmacist.token,
    )
    .await
    .problem(404);
}
