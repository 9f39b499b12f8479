//! What an operator relies on: `/metrics` on its own port, JSON logs that
//! leak nothing, `relais config check`, and backups that restore.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use diesel::prelude::*;
use serde_json::{Value, json};

use crate::fixtures::{create_patient, patient_body, random_ins};
use crate::helpers::{TestApp, TestDb, spawn_app, spawn_app_with};

fn relais(db_url: &str, data_dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_relais"));
    cmd.env_remove("RELAIS_ENV")
        .env("RELAIS__DATABASE__URL", db_url)
        .env("RELAIS__SERVER__DATA_DIR", data_dir)
        .env("RELAIS__EMAIL__TRANSPORT", "log");
    cmd
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// GET `url`: (status, content type, body).
pub(crate) async fn fetch(url: &str) -> (u16, String, String) {
    let mut res = awc::Client::new()
        .get(url)
        .send()
        .await
        .expect("request sent");
    let body = res.body().limit(10 * 1024 * 1024).await.expect("body");
    let content_type = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (
        res.status().as_u16(),
        content_type,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

/// The value of the sample `name` (with its labels, as printed), if any.
pub(crate) fn sample(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[actix_web::test]
async fn metrics_are_served_on_their_own_port_and_name_no_one() {
    let app = spawn_app_with(|s| {
        s.server.metrics_bind = Some("127.0.0.1:0".into());
        s.auth.ip_requests_per_minute = 4;
    })
    .await;
    let metrics_url = format!(
        "{}/metrics",
        app.metrics_address.as_deref().expect("metrics listener")
    );
    // Never on the API's port.
    assert_eq!(fetch(&format!("{}/metrics", app.address)).await.0, 404);
    // Something worth counting: a patient, named, with an INS, read back
    // with a query string; a wrong password; then the address's limit.
    let admin = app.admin().await;
    let practice = app.create_org(&admin, "Cabinet", "gp_practice").await;
    let gp = app
        .onboard(&admin, "gp.metrics@relais.test", "gp", &practice)
        .await;
    let ins = random_ins();
    let patient = create_patient(&app, &gp, Some(&ins)).await;
    app.get(&format!("/api/v1/patients/lookup?ins={ins}"), &gp.token)
        .await;
    app.get(&format!("/api/v1/patients/{patient}"), &gp.token)
        .await
        .expect(200);
    let mut throttled = false;
    for _ in 0..6 {
        let resp = app
            .post_anon(
                "/api/v1/auth/login",
                json!({"email": "gp.metrics@relais.test", "password": "not the password at all"}),
            )
            .await;
        throttled |= resp.status == 429;
    }
    assert!(throttled, "the address limit should refuse a sign-in");

    // The scheduler ticks every 100 ms in tests.
    let mut metrics = String::new();
    for _ in 0..200 {
        let (status, content_type, body) = fetch(&metrics_url).await;
        assert_eq!(status, 200);
        assert!(content_type.starts_with("text/plain"), "{content_type}");
        metrics = body;
        if sample(&metrics, r#"relais_scheduler_ticks_total{outcome="ok"}"#).unwrap_or(0.0) >= 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (name, at_least) in [
        (
            r#"relais_http_requests_total{method="GET",route="/api/v1/patients/{id}",status="200"}"#,
            1.0,
        ),
        (
            r#"relais_http_requests_total{method="POST",route="/api/v1/patients",status="201"}"#,
            1.0,
        ),
        (
            r#"relais_http_request_duration_seconds_count{method="GET",route="/api/v1/patients/{id}"}"#,
            1.0,
        ),
        (r#"relais_throttle_rejections_total{limit="ip"}"#, 1.0),
        (r#"relais_scheduler_ticks_total{outcome="ok"}"#, 1.0),
        ("relais_scheduler_tick_duration_seconds_count", 1.0),
        ("relais_db_writer_batch_size_count", 1.0),
        ("relais_db_writer_commit_seconds_count", 1.0),
        (
            r#"relais_db_writer_batches_total{outcome="committed"}"#,
            1.0,
        ),
        ("relais_db_writer_queue_depth", 0.0),
        ("relais_db_pool_connections_max", 4.0),
        ("relais_db_pool_connections_in_use", 0.0),
        ("relais_db_pool_connections_idle", 0.0),
        ("relais_db_pool_wait_seconds_count", 0.0),
        ("relais_password_hash_slots", 1.0),
        ("relais_password_hash_waiting", 0.0),
        ("relais_outbox_pending", 0.0),
        ("relais_outbox_failing", 0.0),
        ("relais_outbox_oldest_pending_age_seconds", 0.0),
        ("relais_event_streams_open", 0.0),
    ] {
        let value = sample(&metrics, name).unwrap_or_else(|| panic!("{name} missing:\n{metrics}"));
        assert!(value >= at_least, "{name} = {value}\n{metrics}");
    }
    // The invitation of the GP was queued: the outbox saw at least one email.
    assert!(metrics.contains("relais_outbox_pending"));
    // No path, query, name, INS, email or id in any label.
    let gp_id = gp.id.clone();
    for secret in [
        patient.as_str(),
        gp_id.as_str(),
        ins.as_str(),
        "Le Gall",
        "Maïwenn",
        "gp.metrics@relais.test",
        "ins=",
        "?",
    ] {
        assert!(
            !metrics.contains(secret),
            "{secret:?} appears in the metrics:\n{metrics}"
        );
    }
    app.stop().await;
}

#[actix_web::test]
async fn without_metrics_bind_no_metrics_are_served() {
    let app = spawn_app().await;
    assert!(app.metrics_address.is_none());
    assert_eq!(fetch(&format!("{}/metrics", app.address)).await.0, 404);
    app.stop().await;
}

/// A free port on loopback (bound and released: the server binds it next).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Collects the child's standard output, line by line, into `lines`.
fn collect_lines(child: &mut std::process::Child, lines: Arc<Mutex<Vec<String>>>) {
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            lines.lock().unwrap().push(line);
        }
    });
}

#[actix_web::test]
async fn json_logs_have_one_object_per_line_and_no_request_data() {
    let db = TestDb::new();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = relais(&db.url, &dir.path().join("data"))
        .env("RELAIS__LOG__FORMAT", "json")
        .env("RELAIS__SERVER__BIND", format!("127.0.0.1:{port}"))
        .env("RELAIS__SERVER__WORKERS", "1")
        .env("RELAIS__AUTH__JWT_SECRET", crate::helpers::JWT_SECRET)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = Arc::new(Mutex::new(Vec::new()));
    collect_lines(&mut child, lines.clone());
    let started = Instant::now();
    while !lines
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("\"listening\""))
    {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "server did not start: {:?}",
            lines.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Requests carrying a name, an INS, a password, a token and a query.
    let ins = random_ins();
    let client = awc::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let token = "eyJhbGciOiJIUzI1NiJ9.c2VjcmV0LXRva2VuLXBheWxvYWQ.c2lnbmF0dXJlLXNpZ25hdHVyZQ";
    let _ = client
        .post(format!("{base}/api/v1/auth/login"))
        .send_json(
            &json!({"email": "marie.curie@relais.test", "password": "hunter2-hunter2-hunter2"}),
        )
        .await
        .unwrap();
    let _ = client
        .get(format!(
            "{base}/api/v1/patients/lookup?ins={ins}&family_name=Sklodowska"
        ))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let mut body = patient_body(Some(&ins));
    body["family_name"] = json!("Sklodowska");
    let _ = client
        .post(format!("{base}/api/v1/patients?family_name=Sklodowska"))
        .bearer_auth(token)
        .insert_header(("X-Request-Id", "client-id-42"))
        .send_json(&body)
        .await
        .unwrap();
    let _ = client
        .get(format!("{base}/api/v1/health/live"))
        .send()
        .await
        .unwrap();
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    // Give the reader thread the last lines.
    std::thread::sleep(Duration::from_millis(200));
    let lines = lines.lock().unwrap().clone();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let all = format!("{}\n{stderr}", lines.join("\n"));
    assert!(!lines.is_empty());
    let mut requests = Vec::new();
    for line in &lines {
        let object: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not one JSON object per line ({e}): {line}"));
        assert!(object["timestamp"].is_string(), "{line}");
        assert!(object["level"].is_string(), "{line}");
        if object["message"] == "request" {
            requests.push(object);
        }
    }
    assert_eq!(requests.len(), 4, "{all}");
    for request in &requests {
        for field in ["request_id", "method", "route", "status", "duration_ms"] {
            assert!(!request[field].is_null(), "{field} missing: {request}");
        }
    }
    let routes: Vec<&str> = requests
        .iter()
        .filter_map(|r| r["route"].as_str())
        .collect();
    assert!(routes.contains(&"/api/v1/patients/lookup"), "{routes:?}");
    assert!(routes.contains(&"/api/v1/patients"), "{routes:?}");
    assert!(requests.iter().any(|r| r["status"] == 401), "{all}");
    assert!(
        requests
            .iter()
            .any(|r| r["client_request_id"] == "client-id-42"),
        "{all}"
    );
    for secret in [
        ins.as_str(),
        "Sklodowska",
        "Maïwenn",
        "marie.curie",
        "hunter2",
        token,
        "c2VjcmV0",
        "family_name",
        "ins=",
        "06 12 34 56 78",
    ] {
        assert!(!all.contains(secret), "{secret:?} logged:\n{all}");
    }
}

#[test]
fn config_check_prints_the_settings_without_secrets_and_names_a_bad_key() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let secret = "jwt-secret-that-must-not-be-printed-0123456789";
    let out = relais("postgres://relais:db-pass-word@db.example/relais", &data)
        .current_dir(dir.path())
        .env("RELAIS__AUTH__JWT_SECRET", secret)
        .env("RELAIS__EMAIL__SMTP_USERNAME", "relay")
        .env("RELAIS__EMAIL__SMTP_PASSWORD", "smtp-pass-word")
        .env("RELAIS__SERVER__METRICS_BIND", "127.0.0.1:9464")
        .args(["config", "check"])
        .output()
        .unwrap();
    let printed = text(&out);
    assert!(out.status.success(), "{printed}");
    for hidden in [secret, "db-pass-word", "smtp-pass-word"] {
        assert!(!printed.contains(hidden), "{hidden} printed:\n{printed}");
    }
    for shown in [
        "jwt_secret = \"<redacted>\"",
        "smtp_password = \"<redacted>\"",
        "url = \"postgres://relais:<redacted>@db.example/relais\"",
        "metrics_bind = \"127.0.0.1:9464\"",
        "format = \"text\"",
        "# configuration valid",
    ] {
        assert!(printed.contains(shown), "{shown} missing:\n{printed}");
    }
    // Nothing was created: a check touches no database and no data folder.
    assert!(!data.exists());

    for (key, value, named) in [
        (
            "RELAIS__SERVER__METRICS_BIND",
            "127.0.0.1:8080",
            "server.metrics_bind",
        ),
        ("RELAIS__LOG__FORMAT", "yaml", "log.format"),
        ("RELAIS__AUTH__JWT_SECRET", "short", "auth.jwt_secret"),
        ("RELAIS__SCHEDULER__TICK_MS", "1", "scheduler.tick_ms"),
    ] {
        let out = relais("sqlite://data/relais.db", &data)
            .current_dir(dir.path())
            .env(key, value)
            .args(["config", "check"])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{key}={value} accepted");
        let printed = text(&out);
        assert!(printed.contains(named), "{key}: {printed}");
        assert!(!printed.contains("configuration valid"), "{printed}");
    }
}

/// Patients created by `writers` concurrent GPs' requests until `stop`;
/// each id is recorded with the moment its 201 was received.
async fn write_patients(
    app: Rc<TestApp>,
    token: String,
    acked: Arc<Mutex<Vec<(Instant, String)>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) {
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        let resp = app
            .post("/api/v1/patients", &token, patient_body(None))
            .await
            .expect(201);
        let id = resp.body["id"].as_str().unwrap().to_owned();
        acked.lock().unwrap().push((Instant::now(), id));
    }
}

/// Starts writers on `app`, runs `backup` (a blocking command) while they
/// write, stops them; returns the ids acknowledged before the backup began
/// and the count acknowledged in all.
async fn under_concurrent_writes<T: Send + 'static>(
    app: &Rc<TestApp>,
    backup: impl FnOnce() -> T + Send + 'static,
) -> (Vec<String>, usize, T) {
    let admin = app.admin().await;
    let practice = app.create_org(&admin, "Cabinet", "gp_practice").await;
    let mut tokens = Vec::new();
    for i in 0..3 {
        let gp = app
            .onboard(
                &admin,
                &format!("gp{i}.backup@relais.test"),
                "gp",
                &practice,
            )
            .await;
        tokens.push(gp.token);
    }
    let acked = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = tokens
        .into_iter()
        .map(|token| {
            actix_web::rt::spawn(write_patients(
                app.clone(),
                token,
                acked.clone(),
                stop.clone(),
            ))
        })
        .collect();
    // Let some writes land first.
    crate::helpers::eventually("writes acknowledged", || {
        let n = acked.lock().unwrap().len();
        async move { n >= 20 }
    })
    .await;
    let began = Instant::now();
    let result = actix_web::rt::task::spawn_blocking(backup).await.unwrap();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for writer in writers {
        writer.await.unwrap();
    }
    let acked = acked.lock().unwrap();
    let before: Vec<String> = acked
        .iter()
        .filter(|(at, _)| *at < began)
        .map(|(_, id)| id.clone())
        .collect();
    (before, acked.len(), result)
}

fn patients_in(conn: &mut relais::db::DbConnection) -> std::collections::HashSet<String> {
    use relais::db::schema::patients;
    patients::table
        .select(patients::id)
        .load::<String>(conn)
        .unwrap()
        .into_iter()
        .collect()
}

#[actix_web::test]
async fn a_backup_under_concurrent_writes_restores_every_acknowledged_write() {
    let db = Arc::new(TestDb::new());
    if !db.url.starts_with("sqlite://") {
        return postgres_dump_verifies_against_the_backup_anchor(db).await;
    }
    let smtp = crate::helpers::SmtpListener::start().await;
    let app = Rc::new(crate::helpers::spawn_on(db.clone(), smtp, |_| {}).await);
    let backups = tempfile::tempdir().unwrap();
    let file = backups.path().join("relais-backup.db");
    let (live_url, live_data) = (db.url.clone(), app.settings.server.data_dir.clone());
    let backup_file = file.clone();
    let (before, total, out) = under_concurrent_writes(&app, move || {
        relais(&live_url, &live_data)
            .args(["backup", "--to"])
            .arg(&backup_file)
            .output()
            .unwrap()
    })
    .await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("audit chain intact"), "{}", text(&out));
    assert!(before.len() >= 20 && total >= before.len());
    assert!(file.is_file());
    assert!(
        file.with_extension("db.anchor")
            .join("audit_anchor_key")
            .is_file()
    );
    // Never over an existing backup.
    let again = relais(&db.url, &app.settings.server.data_dir)
        .args(["backup", "--to"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(
        text(&again).contains("never overwrites"),
        "{}",
        text(&again)
    );

    // Refused over the running instance's database, which stays as it was.
    let out = relais(&db.url, &app.settings.server.data_dir)
        .args(["restore", "--from"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("running Relais instance"),
        "{}",
        text(&out)
    );
    let live = app
        .state
        .db
        .read(|conn| Ok(patients_in(conn)))
        .await
        .unwrap();
    assert_eq!(live.len(), total);

    // Restored elsewhere (a new host): every write acknowledged before the
    // backup began is there, and the chain verifies against the anchor.
    let elsewhere = tempfile::tempdir().unwrap();
    let new_url = format!("sqlite://{}", elsewhere.path().join("relais.db").display());
    let new_data = elsewhere.path().join("data");
    let out = relais(&new_url, &new_data)
        .args(["restore", "--from"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("audit chain intact"), "{}", text(&out));
    let restored = {
        let url = new_url.clone();
        let db = relais::db::Db::connect(&url, 1).unwrap();
        let ids = db.read(|conn| Ok(patients_in(conn))).await.unwrap();
        let verdict = db
            .read(|conn| Ok(relais::audit::verify(conn)?))
            .await
            .unwrap();
        assert!(
            matches!(verdict, relais::audit::Verdict::Intact { rows } if rows > 0),
            "{verdict:?}"
        );
        ids
    };
    let missing: Vec<&String> = before.iter().filter(|id| !restored.contains(*id)).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged writes lost",
        missing.len()
    );
    assert!(restored.len() <= total);
    let out = relais(&new_url, &new_data)
        .args(["audit", "verify"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));

    // Over the instance's own database once it is stopped: the current one
    // is kept aside, never deleted.
    let app = Rc::into_inner(app).expect("writers are done");
    let data_dir = app.settings.server.data_dir.clone();
    app.stop().await;
    let db_path = Path::new(db.url.trim_start_matches("sqlite://"));
    // While a restore holds the database, a backup (as a server) is
    // refused, and leaves nothing behind.
    {
        let _restoring = relais::db::lock::InstanceLock::exclusive(db_path).unwrap();
        let other = backups.path().join("during-restore.db");
        let out = relais(&db.url, &data_dir)
            .args(["backup", "--to"])
            .arg(&other)
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(text(&out).contains("being restored"), "{}", text(&out));
        assert!(!other.exists() && !backups.path().join("during-restore.db.anchor").exists());
    }
    let out = relais(&db.url, &data_dir)
        .args(["restore", "--from"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let aside: Vec<_> = std::fs::read_dir(db_path.parent().unwrap())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| {
            name.starts_with("relais.db.before-restore-")
                && !name.ends_with("-wal")
                && !name.ends_with("-shm")
        })
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    let previous = relais::db::Db::connect(
        &format!(
            "sqlite://{}",
            db_path.parent().unwrap().join(&aside[0]).display()
        ),
        1,
    )
    .unwrap();
    let kept = previous.read(|conn| Ok(patients_in(conn))).await.unwrap();
    assert_eq!(kept.len(), total, "the previous database is kept whole");
    let out = relais(&db.url, &data_dir)
        .args(["audit", "verify"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
}

/// PostgreSQL: `relais backup` writes the anchor and names the pg_dump;
/// the dump, restored into a new database, verifies against that anchor.
async fn postgres_dump_verifies_against_the_backup_anchor(db: Arc<TestDb>) {
    let smtp = crate::helpers::SmtpListener::start().await;
    let app = Rc::new(crate::helpers::spawn_on(db.clone(), smtp, |_| {}).await);
    let backups = tempfile::tempdir().unwrap();
    let file = backups.path().join("relais.dump");
    let (live_url, live_data, dump) = (
        db.url.clone(),
        app.settings.server.data_dir.clone(),
        file.clone(),
    );
    let (before, _total, (backup, pg_dump)) = under_concurrent_writes(&app, move || {
        let backup = relais(&live_url, &live_data)
            .args(["backup", "--to"])
            .arg(&dump)
            .output()
            .unwrap();
        // What it says to run, run as it says (after the anchor).
        let pg_dump = Command::new("pg_dump")
            .args(["--format=custom", "--file"])
            .arg(&dump)
            .arg(&live_url)
            .output()
            .unwrap();
        (backup, pg_dump)
    })
    .await;
    assert!(backup.status.success(), "{}", text(&backup));
    assert!(
        text(&backup).contains("pg_dump --format=custom"),
        "{}",
        text(&backup)
    );
    assert!(pg_dump.status.success(), "{}", text(&pg_dump));

    let restored = TestDb::new();
    let out = Command::new("pg_restore")
        .args(["--no-owner", "--dbname"])
        .arg(&restored.url)
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let anchor = backups.path().join("relais.dump.anchor");
    let empty = tempfile::tempdir().unwrap();
    let out = relais(&restored.url, empty.path())
        .args(["audit", "verify", "--anchor"])
        .arg(&anchor)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("audit chain intact"), "{}", text(&out));
    let ids = relais::db::Db::connect(&restored.url, 1)
        .unwrap()
        .read(|conn| Ok(patients_in(conn)))
        .await
        .unwrap();
    assert!(before.iter().all(|id| ids.contains(id)));
    // Checked against the wrong key, the anchor is refused.
    std::fs::write(
        anchor.join("audit_anchor_key"),
        format!("{}\n", "ab".repeat(32)),
    )
    .unwrap();
    let out = relais(&restored.url, empty.path())
        .args(["audit", "verify", "--anchor"])
        .arg(&anchor)
        .output()
        .unwrap();
    assert!(!out.status.success(), "{}", text(&out));
    // SQLite's restore is not PostgreSQL's.
    let out = relais(&restored.url, empty.path())
        .args(["restore", "--from"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(text(&out).contains("pg_restore"), "{}", text(&out));
}
