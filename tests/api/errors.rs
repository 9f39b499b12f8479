//! Every kind of error is problem+json, and bad input changes nothing.

use actix_web::http::Method;
use serde_json::json;

use crate::helpers::spawn_app;

#[actix_web::test]
async fn malformed_json_is_400() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let auth = format!("Bearer {}", admin.token);
    let headers = [
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
    ];
    let resp = app
        .raw(
            Method::POST,
            "/api/v1/organizations",
            &headers,
            b"{\"name\": ".to_vec(),
        )
        .await;
    resp.problem(400);
    let resp = app
        .raw(Method::POST, "/api/v1/organizations", &headers, vec![])
        .await;
    resp.problem(400);
}

#[actix_web::test]
async fn wrong_or_missing_fields_are_422_naming_them() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    app.post(
        "/api/v1/organizations",
        &admin.token,
        json!({"kind": "pharmacy"}),
    )
    .await
    .invalid_field("name");
    app.post(
        "/api/v1/organizations",
        &admin.token,
        json!({"name": "P", "kind": "bakery"}),
    )
    .await
    .invalid_field("kind");
    app.post(
        "/api/v1/organizations",
        &admin.token,
        json!({"name": 12, "kind": "pharmacy"}),
    )
    .await
    .invalid_field("name");
    // A misspelt field is refused rather than silently ignored.
    app.post(
        "/api/v1/organizations",
        &admin.token,
        json!({"name": "P", "kind": "pharmacy", "phnoe": "1"}),
    )
    .await
    .invalid_field("phnoe");
    app.post(
        "/api/v1/organizations",
        &admin.token,
        json!({"name": "P", "kind": "pharmacy", "phone": "call me"}),
    )
    .await
    .invalid_field("phone");
    // Nothing was stored.
    let list = app
        .get("/api/v1/organizations", &admin.token)
        .await
        .expect(200);
    assert_eq!(list.body["items"].as_array().unwrap().len(), 0);
}

#[actix_web::test]
async fn unknown_route_and_wrong_method() {
    let app = spawn_app().await;
    app.request(Method::GET, "/api/v1/nothing-here", None, None)
        .await
        .problem(404);
    app.request(Method::GET, "/elsewhere", None, None)
        .await
        .problem(404);
    let resp = app
        .request(Method::DELETE, "/api/v1/organizations", None, None)
        .await;
    assert!(resp.headers.get("allow").is_some());
    resp.problem(405);
}

#[actix_web::test]
async fn body_too_large_is_413() {
    let app = spawn_app_small_body().await;
    let admin = app.admin().await;
    let auth = format!("Bearer {}", admin.token);
    let big = format!(
        "{{\"name\": \"{}\", \"kind\": \"pharmacy\"}}",
        "x".repeat(5000)
    );
    let resp = app
        .raw(
            Method::POST,
            "/api/v1/organizations",
            &[
                ("authorization", auth.as_str()),
                ("content-type", "application/json"),
            ],
            big.into_bytes(),
        )
        .await;
    resp.problem(413);
}

async fn spawn_app_small_body() -> crate::helpers::TestApp {
    crate::helpers::spawn_app_with(|s| s.server.max_body_bytes = 2048).await
}

#[actix_web::test]
async fn malformed_query_and_path_are_400_naming_them() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let problem = app
        .get("/api/v1/users?limit=lots", &admin.token)
        .await
        .problem(400);
    assert_eq!(problem["errors"][0]["field"], "limit");
    let problem = app
        .get("/api/v1/users?limit=0", &admin.token)
        .await
        .problem(400);
    assert_eq!(problem["errors"][0]["field"], "limit");
    let problem = app
        .get("/api/v1/organizations?kind=bakery", &admin.token)
        .await
        .problem(400);
    assert_eq!(problem["errors"][0]["field"], "kind");
    let problem = app
        .patch(
            "/api/v1/users/not-a-uuid",
            &admin.token,
            json!({"active": false}),
        )
        .await
        .problem(400);
    assert_eq!(problem["errors"][0]["field"], "id");
    let unknown = uuid::Uuid::now_v7();
    app.patch(
        &format!("/api/v1/users/{unknown}"),
        &admin.token,
        json!({"active": false}),
    )
    .await
    .problem(404);
}

#[actix_web::test]
async fn missing_or_bad_token_is_401_problem() {
    let app = spawn_app().await;
    let resp = app.request(Method::GET, "/api/v1/me", None, None).await;
    assert_eq!(resp.headers.get("www-authenticate").unwrap(), "Bearer");
    resp.problem(401);
    app.get("/api/v1/me", "garbage").await.problem(401);
}

#[actix_web::test]
async fn internal_errors_are_500_problems_that_hide_the_cause() {
    use diesel::connection::SimpleConnection;
    let app = spawn_app().await;
    let admin = app.admin().await;
    // A real fault: the table the handler reads is gone.
    let mut conn = app.state.db.get().unwrap();
    conn.batch_execute("ALTER TABLE organizations RENAME TO organizations_moved")
        .unwrap();
    let problem = app
        .get("/api/v1/organizations", &admin.token)
        .await
        .problem(500);
    let detail = problem["detail"].as_str().unwrap();
    assert!(!detail.contains("organizations"), "{detail}");
}
