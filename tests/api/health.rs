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
async fn request_id_is_echoed_or_made() {
    let app = spawn_app().await;
    let given = app
        .raw(
            Method::GET,
            "/api/v1/health/live",
            &[("x-request-id", "abc-123")],
            vec![],
        )
        .await;
    assert_eq!(given.headers.get("x-request-id").unwrap(), "abc-123");

    let made = app
        .raw(Method::GET, "/api/v1/health/live", &[], vec![])
        .await;
    let id = made
        .headers
        .get("x-request-id")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");

    // An id that could smuggle text into the logs is replaced.
    let odd = app
        .raw(
            Method::GET,
            "/api/v1/health/live",
            &[("x-request-id", "a b\tc")],
            vec![],
        )
        .await;
    assert_ne!(odd.headers.get("x-request-id").unwrap(), "a b\tc");
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
