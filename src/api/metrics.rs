//! `/metrics`: the Prometheus scrape, served only on `server.metrics_bind`
//! (its own listener, see `startup`), never on the API's port.

use actix_web::{HttpResponse, web};

use crate::error::ApiError;
use crate::notify::outbox;
use crate::state::AppState;

/// The path Prometheus scrapes.
pub const PATH: &str = "/metrics";

/// Registers `/metrics` (on the metrics listener's app only).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route(PATH, web::get().to(scrape));
}

/// Refreshes the gauges read at scrape time (the pool, the hasher, the
/// outbox), then answers every metric in the text format.
pub async fn scrape(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let metrics = &state.metrics;
    let pool = state.db.pool_state();
    metrics
        .pool_in_use
        .set(i64::from(pool.open.saturating_sub(pool.idle)));
    metrics.pool_idle.set(i64::from(pool.idle));
    metrics.pool_max.set(i64::from(pool.max));
    let hasher = &state.hasher;
    let in_use = hasher.slots().saturating_sub(hasher.free_slots());
    metrics.hash_in_use.set(gauge_value(in_use));
    metrics.hash_waiting.set(gauge_value(hasher.waiting()));
    metrics.hash_slots.set(gauge_value(hasher.slots()));
    // The outbox is the database's, shared by every instance on it: each
    // instance reports the same numbers (aggregate with max, not sum).
    let stats = state.db.read(|conn| Ok(outbox::stats(conn)?)).await?;
    metrics.outbox_pending.set(stats.pending);
    metrics.outbox_failing.set(stats.failing);
    let age = stats
        .oldest
        .map(|oldest| (state.clock.now_naive() - oldest).num_seconds().max(0))
        .unwrap_or(0);
    metrics.outbox_oldest_age.set(age);
    Ok(HttpResponse::Ok()
        .content_type(crate::metrics::CONTENT_TYPE)
        .body(metrics.encode()))
}

fn gauge_value(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
