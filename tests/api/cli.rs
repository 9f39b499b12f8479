//! The binary: create-admin, migrate, configuration errors, serve and SIGTERM.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::helpers::TestDb;

fn relais(db: &TestDb, dir: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_relais"));
    cmd.current_dir(dir)
        .env_remove("RELAIS_ENV")
        .env("RELAIS__DATABASE__URL", &db.url)
        .env("RELAIS__SERVER__DATA_DIR", dir.join("data"))
        .env("RELAIS__EMAIL__TRANSPORT", "log")
        .env("RUST_LOG", "info");
    cmd
}

#[test]
fn migrate_and_create_admin() {
    let db = TestDb::new();
    let dir = tempfile::tempdir().unwrap();
    let out = relais(&db, dir.path()).arg("migrate").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = relais(&db, dir.path()).arg("migrate").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("0 migration(s) applied"));

    let create = |password: &str| {
        let mut child = relais(&db, dir.path())
            .args([
                "create-admin",
                "--email",
                "root@relais.test",
                "--full-name",
                "Root",
                "--password-stdin",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(password.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let short = create("short\n");
    assert!(!short.status.success());
    assert!(String::from_utf8_lossy(&short.stderr).contains("at least 12"));
    let ok = create("a long enough password\n");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let again = create("a long enough password\n");
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--email"));
    // The password never reaches the output.
    for out in [&ok, &again] {
        assert!(!String::from_utf8_lossy(&out.stdout).contains("long enough"));
        assert!(!String::from_utf8_lossy(&out.stderr).contains("long enough"));
    }
}

#[test]
fn bad_configuration_stops_startup_naming_the_key() {
    let db = TestDb::new();
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("RELAIS__SERVER__BINDD", "127.0.0.1:1", "bindd"),
        (
            "RELAIS__AUTH__ACCESS_TOKEN_TTL_S",
            "soon",
            "access_token_ttl_s",
        ),
        ("RELAIS__EMAIL__SMTP_TLS", "maybe", "smtp_tls"),
        ("RELAIS__SERVER__BIND", "nowhere", "server.bind"),
        ("RELAIS__DATABASE__URL", "mysql://x", "database.url"),
    ];
    for (key, value, named) in cases {
        let out = relais(&db, dir.path())
            .env(key, value)
            .arg("migrate")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{key} should fail");
        assert!(stderr.contains(named), "{key}: {stderr}");
    }
    // A RELAIS_ENV whose file is missing is an error too.
    let out = relais(&db, dir.path())
        .env("RELAIS_ENV", "staging")
        .arg("migrate")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("config/staging.toml"));
    // An environment file is read when present.
    std::fs::create_dir_all(dir.path().join("config")).unwrap();
    std::fs::write(
        dir.path().join("config/staging.toml"),
        "[server]\nunknown_key = 1\n",
    )
    .unwrap();
    let out = relais(&db, dir.path())
        .env("RELAIS_ENV", "staging")
        .arg("migrate")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown_key"));
}

#[test]
fn serve_generates_a_private_secret_and_stops_on_sigterm() {
    let db = TestDb::new();
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = relais(&db, dir.path())
        .env("RELAIS__SERVER__BIND", format!("127.0.0.1:{port}"))
        .env("RELAIS__SERVER__WORKERS", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut up = false;
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            up = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(up, "server did not start");
    let secret = dir.path().join("data/jwt_secret");
    let meta = std::fs::metadata(&secret).expect("jwt_secret generated");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    }
    let secret_text = std::fs::read_to_string(&secret).unwrap();

    // A sign-in attempt: neither the body nor the password may reach the logs.
    let body = r#"{"email":"someone@relais.test","password":"hunter2-hunter2-hunter2"}"#;
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut stream, &mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    let logs = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "exit: {:?}\n{logs}", out.status);
    assert!(logs.contains("outbox sender stopped"), "{logs}");
    assert!(
        !logs.contains(secret_text.trim()),
        "the secret must never be logged"
    );
}

#[actix_web::test]
async fn demo_loads_a_network_the_gp_can_use() {
    use std::sync::Arc;

    use relais::demo::DEMO_PASSWORD;
    use serde_json::Value;

    let db = Arc::new(TestDb::new());
    let dir = tempfile::tempdir().unwrap();
    let out = relais(&db, dir.path()).arg("demo").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for login in [
        "admin@demo.relais.test",
        "gp@demo.relais.test",
        "hospital@demo.relais.test",
        "addiction@demo.relais.test",
        "pain@demo.relais.test",
        "pharmacist@demo.relais.test",
        "nurse@demo.relais.test",
    ] {
        assert!(stdout.contains(login), "{login} missing from:\n{stdout}");
    }
    assert!(stdout.contains(DEMO_PASSWORD));

    // A second run changes nothing and says so.
    let again = relais(&db, dir.path()).arg("demo").output().unwrap();
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert!(String::from_utf8_lossy(&again.stdout).contains("already loaded"));

    // The demo GP signs in over HTTP and reads both plans.
    let app =
        crate::helpers::spawn_on(db, crate::helpers::SmtpListener::start().await, |_| {}).await;
    let gp = app.login("gp@demo.relais.test", DEMO_PASSWORD).await;
    let patients = app.get("/api/v1/patients", &gp.token).await.expect(200);
    let items = patients.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    let mut medications = Vec::new();
    for patient in items {
        let id = patient["id"].as_str().unwrap();
        let plan = app
            .get(&format!("/api/v1/patients/{id}/care-plan"), &gp.token)
            .await
            .expect(200);
        assert_eq!(plan.body["status"], "active");
        medications.push(plan.body["omt"]["medication"].clone());
    }
    medications.sort_by_key(Value::to_string);
    assert_eq!(medications, ["buprenorphine", "methadone"]);
    let handovers = app
        .get("/api/v1/handovers?box=inbox", &gp.token)
        .await
        .expect(200);
    assert_eq!(handovers.body["items"].as_array().unwrap().len(), 1);
    assert_eq!(handovers.body["items"][0]["status"], "sent");

    // The pharmacist sees the dispensing page; the pain centre has the request.
    let pharmacist = app
        .login("pharmacist@demo.relais.test", DEMO_PASSWORD)
        .await;
    for patient in items {
        let id = patient["id"].as_str().unwrap();
        app.get(
            &format!("/api/v1/patients/{id}/analgesic-plan"),
            &pharmacist.token,
        )
        .await
        .expect(200);
    }
    let pain = app.login("pain@demo.relais.test", DEMO_PASSWORD).await;
    let received = app
        .get("/api/v1/consultations?box=received", &pain.token)
        .await
        .expect(200);
    assert_eq!(received.body["items"].as_array().unwrap().len(), 1);
    assert_eq!(received.body["items"][0]["status"], "submitted");
}
