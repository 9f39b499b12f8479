//! Hardening of input and output (issue 12, findings 8): security headers,
//! server-made request ids, the text rules, unknown query parameters,
//! checked date arithmetic on query values, one pagination contract.

use actix_web::http::Method;
use serde_json::json;

use crate::fixtures::{Network, add_member, create_patient, set_consent};
use crate::helpers::{TestApp, eventually, spawn_app, spawn_app_with};

fn header(resp: &crate::helpers::Resp, name: &str) -> Option<String> {
    resp.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

#[actix_web::test]
async fn every_api_answer_carries_the_security_headers() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let answers = [
        (200, app.get("/api/v1/me", &admin.token).await),
        (200, app.get("/api/v1/patients", &admin.token).await),
        // Errors too: the handler's, the extractor's and the router's.
        (
            401,
            app.request(Method::GET, "/api/v1/me", None, None).await,
        ),
        (
            400,
            app.get("/api/v1/patients/not-an-id", &admin.token).await,
        ),
        (404, app.get("/api/v1/no-such-route", &admin.token).await),
        (
            405,
            app.request(Method::DELETE, "/api/v1/me", Some(&admin.token), None)
                .await,
        ),
    ];
    for (status, resp) in &answers {
        assert_eq!(resp.status, *status, "{}", resp.body);
        assert_eq!(header(resp, "cache-control").as_deref(), Some("no-store"));
        assert_eq!(
            header(resp, "x-content-type-options").as_deref(),
            Some("nosniff")
        );
        assert_eq!(
            header(resp, "referrer-policy").as_deref(),
            Some("no-referrer")
        );
        assert!(
            header(resp, "content-security-policy")
                .is_some_and(|c| c.contains("default-src 'none'"))
        );
        // Served over http here: no HSTS, which browsers would ignore anyway.
        assert!(header(resp, "strict-transport-security").is_none());
    }
}

#[actix_web::test]
async fn the_docs_page_has_a_strict_policy_that_lets_it_work() {
    let app = spawn_app().await;
    let page = app.raw(Method::GET, "/docs/", &[], vec![]).await;
    assert_eq!(page.status, 200);
    let csp = header(&page, "content-security-policy").expect("a CSP on /docs/");
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(!csp.contains("unsafe-eval"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(csp.contains("connect-src 'self'"), "{csp}");
    assert_eq!(
        header(&page, "x-content-type-options").as_deref(),
        Some("nosniff")
    );
    // The page loads only files served beside it: no inline script.
    let html = app
        .request(Method::GET, "/docs/", None, None)
        .await
        .body
        .as_str()
        .map(str::to_owned)
        .unwrap_or_default();
    for script in html.split("<script").skip(1) {
        assert!(
            script.trim_start().starts_with("src="),
            "inline script: {script}"
        );
    }
}

#[actix_web::test]
async fn hsts_when_the_public_url_is_https() {
    let app = spawn_app_with(|s| s.server.public_url = "https://relais.example.org".into()).await;
    let resp = app
        .raw(Method::GET, "/api/v1/health/live", &[], vec![])
        .await;
    assert_eq!(
        header(&resp, "strict-transport-security").as_deref(),
        Some("max-age=31536000")
    );
}

#[actix_web::test]
async fn the_request_id_is_always_the_servers() {
    let app = spawn_app().await;
    let net = Network::new(&app).await;
    let patient = create_patient(&app, &net.gp, None).await;
    let forged = "forged-request-id-0001";
    let resp = app
        .raw(
            Method::GET,
            &format!("/api/v1/patients/{patient}"),
            &[
                ("authorization", &format!("Bearer {}", net.gp.token)),
                ("x-request-id", forged),
            ],
            vec![],
        )
        .await;
    assert_eq!(resp.status, 200);
    let returned = header(&resp, "x-request-id").expect("an id");
    assert_ne!(returned, forged);
    assert!(uuid::Uuid::parse_str(&returned).is_ok(), "{returned}");

    // The audit row of that read carries the server's id, never the client's.
    let path = format!("/api/v1/patients/{patient}/audit-events?limit=200");
    let returned_ref = &returned;
    eventually("the read is audited", || {
        let (app, path, token) = (&app, path.clone(), net.gp.token.clone());
        async move {
            let trail = app.get(&path, &token).await.expect(200).body;
            let ids: Vec<String> = trail["items"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|e| e["request_id"].as_str().map(str::to_owned))
                .collect();
            assert!(!ids.iter().any(|id| id == forged), "{ids:?}");
            ids.iter().any(|id| id == returned_ref)
        }
    })
    .await;
}

#[actix_web::test]
async fn unknown_query_parameters_are_refused_by_name() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    // A misspelt filter would silently widen the list.
    let problem = app
        .get("/api/v1/patients?qq=martin", &admin.token)
        .await
        .invalid_field_400("qq");
    assert!(problem["detail"].as_str().unwrap().contains("qq"));
    // A misspelt cursor would loop the client on the first page.
    app.get("/api/v1/users?limit=1&curser=x", &admin.token)
        .await
        .invalid_field_400("curser");
    // Routes without any query parameter refuse them too.
    app.get("/api/v1/me?verbose=1", &admin.token)
        .await
        .invalid_field_400("verbose");
    // Documented parameters still pass.
    app.get("/api/v1/users?limit=1&q=ada", &admin.token)
        .await
        .expect(200);
    app.get("/api/v1/health/live?", &admin.token)
        .await
        .expect(200);
}

#[actix_web::test]
async fn metrics_with_extreme_dates_are_refused_not_dropped() {
    let app = spawn_app().await;
    let net = Network::new(&app).await;
    let centre = &net.pain_centre;
    for query in [
        "to=-262143-01-01T00:00:00Z",
        "from=-262143-01-01T00:00:00Z",
        "to=+262142-12-31T23:59:59Z",
        "from=0000-01-01T00:00:00Z&to=0000-01-02T00:00:00Z",
    ] {
        let resp = app
            .get(
                &format!("/api/v1/organizations/{centre}/consultation-metrics?{query}"),
                &net.specialist.token,
            )
            .await;
        assert_eq!(resp.status, 400, "{query}: {}", resp.body);
        assert!(resp.body["errors"][0]["field"].as_str().is_some());
    }
    // The usual window still answers.
    app.get(
        &format!(
            "/api/v1/organizations/{centre}/consultation-metrics?from=2026-01-01T00:00:00Z&to=2027-01-01T00:00:00Z"
        ),
        &net.specialist.token,
    )
    .await
    .expect(200);
    // Other date filters are bounded the same way.
    let admin = app.admin().await;
    app.get(
        "/api/v1/audit-events?from=-262143-01-01T00:00:00Z",
        &admin.token,
    )
    .await
    .invalid_field_400("from");
}

/// A patient shared by the GP and the hospital doctor; returns its thread.
async fn shared_thread(app: &TestApp, net: &Network) -> String {
    let patient = create_patient(app, &net.gp, None).await;
    set_consent(app, &net.gp, &patient, "granted").await;
    add_member(app, &net.gp, &patient, &net.hospital).await;
    app.get(&format!("/api/v1/patients/{patient}"), &net.gp.token)
        .await
        .expect(200)
        .body["thread_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[actix_web::test]
async fn a_client_following_next_cursor_reads_a_thread_to_its_end() {
    let app = spawn_app().await;
    let net = Network::new(&app).await;
    let thread = shared_thread(&app, &net).await;
    for n in 0..5 {
        app.post(
            &format!("/api/v1/threads/{thread}/messages"),
            &net.gp.token,
            json!({"body": format!("message {n}")}),
        )
        .await
        .expect(201);
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10 {
        let mut path = format!("/api/v1/threads/{thread}/messages?limit=2");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let page = app.get(&path, &net.hospital.token).await.expect(200).body;
        for m in page["items"].as_array().unwrap() {
            seen.push(m["body"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    let expected: Vec<String> = (0..5).map(|n| format!("message {n}")).collect();
    assert_eq!(seen, expected);
    // `after` stays an alias of `cursor`.
    let first = app
        .get(
            &format!("/api/v1/threads/{thread}/messages?limit=1"),
            &net.hospital.token,
        )
        .await
        .expect(200)
        .body;
    let next = first["next_cursor"].as_str().unwrap();
    let by_after = app
        .get(
            &format!("/api/v1/threads/{thread}/messages?limit=1&after={next}"),
            &net.hospital.token,
        )
        .await
        .expect(200)
        .body;
    assert_eq!(by_after["items"][0]["body"], "message 1");
    // Both at once: the later one counts.
    let both = app
        .get(
            &format!(
                "/api/v1/threads/{thread}/messages?limit=1&cursor={next}&after={}",
                by_after["items"][0]["id"].as_str().unwrap()
            ),
            &net.hospital.token,
        )
        .await
        .expect(200)
        .body;
    assert_eq!(both["items"][0]["body"], "message 2");
}

#[actix_web::test]
async fn names_refuse_invisible_and_reordering_characters() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    for (name, what) in [
        ("Cabinet \u{202E}troP ud", "right-to-left override"),
        ("Cabinet\u{200B}du Port", "zero-width space"),
        ("\u{FEFF}Cabinet", "byte-order mark"),
        ("Cabinet\u{2066}du Port", "isolate"),
        ("Cabinet\u{7}", "control"),
    ] {
        let resp = app
            .post(
                "/api/v1/organizations",
                &admin.token,
                json!({"name": name, "kind": "gp_practice"}),
            )
            .await;
        assert_eq!(resp.status, 422, "{what}: {}", resp.body);
        assert_eq!(resp.body["errors"][0]["field"], "name", "{what}");
    }
    let net = Network::new(&app).await;
    let mut body = crate::fixtures::patient_body(None);
    body["family_name"] = json!("Le\u{202E}Gall");
    app.post("/api/v1/patients", &net.gp.token, body)
        .await
        .invalid_field("family_name");
    let mut body = crate::fixtures::patient_body(None);
    body["given_names"] = json!("Maï\u{200B}wenn");
    app.post("/api/v1/patients", &net.gp.token, body)
        .await
        .invalid_field("given_names");
    app.patch(
        "/api/v1/me",
        &net.gp.token,
        json!({"full_name": "Dr\u{202D} Who"}),
    )
    .await
    .invalid_field("full_name");
    // Accents and apostrophes are names, of course.
    app.post(
        "/api/v1/organizations",
        &admin.token,
        json!({"name": "Pharmacie de l’Étang-Salé", "kind": "pharmacy"}),
    )
    .await
    .expect(201);
}

#[actix_web::test]
async fn free_text_keeps_emoji_but_refuses_bidirectional_overrides() {
    let app = spawn_app().await;
    let net = Network::new(&app).await;
    let thread = shared_thread(&app, &net).await;
    // A health worker emoji: woman, zero-width joiner, staff of Aesculapius, VS16.
    let body = "Vu ce matin 👩\u{200D}⚕\u{FE0F}, douleur 3/10 👍🏽\nÀ revoir demain.";
    let posted = app
        .post(
            &format!("/api/v1/threads/{thread}/messages"),
            &net.gp.token,
            json!({"body": body}),
        )
        .await
        .expect(201);
    assert_eq!(posted.body["body"], body);
    for bad in [
        "dose \u{202E}01\u{202C} mg",
        "dose \u{2067}10",
        "a\u{1b}[31mred",
    ] {
        app.post(
            &format!("/api/v1/threads/{thread}/messages"),
            &net.gp.token,
            json!({"body": bad}),
        )
        .await
        .invalid_field("body");
    }
}

/// Follows `next_cursor` from `path` (which has a `?`), `limit` at a time.
async fn walk(app: &TestApp, path: &str, token: &str) -> Vec<serde_json::Value> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..20 {
        let mut at = path.to_owned();
        if let Some(c) = &cursor {
            at.push_str(&format!("&cursor={c}"));
        }
        let page = app.get(&at, token).await.expect(200).body;
        items.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return items,
        }
    }
    panic!("{path}: the cursor never ended");
}

#[actix_web::test]
async fn per_patient_lists_page_like_every_other() {
    let app = spawn_app().await;
    let net = Network::new(&app).await;
    let patient = create_patient(&app, &net.gp, None).await;
    set_consent(&app, &net.gp, &patient, "granted").await;
    add_member(&app, &net.gp, &patient, &net.hospital).await;
    add_member(&app, &net.gp, &patient, &net.pharmacist).await;
    let team = walk(
        &app,
        &format!("/api/v1/patients/{patient}/care-team?limit=1"),
        &net.gp.token,
    )
    .await;
    let ids: Vec<&str> = team
        .iter()
        .map(|m| m["user_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [&net.gp.id, &net.hospital.id, &net.pharmacist.id]);

    for reason in [
        "Avis douleur pour ce patient",
        "Soins post-opératoires à domicile",
    ] {
        let who = if reason.starts_with("Avis") {
            &net.specialist
        } else {
            &net.nurse
        };
        app.post(
            &format!("/api/v1/patients/{patient}/access-requests"),
            &who.token,
            json!({"reason": reason}),
        )
        .await
        .expect(201);
    }
    let requests = walk(
        &app,
        &format!("/api/v1/patients/{patient}/access-requests?limit=1"),
        &net.gp.token,
    )
    .await;
    assert_eq!(requests.len(), 2);

    let mut plan = crate::fixtures::design_plan(None);
    for n in 0..3 {
        plan["change_summary"] = json!(format!("change {n}"));
        let current = app
            .get(
                &format!("/api/v1/patients/{patient}/care-plan"),
                &net.gp.token,
            )
            .await;
        let etag = header(&current, "etag");
        let headers: Vec<(&str, String)> = etag.map(|e| ("if-match", e)).into_iter().collect();
        app.request_with(
            Method::PUT,
            &format!("/api/v1/patients/{patient}/care-plan"),
            Some(&net.gp.token),
            Some(&plan),
            &headers,
        )
        .await
        .expect(if n == 0 { 201 } else { 200 });
    }
    let versions = walk(
        &app,
        &format!("/api/v1/patients/{patient}/care-plan/versions?limit=2"),
        &net.gp.token,
    )
    .await;
    let numbers: Vec<i64> = versions
        .iter()
        .map(|v| v["version"].as_i64().unwrap())
        .collect();
    assert_eq!(numbers, [1, 2, 3]);

    // A cursor the list never gave ends it (as past the last row elsewhere).
    let past = app
        .get(
            &format!("/api/v1/patients/{patient}/care-team?cursor=nonsense"),
            &net.gp.token,
        )
        .await
        .expect(200)
        .body;
    assert!(past["items"].as_array().unwrap().is_empty());
    assert!(past["next_cursor"].is_null());
}
