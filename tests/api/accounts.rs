//! Organisations, users, invitations and the directory.

use serde_json::json;

use crate::helpers::{PASSWORD, spawn_app};

/// An 11-digit number with a valid Luhn key.
fn rpps(body: &str) -> String {
    (0..10)
        .map(|k| format!("{body}{k}"))
        .find(|s| relais::domain::rpps::luhn_valid(s))
        .unwrap()
}

#[actix_web::test]
async fn organisations_are_created_by_admins_and_listed_by_kind() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let pharmacy = app
        .create_org(&admin, "Pharmacie du Port", "pharmacy")
        .await;
    let centre = app
        .create_org(&admin, "CSAPA Rennes", "addiction_centre")
        .await;
    let list = app
        .get("/api/v1/organizations?kind=pharmacy", &admin.token)
        .await
        .expect(200);
    let ids: Vec<&str> = list.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [pharmacy.as_str()]);

    let gp_practice = app.create_org(&admin, "Cabinet", "gp_practice").await;
    let gp = app
        .onboard(&admin, "gp@relais.test", "gp", &gp_practice)
        .await;
    // Clinicians can list (to address a centre) but not create.
    let list = app
        .get("/api/v1/organizations?kind=addiction_centre", &gp.token)
        .await
        .expect(200);
    assert_eq!(list.body["items"][0]["id"], centre);
    app.post(
        "/api/v1/organizations",
        &gp.token,
        json!({"name": "X", "kind": "pharmacy"}),
    )
    .await
    .problem(403);
}

#[actix_web::test]
async fn users_are_validated_and_unique_by_email() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let org = app.create_org(&admin, "Cabinet", "gp_practice").await;
    let pharmacy = app.create_org(&admin, "Pharmacie", "pharmacy").await;
    let valid_rpps = rpps("1000345678");
    let mut bad_rpps = valid_rpps.clone();
    let last = bad_rpps.pop().unwrap();
    bad_rpps.push(char::from(b'0' + (last as u8 - b'0' + 1) % 10));

    let user = |email: &str, rpps: &str| json!({"email": email, "full_name": "Dr Test", "role": "gp", "organization_id": org, "rpps": rpps});
    app.post(
        "/api/v1/users",
        &admin.token,
        user("gp@relais.test", &bad_rpps),
    )
    .await
    .invalid_field("rpps");
    app.post(
        "/api/v1/users",
        &admin.token,
        user("gp@relais.test", "12345"),
    )
    .await
    .invalid_field("rpps");
    app.post(
        "/api/v1/users",
        &admin.token,
        user("not-an-email", &valid_rpps),
    )
    .await
    .invalid_field("email");
    let created = app
        .post(
            "/api/v1/users",
            &admin.token,
            user("Dr.GP@Relais.test", &valid_rpps),
        )
        .await
        .expect(201);
    assert_eq!(created.body["email"], "dr.gp@relais.test");
    assert_eq!(created.body["rpps"], valid_rpps);

    // Same address in other case: 409 naming the field; same RPPS: 409 too.
    let problem = app
        .post("/api/v1/users", &admin.token, user("DR.gp@relais.TEST", ""))
        .await
        .problem(409);
    assert_eq!(problem["errors"][0]["field"], "email");
    let problem = app
        .post(
            "/api/v1/users",
            &admin.token,
            user("other@relais.test", &valid_rpps),
        )
        .await
        .problem(409);
    assert_eq!(problem["errors"][0]["field"], "rpps");

    // Specialists work at centres; organisation must exist; non-admins need one.
    app.post("/api/v1/users", &admin.token, json!({"email": "s@relais.test", "full_name": "S", "role": "specialist", "organization_id": pharmacy}))
        .await
        .invalid_field("organization_id");
    app.post("/api/v1/users", &admin.token, json!({"email": "s@relais.test", "full_name": "S", "role": "nurse", "organization_id": uuid::Uuid::now_v7()}))
        .await
        .invalid_field("organization_id");
    app.post(
        "/api/v1/users",
        &admin.token,
        json!({"email": "s@relais.test", "full_name": "S", "role": "nurse"}),
    )
    .await
    .invalid_field("organization_id");
    app.post("/api/v1/users", &admin.token, json!({"email": "s@relais.test", "full_name": "S", "role": "surgeon", "organization_id": org}))
        .await
        .invalid_field("role");

    // Only the one valid user exists, and only its invitation was queued.
    let users = app.get("/api/v1/users", &admin.token).await.expect(200);
    assert_eq!(
        users.body["items"].as_array().unwrap().len(),
        2,
        "admin + one gp"
    );
    let outbox = app
        .get("/api/v1/email-outbox", &admin.token)
        .await
        .expect(200);
    assert_eq!(outbox.body["items"].as_array().unwrap().len(), 1);
}

#[actix_web::test]
async fn only_admins_manage_accounts() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let org = app.create_org(&admin, "Cabinet", "gp_practice").await;
    let gp = app.onboard(&admin, "gp@relais.test", "gp", &org).await;
    app.post(
        "/api/v1/users",
        &gp.token,
        json!({"email": "x@relais.test", "full_name": "X", "role": "gp", "organization_id": org}),
    )
    .await
    .problem(403);
    app.patch(
        &format!("/api/v1/users/{}", gp.id),
        &gp.token,
        json!({"full_name": "Boss"}),
    )
    .await
    .problem(403);
    app.get("/api/v1/email-outbox", &gp.token)
        .await
        .problem(403);
}

#[actix_web::test]
async fn directory_shows_clinicians_limited_fields() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let org = app.create_org(&admin, "Cabinet", "gp_practice").await;
    let centre = app
        .create_org(&admin, "Centre douleur", "pain_centre")
        .await;
    let gp = app.onboard(&admin, "gp@relais.test", "gp", &org).await;
    let specialist = app
        .onboard(&admin, "pain@relais.test", "specialist", &centre)
        .await;
    app.patch(
        &format!("/api/v1/users/{}", specialist.id),
        &admin.token,
        json!({"full_name": "Dr Douleur", "phone": "02 99 00 00 00"}),
    )
    .await
    .expect(200);

    let found = app
        .get("/api/v1/users?q=douLEUR", &gp.token)
        .await
        .expect(200);
    let items = found.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["full_name"], "Dr Douleur");
    assert_eq!(items[0]["organization_name"], "Centre douleur");
    assert!(items[0].get("email").is_none() && items[0].get("phone").is_none());

    let by_role = app
        .get("/api/v1/users?role=specialist", &gp.token)
        .await
        .expect(200);
    assert_eq!(by_role.body["items"].as_array().unwrap().len(), 1);
    let by_org = app
        .get(&format!("/api/v1/users?organization_id={org}"), &gp.token)
        .await
        .expect(200);
    assert_eq!(by_org.body["items"][0]["id"], gp.id);

    // Administrators see the account fields, and inactive accounts.
    app.patch(
        &format!("/api/v1/users/{}", specialist.id),
        &admin.token,
        json!({"active": false}),
    )
    .await
    .expect(200);
    let admin_view = app
        .get("/api/v1/users?q=douleur", &admin.token)
        .await
        .expect(200);
    assert_eq!(admin_view.body["items"][0]["email"], "pain@relais.test");
    assert_eq!(admin_view.body["items"][0]["active"], false);
    let gp_view = app
        .get("/api/v1/users?q=douleur", &gp.token)
        .await
        .expect(200);
    assert!(gp_view.body["items"].as_array().unwrap().is_empty());
}

#[actix_web::test]
async fn lists_paginate_with_a_cursor() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    for i in 0..5 {
        app.create_org(&admin, &format!("Pharmacie {i}"), "pharmacy")
            .await;
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/organizations?limit=2&cursor={c}"),
            None => "/api/v1/organizations?limit=2".to_owned(),
        };
        let page = app.get(&path, &admin.token).await.expect(200);
        for item in page.body["items"].as_array().unwrap() {
            seen.push(item["name"].as_str().unwrap().to_owned());
        }
        match page.body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(
        seen,
        (0..5).map(|i| format!("Pharmacie {i}")).collect::<Vec<_>>()
    );
}

#[actix_web::test]
async fn invitation_is_accepted_once_and_expires() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let org = app.create_org(&admin, "Cabinet", "gp_practice").await;
    for email in ["a@relais.test", "b@relais.test"] {
        app.post(
            "/api/v1/users",
            &admin.token,
            json!({"email": email, "full_name": "Dr A", "role": "gp", "organization_id": org}),
        )
        .await
        .expect(201);
    }
    let token_a = app
        .smtp
        .latest_to("a@relais.test")
        .await
        .invitation_token()
        .unwrap();
    let token_b = app
        .smtp
        .latest_to("b@relais.test")
        .await
        .invitation_token()
        .unwrap();

    // Not yet accepted: cannot sign in.
    app.post_anon(
        "/api/v1/auth/login",
        json!({"email": "a@relais.test", "password": PASSWORD}),
    )
    .await
    .problem(401);
    app.post_anon(
        "/api/v1/auth/invitations/accept",
        json!({"token": token_a, "password": "short"}),
    )
    .await
    .invalid_field("password");
    app.post_anon(
        "/api/v1/auth/invitations/accept",
        json!({"token": "nope", "password": PASSWORD}),
    )
    .await
    .problem(404);
    let accepted = app
        .post_anon(
            "/api/v1/auth/invitations/accept",
            json!({"token": token_a, "password": PASSWORD}),
        )
        .await
        .expect(200);
    assert_eq!(accepted.body["user"]["email"], "a@relais.test");
    app.post_anon(
        "/api/v1/auth/invitations/accept",
        json!({"token": token_a, "password": "another long password"}),
    )
    .await
    .problem(409);
    // The first password stands.
    app.login("a@relais.test", PASSWORD).await;

    // Seven days later the other invitation has expired.
    app.clock
        .advance(chrono::Duration::days(7) + chrono::Duration::seconds(1));
    app.post_anon(
        "/api/v1/auth/invitations/accept",
        json!({"token": token_b, "password": PASSWORD}),
    )
    .await
    .problem(410);
}
