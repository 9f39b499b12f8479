//! The audit trail against someone with write access to the database: the
//! chain's head only moves forward, and `relais audit verify` checks the
//! chain against the signed checkpoints in the data directory, so removing
//! the newest rows and setting the head back is seen.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use relais::audit::{AuditRecord, Outcome};
use relais::db::schema::{audit_events, audit_head};
use relais::db::{Db, DbConnection};

use crate::fixtures::{Network, create_patient};
use crate::helpers::{SmtpListener, TestApp, TestDb, spawn_app, spawn_on};

fn verify(url: &str, data_dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_relais"))
        .args(["audit", "verify"])
        .env("RELAIS__DATABASE__URL", url)
        .env("RELAIS__SERVER__DATA_DIR", data_dir)
        .env_remove("RELAIS_ENV")
        .output()
        .unwrap()
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn head(conn: &mut DbConnection) -> (i64, String) {
    audit_head::table
        .find(1)
        .select((audit_head::seq, audit_head::hash))
        .first(conn)
        .unwrap()
}

fn hash_of(conn: &mut DbConnection, seq: i64) -> String {
    audit_events::table
        .find(seq)
        .select(audit_events::hash)
        .first(conn)
        .unwrap()
}

/// A few audited requests: a patient created and read by its GP.
async fn audited_requests(app: &TestApp) -> (Network, String) {
    let net = Network::new(app).await;
    let patient = create_patient(app, &net.gp, None).await;
    for _ in 0..3 {
        read_patient(app, &net, &patient).await;
    }
    (net, patient)
}

async fn read_patient(app: &TestApp, net: &Network, patient: &str) {
    app.get(&format!("/api/v1/patients/{patient}"), &net.gp.token)
        .await
        .expect(200);
}

#[actix_web::test]
async fn verify_sees_the_newest_rows_removed_and_the_head_set_back() {
    let db = Arc::new(TestDb::new());
    let app = spawn_on(db.clone(), SmtpListener::start().await, |s| {
        s.audit.checkpoint_interval_ms = 50;
    })
    .await;
    audited_requests(&app).await;
    let data_dir = app.settings.server.data_dir.clone();
    let url = db.url.clone();
    // Stopping writes the last head's checkpoint.
    app.stop().await;

    let store = Db::connect(&url, 1).unwrap();
    let mut conn = store.get().unwrap();
    let (last, _) = head(&mut conn);
    assert!(last >= 5, "{last}");

    let untouched = verify(&url, &data_dir);
    let (stdout, stderr) = text(&untouched);
    assert!(untouched.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!("intact: {last} row(s)")),
        "{stdout}"
    );
    assert!(stdout.contains("checkpoint(s) checked"), "{stdout}");
    assert!(
        stdout.contains(&format!("(latest: row {last} at ")),
        "{stdout}"
    );
    assert!(stderr.is_empty(), "{stderr}");

    // A data directory without checkpoints: the chain alone, and a warning.
    let elsewhere = tempfile::tempdir().unwrap();
    let alone = verify(&url, elsewhere.path());
    let (stdout, stderr) = text(&alone);
    assert!(alone.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("0 checkpoint(s)"), "{stdout}");
    assert!(stderr.contains("no checkpoints"), "{stderr}");

    // A checkpoint line edited to name another hash is a forgery.
    let file = data_dir.join("audit_checkpoints");
    let original = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<&str> = original.lines().collect();
    let mut fields: Vec<String> = lines[0].split(' ').map(str::to_owned).collect();
    fields[3] = "0".repeat(64);
    let mut edited = vec![fields.join(" ")];
    edited.extend(lines[1..].iter().map(|l| (*l).to_owned()));
    std::fs::write(&file, edited.join("\n") + "\n").unwrap();
    let forged = verify(&url, &data_dir);
    let (_, stderr) = text(&forged);
    assert!(!forged.status.success());
    assert!(
        stderr.contains("line 1: its signature does not match"),
        "{stderr}"
    );
    std::fs::write(&file, &original).unwrap();

    // Someone with database rights hides the two newest rows: the triggers
    // are in the way, so they go first.
    let kept = last - 2;
    let attack = match &*conn {
        DbConnection::Postgres(_) => format!(
            "ALTER TABLE audit_events DISABLE TRIGGER USER; \
             ALTER TABLE audit_head DISABLE TRIGGER USER; \
             DELETE FROM audit_events WHERE seq > {kept}; \
             UPDATE audit_head SET seq = {kept}, \
                 hash = (SELECT hash FROM audit_events WHERE seq = {kept}); \
             ALTER TABLE audit_events ENABLE TRIGGER USER; \
             ALTER TABLE audit_head ENABLE TRIGGER USER;"
        ),
        DbConnection::Sqlite(_) => format!(
            "DROP TRIGGER audit_events_no_delete; \
             DROP TRIGGER IF EXISTS audit_head_forward_only; \
             DELETE FROM audit_events WHERE seq > {kept}; \
             UPDATE audit_head SET seq = {kept}, \
                 hash = (SELECT hash FROM audit_events WHERE seq = {kept});"
        ),
    };
    conn.batch_execute(&attack).unwrap();
    // The chain alone is a valid, shorter chain...
    assert_eq!(
        relais::audit::verify(&mut conn).unwrap(),
        relais::audit::Verdict::Intact { rows: kept }
    );
    // ...but a checkpoint names a row past its end.
    let truncated = verify(&url, &data_dir);
    let (stdout, stderr) = text(&truncated);
    assert!(!truncated.status.success(), "{stdout}");
    assert!(stderr.contains("audit chain broken at row "), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "but the chain ends at row {kept}: rows were removed"
        )),
        "{stderr}"
    );

    // Refilled with rows of the attacker's choosing up to the old length:
    // a valid chain again, but not the one the checkpoints vouch for.
    conn.transaction(|conn| {
        let filler: Vec<AuditRecord> = (0..2)
            .map(|_| AuditRecord {
                actor_id: None,
                actor_role: None,
                action: "GET /health/live".into(),
                resource_type: "health".into(),
                resource_id: None,
                patient_id: None,
                basis: None,
                outcome: Outcome::Allowed,
                request_id: None,
                client_ip: None,
            })
            .collect();
        let now = chrono::Utc::now().naive_utc();
        let stamped: Vec<_> = filler.into_iter().map(|r| (r, now)).collect();
        relais::db::chain::write_chain(conn, &stamped).map(|_| ())
    })
    .unwrap();
    assert_eq!(head(&mut conn).0, last);
    let rewritten = verify(&url, &data_dir);
    let (_, stderr) = text(&rewritten);
    assert!(!rewritten.status.success());
    assert!(stderr.contains("differs from its checkpoint"), "{stderr}");
    // The row named is the first replaced one that a checkpoint covers.
    let named: i64 = stderr
        .split("broken at row ")
        .nth(1)
        .and_then(|rest| rest.split(':').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(kept < named && named <= last, "{stderr}");
}

#[actix_web::test]
async fn the_audit_head_only_moves_forward() {
    let app = spawn_app().await;
    let (net, patient) = audited_requests(&app).await;
    let mut conn = app.state.db.get().unwrap();
    let (seq, hash) = head(&mut conn);
    let earlier = hash_of(&mut conn, seq - 1);
    let mut refused = vec![
        // Back one row, as the attack above would.
        format!(
            "UPDATE audit_head SET seq = {}, hash = '{earlier}'",
            seq - 1
        ),
        format!("UPDATE audit_head SET seq = 0, hash = '{}'", "0".repeat(64)),
        // Not forward.
        format!("UPDATE audit_head SET hash = '{earlier}'"),
        // Forward, but onto no stored row.
        format!("UPDATE audit_head SET seq = {}", seq + 100),
        format!(
            "UPDATE audit_head SET seq = {}, hash = '{earlier}'",
            seq + 1
        ),
        "DELETE FROM audit_head".to_owned(),
        format!("INSERT INTO audit_head (id, seq, hash) VALUES (2, {seq}, '{hash}')"),
    ];
    match &*conn {
        DbConnection::Postgres(_) => refused.push("TRUNCATE audit_head".into()),
        DbConnection::Sqlite(_) => refused.push(format!(
            "INSERT OR REPLACE INTO audit_head (id, seq, hash) VALUES (1, 0, '{}')",
            "0".repeat(64)
        )),
    }
    for statement in &refused {
        let result = conn.batch_execute(statement);
        assert!(result.is_err(), "not refused: {statement}");
    }
    assert_eq!(head(&mut conn), (seq, hash));
    drop(conn);

    // The server's own appends still move it forward.
    let before = seq;
    read_patient(&app, &net, &patient).await;
    let mut conn = app.state.db.get().unwrap();
    assert!(head(&mut conn).0 > before);
    assert!(matches!(
        relais::audit::verify(&mut conn).unwrap(),
        relais::audit::Verdict::Intact { .. }
    ));
}

#[actix_web::test]
async fn each_instance_checkpoints_the_heads_it_commits() {
    // Two instances on one database, each with its own data directory.
    let db = Arc::new(TestDb::new());
    let fast = |s: &mut relais::config::Settings| s.audit.checkpoint_interval_ms = 50;
    let a = spawn_on(db.clone(), SmtpListener::start().await, fast).await;
    // Either instance's outbox sender may send an invitation queued through
    // `a`: both relay to `a`'s listener, where the fixture waits for them.
    let relay = a.smtp.port;
    let b = spawn_on(db.clone(), SmtpListener::start().await, |s| {
        fast(s);
        s.email.smtp_port = relay;
    })
    .await;
    let (net, patient) = audited_requests(&a).await;
    let gp_on_b = b.login("gp@relais.test", crate::helpers::PASSWORD).await;
    for _ in 0..3 {
        b.get(&format!("/api/v1/patients/{patient}"), &gp_on_b.token)
            .await
            .expect(200);
        read_patient(&a, &net, &patient).await;
    }
    let dirs = [
        a.settings.server.data_dir.clone(),
        b.settings.server.data_dir.clone(),
    ];
    a.stop().await;
    b.stop().await;

    let store = Db::connect(&db.url, 1).unwrap();
    let (last, _) = head(&mut store.get().unwrap());
    let mut latest = Vec::new();
    for dir in &dirs {
        let out = verify(&db.url, dir);
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{stdout}{stderr}");
        assert!(
            stdout.contains(&format!("intact: {last} row(s)")),
            "{stdout}"
        );
        let found = relais::audit::anchor::load_checkpoints(dir).unwrap();
        assert!(!found.valid.is_empty());
        latest.push(found.valid.iter().map(|c| c.seq).max().unwrap_or(0));
    }
    // Whichever instance committed the last row anchored it.
    assert_eq!(latest.iter().max(), Some(&last), "{latest:?}");
    // One instance's key does not vouch for the other's lines.
    let mine = std::fs::read(dirs[0].join("audit_checkpoints")).unwrap();
    let key = relais::audit::anchor::AnchorKey::load(&dirs[1])
        .unwrap()
        .unwrap();
    assert!(relais::audit::anchor::parse_checkpoints(&mine, &key).is_err());
}

/// PostgreSQL: the head's trigger finds the head's row by its key, never by
/// scanning the chain, also once PL/pgSQL has settled on a generic plan
/// while the chain is short (it used to stay a sequential scan, so every
/// write batch read the whole chain). The plan is read with auto_explain,
/// whose nested plans psql shows when `client_min_messages = log`.
#[test]
fn the_head_trigger_never_scans_the_chain_on_postgresql() {
    let db = TestDb::new();
    if !db.url.starts_with("postgres") {
        eprintln!("skipped: PostgreSQL only (RELAIS_TEST_DATABASE_URL)");
        return;
    }
    let app_db = Db::connect(&db.url, 2).unwrap();
    actix_web::rt::System::new()
        .block_on(app_db.migrate())
        .unwrap();
    // The chain's table as statistics know it when a network starts (empty,
    // vacuumed), then eight moves of the head in one session (PL/pgSQL
    // settles on a generic plan after five), each onto a row inserted just
    // before, rolled back.
    let mut script = String::from(
        "VACUUM ANALYZE audit_events; \
         SET client_min_messages = log; LOAD 'auto_explain'; \
         SET auto_explain.log_min_duration = 0; \
         SET auto_explain.log_nested_statements = on;\n",
    );
    for _ in 0..8 {
        script.push_str(
            "BEGIN; \
             INSERT INTO audit_events (seq, id, at, action, resource_type, outcome, prev_hash, hash) \
             SELECT seq + 1, gen_random_uuid()::text, now(), 'GET /health/live', 'health', \
                 'allowed', hash, md5(random()::text) FROM audit_head; \
             UPDATE audit_head SET seq = e.seq, hash = e.hash \
                 FROM (SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1) e; \
             ROLLBACK;\n",
        );
    }
    // From standard input, so that psql sends each statement on its own.
    let mut psql = Command::new("psql")
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", &db.url])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("psql");
    std::io::Write::write_all(&mut psql.stdin.take().unwrap(), script.as_bytes()).unwrap();
    let out = psql.wait_with_output().unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    let plans: Vec<&str> = stderr
        .split("LOG:")
        .filter(|plan| plan.contains("FROM audit_events WHERE seq = NEW.seq"))
        .collect();
    assert_eq!(
        plans.len(),
        8,
        "one plan of the trigger's lookup per move:\n{stderr}"
    );
    for plan in plans {
        assert!(!plan.contains("Seq Scan on audit_events"), "{plan}");
        assert!(plan.contains("audit_events_pkey"), "{plan}");
    }
}
