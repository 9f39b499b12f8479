//! What an operator can watch: the application's Prometheus metrics.
//!
//! One [`Metrics`] per application (never the `prometheus` crate's global
//! registry), so that two servers in one process — the tests start many —
//! count apart. The parts that count on their own threads (the database
//! writer and pool, the password hasher) own their metrics and hand them
//! to [`Metrics::register`] at start-up; the rest are here.
//!
//! Labels are bounded and never name a person: a route *pattern*
//! (`/api/v1/patients/{id}`, never the path), a method from a fixed list,
//! a status code, a fixed word. No user id, patient id, email or query.

use prometheus::core::Collector;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

/// Latency buckets for HTTP requests and database commits, in seconds
/// (1 ms to 10 s).
pub const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The methods counted by name; any other is counted as `OTHER` (a client
/// can send any token as a method: it must not mint label values).
const METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

/// A method as a label value from [`METHODS`].
pub fn method_label(method: &str) -> &'static str {
    METHODS
        .iter()
        .find(|m| **m == method)
        .copied()
        .unwrap_or("OTHER")
}

/// A histogram; the options are constants, so building it cannot fail.
pub fn histogram(name: &str, help: &str, buckets: &[f64]) -> Histogram {
    Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec()))
        .expect("valid histogram options")
}

/// An integer gauge (constant options, cannot fail).
pub fn gauge(name: &str, help: &str) -> IntGauge {
    IntGauge::new(name, help).expect("valid gauge options")
}

/// A counter family with `labels` (constant options, cannot fail).
pub fn counters(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels).expect("valid counter options")
}

/// The application's registry and the metrics the HTTP layer, the
/// scheduler and the scrape itself update.
pub struct Metrics {
    registry: Registry,
    /// Requests by `method`, `route` (pattern) and `status`.
    pub http_requests: IntCounterVec,
    /// Request latency by `method` and `route` (pattern).
    pub http_duration: HistogramVec,
    /// Requests refused by a limit, by `limit` (`ip`, `login`, `password_hash`).
    pub throttle_rejections: IntCounterVec,
    /// Scheduler ticks by `outcome` (`ok`, `error`).
    pub scheduler_ticks: IntCounterVec,
    /// How long a scheduler tick took.
    pub scheduler_duration: Histogram,
    /// Event streams open now (see [`Metrics::stream_opened`]).
    pub event_streams: IntGauge,
    /// Set at each scrape: emails waiting to be sent.
    pub outbox_pending: IntGauge,
    /// Set at each scrape: of those, the ones that failed at least once.
    pub outbox_failing: IntGauge,
    /// Set at each scrape: the age of the oldest waiting email (0: none).
    pub outbox_oldest_age: IntGauge,
    /// Set at each scrape: pooled connections in use, idle, and the most.
    pub pool_in_use: IntGauge,
    pub pool_idle: IntGauge,
    pub pool_max: IntGauge,
    /// Set at each scrape: sign-ins hashing now, waiting, and the slots.
    pub hash_in_use: IntGauge,
    pub hash_waiting: IntGauge,
    pub hash_slots: IntGauge,
}

/// Counts an open event stream until dropped (see [`Metrics::stream_opened`]).
#[must_use = "the stream counts as open until this guard is dropped"]
pub struct OpenStream(IntGauge);

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry holding the metrics of this module.
    pub fn new() -> Self {
        let metrics = Self {
            registry: Registry::new(),
            http_requests: counters(
                "relais_http_requests_total",
                "HTTP requests answered, by method, route pattern and status",
                &["method", "route", "status"],
            ),
            http_duration: HistogramVec::new(
                HistogramOpts::new(
                    "relais_http_request_duration_seconds",
                    "HTTP request latency, by method and route pattern",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
                &["method", "route"],
            )
            .expect("valid histogram options"),
            throttle_rejections: counters(
                "relais_throttle_rejections_total",
                "Requests refused by a limit (ip: per-address rate, login: failed sign-ins, \
                 password_hash: hashing queue full)",
                &["limit"],
            ),
            scheduler_ticks: counters(
                "relais_scheduler_ticks_total",
                "Scheduler ticks, by outcome",
                &["outcome"],
            ),
            scheduler_duration: histogram(
                "relais_scheduler_tick_duration_seconds",
                "How long a scheduler tick took",
                LATENCY_BUCKETS,
            ),
            event_streams: gauge("relais_event_streams_open", "Event streams open now"),
            outbox_pending: gauge("relais_outbox_pending", "Emails waiting in the outbox"),
            outbox_failing: gauge(
                "relais_outbox_failing",
                "Emails waiting in the outbox that failed at least once",
            ),
            outbox_oldest_age: gauge(
                "relais_outbox_oldest_pending_age_seconds",
                "Age of the oldest email waiting in the outbox (0 when none)",
            ),
            pool_in_use: gauge(
                "relais_db_pool_connections_in_use",
                "Pooled database connections in use",
            ),
            pool_idle: gauge(
                "relais_db_pool_connections_idle",
                "Pooled database connections open and idle",
            ),
            pool_max: gauge(
                "relais_db_pool_connections_max",
                "The most pooled database connections (database.pool_size)",
            ),
            hash_in_use: gauge(
                "relais_password_hash_in_use",
                "Password hashing slots computing now",
            ),
            hash_waiting: gauge(
                "relais_password_hash_waiting",
                "Sign-ins waiting for a password hashing slot",
            ),
            hash_slots: gauge(
                "relais_password_hash_slots",
                "Password hashing slots (auth.max_concurrent_hashes)",
            ),
        };
        let own: Vec<Box<dyn Collector>> = vec![
            Box::new(metrics.http_requests.clone()),
            Box::new(metrics.http_duration.clone()),
            Box::new(metrics.throttle_rejections.clone()),
            Box::new(metrics.scheduler_ticks.clone()),
            Box::new(metrics.scheduler_duration.clone()),
            Box::new(metrics.event_streams.clone()),
            Box::new(metrics.outbox_pending.clone()),
            Box::new(metrics.outbox_failing.clone()),
            Box::new(metrics.outbox_oldest_age.clone()),
            Box::new(metrics.pool_in_use.clone()),
            Box::new(metrics.pool_idle.clone()),
            Box::new(metrics.pool_max.clone()),
            Box::new(metrics.hash_in_use.clone()),
            Box::new(metrics.hash_waiting.clone()),
            Box::new(metrics.hash_slots.clone()),
        ];
        metrics.register(own);
        metrics
    }

    /// Adds metrics another part owns (the writer's, the pool's).
    pub fn register(&self, collectors: Vec<Box<dyn Collector>>) {
        for collector in collectors {
            if let Err(err) = self.registry.register(collector) {
                // A name registered twice: a programming error, seen in tests.
                tracing::error!(error = %err, "metrics: registering failed");
            }
        }
    }

    /// Counts one answered request.
    pub fn observe_request(&self, method: &str, route: &str, status: &str, seconds: f64) {
        let method = method_label(method);
        self.http_requests
            .with_label_values(&[method, route, status])
            .inc();
        self.http_duration
            .with_label_values(&[method, route])
            .observe(seconds);
    }

    /// Counts one request refused by `limit` (a fixed word).
    pub fn rejected(&self, limit: &'static str) {
        self.throttle_rejections.with_label_values(&[limit]).inc();
    }

    /// Counts an event stream as open until the guard is dropped:
    /// `let _open = state.metrics.stream_opened();` at the top of the
    /// stream's task (dropped with the task, however it ends).
    pub fn stream_opened(&self) -> OpenStream {
        self.event_streams.inc();
        OpenStream(self.event_streams.clone())
    }

    /// Everything registered, in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = Vec::new();
        if let Err(err) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %err, "metrics: encoding failed");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

/// The content type of [`Metrics::encode`]'s text.
pub const CONTENT_TYPE: &str = prometheus::TEXT_FORMAT;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_outside_the_list_share_one_label() {
        assert_eq!(method_label("GET"), "GET");
        assert_eq!(method_label("BREW"), "OTHER");
        assert_eq!(method_label("get"), "OTHER");
    }

    #[test]
    fn requests_and_streams_are_counted() {
        let metrics = Metrics::new();
        metrics.observe_request("GET", "/api/v1/patients/{id}", "200", 0.003);
        metrics.observe_request("FOO", "<unmatched>", "404", 0.001);
        {
            let _a = metrics.stream_opened();
            let _b = metrics.stream_opened();
            assert_eq!(metrics.event_streams.get(), 2);
        }
        assert_eq!(metrics.event_streams.get(), 0);
        let text = metrics.encode();
        assert!(
            text.contains(
                r#"relais_http_requests_total{method="GET",route="/api/v1/patients/{id}",status="200"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains(r#"method="OTHER""#), "{text}");
        assert!(text.contains("relais_event_streams_open 0"), "{text}");
    }

    #[test]
    fn two_registries_count_apart() {
        let (a, b) = (Metrics::new(), Metrics::new());
        a.rejected("ip");
        assert!(
            a.encode()
                .contains(r#"relais_throttle_rejections_total{limit="ip"} 1"#)
        );
        assert!(!b.encode().contains(r#"limit="ip"} 1"#));
    }
}
