use actix_web::http::Method;

use crate::helpers::spawn_app;

#[actix_web::test]
async fn live_and_ready_answer() {
    let app = spawn_app().await;
    let live = app
        .request(Method::GET, "/api/v1/health/live", None, None)
        .await
        .expect(200);
    assert_eq!(live.body["status"], "ok");
    let ready = app
        .request(Method::GET, "/api/v1/health/ready", None, None)
        .await
        .expect(200);
    assert_eq!(ready.body["status"], "ok");
}

#[actix_web::test]
async fn request_id_is_made_by_the_server() {
    let app = spawn_app().await;
    // A client's id is not taken over: the audit and logs must trust theirs.
    let given = app
        .raw(
            Method::GET,
            "/api/v1/health/live",
            &[("x-request-id", "abc-123")],
            vec![],
        )
        .await;
    let id = given
        .headers
        .get("x-request-id")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert_ne!(id, "abc-123");
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");

    let made = app
        .raw(Method::GET, "/api/v1/health/live", &[], vec![])
        .await;
    let other = made.headers.get("x-request-id").unwrap().to_str().unwrap();
    assert!(uuid::Uuid::parse_str(other).is_ok(), "{other}");
    assert_ne!(other, id);
}

#[actix_web::test]
async fn graceful_stop_finishes_background_tasks() {
    let app = spawn_app().await;
    app.request(Method::GET, "/api/v1/health/live", None, None)
        .await
        .expect(200);
    // stop() waits for the HTTP server and then the outbox task to end.
    tokio::time::timeout(std::time::Duration::from_secs(20), app.stop())
        .await
        .expect("stopped in time");
}
