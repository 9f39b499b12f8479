//! Revocations made by other instances, heard on PostgreSQL.
//!
//! Every revocation (sign-out, refresh-token reuse, password change,
//! deactivation) runs `pg_notify` in its own transaction
//! ([`announce_revocation`](crate::db::announce_revocation)), so the
//! notification is delivered exactly when the revocation commits. One thread
//! per instance listens on its own connection, polling every [`POLL`], and
//! drops what the [`UserCache`] holds of the session or user. While it is
//! not connected (start-up, a lost connection) the cache is off, so no
//! notification can be missed with an entry still trusted; and an entry is
//! never trusted longer than `auth.session_cache_ms` anyway (the bound if
//! the connection were silently cut).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;

use super::cache::UserCache;
use crate::db::{ConnectionManager, DbConnection, REVOCATIONS_CHANNEL};

/// How often the listener looks for notifications.
pub const POLL: Duration = Duration::from_millis(10);
/// How often an idle listener checks that its connection still answers.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// How long to wait before reconnecting.
const RECONNECT: Duration = Duration::from_secs(1);

/// Applies one notification's payload to the cache.
fn apply(cache: &UserCache, payload: &str) {
    match payload.split_once(':') {
        Some(("session", id)) => cache.forget_session(id),
        Some(("user", id)) => cache.forget_user(id),
        // Unknown: be safe, trust nothing cached so far.
        _ => cache.set_enabled(true),
    }
}

/// Listens until `stop` is set or the cache is gone. `false`: reconnect.
fn listen(manager: &ConnectionManager, cache: &Weak<UserCache>, stop: &AtomicBool) -> bool {
    let Ok(DbConnection::Postgres(mut pg)) = manager.establish() else {
        return false;
    };
    if pg
        .batch_execute(&format!("LISTEN {REVOCATIONS_CHANNEL}"))
        .is_err()
    {
        return false;
    }
    match cache.upgrade() {
        Some(cache) => cache.set_enabled(true),
        None => return true,
    }
    let mut alive_at = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        let mut payloads = Vec::new();
        let mut lost = false;
        for notification in pg.notifications_iter() {
            match notification {
                Ok(n) => payloads.push(n.payload),
                Err(_) => {
                    lost = true;
                    break;
                }
            }
        }
        if !lost && alive_at.elapsed() >= HEARTBEAT {
            lost = pg.batch_execute("SELECT 1").is_err();
            alive_at = Instant::now();
        }
        let Some(cache) = cache.upgrade() else {
            return true;
        };
        for payload in &payloads {
            apply(&cache, payload);
        }
        if lost {
            cache.set_enabled(false);
            tracing::warn!("revocation listener lost its connection; session cache off");
            return false;
        }
        drop(cache);
        std::thread::sleep(POLL);
    }
    true
}

/// Starts the listener for `manager`'s PostgreSQL database; the cache is
/// off until it is connected. Set `stop` and join the handle to end it.
pub fn spawn(
    manager: ConnectionManager,
    cache: &Arc<UserCache>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<JoinHandle<()>> {
    cache.set_enabled(false);
    let cache = Arc::downgrade(cache);
    std::thread::Builder::new()
        .name("relais-revocations".into())
        .spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                if listen(&manager, &cache, &stop) {
                    return;
                }
                if cache.strong_count() == 0 {
                    return;
                }
                std::thread::sleep(RECONNECT);
            }
        })
}
