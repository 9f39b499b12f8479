//! The clinical context: versions, recorders, staleness, and the rules that
//! use it through the API (the dry run and plan writes), at their boundaries.

use actix_web::http::Method;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::fixtures::{Network, add_member, create_patient, set_consent};
use crate::helpers::{Resp, Session, TestApp, spawn_app};

/// Mid-morning in Paris on 2026-12-01: "today" is that day.
fn morning() -> DateTime<Utc> {
    "2026-12-01T09:00:00Z".parse().unwrap()
}

async fn put_context(
    app: &TestApp,
    by: &Session,
    patient: &str,
    body: &Value,
    if_match: Option<&str>,
) -> Resp {
    let headers: Vec<(&str, String)> = if_match
        .map(|v| vec![("If-Match", v.to_owned())])
        .unwrap_or_default();
    app.request_with(
        Method::PUT,
        &format!("/api/v1/patients/{patient}/clinical-context"),
        Some(&by.token),
        Some(body),
        &headers,
    )
    .await
}

fn codes(body: &Value) -> Vec<String> {
    let mut c: Vec<String> = body["warnings"]
        .as_array()
        .unwrap_or_else(|| panic!("no warnings in {body}"))
        .iter()
        .map(|w| w["code"].as_str().unwrap().to_owned())
        .collect();
    c.sort();
    c
}

/// A patient of the GP with the hospital doctor and the pharmacist on the team.
async fn team_patient(app: &TestApp, net: &Network) -> String {
    let patient = create_patient(app, &net.gp, None).await;
    set_consent(app, &net.gp, &patient, "granted").await;
    add_member(app, &net.gp, &patient, &net.hospital).await;
    add_member(app, &net.gp, &patient, &net.pharmacist).await;
    patient
}

#[actix_web::test]
async fn versions_with_etag_recorders_and_permissions() {
    let app = spawn_app().await;
    app.clock.set(morning());
    let net = Network::new(&app).await;
    let patient = team_patient(&app, &net).await;
    let url = format!("/api/v1/patients/{patient}/clinical-context");
    app.get(&url, &net.gp.token).await.problem(404);

    let first = json!({
        "hepatic_impairment": "mild",
        "egfr": {"value": 25, "measured_on": "2026-11-20"},
        "qtc_ms": {"value": 470, "measured_on": "2025-11-01"},
        "breastfeeding": false,
        "allergies": [{"drug": "ibuprofen"}, {"class": "nsaid"}],
        "respiratory_disease": ["copd"]
    });
    let created = put_context(&app, &net.gp, &patient, &first, None)
        .await
        .expect(201);
    assert_eq!(created.headers.get("etag").unwrap(), "\"1\"");
    assert_eq!(created.body["version"], 1);
    assert_eq!(
        created.body["recorded"]["egfr"]["recorded_by"]["id"],
        net.gp.id
    );
    assert_eq!(
        created.body["stale"],
        json!(["qtc_ms"]),
        "QTc older than a year"
    );

    // The pharmacist reads (any basis) but does not write.
    let read = app.get(&url, &net.pharmacist.token).await.expect(200);
    assert_eq!(read.headers.get("etag").unwrap(), "\"1\"");
    assert_eq!(read.body["context"]["allergies"][1]["class"], "nsaid");
    put_context(&app, &net.pharmacist, &patient, &first, Some("\"1\""))
        .await
        .problem(403);

    let mut second = first.clone();
    second["egfr"] = json!({"value": 40, "measured_on": "2026-11-30"});
    put_context(&app, &net.hospital, &patient, &second, None)
        .await
        .problem(428);
    put_context(&app, &net.hospital, &patient, &second, Some("\"2\""))
        .await
        .problem(412);
    let updated = put_context(&app, &net.hospital, &patient, &second, Some("\"1\""))
        .await
        .expect(200);
    assert_eq!(updated.headers.get("etag").unwrap(), "\"2\"");
    assert_eq!(
        updated.body["recorded"]["egfr"]["recorded_by"]["id"],
        net.hospital.id
    );
    assert_eq!(
        updated.body["recorded"]["breastfeeding"]["recorded_by"]["id"], net.gp.id,
        "an unchanged value keeps its recorder"
    );

    // Bad input names the field.
    let mut bad = second.clone();
    bad["qtc_ms"] = json!({"value": 470, "measured_on": "2026-12-02"});
    put_context(&app, &net.gp, &patient, &bad, Some("\"2\""))
        .await
        .invalid_field("qtc_ms.measured_on");
    bad["qtc_ms"] = json!({"value": 9000, "measured_on": "2026-11-02"});
    put_context(&app, &net.gp, &patient, &bad, Some("\"2\""))
        .await
        .invalid_field("qtc_ms.value");
    bad["qtc_ms"] = Value::Null;
    bad["allergies"] = json!([{"drug": "unobtainium"}]);
    put_context(&app, &net.gp, &patient, &bad, Some("\"2\""))
        .await
        .invalid_field("allergies[0].drug");
    bad["allergies"] = json!([]);
    bad["hepatic_impairment"] = json!("terrible");
    let resp = put_context(&app, &net.gp, &patient, &bad, Some("\"2\"")).await;
    assert!(
        resp.status == 400 || resp.status == 422,
        "{}: {}",
        resp.status,
        resp.body
    );
    assert!(resp.body.to_string().contains("hepatic_impairment"));

    // Every write is in the patient's audit trail.
    let trail = app
        .get(
            &format!("/api/v1/patients/{patient}/audit-events?limit=200"),
            &net.gp.token,
        )
        .await
        .expect(200);
    let writes = trail.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["resource_type"] == "clinical_context" && e["outcome"] == "allowed")
        .count();
    assert_eq!(writes, 2);
}

fn check_body(omt: Value, analgesics: Value, context: Option<Value>) -> Value {
    let mut body = json!({"status": "active", "omt": omt, "analgesics": analgesics});
    if let Some(c) = context {
        body["clinical_context"] = c;
    }
    body
}

fn no_omt() -> Value {
    json!({"medication": "none"})
}

fn methadone(mg: f64) -> Value {
    json!({"medication": "methadone", "daily_dose_mg": mg, "doses_per_day": 1})
}

fn line(drug: &str, dose: f64, times: u8) -> Value {
    json!({"drug": drug, "dose_mg": dose, "times_per_day": times, "start": "2026-11-30", "end": "2026-12-04"})
}

/// A man of unknown age with every value known and harmless, changed by `patch`.
fn context(patch: Value) -> Value {
    let mut c = json!({
        "hepatic_impairment": "none",
        "egfr": {"value": 90, "measured_on": "2026-11-20"},
        "qtc_ms": {"value": 420, "measured_on": "2026-11-20"},
        "weight_kg": {"value": 70, "measured_on": "2026-11-20"},
        "breastfeeding": false,
        "alcohol_use_disorder": false,
        "respiratory_disease": [],
        "allergies": [],
        "pregnancy_weeks": {"value": 0, "measured_on": "2026-11-30"}
    });
    for (k, v) in patch.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

#[actix_web::test]
async fn the_dry_run_with_an_inline_context_at_every_boundary() {
    let app = spawn_app().await;
    app.clock.set(morning());
    let net = Network::new(&app).await;
    let para = |mg: f64| {
        let mut l = line("paracetamol", 1000.0, 4);
        l["max_daily_mg"] = json!(mg);
        json!([l])
    };
    let measure = |v: f64| json!({"value": v, "measured_on": "2026-11-20"});
    let nsaid = || json!([line("ibuprofen", 400.0, 3)]);
    // (omt, lines, context patch, expected codes besides the age info of an inline context)
    let table: Vec<(Value, Value, Value, Vec<&str>)> = vec![
        (
            no_omt(),
            para(2900.0),
            json!({"hepatic_impairment": "moderate"}),
            vec![],
        ),
        (
            no_omt(),
            para(3000.0),
            json!({"alcohol_use_disorder": true}),
            vec![],
        ),
        (
            no_omt(),
            para(3100.0),
            json!({"weight_kg": measure(48.0)}),
            vec!["paracetamol.risk_factor_above_3g"],
        ),
        (
            no_omt(),
            para(3100.0),
            json!({"weight_kg": null}),
            vec!["paracetamol.risk_factor_unknown"],
        ),
        (
            methadone(60.0),
            json!([]),
            json!({"qtc_ms": measure(449.0)}),
            vec![],
        ),
        (
            methadone(60.0),
            json!([]),
            json!({"qtc_ms": measure(450.0)}),
            vec!["methadone.qtc_450_499"],
        ),
        (
            methadone(60.0),
            json!([]),
            json!({"qtc_ms": measure(499.0)}),
            vec!["methadone.qtc_450_499"],
        ),
        (
            methadone(60.0),
            json!([]),
            json!({"qtc_ms": measure(500.0)}),
            vec!["methadone.qtc_500"],
        ),
        (
            methadone(120.0),
            json!([]),
            json!({"qtc_ms": null}),
            vec!["methadone.high_dose_without_qtc"],
        ),
        // 366 days old: as if unknown.
        (
            methadone(60.0),
            json!([]),
            json!({"qtc_ms": {"value": 520, "measured_on": "2025-11-30"}}),
            vec!["methadone.qtc_unknown"],
        ),
        (
            no_omt(),
            nsaid(),
            json!({"egfr": measure(29.0)}),
            vec!["nsaid.context_unknown", "nsaid.egfr_below_30"],
        ),
        (
            no_omt(),
            nsaid(),
            json!({"egfr": measure(30.0)}),
            vec!["nsaid.context_unknown", "nsaid.egfr_30_59"],
        ),
        (
            no_omt(),
            nsaid(),
            json!({"egfr": measure(59.0)}),
            vec!["nsaid.context_unknown", "nsaid.egfr_30_59"],
        ),
        (
            no_omt(),
            nsaid(),
            json!({"egfr": measure(60.0)}),
            vec!["nsaid.context_unknown"],
        ),
        // 91 days old: unknown, and said so.
        (
            no_omt(),
            nsaid(),
            json!({"egfr": {"value": 20, "measured_on": "2026-09-01"}}),
            vec!["nsaid.context_unknown"],
        ),
        (
            no_omt(),
            nsaid(),
            json!({"pregnancy_weeks": {"value": 23, "measured_on": "2026-12-01"}}),
            vec!["nsaid.context_unknown"],
        ),
        (
            no_omt(),
            nsaid(),
            json!({"pregnancy_weeks": {"value": 23, "measured_on": "2026-11-24"}}),
            vec!["nsaid.context_unknown", "nsaid.pregnancy_24_weeks"],
        ),
        (
            no_omt(),
            nsaid(),
            json!({"pregnancy_weeks": {"value": 24, "measured_on": "2026-12-01"}}),
            vec!["nsaid.context_unknown", "nsaid.pregnancy_24_weeks"],
        ),
        (
            no_omt(),
            json!([line("codeine", 30.0, 3)]),
            json!({"breastfeeding": true}),
            vec!["breastfeeding.codeine_tramadol"],
        ),
        (
            methadone(60.0),
            json!([line("diazepam", 5.0, 1)]),
            json!({"respiratory_disease": ["sleep_apnoea"]}),
            vec!["opioid.cns_depressant", "opioid.cns_depressant_respiratory"],
        ),
        (
            json!({"medication": "buprenorphine", "daily_dose_mg": 8, "doses_per_day": 1}),
            json!([]),
            json!({"hepatic_impairment": "severe"}),
            vec!["buprenorphine.hepatic_severe"],
        ),
        (
            methadone(60.0),
            json!([]),
            json!({"hepatic_impairment": "severe"}),
            vec!["methadone.hepatic_severe"],
        ),
        (
            no_omt(),
            json!([line("ketoprofen", 50.0, 2)]),
            json!({"allergies": [{"class": "nsaid"}]}),
            vec!["allergy.recorded", "nsaid.context_unknown"],
        ),
    ];
    let mut failures = Vec::new();
    for (omt, lines, patch, want) in table {
        let body = check_body(omt, lines, Some(context(patch.clone())));
        let got = app
            .post("/api/v1/care-plans/check", &net.gp.token, body)
            .await
            .expect(200);
        let want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
        let got_codes = codes(&got.body);
        if got_codes != want {
            failures.push(format!("{patch}: got {got_codes:?}, want {want:?}"));
        }
        let blocking = got.body["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["severity"] == "blocking");
        assert_eq!(got.body["blocked"], blocking, "{patch}");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // The unknown age of an inline context is named.
    let got = app
        .post(
            "/api/v1/care-plans/check",
            &net.gp.token,
            check_body(no_omt(), nsaid(), Some(context(json!({})))),
        )
        .await
        .expect(200);
    assert_eq!(got.body["warnings"][0]["missing"], json!(["age"]));
    assert_eq!(got.body["warnings"][0]["severity"], "info");

    // Without any context the rules say they did not see the patient.
    let got = app
        .post(
            "/api/v1/care-plans/check",
            &net.gp.token,
            check_body(no_omt(), nsaid(), None),
        )
        .await
        .expect(200);
    assert_eq!(codes(&got.body), ["context.none"]);

    // Bad inline input names its field.
    let mut bad = check_body(
        no_omt(),
        nsaid(),
        Some(context(
            json!({"egfr": {"value": -3, "measured_on": "2026-11-20"}}),
        )),
    );
    app.post("/api/v1/care-plans/check", &net.gp.token, bad.clone())
        .await
        .invalid_field("clinical_context.egfr.value");
    bad["clinical_context"] = Value::Null;
    bad["patient_id"] = json!("not-an-id");
    app.post("/api/v1/care-plans/check", &net.gp.token, bad)
        .await
        .invalid_field("patient_id");
}

#[actix_web::test]
async fn the_stored_context_and_age_feed_the_check_and_the_plan() {
    let app = spawn_app().await;
    app.clock.set(morning());
    let net = Network::new(&app).await;
    // Born on 1951-12-01: 75 today.
    let mut body = crate::fixtures::patient_body(None);
    body["birth_date"] = json!("1951-12-01");
    body["sex"] = json!("male");
    let patient = app
        .post("/api/v1/patients", &net.gp.token, body)
        .await
        .expect(201)
        .body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    set_consent(&app, &net.gp, &patient, "granted").await;
    add_member(&app, &net.gp, &patient, &net.pharmacist).await;
    let with_patient = |lines: Value| {
        let mut b = check_body(no_omt(), lines, None);
        b["patient_id"] = json!(patient);
        b
    };
    let ibuprofen = || json!([line("ibuprofen", 400.0, 3)]);

    // No context stored yet: said so.
    let got = app
        .post(
            "/api/v1/care-plans/check",
            &net.pharmacist.token,
            with_patient(ibuprofen()),
        )
        .await
        .expect(200);
    assert_eq!(codes(&got.body), ["context.none"]);

    put_context(
        &app,
        &net.gp,
        &patient,
        &context(json!({"egfr": {"value": 25, "measured_on": "2026-11-20"}})),
        None,
    )
    .await
    .expect(201);
    let got = app
        .post(
            "/api/v1/care-plans/check",
            &net.pharmacist.token,
            with_patient(ibuprofen()),
        )
        .await
        .expect(200);
    assert_eq!(codes(&got.body), ["nsaid.age_75", "nsaid.egfr_below_30"]);
    assert_eq!(got.body["blocked"], true);

    // An inline context with the patient: the inline values, the patient's age.
    let mut inline = with_patient(ibuprofen());
    inline["clinical_context"] = context(json!({}));
    let got = app
        .post("/api/v1/care-plans/check", &net.pharmacist.token, inline)
        .await
        .expect(200);
    assert_eq!(codes(&got.body), ["nsaid.age_75"]);

    // A caller with no basis on the patient learns nothing of them.
    app.post(
        "/api/v1/care-plans/check",
        &net.specialist.token,
        with_patient(ibuprofen()),
    )
    .await
    .problem(404);

    // The plan write is blocked by the stored eGFR until acknowledged.
    let mut plan = json!({
        "status": "active", "omt": no_omt(), "analgesics": ibuprofen(),
        "change_summary": "ibuprofen for the knee"
    });
    let url = format!("/api/v1/patients/{patient}/care-plan");
    let blocked = app
        .request(Method::PUT, &url, Some(&net.gp.token), Some(&plan))
        .await
        .problem(422);
    assert_eq!(blocked["warnings"][0]["code"], "nsaid.egfr_below_30");
    plan["acknowledged_warnings"] = json!([{"code": "nsaid.egfr_below_30", "justification": "two days only, creatinine checked on Friday"}]);
    let written = app
        .request(Method::PUT, &url, Some(&net.gp.token), Some(&plan))
        .await
        .expect(201);
    assert_eq!(
        codes(&written.body),
        ["nsaid.age_75", "nsaid.egfr_below_30"]
    );

    // Ninety-one days later the eGFR no longer counts: the rules say it is unknown.
    app.clock.advance(chrono::Duration::days(81));
    let pharmacist = app
        .login("pharmacist@relais.test", crate::helpers::PASSWORD)
        .await;
    let got = app
        .post(
            "/api/v1/care-plans/check",
            &pharmacist.token,
            with_patient(ibuprofen()),
        )
        .await
        .expect(200);
    assert_eq!(codes(&got.body), ["nsaid.age_75", "nsaid.context_unknown"]);
    assert!(
        got.body["warnings"][1]["missing"]
            .as_array()
            .unwrap()
            .contains(&json!("egfr"))
    );
}
