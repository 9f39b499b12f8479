//! The TOTP second factor: enrolment, sign-ins that need a code, recovery
//! codes, the enrol-only token of `auth.require_mfa_roles`, throttling, and
//! the audit rows of every authentication event (which never hold a secret).

use actix_web::http::Method;
use diesel::prelude::*;
use relais::auth::mfa;
use relais::clock::Clock;
use relais::db::schema::audit_events;
use relais::domain::role::Role;
use serde_json::json;

use crate::helpers::{PASSWORD, Session, TestApp, session_of, spawn_app, spawn_app_with};

/// The current code for `secret` on the server's clock.
fn code_now(app: &TestApp, secret: &str) -> String {
    let unix = u64::try_from(app.clock.now().timestamp()).unwrap();
    mfa::code_at(secret, unix).unwrap()
}

/// The next step's code: the clock moves 30 s on first (a code is accepted once).
fn next_code(app: &TestApp, secret: &str) -> String {
    app.clock.advance(chrono::Duration::seconds(30));
    code_now(app, secret)
}

async fn gp(app: &TestApp, email: &str) -> Session {
    let admin = app.admin().await;
    let org = app.create_org(&admin, "Cabinet", "gp_practice").await;
    app.onboard(&admin, email, "gp", &org).await
}

/// Enrols and confirms a factor; returns the secret and the recovery codes.
async fn enrol(app: &TestApp, session: &Session) -> (String, Vec<String>) {
    let begun = app
        .request(
            Method::POST,
            "/api/v1/me/mfa/totp",
            Some(&session.token),
            None,
        )
        .await
        .expect(201);
    let secret = begun.body["secret"].as_str().unwrap().to_owned();
    let uri = begun.body["otpauth_uri"].as_str().unwrap();
    assert!(uri.starts_with("otpauth://totp/Relais:"), "{uri}");
    assert!(uri.contains(&format!("secret={secret}")), "{uri}");
    let confirmed = app
        .post(
            "/api/v1/me/mfa/totp/confirm",
            &session.token,
            json!({"code": code_now(app, &secret)}),
        )
        .await
        .expect(200);
    let codes: Vec<String> = confirmed.body["recovery_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(codes.len(), 10);
    (secret, codes)
}

async fn login(app: &TestApp, email: &str, otp: Option<&str>) -> crate::helpers::Resp {
    let mut body = json!({"email": email, "password": PASSWORD});
    if let Some(otp) = otp {
        body["otp"] = json!(otp);
    }
    app.post_anon("/api/v1/auth/login", body).await
}

#[actix_web::test]
async fn an_enrolled_account_signs_in_with_a_code_accepted_once() {
    let app = spawn_app().await;
    let email = "gp-mfa@relais.test";
    let session = gp(&app, email).await;
    let (secret, recovery) = enrol(&app, &session).await;

    // Without a code, or with a wrong one: 401 naming `otp`.
    let problem = login(&app, email, None).await.problem(401);
    assert_eq!(problem["errors"][0]["field"], "otp", "{problem}");
    let problem = login(&app, email, Some("000000")).await.problem(401);
    assert_eq!(problem["errors"][0]["field"], "otp", "{problem}");

    let code = next_code(&app, &secret);
    let signed_in = login(&app, email, Some(&code)).await.expect(200);
    assert_eq!(signed_in.body["mfa_enrolment_required"], false);
    // The same code again: refused.
    login(&app, email, Some(&code)).await.problem(401);

    // A recovery code works once.
    login(&app, email, Some(&recovery[0])).await.expect(200);
    login(&app, email, Some(&recovery[0])).await.problem(401);
    login(&app, email, Some(&recovery[1].to_uppercase()))
        .await
        .expect(200);

    // Enrolling again needs the old factor removed first.
    app.request(
        Method::POST,
        "/api/v1/me/mfa/totp",
        Some(&session.token),
        None,
    )
    .await
    .problem(409);
}

#[actix_web::test]
async fn removing_the_factor_needs_a_code() {
    let app = spawn_app().await;
    let email = "gp-remove@relais.test";
    let session = gp(&app, email).await;
    let (secret, _) = enrol(&app, &session).await;
    let path = "/api/v1/me/mfa/totp";
    app.request(
        Method::DELETE,
        path,
        Some(&session.token),
        Some(&json!({"code": "123456"})),
    )
    .await
    .invalid_field("code");
    let code = next_code(&app, &secret);
    app.request(
        Method::DELETE,
        path,
        Some(&session.token),
        Some(&json!({"code": code})),
    )
    .await
    .expect(204);
    login(&app, email, None).await.expect(200);
    app.request(
        Method::DELETE,
        path,
        Some(&session.token),
        Some(&json!({"code": code})),
    )
    .await
    .problem(404);
}

#[actix_web::test]
async fn a_wrong_confirmation_code_is_refused_and_nothing_is_enrolled() {
    let app = spawn_app().await;
    let email = "gp-confirm@relais.test";
    let session = gp(&app, email).await;
    app.request(
        Method::POST,
        "/api/v1/me/mfa/totp",
        Some(&session.token),
        None,
    )
    .await
    .expect(201);
    app.post(
        "/api/v1/me/mfa/totp/confirm",
        &session.token,
        json!({"code": "12345x"}),
    )
    .await
    .invalid_field("code");
    // Not confirmed: password sign-ins need no code.
    login(&app, email, None).await.expect(200);
    // Nothing to confirm without an enrolment in progress (after removal… here: a fresh account).
    let other = gp(&app, "gp-confirm-2@relais.test").await;
    app.post(
        "/api/v1/me/mfa/totp/confirm",
        &other.token,
        json!({"code": "123456"}),
    )
    .await
    .problem(409);
}

#[actix_web::test]
async fn wrong_codes_are_throttled_like_passwords() {
    let app = spawn_app().await;
    let email = "gp-throttle@relais.test";
    let session = gp(&app, email).await;
    let (secret, _) = enrol(&app, &session).await;
    let limit = app.settings.auth.login_max_failures;
    for _ in 0..limit {
        login(&app, email, Some("000000")).await.problem(401);
    }
    // Even the right code is refused now: the account is throttled here.
    let code = next_code(&app, &secret);
    login(&app, email, Some(&code)).await.problem(429);
}

#[actix_web::test]
async fn a_role_that_needs_a_second_factor_gets_an_enrol_only_token_until_it_has_one() {
    let app = spawn_app_with(|s| s.auth.require_mfa_roles = vec![Role::Gp]).await;
    let email = "gp-required@relais.test";
    // The invitation's own sign-in is by password too: the onboarding
    // session is already limited.
    let first = gp(&app, email).await;
    let limited = login(&app, email, None).await.expect(200);
    assert_eq!(limited.body["mfa_enrolment_required"], true);
    let limited = session_of(&limited.body);
    app.get("/api/v1/me", &limited.token).await.problem(403);
    app.get("/api/v1/patients", &first.token).await.problem(403);
    // A refresh keeps the limit.
    let refreshed = app
        .post_anon(
            "/api/v1/auth/refresh",
            json!({"refresh_token": limited.refresh_token}),
        )
        .await
        .expect(200);
    assert_eq!(refreshed.body["mfa_enrolment_required"], true);
    let limited = session_of(&refreshed.body);
    app.get("/api/v1/me", &limited.token).await.problem(403);

    let (secret, _) = enrol(&app, &limited).await;
    // Enrolled: the same session is a full one now.
    app.get("/api/v1/me", &limited.token).await.expect(200);
    let code = next_code(&app, &secret);
    let full = login(&app, email, Some(&code)).await.expect(200);
    assert_eq!(full.body["mfa_enrolment_required"], false);
    app.get("/api/v1/me", full.body["access_token"].as_str().unwrap())
        .await
        .expect(200);
    // Other roles are not concerned.
    let admin = login(&app, crate::helpers::ADMIN_EMAIL, None)
        .await
        .expect(200);
    assert_eq!(admin.body["mfa_enrolment_required"], false);
}

/// Every column of every audit row, as text.
async fn audit_rows(app: &TestApp) -> Vec<Vec<Option<String>>> {
    type Row = (
        Option<String>,
        Option<String>,
        String,
        String,
        Option<String>,
        String,
        Option<String>,
    );
    let rows: Vec<Row> = app
        .state
        .db
        .read(|conn| {
            Ok(audit_events::table
                .order(audit_events::seq)
                .select((
                    audit_events::actor_id,
                    audit_events::actor_role,
                    audit_events::action,
                    audit_events::resource_type,
                    audit_events::resource_id,
                    audit_events::outcome,
                    audit_events::client_ip,
                ))
                .load(conn)?)
        })
        .await
        .unwrap();
    rows.into_iter()
        .map(|(a, b, c, d, e, f, g)| vec![a, b, Some(c), Some(d), e, Some(f), g])
        .collect()
}

fn has_row(rows: &[Vec<Option<String>>], kind: &str, detail: &str, outcome: &str) -> bool {
    rows.iter().any(|r| {
        r[3].as_deref() == Some(kind)
            && r[4].as_deref() == Some(detail)
            && r[5].as_deref() == Some(outcome)
    })
}

#[actix_web::test]
async fn authentication_events_are_audited_without_any_secret() {
    let app = spawn_app().await;
    let email = "gp-audit@relais.test";
    let session = gp(&app, email).await;
    let mut secrets: Vec<String> = vec![
        PASSWORD.into(),
        session.token.clone(),
        session.refresh_token.clone(),
    ];

    // Sign-ins: wrong password, unknown account, success.
    app.post_anon(
        "/api/v1/auth/login",
        json!({"email": email, "password": "wrong password!"}),
    )
    .await
    .problem(401);
    secrets.push("wrong password!".into());
    app.post_anon(
        "/api/v1/auth/login",
        json!({"email": "nobody@relais.test", "password": PASSWORD}),
    )
    .await
    .problem(401);
    let signed_in = session_of(&login(&app, email, None).await.expect(200).body);
    secrets.extend([signed_in.token.clone(), signed_in.refresh_token.clone()]);

    // Refresh, reuse, logout.
    let refreshed = app
        .post_anon(
            "/api/v1/auth/refresh",
            json!({"refresh_token": signed_in.refresh_token}),
        )
        .await
        .expect(200);
    let refreshed = session_of(&refreshed.body);
    secrets.extend([refreshed.token.clone(), refreshed.refresh_token.clone()]);
    app.post_anon(
        "/api/v1/auth/refresh",
        json!({"refresh_token": signed_in.refresh_token}),
    )
    .await
    .problem(401);
    let again = session_of(&login(&app, email, None).await.expect(200).body);
    secrets.extend([again.token.clone(), again.refresh_token.clone()]);
    app.post_anon(
        "/api/v1/auth/logout",
        json!({"refresh_token": again.refresh_token}),
    )
    .await
    .expect(204);

    // Account and password changes.
    app.patch(
        "/api/v1/me",
        &session.token,
        json!({"full_name": "Dr Audit"}),
    )
    .await
    .expect(200);
    let new_password = "a brand new long password";
    secrets.push(new_password.into());
    app.post(
        "/api/v1/me/password",
        &session.token,
        json!({"current_password": "not my password", "new_password": new_password}),
    )
    .await
    .invalid_field("current_password");
    secrets.push("not my password".into());
    let changed = app
        .post(
            "/api/v1/me/password",
            &session.token,
            json!({"current_password": PASSWORD, "new_password": new_password}),
        )
        .await
        .expect(200);
    let changed = session_of(&changed.body);
    secrets.extend([changed.token.clone(), changed.refresh_token.clone()]);

    // MFA: enrol, a wrong and a right code at sign-in, a recovery code.
    let (secret, recovery) = enrol(&app, &changed).await;
    secrets.push(secret.clone());
    secrets.extend(recovery.iter().cloned());
    secrets.extend(recovery.iter().map(|c| c.replace('-', "")));
    let body = |otp: &str| json!({"email": email, "password": new_password, "otp": otp});
    app.post_anon("/api/v1/auth/login", body("999999"))
        .await
        .problem(401);
    let code = next_code(&app, &secret);
    secrets.push(code.clone());
    let with_totp = app
        .post_anon("/api/v1/auth/login", body(&code))
        .await
        .expect(200);
    secrets.push(with_totp.body["access_token"].as_str().unwrap().to_owned());
    app.post_anon("/api/v1/auth/login", body(&recovery[2]))
        .await
        .expect(200);

    let rows = audit_rows(&app).await;
    for (kind, detail, outcome) in [
        ("sign_in", "invitation:password", "allowed"),
        ("sign_in", "password:wrong_password", "denied"),
        ("sign_in", "password:unknown_account", "denied"),
        ("sign_in", "password", "allowed"),
        ("refresh", "rotated", "allowed"),
        ("refresh", "reuse_detected", "denied"),
        ("logout", "session_revoked", "allowed"),
        ("account", &session.id, "allowed"),
        ("password", "wrong_current_password", "denied"),
        ("password", "changed", "allowed"),
        ("mfa_totp", "begin", "allowed"),
        ("mfa_totp", "confirm", "allowed"),
        ("sign_in", "password:otp_wrong", "denied"),
        ("sign_in", "password+totp", "allowed"),
        ("sign_in", "password+recovery_code", "allowed"),
    ] {
        assert!(
            has_row(&rows, kind, detail, outcome),
            "no {outcome} {kind} row with {detail}: {rows:?}"
        );
    }
    let unknown = rows
        .iter()
        .find(|r| r[4].as_deref() == Some("password:unknown_account"))
        .unwrap();
    assert_eq!(unknown[0], None, "an unknown account has no actor");
    let everything: Vec<&str> = rows
        .iter()
        .flatten()
        .flatten()
        .map(String::as_str)
        .collect();
    for secret in &secrets {
        assert!(
            !everything
                .iter()
                .any(|field| field.contains(secret.as_str())),
            "a secret reached the audit trail"
        );
    }
    // The trail still verifies.
    let verdict = app
        .state
        .db
        .read(|conn| Ok(relais::audit::verify(conn)?))
        .await
        .unwrap();
    assert!(
        matches!(verdict, relais::audit::Verdict::Intact { .. }),
        "{verdict:?}"
    );
}

/// The enrol-only token as a kind of caller, over every route: only the
/// public ones and enrolment itself let it through.
#[actix_web::test]
async fn an_enrol_only_token_reaches_nothing_but_enrolment() {
    let app = spawn_app_with(|s| s.auth.require_mfa_roles = vec![Role::Gp]).await;
    // Accepting the invitation with a password gives an enrol-only session.
    let limited = gp(&app, "gp-limited@relais.test").await;
    let some_id = uuid::Uuid::now_v7().to_string();
    let mut failures = Vec::new();
    for (method, path) in relais::api::ROUTES {
        let public = path.starts_with("/api/v1/health")
            || path.starts_with("/api/v1/auth/")
            || *path == "/api/v1/openapi.json"
            || *path == "/fhir/r4/metadata";
        let enrolment = *method == "post" && path.starts_with("/api/v1/me/mfa/totp");
        if public || enrolment {
            continue;
        }
        let concrete = path
            .replace("{id}", &some_id)
            .replace("{user_id}", &some_id)
            .replace("{n}", "1");
        let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let body = (method != Method::GET).then(|| json!({}));
        let resp = app
            .request(
                method.clone(),
                &concrete,
                Some(&limited.token),
                body.as_ref(),
            )
            .await;
        if resp.status != 403 {
            failures.push(format!("{method} {path}: {} {}", resp.status, resp.body));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
