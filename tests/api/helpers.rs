//! The test harness: a real server on a free port, its own database (SQLite
//! file, or a fresh PostgreSQL database when `RELAIS_TEST_DATABASE_URL` is
//! set), a real SMTP listener on loopback, and typed HTTP helpers.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::http::Method;
use awc::http::header::HeaderMap;
use diesel::connection::SimpleConnection;
use diesel::{Connection, PgConnection};
use relais::clock::ManualClock;
use relais::config::{EmailTransport, Settings};
use relais::startup::Application;
use relais::state::AppState;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// The JWT secret every test server uses, so tests can forge tokens.
pub const JWT_SECRET: &str = "test-secret-test-secret-test-secret-0123456789";
/// The password of every account the harness creates.
pub const PASSWORD: &str = "a long enough password";
/// The administrator every test server starts with.
pub const ADMIN_EMAIL: &str = "admin@relais.test";

/// A database that exists for one test.
pub struct TestDb {
    pub url: String,
    /// PostgreSQL: the server URL and database name to drop afterwards.
    pg: Option<(String, String)>,
    _dir: tempfile::TempDir,
}

impl TestDb {
    /// A temporary SQLite file, or a new PostgreSQL database.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        match std::env::var("RELAIS_TEST_DATABASE_URL") {
            Ok(server) if !server.is_empty() => {
                let name = format!("relais_test_{}", uuid::Uuid::now_v7().simple());
                let mut admin =
                    PgConnection::establish(&server).expect("connect to RELAIS_TEST_DATABASE_URL");
                admin
                    .batch_execute(&format!("CREATE DATABASE {name}"))
                    .expect("create test database");
                let base = server.rsplit_once('/').map_or(server.as_str(), |(b, _)| b);
                Self {
                    url: format!("{base}/{name}"),
                    pg: Some((server.clone(), name)),
                    _dir: dir,
                }
            }
            _ => Self {
                url: format!("sqlite://{}", dir.path().join("relais.db").display()),
                pg: None,
                _dir: dir,
            },
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some((server, name)) = &self.pg
            && let Ok(mut admin) = PgConnection::establish(server)
        {
            let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
        }
    }
}

/// One email as the SMTP listener received it.
#[derive(Debug, Clone)]
pub struct ReceivedMail {
    pub from: String,
    pub to: Vec<String>,
    /// The raw message (headers and body) after dot-unstuffing.
    pub data: String,
}

impl ReceivedMail {
    /// A header's value (first occurrence, unfolded).
    pub fn header(&self, name: &str) -> Option<String> {
        let (head, _) = self.data.split_once("\r\n\r\n")?;
        let unfolded = head.replace("\r\n ", " ").replace("\r\n\t", " ");
        unfolded.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name)
                .then(|| value.trim().to_owned())
        })
    }

    /// The body with quoted-printable decoded.
    pub fn body(&self) -> String {
        let (_, body) = self.data.split_once("\r\n\r\n").unwrap_or(("", &self.data));
        decode_quoted_printable(body)
    }

    /// The invitation token in the body's link.
    pub fn invitation_token(&self) -> Option<String> {
        let body = self.body();
        let start = body.find("/invitations/")? + "/invitations/".len();
        Some(
            body[start..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                .collect(),
        )
    }
}

fn decode_quoted_printable(text: &str) -> String {
    let joined = text.replace("=\r\n", "");
    let bytes = joined.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'='
            && i + 2 < bytes.len() + 1
            && let Some(hex) = joined.get(i + 1..i + 3)
            && let Ok(byte) = u8::from_str_radix(hex, 16)
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A minimal SMTP server on loopback that keeps what it receives.
#[derive(Clone)]
pub struct SmtpListener {
    pub port: u16,
    mails: Arc<Mutex<Vec<ReceivedMail>>>,
    task: Arc<tokio::task::JoinHandle<()>>,
}

impl SmtpListener {
    /// Listens on a free port.
    pub async fn start() -> Self {
        Self::start_on(0).await
    }

    /// Listens on `port` (0 for any).
    pub async fn start_on(port: u16) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind SMTP");
        let port = listener.local_addr().unwrap().port();
        let mails = Arc::new(Mutex::new(Vec::new()));
        let sink = mails.clone();
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(serve_smtp(socket, sink.clone()));
            }
        });
        Self {
            port,
            mails,
            task: Arc::new(task),
        }
    }

    /// Stops accepting connections.
    pub fn stop(&self) {
        self.task.abort();
    }

    /// Everything received so far.
    pub fn mails(&self) -> Vec<ReceivedMail> {
        self.mails.lock().unwrap().clone()
    }

    /// Waits (up to 15 s) until at least `n` mails have arrived; returns them all.
    pub async fn wait_for(&self, n: usize) -> Vec<ReceivedMail> {
        for _ in 0..300 {
            let mails = self.mails();
            if mails.len() >= n {
                return mails;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("expected {n} mail(s), got {}", self.mails().len());
    }

    /// The first mail to `to` whose decoded body contains `text`, waiting for it.
    pub async fn mail_to_containing(&self, to: &str, text: &str) -> ReceivedMail {
        for _ in 0..300 {
            if let Some(mail) = self
                .mails()
                .into_iter()
                .find(|m| m.to.iter().any(|t| t == to) && m.body().contains(text))
            {
                return mail;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no mail to {to} containing {text:?}");
    }

    /// The latest mail addressed to `to`, waiting for it.
    pub async fn latest_to(&self, to: &str) -> ReceivedMail {
        for _ in 0..300 {
            if let Some(mail) = self
                .mails()
                .into_iter()
                .rev()
                .find(|m| m.to.iter().any(|t| t == to))
            {
                return mail;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no mail to {to}");
    }
}

async fn serve_smtp(socket: tokio::net::TcpStream, sink: Arc<Mutex<Vec<ReceivedMail>>>) {
    let (read, mut write) = socket.into_split();
    let mut lines = BufReader::new(read);
    let mut reply = async |text: &str| write.write_all(text.as_bytes()).await.is_ok();
    if !reply("220 relais-test ESMTP\r\n").await {
        return;
    }
    let (mut from, mut to) = (String::new(), Vec::new());
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line).await.unwrap_or(0) == 0 {
            return;
        }
        let command = line.trim_end().to_owned();
        let upper = command.to_ascii_uppercase();
        let ok = if upper.starts_with("EHLO") {
            reply("250-relais-test\r\n250-8BITMIME\r\n250 SIZE 10000000\r\n").await
        } else if upper.starts_with("HELO") || upper.starts_with("NOOP") {
            reply("250 OK\r\n").await
        } else if upper.starts_with("RSET") {
            from.clear();
            to.clear();
            reply("250 OK\r\n").await
        } else if upper.starts_with("MAIL FROM:") {
            from = address_of(&command[10..]);
            reply("250 OK\r\n").await
        } else if upper.starts_with("RCPT TO:") {
            to.push(address_of(&command[8..]));
            reply("250 OK\r\n").await
        } else if upper == "DATA" {
            if !reply("354 end with <CRLF>.<CRLF>\r\n").await {
                return;
            }
            let mut data = String::new();
            loop {
                line.clear();
                if lines.read_line(&mut line).await.unwrap_or(0) == 0 {
                    return;
                }
                if line == ".\r\n" {
                    break;
                }
                data.push_str(
                    line.strip_prefix('.')
                        .filter(|_| line.starts_with(".."))
                        .unwrap_or(&line),
                );
            }
            sink.lock().unwrap().push(ReceivedMail {
                from: std::mem::take(&mut from),
                to: std::mem::take(&mut to),
                data,
            });
            reply("250 OK queued\r\n").await
        } else if upper.starts_with("QUIT") {
            let _ = reply("221 bye\r\n").await;
            return;
        } else {
            reply("502 not implemented\r\n").await
        };
        if !ok {
            return;
        }
    }
}

fn address_of(arg: &str) -> String {
    let arg = arg.trim();
    let inner = arg
        .strip_prefix('<')
        .and_then(|a| a.split_once('>'))
        .map_or(arg, |(a, _)| a);
    inner.to_owned()
}

/// An HTTP answer, decoded.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Resp {
    /// The content type, or "".
    pub fn content_type(&self) -> String {
        self.headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    }

    /// A header's value (panics when absent).
    #[track_caller]
    pub fn header_value(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("no {name} header"))
            .to_owned()
    }

    /// Asserts the status, showing the body when it differs.
    #[track_caller]
    pub fn expect(self, status: u16) -> Self {
        assert_eq!(
            self.status, status,
            "unexpected status; body: {}",
            self.body
        );
        self
    }

    /// Asserts a problem+json answer with this status; returns the problem.
    #[track_caller]
    pub fn problem(self, status: u16) -> Value {
        assert_eq!(
            self.status, status,
            "unexpected status; body: {}",
            self.body
        );
        assert_eq!(
            self.content_type(),
            "application/problem+json",
            "body: {}",
            self.body
        );
        assert_eq!(self.body["status"], status);
        assert!(
            self.body["title"].is_string()
                && self.body["detail"].is_string()
                && self.body["type"].is_string()
        );
        self.body
    }

    /// Asserts a 422 naming `field`.
    #[track_caller]
    pub fn invalid_field(self, field: &str) -> Value {
        self.field_problem(422, field)
    }

    /// Asserts a 400 naming `field` (a malformed or unknown parameter).
    #[track_caller]
    pub fn invalid_field_400(self, field: &str) -> Value {
        self.field_problem(400, field)
    }

    /// Asserts a 401 naming `field` (a missing or wrong second factor, a bad code).
    #[track_caller]
    pub fn invalid_field_401(self, field: &str) -> Value {
        self.field_problem(401, field)
    }

    #[track_caller]
    fn field_problem(self, status: u16, field: &str) -> Value {
        let problem = self.problem(status);
        let fields: Vec<&str> = problem["errors"]
            .as_array()
            .expect("errors")
            .iter()
            .filter_map(|e| e["field"].as_str())
            .collect();
        assert!(
            fields.contains(&field),
            "expected field {field} in {fields:?}"
        );
        problem
    }
}

/// A running server with its database, clock and SMTP listener.
pub struct TestApp {
    pub address: String,
    /// `http://127.0.0.1:<port>` of `/metrics`, when `server.metrics_bind` is set.
    pub metrics_address: Option<String>,
    pub state: AppState,
    pub clock: Arc<ManualClock>,
    pub smtp: SmtpListener,
    pub settings: Settings,
    pub handle: ServerHandle,
    pub server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    /// Keeps the database until the server is gone.
    _db: Arc<TestDb>,
    client: awc::Client,
}

/// The settings a test server starts from.
pub fn test_settings(db_url: &str, smtp_port: u16, data_dir: &std::path::Path) -> Settings {
    let mut settings = Settings::defaults().expect("defaults");
    settings.server.bind = "127.0.0.1:0".into();
    settings.server.workers = 1;
    settings.server.data_dir = data_dir.to_path_buf();
    settings.database.url = db_url.to_owned();
    settings.database.pool_size = 4;
    settings.auth.jwt_secret = Some(JWT_SECRET.into());
    settings.auth.ip_requests_per_minute = 100_000;
    settings.email.transport = EmailTransport::Smtp;
    settings.email.smtp_host = "127.0.0.1".into();
    settings.email.smtp_port = smtp_port;
    settings.email.poll_interval_ms = 50;
    settings.email.retry_base_ms = 50;
    settings.email.retry_max_ms = 400;
    settings.scheduler.tick_ms = 100;
    settings
}

/// For a test that runs the scheduler's ticks itself and counts what each
/// did: the server's own scheduler ticks once at start, then not for an hour
/// (at the tests' 100 ms it could take a tick's work first).
pub fn no_background_ticks(settings: &mut Settings) {
    settings.scheduler.tick_ms = 3_600_000;
}

/// A server with default test settings.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// A server whose settings `customize` adjusts.
pub async fn spawn_app_with(customize: impl FnOnce(&mut Settings)) -> TestApp {
    let smtp = SmtpListener::start().await;
    spawn_on(Arc::new(TestDb::new()), smtp, customize).await
}

/// A server on an existing database and SMTP listener (several instances can share one).
pub async fn spawn_on(
    db: Arc<TestDb>,
    smtp: SmtpListener,
    customize: impl FnOnce(&mut Settings),
) -> TestApp {
    let data_dir = tempfile::tempdir().expect("data dir").keep();
    let mut settings = test_settings(&db.url, smtp.port, &data_dir);
    customize(&mut settings);
    settings.validate().expect("valid test settings");
    let clock = Arc::new(ManualClock::default());
    let app = Application::build(settings.clone(), clock.clone())
        .await
        .expect("build app");
    let address = format!("http://127.0.0.1:{}", app.port());
    let metrics_address = app
        .metrics_port()
        .map(|port| format!("http://127.0.0.1:{port}"));
    let state = app.state().clone();
    let handle = app.handle();
    let server = tokio::spawn(app.run_until_stopped());
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(30))
        .finish();
    let test_app = TestApp {
        address,
        metrics_address,
        state,
        clock,
        smtp,
        settings,
        handle,
        server: Some(server),
        _db: db,
        client,
    };
    relais::store::account::create_admin(
        &test_app.state.db,
        &*test_app.clock,
        ADMIN_EMAIL,
        "Ada Admin",
        PASSWORD,
    )
    .await
    .ok();
    test_app
}

/// A signed-in user.
#[derive(Debug, Clone)]
pub struct Session {
    pub id: String,
    pub token: String,
    pub refresh_token: String,
}

impl TestApp {
    /// The database this server runs on (another instance may share it).
    pub fn db(&self) -> Arc<TestDb> {
        self._db.clone()
    }

    /// Any request; `body` is sent as JSON when given.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Resp {
        self.request_with(method, path, token, body, &[]).await
    }

    /// Any request with extra headers; `body` is sent as JSON when given.
    pub async fn request_with(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
        headers: &[(&str, String)],
    ) -> Resp {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.address));
        for (name, value) in headers {
            req = req.insert_header((*name, value.as_str()));
        }
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        let mut res = match body {
            Some(body) => req.send_json(body).await,
            None => req.send().await,
        }
        .expect("request sent");
        let bytes = res.body().limit(10 * 1024 * 1024).await.expect("body read");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        Resp {
            status: res.status().as_u16(),
            headers: res.headers().clone(),
            body,
        }
    }

    /// A request with a raw body and extra headers.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Resp {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.address));
        for (name, value) in headers {
            req = req.insert_header((*name, *value));
        }
        let mut res = req.send_body(body).await.expect("request sent");
        let bytes = res.body().limit(10 * 1024 * 1024).await.expect("body read");
        Resp {
            status: res.status().as_u16(),
            headers: res.headers().clone(),
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        }
    }

    pub async fn get(&self, path: &str, token: &str) -> Resp {
        self.request(Method::GET, path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> Resp {
        self.request(Method::POST, path, Some(token), Some(&body))
            .await
    }

    pub async fn patch(&self, path: &str, token: &str, body: Value) -> Resp {
        self.request(Method::PATCH, path, Some(token), Some(&body))
            .await
    }

    /// Posts without a token.
    pub async fn post_anon(&self, path: &str, body: Value) -> Resp {
        self.request(Method::POST, path, None, Some(&body)).await
    }

    /// Signs in; panics unless it succeeds.
    pub async fn login(&self, email: &str, password: &str) -> Session {
        let resp = self
            .post_anon(
                "/api/v1/auth/login",
                json!({"email": email, "password": password}),
            )
            .await
            .expect(200);
        session_of(&resp.body)
    }

    /// The administrator's session.
    pub async fn admin(&self) -> Session {
        self.login(ADMIN_EMAIL, PASSWORD).await
    }

    /// Creates an organisation as `admin`; returns its id.
    pub async fn create_org(&self, admin: &Session, name: &str, kind: &str) -> String {
        let resp = self
            .post(
                "/api/v1/organizations",
                &admin.token,
                json!({"name": name, "kind": kind, "email": format!("{kind}@relais.test")}),
            )
            .await
            .expect(201);
        resp.body["id"].as_str().unwrap().to_owned()
    }

    /// Invites a user, accepts the invitation from the email, and signs in.
    pub async fn onboard(
        &self,
        admin: &Session,
        email: &str,
        role: &str,
        organization_id: &str,
    ) -> Session {
        self.post(
            "/api/v1/users",
            &admin.token,
            json!({"email": email, "full_name": format!("Test {role}"), "role": role, "organization_id": organization_id}),
        )
        .await
        .expect(201);
        let token = self
            .smtp
            .latest_to(email)
            .await
            .invitation_token()
            .expect("invitation link");
        let resp = self
            .post_anon(
                "/api/v1/auth/invitations/accept",
                json!({"token": token, "password": PASSWORD}),
            )
            .await
            .expect(200);
        session_of(&resp.body)
    }

    /// Stops the server gracefully and waits for its background tasks.
    pub async fn stop(mut self) {
        self.handle.stop(true).await;
        if let Some(server) = self.server.take() {
            server.await.expect("server task").expect("server result");
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.smtp.stop();
        let handle = self.handle.clone();
        // Best effort when a test ends without `stop()`.
        tokio::spawn(async move { handle.stop(false).await });
    }
}

/// The session in a token-pair answer.
pub fn session_of(body: &Value) -> Session {
    Session {
        id: body["user"]["id"].as_str().expect("user.id").to_owned(),
        token: body["access_token"]
            .as_str()
            .expect("access_token")
            .to_owned(),
        refresh_token: body["refresh_token"]
            .as_str()
            .expect("refresh_token")
            .to_owned(),
    }
}

/// Polls `check` every 25 ms for up to 15 s.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..600 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// One server-sent event frame (or a comment line, with `comment` set).
#[derive(Debug, Clone, Default)]
pub struct Frame {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
    pub comment: bool,
}

impl Frame {
    /// The `data:` line as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or(Value::Null)
    }

    /// The SSE id as a number.
    pub fn id_num(&self) -> Option<i64> {
        self.id.as_deref().and_then(|i| i.parse().ok())
    }
}

type Body = std::pin::Pin<
    Box<dyn futures_util::Stream<Item = Result<actix_web::web::Bytes, awc::error::PayloadError>>>,
>;

/// An open `GET /api/v1/events` over real HTTP, read frame by frame.
pub struct EventStream {
    pub status: u16,
    pub headers: HeaderMap,
    body: Body,
    buffer: String,
}

impl EventStream {
    /// The next frame (comments included), or `None` when the stream ended
    /// or nothing came within `wait`.
    pub async fn next_any(&mut self, wait: Duration) -> Option<Frame> {
        use futures_util::StreamExt;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut frame = Frame::default();
                let mut data = Vec::new();
                for line in block.lines() {
                    if let Some(rest) = line.strip_prefix(':') {
                        frame.comment = true;
                        frame.data = rest.trim().to_owned();
                    } else if let Some((field, value)) = line.split_once(':') {
                        let value = value.strip_prefix(' ').unwrap_or(value);
                        match field {
                            "id" => frame.id = Some(value.to_owned()),
                            "event" => frame.event = Some(value.to_owned()),
                            "data" => data.push(value.to_owned()),
                            _ => {}
                        }
                    }
                }
                if !data.is_empty() {
                    frame.data = data.join("\n");
                }
                if frame.comment || frame.event.is_some() || !frame.data.is_empty() {
                    return Some(frame);
                }
                continue;
            }
            match tokio::time::timeout_at(deadline, self.body.next()).await {
                Ok(Some(Ok(bytes))) => self.buffer.push_str(&String::from_utf8_lossy(&bytes)),
                Ok(Some(Err(_)) | None) | Err(_) => return None,
            }
        }
    }

    /// The next event, skipping heartbeat comments (up to `wait`).
    pub async fn next_event(&mut self, wait: Duration) -> Option<Frame> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let frame = self.next_any(left).await?;
            if !frame.comment {
                return Some(frame);
            }
        }
    }

    /// The next event, which must come within 15 s.
    pub async fn expect_event(&mut self) -> Frame {
        self.next_event(Duration::from_secs(15))
            .await
            .expect("an event within 15 s")
    }

    /// Events until one of type `kind` (returned), within 15 s.
    pub async fn until(&mut self, kind: &str) -> Frame {
        let mut skipped = Vec::new();
        loop {
            let Some(frame) = self.next_event(Duration::from_secs(15)).await else {
                panic!("no {kind} within 15 s; skipped: {skipped:?}");
            };
            if frame.event.as_deref() == Some(kind) {
                return frame;
            }
            skipped.push(frame.event.unwrap_or_default());
        }
    }
}

impl TestApp {
    /// Opens the event stream at `path_and_query` with optional bearer token
    /// and extra headers; returns once the response head has arrived.
    pub async fn open_events(
        &self,
        path_and_query: &str,
        token: Option<&str>,
        headers: &[(&str, String)],
    ) -> EventStream {
        // No timeout: a stream lasts as long as the test wants it to.
        let client = awc::Client::builder().disable_timeout().finish();
        let mut req = client.get(format!("{}{path_and_query}", self.address));
        for (name, value) in headers {
            req = req.insert_header((*name, value.as_str()));
        }
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        let res = req.send().await.expect("stream request sent");
        EventStream {
            status: res.status().as_u16(),
            headers: res.headers().clone(),
            body: Box::pin(res),
            buffer: String::new(),
        }
    }

    /// Opens the caller's event stream; asserts 200 and `stream.ready`.
    pub async fn events(&self, token: &str) -> EventStream {
        let mut stream = self.open_events("/api/v1/events", Some(token), &[]).await;
        assert_eq!(stream.status, 200, "GET /api/v1/events");
        let ready = stream.expect_event().await;
        assert_eq!(ready.event.as_deref(), Some("stream.ready"), "{ready:?}");
        stream
    }
}
