//! Issue 12, findings 4–6: sessions that end when they end, sign-in limits
//! that hold under concurrency and cannot be turned against a clinician,
//! client addresses behind trusted proxies, bounded password hashing.

use std::sync::Arc;

use actix_web::http::Method;
use diesel::prelude::*;
use serde_json::{Value, json};

use crate::helpers::{
    ADMIN_EMAIL, PASSWORD, Resp, Session, SmtpListener, TestApp, TestDb, no_background_ticks,
    session_of, spawn_app, spawn_app_with, spawn_on,
};

const LOGIN: &str = "/api/v1/auth/login";

/// A sign-in attempt as if from `client`, through the (trusted) local proxy.
async fn login_from(app: &TestApp, client: &str, email: &str, password: &str) -> Resp {
    app.request_with(
        Method::POST,
        LOGIN,
        None,
        Some(&json!({"email": email, "password": password})),
        &[("x-forwarded-for", client.to_owned())],
    )
    .await
}

fn retry_after(resp: &Resp) -> u64 {
    resp.headers
        .get("retry-after")
        .expect("Retry-After")
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// The loopback test client is the proxy: `X-Forwarded-For` names the client.
fn behind_proxy(s: &mut relais::config::Settings) {
    s.server.trusted_proxies = vec!["127.0.0.1".into()];
}

#[actix_web::test]
async fn access_tokens_end_with_their_session() {
    let app = spawn_app().await;

    // Sign-out: the session's access token fails at once (the cache is warm).
    let session = app.admin().await;
    app.get("/api/v1/me", &session.token).await.expect(200);
    let other = app.admin().await;
    app.post_anon(
        "/api/v1/auth/logout",
        json!({"refresh_token": session.refresh_token}),
    )
    .await
    .expect(204);
    app.get("/api/v1/me", &session.token).await.problem(401);
    // Only that session: another sign-in goes on.
    app.get("/api/v1/me", &other.token).await.expect(200);

    // Refresh-token reuse: every access token of the family fails.
    let first = app.admin().await;
    let rotated = session_of(
        &app.post_anon(
            "/api/v1/auth/refresh",
            json!({"refresh_token": first.refresh_token}),
        )
        .await
        .expect(200)
        .body,
    );
    app.get("/api/v1/me", &rotated.token).await.expect(200);
    app.post_anon(
        "/api/v1/auth/refresh",
        json!({"refresh_token": first.refresh_token}),
    )
    .await
    .problem(401);
    app.get("/api/v1/me", &first.token).await.problem(401);
    app.get("/api/v1/me", &rotated.token).await.problem(401);
    app.get("/api/v1/me", &other.token).await.expect(200);

    // Password change: every older session's tokens fail; the new pair works.
    let changed = session_of(
        &app.post(
            "/api/v1/me/password",
            &other.token,
            json!({"current_password": PASSWORD, "new_password": "another long password"}),
        )
        .await
        .expect(200)
        .body,
    );
    app.get("/api/v1/me", &other.token).await.problem(401);
    app.get("/api/v1/me", &changed.token).await.expect(200);

    // Deactivation.
    let org = app.create_org(&changed, "Cabinet", "gp_practice").await;
    let gp = app.onboard(&changed, "gp@relais.test", "gp", &org).await;
    app.get("/api/v1/me", &gp.token).await.expect(200);
    app.patch(
        &format!("/api/v1/users/{}", gp.id),
        &changed.token,
        json!({"active": false}),
    )
    .await
    .expect(200);
    app.get("/api/v1/me", &gp.token).await.problem(401);
}

#[actix_web::test]
async fn revocation_reaches_other_instances() {
    // Without the cache (auth.session_cache_ms = 0) no instance lets a
    // revoked token through; with it, within its lifetime.
    let db = Arc::new(TestDb::new());
    let a = spawn_on(db.clone(), SmtpListener::start().await, |s| {
        s.auth.session_cache_ms = 0
    })
    .await;
    let b = spawn_on(db.clone(), SmtpListener::start().await, |s| {
        s.auth.session_cache_ms = 0
    })
    .await;
    let session = a.admin().await;
    b.get("/api/v1/me", &session.token).await.expect(200);
    a.post_anon(
        "/api/v1/auth/logout",
        json!({"refresh_token": session.refresh_token}),
    )
    .await
    .expect(204);
    b.get("/api/v1/me", &session.token).await.problem(401);

    let c = spawn_on(db.clone(), SmtpListener::start().await, |s| {
        s.auth.session_cache_ms = 300
    })
    .await;
    let session = a.admin().await;
    c.get("/api/v1/me", &session.token).await.expect(200);
    a.post_anon(
        "/api/v1/auth/logout",
        json!({"refresh_token": session.refresh_token}),
    )
    .await
    .expect(204);
    tokio::time::sleep(std::time::Duration::from_millis(350)).await;
    c.get("/api/v1/me", &session.token).await.problem(401);

    // PostgreSQL: the revocation is announced at its commit, so even a
    // long-lived cache on another instance drops the session at once.
    if a.state.db.backend() == relais::db::Backend::Postgres {
        let d = spawn_on(db.clone(), SmtpListener::start().await, |s| {
            s.auth.session_cache_ms = 60_000
        })
        .await;
        let session = a.admin().await;
        let sid = sid_of(&session.token);
        crate::helpers::eventually("the listener is connected and the cache warm", || async {
            d.get("/api/v1/me", &session.token).await.expect(200);
            d.state.users.get(&sid).is_some()
        })
        .await;
        a.post_anon(
            "/api/v1/auth/logout",
            json!({"refresh_token": session.refresh_token}),
        )
        .await
        .expect(204);
        let revoked_at = std::time::Instant::now();
        crate::helpers::eventually("the other instance refuses the token", || async {
            d.get("/api/v1/me", &session.token).await.status == 401
        })
        .await;
        assert!(revoked_at.elapsed() < std::time::Duration::from_secs(2));
    }
}

/// The session id an access token carries.
fn sid_of(token: &str) -> String {
    use base64::Engine;
    let payload = token.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    claims["sid"].as_str().unwrap().to_owned()
}

#[actix_web::test]
async fn an_attacker_elsewhere_does_not_lock_the_clinician_out() {
    let app = spawn_app_with(|s| {
        behind_proxy(s);
        s.auth.login_account_max_failures = 8;
    })
    .await;
    // The clinician signed in from their practice before.
    login_from(&app, "198.51.100.2", ADMIN_EMAIL, PASSWORD)
        .await
        .expect(200);
    for _ in 0..5 {
        login_from(&app, "203.0.113.66", ADMIN_EMAIL, "guess guess guess")
            .await
            .problem(401);
    }
    let resp = login_from(&app, "203.0.113.66", ADMIN_EMAIL, PASSWORD).await;
    assert!((1..=900).contains(&retry_after(&resp)));
    resp.problem(429);
    // Elsewhere, the right password still works.
    login_from(&app, "198.51.100.2", ADMIN_EMAIL, PASSWORD)
        .await
        .expect(200);

    // Behind it, the per-account limit over every address: 8 failures.
    for _ in 0..3 {
        login_from(&app, "203.0.113.67", ADMIN_EMAIL, "guess guess guess")
            .await
            .problem(401);
    }
    let resp = login_from(&app, "203.0.113.68", ADMIN_EMAIL, "guess guess guess").await;
    assert!((1..=3600).contains(&retry_after(&resp)));
    resp.problem(429);
    // A new address cannot sign in now, even with the right password...
    login_from(&app, "192.0.2.1", ADMIN_EMAIL, PASSWORD)
        .await
        .problem(429);
    // ...but the address the account signed in from before can.
    login_from(&app, "198.51.100.2", ADMIN_EMAIL, PASSWORD)
        .await
        .expect(200);
    // Other accounts are not concerned.
    login_from(&app, "203.0.113.68", "other@relais.test", "x")
        .await
        .problem(401);
    // After the account window, anyone may try again.
    app.clock.advance(chrono::Duration::hours(1));
    login_from(&app, "192.0.2.1", ADMIN_EMAIL, PASSWORD)
        .await
        .expect(200);
}

#[actix_web::test]
async fn forwarded_for_is_only_believed_from_trusted_proxies() {
    // No trusted proxy: the header changes nothing, the peer is the client.
    let app = spawn_app().await;
    for i in 0..5 {
        login_from(
            &app,
            &format!("203.0.113.{i}"),
            ADMIN_EMAIL,
            "guess guess guess",
        )
        .await
        .problem(401);
    }
    login_from(&app, "203.0.113.99", ADMIN_EMAIL, PASSWORD)
        .await
        .problem(429);

    // Trusted: the client named by the proxy, in the limits and the audit.
    let app = spawn_app_with(behind_proxy).await;
    let admin = app.admin().await;
    app.request_with(
        Method::POST,
        "/api/v1/organizations",
        Some(&admin.token),
        Some(&json!({"name": "Cabinet", "kind": "gp_practice"})),
        // The client forged the first entry; the proxy appended the real one.
        &[("x-forwarded-for", "10.9.9.9, 198.51.100.7".into())],
    )
    .await
    .expect(201);
    let (ip, verdict) = app
        .state
        .db
        .read(|conn| {
            use relais::db::schema::audit_events::dsl::*;
            let ip: Option<String> = audit_events
                .order(seq.desc())
                .select(client_ip)
                .first(conn)?;
            Ok((ip, relais::audit::verify(conn)?))
        })
        .await
        .unwrap();
    assert_eq!(ip.as_deref(), Some("198.51.100.7"));
    // Rows with a client address still chain and verify.
    assert!(
        matches!(verdict, relais::audit::Verdict::Intact { .. }),
        "{verdict:?}"
    );
}

#[actix_web::test]
async fn ipv6_clients_are_counted_per_64() {
    let app = spawn_app_with(behind_proxy).await;
    for i in 1..=5 {
        login_from(
            &app,
            &format!("2001:db8:1:2::{i}"),
            ADMIN_EMAIL,
            "guess guess guess",
        )
        .await
        .problem(401);
    }
    // Another address in the same /64 is the same client.
    login_from(&app, "2001:db8:1:2:ffff::1", ADMIN_EMAIL, PASSWORD)
        .await
        .problem(429);
    // The next /64 is another one.
    login_from(&app, "2001:db8:1:3::1", ADMIN_EMAIL, PASSWORD)
        .await
        .expect(200);
}

#[actix_web::test]
async fn oversized_sign_in_inputs_are_refused_before_any_lookup() {
    let app = spawn_app().await;
    let long_email = format!("{}@relais.test", "a".repeat(250));
    app.post_anon(LOGIN, json!({"email": long_email, "password": "x"}))
        .await
        .invalid_field("email");
    app.post_anon(
        LOGIN,
        json!({"email": ADMIN_EMAIL, "password": "p".repeat(1025)}),
    )
    .await
    .invalid_field("password");
    // A 250 kB "email" neither.
    app.post_anon(
        LOGIN,
        json!({"email": "e".repeat(250_000), "password": "x"}),
    )
    .await
    .invalid_field("email");
    // Nothing was counted or stored.
    let rows: i64 = app
        .state
        .db
        .read(|conn| {
            use relais::db::schema::login_failures::dsl::*;
            Ok(login_failures.count().get_result(conn)?)
        })
        .await
        .unwrap();
    assert_eq!(rows, 0);
    app.admin().await;
}

#[actix_web::test]
async fn failures_are_stored_hashed_and_purged() {
    let app = spawn_app_with(no_background_ticks).await;
    app.post_anon(
        LOGIN,
        json!({"email": "Nobody@Relais.test", "password": "guess guess guess"}),
    )
    .await
    .problem(401);
    let stored: Vec<(String, String)> = app
        .state
        .db
        .read(|conn| {
            use relais::db::schema::login_failures::dsl::*;
            Ok(login_failures
                .select((account_hash, client_addr))
                .load(conn)?)
        })
        .await
        .unwrap();
    assert_eq!(stored.len(), 1);
    let (hash, addr) = &stored[0];
    assert!(!hash.contains("nobody") && hash.len() == 64, "{hash}");
    assert_eq!(addr, "127.0.0.1");

    app.clock.advance(chrono::Duration::minutes(59));
    let report = relais::scheduler::Scheduler::new(&app.state)
        .tick()
        .await
        .unwrap();
    assert_eq!(
        report.login_failures_purged, 0,
        "still in the account window"
    );
    app.clock.advance(chrono::Duration::minutes(2));
    let report = relais::scheduler::Scheduler::new(&app.state)
        .tick()
        .await
        .unwrap();
    assert_eq!(report.login_failures_purged, 1);
}

#[actix_web::test]
async fn logout_is_not_counted_by_the_address_limit() {
    let app = spawn_app_with(|s| s.auth.ip_requests_per_minute = 3).await;
    let session = app.admin().await;
    for _ in 0..10 {
        app.post_anon("/api/v1/auth/logout", json!({"refresh_token": "x"}))
            .await
            .expect(204);
    }
    app.post_anon(
        "/api/v1/auth/logout",
        json!({"refresh_token": session.refresh_token}),
    )
    .await
    .expect(204);
    // Two more requests of the three this minute are still allowed.
    app.admin().await;
    app.admin().await;
    app.post_anon(LOGIN, json!({"email": ADMIN_EMAIL, "password": PASSWORD}))
        .await
        .problem(429);
}

/// Fires `n` sign-ins at once at `apps` (in turn); returns their statuses.
async fn storm(apps: &[&TestApp], n: usize, email: impl Fn(usize) -> String) -> Vec<u16> {
    let calls = (0..n).map(|i| {
        let app = apps[i % apps.len()];
        let body = json!({"email": email(i), "password": "guess guess guess"});
        async move { app.request(Method::POST, LOGIN, None, Some(&body)).await }
    });
    futures_util::future::join_all(calls)
        .await
        .into_iter()
        .map(|r| {
            if r.status == 503 {
                assert!(retry_after(&r) >= 1);
            }
            r.status
        })
        .collect()
}

#[actix_web::test]
async fn the_account_limit_holds_under_concurrency_across_instances() {
    let db = Arc::new(TestDb::new());
    let wide = |s: &mut relais::config::Settings| {
        s.auth.max_concurrent_hashes = 8;
        s.auth.hash_queue_max = 100;
        s.auth.hash_queue_wait_ms = 30_000;
    };
    let a = spawn_on(db.clone(), SmtpListener::start().await, wide).await;
    let b = spawn_on(db.clone(), SmtpListener::start().await, wide).await;
    let statuses = storm(&[&a, &b], 24, |_| ADMIN_EMAIL.into()).await;
    let verified = statuses.iter().filter(|s| **s == 401).count();
    assert!(
        statuses.iter().all(|s| [401, 429].contains(s)),
        "{statuses:?}"
    );
    // Exactly the limit reached password verification; the rest were refused before.
    assert_eq!(verified, 5, "{statuses:?}");
}

#[actix_web::test]
async fn saturated_hashing_answers_503_with_retry_after() {
    let app = spawn_app_with(|s| {
        s.auth.max_concurrent_hashes = 1;
        s.auth.hash_queue_max = 1;
        s.auth.hash_queue_wait_ms = 1;
    })
    .await;
    // Distinct accounts: no account limit gets in the way.
    let statuses = storm(&[&app], 16, |i| format!("nobody{i}@relais.test")).await;
    assert!(
        statuses.iter().all(|s| [401, 503].contains(s)),
        "{statuses:?}"
    );
    assert!(statuses.contains(&503), "{statuses:?}");
    assert!(statuses.contains(&401), "{statuses:?}");
    // Once the storm is over, signing in works; a 503 cost no attempt.
    let _: Session = app.admin().await;
    let problem: Value = app
        .post_anon(LOGIN, json!({"email": ADMIN_EMAIL, "password": "nope"}))
        .await
        .problem(401);
    assert_eq!(problem["status"], 401);
}

#[actix_web::test]
async fn a_known_address_is_not_turned_away_by_a_full_queue() {
    let app = spawn_app_with(|s| {
        s.auth.max_concurrent_hashes = 1;
        s.auth.hash_queue_max = 0;
        s.auth.hash_queue_wait_ms = 5_000;
    })
    .await;
    // The clinician signed in from here before.
    app.admin().await;
    let apps = [&app];
    let storm = storm(&apps, 12, |i| format!("nobody{i}@relais.test"));
    let clinician = async {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        app.post_anon(LOGIN, json!({"email": ADMIN_EMAIL, "password": PASSWORD}))
            .await
            .status
    };
    let (statuses, clinician) = futures_util::join!(storm, clinician);
    assert!(statuses.contains(&503), "{statuses:?}");
    assert_eq!(clinician, 200, "{statuses:?}");
}
