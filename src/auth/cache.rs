//! A short-lived, in-process cache of what every authenticated request
//! checks (the session is live; its user's active flag, token version,
//! role and organisation), keyed by session id, so that a burst of requests
//! by one user does not read the same rows each time.
//!
//! Only live sessions are stored. Revocation is immediate in this process:
//! sign-out and refresh-token reuse call [`UserCache::forget_session`],
//! deactivation and password change [`UserCache::forget_user`], once their
//! write has committed; a lookup that began before a forget never stores
//! its (possibly stale) answer. Other instances hear of it on PostgreSQL
//! through `NOTIFY` at the revocation's commit (`auth::revocations`, within
//! its poll interval, 10 ms); while that listener is not connected the
//! cache is off. Instances sharing a SQLite file see a revocation after at
//! most the cache's lifetime (`auth.session_cache_ms`, default 2 s; 0 turns
//! the cache off everywhere).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::domain::role::Role;

/// Above this many entries, expired ones are swept (and, if still full, all).
const MAX_ENTRIES: usize = 10_000;

/// What the extractor needs of a live session's account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedUser {
    pub user_id: String,
    pub token_version: i32,
    pub active: bool,
    pub role: Role,
    pub organization_id: Option<String>,
    /// The session may only enrol a second factor.
    pub enrol_only: bool,
}

/// Entries by session id, with the epoch that guards against stale inserts.
pub struct UserCache {
    ttl: Duration,
    entries: Mutex<HashMap<String, (Instant, CachedUser)>>,
    epoch: AtomicU64,
    /// False while revocations from other instances may go unheard (on
    /// PostgreSQL, until the listener is connected): nothing is trusted.
    enabled: AtomicBool,
}

impl Default for UserCache {
    fn default() -> Self {
        Self::new(Duration::from_secs(2))
    }
}

impl UserCache {
    /// A cache trusting its entries for `ttl` (zero: never stores).
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Mutex::new(HashMap::new()),
            epoch: AtomicU64::new(0),
            enabled: AtomicBool::new(true),
        }
    }

    /// Turns the cache on or off; either way it starts empty and refuses
    /// lookups in flight (revocations may have been missed meanwhile).
    pub fn set_enabled(&self, enabled: bool) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.enabled.store(enabled, Ordering::SeqCst);
        entries.clear();
    }

    fn off(&self) -> bool {
        self.ttl.is_zero() || !self.enabled.load(Ordering::SeqCst)
    }

    /// A fresh entry for session `sid`, if any.
    pub fn get(&self, sid: &str) -> Option<CachedUser> {
        if self.off() {
            return None;
        }
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(sid)
            .filter(|(at, _)| at.elapsed() < self.ttl)
            .map(|(_, user)| user.clone())
    }

    /// The epoch to pass to [`UserCache::put`]; read it before the lookup.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// Stores what a lookup begun at `epoch` found of live session `sid`,
    /// unless a forget came since.
    pub fn put(&self, sid: &str, user: CachedUser, epoch: u64) {
        if self.off() {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        // Checked under the lock: the forgets bump the epoch under it too.
        if self.epoch.load(Ordering::SeqCst) != epoch {
            return;
        }
        if entries.len() >= MAX_ENTRIES {
            let ttl = self.ttl;
            entries.retain(|_, (at, _)| at.elapsed() < ttl);
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(sid.to_owned(), (Instant::now(), user));
    }

    /// Drops session `sid` and refuses every lookup still in flight: call
    /// after a sign-out or a reuse detection has committed.
    pub fn forget_session(&self, sid: &str) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        self.epoch.fetch_add(1, Ordering::SeqCst);
        entries.remove(sid);
    }

    /// Drops every session of `user_id` and refuses every lookup still in
    /// flight: call after a write that revokes the account's tokens
    /// (deactivation, password change) has committed.
    pub fn forget_user(&self, user_id: &str) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        self.epoch.fetch_add(1, Ordering::SeqCst);
        entries.retain(|_, (_, user)| user.user_id != user_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(ver: i32) -> CachedUser {
        CachedUser {
            user_id: "u".into(),
            token_version: ver,
            active: true,
            role: Role::Gp,
            organization_id: None,
            enrol_only: false,
        }
    }

    #[test]
    fn forget_drops_the_entry_and_refuses_lookups_in_flight() {
        let cache = UserCache::default();
        let epoch = cache.epoch();
        cache.put("s", user(0), epoch);
        assert_eq!(cache.get("s"), Some(user(0)));
        let in_flight = cache.epoch();
        cache.forget_user("u");
        assert_eq!(cache.get("s"), None);
        // A lookup that started before the revocation does not store its answer.
        cache.put("s", user(0), in_flight);
        assert_eq!(cache.get("s"), None);
        cache.put("s", user(1), cache.epoch());
        assert_eq!(cache.get("s"), Some(user(1)));
        cache.put("t", user(1), cache.epoch());
        cache.forget_session("s");
        assert_eq!(cache.get("s"), None);
        assert_eq!(cache.get("t"), Some(user(1)));
    }

    #[test]
    fn a_zero_lifetime_never_stores() {
        let cache = UserCache::new(Duration::ZERO);
        cache.put("s", user(0), cache.epoch());
        assert_eq!(cache.get("s"), None);
    }
}
