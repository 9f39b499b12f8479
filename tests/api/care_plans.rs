//! The shared care plan, its rules, the pharmacist's page and observations.

use actix_web::http::Method;
use serde_json::{Value, json};

use crate::fixtures::{AuditOn, Network, add_member, create_patient, design_plan, set_consent};
use crate::helpers::{Resp, Session, TestApp, spawn_app};

async fn put_plan(
    app: &TestApp,
    by: &Session,
    patient: &str,
    body: &Value,
    if_match: Option<&str>,
) -> Resp {
    let headers: Vec<(&str, String)> = if_match
        .map(|v| ("if-match", v.to_owned()))
        .into_iter()
        .collect();
    app.request_with(
        Method::PUT,
        &format!("/api/v1/patients/{patient}/care-plan"),
        Some(&by.token),
        Some(body),
        &headers,
    )
    .await
}

struct Setting {
    app: TestApp,
    net: Network,
    patient: String,
    pharmacy: String,
}

async fn setting() -> Setting {
    let app = spawn_app().await;
    let net = Network::new(&app).await;
    let patient = create_patient(&app, &net.gp, None).await;
    set_consent(&app, &net.gp, &patient, "granted").await;
    add_member(&app, &net.gp, &patient, &net.pharmacist).await;
    let pharmacy = app
        .get("/api/v1/users?q=test%20pharmacist", &net.gp.token)
        .await
        .expect(200)
        .body["items"][0]["organization_id"]
        .as_str()
        .unwrap()
        .to_owned();
    Setting {
        app,
        net,
        patient,
        pharmacy,
    }
}

#[actix_web::test]
async fn versions_with_etag_and_if_match() {
    let Setting {
        app,
        net,
        patient,
        pharmacy,
    } = setting().await;
    let url = format!("/api/v1/patients/{patient}/care-plan");
    app.get(&url, &net.gp.token).await.problem(404);

    let first = put_plan(&app, &net.gp, &patient, &design_plan(Some(&pharmacy)), None)
        .await
        .expect(201);
    assert_eq!(first.headers.get("etag").unwrap(), "\"1\"");
    assert_eq!(first.body["version"], 1);
    assert_eq!(first.body["author"]["id"], net.gp.id);
    assert_eq!(
        first.body["omt"]["prescriber_id"], net.gp.id,
        "the author prescribes by default"
    );
    let codes: Vec<&str> = first.body["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["code"].as_str().unwrap())
        .collect();
    assert_eq!(codes, ["omt.split_dose", "context.none"]);

    let mut next = design_plan(Some(&pharmacy));
    next["omt"]["daily_dose_mg"] = json!(70);
    next["change_summary"] = json!("dose up after review");
    put_plan(&app, &net.gp, &patient, &next, None)
        .await
        .problem(428);
    put_plan(&app, &net.gp, &patient, &next, Some("nonsense"))
        .await
        .problem(400);
    let second = put_plan(&app, &net.gp, &patient, &next, Some("\"1\""))
        .await
        .expect(200);
    assert_eq!(second.headers.get("etag").unwrap(), "\"2\"");
    put_plan(&app, &net.gp, &patient, &next, Some("\"1\""))
        .await
        .problem(412);

    let current = app.get(&url, &net.pharmacist.token).await.expect(200);
    assert_eq!(current.headers.get("etag").unwrap(), "\"2\"");
    assert_eq!(current.body["omt"]["daily_dose_mg"], 70.0);
    let versions = app
        .get(&format!("{url}/versions"), &net.pharmacist.token)
        .await
        .expect(200);
    let listed: Vec<(i64, &str)> = versions.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["version"].as_i64().unwrap(),
                v["change_summary"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        [
            (1, "acute pain after knee surgery"),
            (2, "dose up after review")
        ]
    );
    // The first version is kept unchanged.
    let v1 = app
        .get(&format!("{url}/versions/1"), &net.pharmacist.token)
        .await
        .expect(200);
    assert_eq!(v1.body["omt"]["daily_dose_mg"], 60.0);
    app.get(&format!("{url}/versions/3"), &net.gp.token)
        .await
        .problem(404);
    app.get(&format!("{url}/versions/first"), &net.gp.token)
        .await
        .problem(400);

    // Pharmacists read; they do not write.
    put_plan(&app, &net.pharmacist, &patient, &next, Some("\"2\""))
        .await
        .problem(403);
}

#[actix_web::test]
async fn invalid_plans_name_the_field_and_change_nothing() {
    let Setting {
        app,
        net,
        patient,
        pharmacy,
    } = setting().await;
    let mut plan = design_plan(Some(&pharmacy));
    plan["analgesics"][1]["end"] = json!("2026-11-01");
    put_plan(&app, &net.gp, &patient, &plan, None)
        .await
        .invalid_field("analgesics[1].end");
    let mut plan = design_plan(Some(&pharmacy));
    plan["analgesics"][0]["drug"] = json!("unobtainium");
    put_plan(&app, &net.gp, &patient, &plan, None)
        .await
        .invalid_field("analgesics[0].drug");
    let mut plan = design_plan(Some(&pharmacy));
    plan["analgesics"][0]["times_per_day"] = json!(30);
    put_plan(&app, &net.gp, &patient, &plan, None)
        .await
        .invalid_field("analgesics[0].times_per_day");
    let mut plan = design_plan(Some(&pharmacy));
    plan["omt"]["doses_per_day"] = json!(6);
    put_plan(&app, &net.gp, &patient, &plan, None)
        .await
        .invalid_field("omt.doses_per_day");
    let mut plan = design_plan(Some(&pharmacy));
    plan["analgesics"][0]["dose"] = json!(1000);
    put_plan(&app, &net.gp, &patient, &plan, None)
        .await
        .invalid_field("analgesics[0].dose");
    let mut plan = design_plan(Some(&net.gp_practice));
    put_plan(&app, &net.gp, &patient, &plan, None)
        .await
        .invalid_field("omt.dispensing_pharmacy_id");
    plan = design_plan(Some(&pharmacy));
    plan["analgesics"][1]["prescriber_id"] = json!(net.pharmacist.id);
    put_plan(&app, &net.gp, &patient, &plan, None)
        .await
        .invalid_field("analgesics[1].prescriber_id");
    plan = design_plan(Some(&pharmacy));
    plan["change_summary"] = json!("");
    put_plan(&app, &net.gp, &patient, &plan, None)
        .await
        .invalid_field("change_summary");
    app.get(
        &format!("/api/v1/patients/{patient}/care-plan"),
        &net.gp.token,
    )
    .await
    .problem(404);
}

#[actix_web::test]
async fn blocking_warnings_need_an_acknowledgement() {
    let Setting {
        app,
        net,
        patient,
        pharmacy,
    } = setting().await;
    let mut plan = design_plan(Some(&pharmacy));
    plan["analgesics"][1]["end"] = Value::Null;
    let blocked = put_plan(&app, &net.gp, &patient, &plan, None)
        .await
        .problem(422);
    assert_eq!(
        blocked["warnings"][0]["code"],
        "omt.opioid_without_end_date"
    );
    assert_eq!(blocked["warnings"][0]["severity"], "blocking");
    assert_eq!(blocked["warnings"][0]["lines"], json!([1]));
    app.get(
        &format!("/api/v1/patients/{patient}/care-plan"),
        &net.gp.token,
    )
    .await
    .problem(404);

    plan["acknowledged_warnings"] =
        json!([{"code": "omt.opioid_without_end_date", "justification": "ok"}]);
    put_plan(&app, &net.gp, &patient, &plan, None)
        .await
        .invalid_field("acknowledged_warnings[0].justification");
    plan["acknowledged_warnings"] = json!([{"code": "omt.opioid_without_end_date", "justification": "palliative context, reviewed weekly with the pain centre"}]);
    let written = put_plan(&app, &net.gp, &patient, &plan, None)
        .await
        .expect(201);
    assert_eq!(
        written.body["acknowledged_warnings"][0]["code"],
        "omt.opioid_without_end_date"
    );
    assert!(
        written.body["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["code"] == "omt.opioid_without_end_date")
    );
}

#[actix_web::test]
async fn twenty_writers_on_one_version_one_wins() {
    let Setting {
        app,
        net,
        patient,
        pharmacy,
    } = setting().await;
    put_plan(&app, &net.gp, &patient, &design_plan(Some(&pharmacy)), None)
        .await
        .expect(201);
    let bodies: Vec<Value> = (0..20)
        .map(|i| {
            let mut plan = design_plan(Some(&pharmacy));
            plan["omt"]["daily_dose_mg"] = json!(61 + i);
            plan["change_summary"] = json!(format!("writer {i}"));
            plan
        })
        .collect();
    let writes = bodies
        .iter()
        .map(|body| put_plan(&app, &net.gp, &patient, body, Some("\"1\"")));
    let statuses: Vec<u16> = futures_util::future::join_all(writes)
        .await
        .into_iter()
        .map(|r| r.status)
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 412).count(),
        19,
        "{statuses:?}"
    );
    let versions = app
        .get(
            &format!("/api/v1/patients/{patient}/care-plan/versions"),
            &net.gp.token,
        )
        .await
        .expect(200);
    assert_eq!(versions.body["items"].as_array().unwrap().len(), 2);
}

#[actix_web::test]
async fn dry_run_of_the_rules() {
    let app = spawn_app().await;
    let net = Network::new(&app).await;
    let check = |analgesics: Value| json!({"status": "active", "omt": {"medication": "methadone", "daily_dose_mg": 60, "doses_per_day": 1}, "analgesics": analgesics});
    let line = |drug: &str| json!({"drug": drug, "dose_mg": 50, "times_per_day": 2, "start": "2026-11-24", "end": "2026-11-30"});
    let silent = app
        .post(
            "/api/v1/care-plans/check",
            &net.gp.token,
            check(json!([line("paracetamol")])),
        )
        .await
        .expect(200);
    assert_eq!(silent.body["blocked"], false);
    assert_eq!(
        silent.body["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["code"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["context.none"],
        "no context given: the rules say they did not see the patient"
    );
    let weak = app
        .post(
            "/api/v1/care-plans/check",
            &net.nurse.token,
            check(json!([line("paracetamol"), line("tramadol")])),
        )
        .await
        .expect(200);
    assert_eq!(
        weak.body["warnings"][0]["code"],
        "omt.methadone_weak_opioid"
    );
    assert_eq!(weak.body["warnings"][0]["lines"], json!([1]));
    assert!(
        weak.body["warnings"][0]["source"]
            .as_str()
            .unwrap()
            .contains("ASAM")
    );
    assert_eq!(weak.body["blocked"], false);
    let blocked = app
        .post(
            "/api/v1/care-plans/check",
            &net.gp.token,
            check(json!([line("naltrexone")])),
        )
        .await
        .expect(200);
    assert_eq!(blocked.body["blocked"], true);
    app.post(
        "/api/v1/care-plans/check",
        &net.gp.token,
        check(json!([line("aspirin")])),
    )
    .await
    .invalid_field("analgesics[0].drug");
    app.post(
        "/api/v1/care-plans/check",
        &net.admin.token,
        check(json!([])),
    )
    .await
    .problem(403);

    let drugs = app
        .get("/api/v1/drugs", &net.pharmacist.token)
        .await
        .expect(200);
    assert!(drugs.body.as_array().unwrap().len() >= 39);
    assert!(
        drugs
            .body
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["code"] == "citalopram" && d["classes"] == json!(["ssri", "qt_prolonging"]))
    );
}

#[actix_web::test]
async fn the_pharmacists_page_before_during_and_after_the_adjustment() {
    let Setting {
        app,
        net,
        patient,
        pharmacy,
    } = setting().await;
    app.patch(
        "/api/v1/me",
        &net.gp.token,
        json!({"phone": "02 99 12 34 56"}),
    )
    .await
    .expect(200);
    put_plan(&app, &net.gp, &patient, &design_plan(Some(&pharmacy)), None)
        .await
        .expect(201);
    let page = |day: &'static str| {
        let (app, token, patient) = (&app, net.pharmacist.token.clone(), patient.clone());
        async move {
            app.get(
                &format!("/api/v1/patients/{patient}/analgesic-plan?on={day}"),
                &token,
            )
            .await
            .expect(200)
            .body
        }
    };
    let before = page("2026-11-23").await;
    assert_eq!(before["omt"]["daily_dose_mg"], 60.0);
    assert_eq!(before["omt"]["doses_per_day"], 1);
    assert_eq!(before["omt"]["temporary"], false);
    assert!(before["analgesics"].as_array().unwrap().is_empty());
    assert_eq!(before["patient"]["display_name"], "Maïwenn LE GALL");
    assert_eq!(before["plan_version"], 1);
    assert_eq!(before["last_changed_by"]["id"], net.gp.id);

    let during = page("2026-11-25").await;
    assert_eq!(during["omt"]["daily_dose_mg"], 80.0);
    assert_eq!(during["omt"]["doses_per_day"], 2);
    assert_eq!(during["omt"]["temporary"], true);
    assert_eq!(during["omt"]["until"], "2026-12-01");
    assert_eq!(during["omt"]["usual_daily_dose_mg"], 60.0);
    assert_eq!(during["omt"]["dispensing_pharmacy"]["id"], pharmacy);
    let drugs: Vec<&str> = during["analgesics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["drug"].as_str().unwrap())
        .collect();
    assert_eq!(drugs, ["paracetamol", "morphine"]);
    assert_eq!(
        during["analgesics"][1]["prescriber"]["full_name"],
        "Test gp"
    );
    assert_eq!(
        during["analgesics"][1]["prescriber"]["phone"],
        "02 99 12 34 56"
    );
    assert_eq!(during["valid_until"], "2026-11-27");

    let later = page("2026-11-28").await;
    let drugs: Vec<&str> = later["analgesics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["drug"].as_str().unwrap())
        .collect();
    assert_eq!(drugs, ["paracetamol"]);
    assert_eq!(later["valid_until"], "2026-12-01");

    let after = page("2026-12-02").await;
    assert_eq!(after["omt"]["daily_dose_mg"], 60.0);
    assert_eq!(after["omt"]["temporary"], false);
    assert!(after["analgesics"].as_array().unwrap().is_empty());
    assert!(after["valid_until"].is_null());

    app.get(
        &format!("/api/v1/patients/{patient}/analgesic-plan?on=tomorrow"),
        &net.pharmacist.token,
    )
    .await
    .problem(400);
    app.get(
        &format!("/api/v1/patients/{patient}/analgesic-plan"),
        &net.specialist.token,
    )
    .await
    .problem(404);
}

async fn alert_count(app: &TestApp, referent: &Session) -> usize {
    let notes = app
        .get("/api/v1/notifications", &referent.token)
        .await
        .expect(200);
    notes.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["kind"] == "observation_alert")
        .count()
}

#[actix_web::test]
async fn observations_alert_the_referent_once_per_episode() {
    let Setting {
        app, net, patient, ..
    } = setting().await;
    let url = format!("/api/v1/patients/{patient}/observations");
    app.post(&url, &net.pharmacist.token, json!({"pain_score": 11}))
        .await
        .invalid_field("pain_score");
    app.post(
        &url,
        &net.pharmacist.token,
        json!({"cows_score": 60, "sedation_score": 9}),
    )
    .await
    .invalid_field("cows_score");
    app.post(&url, &net.pharmacist.token, json!({"note": "just a note"}))
        .await
        .invalid_field("pain_score");
    app.post(&url, &net.specialist.token, json!({"pain_score": 3}))
        .await
        .problem(404);

    let first = app
        .post(
            &url,
            &net.pharmacist.token,
            json!({"pain_score": 8, "dose_dispensed_mg": 60}),
        )
        .await
        .expect(201);
    assert_eq!(first.body["pain_score"], 8);
    assert_eq!(
        alert_count(&app, &net.gp).await,
        0,
        "one high pain score is not an episode"
    );
    app.post(&url, &net.pharmacist.token, json!({"pain_score": 7}))
        .await
        .expect(201);
    assert_eq!(alert_count(&app, &net.gp).await, 1);
    app.post(&url, &net.pharmacist.token, json!({"pain_score": 9}))
        .await
        .expect(201);
    assert_eq!(alert_count(&app, &net.gp).await, 1, "same episode");
    app.post(&url, &net.pharmacist.token, json!({"pain_score": 3}))
        .await
        .expect(201);
    app.post(&url, &net.pharmacist.token, json!({"pain_score": 8}))
        .await
        .expect(201);
    app.post(&url, &net.pharmacist.token, json!({"pain_score": 8}))
        .await
        .expect(201);
    assert_eq!(alert_count(&app, &net.gp).await, 2, "a new episode");

    // Sedation alerts at once; an emergency grantee may record too.
    app.post(
        &format!("/api/v1/patients/{patient}/emergency-access"),
        &net.nurse.token,
        json!({"reason": "Visite à domicile, somnolence"}),
    )
    .await
    .expect(201);
    app.post(&url, &net.nurse.token, json!({"sedation_score": 3}))
        .await
        .expect(201);
    assert_eq!(alert_count(&app, &net.gp).await, 3);
    let mail = app
        .smtp
        .mail_to_containing("gp@relais.test", "alert threshold")
        .await;
    assert!(!mail.data.contains("somnolence"));

    let listed = app
        .get(&format!("{url}?kind=sedation"), &net.gp.token)
        .await
        .expect(200);
    assert_eq!(listed.body["items"].as_array().unwrap().len(), 1);
    let all = app.get(&url, &net.gp.token).await.expect(200);
    assert_eq!(all.body["items"].as_array().unwrap().len(), 7);
    assert_eq!(all.body["items"][0]["sedation_score"], 3, "newest first");
}

/// A winter evening, 23:30 UTC: already 00:30 the next day in Paris.
/// Today's if it is winter now (so the server's clock moves little), else
/// the next 15 December.
fn winter_evening() -> chrono::DateTime<chrono::Utc> {
    use chrono::{Datelike, NaiveDate, TimeZone, Utc};
    let now = Utc::now();
    let day = if [11, 12, 1, 2].contains(&now.month()) {
        now.date_naive()
    } else {
        NaiveDate::from_ymd_opt(now.year(), 12, 15).unwrap()
    };
    Utc.from_utc_datetime(&day.and_hms_opt(23, 30, 0).unwrap())
}

#[actix_web::test]
async fn the_pharmacists_today_is_the_networks_not_utcs() {
    let Setting {
        app,
        net,
        patient,
        pharmacy,
    } = setting().await;
    let evening = winter_evening();
    app.clock.set(evening);
    let utc_day = evening.date_naive();
    let paris_day = utc_day.succ_opt().unwrap();
    let mut plan = design_plan(Some(&pharmacy));
    // A change that starts today in Paris (tomorrow in UTC terms)…
    plan["omt"]["temporary_adjustment"]["start"] = json!(paris_day.to_string());
    plan["omt"]["temporary_adjustment"]["end"] =
        json!((paris_day + chrono::Duration::days(3)).to_string());
    // …a line that ended yesterday in Paris (today in UTC terms)…
    plan["analgesics"][0]["start"] = json!((utc_day - chrono::Duration::days(5)).to_string());
    plan["analgesics"][0]["end"] = json!(utc_day.to_string());
    // …and one that starts today in Paris.
    plan["analgesics"][1]["start"] = json!(paris_day.to_string());
    plan["analgesics"][1]["end"] = json!((paris_day + chrono::Duration::days(2)).to_string());
    put_plan(&app, &net.gp, &patient, &plan, None)
        .await
        .expect(201);

    let page = app
        .get(
            &format!("/api/v1/patients/{patient}/analgesic-plan"),
            &net.pharmacist.token,
        )
        .await
        .expect(200)
        .body;
    assert_eq!(page["on"], paris_day.to_string());
    assert_eq!(page["omt"]["temporary"], true, "{page}");
    assert_eq!(page["omt"]["daily_dose_mg"], 80.0);
    let drugs: Vec<&str> = page["analgesics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["drug"].as_str().unwrap())
        .collect();
    assert_eq!(drugs, ["morphine"], "{page}");

    // The network decides: in UTC, it is still the day before.
    let app = crate::helpers::spawn_app_with(|s| s.network.time_zone = "UTC".into()).await;
    let net = Network::new(&app).await;
    app.clock.set(evening);
    let patient = create_patient(&app, &net.gp, None).await;
    set_consent(&app, &net.gp, &patient, "granted").await;
    add_member(&app, &net.gp, &patient, &net.pharmacist).await;
    plan["omt"]["dispensing_pharmacy_id"] = json!(null);
    put_plan(&app, &net.gp, &patient, &plan, None)
        .await
        .expect(201);
    let page = app
        .get(
            &format!("/api/v1/patients/{patient}/analgesic-plan"),
            &net.pharmacist.token,
        )
        .await
        .expect(200)
        .body;
    assert_eq!(page["on"], utc_day.to_string());
    assert_eq!(page["omt"]["temporary"], false, "{page}");
    assert_eq!(page["analgesics"][0]["drug"], "paracetamol", "{page}");
}

/// The audit rows of `patient` by `actor` for the pharmacist's page, oldest first.
async fn page_audit(app: &TestApp, actor: &str, patient: &str) -> Vec<String> {
    let action = "GET /patients/{id}/analgesic-plan";
    crate::fixtures::audit_outcomes(app, actor, action, AuditOn::Patient(patient)).await
}

#[actix_web::test]
async fn the_pharmacists_page_is_the_same_from_the_plan_cache_and_never_stale() {
    let Setting {
        app,
        net,
        patient,
        pharmacy,
    } = setting().await;
    put_plan(&app, &net.gp, &patient, &design_plan(Some(&pharmacy)), None)
        .await
        .expect(201);
    let url = format!("/api/v1/patients/{patient}/analgesic-plan?on=2026-11-25");
    let cache = app.state.plan_cache.clone();
    let (hits, misses) = cache.counts();
    let first = app.get(&url, &net.pharmacist.token).await.expect(200).body;
    assert_eq!(
        cache.counts(),
        (hits, misses + 1),
        "the first page parses the version"
    );
    let warm = app.get(&url, &net.pharmacist.token).await.expect(200).body;
    assert_eq!(
        cache.counts(),
        (hits + 1, misses + 1),
        "the second is served parsed"
    );
    assert_eq!(warm, first, "the same page from the cache");

    // A second instance on the same database, its cache empty: the same page.
    let fresh = crate::helpers::spawn_on(
        app.db(),
        crate::helpers::SmtpListener::start().await,
        |_| {},
    )
    .await;
    fresh.clock.set(relais::clock::Clock::now(&*app.clock));
    let cold = fresh
        .get(&url, &net.pharmacist.token)
        .await
        .expect(200)
        .body;
    assert_eq!(fresh.state.plan_cache.counts(), (0, 1));
    assert_eq!(cold, first, "the same page read and parsed");

    // A new version, written through the other instance: the next page shows it.
    let mut changed = design_plan(Some(&pharmacy));
    changed["omt"]["temporary_adjustment"]["daily_dose_mg"] = json!(90);
    changed["analgesics"].as_array_mut().unwrap().pop();
    put_plan(&fresh, &net.gp, &patient, &changed, Some("\"1\""))
        .await
        .expect(200);
    let next = app.get(&url, &net.pharmacist.token).await.expect(200).body;
    assert_eq!(next["plan_version"], 2, "{next}");
    assert_eq!(next["omt"]["daily_dose_mg"], 90.0, "{next}");
    assert_eq!(next["analgesics"].as_array().unwrap().len(), 1, "{next}");
    let again = app.get(&url, &net.pharmacist.token).await.expect(200).body;
    assert_eq!(again, next);
    fresh.stop().await;

    // Consent withdrawn after cached reads: no page, the refusal audited.
    // Five pages so far, each audited (one by the second instance).
    assert_eq!(
        page_audit(&app, &net.pharmacist.id, &patient).await.len(),
        5
    );
    set_consent(&app, &net.gp, &patient, "withdrawn").await;
    app.get(&url, &net.pharmacist.token).await.problem(404);
    assert_eq!(
        page_audit(&app, &net.pharmacist.id, &patient).await,
        [
            "allowed", "allowed", "allowed", "allowed", "allowed", "denied"
        ]
    );
}

#[actix_web::test]
async fn a_pharmacist_removed_from_the_team_after_a_cached_page_gets_none() {
    let Setting {
        app,
        net,
        patient,
        pharmacy,
    } = setting().await;
    put_plan(&app, &net.gp, &patient, &design_plan(Some(&pharmacy)), None)
        .await
        .expect(201);
    let url = format!("/api/v1/patients/{patient}/analgesic-plan");
    app.get(&url, &net.pharmacist.token).await.expect(200);
    app.get(&url, &net.pharmacist.token).await.expect(200);
    assert!(app.state.plan_cache.counts().0 >= 1, "the page was cached");
    app.request(
        Method::DELETE,
        &format!("/api/v1/patients/{patient}/care-team/{}", net.pharmacist.id),
        Some(&net.gp.token),
        None,
    )
    .await
    .expect(204);
    app.get(&url, &net.pharmacist.token).await.problem(404);
    assert_eq!(
        page_audit(&app, &net.pharmacist.id, &patient).await,
        ["allowed", "allowed", "denied"]
    );
}
