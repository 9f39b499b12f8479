//! Sign-in, access tokens, refresh rotation, revocation and throttling.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::helpers::{ADMIN_EMAIL, JWT_SECRET, PASSWORD, spawn_app, spawn_app_with};

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

fn claims(sub: &str, ver: i32, sid: &str) -> Value {
    json!({
        "iss": "relais", "aud": "relais-api", "sub": sub, "role": "admin", "org": null,
        "iat": now(), "exp": now() + 600, "jti": "t", "ver": ver, "sid": sid
    })
}

/// The claims of an access token (the harness trusts its own server).
fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

fn sign(header: Header, claims: &Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &header,
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

#[actix_web::test]
async fn login_gives_a_working_token_pair() {
    let app = spawn_app().await;
    let resp = app
        .post_anon(
            "/api/v1/auth/login",
            json!({"email": "ADMIN@relais.test ", "password": PASSWORD}),
        )
        .await
        .expect(200);
    assert_eq!(resp.body["token_type"], "Bearer");
    assert_eq!(resp.body["expires_in"], 900);
    assert_eq!(resp.body["user"]["role"], "admin");
    assert!(resp.body["user"].get("password_hash").is_none());
    let token = resp.body["access_token"].as_str().unwrap();
    let me = app.get("/api/v1/me", token).await.expect(200);
    assert_eq!(me.body["email"], ADMIN_EMAIL);
}

#[actix_web::test]
async fn wrong_password_and_unknown_email_are_the_same_401() {
    let app = spawn_app().await;
    let wrong = app
        .post_anon(
            "/api/v1/auth/login",
            json!({"email": ADMIN_EMAIL, "password": "not the password"}),
        )
        .await
        .problem(401);
    let unknown = app
        .post_anon(
            "/api/v1/auth/login",
            json!({"email": "nobody@relais.test", "password": "not the password"}),
        )
        .await
        .problem(401);
    assert_eq!(wrong["detail"], unknown["detail"]);
}

#[actix_web::test]
async fn forged_and_misused_tokens_are_401() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let sid = claims_of(&admin.token)["sid"].as_str().unwrap().to_owned();
    let good = claims(&admin.id, 0, &sid);
    // The harness's own signature is accepted: the cases below differ by one thing each.
    let control = sign(Header::new(Algorithm::HS256), &good, JWT_SECRET);
    app.get("/api/v1/me", &control).await.expect(200);

    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(good.to_string())
    );
    let other_alg = sign(Header::new(Algorithm::HS384), &good, JWT_SECRET);
    let other_key = sign(
        Header::new(Algorithm::HS256),
        &good,
        "another-secret-another-secret-another-secret",
    );
    let mut wrong_aud = good.clone();
    wrong_aud["aud"] = json!("somebody-else");
    let mut wrong_iss = good.clone();
    wrong_iss["iss"] = json!("mallory");
    let mut expired = good.clone();
    expired["iat"] = json!(now() - 7200);
    expired["exp"] = json!(now() - 3600);
    let mut stale_version = good.clone();
    stale_version["ver"] = json!(7);
    let mut unknown_user = good.clone();
    unknown_user["sub"] = json!(uuid::Uuid::now_v7().to_string());
    let mut no_session = good.clone();
    no_session.as_object_mut().unwrap().remove("sid");
    let mut unknown_session = good.clone();
    unknown_session["sid"] = json!(uuid::Uuid::now_v7().to_string());

    let cases = [
        ("alg none", none),
        ("HS384", other_alg),
        ("other key", other_key),
        (
            "wrong audience",
            sign(Header::new(Algorithm::HS256), &wrong_aud, JWT_SECRET),
        ),
        (
            "wrong issuer",
            sign(Header::new(Algorithm::HS256), &wrong_iss, JWT_SECRET),
        ),
        (
            "expired",
            sign(Header::new(Algorithm::HS256), &expired, JWT_SECRET),
        ),
        (
            "stale version",
            sign(Header::new(Algorithm::HS256), &stale_version, JWT_SECRET),
        ),
        (
            "unknown user",
            sign(Header::new(Algorithm::HS256), &unknown_user, JWT_SECRET),
        ),
        (
            "no session",
            sign(Header::new(Algorithm::HS256), &no_session, JWT_SECRET),
        ),
        (
            "unknown session",
            sign(Header::new(Algorithm::HS256), &unknown_session, JWT_SECRET),
        ),
        ("refresh token as access token", admin.refresh_token.clone()),
    ];
    for (what, token) in cases {
        let resp = app.get("/api/v1/me", &token).await;
        assert_eq!(resp.status, 401, "{what} must be refused");
        resp.problem(401);
    }
}

#[actix_web::test]
async fn refresh_rotates_and_reuse_revokes_the_family() {
    let app = spawn_app().await;
    let first = app.admin().await;
    let rotated = app
        .post_anon(
            "/api/v1/auth/refresh",
            json!({"refresh_token": first.refresh_token}),
        )
        .await
        .expect(200);
    let second_refresh = rotated.body["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(second_refresh, first.refresh_token);
    app.get("/api/v1/me", rotated.body["access_token"].as_str().unwrap())
        .await
        .expect(200);

    // Another sign-in is another family and must survive what follows.
    let other = app.admin().await;

    // Replaying the spent token revokes the whole family, including its newest member.
    app.post_anon(
        "/api/v1/auth/refresh",
        json!({"refresh_token": first.refresh_token}),
    )
    .await
    .problem(401);
    app.post_anon(
        "/api/v1/auth/refresh",
        json!({"refresh_token": second_refresh}),
    )
    .await
    .problem(401);
    app.post_anon(
        "/api/v1/auth/refresh",
        json!({"refresh_token": other.refresh_token}),
    )
    .await
    .expect(200);
    app.post_anon("/api/v1/auth/refresh", json!({"refresh_token": "made-up"}))
        .await
        .problem(401);
}

#[actix_web::test]
async fn refresh_token_expires() {
    let app = spawn_app().await;
    let session = app.admin().await;
    app.clock.advance(chrono::Duration::seconds(2_592_000 + 1));
    app.post_anon(
        "/api/v1/auth/refresh",
        json!({"refresh_token": session.refresh_token}),
    )
    .await
    .problem(401);
}

#[actix_web::test]
async fn logout_revokes_the_session() {
    let app = spawn_app().await;
    let session = app.admin().await;
    app.post_anon(
        "/api/v1/auth/logout",
        json!({"refresh_token": session.refresh_token}),
    )
    .await
    .expect(204);
    app.post_anon(
        "/api/v1/auth/refresh",
        json!({"refresh_token": session.refresh_token}),
    )
    .await
    .problem(401);
    // Unknown tokens are not an error: logging out twice is harmless.
    app.post_anon(
        "/api/v1/auth/logout",
        json!({"refresh_token": session.refresh_token}),
    )
    .await
    .expect(204);
    app.post_anon("/api/v1/auth/logout", json!({}))
        .await
        .invalid_field("refresh_token");
}

#[actix_web::test]
async fn five_failures_throttle_the_account_before_hashing() {
    let app = spawn_app().await;
    for _ in 0..5 {
        app.post_anon(
            "/api/v1/auth/login",
            json!({"email": ADMIN_EMAIL, "password": "guess guess guess"}),
        )
        .await
        .problem(401);
    }
    // Even the right password is refused now, with a wait to respect.
    let resp = app
        .post_anon(
            "/api/v1/auth/login",
            json!({"email": ADMIN_EMAIL, "password": PASSWORD}),
        )
        .await;
    let retry_after: u64 = resp
        .headers
        .get("retry-after")
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=900).contains(&retry_after), "{retry_after}");
    resp.problem(429);
    // Other accounts are unaffected.
    app.post_anon(
        "/api/v1/auth/login",
        json!({"email": "other@relais.test", "password": "x"}),
    )
    .await
    .problem(401);
    // After the window the account can sign in again.
    app.clock.advance(chrono::Duration::minutes(15));
    app.login(ADMIN_EMAIL, PASSWORD).await;
}

#[actix_web::test]
async fn per_address_limit_on_auth_routes() {
    let app = spawn_app_with(|s| s.auth.ip_requests_per_minute = 4).await;
    for _ in 0..4 {
        app.post_anon("/api/v1/auth/refresh", json!({"refresh_token": "x"}))
            .await
            .problem(401);
    }
    let resp = app
        .post_anon(
            "/api/v1/auth/login",
            json!({"email": ADMIN_EMAIL, "password": PASSWORD}),
        )
        .await;
    assert!(resp.headers.get("retry-after").is_some());
    resp.problem(429);
    // Not the rest of the API.
    app.request(
        actix_web::http::Method::GET,
        "/api/v1/health/live",
        None,
        None,
    )
    .await
    .expect(200);
}

#[actix_web::test]
async fn deactivation_ends_sessions_at_once() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let org = app.create_org(&admin, "Cabinet", "gp_practice").await;
    let gp = app.onboard(&admin, "gp@relais.test", "gp", &org).await;
    app.get("/api/v1/me", &gp.token).await.expect(200);

    app.patch(
        &format!("/api/v1/users/{}", gp.id),
        &admin.token,
        json!({"active": false}),
    )
    .await
    .expect(200);
    app.get("/api/v1/me", &gp.token).await.problem(401);
    app.post_anon(
        "/api/v1/auth/refresh",
        json!({"refresh_token": gp.refresh_token}),
    )
    .await
    .problem(401);
    app.post_anon(
        "/api/v1/auth/login",
        json!({"email": "gp@relais.test", "password": PASSWORD}),
    )
    .await
    .problem(401);

    // Reactivated, the user signs in again; old tokens stay dead.
    app.patch(
        &format!("/api/v1/users/{}", gp.id),
        &admin.token,
        json!({"active": true}),
    )
    .await
    .expect(200);
    app.get("/api/v1/me", &gp.token).await.problem(401);
    app.login("gp@relais.test", PASSWORD).await;

    // An administrator cannot lock themselves out.
    app.patch(
        &format!("/api/v1/users/{}", admin.id),
        &admin.token,
        json!({"active": false}),
    )
    .await
    .problem(409);
}

#[actix_web::test]
async fn password_change_revokes_older_tokens() {
    let app = spawn_app().await;
    let before = app.admin().await;
    let other_device = app.admin().await;
    app.post(
        "/api/v1/me/password",
        &before.token,
        json!({"current_password": PASSWORD, "new_password": "short"}),
    )
    .await
    .invalid_field("new_password");
    app.post(
        "/api/v1/me/password",
        &before.token,
        json!({"current_password": "wrong wrong wrong", "new_password": "a brand new password"}),
    )
    .await
    .invalid_field("current_password");
    let changed = app
        .post(
            "/api/v1/me/password",
            &before.token,
            json!({"current_password": PASSWORD, "new_password": "a brand new password"}),
        )
        .await
        .expect(200);
    let new_token = changed.body["access_token"].as_str().unwrap();
    app.get("/api/v1/me", new_token).await.expect(200);
    app.get("/api/v1/me", &before.token).await.problem(401);
    app.get("/api/v1/me", &other_device.token)
        .await
        .problem(401);
    app.post_anon(
        "/api/v1/auth/refresh",
        json!({"refresh_token": other_device.refresh_token}),
    )
    .await
    .problem(401);
    app.post_anon(
        "/api/v1/auth/login",
        json!({"email": ADMIN_EMAIL, "password": PASSWORD}),
    )
    .await
    .problem(401);
    app.login(ADMIN_EMAIL, "a brand new password").await;
}

#[actix_web::test]
async fn me_can_be_updated() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let resp = app
        .patch("/api/v1/me", &admin.token, json!({"full_name": "Ada Lovelace", "phone": "+33 2 99 00 00 00", "notification_preference": "daily_digest"}))
        .await
        .expect(200);
    assert_eq!(resp.body["full_name"], "Ada Lovelace");
    assert_eq!(resp.body["notification_preference"], "daily_digest");
    app.patch(
        "/api/v1/me",
        &admin.token,
        json!({"notification_preference": "sometimes"}),
    )
    .await
    .invalid_field("notification_preference");
    app.patch("/api/v1/me", &admin.token, json!({"full_name": "  "}))
        .await
        .invalid_field("full_name");
    // The failed updates changed nothing.
    let me = app.get("/api/v1/me", &admin.token).await.expect(200);
    assert_eq!(me.body["full_name"], "Ada Lovelace");
    assert_eq!(me.body["phone"], "+33 2 99 00 00 00");
    // The role cannot be self-assigned.
    app.patch("/api/v1/me", &admin.token, json!({"role": "gp"}))
        .await
        .invalid_field("role");
}
