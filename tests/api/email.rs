//! The outbox delivers over real SMTP, retries, and never sends twice.

use std::sync::Arc;

use serde_json::json;

use crate::helpers::{SmtpListener, TestDb, eventually, spawn_app, spawn_app_with, spawn_on};

#[actix_web::test]
async fn invitation_email_carries_only_the_link() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let org = app
        .create_org(&admin, "Cabinet Kerhervé", "gp_practice")
        .await;
    let created = app
        .post("/api/v1/users", &admin.token, json!({"email": "gp@relais.test", "full_name": "Dr Yannick Le Goff", "role": "gp", "organization_id": org}))
        .await
        .expect(201);
    let mail = app.smtp.latest_to("gp@relais.test").await;
    let body = mail.body();
    let token = mail.invitation_token().unwrap();
    assert!(
        body.contains(&format!(
            "{}/invitations/{token}",
            app.settings.server.public_url
        )),
        "{body}"
    );
    assert_eq!(token.len(), 43, "256-bit token, base64url");
    assert!(!mail.data.contains("Le Goff") && !mail.data.contains("Kerhervé"));
    assert_eq!(mail.from, "no-reply@relais.localhost");

    // Message-ID derives from the outbox row. The relay accepts the mail
    // before the worker records the row as sent, so wait for that record.
    eventually("outbox row marked sent", || async {
        let outbox = app
            .get("/api/v1/email-outbox?status=sent", &admin.token)
            .await
            .expect(200);
        outbox.body["items"]
            .as_array()
            .is_some_and(|i| !i.is_empty())
    })
    .await;
    let outbox = app
        .get("/api/v1/email-outbox?status=sent", &admin.token)
        .await
        .expect(200);
    let row = &outbox.body["items"][0];
    let message_id = mail.header("message-id").unwrap();
    assert!(
        message_id.contains(row["id"].as_str().unwrap()),
        "{message_id}"
    );
    assert_eq!(row["attempts"], 1);
    assert!(created.body["id"].is_string());
}

#[actix_web::test]
async fn smtp_down_then_up_delivers_each_email_exactly_once() {
    // Reserve a port, then close it: the relay is down.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let app = spawn_app_with(|s| s.email.smtp_port = port).await;
    let admin = app.admin().await;
    let org = app.create_org(&admin, "Cabinet", "gp_practice").await;
    for i in 0..3 {
        app.post("/api/v1/users", &admin.token, json!({"email": format!("gp{i}@relais.test"), "full_name": "Dr", "role": "gp", "organization_id": org}))
            .await
            .expect(201);
    }
    // Every row fails at least twice and stays pending with its error visible.
    eventually("failed attempts recorded", || async {
        let outbox = app
            .get("/api/v1/email-outbox?status=pending", &admin.token)
            .await
            .expect(200);
        let items = outbox.body["items"].as_array().unwrap().clone();
        items.len() == 3
            && items
                .iter()
                .all(|r| r["attempts"].as_i64().unwrap() >= 2 && r["last_error"].is_string())
    })
    .await;

    let relay = SmtpListener::start_on(port).await;
    let mails = relay.wait_for(3).await;
    eventually("all rows sent", || async {
        let pending = app
            .get("/api/v1/email-outbox?status=pending", &admin.token)
            .await
            .expect(200);
        pending.body["items"].as_array().unwrap().is_empty()
    })
    .await;
    // Give a duplicate every chance to show up: several more poll cycles.
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    let mails_after = relay.mails();
    assert_eq!(
        mails_after.len(),
        3,
        "exactly once: {:?}",
        mails.iter().map(|m| m.to.clone()).collect::<Vec<_>>()
    );
    let mut recipients: Vec<String> = mails_after.iter().flat_map(|m| m.to.clone()).collect();
    recipients.sort();
    assert_eq!(
        recipients,
        ["gp0@relais.test", "gp1@relais.test", "gp2@relais.test"]
    );
    relay.stop();
}

#[actix_web::test]
async fn two_instances_never_send_one_row_twice() {
    let db = Arc::new(TestDb::new());
    let relay = SmtpListener::start().await;
    let first = spawn_on(db.clone(), relay.clone(), |_| {}).await;
    let second = spawn_on(db.clone(), relay.clone(), |_| {}).await;
    let admin = first.admin().await;
    let org = first.create_org(&admin, "Cabinet", "gp_practice").await;
    for i in 0..30 {
        // Alternate instances so both queue and both send.
        let app = if i % 2 == 0 { &first } else { &second };
        app.post("/api/v1/users", &admin.token, json!({"email": format!("gp{i}@relais.test"), "full_name": "Dr", "role": "gp", "organization_id": org}))
            .await
            .expect(201);
    }
    relay.wait_for(30).await;
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    let mut ids: Vec<String> = relay
        .mails()
        .iter()
        .map(|m| m.header("message-id").unwrap())
        .collect();
    assert_eq!(ids.len(), 30);
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 30, "a message was sent twice");
}

#[actix_web::test]
async fn file_transport_writes_eml_files_into_the_data_folder() {
    let app = spawn_app_with(|s| s.email.transport = relais::config::EmailTransport::File).await;
    let admin = app.admin().await;
    let org = app.create_org(&admin, "Cabinet", "gp_practice").await;
    app.post(
        "/api/v1/users",
        &admin.token,
        json!({"email": "gp@relais.test", "full_name": "Dr", "role": "gp", "organization_id": org}),
    )
    .await
    .expect(201);
    let dir = app.settings.server.data_dir.join("outbox");
    eventually("an .eml file", || {
        let dir = dir.clone();
        async move {
            std::fs::read_dir(&dir)
                .map(|entries| {
                    entries.filter_map(Result::ok).any(|e| {
                        e.path().extension().is_some_and(|x| x == "eml")
                            && std::fs::read_to_string(e.path())
                                .unwrap_or_default()
                                .contains("To: gp@relais.test")
                    })
                })
                .unwrap_or(false)
        }
    })
    .await;
    assert!(app.smtp.mails().is_empty());
}
