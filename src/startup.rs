//! Builds the application: state, background tasks, HTTP server.

use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{Server, ServerHandle, ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::{ErrorHandlers, Next, from_fn};
use actix_web::{App, HttpMessage, HttpServer, web};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::api;
use crate::audit::AuditWriter;
use crate::audit::anchor::{Anchor, AnchorKey};
use crate::auth::cache::UserCache;
use crate::auth::password::Hasher;
use crate::auth::throttle::IpLimiter;
use crate::auth::tokens::{JwtKeys, random_token};
use crate::clock::Clock;
use crate::config::Settings;
use crate::db::Db;
use crate::error::render_foreign_error;
use crate::metrics::Metrics;
use crate::net::TrustedProxies;
use crate::notify::events::Hub;
use crate::notify::outbox::{OutboxSignal, Sender};
use crate::scheduler::Scheduler;
use crate::state::{AppState, RequestId};
use crate::store::analgesic_page::PlanCache;
use crate::store::thread_page::ThreadPages;

/// A built, bound, not yet running server with its background tasks.
pub struct Application {
    port: u16,
    server: Server,
    /// `/metrics` on `server.metrics_bind`, with its port.
    metrics: Option<(u16, Server)>,
    state: AppState,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    /// Checkpoints the audit chain; stopped last, after every writer.
    anchor: Anchor,
    /// PostgreSQL: the thread hearing other instances' revocations.
    revocations: Option<(Arc<AtomicBool>, std::thread::JoinHandle<()>)>,
    /// PostgreSQL: the thread hearing other instances' events.
    event_listener: Option<(Arc<AtomicBool>, std::thread::JoinHandle<()>)>,
}

/// Reads `auth.jwt_secret`, or the generated one in the data folder (made on first run).
pub fn jwt_secret(settings: &Settings) -> anyhow::Result<String> {
    if let Some(secret) = &settings.auth.jwt_secret {
        return Ok(secret.clone());
    }
    let dir = &settings.server.data_dir;
    std::fs::create_dir_all(dir)?;
    let path = dir.join("jwt_secret");
    if path.exists() {
        let secret = std::fs::read_to_string(&path)?.trim().to_owned();
        anyhow::ensure!(
            secret.len() >= 32,
            "{} is shorter than 32 characters",
            path.display()
        );
        return Ok(secret);
    }
    let secret = format!("{}{}", random_token(), random_token());
    write_private(&path, &secret)?;
    tracing::info!(path = %path.display(), "generated a JWT secret");
    Ok(secret)
}

fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)?.write_all(contents.as_bytes())
}

impl Application {
    /// Connects, migrates, starts the background tasks and binds `server.bind`.
    pub async fn build(settings: Settings, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        let db = Db::connect(&settings.database.url, settings.database.pool_size)?;
        let applied = db.migrate().await?;
        if applied > 0 {
            tracing::info!(applied, "database migrated");
        }
        let secret = jwt_secret(&settings)?;
        let anchor = Anchor::start(
            &settings.server.data_dir,
            AnchorKey::load_or_create(&settings.server.data_dir)?,
            std::time::Duration::from_millis(settings.audit.checkpoint_interval_ms),
            db.committed_head(),
            clock.clone(),
        )?;
        let jwt = JwtKeys::new(
            secret.as_bytes(),
            settings.auth.access_token_ttl_s,
            settings.auth.jwt_leeway_s,
        );
        let (shutdown, shutdown_rx) = watch::channel(false);
        let audit = AuditWriter::new(db.clone(), clock.clone());
        let proxies = TrustedProxies::parse(&settings.server.trusted_proxies)
            .map_err(|e| anyhow::anyhow!("server.trusted_proxies: {e}"))?;
        let metrics = Arc::new(Metrics::new());
        metrics.register(db.metrics().collectors());
        let plan_cache = Arc::new(PlanCache::new(
            settings.database.plan_cache_entries,
            settings.database.plan_cache_bytes,
        ));
        metrics.register(plan_cache.collectors());
        let thread_pages = Arc::new(ThreadPages::new(settings.database.thread_page_cache_bytes));
        metrics.register(thread_pages.collectors());
        let hasher = Hasher::new(
            settings.max_concurrent_hashes(),
            settings.auth.hash_queue_max,
            std::time::Duration::from_millis(settings.auth.hash_queue_wait_ms),
            metrics
                .throttle_rejections
                .with_label_values(&["password_hash"]),
        );
        let events = Hub::new(
            db.clone(),
            settings.events.max_streams_per_user,
            settings.events.buffer,
            std::time::Duration::from_secs(settings.events.heartbeat_s),
        );
        let state = AppState {
            events,
            plan_cache,
            thread_pages,
            audit,
            users: Arc::new(UserCache::new(std::time::Duration::from_millis(
                settings.auth.session_cache_ms,
            ))),
            hasher,
            proxies: Arc::new(proxies),
            oidc: Arc::new(crate::auth::oidc::Providers::new(&settings.auth.oidc)),
            ip_limiter: Arc::new(IpLimiter::new(settings.auth.ip_requests_per_minute)),
            settings: Arc::new(settings),
            db,
            clock,
            jwt: Arc::new(jwt),
            outbox: OutboxSignal::default(),
            metrics,
        };

        let revocations = match state.db.backend() {
            crate::db::Backend::Postgres => {
                let stop = Arc::new(AtomicBool::new(false));
                let manager = crate::db::ConnectionManager::new(&state.settings.database.url)?;
                let handle = crate::auth::revocations::spawn(manager, &state.users, stop.clone())?;
                Some((stop, handle))
            }
            crate::db::Backend::Sqlite => None,
        };
        let event_listener = match state.db.backend() {
            crate::db::Backend::Postgres => {
                let stop = Arc::new(AtomicBool::new(false));
                let manager = crate::db::ConnectionManager::new(&state.settings.database.url)?;
                let handle =
                    crate::notify::events::spawn_listener(manager, &state.events, stop.clone())?;
                Some((stop, handle))
            }
            crate::db::Backend::Sqlite => None,
        };
        let sender = Sender::new(
            state.db.clone(),
            state.clock.clone(),
            state.settings.email.clone(),
            &state.settings.server.data_dir,
            state.outbox.clone(),
        )?;
        let scheduler = Scheduler::new(&state);
        let tasks = vec![
            tokio::spawn(sender.run(shutdown_rx.clone())),
            tokio::spawn(state.events.clone().run(shutdown_rx.clone())),
            tokio::spawn(
                state
                    .events
                    .clone()
                    .run_leases(state.clock.clone(), shutdown_rx.clone()),
            ),
            tokio::spawn(scheduler.run(shutdown_rx)),
        ];

        let listener = TcpListener::bind(&state.settings.server.bind)?;
        let port = listener.local_addr()?.port();
        let server = {
            let body_limit = state.settings.server.max_body_bytes;
            let workers = state.settings.workers();
            let user_timeout =
                std::time::Duration::from_secs(state.settings.server.tcp_user_timeout_s);
            // Each worker's blocking threads: what it can use at once is
            // one per pooled connection (reads wait their turn as futures,
            // `Db::slot`) and the password hashing slots; actix's default,
            // 512 ÷ workers, let a burst leave dozens of idle threads, each
            // with its stack and its allocator's thread heap, resident.
            let blocking_threads = state.settings.database.pool_size as usize
                + state.settings.max_concurrent_hashes()
                + 1;
            let state = state.clone();
            HttpServer::new(move || {
                App::new()
                    .app_data(web::Data::new(state.clone()))
                    .app_data(web::PayloadConfig::new(body_limit))
                    .wrap(from_fn(api::web_auth::refresh_cookie))
                    .wrap(from_fn(api::hardening::known_query_parameters))
                    .wrap(ErrorHandlers::new().default_handler(render_foreign_error))
                    .wrap(from_fn(api::fhir::operation_outcomes))
                    .wrap(from_fn(request_id))
                    .wrap(from_fn(api::hardening::security_headers))
                    .configure(api::configure)
                    .configure(api::openapi::configure_docs)
                    .configure(api::web_client::configure)
            })
            .workers(workers)
            .worker_max_blocking_threads(blocking_threads)
            .on_connect(move |conn, _| set_user_timeout(conn, user_timeout))
            // A client that closes its connection ends its request at once,
            // not at the next write to it: an event stream (which writes
            // once a heartbeat) then frees its slot and lease without
            // waiting (actix-web #1313). No client of this API half-closes.
            .h1_allow_half_closed(false)
            .shutdown_timeout(30)
            .listen(listener)?
            .run()
        };
        let metrics = match &state.settings.server.metrics_bind {
            Some(bind) => Some(metrics_server(&state, bind)?),
            None => None,
        };
        Ok(Self {
            port,
            server,
            metrics,
            state,
            shutdown,
            tasks,
            anchor,
            revocations,
            event_listener,
        })
    }

    /// The port actually bound (tests bind port 0).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The port `/metrics` is served on, when `server.metrics_bind` is set.
    pub fn metrics_port(&self) -> Option<u16> {
        self.metrics.as_ref().map(|(port, _)| *port)
    }

    /// The shared state (tests use it to reach the database).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// A handle to stop the HTTP server gracefully.
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Serves until SIGTERM/SIGINT (or the handle stops it), lets in-flight
    /// requests finish, then stops the background tasks.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        // An event stream never ends by itself: on SIGTERM/SIGINT (which
        // also starts actix's graceful stop) the hub ends them all, so the
        // stop does not wait out its timeout for them.
        let hub = self.state.events.clone();
        let closer = tokio::spawn(async move {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            let terminated = async {
                match term.as_mut() {
                    Some(term) => {
                        term.recv().await;
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminated => {}
            }
            hub.close();
        });
        let metrics = self.metrics.map(|(_, server)| {
            let handle = server.handle();
            (handle, tokio::spawn(server))
        });
        let result = self.server.await;
        closer.abort();
        self.state.events.close();
        if let Some((handle, task)) = metrics {
            handle.stop(true).await;
            let _ = task.await;
        }
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        for (stop, handle) in [self.revocations, self.event_listener]
            .into_iter()
            .flatten()
        {
            stop.store(true, Ordering::SeqCst);
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
        // Nothing audits any more: the last head is checkpointed, so that a
        // restart leaves no unanchored tail (the fsync off the async workers).
        let anchor = self.anchor;
        let _ = tokio::task::spawn_blocking(move || anchor.finish()).await;
        tracing::info!("stopped");
        result
    }
}

/// Sets `TCP_USER_TIMEOUT` on an accepted connection (`server.tcp_user_timeout_s`;
/// zero leaves the kernel's default). A client that vanished without closing
/// acknowledges nothing: its event stream's next heartbeat then fails the
/// connection after `timeout`, and the stream's slot and lease are freed,
/// instead of after the kernel's ~15 minutes of retransmissions.
fn set_user_timeout(conn: &dyn std::any::Any, timeout: std::time::Duration) {
    if timeout.is_zero() {
        return;
    }
    if let Some(tcp) = conn.downcast_ref::<actix_web::rt::net::TcpStream>()
        && let Err(err) = socket2::SockRef::from(tcp).set_tcp_user_timeout(Some(timeout))
    {
        tracing::debug!(error = %err, "could not set TCP_USER_TIMEOUT");
    }
}

/// The listener of `/metrics` alone (one worker: a scrape every few
/// seconds), apart from the API's so that it is never exposed with it.
fn metrics_server(state: &AppState, bind: &str) -> anyhow::Result<(u16, Server)> {
    let listener =
        TcpListener::bind(bind).map_err(|e| anyhow::anyhow!("server.metrics_bind {bind}: {e}"))?;
    let port = listener.local_addr()?.port();
    let state = state.clone();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(state.clone()))
            .wrap(ErrorHandlers::new().default_handler(render_foreign_error))
            .configure(api::metrics::configure)
    })
    .workers(1)
    .shutdown_timeout(5)
    .listen(listener)?
    .run();
    tracing::info!(port, "serving /metrics");
    Ok((port, server))
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// A client's own `X-Request-Id`, kept apart for correlation in the log
/// only when it is short and plain (it must not smuggle text into the log).
fn client_request_id(value: &HeaderValue) -> Option<String> {
    let text = value.to_str().ok()?;
    let ok = !text.is_empty()
        && text.len() <= 64
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    ok.then(|| text.to_owned())
}

/// Tags each request with a server-made id (returned in `X-Request-Id`) and
/// logs one line per request: method, route pattern (never the query or
/// body), status, time, and the client's own id as `client_request_id`.
async fn request_id(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let id = uuid::Uuid::now_v7().to_string();
    let client_id = req
        .headers()
        .get(&REQUEST_ID)
        .and_then(client_request_id)
        .unwrap_or_default();
    req.extensions_mut().insert(RequestId(id.clone()));
    let metrics = req
        .app_data::<web::Data<AppState>>()
        .map(|state| state.metrics.clone());
    // A fixed word (no copy of the method the client sent).
    let method = crate::metrics::method_label(req.method().as_str());
    let started = Instant::now();
    let mut res = next.call(req).await?;
    let route = crate::api::route_pattern(res.request()).unwrap_or("<unmatched>".into());
    let status = res.status().as_u16();
    let elapsed = started.elapsed().as_secs_f64();
    if let Some(metrics) = metrics {
        metrics.observe_request(method, &route, res.status().as_str(), elapsed);
    }
    tracing::info!(
        request_id = %id,
        client_request_id = %client_id,
        method,
        route = &*route,
        status,
        duration_ms = elapsed * 1000.0,
        "request"
    );
    if let Ok(value) = HeaderValue::from_str(&id) {
        res.headers_mut().insert(REQUEST_ID, value);
    }
    Ok(res)
}
