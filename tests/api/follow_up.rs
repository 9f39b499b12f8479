//! A temporary change followed to its end: dispensations and early refills,
//! the day-before reminders under the controlled clock, days left on the
//! pharmacist's page, and the tightened destabilisation watch.

use actix_web::http::Method;
use chrono::{DateTime, Duration, Utc};
use relais::scheduler::Scheduler;
use serde_json::{Value, json};

use crate::fixtures::{Network, add_member, create_patient, set_consent};
use crate::helpers::{PASSWORD, Session, TestApp, no_background_ticks, spawn_app, spawn_app_with};

fn morning() -> DateTime<Utc> {
    "2026-12-01T09:00:00Z".parse().unwrap()
}

/// Methadone 60 mg with a temporary 80 mg split ending `adjustment_end`;
/// paracetamol and morphine lines ending `lines_end`.
fn plan(adjustment_end: &str, lines_end: &str) -> Value {
    json!({
        "status": "active",
        "omt": {"medication": "methadone", "daily_dose_mg": 60, "doses_per_day": 1,
                "temporary_adjustment": {"daily_dose_mg": 80, "doses_per_day": 2,
                    "start": "2026-11-20", "end": adjustment_end, "reason": "post-operative pain"}},
        "analgesics": [
            {"drug": "paracetamol", "dose_mg": 1000, "times_per_day": 3, "start": "2026-11-20", "end": lines_end},
            {"drug": "morphine", "dose_mg": 10, "times_per_day": 4, "start": "2026-11-20", "end": lines_end}
        ],
        "change_summary": "knee surgery"
    })
}

async fn patient_with(app: &TestApp, net: &Network, body: &Value) -> String {
    let patient = create_patient(app, &net.gp, None).await;
    set_consent(app, &net.gp, &patient, "granted").await;
    add_member(app, &net.gp, &patient, &net.pharmacist).await;
    app.request(
        Method::PUT,
        &format!("/api/v1/patients/{patient}/care-plan"),
        Some(&net.gp.token),
        Some(body),
    )
    .await
    .expect(201);
    patient
}

async fn kinds(app: &TestApp, who: &Session, kind: &str) -> usize {
    app.get("/api/v1/notifications?limit=200", &who.token)
        .await
        .expect(200)
        .body["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["kind"] == kind)
        .count()
}

#[actix_web::test]
async fn dispensations_and_early_refills_at_the_80_percent_boundary() {
    let app = spawn_app().await;
    app.clock.set(morning());
    let net = Network::new(&app).await;
    let patient = patient_with(&app, &net, &plan("2026-12-10", "2026-12-31")).await;
    let url = format!("/api/v1/patients/{patient}/dispensations");
    let omt = |on: &str| json!({"drug": "methadone", "dose_mg": 60, "days_supply": 10, "dispensed_on": on});

    // Pharmacists on the team only; what the plan prescribes only.
    app.post(&url, &net.gp.token, omt("2026-11-01"))
        .await
        .problem(403);
    app.post(&url, &net.specialist.token, omt("2026-11-01"))
        .await
        .problem(404);
    app.post(
        &url,
        &net.pharmacist.token,
        json!({"line": 0, "drug": "morphine", "dose_mg": 40, "days_supply": 3}),
    )
    .await
    .invalid_field("drug");
    app.post(
        &url,
        &net.pharmacist.token,
        json!({"line": 7, "drug": "morphine", "dose_mg": 40, "days_supply": 3}),
    )
    .await
    .invalid_field("line");
    app.post(
        &url,
        &net.pharmacist.token,
        json!({"drug": "methadone", "dose_mg": 60, "days_supply": 0}),
    )
    .await
    .invalid_field("days_supply");
    app.post(&url, &net.pharmacist.token, omt("2026-12-02"))
        .await
        .invalid_field("dispensed_on");

    // (day, early) — 10 days supplied each time: 8 days (80 %) is on time.
    let sequence = [
        ("2026-11-01", false),
        ("2026-11-09", false),
        ("2026-11-16", true),
        ("2026-11-17", true),
        ("2026-11-27", false),
        ("2026-11-30", true),
    ];
    // (referent's early-refill notifications after each): once per episode.
    let told = [0, 0, 1, 1, 1, 2];
    for ((on, early), told) in sequence.iter().zip(told) {
        let d = app
            .post(&url, &net.pharmacist.token, omt(on))
            .await
            .expect(201)
            .body;
        assert_eq!(d["early_refill"], *early, "{on}");
        assert_eq!(
            kinds(&app, &net.gp, "early_refill").await,
            told,
            "after {on}"
        );
    }
    // A dispensation recorded late, for an earlier day, is not the latest.
    app.post(&url, &net.pharmacist.token, omt("2026-11-20"))
        .await
        .expect(201);
    // Another drug has its own history.
    let para = app
        .post(
            &url,
            &net.pharmacist.token,
            json!({"line": 0, "drug": "paracetamol", "dose_mg": 3000, "days_supply": 7}),
        )
        .await
        .expect(201)
        .body;
    assert_eq!(para["early_refill"], false);
    assert_eq!(para["dispensed_on"], "2026-12-01", "today by default");

    // The pharmacist's page shows the last one per line.
    let page = app
        .get(
            &format!("/api/v1/patients/{patient}/analgesic-plan"),
            &net.pharmacist.token,
        )
        .await
        .expect(200)
        .body;
    assert_eq!(
        page["omt"]["last_dispensation"]["dispensed_on"],
        "2026-11-30"
    );
    assert_eq!(page["omt"]["last_dispensation"]["early_refill"], true);
    assert_eq!(
        page["analgesics"][0]["last_dispensation"]["drug"],
        "paracetamol"
    );
    assert_eq!(page["analgesics"][1]["last_dispensation"], Value::Null);
    let list = app
        .get(&format!("{url}?limit=5"), &net.gp.token)
        .await
        .expect(200)
        .body;
    assert_eq!(list["items"].as_array().unwrap().len(), 5);
    assert!(list["next_cursor"].is_string());
}

#[actix_web::test]
async fn the_day_before_the_end_the_referent_and_pharmacists_are_told() {
    let app = spawn_app_with(no_background_ticks).await;
    app.clock.set(morning());
    let mut net = Network::new(&app).await;
    // The split and the morphine end on 2026-12-03; paracetamol too (not an opioid).
    let patient = patient_with(&app, &net, &plan("2026-12-03", "2026-12-03")).await;
    let scheduler = Scheduler::new(&app.state);
    assert_eq!(
        scheduler.tick().await.unwrap().ends_reminded,
        0,
        "two days before"
    );

    let page = app
        .get(
            &format!("/api/v1/patients/{patient}/analgesic-plan"),
            &net.pharmacist.token,
        )
        .await
        .expect(200)
        .body;
    assert_eq!(page["omt"]["days_left"], 2);
    assert_eq!(page["analgesics"][1]["days_left"], 2);

    app.clock.advance(Duration::days(1));
    // Two things end tomorrow (the split, the morphine), for two people.
    assert_eq!(scheduler.tick().await.unwrap().ends_reminded, 4);
    assert_eq!(scheduler.tick().await.unwrap().ends_reminded, 0, "once");
    net.gp = app.login("gp@relais.test", PASSWORD).await;
    net.pharmacist = app.login("pharmacist@relais.test", PASSWORD).await;
    net.hospital = app.login("hospital@relais.test", PASSWORD).await;
    assert_eq!(kinds(&app, &net.gp, "temporary_change_ending").await, 2);
    assert_eq!(
        kinds(&app, &net.pharmacist, "temporary_change_ending").await,
        2
    );
    assert_eq!(
        kinds(&app, &net.hospital, "temporary_change_ending").await,
        0
    );
    let page = app
        .get(
            &format!("/api/v1/patients/{patient}/analgesic-plan"),
            &net.pharmacist.token,
        )
        .await
        .expect(200)
        .body;
    assert_eq!(page["omt"]["days_left"], 1);
    assert_eq!(page["omt"]["temporary"], true);
    assert_eq!(page["analgesics"][1]["days_left"], 1);
    // The email is content-free.
    let mail = app
        .smtp
        .mail_to_containing("pharmacist@relais.test", "temporary treatment change")
        .await;
    let body = mail.body();
    for secret in ["morphine", "methadone", "Le Gall", &patient] {
        assert!(!body.contains(secret), "{secret} in {body}");
    }
}

#[actix_web::test]
async fn the_watch_is_tightened_for_a_week_after_the_change_ends() {
    let app = spawn_app().await;
    app.clock.set(morning());
    let mut net = Network::new(&app).await;
    // The split ended on 2026-11-28: tightened until 2026-12-05.
    let ended = patient_with(&app, &net, &plan("2026-11-28", "2026-12-31")).await;
    let running = patient_with(&app, &net, &plan("2026-12-10", "2026-12-31")).await;
    let page = |p: String| {
        let app = &app;
        let token = net.pharmacist.token.clone();
        async move {
            app.get(&format!("/api/v1/patients/{p}/analgesic-plan"), &token)
                .await
                .expect(200)
                .body["destabilisation_watch"]
                .clone()
        }
    };
    let watch = page(ended.clone()).await;
    assert_eq!(
        watch,
        json!({"tightened": true, "until": "2026-12-05", "pain_threshold": 6, "cows_threshold": 9})
    );
    assert_eq!(page(running.clone()).await["tightened"], false);

    let observe = |p: &str, body: Value| {
        let url = format!("/api/v1/patients/{p}/observations");
        let token = net.pharmacist.token.clone();
        let app = &app;
        async move { app.post(&url, &token, body).await.expect(201) }
    };
    observe(&running, json!({"pain_score": 6})).await;
    observe(&running, json!({"cows_score": 9})).await;
    assert_eq!(
        kinds(&app, &net.gp, "observation_alert").await,
        0,
        "usual thresholds"
    );
    observe(&ended, json!({"pain_score": 6})).await;
    assert_eq!(
        kinds(&app, &net.gp, "observation_alert").await,
        1,
        "pain 6 once"
    );
    observe(&ended, json!({"cows_score": 9})).await;
    assert_eq!(kinds(&app, &net.gp, "observation_alert").await, 2, "COWS 9");

    // A week later the usual watch is back.
    app.clock.advance(Duration::days(5));
    net.pharmacist = app.login("pharmacist@relais.test", PASSWORD).await;
    let token = net.pharmacist.token.clone();
    let watch = app
        .get(&format!("/api/v1/patients/{ended}/analgesic-plan"), &token)
        .await
        .expect(200)
        .body["destabilisation_watch"]
        .clone();
    assert_eq!(
        watch,
        json!({"tightened": false, "until": null, "pain_threshold": 7, "cows_threshold": 13})
    );
}
