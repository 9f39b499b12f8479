//! What every handler, extractor and background task can reach: the
//! application state, built once by `startup` and shared by reference.

use std::sync::Arc;

use crate::audit::AuditWriter;
use crate::auth::cache::UserCache;
use crate::auth::password::Hasher;
use crate::auth::throttle::IpLimiter;
use crate::auth::tokens::JwtKeys;
use crate::clock::Clock;
use crate::config::Settings;
use crate::db::Db;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::net::TrustedProxies;
use crate::notify::events::Hub;
use crate::notify::outbox::OutboxSignal;
use crate::store::analgesic_page::PlanCache;
use crate::store::thread_page::ThreadPages;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub settings: Arc<Settings>,
    pub db: Db,
    pub clock: Arc<dyn Clock>,
    pub jwt: Arc<JwtKeys>,
    pub outbox: OutboxSignal,
    pub ip_limiter: Arc<IpLimiter>,
    pub audit: AuditWriter,
    /// Session and account facts checked on every request, kept at most
    /// `auth.session_cache_ms` (see `auth::cache`).
    pub users: Arc<UserCache>,
    /// Password hashing, bounded (see `auth::password`).
    pub hasher: Arc<Hasher>,
    /// Whose `X-Forwarded-For` is believed (see `net`).
    pub proxies: Arc<TrustedProxies>,
    /// What `/metrics` serves (see `metrics`).
    pub metrics: Arc<Metrics>,
    /// The configured OpenID providers (see `auth::oidc`).
    pub oidc: Arc<crate::auth::oidc::Providers>,
    /// The live event streams of this instance (see `notify::events`).
    pub events: Arc<Hub>,
    /// Parsed plan versions for the pharmacist's page, checked against the
    /// database's current version on every read (see `store::analgesic_page`).
    pub plan_cache: Arc<PlanCache>,
    /// Rendered pages of threads, checked against the database on every
    /// read (see `store::thread_page`).
    pub thread_pages: Arc<ThreadPages>,
}

impl AppState {
    /// The client address of `req`, after trusted proxies.
    pub fn client_addr(&self, req: &actix_web::HttpRequest) -> Option<std::net::IpAddr> {
        crate::net::client_addr(req, &self.proxies)
    }

    /// Counts one request from `ip` against the per-address limit
    /// (`auth.ip_requests_per_minute`); 429 when over it.
    pub fn check_ip(&self, ip: Option<std::net::IpAddr>) -> Result<(), ApiError> {
        self.ip_limiter
            .check(ip)
            .inspect_err(|_| self.metrics.rejected("ip"))
    }

    /// Counts `err` as a refusal by the sign-in limits when it is one (429).
    pub fn count_login_throttle(&self, err: &ApiError) {
        if matches!(err, ApiError::TooManyRequests { .. }) {
            self.metrics.rejected("login");
        }
    }
}

/// The id of the current request, always made here: the audit trail and
/// the logs must be able to trust it, so a client cannot choose it (and so
/// cannot make two requests share one, or forge a reference in the audit).
#[derive(Debug, Clone)]
pub struct RequestId(pub String);
