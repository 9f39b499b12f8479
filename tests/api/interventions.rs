//! Pharmacist interventions: raised on a plan version, answered once by the
//! line's prescriber; every legal and illegal move through the API.

use actix_web::http::Method;
use serde_json::{Value, json};

use crate::fixtures::{Network, add_member, design_plan, patient_with_plan};
use crate::helpers::{Resp, TestApp, spawn_app};

async fn raise(app: &TestApp, token: &str, patient: &str, body: Value) -> Resp {
    app.post(
        &format!("/api/v1/patients/{patient}/interventions"),
        token,
        body,
    )
    .await
}

fn on_line(version: i64, line: Option<i64>) -> Value {
    json!({"plan_version": version, "line": line, "problem": "dose_too_high",
           "proposed_action": "adjust_dose", "note": "4 g a day for a 48 kg patient"})
}

async fn unread_kinds(app: &TestApp, token: &str) -> Vec<String> {
    app.get("/api/v1/notifications?limit=200", token)
        .await
        .expect(200)
        .body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["kind"].as_str().unwrap().to_owned())
        .collect()
}

#[actix_web::test]
async fn every_move_of_an_intervention() {
    let app = spawn_app().await;
    let net = Network::new(&app).await;
    let patient = patient_with_plan(&app, &net).await;
    add_member(&app, &net.gp, &patient, &net.pharmacist).await;

    // Only a pharmacist on the team raises one.
    raise(&app, &net.gp.token, &patient, on_line(1, Some(0)))
        .await
        .problem(403);
    raise(&app, &net.hospital.token, &patient, on_line(1, Some(0)))
        .await
        .problem(403);
    // It must name something of the plan.
    raise(&app, &net.pharmacist.token, &patient, on_line(9, Some(0)))
        .await
        .invalid_field("plan_version");
    raise(&app, &net.pharmacist.token, &patient, on_line(1, Some(5)))
        .await
        .invalid_field("line");
    let mut bad = on_line(1, Some(0));
    bad["problem"] = json!("bad_vibes");
    let resp = raise(&app, &net.pharmacist.token, &patient, bad).await;
    assert!(resp.status == 400 || resp.status == 422, "{}", resp.status);
    assert!(resp.body.to_string().contains("problem"), "{}", resp.body);

    let first = raise(&app, &net.pharmacist.token, &patient, on_line(1, Some(0)))
        .await
        .expect(201)
        .body;
    assert_eq!(first["status"], "open");
    assert_eq!(first["drug"], "paracetamol");
    assert_eq!(first["addressee"]["id"], net.gp.id, "the line's prescriber");
    assert_eq!(first["author"]["id"], net.pharmacist.id);
    let omt = raise(&app, &net.pharmacist.token, &patient, on_line(1, None))
        .await
        .expect(201)
        .body;
    assert_eq!(omt["drug"], "methadone");
    assert_eq!(omt["line"], Value::Null);

    // It reaches the prescriber: notification, inbox, the plan.
    assert!(
        unread_kinds(&app, &net.gp.token)
            .await
            .contains(&"intervention_received".to_owned())
    );
    let inbox = app.get("/api/v1/inbox", &net.gp.token).await.expect(200);
    assert_eq!(inbox.body["interventions_to_answer"], 2);
    let plan = app
        .get(
            &format!("/api/v1/patients/{patient}/care-plan"),
            &net.hospital.token,
        )
        .await
        .expect(200);
    assert_eq!(plan.body["interventions"].as_array().unwrap().len(), 2);
    let listed = app
        .get(
            &format!("/api/v1/patients/{patient}/interventions?status=open"),
            &net.hospital.token,
        )
        .await
        .expect(200);
    assert_eq!(listed.body["items"].as_array().unwrap().len(), 2);

    let first_id = first["id"].as_str().unwrap();
    let accept = format!("/api/v1/interventions/{first_id}/accept");
    let refuse = format!("/api/v1/interventions/{first_id}/refuse");
    // Only its addressee answers it: others do not learn it exists.
    app.post(&accept, &net.hospital.token, json!({}))
        .await
        .problem(404);
    app.post(&accept, &net.pharmacist.token, json!({}))
        .await
        .problem(404);
    // The resolving version must follow the one it is about.
    app.post(&accept, &net.gp.token, json!({"resolved_by_version": 1}))
        .await
        .invalid_field("resolved_by_version");
    app.post(&accept, &net.gp.token, json!({"resolved_by_version": 2}))
        .await
        .invalid_field("resolved_by_version");
    let mut next = design_plan(None);
    next["omt"]["temporary_adjustment"] = Value::Null;
    next["analgesics"] = json!([next["analgesics"][0].clone()]);
    next["analgesics"][0]["max_daily_mg"] = json!(3000);
    next["change_summary"] = json!("paracetamol 3 g, as the pharmacist proposed");
    app.request_with(
        Method::PUT,
        &format!("/api/v1/patients/{patient}/care-plan"),
        Some(&net.gp.token),
        Some(&next),
        &[("If-Match", "\"1\"".to_owned())],
    )
    .await
    .expect(200);
    let accepted = app
        .post(
            &accept,
            &net.gp.token,
            json!({"resolved_by_version": 2, "comment": "Fait, merci"}),
        )
        .await
        .expect(200)
        .body;
    assert_eq!(accepted["status"], "accepted");
    assert_eq!(accepted["resolved_by_version"], 2);
    assert!(accepted["decided_at"].is_string());
    // Answered once: every further move is refused.
    app.post(&accept, &net.gp.token, json!({}))
        .await
        .problem(409);
    app.post(&refuse, &net.gp.token, json!({"comment": "non"}))
        .await
        .problem(409);
    assert!(
        unread_kinds(&app, &net.pharmacist.token)
            .await
            .contains(&"intervention_decided".to_owned())
    );

    let omt_id = omt["id"].as_str().unwrap();
    let refuse_omt = format!("/api/v1/interventions/{omt_id}/refuse");
    app.post(&refuse_omt, &net.gp.token, json!({"comment": "  "}))
        .await
        .invalid_field("comment");
    let refused = app
        .post(
            &refuse_omt,
            &net.gp.token,
            json!({"comment": "Dose stable depuis deux ans"}),
        )
        .await
        .expect(200)
        .body;
    assert_eq!(refused["status"], "refused");
    assert_eq!(refused["comment"], "Dose stable depuis deux ans");
    app.post(
        &format!("/api/v1/interventions/{omt_id}/accept"),
        &net.gp.token,
        json!({}),
    )
    .await
    .problem(409);
    app.post(&refuse_omt, &net.gp.token, json!({"comment": "encore"}))
        .await
        .problem(409);
    let inbox = app.get("/api/v1/inbox", &net.gp.token).await.expect(200);
    assert_eq!(inbox.body["interventions_to_answer"], 0);

    // The acceptance rate, for the pharmacy and the administrators.
    let pharmacy = app
        .get("/api/v1/me", &net.pharmacist.token)
        .await
        .expect(200)
        .body["organization_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let url = format!("/api/v1/organizations/{pharmacy}/intervention-metrics");
    let metrics = app.get(&url, &net.admin.token).await.expect(200).body;
    assert_eq!(metrics["raised"], 2);
    assert_eq!(metrics["accepted"], 1);
    assert_eq!(metrics["refused"], 1);
    assert_eq!(metrics["acceptance_rate"], 0.5);
    app.get(&url, &net.pharmacist.token).await.expect(200);
    app.get(&url, &net.gp.token).await.problem(403);

    // Every move is in the patient's trail.
    let trail = app
        .get(
            &format!("/api/v1/patients/{patient}/audit-events?limit=200"),
            &net.gp.token,
        )
        .await
        .expect(200)
        .body;
    let allowed = trail["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["resource_type"] == "intervention" && e["outcome"] == "allowed")
        .count();
    assert!(allowed >= 4, "raised twice, answered twice: {allowed}");
}

#[actix_web::test]
async fn a_prescriber_who_left_the_team_is_replaced_by_the_referent() {
    let app = spawn_app().await;
    let net = Network::new(&app).await;
    let patient = patient_with_plan(&app, &net).await;
    add_member(&app, &net.gp, &patient, &net.pharmacist).await;
    // The hospital doctor prescribes a line of version 2, then leaves the team.
    let mut plan = design_plan(None);
    plan["omt"]["temporary_adjustment"] = Value::Null;
    plan["change_summary"] = json!("morphine for three days");
    app.request_with(
        Method::PUT,
        &format!("/api/v1/patients/{patient}/care-plan"),
        Some(&net.hospital.token),
        Some(&plan),
        &[("If-Match", "\"1\"".to_owned())],
    )
    .await
    .expect(200);
    let to_hospital = raise(&app, &net.pharmacist.token, &patient, on_line(2, Some(1)))
        .await
        .expect(201)
        .body;
    assert_eq!(to_hospital["addressee"]["id"], net.hospital.id);
    app.request(
        Method::DELETE,
        &format!("/api/v1/patients/{patient}/care-team/{}", net.hospital.id),
        Some(&net.gp.token),
        None,
    )
    .await
    .expect(204);
    // The addressee whose basis ended reaches nothing.
    let id = to_hospital["id"].as_str().unwrap();
    app.post(
        &format!("/api/v1/interventions/{id}/accept"),
        &net.hospital.token,
        json!({}),
    )
    .await
    .problem(404);
    let to_referent = raise(&app, &net.pharmacist.token, &patient, on_line(2, Some(1)))
        .await
        .expect(201)
        .body;
    assert_eq!(to_referent["addressee"]["id"], net.gp.id);
}
