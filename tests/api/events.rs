//! The live event stream over real HTTP: each change's event reaches its
//! parties and only committed changes emit; resuming with `Last-Event-ID`;
//! two instances on one database; the basis at delivery time; token expiry;
//! browser tickets; bounds.

use std::sync::Arc;
use std::time::Duration;

use actix_web::http::Method;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use relais::clock::Clock;
use relais::error::ApiError;
use relais::notify::events::{Event, EventKind, emit};
use serde_json::{Value, json};

use crate::fixtures::{Network, add_member, patient_with_plan, proposal, set_consent};
use crate::helpers::{
    EventStream, Frame, JWT_SECRET, Session, SmtpListener, TestApp, TestDb, no_background_ticks,
    spawn_app, spawn_app_with, spawn_on,
};

/// The keys an event's data may carry: a type, a time, a version, ids.
const KEYS: &[&str] = &[
    "id",
    "type",
    "at",
    "v",
    "reason",
    "patient_id",
    "thread_id",
    "message_id",
    "last_read_id",
    "notification_id",
    "handover_id",
    "consultation_id",
    "version",
    "alert_id",
    "observation_id",
    "access_request_id",
    "emergency_access_id",
];

/// Asserts that a frame carries ids only: known keys, values that are
/// UUIDs or numbers (besides the type, the time and a reset's reason).
#[track_caller]
fn assert_ids_only(frame: &Frame) {
    let data = frame.json();
    let object = data.as_object().expect("a JSON object");
    assert_eq!(object["type"].as_str(), frame.event.as_deref());
    assert_eq!(object["v"], 1);
    for (key, value) in object {
        assert!(
            KEYS.contains(&key.as_str()),
            "unexpected key {key} in {data}"
        );
        match (key.as_str(), value) {
            ("type" | "at" | "reason", Value::String(_)) | ("v" | "id", Value::Number(_)) => {}
            (_, Value::String(s)) => assert!(
                uuid::Uuid::parse_str(s).is_ok() || s.bytes().all(|b| b.is_ascii_digit()),
                "{key} = {s:?} is not an id"
            ),
            _ => panic!("{key} = {value} in {data}"),
        }
    }
    if let Some(id) = frame.id_num() {
        assert_eq!(object["id"], id);
    }
}

/// The next event of `kind` on `stream`, checked for ids only.
async fn next_of(stream: &mut EventStream, kind: &str) -> Value {
    let frame = stream.until(kind).await;
    assert_ids_only(&frame);
    frame.json()
}

/// Nothing but heartbeats for `wait`.
async fn assert_quiet(stream: &mut EventStream, wait: Duration) {
    if let Some(frame) = stream.next_event(wait).await {
        panic!("expected no event, got {frame:?}");
    }
}

async fn patient_thread(app: &TestApp, by: &Session, patient: &str) -> String {
    let list = app.get("/api/v1/threads", &by.token).await.expect(200);
    list.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["subject"]["type"] == "patient" && t["subject"]["id"] == patient)
        .map(|t| t["id"].as_str().unwrap().to_owned())
        .expect("the patient's thread")
}

async fn post_message(app: &TestApp, by: &Session, thread: &str, body: &str) -> String {
    let resp = app
        .post(
            &format!("/api/v1/threads/{thread}/messages"),
            &by.token,
            json!({"body": body}),
        )
        .await
        .expect(201);
    resp.body["id"].as_str().unwrap().to_owned()
}

fn id_of(resp: &Value) -> String {
    resp["id"].as_str().unwrap().to_owned()
}

#[actix_web::test]
async fn each_change_reaches_its_parties_as_an_event_of_ids() {
    let app = spawn_app().await;
    let net = Network::new(&app).await;
    let patient = patient_with_plan(&app, &net).await;
    let mut gp = app.events(&net.gp.token).await;
    let mut hospital = app.events(&net.hospital.token).await;
    let mut pain = app.events(&net.specialist.token).await;
    let mut pharmacist = app.events(&net.pharmacist.token).await;
    let mut nurse = app.events(&net.nurse.token).await;

    // care_plan.version_created, to everyone on the team.
    let mut plan = crate::fixtures::design_plan(None);
    plan["change_summary"] = json!("second version");
    app.request_with(
        Method::PUT,
        &format!("/api/v1/patients/{patient}/care-plan"),
        Some(&net.gp.token),
        Some(&plan),
        &[("if-match", "\"1\"".into())],
    )
    .await
    .expect(200);
    for stream in [&mut gp, &mut hospital] {
        let event = next_of(stream, "care_plan.version_created").await;
        assert_eq!(event["patient_id"], patient.as_str());
        assert_eq!(event["version"], "2");
    }

    // handover.sent, .acknowledged, .reconciled; the GP's notification.
    let handover = app
        .post(
            &format!("/api/v1/patients/{patient}/handovers"),
            &net.hospital.token,
            json!({"to_user_id": net.gp.id, "summary": "Sortie J+2", "discharge_date": "2026-11-24", "proposed_plan": proposal()}),
        )
        .await
        .expect(201);
    let handover = id_of(&handover.body);
    // The GP's notification is written first, in the same transaction.
    let notification = next_of(&mut gp, "notification.created").await;
    for stream in [&mut gp, &mut hospital] {
        let event = next_of(stream, "handover.sent").await;
        assert_eq!(event["handover_id"], handover.as_str());
        assert_eq!(event["patient_id"], patient.as_str());
    }
    let listed = app
        .get("/api/v1/notifications", &net.gp.token)
        .await
        .expect(200);
    assert!(
        listed.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["id"] == notification["notification_id"]),
        "the event names a notification the REST API shows"
    );
    app.post(
        &format!("/api/v1/handovers/{handover}/acknowledge"),
        &net.gp.token,
        json!({}),
    )
    .await
    .expect(200);
    for stream in [&mut gp, &mut hospital] {
        let event = next_of(stream, "handover.acknowledged").await;
        assert_eq!(event["handover_id"], handover.as_str());
    }
    app.post(
        &format!("/api/v1/handovers/{handover}/reconcile"),
        &net.gp.token,
        json!({"decision": "accept"}),
    )
    .await
    .expect(200);
    for stream in [&mut gp, &mut hospital] {
        // The accepted proposal's version is stored first, then the status.
        let event = next_of(stream, "care_plan.version_created").await;
        assert_eq!(event["version"], "3");
        let event = next_of(stream, "handover.reconciled").await;
        assert_eq!(event["handover_id"], handover.as_str());
    }

    // message.created to the participants, thread.read to the reader.
    let thread = patient_thread(&app, &net.gp, &patient).await;
    let message = post_message(&app, &net.gp, &thread, "Je passe le voir à 17 h.").await;
    next_of(&mut hospital, "notification.created").await;
    for stream in [&mut gp, &mut hospital] {
        let event = next_of(stream, "message.created").await;
        assert_eq!(event["thread_id"], thread.as_str());
        assert_eq!(event["message_id"], message.as_str());
    }
    app.post(
        &format!("/api/v1/threads/{thread}/read"),
        &net.hospital.token,
        json!({"up_to": message}),
    )
    .await
    .expect(200);
    let read = next_of(&mut hospital, "thread.read").await;
    assert_eq!(read["last_read_id"], message.as_str());

    // observation.alert (sedation 3 opens an alert), to the team.
    let observation = app
        .post(
            &format!("/api/v1/patients/{patient}/observations"),
            &net.hospital.token,
            json!({"sedation_score": 3}),
        )
        .await
        .expect(201);
    for stream in [&mut gp, &mut hospital] {
        let event = next_of(stream, "observation.alert").await;
        assert_eq!(event["observation_id"], observation.body["id"]);
        assert!(event["alert_id"].is_string());
    }

    // consultation.*: to the requester and the centre's specialists.
    let consult = |question: &str| json!({"centre_id": net.pain_centre, "priority": "urgent", "question": question});
    let mut moves = Vec::new();
    for (path_move, body, kind, by) in [
        (
            "accept",
            json!({}),
            "consultation.accepted",
            &net.specialist,
        ),
        (
            "answer",
            json!({"answer": "Paracétamol et glace"}),
            "consultation.answered",
            &net.specialist,
        ),
        (
            "close",
            json!({"outcome": "resolved", "referral_avoided": true}),
            "consultation.closed",
            &net.gp,
        ),
    ] {
        moves.push((path_move, body, kind, by.clone()));
    }
    let consultation = app
        .post(
            "/api/v1/consultations",
            &net.gp.token,
            consult("Quel palier ?"),
        )
        .await
        .expect(201);
    let consultation = id_of(&consultation.body);
    for stream in [&mut gp, &mut pain] {
        let event = next_of(stream, "consultation.submitted").await;
        assert_eq!(event["consultation_id"], consultation.as_str());
        assert!(event.get("patient_id").is_none());
    }
    for (path_move, body, kind, by) in moves {
        app.post(
            &format!("/api/v1/consultations/{consultation}/{path_move}"),
            &by.token,
            body,
        )
        .await
        .expect(200);
        for stream in [&mut gp, &mut pain] {
            let event = next_of(stream, kind).await;
            assert_eq!(event["consultation_id"], consultation.as_str());
        }
    }
    let declined = app
        .post("/api/v1/consultations", &net.gp.token, consult("Autre"))
        .await
        .expect(201);
    let declined = id_of(&declined.body);
    app.post(
        &format!("/api/v1/consultations/{declined}/decline"),
        &net.specialist.token,
        json!({"reason": "Hors champ"}),
    )
    .await
    .expect(200);
    let cancelled = app
        .post("/api/v1/consultations", &net.gp.token, consult("Encore"))
        .await
        .expect(201);
    let cancelled = id_of(&cancelled.body);
    app.post(
        &format!("/api/v1/consultations/{cancelled}/cancel"),
        &net.gp.token,
        json!({}),
    )
    .await
    .expect(200);
    for stream in [&mut gp, &mut pain] {
        assert_eq!(
            next_of(stream, "consultation.declined").await["consultation_id"],
            declined.as_str()
        );
        assert_eq!(
            next_of(stream, "consultation.cancelled").await["consultation_id"],
            cancelled.as_str()
        );
    }
    let overdue = app
        .post("/api/v1/consultations", &net.gp.token, consult("En retard"))
        .await
        .expect(201);
    let overdue = id_of(&overdue.body);
    app.clock.advance(chrono::Duration::hours(5));
    relais::scheduler::Scheduler::new(&app.state)
        .tick()
        .await
        .unwrap();
    for stream in [&mut gp, &mut pain] {
        assert_eq!(
            next_of(stream, "consultation.overdue").await["consultation_id"],
            overdue.as_str()
        );
    }

    // access_request.created to the team's prescribers; the decision to
    // the requester (without the patient: their own request) and the team.
    let request = app
        .post(
            &format!("/api/v1/patients/{patient}/access-requests"),
            &net.pharmacist.token,
            json!({"reason": "Délivrance ce soir, besoin du plan"}),
        )
        .await
        .expect(201);
    let request = id_of(&request.body);
    for stream in [&mut gp, &mut hospital] {
        let event = next_of(stream, "access_request.created").await;
        assert_eq!(event["access_request_id"], request.as_str());
        assert_eq!(event["patient_id"], patient.as_str());
    }
    app.post(
        &format!("/api/v1/access-requests/{request}/approve"),
        &net.gp.token,
        json!({}),
    )
    .await
    .expect(200);
    let approved = next_of(&mut pharmacist, "access_request.approved").await;
    assert_eq!(approved["access_request_id"], request.as_str());
    assert!(approved.get("patient_id").is_none());
    next_of(&mut gp, "access_request.approved").await;
    let denied = app
        .post(
            &format!("/api/v1/patients/{patient}/access-requests"),
            &net.nurse.token,
            json!({"reason": "Passage à domicile demain matin"}),
        )
        .await
        .expect(201);
    let denied = id_of(&denied.body);
    app.post(
        &format!("/api/v1/access-requests/{denied}/deny"),
        &net.gp.token,
        json!({}),
    )
    .await
    .expect(200);
    let event = next_of(&mut nurse, "access_request.denied").await;
    assert_eq!(event["access_request_id"], denied.as_str());

    // emergency_access.granted, to the team (the pharmacist is on it now).
    let grant = app
        .post(
            &format!("/api/v1/patients/{patient}/emergency-access"),
            &net.addiction.token,
            json!({"reason": "Appel du centre 15 la nuit"}),
        )
        .await
        .expect(201);
    for stream in [&mut gp, &mut hospital, &mut pharmacist] {
        let event = next_of(stream, "emergency_access.granted").await;
        assert_eq!(event["emergency_access_id"], grant.body["id"]);
    }
}

/// Emits one `thread.read` for `user` about a made-up thread; `commit`
/// false rolls the write back after the event was written.
async fn emit_one(app: &TestApp, user: &str, commit: bool) -> Result<String, ApiError> {
    let (user, thread) = (user.to_owned(), uuid::Uuid::now_v7().to_string());
    let now = app.clock.now_naive();
    app.state
        .db
        .write(move |conn| {
            let event = Event {
                kind: EventKind::ThreadRead,
                patient_id: None,
                refs: &[("thread_id", thread.as_str())],
            };
            emit(conn, &[&user], &event, now)?;
            if commit {
                Ok(thread)
            } else {
                Err(ApiError::Gone("rolled back".into()))
            }
        })
        .await
}

#[actix_web::test]
async fn only_committed_writes_emit_events() {
    let app = spawn_app().await;
    let net = Network::new(&app).await;
    let mut gp = app.events(&net.gp.token).await;
    assert!(emit_one(&app, &net.gp.id, false).await.is_err());
    let committed = emit_one(&app, &net.gp.id, true).await.unwrap();
    let first = next_of(&mut gp, "thread.read").await;
    assert_eq!(
        first["thread_id"],
        committed.as_str(),
        "the rolled-back one came first"
    );
    // Concurrent writes share batches: each failing one is rolled back alone.
    let writes = (0..20).map(|i| {
        let (app, user) = (&app, net.gp.id.clone());
        async move { emit_one(app, &user, i % 2 == 0).await }
    });
    let mut expected: Vec<String> = futures_util::future::join_all(writes)
        .await
        .into_iter()
        .filter_map(Result::ok)
        .collect();
    assert_eq!(expected.len(), 10);
    let mut got = Vec::new();
    let mut last = first["id"].as_i64().unwrap();
    for _ in 0..10 {
        let frame = gp.until("thread.read").await;
        let id = frame.id_num().unwrap();
        assert!(id > last, "ids in order");
        last = id;
        got.push(frame.json()["thread_id"].as_str().unwrap().to_owned());
    }
    expected.sort();
    got.sort();
    assert_eq!(got, expected);
    assert_quiet(&mut gp, Duration::from_millis(1500)).await;
}

#[actix_web::test]
async fn last_event_id_replays_what_was_missed_once_and_in_order() {
    let app = spawn_app().await;
    let net = Network::new(&app).await;
    let mut gp = app.events(&net.gp.token).await;
    let a = emit_one(&app, &net.gp.id, true).await.unwrap();
    let seen = gp.until("thread.read").await;
    assert_eq!(seen.json()["thread_id"], a.as_str());
    drop(gp);
    let mut missed = Vec::new();
    for _ in 0..3 {
        missed.push(emit_one(&app, &net.gp.id, true).await.unwrap());
    }
    let last = seen.id.clone().unwrap();
    let mut resumed = app
        .open_events(
            "/api/v1/events",
            Some(&net.gp.token),
            &[("last-event-id", last.clone())],
        )
        .await;
    assert_eq!(resumed.status, 200);
    let mut replayed = Vec::new();
    for _ in 0..3 {
        let frame = resumed.expect_event().await;
        assert_ids_only(&frame);
        replayed.push(frame.json()["thread_id"].as_str().unwrap().to_owned());
    }
    assert_eq!(replayed, missed, "each missed event once, in order");
    // Live after the replay, with no duplicate.
    let live = emit_one(&app, &net.gp.id, true).await.unwrap();
    let frame = resumed.expect_event().await;
    assert_eq!(frame.json()["thread_id"], live.as_str());
    assert_quiet(&mut resumed, Duration::from_millis(800)).await;
    drop(resumed);

    // The query parameter, for a browser's new EventSource.
    let mut by_query = app
        .open_events(
            &format!("/api/v1/events?last_event_id={last}"),
            Some(&net.gp.token),
            &[],
        )
        .await;
    assert_eq!(by_query.status, 200);
    assert_eq!(
        by_query.expect_event().await.json()["thread_id"],
        missed[0].as_str()
    );
    drop(by_query);

    // Malformed: 400 naming it.
    for (headers, path, field) in [
        (
            vec![("last-event-id", "abc".to_owned())],
            "/api/v1/events",
            "Last-Event-ID",
        ),
        (vec![], "/api/v1/events?last_event_id=-1", "last_event_id"),
        (vec![], "/api/v1/events?since=1", "since"),
    ] {
        app.request_with(Method::GET, path, Some(&net.gp.token), None, &headers)
            .await
            .invalid_field_400(field);
    }

    // Past the retention: one stream.reset, then live from the present.
    app.clock.advance(chrono::Duration::hours(73));
    let report = relais::scheduler::Scheduler::new(&app.state)
        .tick()
        .await
        .unwrap();
    assert!(report.events_purged >= 5, "{report:?}");
    let mut old = app
        .open_events(
            "/api/v1/events",
            Some(&net.gp.token),
            &[("last-event-id", last)],
        )
        .await;
    let reset = old.expect_event().await;
    assert_eq!(reset.event.as_deref(), Some("stream.reset"));
    assert_eq!(reset.json()["reason"], "retention");
    assert_ids_only(&reset);
    let after = emit_one(&app, &net.gp.id, true).await.unwrap();
    assert_eq!(old.expect_event().await.json()["thread_id"], after.as_str());
    // A position this server never gave.
    let mut unknown = app
        .open_events(
            "/api/v1/events",
            Some(&net.gp.token),
            &[("last-event-id", "999999999".into())],
        )
        .await;
    let reset = unknown.expect_event().await;
    assert_eq!(reset.json()["reason"], "unknown_position");
}

#[actix_web::test]
async fn a_message_posted_on_one_instance_reaches_a_stream_on_the_other() {
    let db = Arc::new(TestDb::new());
    let a = spawn_on(db.clone(), SmtpListener::start().await, |_| {}).await;
    let relay = a.smtp.port;
    let b = spawn_on(db.clone(), SmtpListener::start().await, |s| {
        s.email.smtp_port = relay;
    })
    .await;
    let net = Network::new(&a).await;
    let patient = patient_with_plan(&a, &net).await;
    let thread = patient_thread(&a, &net.gp, &patient).await;
    let mut on_a = a.events(&net.hospital.token).await;
    let gp_on_b = b.login("gp@relais.test", crate::helpers::PASSWORD).await;
    let message = post_message(&b, &gp_on_b, &thread, "Écrit sur l'instance B").await;
    let event = next_of(&mut on_a, "message.created").await;
    assert_eq!(event["message_id"], message.as_str());
    // And the other way round, from A to a stream on B.
    let mut on_b = b.events(&gp_on_b.token).await;
    let reply = post_message(&a, &net.hospital, &thread, "Reçu sur A").await;
    assert_eq!(
        next_of(&mut on_b, "message.created").await["message_id"],
        reply.as_str()
    );
}

#[actix_web::test]
async fn consent_withdrawal_stops_the_patients_events_at_once() {
    let app = spawn_app().await;
    let net = Network::new(&app).await;
    let patient = patient_with_plan(&app, &net).await;
    // The pharmacist is of another organisation: consent lets them in.
    add_member(&app, &net.gp, &patient, &net.pharmacist).await;
    let thread = patient_thread(&app, &net.gp, &patient).await;
    let mut pharmacist = app.events(&net.pharmacist.token).await;
    let before = post_message(&app, &net.gp, &thread, "Avant le retrait").await;
    assert_eq!(
        next_of(&mut pharmacist, "message.created").await["message_id"],
        before.as_str()
    );
    // Queued for the pharmacist while they still had a basis, delivered after.
    let queued = post_message(&app, &net.gp, &thread, "Juste avant").await;
    set_consent(&app, &net.gp, &patient, "withdrawn").await;
    post_message(&app, &net.gp, &thread, "Après le retrait").await;
    // Something the pharmacist may still hear of: their own consultation.
    let own = app
        .post(
            "/api/v1/consultations",
            &net.pharmacist.token,
            json!({"centre_id": net.pain_centre, "priority": "routine", "question": "Palier ?"}),
        )
        .await
        .expect(201);
    loop {
        let frame = pharmacist.expect_event().await;
        let data = frame.json();
        if data["message_id"] == queued.as_str() {
            // Sent while the basis held, it may have gone out before the withdrawal.
            continue;
        }
        assert_ne!(
            data["patient_id"],
            patient.as_str(),
            "an event about the patient after consent was withdrawn: {data} \
             (queued message {queued})"
        );
        if frame.event.as_deref() == Some("consultation.submitted") {
            assert_eq!(data["consultation_id"], own.body["id"]);
            break;
        }
    }
    // Nor on a replay from before the withdrawal.
    let mut replay = app
        .open_events(
            "/api/v1/events",
            Some(&net.pharmacist.token),
            &[("last-event-id", "0".into())],
        )
        .await;
    loop {
        let frame = replay.expect_event().await;
        if frame.event.as_deref() == Some("consultation.submitted") {
            break;
        }
        assert_ne!(frame.json()["patient_id"], patient.as_str(), "{frame:?}");
    }
}

fn forged_token(user: &Session, ttl_s: u64) -> String {
    let payload = user.token.split('.').nth(1).unwrap();
    use base64::Engine;
    let mut claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    claims["exp"] = json!(jsonwebtoken::get_current_timestamp() + ttl_s);
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap()
}

#[actix_web::test]
async fn the_stream_ends_with_auth_expired_when_the_token_or_session_does() {
    let app = spawn_app_with(|s| s.events.heartbeat_s = 1).await;
    let net = Network::new(&app).await;
    let short = forged_token(&net.gp, 3);
    let mut stream = app.events(&short).await;
    // Heartbeats meanwhile, then the end.
    let beat = stream.next_any(Duration::from_secs(5)).await.unwrap();
    assert!(beat.comment, "{beat:?}");
    let end = stream.until("auth.expired").await;
    assert!(end.id.is_none());
    assert_ids_only(&end);
    assert!(
        stream.next_any(Duration::from_secs(5)).await.is_none(),
        "ended"
    );

    // Signing out ends the session's streams at the next heartbeat.
    let mut stream = app.events(&net.hospital.token).await;
    app.post_anon(
        "/api/v1/auth/logout",
        json!({"refresh_token": net.hospital.refresh_token}),
    )
    .await
    .expect(204);
    stream.until("auth.expired").await;
    assert!(stream.next_any(Duration::from_secs(5)).await.is_none());
}

#[actix_web::test]
async fn a_browser_opens_its_stream_with_a_single_use_ticket() {
    let app = spawn_app().await;
    let net = Network::new(&app).await;
    let ticket = app
        .post("/api/v1/events/ticket", &net.gp.token, json!({}))
        .await
        .expect(201);
    assert_eq!(ticket.body["expires_in"], 30);
    let ticket = ticket.body["ticket"].as_str().unwrap().to_owned();
    let path = format!("/api/v1/events?ticket={ticket}");
    let mut stream = app.open_events(&path, None, &[]).await;
    assert_eq!(stream.status, 200);
    assert!(
        stream
            .headers
            .get("content-type")
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    assert_eq!(
        stream.expect_event().await.event.as_deref(),
        Some("stream.ready")
    );
    let mine = emit_one(&app, &net.gp.id, true).await.unwrap();
    assert_eq!(
        next_of(&mut stream, "thread.read").await["thread_id"],
        mine.as_str()
    );
    // Used up; an unknown one, none, or an expired one: 401.
    let again = app.open_events(&path, None, &[]).await;
    assert_eq!(again.status, 401);
    assert_eq!(
        app.open_events("/api/v1/events?ticket=forged", None, &[])
            .await
            .status,
        401
    );
    assert_eq!(
        app.open_events("/api/v1/events", None, &[]).await.status,
        401
    );
    let late = app
        .post("/api/v1/events/ticket", &net.gp.token, json!({}))
        .await
        .expect(201);
    app.clock.advance(chrono::Duration::seconds(31));
    let late = format!(
        "/api/v1/events?ticket={}",
        late.body["ticket"].as_str().unwrap()
    );
    assert_eq!(app.open_events(&late, None, &[]).await.status, 401);
    // A ticket is asked for with the bearer token only.
    app.post_anon("/api/v1/events/ticket", json!({}))
        .await
        .problem(401);
}

#[actix_web::test]
async fn streams_per_user_are_bounded() {
    let app = spawn_app_with(|s| {
        s.events.max_streams_per_user = 2;
        // A heartbeat a second (a stream whose client closed its connection
        // ends at once, but one whose client vanished ends at a write).
        s.events.heartbeat_s = 1;
    })
    .await;
    let net = Network::new(&app).await;
    let first = app.events(&net.gp.token).await;
    let _second = app.events(&net.gp.token).await;
    let third = app
        .open_events("/api/v1/events", Some(&net.gp.token), &[])
        .await;
    assert_eq!(third.status, 429);
    assert_eq!(
        third.headers.get("content-type").unwrap(),
        "application/problem+json"
    );
    // Another user is not counted against the first.
    let _other = app.events(&net.hospital.token).await;
    drop(first);
    // The slot frees once the server sees the client gone.
    crate::helpers::eventually("a freed stream slot", || async {
        app.open_events("/api/v1/events", Some(&net.gp.token), &[])
            .await
            .status
            == 200
    })
    .await;
}

/// How many stream leases `user` holds in the database (PostgreSQL).
async fn leases_of(app: &TestApp, user: &str) -> i64 {
    use diesel::prelude::*;
    use relais::db::schema::event_stream_leases as leases;
    let user = user.to_owned();
    app.state
        .db
        .read(move |conn| {
            Ok(leases::table
                .filter(leases::user_id.eq(user))
                .count()
                .get_result(conn)?)
        })
        .await
        .unwrap()
}

/// Sets the expiry of the leases of `instance` (PostgreSQL).
async fn set_lease_expiry(app: &TestApp, instance: &str, at: chrono::NaiveDateTime) {
    use diesel::prelude::*;
    use relais::db::schema::event_stream_leases as leases;
    let instance = instance.to_owned();
    app.state
        .db
        .write_apart(move |conn| {
            Ok(
                diesel::update(leases::table.filter(leases::instance.eq(instance)))
                    .set(leases::expires_at.eq(at))
                    .execute(conn)?,
            )
        })
        .await
        .unwrap();
}

/// On PostgreSQL `events.max_streams_per_user` holds across instances (a
/// lease row per open stream). On SQLite one instance owns the database
/// and counts its streams in process (`streams_per_user_are_bounded`):
/// nothing to test there.
#[actix_web::test]
async fn the_stream_limit_holds_across_instances_on_postgresql() {
    let db = Arc::new(TestDb::new());
    if !db.url.starts_with("postgres") {
        return;
    }
    // No heartbeat during the test: a closed stream must be seen closed
    // without one (the server notices the client's end of the connection).
    let a = spawn_on(db.clone(), SmtpListener::start().await, |s| {
        s.events.heartbeat_s = 300;
    })
    .await;
    let relay = a.smtp.port;
    let b = spawn_on(db.clone(), SmtpListener::start().await, |s| {
        s.email.smtp_port = relay;
        s.events.heartbeat_s = 300;
    })
    .await;
    let net = Network::new(&a).await;
    let gp = &net.gp.token;
    let mut on_a = vec![a.events(gp).await, a.events(gp).await, a.events(gp).await];
    let _on_b = [b.events(gp).await, b.events(gp).await];
    assert_eq!(leases_of(&a, &net.gp.id).await, 5);
    // The sixth, on either instance, is refused.
    for app in [&a, &b] {
        let sixth = app.open_events("/api/v1/events", Some(gp), &[]).await;
        assert_eq!(sixth.status, 429);
        assert_eq!(
            sixth.headers.get("content-type").unwrap(),
            "application/problem+json"
        );
        assert!(sixth.headers.get("retry-after").is_some());
    }
    assert_eq!(leases_of(&a, &net.gp.id).await, 5, "a refusal holds none");
    // Another user is not counted against the first.
    let _hospital = b.events(&net.hospital.token).await;
    // A stream closed on A frees its slot for B.
    drop(on_a.pop());
    crate::helpers::eventually("the closed stream's lease released", || async {
        leases_of(&a, &net.gp.id).await == 4
    })
    .await;
    let mut again = b.events(gp).await;
    let seventh = a.open_events("/api/v1/events", Some(gp), &[]).await;
    assert_eq!(seventh.status, 429);
    // The stream on B works (the limit did not cost it its events).
    let theirs = emit_one(&a, &net.gp.id, true).await.unwrap();
    assert_eq!(
        next_of(&mut again, "thread.read").await["thread_id"],
        theirs.as_str()
    );

    // A dead instance's leases count until they lapse: here five of the
    // hospital's on an instance that stopped refreshing them.
    drop(_hospital);
    crate::helpers::eventually("the hospital's lease released", || async {
        leases_of(&a, &net.hospital.id).await == 0
    })
    .await;
    let (hospital, now) = (net.hospital.id.clone(), a.clock.now_naive());
    a.state
        .db
        .write_apart(move |conn| {
            use diesel::prelude::*;
            use relais::db::schema::event_stream_leases as leases;
            for _ in 0..5 {
                diesel::insert_into(leases::table)
                    .values((
                        leases::id.eq(uuid::Uuid::now_v7().to_string()),
                        leases::user_id.eq(&hospital),
                        leases::instance.eq("an-instance-that-died"),
                        leases::expires_at.eq(now + chrono::Duration::seconds(45)),
                    ))
                    .execute(conn)?;
            }
            Ok(())
        })
        .await
        .unwrap();
    let refused = a
        .open_events("/api/v1/events", Some(&net.hospital.token), &[])
        .await;
    assert_eq!(refused.status, 429);
    set_lease_expiry(
        &a,
        "an-instance-that-died",
        now - chrono::Duration::seconds(1),
    )
    .await;
    let _lapsed = a.events(&net.hospital.token).await;
    assert_eq!(
        leases_of(&a, &net.hospital.id).await,
        1,
        "lapsed leases deleted"
    );
}

/// A crashed instance never releases its leases: they lapse (no longer
/// counted) and the scheduler deletes them, whoever their user, without
/// waiting for that user to open a stream (PostgreSQL: SQLite writes no
/// lease).
#[actix_web::test]
async fn the_scheduler_purges_lapsed_stream_leases_on_postgresql() {
    let db = Arc::new(TestDb::new());
    if !db.url.starts_with("postgres") {
        return;
    }
    // No heartbeat during the test: only the scheduler may delete them.
    let app = spawn_on(db, SmtpListener::start().await, |s| {
        s.events.heartbeat_s = 300;
        no_background_ticks(s);
    })
    .await;
    let net = Network::new(&app).await;
    let _live = app.events(&net.gp.token).await;
    let (hospital, now) = (net.hospital.id.clone(), app.clock.now_naive());
    app.state
        .db
        .write_apart(move |conn| {
            use diesel::prelude::*;
            use relais::db::schema::event_stream_leases as leases;
            for (instance, expires_at) in [
                ("an-instance-that-died", now - chrono::Duration::seconds(1)),
                ("an-instance-that-died", now - chrono::Duration::seconds(60)),
                ("an-instance-that-died", now),
                (
                    "an-instance-still-alive",
                    now + chrono::Duration::seconds(45),
                ),
            ] {
                diesel::insert_into(leases::table)
                    .values((
                        leases::id.eq(uuid::Uuid::now_v7().to_string()),
                        leases::user_id.eq(&hospital),
                        leases::instance.eq(instance),
                        leases::expires_at.eq(expires_at),
                    ))
                    .execute(conn)?;
            }
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!(leases_of(&app, &net.hospital.id).await, 4);
    let scheduler = relais::scheduler::Scheduler::new(&app.state);
    let report = scheduler.tick().await.unwrap();
    assert_eq!(report.leases_purged, 3, "{report:?}");
    assert_eq!(
        leases_of(&app, &net.hospital.id).await,
        1,
        "the live instance's lease is kept"
    );
    assert_eq!(leases_of(&app, &net.gp.id).await, 1, "an open stream's too");
    assert_eq!(scheduler.tick().await.unwrap().leases_purged, 0);
}

#[actix_web::test]
async fn a_client_too_far_behind_is_reset_and_resumes_without_loss() {
    let app = spawn_app_with(|s| s.events.buffer = 8).await;
    let net = Network::new(&app).await;
    let mut gp = app.events(&net.gp.token).await;
    let mut calm = app.events(&net.hospital.token).await;
    // A burst of 200 events in one transaction: more than the buffer holds.
    let (user, now) = (net.gp.id.clone(), app.clock.now_naive());
    let threads: Vec<String> = (0..200).map(|_| uuid::Uuid::now_v7().to_string()).collect();
    let sent = threads.clone();
    app.state
        .db
        .write(move |conn| {
            for thread in &sent {
                let event = Event {
                    kind: EventKind::ThreadRead,
                    patient_id: None,
                    refs: &[("thread_id", thread.as_str())],
                };
                emit(conn, &[&user], &event, now)?;
            }
            Ok(())
        })
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut last = None;
    loop {
        let frame = gp.expect_event().await;
        if frame.event.as_deref() == Some("stream.reset") {
            assert_eq!(frame.json()["reason"], "too_far_behind");
            assert!(frame.id.is_none(), "a reset for lag keeps the position");
            break;
        }
        last = frame.id.clone();
        got.push(frame.json()["thread_id"].as_str().unwrap().to_owned());
    }
    assert!(
        gp.next_any(Duration::from_secs(5)).await.is_none(),
        "dropped"
    );
    assert!(got.len() < 200);
    let mut resumed = app
        .open_events(
            "/api/v1/events",
            Some(&net.gp.token),
            &[("last-event-id", last.unwrap_or_else(|| "0".into()))],
        )
        .await;
    while got.len() < 200 {
        let frame = resumed.expect_event().await;
        got.push(frame.json()["thread_id"].as_str().unwrap().to_owned());
    }
    assert_eq!(got, threads, "every event once, in order");
    // The other user's stream was not held up.
    let theirs = emit_one(&app, &net.hospital.id, true).await.unwrap();
    assert_eq!(
        next_of(&mut calm, "thread.read").await["thread_id"],
        theirs.as_str()
    );
}
