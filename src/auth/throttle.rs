//! Sign-in limits.
//!
//! - [`IpLimiter`]: requests per client address (IPv6: per /64) on
//!   `/auth/*`, in memory: `governor`'s keyed GCRA limiter, swept of idle
//!   keys so its memory stays bounded however many addresses are seen.
//! - Failed sign-ins, in the database (the authority when several instances
//!   share it): at most `auth.login_max_failures` per (account, address)
//!   within `auth.login_failure_window_s`, so an attacker elsewhere cannot
//!   lock a clinician out, and behind it `auth.login_account_max_failures`
//!   per account within `auth.login_account_window_s` from addresses the
//!   account has not signed in from before. Accounts are stored as the
//!   SHA-256 of the normalised email, never the email.
//!
//! An attempt is counted *before* its password is checked ([`reserve`]):
//! counting and inserting run in one transaction, under a per-account lock
//! on PostgreSQL (an advisory lock: other instances wait for it) and under
//! the database's single writer on SQLite, so however many attempts race,
//! no more than the limit reach password verification. A successful sign-in
//! removes its own row and the failures from its address.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration as StdDuration, Instant};

use chrono::{Duration, NaiveDateTime};
use diesel::prelude::*;
use diesel::sql_types::BigInt;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use sha2::{Digest, Sha256};

use crate::config::AuthSettings;
use crate::db::DbConnection;
use crate::db::models::new_id;
use crate::db::schema::{login_failures, sessions};
use crate::error::ApiError;
use crate::net;

/// Above this many tracked address groups, idle ones are swept; if they
/// are all live (an attacker cycling through that many addresses within a
/// minute), requests from every address are refused until some go idle.
/// About 40 bytes a key: the limiter stays under ~8 MiB.
const MAX_KEYS: usize = 100_000;
/// Sweeps are O(keys): at most one per this interval.
const SWEEP_EVERY: StdDuration = StdDuration::from_secs(1);

/// Requests per client address group per minute (GCRA: a burst of the
/// whole minute's allowance, then one every `60 / per_minute` seconds).
pub struct IpLimiter {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    clock: DefaultClock,
    last_sweep: Mutex<Instant>,
}

impl IpLimiter {
    /// A limiter allowing `per_minute` requests a minute from one address group.
    pub fn new(per_minute: u32) -> Self {
        let quota = Quota::per_minute(NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN));
        Self {
            limiter: DefaultKeyedRateLimiter::keyed(quota),
            clock: DefaultClock::default(),
            last_sweep: Mutex::new(Instant::now()),
        }
    }

    /// Forgets address groups whose allowance is whole again.
    fn sweep(&self) {
        {
            let mut last = self.last_sweep.lock().unwrap_or_else(|e| e.into_inner());
            if last.elapsed() < SWEEP_EVERY {
                return;
            }
            *last = Instant::now();
        }
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    /// Counts one request from `ip`; 429 with the wait when over the limit.
    pub fn check(&self, ip: Option<IpAddr>) -> Result<(), ApiError> {
        let Some(ip) = ip else { return Ok(()) };
        if self.limiter.len() >= MAX_KEYS / 2 {
            self.sweep();
            if self.limiter.len() >= MAX_KEYS {
                return Err(ApiError::TooManyRequests { retry_after_s: 1 });
            }
        }
        self.limiter
            .check_key(&net::limit_key(ip))
            .map_err(|not_until| ApiError::TooManyRequests {
                retry_after_s: not_until.wait_time_from(self.clock.now()).as_secs().max(1),
            })
    }

    /// Address groups tracked now (tests).
    pub fn tracked(&self) -> usize {
        self.limiter.len()
    }
}

/// Who a sign-in attempt is counted against.
#[derive(Debug, Clone)]
pub struct LoginKey {
    /// SHA-256 (hex) of the normalised email.
    pub account_hash: String,
    /// The client's address group (see [`net::limit_key`]).
    pub client_addr: String,
}

impl LoginKey {
    /// The key of an attempt on `email` (already trimmed and lowercased)
    /// from `client`.
    pub fn new(email: &str, client: Option<IpAddr>) -> Self {
        Self {
            account_hash: hex::encode(Sha256::digest(email.as_bytes())),
            client_addr: client
                .map(|ip| net::limit_key(ip).to_string())
                .unwrap_or_else(|| "unknown".into()),
        }
    }
}

fn seconds(s: u64) -> Duration {
    Duration::seconds(i64::try_from(s).unwrap_or(i64::MAX / 1000))
}

/// The recent failures' times, newest first, at most `max`.
fn recent(
    conn: &mut DbConnection,
    key: &LoginKey,
    per_address: bool,
    since: NaiveDateTime,
    max: u32,
) -> QueryResult<Vec<NaiveDateTime>> {
    let mut query = login_failures::table
        .filter(login_failures::account_hash.eq(&key.account_hash))
        .filter(login_failures::at.gt(since))
        .order(login_failures::at.desc())
        .select(login_failures::at)
        .limit(i64::from(max))
        .into_boxed();
    if per_address {
        query = query.filter(login_failures::client_addr.eq(&key.client_addr));
    }
    query.load(conn)
}

/// Whether `user_id` signed in from `key`'s address group before (a
/// session opened there within the refresh-token lifetime).
pub fn known_address(
    conn: &mut DbConnection,
    settings: &AuthSettings,
    key: &LoginKey,
    user_id: Option<&str>,
    now: NaiveDateTime,
) -> QueryResult<bool> {
    let Some(user_id) = user_id else {
        return Ok(false);
    };
    diesel::select(diesel::dsl::exists(
        sessions::table
            .filter(sessions::user_id.eq(user_id))
            .filter(sessions::client_addr.eq(&key.client_addr))
            .filter(sessions::created_at.gt(now - seconds(settings.refresh_token_ttl_s))),
    ))
    .get_result(conn)
}

/// 429 (with the wait) when one more attempt by `key` would pass a limit.
pub fn check(
    conn: &mut DbConnection,
    settings: &AuthSettings,
    key: &LoginKey,
    user_id: Option<&str>,
    now: NaiveDateTime,
) -> Result<(), ApiError> {
    let throttled = |times: &[NaiveDateTime], window: Duration| {
        let oldest = times.last().copied().unwrap_or(now);
        let wait = (oldest + window - now).num_seconds().max(1);
        ApiError::TooManyRequests {
            retry_after_s: u64::try_from(wait).unwrap_or(1),
        }
    };
    let window = seconds(settings.login_failure_window_s);
    let max = settings.login_max_failures;
    let mine = recent(conn, key, true, now - window, max)?;
    if mine.len() >= max as usize {
        return Err(throttled(&mine, window));
    }
    let window = seconds(settings.login_account_window_s);
    let max = settings.login_account_max_failures;
    let all = recent(conn, key, false, now - window, max)?;
    if all.len() >= max as usize && !known_address(conn, settings, key, user_id, now)? {
        return Err(throttled(&all, window));
    }
    Ok(())
}

/// Takes the account's lock until the transaction ends (PostgreSQL: other
/// instances' reservations for the account wait; SQLite has one writer).
fn lock_account(conn: &mut DbConnection, key: &LoginKey) -> QueryResult<()> {
    if let DbConnection::Postgres(pg) = conn {
        let mut id = [0u8; 8];
        let digest = Sha256::digest(key.account_hash.as_bytes());
        id.copy_from_slice(&digest[..8]);
        diesel::sql_query("SELECT pg_advisory_xact_lock($1)")
            .bind::<BigInt, _>(i64::from_be_bytes(id))
            .execute(pg)?;
    }
    Ok(())
}

/// Counts one attempt by `key` before its password is checked: 429 if it
/// would pass a limit, otherwise a failure row (its id returned) that
/// [`succeeded`] removes. Run in a write transaction.
pub fn reserve(
    conn: &mut DbConnection,
    settings: &AuthSettings,
    key: &LoginKey,
    user_id: Option<&str>,
    now: NaiveDateTime,
) -> Result<String, ApiError> {
    lock_account(conn, key)?;
    check(conn, settings, key, user_id, now)?;
    let id = new_id();
    diesel::insert_into(login_failures::table)
        .values((
            login_failures::id.eq(&id),
            login_failures::account_hash.eq(&key.account_hash),
            login_failures::client_addr.eq(&key.client_addr),
            login_failures::at.eq(now),
        ))
        .execute(conn)?;
    Ok(id)
}

/// The attempt reserved as `id` succeeded: it and the earlier failures
/// from the same address are forgotten (not those from elsewhere, which
/// keep counting against the account).
pub fn succeeded(conn: &mut DbConnection, key: &LoginKey, id: &str) -> QueryResult<()> {
    diesel::delete(
        login_failures::table.filter(
            login_failures::id.eq(id).or(login_failures::account_hash
                .eq(&key.account_hash)
                .and(login_failures::client_addr.eq(&key.client_addr))),
        ),
    )
    .execute(conn)
    .map(drop)
}

/// Deletes failure rows older than every window (the scheduler's job).
pub fn purge(
    conn: &mut DbConnection,
    settings: &AuthSettings,
    now: NaiveDateTime,
) -> QueryResult<usize> {
    let longest = settings
        .login_failure_window_s
        .max(settings.login_account_window_s);
    diesel::delete(login_failures::table.filter(login_failures::at.le(now - seconds(longest))))
        .execute(conn)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;
    use crate::db::Db;

    #[test]
    fn limits_per_address_group() {
        let limiter = IpLimiter::new(3);
        let a = Some("10.0.0.1".parse().unwrap());
        let b = Some("10.0.0.2".parse().unwrap());
        for _ in 0..3 {
            assert!(limiter.check(a).is_ok());
        }
        assert!(matches!(
            limiter.check(a),
            Err(ApiError::TooManyRequests { .. })
        ));
        assert!(limiter.check(b).is_ok());
        // One IPv6 /64 is one client.
        for i in 0..3 {
            let ip = format!("2001:db8:0:1::{i:x}").parse().ok();
            assert!(limiter.check(ip).is_ok());
        }
        assert!(limiter.check("2001:db8:0:1::ffff".parse().ok()).is_err());
        assert!(limiter.check("2001:db8:0:2::1".parse().ok()).is_ok());
    }

    #[test]
    fn memory_stays_bounded_under_many_addresses() {
        let limiter = IpLimiter::new(60);
        // A million distinct addresses, each seen once: one-shot keys are
        // whole again after a second and are swept.
        for i in 0..1_000_000u32 {
            let _ = limiter.check(Some(IpAddr::from(i.to_be_bytes())));
            if i % 200_000 == 0 {
                std::thread::sleep(StdDuration::from_millis(1100));
            }
        }
        assert!(limiter.tracked() <= MAX_KEYS, "{}", limiter.tracked());
    }

    #[test]
    fn accounts_are_stored_hashed() {
        let key = LoginKey::new("gp@relais.test", "2001:db8::1".parse().ok());
        assert_eq!(key.account_hash.len(), 64);
        assert!(!key.account_hash.contains("relais"));
        assert_eq!(key.client_addr, "2001:db8::");
    }

    /// N attempts race on one account, through two handles on the database
    /// (two writers, as two instances would have): at most the limit get a
    /// reservation, i.e. reach password verification.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn reservations_hold_the_limit_under_concurrency() {
        let dir = tempfile::tempdir().unwrap();
        let url = std::env::var("RELAIS_TEST_DATABASE_URL")
            .ok()
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| format!("sqlite://{}", dir.path().join("t.db").display()));
        let first = Db::connect(&url, 4).unwrap();
        first.migrate().await.unwrap();
        let second = Db::connect(&url, 4).unwrap();
        let settings = Settings::defaults().unwrap().auth;
        let limit = settings.login_max_failures as usize;
        // A fresh account each run: the PostgreSQL database may be shared.
        let email = format!("{}@relais.test", uuid::Uuid::now_v7());
        let key = LoginKey::new(&email, "192.0.2.1".parse().ok());
        let now = chrono::Utc::now().naive_utc();
        let attempts: Vec<_> = (0..40)
            .map(|i| {
                let db = if i % 2 == 0 { &first } else { &second }.clone();
                let (settings, key) = (settings.clone(), key.clone());
                tokio::spawn(async move {
                    db.write(move |conn| reserve(conn, &settings, &key, None, now))
                        .await
                })
            })
            .collect();
        let mut reserved = 0;
        for attempt in attempts {
            match attempt.await.unwrap() {
                Ok(_) => reserved += 1,
                Err(ApiError::TooManyRequests { .. }) => {}
                Err(other) => panic!("{other}"),
            }
        }
        assert_eq!(reserved, limit);
        let purged = first
            .write(move |conn| Ok(purge(conn, &settings, now + Duration::days(1))?))
            .await
            .unwrap();
        assert!(purged >= limit);
    }
}
