//! The web client (issue 18): served at `/` from the binary with strict
//! headers, without shadowing the API; and the browser sign-in option, the
//! refresh token in an HttpOnly cookie guarded by a required header.

use std::collections::BTreeMap;

use actix_web::http::Method;
use relais::config::{OidcProvider, Settings};
use serde_json::{Value, json};

use crate::helpers::{ADMIN_EMAIL, PASSWORD, Resp, TestApp, spawn_app, spawn_app_with};

const MODE: (&str, &str) = ("x-relais-refresh", "cookie");

async fn get_raw(
    app: &TestApp,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, awc::http::header::HeaderMap, Vec<u8>) {
    let client = awc::Client::default();
    let mut req = client.get(format!("{}{path}", app.address));
    for (name, value) in headers {
        req = req.insert_header((*name, *value));
    }
    let mut res = req.send().await.expect("request sent");
    let body = res.body().limit(1 << 20).await.expect("body").to_vec();
    (res.status().as_u16(), res.headers().clone(), body)
}

fn header<'a>(headers: &'a awc::http::header::HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("no {name} header"))
}

#[actix_web::test]
async fn the_client_is_served_at_the_root_with_strict_headers() {
    let app = spawn_app().await;
    let (status, headers, body) = get_raw(&app, "/", &[]).await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "content-type"), "text/html; charset=utf-8");
    assert_eq!(header(&headers, "cache-control"), "no-store");
    assert_eq!(header(&headers, "x-content-type-options"), "nosniff");
    let csp = header(&headers, "content-security-policy");
    assert!(csp.contains("default-src 'self'"), "{csp}");
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
        "{csp}"
    );
    let page = String::from_utf8(body).expect("utf-8");
    // No inline script or style: the CSP would refuse them anyway.
    assert!(!page.contains("<script>") && !page.contains("<style") && !page.contains("style="));
    let start = page.find("/assets/").expect("an asset path") + "/assets/".len();
    let version = &page[start..start + 16];
    assert!(version.chars().all(|c| c.is_ascii_hexdigit()), "{version}");

    // Each asset of this version: its type, a year of caching, an ETag.
    for (name, content_type) in [
        ("app.js", "text/javascript; charset=utf-8"),
        ("screens/pharmacy.js", "text/javascript; charset=utf-8"),
        (
            "vendor/htm-preact-standalone.mjs",
            "text/javascript; charset=utf-8",
        ),
        ("style.css", "text/css; charset=utf-8"),
        ("icon.svg", "image/svg+xml"),
    ] {
        let path = format!("/assets/{version}/{name}");
        let (status, headers, body) = get_raw(&app, &path, &[]).await;
        assert_eq!(status, 200, "{path}");
        assert!(!body.is_empty());
        assert_eq!(header(&headers, "content-type"), content_type, "{path}");
        assert_eq!(
            header(&headers, "cache-control"),
            "public, max-age=31536000, immutable"
        );
        assert_eq!(header(&headers, "x-content-type-options"), "nosniff");
        let etag = header(&headers, "etag").to_owned();
        let (status, headers, body) = get_raw(&app, &path, &[("if-none-match", &etag)]).await;
        assert_eq!(status, 304, "{path}");
        assert!(body.is_empty());
        assert_eq!(header(&headers, "etag"), etag);
    }
    // Another version's assets, or a name not embedded, are not served.
    for path in [
        "/assets/0000000000000000/app.js".to_owned(),
        format!("/assets/{version}/no-such.js"),
        format!("/assets/{version}/../Cargo.toml"),
        format!("/assets/{version}/index.html"),
    ] {
        let (status, headers, _) = get_raw(&app, &path, &[]).await;
        assert_eq!(status, 404, "{path}");
        assert_eq!(header(&headers, "cache-control"), "no-store");
    }
    app.stop().await;
}

#[actix_web::test]
async fn the_client_shadows_no_other_route() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    // The API answers as before: JSON, no-store, its own CSP.
    let live = app
        .request(Method::GET, "/api/v1/health/live", None, None)
        .await;
    assert_eq!(live.status, 200);
    assert!(live.content_type().starts_with("application/json"));
    assert_eq!(
        live.header_value("content-security-policy"),
        "default-src 'none'; frame-ancestors 'none'"
    );
    let unknown = app.get("/api/v1/no-such-route", &admin.token).await;
    assert_eq!(unknown.problem(404)["status"], 404);
    // The FHIR façade is patient data too: never stored.
    let fhir = app.get("/fhir/r4/Patient", &admin.token).await;
    assert_eq!(fhir.header_value("cache-control"), "no-store");
    let metadata = app
        .request(Method::GET, "/fhir/r4/metadata", None, None)
        .await;
    assert_eq!(metadata.status, 200);
    assert_eq!(metadata.header_value("cache-control"), "no-store");
    // Paths the client does not own are still 404, not the page.
    let (status, headers, _) = get_raw(&app, "/patients", &[]).await;
    assert_eq!(status, 404);
    assert!(header(&headers, "content-type").starts_with("application/problem+json"));
    app.stop().await;
}

/// The value of the refresh cookie a response sets, with its attributes.
fn set_cookie(resp: &Resp) -> (String, String) {
    let raw = resp.header_value("set-cookie");
    let (pair, _) = raw.split_once(';').expect("attributes");
    let value = pair
        .strip_prefix("relais_refresh=")
        .expect("the refresh cookie");
    (value.to_owned(), raw.clone())
}

async fn cookie_login(app: &TestApp) -> Resp {
    app.request_with(
        Method::POST,
        "/api/v1/auth/login",
        None,
        Some(&json!({"email": ADMIN_EMAIL, "password": PASSWORD})),
        &[(MODE.0, MODE.1.to_owned())],
    )
    .await
}

async fn cookie_post(app: &TestApp, path: &str, cookie: &str, with_header: bool) -> Resp {
    let mut headers = vec![("cookie", format!("relais_refresh={cookie}"))];
    if with_header {
        headers.push((MODE.0, MODE.1.to_owned()));
    }
    app.request_with(Method::POST, path, None, None, &headers)
        .await
}

#[actix_web::test]
async fn a_browser_keeps_its_refresh_token_in_an_http_only_cookie() {
    let app = spawn_app().await;
    let login = cookie_login(&app).await.expect(200);
    assert!(login.body["access_token"].is_string());
    assert!(login.body.get("refresh_token").is_none(), "{}", login.body);
    assert_eq!(login.body["user"]["email"], ADMIN_EMAIL);
    let (first, attributes) = set_cookie(&login);
    assert!(first.len() >= 32);
    assert!(attributes.contains("; HttpOnly"), "{attributes}");
    assert!(attributes.contains("; SameSite=Strict"), "{attributes}");
    assert!(attributes.contains("; Path=/api/v1/auth;"), "{attributes}");
    assert!(attributes.contains(&format!(
        "; Max-Age={}",
        app.settings.auth.refresh_token_ttl_s
    )));
    // The test server's public URL is plain HTTP on loopback.
    assert!(!attributes.contains("Secure"), "{attributes}");
    let token = login.body["access_token"].as_str().unwrap().to_owned();
    app.get("/api/v1/me", &token).await.expect(200);

    // Without the header the cookie is not used (a cross-site form can
    // send the cookie, never the header): the body is required as always.
    let forged = cookie_post(&app, "/api/v1/auth/refresh", &first, false).await;
    forged.invalid_field_400("body");

    // With it, an empty body refreshes from the cookie, which rotates.
    let refreshed = cookie_post(&app, "/api/v1/auth/refresh", &first, true)
        .await
        .expect(200);
    assert!(refreshed.body.get("refresh_token").is_none());
    let (second, _) = set_cookie(&refreshed);
    assert_ne!(first, second);
    let token = refreshed.body["access_token"].as_str().unwrap().to_owned();
    app.get("/api/v1/me", &token).await.expect(200);

    // The spent cookie is a reuse: the session ends, the cookie is cleared.
    let reused = cookie_post(&app, "/api/v1/auth/refresh", &first, true).await;
    let (cleared, attributes) = set_cookie(&reused);
    reused.problem(401);
    assert_eq!(cleared, "");
    assert!(attributes.contains("Max-Age=0"));
    cookie_post(&app, "/api/v1/auth/refresh", &second, true)
        .await
        .problem(401);
    app.get("/api/v1/me", &token).await.problem(401);
    app.stop().await;
}

#[actix_web::test]
async fn signing_out_with_the_cookie_ends_the_session_and_clears_it() {
    let app = spawn_app().await;
    let login = cookie_login(&app).await.expect(200);
    let (cookie, _) = set_cookie(&login);
    let token = login.body["access_token"].as_str().unwrap().to_owned();
    let out = cookie_post(&app, "/api/v1/auth/logout", &cookie, true).await;
    assert_eq!(out.status, 204);
    let (cleared, attributes) = set_cookie(&out);
    assert_eq!(cleared, "");
    assert!(attributes.contains("Max-Age=0") && attributes.contains("HttpOnly"));
    app.get("/api/v1/me", &token).await.problem(401);
    cookie_post(&app, "/api/v1/auth/refresh", &cookie, true)
        .await
        .problem(401);

    // No cookie at all: refresh is 401 naming nothing to refresh, logout 204.
    let none = app
        .request_with(
            Method::POST,
            "/api/v1/auth/refresh",
            None,
            None,
            &[(MODE.0, MODE.1.to_owned())],
        )
        .await;
    assert!(
        none.problem(401)["detail"]
            .as_str()
            .unwrap()
            .contains("cookie")
    );
    let none = app
        .request_with(
            Method::POST,
            "/api/v1/auth/logout",
            None,
            None,
            &[(MODE.0, MODE.1.to_owned())],
        )
        .await;
    assert_eq!(none.status, 204);
    app.stop().await;
}

#[actix_web::test]
async fn clients_without_the_header_see_no_change() {
    let app = spawn_app().await;
    let login = app
        .post_anon(
            "/api/v1/auth/login",
            json!({"email": ADMIN_EMAIL, "password": PASSWORD}),
        )
        .await
        .expect(200);
    assert!(login.headers.get("set-cookie").is_none());
    let refresh = login.body["refresh_token"]
        .as_str()
        .expect("in the body")
        .to_owned();
    let next = app
        .post_anon("/api/v1/auth/refresh", json!({"refresh_token": refresh}))
        .await
        .expect(200);
    assert!(next.headers.get("set-cookie").is_none());
    assert!(next.body["refresh_token"].is_string());
    // A wrong password with the header sets nothing either.
    let wrong = app
        .request_with(
            Method::POST,
            "/api/v1/auth/login",
            None,
            Some(&json!({"email": ADMIN_EMAIL, "password": "not the password"})),
            &[(MODE.0, MODE.1.to_owned())],
        )
        .await;
    assert!(wrong.headers.get("set-cookie").is_none());
    wrong.problem(401);
    app.stop().await;
}

#[actix_web::test]
async fn the_cookie_is_secure_behind_https() {
    let app =
        spawn_app_with(|s: &mut Settings| s.server.public_url = "https://relais.example".into())
            .await;
    let login = cookie_login(&app).await.expect(200);
    let (_, attributes) = set_cookie(&login);
    assert!(attributes.ends_with("; Secure"), "{attributes}");
    app.stop().await;
}

#[actix_web::test]
async fn the_sign_in_page_lists_the_configured_providers() {
    let app = spawn_app().await;
    let none = app
        .request(Method::GET, "/api/v1/auth/oidc/providers", None, None)
        .await
        .expect(200);
    assert_eq!(none.body, json!({"items": [], "next_cursor": null}));
    app.stop().await;

    let mut providers = BTreeMap::new();
    for name in ["psc", "hospital"] {
        providers.insert(
            name.to_owned(),
            OidcProvider {
                issuer: "https://idp.invalid".into(),
                discovery_url: None,
                client_id: "relais".into(),
                client_secret: "a secret never shown".into(),
                scopes: vec!["openid".into()],
                subject_claim: None,
                required_acr: vec![],
            },
        );
    }
    let app = spawn_app_with(move |s: &mut Settings| s.auth.oidc.providers = providers).await;
    let listed = app
        .request(Method::GET, "/api/v1/auth/oidc/providers", None, None)
        .await
        .expect(200);
    assert_eq!(
        listed.body["items"],
        json!([{"name": "hospital"}, {"name": "psc"}])
    );
    assert!(
        !listed.body.to_string().contains("secret")
            && !listed.body.to_string().contains("idp.invalid")
    );
    let page = app
        .request(
            Method::GET,
            "/api/v1/auth/oidc/providers?limit=1",
            None,
            None,
        )
        .await
        .expect(200);
    assert_eq!(page.body["items"], json!([{"name": "hospital"}]));
    assert_eq!(page.body["next_cursor"], Value::String("hospital".into()));
    app.request(
        Method::GET,
        "/api/v1/auth/oidc/providers?limit=0",
        None,
        None,
    )
    .await
    .invalid_field_400("limit");
    app.stop().await;
}

#[actix_web::test]
async fn an_unknown_refresh_mode_is_refused_and_changes_nothing() {
    let app = spawn_app().await;
    let login = cookie_login(&app).await.expect(200);
    let (cookie, _) = set_cookie(&login);
    let token = login.body["access_token"].as_str().unwrap().to_owned();
    for path in ["/api/v1/auth/logout", "/api/v1/auth/refresh"] {
        app.request_with(
            Method::POST,
            path,
            None,
            None,
            &[
                ("cookie", format!("relais_refresh={cookie}")),
                (MODE.0, "{}".to_owned()),
            ],
        )
        .await
        .invalid_field_400(MODE.0);
    }
    // The session is untouched: the access token works, the cookie refreshes.
    app.get("/api/v1/me", &token).await.expect(200);
    cookie_post(&app, "/api/v1/auth/refresh", &cookie, true)
        .await
        .expect(200);
    app.stop().await;
}
