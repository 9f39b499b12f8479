//! A short-lived, in-process cache of the account facts every authenticated
//! request checks (active, token version, role, organisation), so that a
//! burst of requests by one user does not read the same row each time.
//!
//! Revocation stays immediate in this process: deactivating a user or
//! changing a password calls [`UserCache::forget`] once the write has
//! committed, and a lookup that began before a `forget` never stores its
//! (possibly stale) answer. Other instances on the same database see a
//! revocation after at most [`TTL`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::domain::role::Role;

/// How long an entry is trusted.
pub const TTL: Duration = Duration::from_secs(2);
/// Above this many entries, expired ones are swept (and, if still full, all).
const MAX_ENTRIES: usize = 10_000;

/// What the extractor needs of an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedUser {
    pub token_version: i32,
    pub active: bool,
    pub role: Role,
    pub organization_id: Option<String>,
}

/// Entries by user id, with the epoch that guards against stale inserts.
#[derive(Default)]
pub struct UserCache {
    entries: Mutex<HashMap<String, (Instant, CachedUser)>>,
    epoch: AtomicU64,
}

impl UserCache {
    /// A fresh entry for `id`, if any.
    pub fn get(&self, id: &str) -> Option<CachedUser> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(id)
            .filter(|(at, _)| at.elapsed() < TTL)
            .map(|(_, user)| user.clone())
    }

    /// The epoch to pass to [`UserCache::put`]; read it before the lookup.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// Stores what a lookup begun at `epoch` found, unless a `forget` came since.
    pub fn put(&self, id: &str, user: CachedUser, epoch: u64) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        // Checked under the lock: `forget` bumps the epoch under it too.
        if self.epoch.load(Ordering::SeqCst) != epoch {
            return;
        }
        if entries.len() >= MAX_ENTRIES {
            entries.retain(|_, (at, _)| at.elapsed() < TTL);
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(id.to_owned(), (Instant::now(), user));
    }

    /// Drops `id` and refuses every lookup still in flight: call after a
    /// write that revokes (deactivation, password change) has committed.
    pub fn forget(&self, id: &str) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        self.epoch.fetch_add(1, Ordering::SeqCst);
        entries.remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(ver: i32) -> CachedUser {
        CachedUser {
            token_version: ver,
            active: true,
            role: Role::Gp,
            organization_id: None,
        }
    }

    #[test]
    fn forget_drops_the_entry_and_refuses_lookups_in_flight() {
        let cache = UserCache::default();
        let epoch = cache.epoch();
        cache.put("u", user(0), epoch);
        assert_eq!(cache.get("u"), Some(user(0)));
        let in_flight = cache.epoch();
        cache.forget("u");
        assert_eq!(cache.get("u"), None);
        // A lookup that started before the revocation does not store its answer.
        cache.put("u", user(0), in_flight);
        assert_eq!(cache.get("u"), None);
        cache.put("u", user(1), cache.epoch());
        assert_eq!(cache.get("u"), Some(user(1)));
    }
}
