//! OpenID Connect sign-in against a real provider: panva's `oidc-provider`
//! (tests/oidc/provider.js) on the machine's Node.js, on loopback. The test
//! plays the browser: it follows the redirects, posts the provider's login
//! and consent forms, lands on Relais's callback and exchanges the code.
//! No mock of the provider.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use actix_web::http::Method;
use diesel::prelude::*;
use relais::config::{OidcProvider, Settings};
use relais::db::schema::audit_events;
use serde_json::{Value, json};

use crate::helpers::{Session, TestApp, session_of, spawn_app_with};

/// Where the test client (a web front end) receives its one-time code.
const CLIENT_REDIRECT: &str = "http://127.0.0.1:9/app/signed-in";

/// Starts a provider (`npm ci` first when `tests/oidc/node_modules` is
/// missing); returns its issuer. It exits when this process ends: its
/// stdin, held open here, closes.
fn start_provider() -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oidc");
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        if !dir.join("node_modules/oidc-provider/package.json").exists() {
            let status = Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund"])
                .current_dir(&dir)
                .status()
                .expect("npm (Node.js) is needed for the OIDC tests");
            assert!(status.success(), "npm ci in tests/oidc failed");
        }
    });
    let mut child = Command::new("node")
        .arg("provider.js")
        .current_dir(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("node is needed for the OIDC tests");
    let mut reader = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    reader.read_line(&mut line).expect("provider's first line");
    let issuer = serde_json::from_str::<Value>(&line).expect("JSON line")["issuer"]
        .as_str()
        .expect("issuer")
        .to_owned();
    // Held until the process exits: then the provider's stdin closes.
    std::mem::forget(reader);
    std::mem::forget(child);
    issuer
}

/// The provider most tests share, started once for the test binary.
fn shared_issuer() -> String {
    static ISSUER: OnceLock<String> = OnceLock::new();
    ISSUER.get_or_init(start_provider).clone()
}

fn http() -> awc::Client {
    awc::Client::builder()
        .timeout(Duration::from_secs(30))
        .disable_redirects()
        .finish()
}

/// Registers a client for `callbacks` (dynamic registration); returns its id and secret.
async fn register(issuer: &str, callbacks: &[String], alg: &str) -> (String, String) {
    let mut resp = http()
        .post(format!("{issuer}/reg"))
        .send_json(&json!({
            "redirect_uris": callbacks,
            "grant_types": ["authorization_code"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "client_secret_basic",
            "id_token_signed_response_alg": alg,
        }))
        .await
        .expect("register client");
    let body: Value = resp.json().await.expect("registration JSON");
    assert_eq!(resp.status().as_u16(), 201, "{body}");
    (
        body["client_id"].as_str().unwrap().to_owned(),
        body["client_secret"].as_str().unwrap().to_owned(),
    )
}

/// A free loopback port (bound, then released for the server).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A server with three providers on the one test IdP: `idp` (RS256, RPPS
/// in `SubjectNameID`), `idp-es` (ES256) and `strict` (requires an `acr`
/// the provider does not give).
async fn oidc_app() -> TestApp {
    oidc_app_at(&shared_issuer()).await
}

/// The same, on the provider at `issuer`.
async fn oidc_app_at(issuer: &str) -> TestApp {
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let callback = |name: &str| format!("{base}/api/v1/auth/oidc/{name}/callback");
    let mut providers = BTreeMap::new();
    for (name, alg, acr) in [
        ("idp", "RS256", vec![]),
        ("idp-es", "ES256", vec![]),
        ("strict", "RS256", vec!["eidas3".to_owned()]),
    ] {
        let (client_id, client_secret) = register(issuer, &[callback(name)], alg).await;
        providers.insert(
            name.to_owned(),
            OidcProvider {
                issuer: issuer.to_owned(),
                // `idp-es` names the standard location explicitly.
                discovery_url: (name == "idp-es")
                    .then(|| format!("{issuer}/.well-known/openid-configuration")),
                client_id,
                client_secret,
                scopes: vec!["openid".into()],
                subject_claim: Some("SubjectNameID".into()),
                required_acr: acr,
            },
        );
    }
    spawn_app_with(move |s: &mut Settings| {
        s.server.bind = format!("127.0.0.1:{port}");
        s.server.public_url = base.clone();
        s.auth.oidc.allowed_redirects = vec![CLIENT_REDIRECT.into()];
        s.auth.oidc.providers = providers;
    })
    .await
}

/// A valid RPPS number no one else has (10 random digits and a Luhn key).
fn random_rpps() -> String {
    let body: String = uuid::Uuid::now_v7()
        .as_u128()
        .to_string()
        .chars()
        .rev()
        .take(10)
        .collect();
    (0..10)
        .map(|d| format!("{body}{d}"))
        .find(|candidate| relais::domain::rpps::luhn_valid(candidate))
        .unwrap()
}

/// A user invited with `rpps`; returns its id and invitation token.
async fn invite(
    app: &TestApp,
    admin: &Session,
    email: &str,
    rpps: Option<&str>,
) -> (String, String) {
    let org = app.create_org(admin, "Cabinet OIDC", "gp_practice").await;
    let mut body =
        json!({"email": email, "full_name": "Dr OIDC", "role": "gp", "organization_id": org});
    if let Some(rpps) = rpps {
        body["rpps"] = json!(rpps);
    }
    let created = app
        .post("/api/v1/users", &admin.token, body)
        .await
        .expect(201);
    let token = app.smtp.latest_to(email).await.invitation_token().unwrap();
    (created.body["id"].as_str().unwrap().to_owned(), token)
}

/// The browser: cookies of the provider, and the forms it posts.
struct Browser {
    issuer: String,
    cookies: BTreeMap<String, String>,
}

impl Browser {
    fn absorb(&mut self, headers: &awc::http::header::HeaderMap) {
        for value in headers.get_all("set-cookie") {
            let Ok(text) = value.to_str() else { continue };
            let pair = text.split(';').next().unwrap_or("");
            if let Some((name, value)) = pair.split_once('=') {
                if value.is_empty() {
                    self.cookies.remove(name.trim());
                } else {
                    self.cookies
                        .insert(name.trim().to_owned(), value.to_owned());
                }
            }
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// One request to the provider: (status, location, body).
    async fn send(
        &mut self,
        method: Method,
        url: &str,
        form: Option<Vec<(String, String)>>,
    ) -> (u16, Option<String>, String) {
        let mut req = http().request(method, url);
        if !self.cookies.is_empty() {
            req = req.insert_header(("cookie", self.cookie_header()));
        }
        let mut resp = match form {
            Some(form) => req.send_form(&form).await,
            None => req.send().await,
        }
        .expect("provider request");
        self.absorb(resp.headers());
        let location = resp
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(|l| absolute(&self.issuer, l));
        let body = resp.body().limit(1 << 20).await.expect("provider body");
        (
            resp.status().as_u16(),
            location,
            String::from_utf8_lossy(&body).into_owned(),
        )
    }
}

fn absolute(issuer: &str, location: &str) -> String {
    if location.starts_with('/') {
        format!("{issuer}{location}")
    } else {
        location.to_owned()
    }
}

/// The first form of a page: its action and inputs (name → value).
fn form_of(issuer: &str, html: &str) -> (String, Vec<(String, String)>) {
    let attr = |tag: &str, name: &str| -> Option<String> {
        let key = format!("{name}=\"");
        let start = tag.find(&key)? + key.len();
        let end = tag[start..].find('"')? + start;
        Some(tag[start..end].replace("&amp;", "&"))
    };
    let form_start = html.find("<form").expect("a form");
    let form_tag = &html[form_start..form_start + html[form_start..].find('>').unwrap()];
    let action = absolute(issuer, &attr(form_tag, "action").expect("form action"));
    let mut inputs = Vec::new();
    let mut rest = &html[form_start..];
    while let Some(i) = rest.find("<input") {
        let tag = &rest[i..i + rest[i..].find('>').unwrap()];
        if let Some(name) = attr(tag, "name") {
            inputs.push((name, attr(tag, "value").unwrap_or_default()));
        }
        rest = &rest[i + 6..];
    }
    (action, inputs)
}

/// Signs in as `login` at the provider through Relais's `provider`, from
/// the start route (with `query` added) to the redirect back to the
/// client; returns that redirect's query parameters, and the callback URL
/// Relais was reached at.
async fn sign_in(
    app: &TestApp,
    provider: &str,
    login: &str,
    query: &str,
) -> (BTreeMap<String, String>, String) {
    let start = format!(
        "/api/v1/auth/oidc/{provider}/start?redirect_uri={}&state=client-state{query}",
        urlencode(CLIENT_REDIRECT)
    );
    let (status, location) = relais_get(app, &start).await;
    assert_eq!(status, 302);
    let mut next = location.expect("a redirect to the provider");
    let issuer = &app.settings.auth.oidc.providers[provider].issuer;
    assert!(next.starts_with(issuer.as_str()), "{next}");
    assert!(next.contains("code_challenge_method=S256"), "{next}");
    let mut browser = Browser {
        issuer: issuer.clone(),
        cookies: BTreeMap::new(),
    };
    for _ in 0..20 {
        if next.starts_with(&app.settings.server.public_url) {
            let path = next
                .trim_start_matches(&app.settings.server.public_url)
                .to_owned();
            let (status, location) = relais_get(app, &path).await;
            assert_eq!(status, 302);
            let to = location.expect("a redirect to the client");
            assert!(to.starts_with(CLIENT_REDIRECT), "{to}");
            return (query_of(&to), path);
        }
        let (status, location, body) = browser.send(Method::GET, &next, None).await;
        if let Some(location) = location.filter(|_| (300..400).contains(&status)) {
            next = location;
            continue;
        }
        assert_eq!(status, 200, "{body}");
        let (action, mut inputs) = form_of(issuer, &body);
        for (name, value) in &mut inputs {
            match name.as_str() {
                "login" => *value = login.to_owned(),
                "password" => *value = "any password".into(),
                _ => {}
            }
        }
        let (status, location, body) = browser.send(Method::POST, &action, Some(inputs)).await;
        assert!((300..400).contains(&status), "{status} {body}");
        next = location.expect("redirect after a form");
    }
    panic!("too many redirects");
}

/// A GET to Relais that does not follow its redirect: (status, location).
async fn relais_get(app: &TestApp, path: &str) -> (u16, Option<String>) {
    let mut resp = http()
        .get(format!("{}{path}", app.address))
        .send()
        .await
        .expect("request to Relais");
    let location = resp
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let status = resp.status().as_u16();
    let body = resp.body().await.unwrap_or_default();
    assert!(
        status < 400,
        "{path}: {status} {}",
        String::from_utf8_lossy(&body)
    );
    (status, location)
}

fn urlencode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn query_of(url: &str) -> BTreeMap<String, String> {
    let query = url.split_once('?').map_or("", |(_, q)| q);
    form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

async fn exchange(app: &TestApp, code: &str) -> crate::helpers::Resp {
    app.post_anon("/api/v1/auth/oidc/token", json!({"code": code}))
        .await
}

/// The audit rows of sign-ins: (actor, detail, outcome).
async fn sign_in_rows(app: &TestApp) -> Vec<(Option<String>, Option<String>, String)> {
    app.state
        .db
        .read(|conn| {
            Ok(audit_events::table
                .filter(audit_events::resource_type.eq("sign_in"))
                .order(audit_events::seq)
                .select((
                    audit_events::actor_id,
                    audit_events::resource_id,
                    audit_events::outcome,
                ))
                .load(conn)?)
        })
        .await
        .unwrap()
}

#[actix_web::test]
async fn a_clinician_signs_in_by_rpps_and_then_by_the_linked_subject() {
    let app = oidc_app().await;
    let admin = app.admin().await;
    let rpps = random_rpps();
    let (user_id, _) = invite(&app, &admin, "oidc-gp@relais.test", Some(&rpps)).await;

    let (back, _) = sign_in(&app, "idp", &format!("rpps-{rpps}"), "").await;
    assert_eq!(back.get("state").map(String::as_str), Some("client-state"));
    let code = back.get("code").expect("a one-time code");
    let pair = exchange(&app, code).await.expect(200);
    assert_eq!(pair.body["user"]["id"], user_id.as_str());
    let session = session_of(&pair.body);
    app.get("/api/v1/me", &session.token).await.expect(200);
    // The code is single use.
    exchange(&app, code).await.invalid_field_401("code");

    // The subject is linked now: it signs in even without the RPPS claim
    // reaching Relais (here the same login, through the same provider).
    let (back, _) = sign_in(&app, "idp", &format!("rpps-{rpps}"), "").await;
    exchange(&app, &back["code"]).await.expect(200);

    let rows = sign_in_rows(&app).await;
    // No code or token in the trail.
    for (_, detail, _) in &rows {
        let detail = detail.as_deref().unwrap_or("");
        assert!(
            !detail.contains(code.as_str()) && !detail.contains(&session.token),
            "{detail}"
        );
    }
    assert!(
        rows.contains(&(
            Some(user_id.clone()),
            Some("oidc:idp:identity_verified".into()),
            "allowed".into()
        )),
        "{rows:?}"
    );
    assert!(
        rows.contains(&(
            Some(user_id.clone()),
            Some("oidc:idp".into()),
            "allowed".into()
        )),
        "{rows:?}"
    );
    assert!(
        rows.contains(&(None, Some("oidc:invalid_code".into()), "denied".into())),
        "{rows:?}"
    );
}

#[actix_web::test]
async fn es256_tokens_and_rotated_keys_are_checked() {
    // A provider of its own: its rotation must not surprise other tests.
    let issuer = start_provider();
    let app = oidc_app_at(&issuer).await;
    let admin = app.admin().await;
    let rpps = random_rpps();
    let (user_id, _) = invite(&app, &admin, "oidc-es@relais.test", Some(&rpps)).await;
    let (back, _) = sign_in(&app, "idp-es", &format!("rpps-{rpps}"), "").await;
    let pair = exchange(&app, &back["code"]).await.expect(200);
    assert_eq!(pair.body["user"]["id"], user_id.as_str());

    // The provider rotates its keys (new kids): Relais, holding the old
    // set, reads the new one when a token names an unknown kid.
    let resp = http()
        .post(format!("{issuer}/test/rotate"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 204);
    tokio::time::sleep(Duration::from_secs(6)).await;
    let (back, _) = sign_in(&app, "idp-es", &format!("rpps-{rpps}"), "").await;
    exchange(&app, &back["code"]).await.expect(200);
}

#[actix_web::test]
async fn an_unknown_subject_gets_no_account() {
    let app = oidc_app().await;
    let (back, _) = sign_in(&app, "idp", &format!("rpps-{}", random_rpps()), "").await;
    assert_eq!(
        back.get("error").map(String::as_str),
        Some("unknown_subject"),
        "{back:?}"
    );
    assert!(!back.contains_key("code"));
    assert_eq!(back.get("state").map(String::as_str), Some("client-state"));
    // A login that carries no RPPS at all: unknown too.
    let (back, _) = sign_in(&app, "idp", "someone-without-rpps", "").await;
    assert_eq!(
        back.get("error").map(String::as_str),
        Some("unknown_subject")
    );
    let rows = sign_in_rows(&app).await;
    assert!(
        rows.contains(&(
            None,
            Some("oidc:idp:unknown_subject".into()),
            "denied".into()
        )),
        "{rows:?}"
    );
    // No account was created.
    let admin = app.admin().await;
    let users = app.get("/api/v1/users", &admin.token).await.expect(200);
    assert_eq!(
        users.body["items"].as_array().unwrap().len(),
        1,
        "{}",
        users.body
    );
}

#[actix_web::test]
async fn a_deactivated_account_cannot_sign_in() {
    let app = oidc_app().await;
    let admin = app.admin().await;
    let rpps = random_rpps();
    let (user_id, _) = invite(&app, &admin, "oidc-gone@relais.test", Some(&rpps)).await;
    app.patch(
        &format!("/api/v1/users/{user_id}"),
        &admin.token,
        json!({"active": false}),
    )
    .await
    .expect(200);
    let (back, _) = sign_in(&app, "idp", &format!("rpps-{rpps}"), "").await;
    assert_eq!(
        back.get("error").map(String::as_str),
        Some("account_deactivated"),
        "{back:?}"
    );
    let rows = sign_in_rows(&app).await;
    assert!(
        rows.contains(&(
            Some(user_id),
            Some("oidc:idp:account_deactivated".into()),
            "denied".into()
        )),
        "{rows:?}"
    );
}

#[actix_web::test]
async fn a_token_without_the_required_acr_is_refused() {
    let app = oidc_app().await;
    let admin = app.admin().await;
    let rpps = random_rpps();
    invite(&app, &admin, "oidc-acr@relais.test", Some(&rpps)).await;
    let (back, _) = sign_in(&app, "strict", &format!("rpps-{rpps}"), "").await;
    assert_eq!(
        back.get("error").map(String::as_str),
        Some("wrong_acr"),
        "{back:?}"
    );
    let rows = sign_in_rows(&app).await;
    assert!(
        rows.contains(&(None, Some("oidc:strict:wrong_acr".into()), "denied".into())),
        "{rows:?}"
    );
}

#[actix_web::test]
async fn a_replayed_state_is_refused() {
    let app = oidc_app().await;
    let admin = app.admin().await;
    let rpps = random_rpps();
    invite(&app, &admin, "oidc-replay@relais.test", Some(&rpps)).await;
    let (back, callback) = sign_in(&app, "idp", &format!("rpps-{rpps}"), "").await;
    assert!(back.contains_key("code"));
    // The provider's redirect, played again.
    app.request(Method::GET, &callback, None, None)
        .await
        .invalid_field_400("state");
    let rows = sign_in_rows(&app).await;
    assert!(
        rows.contains(&(None, Some("oidc:idp:unknown_state".into()), "denied".into())),
        "{rows:?}"
    );
}

#[actix_web::test]
async fn only_allowed_redirects_and_known_providers_start_a_sign_in() {
    let app = oidc_app().await;
    let start = |provider: &str, redirect: &str| {
        format!(
            "/api/v1/auth/oidc/{provider}/start?redirect_uri={}",
            urlencode(redirect)
        )
    };
    app.request(
        Method::GET,
        &start("idp", "https://evil.example/steal"),
        None,
        None,
    )
    .await
    .invalid_field("redirect_uri");
    app.request(
        Method::GET,
        &start("idp", &format!("{CLIENT_REDIRECT}/more")),
        None,
        None,
    )
    .await
    .invalid_field("redirect_uri");
    app.request(Method::GET, &start("nope", CLIENT_REDIRECT), None, None)
        .await
        .problem(404);
    app.request(Method::GET, "/api/v1/auth/oidc/idp/start", None, None)
        .await
        .invalid_field_400("redirect_uri");
}

#[actix_web::test]
async fn an_invitation_is_accepted_by_an_oidc_sign_in() {
    let app = oidc_app().await;
    let admin = app.admin().await;
    // Invited without an RPPS: the invitation names the account.
    let (user_id, token) = invite(&app, &admin, "oidc-invited@relais.test", None).await;
    let login = format!("hospital-sso-{}", uuid::Uuid::now_v7().simple());
    let (back, _) = sign_in(
        &app,
        "idp",
        &login,
        &format!("&invitation={}", urlencode(&token)),
    )
    .await;
    let pair = exchange(&app, &back["code"]).await.expect(200);
    assert_eq!(pair.body["user"]["id"], user_id.as_str());
    // The invitation is used: no password can be set with it any more.
    app.post_anon(
        "/api/v1/auth/invitations/accept",
        json!({"token": token, "password": "a long enough password"}),
    )
    .await
    .problem(409);
    // The subject is linked: the next sign-in needs no invitation.
    let (back, _) = sign_in(&app, "idp", &login, "").await;
    let pair = exchange(&app, &back["code"]).await.expect(200);
    assert_eq!(pair.body["user"]["id"], user_id.as_str());
    // A used invitation cannot be used again (by anyone).
    let (back, _) = sign_in(
        &app,
        "idp",
        "someone-else",
        &format!("&invitation={}", urlencode(&token)),
    )
    .await;
    assert_eq!(
        back.get("error").map(String::as_str),
        Some("invitation_unusable")
    );
}
