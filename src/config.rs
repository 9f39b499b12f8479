//! Layered configuration: embedded defaults, `config/default.toml`,
//! `config/<RELAIS_ENV>.toml`, then `RELAIS__SECTION__KEY` variables.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::{Deserialize, Serialize};

pub use crate::telemetry::LogFormat;

/// The defaults shipped with the binary (the same text as `config/default.toml`).
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

/// A configuration problem that stops start-up; the message names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration {0}")]
    Load(String),
    #[error("configuration key `{key}`: {message}")]
    Invalid { key: &'static str, message: String },
    #[error("configuration key `{key}`: {message}")]
    Dynamic { key: String, message: String },
    #[error("configuration: RELAIS_ENV={env} but {path} does not exist")]
    MissingEnvFile { env: String, path: String },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub auth: AuthSettings,
    pub email: EmailSettings,
    pub consultations: ConsultationSettings,
    pub handovers: HandoverSettings,
    pub scheduler: SchedulerSettings,
    pub audit: AuditSettings,
    pub network: NetworkSettings,
    pub log: LogSettings,
    pub events: EventSettings,
}

/// Logging.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub format: LogFormat,
}

/// The live event stream (`GET /api/v1/events`, `notify::events`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventSettings {
    /// Streams one user may hold open on one instance at once.
    pub max_streams_per_user: usize,
    /// Seconds between heartbeat comments on an idle stream.
    pub heartbeat_s: u64,
    /// Hours an event is kept for replay with `Last-Event-ID`.
    pub retention_h: u32,
    /// Events waiting for one slow client before it is dropped.
    pub buffer: usize,
}

/// The audit chain's checkpoints outside the database (`audit::anchor`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSettings {
    /// At most one signed checkpoint of the chain's head per this many
    /// milliseconds: rows younger than that can be removed unseen.
    pub checkpoint_interval_ms: u64,
}

/// The care network as a whole.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSettings {
    /// The IANA name of the network's time zone: it decides what "today"
    /// is (the pharmacist's page, the lines and changes in force, birth
    /// dates, the digest's day and hour). A care network lives by its
    /// local day, not by UTC's, which turns at 01:00 or 02:00 in France.
    pub time_zone: String,
}

/// Due times of consultation requests.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsultationSettings {
    pub urgent_due_h: u32,
    pub routine_due_h: u32,
    /// The longest a consultation opens its patient to the centre, in days
    /// after submission (the basis ends sooner when it is closed, cancelled
    /// or declined).
    pub basis_max_days: u32,
}

/// Due time of handover acknowledgement.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HandoverSettings {
    pub acknowledge_due_h: u32,
}

/// The in-process scheduler: daily digests, purging expired idempotency keys.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchedulerSettings {
    /// How often it looks for due work, in milliseconds.
    pub tick_ms: u64,
    /// The hour (0–23, in `network.time_zone`) from which each day's digest is sent.
    pub digest_hour: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    pub bind: String,
    pub public_url: String,
    pub data_dir: PathBuf,
    pub workers: usize,
    pub max_body_bytes: usize,
    /// Proxies (CIDRs or addresses) whose `X-Forwarded-For` is believed.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// Where `/metrics` is served (its own listener); unset: nowhere.
    #[serde(default)]
    pub metrics_bind: Option<String>,
    /// `TCP_USER_TIMEOUT` of accepted connections: how long data sent may
    /// stay unacknowledged before the connection fails (a client gone
    /// without closing, whose event stream's next heartbeat then frees its
    /// slot); 0: the kernel's default (retransmissions for ~15 minutes).
    pub tcp_user_timeout_s: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    pub url: String,
    pub pool_size: u32,
    /// Parsed plan versions kept for the pharmacist's page (0: none).
    pub plan_cache_entries: usize,
    /// About how many bytes they may take (0: none).
    pub plan_cache_bytes: u64,
    /// About how many bytes of rendered thread pages are kept (0: none).
    pub thread_page_cache_bytes: u64,
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    #[serde(default)]
    pub jwt_secret: Option<String>,
    pub access_token_ttl_s: u64,
    pub refresh_token_ttl_s: u64,
    pub invitation_ttl_s: u64,
    pub emergency_access_ttl_s: u64,
    pub jwt_leeway_s: u64,
    pub login_max_failures: u32,
    pub login_failure_window_s: u64,
    /// Failed sign-ins per account from all addresses within its window.
    pub login_account_max_failures: u32,
    pub login_account_window_s: u64,
    pub ip_requests_per_minute: u32,
    /// Argon2 computations at once; 0 means one per CPU core.
    pub max_concurrent_hashes: usize,
    /// How long a sign-in waits for a hashing slot before 503.
    pub hash_queue_wait_ms: u64,
    /// How many sign-ins may wait for a slot; beyond, 503 at once.
    pub hash_queue_max: usize,
    /// How long this instance trusts what it read of a session and its
    /// user (0: every request reads the database).
    pub session_cache_ms: u64,
    /// Roles whose password sign-ins need a TOTP second factor: such a
    /// user without one gets a token limited to enrolling it.
    #[serde(default)]
    pub require_mfa_roles: Vec<crate::domain::role::Role>,
    /// OpenID Connect providers, and where sign-ins may return to.
    #[serde(default)]
    pub oidc: OidcSettings,
}

/// OpenID Connect sign-in (`auth.oidc`): the client redirect URIs allowed,
/// and one table per provider, `auth.oidc.<name>`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct OidcSettings {
    /// Exact URIs a sign-in may hand its one-time code back to.
    #[serde(default)]
    pub allowed_redirects: Vec<String>,
    /// How long a begun sign-in (state, nonce, PKCE verifier) stays usable.
    #[serde(default = "default_flow_ttl_s")]
    pub flow_ttl_s: u64,
    /// The providers, by the name used in their routes.
    #[serde(flatten)]
    pub providers: std::collections::BTreeMap<String, OidcProvider>,
}

fn default_flow_ttl_s() -> u64 {
    300
}

/// One OpenID provider (`auth.oidc.<name>`).
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcProvider {
    /// Its issuer: discovery reads `<issuer>/.well-known/openid-configuration`.
    pub issuer: String,
    /// Where to read discovery instead (Pro Santé Connect publishes its
    /// wallet's at `<issuer>/.well-known/wallet-openid-configuration`).
    #[serde(default)]
    pub discovery_url: Option<String>,
    pub client_id: String,
    pub client_secret: String,
    /// Scopes asked for; `openid` is always asked.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// The claim (ID token, else userinfo) that carries the RPPS number,
    /// plain (11 digits) or as a national id (`8` + RPPS). Unset: accounts
    /// are found only by a subject already linked to them.
    #[serde(default)]
    pub subject_claim: Option<String>,
    /// When set, the ID token's `acr` must be one of these.
    #[serde(default)]
    pub required_acr: Vec<String>,
}

impl std::fmt::Debug for OidcProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcProvider")
            .field("issuer", &self.issuer)
            .field("discovery_url", &self.discovery_url)
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("scopes", &self.scopes)
            .field("subject_claim", &self.subject_claim)
            .field("required_acr", &self.required_acr)
            .finish()
    }
}

/// Whether `url` is plain HTTP to this machine (allowed for tests and
/// development; anything else must use HTTPS).
fn is_loopback_http(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
    matches!(host, "127.0.0.1" | "localhost" | "[::1]")
}

impl OidcSettings {
    /// Checks every provider and redirect; the error names the key.
    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: &str| ConfigError::Dynamic {
            key: format!("auth.oidc.{key}"),
            message: message.to_owned(),
        };
        if !(30..=3600).contains(&self.flow_ttl_s) {
            return Err(invalid("flow_ttl_s", "must be 30 to 3600 seconds"));
        }
        for uri in &self.allowed_redirects {
            if !(uri.starts_with("https://") || is_loopback_http(uri))
                || uri.contains('#')
                || uri.len() > MAX_REDIRECT_LEN
            {
                return Err(invalid(
                    "allowed_redirects",
                    "each must be an https URL (http only to loopback), without a fragment, \
                     at most 2000 characters",
                ));
            }
        }
        for (name, provider) in &self.providers {
            if name.is_empty()
                || name.len() > 32
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            {
                return Err(invalid(
                    name,
                    "a provider name is 1 to 32 lowercase letters, digits or '-'",
                ));
            }
            let issuer = provider.issuer.trim_end_matches('/');
            if !(issuer.starts_with("https://") || is_loopback_http(issuer)) {
                return Err(invalid(
                    &format!("{name}.issuer"),
                    "expected an https URL (http only to loopback)",
                ));
            }
            if let Some(url) = &provider.discovery_url
                && !(url.starts_with("https://") || is_loopback_http(url))
            {
                return Err(invalid(
                    &format!("{name}.discovery_url"),
                    "expected an https URL (http only to loopback)",
                ));
            }
            if provider.client_id.is_empty() {
                return Err(invalid(&format!("{name}.client_id"), "must not be empty"));
            }
            if provider.client_secret.is_empty() {
                return Err(invalid(
                    &format!("{name}.client_secret"),
                    "must not be empty",
                ));
            }
            if provider.subject_claim.as_deref() == Some("") {
                return Err(invalid(
                    &format!("{name}.subject_claim"),
                    "must not be empty when set",
                ));
            }
        }
        Ok(())
    }
}

/// The longest redirect URI accepted (configuration and requests).
pub const MAX_REDIRECT_LEN: usize = 2000;

// Hand-written so that the secret can never reach a log through `{:?}`.
impl std::fmt::Debug for AuthSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthSettings")
            .field(
                "jwt_secret",
                &self.jwt_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("access_token_ttl_s", &self.access_token_ttl_s)
            .field("refresh_token_ttl_s", &self.refresh_token_ttl_s)
            .field("invitation_ttl_s", &self.invitation_ttl_s)
            .field("max_concurrent_hashes", &self.max_concurrent_hashes)
            .field("session_cache_ms", &self.session_cache_ms)
            .field("require_mfa_roles", &self.require_mfa_roles)
            .field("oidc", &self.oidc)
            .finish_non_exhaustive()
    }
}

/// How emails leave the outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EmailTransport {
    Smtp,
    File,
    Log,
}

/// Transport security towards the SMTP relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmtpTls {
    None,
    Starttls,
    Tls,
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailSettings {
    pub transport: EmailTransport,
    pub smtp_host: String,
    pub smtp_port: u16,
    pub smtp_tls: SmtpTls,
    #[serde(default)]
    pub smtp_username: Option<String>,
    #[serde(default)]
    pub smtp_password: Option<String>,
    pub from: String,
    pub poll_interval_ms: u64,
    pub retry_base_ms: u64,
    pub retry_max_ms: u64,
}

impl std::fmt::Debug for EmailSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmailSettings")
            .field("transport", &self.transport)
            .field("smtp_host", &self.smtp_host)
            .field("smtp_port", &self.smtp_port)
            .field("smtp_tls", &self.smtp_tls)
            .finish_non_exhaustive()
    }
}

/// One line per problem, each naming the key and where its value came from.
fn describe(error: figment::Error) -> ConfigError {
    let lines: Vec<String> = error
        .into_iter()
        .map(|e| {
            let key = e.path.join(".").to_lowercase();
            let source = e
                .metadata
                .as_ref()
                .map(|m| format!(" (from {})", m.name))
                .unwrap_or_default();
            if key.is_empty() {
                format!("{}{source}", e.kind)
            } else {
                format!("key `{key}`: {}{source}", e.kind)
            }
        })
        .collect();
    ConfigError::Load(lines.join("; "))
}

impl Settings {
    /// Loads the layered configuration from the working directory and environment.
    pub fn load() -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Toml::string(DEFAULT_TOML));
        let base = Path::new("config/default.toml");
        if base.exists() {
            figment = figment.merge(Toml::file(base));
        }
        if let Ok(env) = std::env::var("RELAIS_ENV") {
            let path = format!("config/{env}.toml");
            if !Path::new(&path).exists() {
                return Err(ConfigError::MissingEnvFile { env, path });
            }
            figment = figment.merge(Toml::file(path));
        }
        figment = figment.merge(Env::prefixed("RELAIS__").split("__"));
        Self::from_figment(figment)
    }

    /// The embedded defaults alone (tests start from these).
    pub fn defaults() -> Result<Self, ConfigError> {
        Self::from_figment(Figment::from(Toml::string(DEFAULT_TOML)))
    }

    fn from_figment(figment: Figment) -> Result<Self, ConfigError> {
        let settings: Settings = figment.extract().map_err(describe)?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks the values serde cannot, naming the key at fault.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, message: &str| {
            Err(ConfigError::Invalid {
                key,
                message: message.to_owned(),
            })
        };
        if self.server.bind.parse::<SocketAddr>().is_err() {
            return invalid("server.bind", "expected an address such as 127.0.0.1:8080");
        }
        let url = &self.server.public_url;
        if !(url.starts_with("http://") || url.starts_with("https://")) || url.ends_with('/') {
            return invalid(
                "server.public_url",
                "expected an http(s) URL without a trailing slash",
            );
        }
        if let Some(metrics) = &self.server.metrics_bind {
            let Ok(address) = metrics.parse::<SocketAddr>() else {
                return invalid(
                    "server.metrics_bind",
                    "expected an address such as 127.0.0.1:9464",
                );
            };
            if address.port() != 0 && self.server.bind.parse::<SocketAddr>().ok() == Some(address) {
                return invalid(
                    "server.metrics_bind",
                    "must differ from server.bind: /metrics is never served on the API's port",
                );
            }
        }
        if self.server.max_body_bytes < 1024 {
            return invalid("server.max_body_bytes", "must be at least 1024");
        }
        if crate::db::Backend::from_url(&self.database.url).is_none() {
            return invalid(
                "database.url",
                "expected sqlite://PATH or postgres://… (postgresql:// also accepted)",
            );
        }
        if self.database.pool_size == 0 {
            return invalid("database.pool_size", "must be at least 1");
        }
        if self.database.plan_cache_bytes > 1 << 30 {
            return invalid(
                "database.plan_cache_bytes",
                "must be at most 1073741824 (1 GiB)",
            );
        }
        if self.database.thread_page_cache_bytes > 1 << 30 {
            return invalid(
                "database.thread_page_cache_bytes",
                "must be at most 1073741824 (1 GiB)",
            );
        }
        if let Some(secret) = &self.auth.jwt_secret
            && secret.len() < 32
        {
            return invalid("auth.jwt_secret", "must be at least 32 characters");
        }
        if self.auth.access_token_ttl_s < 60 {
            return invalid("auth.access_token_ttl_s", "must be at least 60");
        }
        if self.auth.refresh_token_ttl_s < self.auth.access_token_ttl_s {
            return invalid(
                "auth.refresh_token_ttl_s",
                "must not be shorter than auth.access_token_ttl_s",
            );
        }
        if self.auth.emergency_access_ttl_s < 60 {
            return invalid("auth.emergency_access_ttl_s", "must be at least 60");
        }
        if self.auth.invitation_ttl_s == 0 {
            return invalid("auth.invitation_ttl_s", "must be positive");
        }
        if self.auth.login_max_failures == 0 {
            return invalid("auth.login_max_failures", "must be at least 1");
        }
        if self.auth.login_failure_window_s == 0 {
            return invalid("auth.login_failure_window_s", "must be positive");
        }
        if !(10..=60_000).contains(&self.audit.checkpoint_interval_ms) {
            return invalid(
                "audit.checkpoint_interval_ms",
                "must be between 10 and 60000",
            );
        }
        if self.auth.login_account_max_failures < self.auth.login_max_failures {
            return invalid(
                "auth.login_account_max_failures",
                "must be at least auth.login_max_failures",
            );
        }
        if self.auth.login_account_window_s == 0 {
            return invalid("auth.login_account_window_s", "must be positive");
        }
        if self.auth.max_concurrent_hashes > 256 {
            return invalid(
                "auth.max_concurrent_hashes",
                "must be at most 256 (each takes 19 MiB)",
            );
        }
        if !(1..=60_000).contains(&self.auth.hash_queue_wait_ms) {
            return invalid("auth.hash_queue_wait_ms", "must be 1 to 60000");
        }
        if self.auth.hash_queue_max > 100_000 {
            return invalid("auth.hash_queue_max", "must be at most 100000");
        }
        if !(1..=100).contains(&self.events.max_streams_per_user) {
            return invalid("events.max_streams_per_user", "must be between 1 and 100");
        }
        if !(1..=300).contains(&self.events.heartbeat_s) {
            return invalid("events.heartbeat_s", "must be between 1 and 300");
        }
        if !(1..=24 * 90).contains(&self.events.retention_h) {
            return invalid("events.retention_h", "must be between 1 and 2160 (90 days)");
        }
        if !(8..=65_536).contains(&self.events.buffer) {
            return invalid("events.buffer", "must be between 8 and 65536");
        }
        if self.auth.session_cache_ms > 60_000 {
            return invalid("auth.session_cache_ms", "must be at most 60000");
        }
        if let Err(message) = crate::net::TrustedProxies::parse(&self.server.trusted_proxies) {
            return invalid("server.trusted_proxies", &message);
        }
        self.auth.oidc.validate()?;
        if self.auth.ip_requests_per_minute == 0 {
            return invalid("auth.ip_requests_per_minute", "must be at least 1");
        }
        if self.email.from.parse::<lettre::message::Mailbox>().is_err() {
            return invalid(
                "email.from",
                "expected a mailbox such as Relais <no-reply@example.org>",
            );
        }
        if self.email.transport == EmailTransport::Smtp && self.email.smtp_host.trim().is_empty() {
            return invalid(
                "email.smtp_host",
                "required when email.transport = \"smtp\"",
            );
        }
        if self.email.smtp_username.is_some() != self.email.smtp_password.is_some() {
            return invalid(
                "email.smtp_password",
                "email.smtp_username and email.smtp_password go together",
            );
        }
        if self.email.poll_interval_ms == 0 {
            return invalid("email.poll_interval_ms", "must be positive");
        }
        if self.email.retry_base_ms == 0 || self.email.retry_max_ms < self.email.retry_base_ms {
            return invalid(
                "email.retry_max_ms",
                "retry_base_ms must be positive and retry_max_ms at least retry_base_ms",
            );
        }
        for (key, hours) in [
            (
                "consultations.urgent_due_h",
                self.consultations.urgent_due_h,
            ),
            (
                "consultations.routine_due_h",
                self.consultations.routine_due_h,
            ),
            (
                "handovers.acknowledge_due_h",
                self.handovers.acknowledge_due_h,
            ),
        ] {
            if !(1..=24 * 30).contains(&hours) {
                return invalid(key, "must be 1 to 720 hours");
            }
        }
        if !(1..=365).contains(&self.consultations.basis_max_days) {
            return invalid("consultations.basis_max_days", "must be 1 to 365 days");
        }
        if self.server.tcp_user_timeout_s > 3600 {
            return invalid(
                "server.tcp_user_timeout_s",
                "must be at most 3600 seconds (0: the kernel's default)",
            );
        }
        if !(10..=3_600_000).contains(&self.scheduler.tick_ms) {
            return invalid(
                "scheduler.tick_ms",
                "must be between 10 and 3600000 (one hour)",
            );
        }
        if self.scheduler.digest_hour > 23 {
            return invalid("scheduler.digest_hour", "must be an hour from 0 to 23");
        }
        if self.network.time_zone.parse::<chrono_tz::Tz>().is_err() {
            return invalid(
                "network.time_zone",
                "expected an IANA time zone name such as Europe/Paris",
            );
        }
        Ok(())
    }

    /// The effective settings as TOML, every secret replaced by
    /// `"<redacted>"` (`relais config check`): keys named `*secret`,
    /// `*password` or `*_key`, and the password in any URL.
    pub fn redacted_toml(&self) -> Result<String, ConfigError> {
        let mut value =
            toml::Value::try_from(self).map_err(|e| ConfigError::Load(e.to_string()))?;
        redact(&mut value);
        toml::to_string_pretty(&value).map_err(|e| ConfigError::Load(e.to_string()))
    }

    /// The network's time zone (`network.time_zone`, checked at start-up).
    pub fn time_zone(&self) -> chrono_tz::Tz {
        self.network
            .time_zone
            .parse()
            .unwrap_or(chrono_tz::Europe::Paris)
    }

    /// How many Argon2 computations may run at once.
    pub fn max_concurrent_hashes(&self) -> usize {
        if self.auth.max_concurrent_hashes == 0 {
            std::thread::available_parallelism().map_or(2, usize::from)
        } else {
            self.auth.max_concurrent_hashes
        }
    }

    /// The number of HTTP workers to start.
    pub fn workers(&self) -> usize {
        if self.server.workers == 0 {
            std::thread::available_parallelism().map_or(2, usize::from)
        } else {
            self.server.workers
        }
    }
}

/// Whether a key's value is a secret (never printed).
fn is_secret_key(key: &str) -> bool {
    key.ends_with("secret") || key.ends_with("password") || key.ends_with("_key")
}

/// The `user:password@` of a URL with its password replaced.
fn redact_url(text: &str) -> Option<String> {
    let (scheme, rest) = text.split_once("://")?;
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let at = rest[..authority_end].rfind('@')?;
    let (user, _password) = rest[..at].split_once(':')?;
    Some(format!("{scheme}://{user}:<redacted>{}", &rest[at..]))
}

fn redact(value: &mut toml::Value) {
    match value {
        toml::Value::Table(table) => {
            for (key, value) in table.iter_mut() {
                if is_secret_key(key) {
                    *value = toml::Value::String("<redacted>".into());
                } else {
                    redact(value);
                }
            }
        }
        toml::Value::Array(items) => items.iter_mut().for_each(redact),
        toml::Value::String(text) => {
            if let Some(redacted) = redact_url(text) {
                *text = redacted;
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let settings = Settings::defaults().expect("defaults load");
        assert_eq!(settings.server.bind, "127.0.0.1:8080");
        assert_eq!(settings.auth.access_token_ttl_s, 900);
    }

    #[test]
    fn unknown_key_is_named() {
        let figment = Figment::from(Toml::string(DEFAULT_TOML))
            .merge(Toml::string("[server]\nbindd = \"x\""));
        let err = Settings::from_figment(figment).unwrap_err().to_string();
        assert!(err.contains("bindd"), "{err}");
    }

    #[test]
    fn invalid_value_is_named() {
        let figment = Figment::from(Toml::string(DEFAULT_TOML))
            .merge(Toml::string("[email]\nsmtp_tls = \"sometimes\""));
        let err = Settings::from_figment(figment).unwrap_err().to_string();
        assert!(err.contains("smtp_tls"), "{err}");

        let figment = Figment::from(Toml::string(DEFAULT_TOML))
            .merge(Toml::string("[server]\nbind = \"nowhere\""));
        let err = Settings::from_figment(figment).unwrap_err().to_string();
        assert!(err.contains("server.bind"), "{err}");

        for (section, bad, key) in [
            (
                "server",
                "trusted_proxies = [\"10.0.0.0/33\"]",
                "server.trusted_proxies",
            ),
            (
                "auth",
                "max_concurrent_hashes = 1000",
                "auth.max_concurrent_hashes",
            ),
            ("auth", "hash_queue_wait_ms = 0", "auth.hash_queue_wait_ms"),
            (
                "auth",
                "login_account_max_failures = 1",
                "auth.login_account_max_failures",
            ),
        ] {
            let figment = Figment::from(Toml::string(DEFAULT_TOML))
                .merge(Toml::string(&format!("[{section}]\n{bad}")));
            let err = Settings::from_figment(figment).unwrap_err().to_string();
            assert!(err.contains(key), "{err}");
        }
        for bad in ["tick_ms = 0", "tick_ms = 3600001", "digest_hour = 24"] {
            let figment = Figment::from(Toml::string(DEFAULT_TOML))
                .merge(Toml::string(&format!("[scheduler]\n{bad}")));
            let err = Settings::from_figment(figment).unwrap_err().to_string();
            let key = bad.split(' ').next().unwrap();
            assert!(err.contains(&format!("scheduler.{key}")), "{err}");
        }
        let figment =
            Figment::from(Toml::string(DEFAULT_TOML)).merge(Toml::string("[scheduler]\ntick = 5"));
        let err = Settings::from_figment(figment).unwrap_err().to_string();
        assert!(err.contains("tick"), "{err}");
    }

    #[test]
    fn the_time_zone_is_checked_and_named() {
        let settings = Settings::defaults().unwrap();
        assert_eq!(settings.time_zone(), chrono_tz::Europe::Paris);
        for bad in ["Europe/Pariss", "CET+1", ""] {
            let figment = Figment::from(Toml::string(DEFAULT_TOML))
                .merge(Toml::string(&format!("[network]\ntime_zone = \"{bad}\"")));
            let err = Settings::from_figment(figment).unwrap_err().to_string();
            assert!(err.contains("network.time_zone"), "{err}");
        }
        let figment = Figment::from(Toml::string(DEFAULT_TOML))
            .merge(Toml::string("[network]\ntime_zone = \"America/Cayenne\""));
        let settings = Settings::from_figment(figment).unwrap();
        assert_eq!(settings.time_zone(), chrono_tz::America::Cayenne);
    }

    #[test]
    fn the_printed_settings_hide_every_secret() {
        let mut settings = Settings::defaults().unwrap();
        settings.auth.jwt_secret = Some("s3cr3t-s3cr3t-s3cr3t-s3cr3t-s3cr3t".into());
        settings.email.smtp_username = Some("relay-user".into());
        settings.email.smtp_password = Some("p4ssw0rd-of-the-relay".into());
        settings.database.url = "postgres://relais:db-p4ss@db.example:5432/relais".into();
        let text = settings.redacted_toml().unwrap();
        for secret in ["s3cr3t", "p4ssw0rd", "db-p4ss"] {
            assert!(!text.contains(secret), "{secret} in\n{text}");
        }
        assert!(text.contains("jwt_secret = \"<redacted>\""), "{text}");
        assert!(
            text.contains("postgres://relais:<redacted>@db.example:5432/relais"),
            "{text}"
        );
        // Not secrets: shown as they are.
        assert!(text.contains("relay-user"), "{text}");
        assert!(text.contains("access_token_ttl_s = 900"), "{text}");
        // It reads back as the same settings, the secrets aside.
        let back: toml::Value = toml::from_str(&text).unwrap();
        assert_eq!(back["server"]["bind"].as_str(), Some("127.0.0.1:8080"));
        assert_eq!(redact_url("sqlite://data/relais.db"), None);
        assert_eq!(redact_url("https://user@host/x"), None);
    }

    #[test]
    fn metrics_bind_is_checked_and_never_the_api_port() {
        for (bad, why) in [
            ("nowhere", "expected an address"),
            ("127.0.0.1:8080", "must differ from server.bind"),
        ] {
            let figment = Figment::from(Toml::string(DEFAULT_TOML))
                .merge(Toml::string(&format!("[server]\nmetrics_bind = \"{bad}\"")));
            let err = Settings::from_figment(figment).unwrap_err().to_string();
            assert!(
                err.contains("server.metrics_bind") && err.contains(why),
                "{err}"
            );
        }
        let figment = Figment::from(Toml::string(DEFAULT_TOML))
            .merge(Toml::string("[server]\nmetrics_bind = \"127.0.0.1:9464\""));
        let settings = Settings::from_figment(figment).unwrap();
        assert_eq!(
            settings.server.metrics_bind.as_deref(),
            Some("127.0.0.1:9464")
        );
        assert_eq!(Settings::defaults().unwrap().server.metrics_bind, None);
        let figment = Figment::from(Toml::string(DEFAULT_TOML))
            .merge(Toml::string("[log]\nformat = \"xml\""));
        let err = Settings::from_figment(figment).unwrap_err().to_string();
        assert!(err.contains("log.format"), "{err}");
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let mut settings = Settings::defaults().unwrap();
        settings.auth.jwt_secret = Some("s3cr3t-s3cr3t-s3cr3t-s3cr3t-s3cr3t".into());
        assert!(!format!("{settings:?}").contains("s3cr3t"));
    }

    const PSC: &str = r#"
[auth]
require_mfa_roles = ["admin", "gp"]
[auth.oidc]
allowed_redirects = ["https://relais.example.org/app/signed-in"]
[auth.oidc.psc]
issuer = "https://auth.bas.psc.esante.gouv.fr/auth/realms/esante-wallet"
discovery_url = "https://auth.bas.psc.esante.gouv.fr/auth/realms/esante-wallet/.well-known/wallet-openid-configuration"
client_id = "relais"
client_secret = "psc-s3cr3t"
scopes = ["openid", "scope_all"]
subject_claim = "SubjectNameID"
required_acr = ["eidas1"]
"#;

    #[test]
    fn oidc_providers_are_tables_under_auth_oidc() {
        let figment = Figment::from(Toml::string(DEFAULT_TOML)).merge(Toml::string(PSC));
        let settings = Settings::from_figment(figment).unwrap();
        let psc = &settings.auth.oidc.providers["psc"];
        assert_eq!(psc.subject_claim.as_deref(), Some("SubjectNameID"));
        assert_eq!(psc.required_acr, ["eidas1"]);
        assert_eq!(settings.auth.oidc.flow_ttl_s, 300);
        assert_eq!(
            settings.auth.require_mfa_roles,
            [
                crate::domain::role::Role::Admin,
                crate::domain::role::Role::Gp
            ]
        );
        assert!(!format!("{settings:?}").contains("psc-s3cr3t"));
    }

    #[test]
    fn bad_oidc_settings_are_named() {
        for (bad, key) in [
            ("issuer = \"http://idp.example\"", "auth.oidc.psc.issuer"),
            ("client_secret = \"\"", "auth.oidc.psc.client_secret"),
            ("discovery_url = \"ftp://x\"", "auth.oidc.psc.discovery_url"),
            ("subject_claim = \"\"", "auth.oidc.psc.subject_claim"),
        ] {
            let config = PSC.replace("scopes =", &format!("{bad}\nscopes ="));
            let config = if bad.starts_with("issuer") {
                config.replace(
                    "issuer = \"https://auth.bas.psc.esante.gouv.fr/auth/realms/esante-wallet\"\n",
                    "",
                )
            } else if bad.starts_with("client_secret") {
                config.replace("client_secret = \"psc-s3cr3t\"\n", "")
            } else if bad.starts_with("discovery_url") {
                config.replace("discovery_url = \"https://auth.bas.psc.esante.gouv.fr/auth/realms/esante-wallet/.well-known/wallet-openid-configuration\"\n", "")
            } else {
                config.replace("subject_claim = \"SubjectNameID\"\n", "")
            };
            let figment = Figment::from(Toml::string(DEFAULT_TOML)).merge(Toml::string(&config));
            let err = Settings::from_figment(figment).unwrap_err().to_string();
            assert!(err.contains(key), "{bad}: {err}");
        }
        for (bad, key) in [
            (
                "allowed_redirects = [\"http://app.example/cb\"]",
                "auth.oidc.allowed_redirects",
            ),
            (
                "allowed_redirects = [\"https://app.example/cb#x\"]",
                "auth.oidc.allowed_redirects",
            ),
            ("flow_ttl_s = 5", "auth.oidc.flow_ttl_s"),
        ] {
            let config = PSC.replace(
                "allowed_redirects = [\"https://relais.example.org/app/signed-in\"]",
                bad,
            );
            let figment = Figment::from(Toml::string(DEFAULT_TOML)).merge(Toml::string(&config));
            let err = Settings::from_figment(figment).unwrap_err().to_string();
            assert!(err.contains(key), "{bad}: {err}");
        }
        // A provider named against the rules.
        let config = PSC.replace("[auth.oidc.psc]", "[auth.oidc.PSC]");
        let figment = Figment::from(Toml::string(DEFAULT_TOML)).merge(Toml::string(&config));
        let err = Settings::from_figment(figment).unwrap_err().to_string();
        assert!(err.contains("auth.oidc.PSC"), "{err}");
    }
}
