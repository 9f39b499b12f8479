//! Patients, consent, care teams, access requests, emergency access, audit.

use actix_web::http::Method;
use diesel::connection::SimpleConnection;
use serde_json::json;

use crate::fixtures::{Network, add_member, create_patient, patient_body, random_ins, set_consent};
use crate::helpers::{TestApp, eventually, spawn_app};

async fn audit_count(app: &TestApp, action: &str, outcome: &str) -> i64 {
    use diesel::prelude::*;
    use relais::db::schema::audit_events;
    let (action, outcome) = (action.to_owned(), outcome.to_owned());
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
async fn prescribers_create_patients_and_become_referent() {
    let app = spawn_app().await;
    let net = Network::new(&app).await;
    let ins = random_ins();
    let created = app
        .post("/api/v1/patients", &net.gp.token, patient_body(Some(&ins)))
        .await
        .expect(201);
    assert_eq!(created.body["ins"], ins);
    assert_eq!(created.body["access_basis"], "team");
    let id = created.body["id"].as_str().unwrap();
    let team = app
        .get(&format!("/api/v1/patients/{id}/care-team"), &net.gp.token)
        .await
        .expect(200);
    assert_eq!(team.body["items"][0]["user_id"], net.gp.id);
    assert_eq!(team.body["items"][0]["team_role"], "referent");

    // Non-prescribers cannot; bad fields are named; nothing is stored on error.
    app.post(
        "/api/v1/patients",
        &net.pharmacist.token,
        patient_body(None),
    )
    .await
    .problem(403);
    app.post("/api/v1/patients", &net.admin.token, patient_body(None))
        .await
        .problem(403);
    let mut bad = patient_body(Some("184127645108947"));
    app.post("/api/v1/patients", &net.gp.token, bad.clone())
        .await
        .invalid_field("ins");
    bad["ins"] = json!(null);
    bad["birth_date"] = json!("2999-01-01");
    app.post("/api/v1/patients", &net.gp.token, bad.clone())
        .await
        .invalid_field("birth_date");
    bad["birth_date"] = json!("1984-02-30");
    app.post("/api/v1/patients", &net.gp.token, bad.clone())
        .await
        .invalid_field("birth_date");
    bad["birth_date"] = json!("1984-02-03");
    bad["sex"] = json!("f");
    app.post("/api/v1/patients", &net.gp.token, bad)
        .await
        .invalid_field("sex");

    // A second registration of the same INS points to the lookup.
    let dup = app
        .post("/api/v1/patients", &net.gp2.token, patient_body(Some(&ins)))
        .await
        .problem(409);
    assert!(dup["detail"].as_str().unwrap().contains("lookup"));
    assert_eq!(dup["errors"][0]["field"], "ins");

    let mine = app.get("/api/v1/patients", &net.gp.token).await.expect(200);
    assert_eq!(mine.body["items"].as_array().unwrap().len(), 1);
    let others = app
        .get("/api/v1/patients", &net.gp2.token)
        .await
        .expect(200);
    assert!(others.body["items"].as_array().unwrap().is_empty());
}

#[actix_web::test]
async fn search_and_update() {
    let app = spawn_app().await;
    let net = Network::new(&app).await;
    let ins = random_ins();
    let id = create_patient(&app, &net.gp, Some(&ins)).await;
    create_patient(&app, &net.gp, None).await;
    let by_name = app
        .get("/api/v1/patients?q=MA%C3%8FWENN", &net.gp.token)
        .await
        .expect(200);
    assert_eq!(by_name.body["items"].as_array().unwrap().len(), 2);
    let by_ins = app
        .get(&format!("/api/v1/patients?q={ins}"), &net.gp.token)
        .await
        .expect(200);
    assert_eq!(by_ins.body["items"].as_array().unwrap().len(), 1);
    assert_eq!(by_ins.body["items"][0]["id"], id);

    let updated = app
        .patch(
            &format!("/api/v1/patients/{id}"),
            &net.gp.token,
            json!({"family_name": "Le Gall-Morvan"}),
        )
        .await
        .expect(200);
    assert_eq!(updated.body["family_name"], "Le Gall-Morvan");
    assert_eq!(updated.body["ins"], ins);
    app.patch(
        &format!("/api/v1/patients/{id}"),
        &net.gp.token,
        json!({"ins": "123"}),
    )
    .await
    .invalid_field("ins");
}

#[actix_web::test]
async fn lookup_gives_the_referent_and_access_requests_reach_them() {
    let app = spawn_app().await;
    let net = Network::new(&app).await;
    let ins = random_ins();
    let patient = create_patient(&app, &net.gp, Some(&ins)).await;
    set_consent(&app, &net.gp, &patient, "granted").await;

    // The specialist knows nothing of this patient: 404, audited as denied.
    let denied_before = audit_count(&app, "GET /patients/{id}", "denied").await;
    app.get(
        &format!("/api/v1/patients/{patient}"),
        &net.specialist.token,
    )
    .await
    .problem(404);
    assert_eq!(
        audit_count(&app, "GET /patients/{id}", "denied").await,
        denied_before + 1
    );

    let found = app
        .get(
            &format!("/api/v1/patients/lookup?ins={ins}"),
            &net.specialist.token,
        )
        .await
        .expect(200);
    assert_eq!(found.body["found"], true);
    assert_eq!(found.body["patient_id"], patient);
    assert_eq!(found.body["referent"]["full_name"], "Test gp");
    assert_eq!(found.body["referent"]["organization"], "Cabinet du Port");
    assert!(
        found.body.get("family_name").is_none(),
        "minimal answer only"
    );
    let missing = app
        .get(
            &format!("/api/v1/patients/lookup?ins={}", random_ins()),
            &net.specialist.token,
        )
        .await
        .expect(200);
    assert_eq!(missing.body, json!({"found": false}));
    app.get("/api/v1/patients/lookup?ins=12", &net.specialist.token)
        .await
        .invalid_field("ins");
    assert_eq!(
        audit_count(&app, "GET /patients/lookup", "allowed").await,
        2
    );

    app.post(
        &format!("/api/v1/patients/{patient}/access-requests"),
        &net.specialist.token,
        json!({"reason": "short"}),
    )
    .await
    .invalid_field("reason");
    let request = app
        .post(
            &format!("/api/v1/patients/{patient}/access-requests"),
            &net.specialist.token,
            json!({"reason": "Avis douleur demandé par le médecin traitant"}),
        )
        .await
        .expect(201);
    let request_id = request.body["id"].as_str().unwrap().to_owned();
    app.post(
        &format!("/api/v1/patients/{patient}/access-requests"),
        &net.specialist.token,
        json!({"reason": "Avis douleur demandé encore une fois"}),
    )
    .await
    .problem(409);

    // The referent is told in the app and by an email without content.
    let notes = app
        .get("/api/v1/notifications?unread=true", &net.gp.token)
        .await
        .expect(200);
    let note = &notes.body["items"][0];
    assert_eq!(note["kind"], "access_request");
    assert_eq!(note["resource_id"], request_id);
    let mail = app
        .smtp
        .mail_to_containing("gp@relais.test", "asks to join the care team")
        .await;
    assert!(!mail.data.contains("douleur") && !mail.data.contains("Le Gall"));

    // Only prescribers on the team decide; then the specialist reads the patient.
    app.post(
        &format!("/api/v1/access-requests/{request_id}/approve"),
        &net.specialist.token,
        json!({}),
    )
    .await
    .problem(404);
    let pending = app
        .get(
            &format!("/api/v1/patients/{patient}/access-requests"),
            &net.gp.token,
        )
        .await
        .expect(200);
    assert_eq!(pending.body["items"][0]["status"], "pending");
    let approved = app
        .request(
            Method::POST,
            &format!("/api/v1/access-requests/{request_id}/approve"),
            Some(&net.gp.token),
            None,
        )
        .await
        .expect(200);
    assert_eq!(approved.body["status"], "approved");
    app.request(
        Method::POST,
        &format!("/api/v1/access-requests/{request_id}/deny"),
        Some(&net.gp.token),
        None,
    )
    .await
    .problem(409);
    let seen = app
        .get(
            &format!("/api/v1/patients/{patient}"),
            &net.specialist.token,
        )
        .await
        .expect(200);
    assert_eq!(seen.body["access_basis"], "team");
    let told = app
        .get("/api/v1/notifications", &net.specialist.token)
        .await
        .expect(200);
    assert_eq!(told.body["items"][0]["kind"], "access_request_approved");
}

#[actix_web::test]
async fn denied_request_leaves_no_access() {
    let app = spawn_app().await;
    let net = Network::new(&app).await;
    let patient = create_patient(&app, &net.gp, None).await;
    let request = app
        .post(
            &format!("/api/v1/patients/{patient}/access-requests"),
            &net.nurse.token,
            json!({"reason": "Soins post-opératoires à domicile"}),
        )
        .await
        .expect(201);
    let id = request.body["id"].as_str().unwrap();
    let denied = app
        .request(
            Method::POST,
            &format!("/api/v1/access-requests/{id}/deny"),
            Some(&net.gp.token),
            None,
        )
        .await
        .expect(200);
    assert_eq!(denied.body["status"], "denied");
    app.get(&format!("/api/v1/patients/{patient}"), &net.nurse.token)
        .await
        .problem(404);
}

#[actix_web::test]
async fn consent_governs_other_organisations_at_once() {
    let app = spawn_app().await;
    let net = Network::new(&app).await;
    let patient = create_patient(&app, &net.gp, None).await;
    let care_team = format!("/api/v1/patients/{patient}/care-team");

    // No consent yet: the same practice may join, another organisation may not.
    add_member(&app, &net.gp, &patient, &net.gp2).await;
    let refused = app
        .post(
            &care_team,
            &net.gp.token,
            json!({"user_id": net.pharmacist.id}),
        )
        .await
        .problem(409);
    assert!(refused["detail"].as_str().unwrap().contains("consent"));

    set_consent(&app, &net.gp, &patient, "granted").await;
    add_member(&app, &net.gp, &patient, &net.pharmacist).await;
    app.get(
        &format!("/api/v1/patients/{patient}"),
        &net.pharmacist.token,
    )
    .await
    .expect(200);

    // Withdrawal cuts the pharmacist off mid-session, with the same token.
    set_consent(&app, &net.gp, &patient, "withdrawn").await;
    app.get(
        &format!("/api/v1/patients/{patient}"),
        &net.pharmacist.token,
    )
    .await
    .problem(404);
    let listed = app
        .get("/api/v1/patients", &net.pharmacist.token)
        .await
        .expect(200);
    assert!(listed.body["items"].as_array().unwrap().is_empty());
    app.get(&format!("/api/v1/patients/{patient}"), &net.gp2.token)
        .await
        .expect(200);

    // Granting again restores it; the history is kept.
    set_consent(&app, &net.gp, &patient, "granted").await;
    app.get(
        &format!("/api/v1/patients/{patient}"),
        &net.pharmacist.token,
    )
    .await
    .expect(200);
    let consent = app
        .get(
            &format!("/api/v1/patients/{patient}/consent"),
            &net.pharmacist.token,
        )
        .await
        .expect(200);
    assert_eq!(consent.body["status"], "granted");
    let history: Vec<&str> = consent.body["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["status"].as_str().unwrap())
        .collect();
    assert_eq!(history, ["granted", "withdrawn", "granted"]);
    app.request(
        Method::PUT,
        &format!("/api/v1/patients/{patient}/consent"),
        Some(&net.gp.token),
        Some(&json!({"status": "maybe"})),
    )
    .await
    .invalid_field("status");
}

#[actix_web::test]
async fn care_team_membership_is_kept_with_dates() {
    let app = spawn_app().await;
    let net = Network::new(&app).await;
    let patient = create_patient(&app, &net.gp, None).await;
    set_consent(&app, &net.gp, &patient, "granted").await;
    let care_team = format!("/api/v1/patients/{patient}/care-team");
    add_member(&app, &net.gp, &patient, &net.pharmacist).await;
    add_member(&app, &net.gp, &patient, &net.hospital).await;
    app.post(
        &care_team,
        &net.gp.token,
        json!({"user_id": net.pharmacist.id}),
    )
    .await
    .problem(409);
    app.post(&care_team, &net.gp.token, json!({"user_id": net.admin.id}))
        .await
        .invalid_field("user_id");
    app.post(
        &care_team,
        &net.gp.token,
        json!({"user_id": uuid::Uuid::now_v7()}),
    )
    .await
    .invalid_field("user_id");
    // A pharmacist is not a prescriber: cannot add or remove others.
    app.post(
        &care_team,
        &net.pharmacist.token,
        json!({"user_id": net.nurse.id}),
    )
    .await
    .problem(403);
    app.request(
        Method::DELETE,
        &format!("{care_team}/{}", net.hospital.id),
        Some(&net.pharmacist.token),
        None,
    )
    .await
    .problem(403);
    // ... but may leave.
    app.request(
        Method::DELETE,
        &format!("{care_team}/{}", net.pharmacist.id),
        Some(&net.pharmacist.token),
        None,
    )
    .await
    .expect(204);
    app.get(
        &format!("/api/v1/patients/{patient}"),
        &net.pharmacist.token,
    )
    .await
    .problem(404);
    // The referent cannot leave until the role is handed over.
    app.request(
        Method::DELETE,
        &format!("{care_team}/{}", net.gp.id),
        Some(&net.gp.token),
        None,
    )
    .await
    .problem(409);
    app.post(
        &care_team,
        &net.gp.token,
        json!({"user_id": net.hospital.id, "team_role": "referent"}),
    )
    .await
    .expect(201);
    app.request(
        Method::DELETE,
        &format!("{care_team}/{}", net.gp.id),
        Some(&net.gp.token),
        None,
    )
    .await
    .expect(204);

    let team = app.get(&care_team, &net.hospital.token).await.expect(200);
    let rows = team.body["items"].as_array().unwrap();
    let active: Vec<(&str, &str)> = rows
        .iter()
        .filter(|r| r["until"].is_null())
        .map(|r| {
            (
                r["user_id"].as_str().unwrap(),
                r["team_role"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(active, [(net.hospital.id.as_str(), "referent")]);
    // The schema itself holds one current referent: a second current one is
    // refused whoever writes it, an ended one is history and goes in.
    let row = |user: &str, until: Option<chrono::NaiveDateTime>| {
        let (patient, user) = (patient.clone(), user.to_owned());
        let by = net.hospital.id.clone();
        move |conn: &mut relais::db::Tx<'_>| -> Result<usize, relais::error::ApiError> {
            use diesel::prelude::*;
            use relais::db::schema::care_team_members as m;
            let now = chrono::Utc::now().naive_utc();
            Ok(diesel::insert_into(m::table)
                .values((
                    m::id.eq(uuid::Uuid::now_v7().to_string()),
                    m::patient_id.eq(patient),
                    m::user_id.eq(user),
                    m::team_role.eq("referent"),
                    m::since.eq(now),
                    m::until.eq(until),
                    m::added_by.eq(by),
                ))
                .execute(&mut **conn)?)
        }
    };
    let second = app.state.db.write(row(&net.gp.id, None)).await;
    assert!(second.is_err(), "a second current referent is refused");
    let ended = app
        .state
        .db
        .write(row(&net.gp.id, Some(chrono::Utc::now().naive_utc())))
        .await;
    assert_eq!(ended.ok(), Some(1), "an ended referent row is history");
    // Nothing is deleted: the pharmacist's and the GP's memberships are history.
    assert!(
        rows.iter()
            .any(|r| r["user_id"] == net.pharmacist.id && r["until"].is_string())
    );
    assert!(
        rows.iter()
            .filter(|r| r["user_id"] == net.gp.id)
            .all(|r| r["until"].is_string())
    );
    assert!(rows.len() >= 5);
}

#[actix_web::test]
async fn emergency_access_is_immediate_notified_and_expires() {
    let app = spawn_app().await;
    let net = Network::new(&app).await;
    let patient = create_patient(&app, &net.gp, None).await;
    let url = format!("/api/v1/patients/{patient}/emergency-access");
    app.post(&url, &net.nurse.token, json!({"reason": "too short"}))
        .await
        .invalid_field("reason");
    app.post(
        &url,
        &net.admin.token,
        json!({"reason": "administrators never get clinical access"}),
    )
    .await
    .problem(403);
    app.post(
        &format!("/api/v1/patients/{}/emergency-access", uuid::Uuid::now_v7()),
        &net.nurse.token,
        json!({"reason": "Patient inconscient au domicile"}),
    )
    .await
    .problem(404);
    let granted = app
        .post(
            &url,
            &net.nurse.token,
            json!({"reason": "Patient inconscient au domicile"}),
        )
        .await
        .expect(201);
    let expires: chrono::DateTime<chrono::Utc> = granted.body["expires_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let hours = (expires - relais::clock::Clock::now(&*app.clock)).num_minutes();
    assert!((715..=721).contains(&hours), "{hours} minutes");

    let seen = app
        .get(&format!("/api/v1/patients/{patient}"), &net.nurse.token)
        .await
        .expect(200);
    assert_eq!(seen.body["access_basis"], "emergency");
    // Read, not write.
    app.patch(
        &format!("/api/v1/patients/{patient}"),
        &net.nurse.token,
        json!({"phone": "0299000000"}),
    )
    .await
    .problem(403);
    assert!(audit_count(&app, "GET /patients/{id}", "allowed").await >= 1);

    let told = app
        .get("/api/v1/notifications", &net.gp.token)
        .await
        .expect(200);
    assert_eq!(told.body["items"][0]["kind"], "emergency_access");
    let mail = app
        .smtp
        .mail_to_containing("gp@relais.test", "emergency access")
        .await;
    assert!(!mail.data.contains("inconscient"));

    app.clock.advance(chrono::Duration::hours(12));
    app.get(&format!("/api/v1/patients/{patient}"), &net.nurse.token)
        .await
        .problem(404);
}

#[actix_web::test]
async fn notifications_are_marked_read() {
    let app = spawn_app().await;
    let net = Network::new(&app).await;
    let patient = create_patient(&app, &net.gp, None).await;
    app.post(
        &format!("/api/v1/patients/{patient}/emergency-access"),
        &net.nurse.token,
        json!({"reason": "Appel SAMU pour douleur aiguë"}),
    )
    .await
    .expect(201);
    let unread = app
        .get("/api/v1/notifications?unread=true", &net.gp.token)
        .await
        .expect(200);
    let id = unread.body["items"][0]["id"].as_str().unwrap().to_owned();
    app.request(
        Method::POST,
        &format!("/api/v1/notifications/{id}/read"),
        Some(&net.nurse.token),
        None,
    )
    .await
    .problem(404);
    app.request(
        Method::POST,
        &format!("/api/v1/notifications/{id}/read"),
        Some(&net.gp.token),
        None,
    )
    .await
    .expect(204);
    let unread = app
        .get("/api/v1/notifications?unread=true", &net.gp.token)
        .await
        .expect(200);
    assert!(unread.body["items"].as_array().unwrap().is_empty());
    let all = app
        .get("/api/v1/notifications", &net.gp.token)
        .await
        .expect(200);
    assert!(all.body["items"][0]["read_at"].is_string());
}

#[actix_web::test]
async fn audit_trail_is_readable_by_the_right_people() {
    let app = spawn_app().await;
    let net = Network::new(&app).await;
    let patient = create_patient(&app, &net.gp, None).await;
    app.get(&format!("/api/v1/patients/{patient}"), &net.gp.token)
        .await
        .expect(200);
    app.get(&format!("/api/v1/patients/{patient}"), &net.nurse.token)
        .await
        .problem(404);

    let trail = app
        .get(
            &format!("/api/v1/patients/{patient}/audit-events"),
            &net.gp.token,
        )
        .await
        .expect(200);
    let events = trail.body["items"].as_array().unwrap();
    let actions: Vec<(&str, &str)> = events
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap(),
                e["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert!(
        actions.contains(&("POST /patients", "allowed")),
        "{actions:?}"
    );
    assert!(actions.contains(&("GET /patients/{id}", "allowed")));
    // The denied attempt is on the patient's trail too.
    assert!(
        events
            .iter()
            .any(|e| e["outcome"] == "denied" && e["actor_id"] == net.nurse.id)
    );
    assert!(events.iter().all(|e| e["request_id"].is_string()));

    app.get(
        &format!("/api/v1/patients/{patient}/audit-events"),
        &net.admin.token,
    )
    .await
    .expect(200);
    app.get(
        &format!("/api/v1/patients/{patient}/audit-events"),
        &net.nurse.token,
    )
    .await
    .problem(404);
    let all = app
        .get(
            &format!(
                "/api/v1/audit-events?outcome=denied&actor_id={}",
                net.nurse.id
            ),
            &net.admin.token,
        )
        .await
        .expect(200);
    let denied: Vec<&str> = all.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        denied,
        ["GET /patients/{id}", "GET /patients/{id}/audit-events"]
    );
    app.get("/api/v1/audit-events", &net.gp.token)
        .await
        .problem(403);
    app.get("/api/v1/audit-events?outcome=perhaps", &net.admin.token)
        .await
        .problem(400);
}

#[actix_web::test]
async fn a_rolled_back_write_leaves_no_audit_row() {
    let app = spawn_app().await;
    let net = Network::new(&app).await;
    let ins = random_ins();
    create_patient(&app, &net.gp, Some(&ins)).await;
    let before = audit_count(&app, "POST /patients", "allowed").await;
    app.post("/api/v1/patients", &net.gp.token, patient_body(Some(&ins)))
        .await
        .problem(409);
    assert_eq!(audit_count(&app, "POST /patients", "allowed").await, before);

    // The same through the append itself: a transaction that fails after
    // appending leaves nothing behind.
    let now = chrono::Utc::now().naive_utc();
    let result = app
        .state
        .db
        .write(move |conn| {
            let record = relais::audit::AuditRecord {
                actor_id: None,
                actor_role: None,
                action: "TEST rollback".into(),
                resource_type: "test".into(),
                resource_id: None,
                patient_id: None,
                basis: None,
                outcome: relais::audit::Outcome::Allowed,
                request_id: None,
                client_ip: None,
            };
            relais::audit::append(conn, &[record], now)?;
            Err::<(), _>(relais::error::ApiError::conflict("x", "forced rollback"))
        })
        .await;
    assert!(result.is_err());
    assert_eq!(audit_count(&app, "TEST rollback", "allowed").await, 0);
}

#[actix_web::test]
async fn the_audit_table_refuses_updates_and_deletes() {
    let app = spawn_app().await;
    let net = Network::new(&app).await;
    create_patient(&app, &net.gp, None).await;
    let mut conn = app.state.db.get().unwrap();
    assert!(
        conn.batch_execute("UPDATE audit_events SET actor_id = 'x'")
            .is_err()
    );
    assert!(conn.batch_execute("DELETE FROM audit_events").is_err());
}

#[actix_web::test]
async fn audit_verify_detects_a_tampered_row() {
    let app = spawn_app().await;
    let net = Network::new(&app).await;
    let patient = create_patient(&app, &net.gp, None).await;
    for _ in 0..3 {
        app.get(&format!("/api/v1/patients/{patient}"), &net.gp.token)
            .await
            .expect(200);
    }
    let verify = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_relais"))
            .args(["audit", "verify"])
            .env("RELAIS__DATABASE__URL", &app.settings.database.url)
            .env("RELAIS__SERVER__DATA_DIR", &app.settings.server.data_dir)
            .env_remove("RELAIS_ENV")
            .output()
            .unwrap()
    };
    let ok = verify();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("intact"));

    // Someone with database rights bypasses the trigger and edits row 3.
    let mut conn = app.state.db.get().unwrap();
    let bypass = match &*conn {
        relais::db::DbConnection::Postgres(_) => {
            "ALTER TABLE audit_events DISABLE TRIGGER USER; \
             UPDATE audit_events SET actor_id = NULL WHERE seq = 3; \
             ALTER TABLE audit_events ENABLE TRIGGER USER;"
        }
        relais::db::DbConnection::Sqlite(_) => {
            "DROP TRIGGER audit_events_no_update; \
             UPDATE audit_events SET actor_id = NULL WHERE seq = 3;"
        }
    };
    conn.batch_execute(bypass).unwrap();
    let broken = verify();
    assert!(!broken.status.success());
    let stderr = String::from_utf8_lossy(&broken.stderr);
    assert!(stderr.contains("row 3"), "{stderr}");
}

#[actix_web::test]
async fn concurrent_reads_keep_one_unbroken_chain() {
    let app = spawn_app().await;
    let net = Network::new(&app).await;
    let patient = create_patient(&app, &net.gp, None).await;
    let url = format!("/api/v1/patients/{patient}");
    let reads = (0..40).map(|_| app.get(&url, &net.gp.token));
    for resp in futures_util::future::join_all(reads).await {
        resp.expect(200);
    }
    eventually("chain verified", || async {
        let verdict = app
            .state
            .db
            .read(|conn| Ok(relais::audit::verify(conn)?))
            .await
            .unwrap();
        matches!(verdict, relais::audit::Verdict::Intact { rows } if rows >= 40)
    })
    .await;
}
