//! Threads, messages, read state, inbox, idempotency, daily digests, and the
//! proof that no email carries health data.

use std::sync::Arc;

use actix_web::http::Method;
use diesel::prelude::*;
use relais::db::schema::{digest_runs, email_outbox, idempotency_keys, messages};
use relais::scheduler::Scheduler;
use serde_json::{Value, json};

use crate::fixtures::{AuditOn, Network, add_member, create_patient, random_ins, set_consent};
use crate::helpers::{
    Resp, Session, SmtpListener, TestApp, TestDb, eventually, spawn_app, spawn_on,
};

const DIGEST_SUBJECT: &str = "Relais: your daily summary";

/// A patient of the referent GP with the hospital doctor on the team
/// (consent granted); returns (patient, thread).
async fn shared_patient(app: &TestApp, net: &Network) -> (String, String) {
    let patient = create_patient(app, &net.gp, None).await;
    set_consent(app, &net.gp, &patient, "granted").await;
    add_member(app, &net.gp, &patient, &net.hospital).await;
    let thread = thread_of(app, &net.gp, &patient).await;
    (patient, thread)
}

async fn thread_of(app: &TestApp, by: &Session, patient: &str) -> String {
    app.get(&format!("/api/v1/patients/{patient}"), &by.token)
        .await
        .expect(200)
        .body["thread_id"]
        .as_str()
        .expect("thread_id")
        .to_owned()
}

async fn post(app: &TestApp, by: &Session, thread: &str, body: &str) -> String {
    app.post(
        &format!("/api/v1/threads/{thread}/messages"),
        &by.token,
        json!({"body": body}),
    )
    .await
    .expect(201)
    .body["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn post_with_key(app: &TestApp, by: &Session, thread: &str, key: &str, body: &str) -> Resp {
    app.raw(
        Method::POST,
        &format!("/api/v1/threads/{thread}/messages"),
        &[
            ("authorization", &format!("Bearer {}", by.token)),
            ("content-type", "application/json"),
            ("idempotency-key", key),
        ],
        serde_json::to_vec(&json!({"body": body})).unwrap(),
    )
    .await
}

async fn read_up_to(app: &TestApp, by: &Session, thread: &str, up_to: &str) -> Value {
    app.post(
        &format!("/api/v1/threads/{thread}/read"),
        &by.token,
        json!({"up_to": up_to}),
    )
    .await
    .expect(200)
    .body
}

/// The caller's thread list entry for `thread`, if listed.
async fn listed(app: &TestApp, by: &Session, thread: &str) -> Option<Value> {
    let list = app.get("/api/v1/threads", &by.token).await.expect(200);
    list.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == thread)
        .cloned()
}

async fn unread(app: &TestApp, by: &Session, thread: &str) -> i64 {
    listed(app, by, thread).await.expect("thread listed")["unread_count"]
        .as_i64()
        .unwrap()
}

async fn inbox(app: &TestApp, by: &Session) -> Value {
    app.get("/api/v1/inbox", &by.token).await.expect(200).body
}

async fn count_messages(app: &TestApp) -> i64 {
    app.state
        .db
        .read(|conn| Ok(messages::table.count().get_result::<i64>(conn)?))
        .await
        .unwrap()
}

/// Outbox rows to `to` with this subject.
async fn outbox_count(app: &TestApp, to: &str, subject: &str) -> i64 {
    let (to, subject) = (to.to_owned(), subject.to_owned());
    app.state
        .db
        .read(move |conn| {
            Ok(email_outbox::table
                .filter(email_outbox::to_address.eq(to))
                .filter(email_outbox::subject.eq(subject))
                .count()
                .get_result::<i64>(conn)?)
        })
        .await
        .unwrap()
}

async fn set_preference(app: &TestApp, who: &Session, preference: &str) {
    app.patch(
        "/api/v1/me",
        &who.token,
        json!({"notification_preference": preference}),
    )
    .await
    .expect(200);
}

async fn tick(app: &TestApp) {
    Scheduler::new(&app.state).tick().await.expect("tick");
}

#[actix_web::test]
async fn two_clinicians_exchange_messages_with_unread_counts() {
    let app = spawn_app().await;
    let net = Network::new(&app).await;
    let (patient, thread) = shared_patient(&app, &net).await;

    // A new thread: listed for both, nothing unread.
    let entry = listed(&app, &net.hospital, &thread).await.expect("listed");
    assert_eq!(entry["subject"], json!({"type": "patient", "id": patient}));
    assert_eq!(entry["patient"]["family_name"], "Le Gall");
    assert_eq!(entry["access_basis"], "team");
    assert_eq!(entry["unread_count"], 0);
    assert!(entry["last_message_at"].is_null());

    let m1 = post(
        &app,
        &net.gp,
        &thread,
        "  Douleur post-opératoire, je passe ce soir.  ",
    )
    .await;
    let m2 = post(&app, &net.gp, &thread, "Pouvez-vous confirmer la sortie ?").await;
    assert!(m2 > m1, "ids sort in posting order");
    assert_eq!(unread(&app, &net.hospital, &thread).await, 2);
    assert_eq!(
        unread(&app, &net.gp, &thread).await,
        0,
        "own messages are never unread"
    );
    assert_eq!(inbox(&app, &net.hospital).await["unread_threads"], 1);
    assert_eq!(inbox(&app, &net.gp).await["unread_threads"], 0);
    let entry = listed(&app, &net.hospital, &thread).await.unwrap();
    assert!(entry["last_message_at"].is_string());

    // Stable order and cursor pagination; the body is stored trimmed.
    let url = format!("/api/v1/threads/{thread}/messages");
    let page = app
        .get(&format!("{url}?limit=1"), &net.hospital.token)
        .await
        .expect(200);
    assert_eq!(page.body["items"][0]["id"], m1);
    assert_eq!(
        page.body["items"][0]["body"],
        "Douleur post-opératoire, je passe ce soir."
    );
    assert_eq!(page.body["items"][0]["author"]["id"], net.gp.id);
    assert_eq!(page.body["next_cursor"], m1);
    let page = app
        .get(&format!("{url}?limit=1&after={m1}"), &net.hospital.token)
        .await
        .expect(200);
    assert_eq!(page.body["items"][0]["id"], m2);
    assert!(page.body["next_cursor"].is_null());
    app.get(&format!("{url}?after=not-an-id"), &net.hospital.token)
        .await
        .problem(400);
    app.get(&format!("{url}?limit=0"), &net.hospital.token)
        .await
        .problem(400);

    // The other participant is notified once per unread stretch; the email says only that.
    let notes = app
        .get("/api/v1/notifications?unread=true", &net.hospital.token)
        .await
        .expect(200);
    let about_thread: Vec<&Value> = notes.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["kind"] == "new_message")
        .collect();
    assert_eq!(about_thread.len(), 1, "{}", notes.body);
    assert_eq!(about_thread[0]["resource_id"], thread);
    let mail = app
        .smtp
        .mail_to_containing("hospital@relais.test", "new message")
        .await;
    assert!(mail.body().contains(&format!("/threads/{thread}")));
    assert!(!mail.data.contains("Douleur") && !mail.data.contains("sortie"));

    // The reply: unread for the GP, not for its author.
    let m3 = post(
        &app,
        &net.hospital,
        &thread,
        "Sortie confirmée demain matin.",
    )
    .await;
    assert_eq!(unread(&app, &net.gp, &thread).await, 1);
    assert_eq!(unread(&app, &net.hospital, &thread).await, 2);

    // Reading moves forward only; counts never go negative.
    let state = read_up_to(&app, &net.hospital, &thread, &m1).await;
    assert_eq!(state["unread_count"], 1);
    assert_eq!(unread(&app, &net.hospital, &thread).await, 1);
    let state = read_up_to(&app, &net.hospital, &thread, &m3).await;
    assert_eq!(state["unread_count"], 0);
    assert_eq!(state["last_read_id"], m3);
    let state = read_up_to(&app, &net.hospital, &thread, &m1).await;
    assert_eq!(state["last_read_id"], m3, "a move backwards is ignored");
    assert_eq!(state["unread_count"], 0);
    assert_eq!(unread(&app, &net.hospital, &thread).await, 0);
    assert_eq!(inbox(&app, &net.hospital).await["unread_threads"], 0);
    // Caught up: the thread's notification is read too.
    let notes = app
        .get("/api/v1/notifications?unread=true", &net.hospital.token)
        .await
        .expect(200);
    assert!(
        notes.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["kind"] != "new_message")
    );
    let only_unread = app
        .get("/api/v1/threads?unread=true", &net.hospital.token)
        .await
        .expect(200);
    assert!(only_unread.body["items"].as_array().unwrap().is_empty());
    let only_unread = app
        .get("/api/v1/threads?unread=true", &net.gp.token)
        .await
        .expect(200);
    assert_eq!(only_unread.body["items"][0]["id"], thread);
    assert_eq!(only_unread.body["items"][0]["unread_count"], 1);
    read_up_to(&app, &net.gp, &thread, &m2).await;
    assert_eq!(unread(&app, &net.gp, &thread).await, 1, "m3 is after m2");
    read_up_to(&app, &net.gp, &thread, &m3).await;
    assert_eq!(unread(&app, &net.gp, &thread).await, 0);

    // Bad input is named and changes nothing.
    let before = count_messages(&app).await;
    for (body, field) in [
        (json!({"body": "   "}), "body"),
        (json!({"body": "é".repeat(10_001)}), "body"),
        (json!({}), "body"),
        (json!({"body": "ok", "urgent": true}), "urgent"),
    ] {
        app.post(&url, &net.gp.token, body)
            .await
            .invalid_field(field);
    }
    app.raw(
        Method::POST,
        &url,
        &[
            ("authorization", &format!("Bearer {}", net.gp.token)),
            ("content-type", "application/json"),
        ],
        b"{\"body\":".to_vec(),
    )
    .await
    .problem(400);
    assert_eq!(count_messages(&app).await, before);
    let longest = post(&app, &net.gp, &thread, &"é".repeat(10_000)).await;
    assert!(!longest.is_empty());

    let read_url = format!("/api/v1/threads/{thread}/read");
    app.post(&read_url, &net.gp.token, json!({"up_to": "nope"}))
        .await
        .invalid_field("up_to");
    let other_patient = create_patient(&app, &net.gp, None).await;
    let other_thread = thread_of(&app, &net.gp, &other_patient).await;
    let elsewhere = post(&app, &net.gp, &other_thread, "Autre patient.").await;
    app.post(&read_url, &net.gp.token, json!({"up_to": elsewhere}))
        .await
        .invalid_field("up_to");
    // Filtering the list by patient.
    let one = app
        .get(
            &format!("/api/v1/threads?patient_id={other_patient}"),
            &net.gp.token,
        )
        .await
        .expect(200);
    assert_eq!(one.body["items"].as_array().unwrap().len(), 1);
    assert_eq!(one.body["items"][0]["id"], other_thread);
    // Latest activity first.
    let all = app.get("/api/v1/threads", &net.gp.token).await.expect(200);
    assert_eq!(all.body["items"][0]["id"], other_thread);
    assert_eq!(all.body["items"][1]["id"], thread);
    let first = app
        .get("/api/v1/threads?limit=1", &net.gp.token)
        .await
        .expect(200);
    let cursor = first.body["next_cursor"].as_str().unwrap();
    let second = app
        .get(
            &format!("/api/v1/threads?limit=1&cursor={cursor}"),
            &net.gp.token,
        )
        .await
        .expect(200);
    assert_eq!(second.body["items"][0]["id"], thread);
    assert!(second.body["next_cursor"].is_null());
}

#[actix_web::test]
async fn withdrawn_access_hides_the_thread_at_once() {
    let app = spawn_app().await;
    let net = Network::new(&app).await;
    let (patient, thread) = shared_patient(&app, &net).await;
    add_member(&app, &net.gp, &patient, &net.pharmacist).await;
    let m1 = post(&app, &net.gp, &thread, "Délivrance fractionnée à prévoir.").await;
    let url = format!("/api/v1/threads/{thread}/messages");
    assert_eq!(unread(&app, &net.pharmacist, &thread).await, 1);
    app.get(&url, &net.pharmacist.token).await.expect(200);

    // Consent withdrawn: the pharmacist (other organisation) loses the thread at once.
    set_consent(&app, &net.gp, &patient, "withdrawn").await;
    assert!(listed(&app, &net.pharmacist, &thread).await.is_none());
    assert_eq!(inbox(&app, &net.pharmacist).await["unread_threads"], 0);
    app.get(&url, &net.pharmacist.token).await.problem(404);
    app.post(&url, &net.pharmacist.token, json!({"body": "Reçu."}))
        .await
        .problem(404);
    app.post(
        &format!("/api/v1/threads/{thread}/read"),
        &net.pharmacist.token,
        json!({"up_to": m1}),
    )
    .await
    .problem(404);
    // Nor is the pharmacist told of new messages meanwhile.
    let notes_before = app
        .get("/api/v1/notifications", &net.pharmacist.token)
        .await
        .expect(200)
        .body["items"]
        .as_array()
        .unwrap()
        .len();
    // Mark the pharmacist's notification read so a new one would show.
    let notes = app
        .get("/api/v1/notifications?unread=true", &net.pharmacist.token)
        .await
        .expect(200);
    for note in notes.body["items"].as_array().unwrap() {
        app.post(
            &format!(
                "/api/v1/notifications/{}/read",
                note["id"].as_str().unwrap()
            ),
            &net.pharmacist.token,
            json!({}),
        )
        .await
        .expect(204);
    }
    post(&app, &net.gp, &thread, "Le patient passera à 18 h.").await;
    let notes_after = app
        .get("/api/v1/notifications", &net.pharmacist.token)
        .await
        .expect(200)
        .body["items"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(notes_after, notes_before);

    // Granted again: back at once, with what was missed.
    set_consent(&app, &net.gp, &patient, "granted").await;
    assert_eq!(unread(&app, &net.pharmacist, &thread).await, 2);

    // Removed from the team: gone at once.
    app.request(
        Method::DELETE,
        &format!("/api/v1/patients/{patient}/care-team/{}", net.hospital.id),
        Some(&net.gp.token),
        None,
    )
    .await
    .expect(204);
    assert!(listed(&app, &net.hospital, &thread).await.is_none());
    app.get(&url, &net.hospital.token).await.problem(404);

    // Emergency access: a participant until it expires.
    app.post(
        &format!("/api/v1/patients/{patient}/emergency-access"),
        &net.nurse.token,
        json!({"reason": "Appel du SAMU, patient somnolent"}),
    )
    .await
    .expect(201);
    let entry = listed(&app, &net.nurse, &thread).await.expect("listed");
    assert_eq!(entry["access_basis"], "emergency");
    post(&app, &net.nurse, &thread, "Vu en urgence, stable.").await;
    app.clock.advance(chrono::Duration::hours(13));
    assert!(listed(&app, &net.nurse, &thread).await.is_none());
    app.get(&url, &net.nurse.token).await.problem(404);

    // Strangers, unknown and malformed threads: 404 or 400, never a hint.
    app.get(&url, &net.specialist.token).await.problem(404);
    app.get(&url, &net.admin.token).await.problem(404);
    app.get(
        &format!("/api/v1/threads/{}/messages", uuid::Uuid::now_v7()),
        &net.gp.token,
    )
    .await
    .problem(404);
    app.get("/api/v1/threads/123/messages", &net.gp.token)
        .await
        .problem(400);
}

#[actix_web::test]
async fn idempotent_replay() {
    let app = spawn_app().await;
    let net = Network::new(&app).await;
    let (_, thread) = shared_patient(&app, &net).await;
    let before = count_messages(&app).await;

    let first = post_with_key(&app, &net.gp, &thread, "k-1", "Ordonnance faxée.")
        .await
        .expect(201);
    let again = post_with_key(&app, &net.gp, &thread, "k-1", "Ordonnance faxée.")
        .await
        .expect(201);
    assert_eq!(again.body, first.body, "the same answer");
    assert_eq!(again.headers.get("idempotent-replayed").unwrap(), "true");
    assert_eq!(count_messages(&app).await, before + 1, "one message");

    // Same key, another request: 422 naming the header, nothing posted.
    for (thread_id, body) in [
        (&thread, "Ordonnance envoyée."),
        (&thread, "Ordonnance faxée!"),
    ] {
        let problem = post_with_key(&app, &net.gp, thread_id, "k-1", body)
            .await
            .invalid_field("Idempotency-Key");
        assert!(
            problem["detail"]
                .as_str()
                .unwrap()
                .contains("Idempotency-Key")
        );
    }
    let other_patient = create_patient(&app, &net.gp, None).await;
    let other_thread = thread_of(&app, &net.gp, &other_patient).await;
    post_with_key(&app, &net.gp, &other_thread, "k-1", "Ordonnance faxée.")
        .await
        .invalid_field("Idempotency-Key");
    assert_eq!(count_messages(&app).await, before + 1);

    // Keys are per user.
    let theirs = post_with_key(&app, &net.hospital, &thread, "k-1", "Ordonnance faxée.")
        .await
        .expect(201);
    assert_ne!(theirs.body["id"], first.body["id"]);
    assert!(theirs.headers.get("idempotent-replayed").is_none());

    // A malformed key is named.
    let problem = post_with_key(&app, &net.gp, &thread, "two words", "x")
        .await
        .problem(400);
    assert_eq!(problem["errors"][0]["field"], "Idempotency-Key");

    // Concurrent first uses of one key: one message, the same answer to all.
    let posts = (0..6).map(|_| post_with_key(&app, &net.gp, &thread, "k-race", "Ensemble."));
    let answers = futures_util::future::join_all(posts).await;
    let ids: std::collections::BTreeSet<String> = answers
        .into_iter()
        .map(|r| r.expect(201).body["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(count_messages(&app).await, before + 3);

    // After 24 h the key is forgotten (and purged by the scheduler).
    app.clock
        .advance(chrono::Duration::hours(24) + chrono::Duration::minutes(1));
    tick(&app).await;
    let keys = app
        .state
        .db
        .read(|conn| Ok(idempotency_keys::table.count().get_result::<i64>(conn)?))
        .await
        .unwrap();
    assert_eq!(keys, 0);
    let fresh = post_with_key(&app, &net.gp, &thread, "k-1", "Ordonnance envoyée.")
        .await
        .expect(201);
    assert_ne!(fresh.body["id"], first.body["id"]);
    assert_eq!(count_messages(&app).await, before + 4);
}

#[actix_web::test]
async fn messages_are_immutable_in_the_database() {
    let app = spawn_app().await;
    let net = Network::new(&app).await;
    let (_, thread) = shared_patient(&app, &net).await;
    let id = post(&app, &net.gp, &thread, "Texte d'origine.").await;
    let (a, b) = (id.clone(), id.clone());
    let update = app
        .state
        .db
        .write(move |conn| {
            Ok(diesel::update(messages::table.find(a))
                .set(messages::body.eq("Texte modifié."))
                .execute(&mut **conn)?)
        })
        .await;
    assert!(update.is_err(), "UPDATE must be refused");
    let delete = app
        .state
        .db
        .write(move |conn| Ok(diesel::delete(messages::table.find(b)).execute(&mut **conn)?))
        .await;
    assert!(delete.is_err(), "DELETE must be refused");
    let page = app
        .get(&format!("/api/v1/threads/{thread}/messages"), &net.gp.token)
        .await
        .expect(200);
    assert_eq!(page.body["items"][0]["body"], "Texte d'origine.");
}

#[actix_web::test]
async fn daily_digest_is_sent_once_a_day_with_counts_only() {
    let app = spawn_app().await;
    let net = Network::new(&app).await;
    let to = "hospital@relais.test";
    set_preference(&app, &net.hospital, "daily_digest").await;
    // Today's digest is claimed with nothing waiting: no email.
    tick(&app).await;
    assert_eq!(outbox_count(&app, to, DIGEST_SUBJECT).await, 0);

    let (_, thread) = shared_patient(&app, &net).await;
    post(&app, &net.gp, &thread, "Kétamine à discuter, douleur 8/10.").await;
    let last = post(&app, &net.gp, &thread, "Rappelez-moi.").await;
    for _ in 0..3 {
        tick(&app).await;
    }
    assert_eq!(
        outbox_count(&app, to, DIGEST_SUBJECT).await,
        0,
        "today's digest was already claimed"
    );
    // No immediate email either (only the invitation reached this user).
    let to_hospital = app
        .state
        .db
        .read(move |conn| {
            Ok(email_outbox::table
                .filter(email_outbox::to_address.eq(to))
                .count()
                .get_result::<i64>(conn)?)
        })
        .await
        .unwrap();
    assert_eq!(to_hospital, 1);

    // The next day the background scheduler sends it, once.
    app.clock.advance(chrono::Duration::hours(24));
    eventually("the digest is queued", || async {
        outbox_count(&app, to, DIGEST_SUBJECT).await == 1
    })
    .await;
    for _ in 0..3 {
        tick(&app).await;
    }
    assert_eq!(outbox_count(&app, to, DIGEST_SUBJECT).await, 1);
    let mail = app.smtp.mail_to_containing(to, "Waiting for you").await;
    assert_eq!(mail.header("subject").unwrap(), DIGEST_SUBJECT);
    let body = mail.body();
    assert!(
        body.contains("- 1 conversation with unread messages"),
        "{body}"
    );
    // Added to the care team, and one (deduplicated) new-message notice.
    assert!(body.contains("- 2 unread notifications"), "{body}");
    assert!(body.contains("/inbox"));
    for secret in ["Kétamine", "douleur", "Rappelez", "Le Gall", "Maïwenn"] {
        assert!(!mail.data.contains(secret), "{secret} in the digest");
    }

    // Everything read: the next day's digest is skipped.
    read_up_to(&app, &net.hospital, &thread, &last).await;
    let notes = app
        .get("/api/v1/notifications?unread=true", &net.hospital.token)
        .await
        .expect(200);
    for note in notes.body["items"].as_array().unwrap() {
        app.post(
            &format!(
                "/api/v1/notifications/{}/read",
                note["id"].as_str().unwrap()
            ),
            &net.hospital.token,
            json!({}),
        )
        .await
        .expect(204);
    }
    assert_eq!(
        inbox(&app, &net.hospital).await,
        json!({"unread_threads": 0, "unread_notifications": 0, "handovers_to_acknowledge": 0, "consultations_to_answer": 0, "consultations_to_close": 0, "overdue": 0, "interventions_to_answer": 0})
    );
    app.clock.advance(chrono::Duration::hours(24));
    tick(&app).await;
    assert_eq!(outbox_count(&app, to, DIGEST_SUBJECT).await, 1);

    // Something new: the day after, a second digest.
    post(&app, &net.gp, &thread, "Nouvelle douleur ce matin.").await;
    tick(&app).await;
    assert_eq!(outbox_count(&app, to, DIGEST_SUBJECT).await, 1);
    app.clock.advance(chrono::Duration::hours(24));
    tick(&app).await;
    assert_eq!(outbox_count(&app, to, DIGEST_SUBJECT).await, 2);

    // `off`: no email of any kind.
    set_preference(&app, &net.hospital, "off").await;
    post(&app, &net.gp, &thread, "Encore un message.").await;
    app.clock.advance(chrono::Duration::hours(24));
    tick(&app).await;
    assert_eq!(outbox_count(&app, to, DIGEST_SUBJECT).await, 2);
    let runs = app
        .state
        .db
        .read(|conn| Ok(digest_runs::table.count().get_result::<i64>(conn)?))
        .await
        .unwrap();
    assert_eq!(runs, 4, "one run per day the user was on daily_digest");
}

#[actix_web::test]
async fn digest_is_sent_once_across_instances() {
    let db = Arc::new(TestDb::new());
    let relay = SmtpListener::start().await;
    let first = spawn_on(db.clone(), relay.clone(), |_| {}).await;
    let second = spawn_on(db.clone(), relay.clone(), |_| {}).await;
    let net = Network::new(&first).await;
    set_preference(&first, &net.hospital, "daily_digest").await;
    tick(&first).await;
    let (_, thread) = shared_patient(&first, &net).await;
    post(&first, &net.gp, &thread, "Message du jour.").await;
    for app in [&first, &second] {
        app.clock.advance(chrono::Duration::hours(24));
    }
    let ticks = (0..8).map(|i| {
        let scheduler = Scheduler::new(if i % 2 == 0 {
            &first.state
        } else {
            &second.state
        });
        async move { scheduler.tick().await.expect("tick") }
    });
    let reports = futures_util::future::join_all(ticks).await;
    let queued: usize = reports.iter().map(|r| r.digests_queued).sum();
    assert!(queued <= 1, "{reports:?}");
    eventually("one digest", || async {
        outbox_count(&first, "hospital@relais.test", DIGEST_SUBJECT).await == 1
    })
    .await;
    relay.wait_for(1).await;
    eventually("it is delivered", || async {
        relay
            .mails()
            .iter()
            .filter(|m| m.header("subject").as_deref() == Some(DIGEST_SUBJECT))
            .count()
            == 1
    })
    .await;
    for _ in 0..3 {
        tick(&first).await;
        tick(&second).await;
    }
    assert_eq!(
        outbox_count(&first, "hospital@relais.test", DIGEST_SUBJECT).await,
        1
    );
}

#[actix_web::test]
async fn no_email_carries_health_data() {
    let app = spawn_app().await;
    let net = Network::new(&app).await;
    let family = "Kerbrat-Zyxqwerty";
    let given = "Maïwenn-Oriane";
    let ins = random_ins();
    let free_text = [
        "Zyxq-méthadone 60 mg et tramadol",
        "Zyxq-raison: avis douleur genou",
        "Zyxq-urgence: patient inconscient",
        "Zyxq-refus: pas de lien de soin",
    ];
    let patient = app
        .post(
            "/api/v1/patients",
            &net.gp.token,
            json!({"ins": ins, "family_name": family, "given_names": given,
                   "birth_date": "1979-03-14", "sex": "female", "phone": "06 98 76 54 32"}),
        )
        .await
        .expect(201)
        .body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    set_consent(&app, &net.gp, &patient, "granted").await;
    // Added to a care team.
    add_member(&app, &net.gp, &patient, &net.hospital).await;
    // Access requests, approved and denied.
    for (who, approve) in [(&net.specialist, true), (&net.pharmacist, false)] {
        let request = app
            .post(
                &format!("/api/v1/patients/{patient}/access-requests"),
                &who.token,
                json!({"reason": free_text[1]}),
            )
            .await
            .expect(201);
        let verb = if approve { "approve" } else { "deny" };
        app.post(
            &format!(
                "/api/v1/access-requests/{}/{verb}",
                request.body["id"].as_str().unwrap()
            ),
            &net.gp.token,
            json!({}),
        )
        .await
        .expect(200);
    }
    // Emergency access.
    app.post(
        &format!("/api/v1/patients/{patient}/emergency-access"),
        &net.nurse.token,
        json!({"reason": free_text[2]}),
    )
    .await
    .expect(201);
    // New messages.
    let thread = thread_of(&app, &net.gp, &patient).await;
    post(&app, &net.gp, &thread, free_text[0]).await;
    post(&app, &net.hospital, &thread, free_text[3]).await;
    // A daily digest: the second GP joins the team, then switches to the digest.
    add_member(&app, &net.gp, &patient, &net.gp2).await;
    set_preference(&app, &net.gp2, "daily_digest").await;
    post(&app, &net.hospital, &thread, free_text[0]).await;
    app.clock.advance(chrono::Duration::hours(24));
    tick(&app).await;

    // Every kind of email there is must have arrived.
    let kinds = [
        ("invitation", "You have been invited to Relais"),
        ("access request", "asks to join the care team"),
        (
            "request decided",
            "Your request to join a care team has been answered",
        ),
        ("emergency access", "An emergency access was opened"),
        (
            "added to team",
            "You have been added to a patient's care team",
        ),
        ("new message", "wrote a new message"),
        ("daily digest", "Waiting for you in Relais today"),
    ];
    let mut missing: Vec<&str> = Vec::new();
    for _ in 0..600 {
        let mails = app.smtp.mails();
        missing = kinds
            .iter()
            .filter(|(_, text)| !mails.iter().any(|m| m.body().contains(text)))
            .map(|(kind, _)| *kind)
            .collect();
        if missing.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert!(missing.is_empty(), "no email of kind(s) {missing:?}");
    let digest = app
        .smtp
        .mail_to_containing("gp2@relais.test", "Waiting for you")
        .await;
    assert_eq!(digest.header("subject").unwrap(), DIGEST_SUBJECT);

    let nir = &ins[..13];
    let mut forbidden: Vec<String> = vec![
        family.into(),
        given.into(),
        "Kerbrat".into(),
        "Zyxqwerty".into(),
        "Oriane".into(),
        ins.clone(),
        nir.into(),
        "Zyxq".into(),
        "méthadone".into(),
        "tramadol".into(),
        "inconscient".into(),
        "06 98 76 54 32".into(),
    ];
    forbidden.extend(free_text.iter().map(|t| (*t).to_owned()));
    let mails = app.smtp.mails();
    assert!(mails.len() >= kinds.len());
    for mail in &mails {
        let subject = mail.header("subject").unwrap_or_default().to_lowercase();
        let body = mail.body().to_lowercase();
        let raw = mail.data.to_lowercase();
        for bad in &forbidden {
            let bad = bad.to_lowercase();
            assert!(
                !subject.contains(&bad) && !body.contains(&bad) && !raw.contains(&bad),
                "{bad:?} in an email to {:?}: {}",
                mail.to,
                mail.data
            );
        }
    }
}

/// Applies the migrations that come before `stop` (by name).
macro_rules! migrate_before {
    ($conn:expr, $source:expr, $stop:expr) => {{
        use diesel_migrations::MigrationHarness;
        loop {
            let pending = $conn
                .pending_migrations($source)
                .expect("pending migrations");
            match pending.first() {
                Some(next) if !next.name().to_string().contains($stop) => {
                    $conn.run_next_migration($source).expect("migrate");
                }
                _ => break,
            }
        }
    }};
}

#[actix_web::test]
async fn the_migration_gives_every_existing_patient_its_thread() {
    use relais::db::schema::{patients, threads, users};
    use relais::db::{ConnectionManager, DbConnection, POSTGRES_MIGRATIONS, SQLITE_MIGRATIONS};

    let db = TestDb::new();
    let mut conn = ConnectionManager::new(&db.url)
        .unwrap()
        .establish()
        .unwrap();
    let stop = "_messaging";
    match &mut conn {
        DbConnection::Postgres(pg) => migrate_before!(pg, POSTGRES_MIGRATIONS, stop),
        DbConnection::Sqlite(lite) => migrate_before!(lite, SQLITE_MIGRATIONS, stop),
    }
    // Patients registered before messaging existed.
    let now = chrono::Utc::now().naive_utc();
    let user = uuid::Uuid::now_v7().to_string();
    diesel::insert_into(users::table)
        .values((
            users::id.eq(&user),
            users::email.eq("old@relais.test"),
            users::full_name.eq("Dr Old"),
            users::role.eq("gp"),
            users::active.eq(true),
            users::token_version.eq(0),
            users::notification_preference.eq("immediate"),
            users::created_at.eq(now),
            users::updated_at.eq(now),
        ))
        .execute(&mut conn)
        .unwrap();
    let mut ids = Vec::new();
    for _ in 0..3 {
        let id = uuid::Uuid::now_v7().to_string();
        diesel::insert_into(patients::table)
            .values((
                patients::id.eq(&id),
                patients::family_name.eq("Ancien"),
                patients::given_names.eq("Patient"),
                patients::birth_date.eq(chrono::NaiveDate::from_ymd_opt(1960, 1, 1).unwrap()),
                patients::sex.eq("male"),
                patients::created_by.eq(&user),
                patients::created_at.eq(now),
                patients::updated_at.eq(now),
            ))
            .execute(&mut conn)
            .unwrap();
        ids.push(id);
    }
    relais::db::run_migrations(&mut conn).unwrap();

    let rows: Vec<(String, String, String, Option<String>, String)> = threads::table
        .select((
            threads::id,
            threads::subject_type,
            threads::subject_id,
            threads::patient_id,
            threads::activity_id,
        ))
        .order(threads::subject_id)
        .load(&mut conn)
        .unwrap();
    assert_eq!(rows.len(), ids.len(), "exactly one thread per patient");
    for ((id, subject_type, subject_id, patient_id, activity), patient) in rows.iter().zip(&ids) {
        assert!(uuid::Uuid::parse_str(id).is_ok(), "{id} is not a UUID");
        assert_eq!(subject_type, "patient");
        assert_eq!(subject_id, patient);
        assert_eq!(patient_id.as_deref(), Some(patient.as_str()));
        assert_eq!(activity, patient, "sorted by the patient's creation");
    }
    drop(conn);
}

/// The audit rows of thread reads by `actor`, oldest first.
async fn thread_read_audit(app: &TestApp, actor: &str, thread: &str) -> Vec<String> {
    let action = "GET /threads/{id}/messages";
    crate::fixtures::audit_outcomes(app, actor, action, AuditOn::Resource(thread)).await
}

#[actix_web::test]
async fn a_thread_page_held_in_memory_is_the_databases_answer_and_never_stale() {
    let app = spawn_app().await;
    let net = Network::new(&app).await;
    let (patient, thread) = shared_patient(&app, &net).await;
    add_member(&app, &net.gp, &patient, &net.pharmacist).await;
    for (who, text) in [
        (&net.gp, "Douleur post-opératoire, méthadone 60 mg."),
        (&net.hospital, "Sortie prévue jeudi."),
        (&net.gp, "Pas de codéine, merci."),
    ] {
        post(&app, who, &thread, text).await;
    }
    let pages = app.state.thread_pages.clone();
    let full = format!("/api/v1/threads/{thread}/messages?limit=2");
    let end = format!("/api/v1/threads/{thread}/messages");
    let read = |url: &str| {
        let (app, url, token) = (&app, url.to_owned(), net.pharmacist.token.clone());
        async move {
            let resp = app.get(&url, &token).await.expect(200);
            assert_eq!(resp.content_type(), "application/json");
            resp.body
        }
    };

    // A full page and the thread's last page, each read twice: the second
    // from memory, the same JSON.
    let (hits, misses) = pages.counts();
    let first_full = read(&full).await;
    let first_end = read(&end).await;
    assert_eq!(pages.counts(), (hits, misses + 2));
    assert_eq!(read(&full).await, first_full);
    assert_eq!(read(&end).await, first_end);
    assert_eq!(pages.counts(), (hits + 2, misses + 2), "both served held");
    assert_eq!(first_full["items"].as_array().unwrap().len(), 2);
    assert!(first_full["next_cursor"].is_string());
    assert_eq!(first_end["items"].as_array().unwrap().len(), 3);

    // Another instance on the same database, its memory empty: the same
    // pages, read from the rows.
    let other = spawn_on(app.db(), SmtpListener::start().await, |_| {}).await;
    other.clock.set(relais::clock::Clock::now(&*app.clock));
    let cold = |url: &str| {
        let (other, url, token) = (&other, url.to_owned(), net.pharmacist.token.clone());
        async move { other.get(&url, &token).await.expect(200).body }
    };
    assert_eq!(cold(&full).await, first_full);
    assert_eq!(cold(&end).await, first_end);
    assert_eq!(other.state.thread_pages.counts(), (0, 2));

    // A message posted through the other instance: the first instance's
    // last page shows it at once; its full page is unchanged.
    let newest = post(&other, &net.hospital, &thread, "Ordonnance envoyée.").await;
    let end_after_post = read(&end).await;
    let items = end_after_post["items"].as_array().unwrap();
    assert_eq!(items.len(), 4, "{end_after_post}");
    assert_eq!(items[3]["id"], newest.as_str());
    assert_eq!(read(&full).await, first_full);

    // The GP renamed (through the other instance): every held page names
    // the GP's new name.
    other
        .patch(
            "/api/v1/me",
            &net.gp.token,
            json!({"full_name": "Dr Renommée"}),
        )
        .await
        .expect(200);
    for url in [&full, &end] {
        let page = read(url).await;
        let fresh = cold(url).await;
        assert_eq!(page, fresh, "held and read pages agree after a rename");
        assert_eq!(
            page["items"][0]["author"]["full_name"], "Dr Renommée",
            "{page}"
        );
    }
    other.stop().await;

    // Consent withdrawn after pages were held: none is served to the
    // pharmacist, and every read, held or not, was audited before it.
    let before = thread_read_audit(&app, &net.pharmacist.id, &thread).await;
    assert_eq!(
        before,
        vec!["allowed"; 12],
        "8 reads here, 4 by the other instance"
    );
    set_consent(&app, &net.gp, &patient, "withdrawn").await;
    app.get(&full, &net.pharmacist.token).await.problem(404);
    app.get(&end, &net.pharmacist.token).await.problem(404);
    let after = thread_read_audit(&app, &net.pharmacist.id, &thread).await;
    assert_eq!(after.len(), before.len() + 2);
    assert!(
        after[before.len()..].iter().all(|o| o == "denied"),
        "{after:?}"
    );
}
