//! Several instances on one database: concurrent writers on overlapping
//! patients and threads, through two servers at once, get no 5xx, every
//! acknowledged write is stored, and the audit chain verifies.

use std::process::Command;
use std::rc::Rc;

use actix_web::http::Method;
use diesel::prelude::*;
use relais::db::schema::messages;
use serde_json::{Value, json};

use crate::fixtures::{Network, design_plan, patient_thread, patient_with_plan};
use crate::helpers::{Session, SmtpListener, TestApp, TestDb, spawn_on};

const PATIENTS: usize = 3;
const WRITERS: usize = 24;
const WRITES_EACH: usize = 12;

/// What one write was answered.
enum Answer {
    Message(String),
    Plan {
        patient: usize,
    },
    /// A plan write that lost the race on its version (412): stored nothing.
    Stale,
}

/// One write through `app`: a message on the thread of `patient`, or (every
/// third write of a GP) a new version of that patient's care plan. Writers
/// walk the patients in different orders, so batches lock rows in different
/// orders.
async fn one_write(
    app: &TestApp,
    (by, gp): &(Session, bool),
    patients: &[(String, String)],
    writer: usize,
    n: usize,
) -> Result<Answer, String> {
    let patient = (writer + n * (1 + writer % 2)) % PATIENTS;
    let (patient_id, thread) = &patients[patient];
    if *gp && n % 3 == 2 {
        let url = format!("/api/v1/patients/{patient_id}/care-plan");
        let current = app.get(&url, &by.token).await;
        if current.status >= 500 {
            return Err(format!("plan read {}: {}", current.status, current.body));
        }
        let etag = current.header_value("etag");
        let mut plan = design_plan(None);
        plan["omt"]["temporary_adjustment"] = Value::Null;
        plan["omt"]["daily_dose_mg"] = json!(40 + (writer * WRITES_EACH + n) % 60);
        let put = app
            .request_with(
                Method::PUT,
                &url,
                Some(&by.token),
                Some(&plan),
                &[("if-match", etag)],
            )
            .await;
        return match put.status {
            200 => Ok(Answer::Plan { patient }),
            412 => Ok(Answer::Stale),
            status => Err(format!("plan write {status}: {}", put.body)),
        };
    }
    let post = app
        .post(
            &format!("/api/v1/threads/{thread}/messages"),
            &by.token,
            json!({"body": format!("writer {writer} message {n}")}),
        )
        .await;
    match post.status {
        201 => Ok(Answer::Message(
            post.body["id"].as_str().unwrap().to_owned(),
        )),
        status => Err(format!("message {status}: {}", post.body)),
    }
}

#[actix_web::test]
async fn two_instances_with_concurrent_writers_answer_no_5xx_and_lose_nothing() {
    let db = std::sync::Arc::new(TestDb::new());
    let a = Rc::new(spawn_on(db.clone(), SmtpListener::start().await, |_| {}).await);
    let relay = a.smtp.port;
    let b = Rc::new(
        spawn_on(db.clone(), SmtpListener::start().await, |s| {
            s.email.smtp_port = relay;
        })
        .await,
    );
    let net = Network::new(&a).await;
    let mut patients = Vec::new();
    for _ in 0..PATIENTS {
        let patient = patient_with_plan(&a, &net).await;
        let thread = patient_thread(&a, &net.gp, &patient).await;
        patients.push((patient, thread));
    }
    let patients = Rc::new(patients);
    let password = crate::helpers::PASSWORD;
    // The GP and the hospital doctor write on both instances.
    let sessions = Rc::new([
        (net.gp.clone(), true),
        (net.hospital.clone(), false),
        (b.login("gp@relais.test", password).await, true),
        (b.login("hospital@relais.test", password).await, false),
    ]);
    let writers = (0..WRITERS).map(|writer| {
        let (app, by) = if writer % 2 == 0 {
            (a.clone(), sessions[writer / 2 % 2].clone())
        } else {
            (b.clone(), sessions[2 + writer / 2 % 2].clone())
        };
        let patients = patients.clone();
        actix_web::rt::spawn(async move {
            let mut answers = Vec::new();
            for n in 0..WRITES_EACH {
                answers.push(one_write(&app, &by, &patients, writer, n).await);
            }
            answers
        })
    });
    let mut failures = Vec::new();
    let mut acknowledged = Vec::new();
    let mut plan_writes = [0usize; PATIENTS];
    for answers in futures_util::future::join_all(writers).await {
        for answer in answers.unwrap() {
            match answer {
                Ok(Answer::Message(id)) => acknowledged.push(id),
                Ok(Answer::Plan { patient }) => plan_writes[patient] += 1,
                Ok(Answer::Stale) => {}
                Err(why) => failures.push(why),
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failed: {failures:?}",
        failures.len()
    );
    assert!(plan_writes.iter().sum::<usize>() > 0, "no plan write won");

    // Every acknowledged message is stored...
    let expected = acknowledged.len() as i64;
    let stored = a
        .state
        .db
        .read(move |conn| {
            Ok(messages::table
                .filter(messages::id.eq_any(&acknowledged))
                .count()
                .get_result::<i64>(conn)?)
        })
        .await
        .unwrap();
    assert_eq!(stored, expected);
    // ...and every acknowledged plan write is a version.
    for (i, (patient, _)) in patients.iter().enumerate() {
        let plan = b
            .get(
                &format!("/api/v1/patients/{patient}/care-plan"),
                &net.gp.token,
            )
            .await
            .expect(200);
        assert_eq!(
            plan.body["version"].as_u64(),
            Some(1 + plan_writes[i] as u64),
            "patient {i}"
        );
    }

    // The chain both instances appended to verifies.
    let mut conn = a.state.db.get().unwrap();
    assert!(
        matches!(
            relais::audit::verify(&mut conn).unwrap(),
            relais::audit::Verdict::Intact { .. }
        ),
        "the audit chain is broken"
    );
    drop(conn);
    let out = Command::new(env!("CARGO_BIN_EXE_relais"))
        .args(["audit", "verify"])
        .env("RELAIS__DATABASE__URL", &db.url)
        .env("RELAIS__SERVER__DATA_DIR", &a.settings.server.data_dir)
        .env_remove("RELAIS_ENV")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// PostgreSQL closing every connection of an instance (a restart, an
/// operator's `pg_terminate_backend`) costs no request: the writer's next
/// batch fails before any of its jobs ran and starts again on a new
/// connection, and a read that meets a closed pooled connection runs again
/// on another. Whichever request or background task meets a closed
/// connection first, the counters say that each path was taken and that no
/// batch failed; with the writer's retry or the read's removed, a batch
/// fails or a request answers 5xx.
#[actix_web::test]
async fn a_write_after_the_database_dropped_the_connections_is_stored() {
    let app = crate::helpers::spawn_app_with(|s| {
        s.server.metrics_bind = Some("127.0.0.1:0".into());
    })
    .await;
    let net = Network::new(&app).await;
    let patient = patient_with_plan(&app, &net).await;
    let thread = patient_thread(&app, &net.gp, &patient).await;
    let url = format!("/api/v1/threads/{thread}/messages");
    let post = |n: usize| {
        app.post(
            &url,
            &net.gp.token,
            json!({"body": format!("after the cut {n}")}),
        )
    };
    post(0).await.expect(201);
    let postgres = app.state.db.backend() == relais::db::Backend::Postgres;
    if postgres {
        // Every session of the instance on the test's database (the
        // writer's, the pool's, the listeners'), from a connection of our
        // own, waiting until each is gone.
        let mut admin = PgConnection::establish(&app.settings.database.url).unwrap();
        let killed = diesel::sql_query(
            "SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        .execute(&mut admin)
        .unwrap();
        assert!(killed >= 2, "the writer's and the pool's connections");
    }
    let mut ids = Vec::new();
    for n in 1..=3 {
        let resp = post(n).await.expect(201);
        ids.push(resp.body["id"].as_str().unwrap().to_owned());
    }
    let listed = app
        .get(&format!("/api/v1/threads/{thread}/messages"), &net.gp.token)
        .await
        .expect(200);
    let stored: Vec<&str> = listed.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    for id in &ids {
        assert!(stored.contains(&id.as_str()), "{id} is not stored");
    }
    if postgres {
        let address = app.metrics_address.as_deref().expect("metrics listener");
        let (status, _, metrics) = crate::ops::fetch(&format!("{address}/metrics")).await;
        assert_eq!(status, 200);
        let sample = |name: &str| crate::ops::sample(&metrics, name).unwrap_or(0.0);
        assert!(
            sample("relais_db_writer_batch_restarts_total") >= 1.0,
            "the writer met its closed connection and started the batch again"
        );
        assert_eq!(
            sample(r#"relais_db_writer_batches_total{outcome="failed"}"#),
            0.0,
            "no batch failed"
        );
        assert!(
            sample("relais_db_pool_lost_connections_total") >= 1.0,
            "a read met a closed pooled connection and ran again"
        );
    }
}

/// A write whose statement PostgreSQL's deadlock detector aborts is run
/// again, alone, in a new savepoint of its batch, and answered 2xx: the
/// client never sees the deadlock (issue 14, Deliver 2). A real deadlock:
/// a session of the test's own holds the author's row, which the message's
/// insert needs (its foreign key), while the post holds the thread's row
/// (locked first, in its savepoint); the test's session then asks for the
/// thread's row. Only the writer's backend runs the deadlock check in time
/// (the test's session waits 60 s before it would), so the writer's
/// statement is the one aborted; its savepoint's rollback frees the thread,
/// the test's session ends, and the second try goes through.
///
/// SQLite cannot deadlock: one writer at a time, and the batch takes the
/// write lock before any job runs (`db::writer`). Nothing to test there.
#[actix_web::test]
async fn a_write_that_meets_a_deadlock_is_run_again_and_stored_once() {
    let app = crate::helpers::spawn_app_with(|s| {
        s.server.metrics_bind = Some("127.0.0.1:0".into());
    })
    .await;
    if app.state.db.backend() != relais::db::Backend::Postgres {
        return;
    }
    let net = Network::new(&app).await;
    let patient = patient_with_plan(&app, &net).await;
    let thread = patient_thread(&app, &net.gp, &patient).await;
    let url = app.settings.database.url.clone();
    let (author, thread_id) = (net.gp.id.clone(), thread.clone());
    let (locked, is_locked) = std::sync::mpsc::channel::<()>();
    let other = std::thread::spawn(move || -> QueryResult<()> {
        use diesel::connection::SimpleConnection;
        use diesel::sql_types::Text;
        let mut own = PgConnection::establish(&url).expect("the test's own session");
        own.batch_execute("SET deadlock_timeout = '60s'; BEGIN")?;
        diesel::sql_query("SELECT id FROM users WHERE id = $1 FOR UPDATE")
            .bind::<Text, _>(&author)
            .execute(&mut own)?;
        locked.send(()).expect("the test waits");
        // Until the writer waits for the author's row (holding the thread's).
        let mut waiting = || -> QueryResult<bool> {
            #[derive(QueryableByName)]
            struct Waiting {
                #[diesel(sql_type = diesel::sql_types::BigInt)]
                n: i64,
            }
            let found: Waiting = diesel::sql_query(
                "SELECT COUNT(*) AS n FROM pg_stat_activity WHERE datname = current_database() \
                 AND pid <> pg_backend_pid() AND wait_event_type = 'Lock'",
            )
            .get_result(&mut own)?;
            Ok(found.n > 0)
        };
        let since = std::time::Instant::now();
        while !waiting()? {
            assert!(
                since.elapsed() < std::time::Duration::from_secs(30),
                "the writer never waited for the author's row"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        // Closes the cycle; answered once the writer's try is rolled back.
        diesel::sql_query("SELECT id FROM threads WHERE id = $1 FOR UPDATE")
            .bind::<Text, _>(&thread_id)
            .execute(&mut own)?;
        own.batch_execute("ROLLBACK")
    });
    tokio::task::spawn_blocking(move || is_locked.recv())
        .await
        .unwrap()
        .expect("the test's session holds the author's row");
    let body = format!("posted through a deadlock {}", uuid::Uuid::now_v7());
    let posted = app
        .post(
            &format!("/api/v1/threads/{thread}/messages"),
            &net.gp.token,
            json!({ "body": body }),
        )
        .await
        .expect(201);
    tokio::task::spawn_blocking(move || other.join())
        .await
        .unwrap()
        .expect("the test's session")
        .expect("the test's session was not the deadlock's victim");
    let mut conn = PgConnection::establish(&app.settings.database.url).unwrap();
    let stored: Vec<String> = messages::table
        .filter(messages::body.eq(&body))
        .select(messages::id)
        .load(&mut conn)
        .unwrap();
    assert_eq!(stored, [posted.body["id"].as_str().unwrap()], "stored once");
    let address = app.metrics_address.as_deref().expect("metrics listener");
    let (status, _, metrics) = crate::ops::fetch(&format!("{address}/metrics")).await;
    assert_eq!(status, 200);
    assert!(
        crate::ops::sample(&metrics, "relais_db_writer_job_retries_total").unwrap_or(0.0) >= 1.0,
        "the write was run again"
    );
}
