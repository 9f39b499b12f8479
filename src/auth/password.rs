//! Argon2id password hashing, bounded: at most `auth.max_concurrent_hashes`
//! computations at once, each in one of as many preallocated memory areas.
//!
//! Why: one Argon2id hash at the OWASP parameters fills 19 MiB. Allocated per
//! request, thirty concurrent sign-ins took the process to 600 MiB, and glibc
//! kept it (a freed 19 MiB block raises its mmap threshold, so the next ones
//! come from arenas that are never given back). Here the memory is allocated
//! once per slot and reused; a request that finds every slot busy waits
//! `auth.hash_queue_wait_ms` behind at most `auth.hash_queue_max` others, then
//! gets 503 with `Retry-After` ([`ApiError::Busy`]).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use argon2::password_hash::phc::{Output, ParamsString, PasswordHash, Salt};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use rand::RngCore;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::ApiError;

/// The shortest password accepted.
pub const MIN_LEN: usize = 12;
/// The longest password accepted (hashing cost is bounded).
pub const MAX_LEN: usize = 1024;

/// Checks a new password's length, naming `field` when it is refused.
pub fn check_new(password: &str, field: &str) -> Result<(), ApiError> {
    let len = password.chars().count();
    if len < MIN_LEN {
        return Err(ApiError::invalid(
            field,
            format!("at least {MIN_LEN} characters"),
        ));
    }
    if len > MAX_LEN {
        return Err(ApiError::invalid(
            field,
            format!("at most {MAX_LEN} characters"),
        ));
    }
    Ok(())
}

/// The memory one hash at the default parameters needs.
fn new_memory() -> Box<[Block]> {
    vec![Block::new(); Params::DEFAULT.block_count()].into_boxed_slice()
}

/// Hashes with `memory` (at least [`Params::DEFAULT`]'s block count) to a
/// PHC string: Argon2id, OWASP parameters, a fresh 16-byte salt.
fn hash_with(memory: &mut [Block], password: &str) -> Result<String, ApiError> {
    let fail = |e: &dyn std::fmt::Display| ApiError::internal(anyhow::anyhow!("hashing: {e}"));
    let params = Params::DEFAULT;
    let mut salt = [0u8; argon2::RECOMMENDED_SALT_LEN];
    rand::rng().fill_bytes(&mut salt);
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    let blocks = memory
        .get_mut(..params.block_count())
        .ok_or_else(|| fail(&"memory area too small"))?;
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
        .hash_password_into_with_memory(password.as_bytes(), &salt, &mut out, blocks)
        .map_err(|e| fail(&e))?;
    let phc = PasswordHash {
        algorithm: argon2::ARGON2ID_IDENT,
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).map_err(|e| fail(&e))?,
        salt: Some(Salt::new(&salt).map_err(|e| fail(&e))?),
        hash: Some(Output::new(&out).map_err(|e| fail(&e))?),
    };
    Ok(phc.to_string())
}

/// Whether `password` matches `phc`, computed in `memory`. A stored hash
/// with a larger memory cost than the area (none is made so) is checked
/// with memory of its own.
fn verify_with(memory: &mut [Block], password: &str, phc: &str) -> bool {
    let mut check = || -> Option<bool> {
        let parsed = PasswordHash::new(phc).ok()?;
        let algorithm = Algorithm::try_from(parsed.algorithm.as_str()).ok()?;
        let version = match parsed.version {
            Some(v) => Version::try_from(v).ok()?,
            None => Version::default(),
        };
        let params = Params::try_from(&parsed).ok()?;
        let (salt, expected) = (parsed.salt?, parsed.hash?);
        let argon2 = Argon2::new(algorithm, version, params.clone());
        let mut out = vec![0u8; expected.len()];
        let computed = match memory.get_mut(..params.block_count()) {
            Some(blocks) => {
                argon2.hash_password_into_with_memory(password.as_bytes(), &salt, &mut out, blocks)
            }
            None => argon2.hash_password_into(password.as_bytes(), &salt, &mut out),
        };
        computed.ok()?;
        // `Output`'s equality is constant-time.
        Some(Output::new(&out).ok()? == expected)
    };
    check().unwrap_or(false)
}

/// Hashes a password with memory of its own (command line: one at a time).
pub fn hash(password: &str) -> Result<String, ApiError> {
    hash_with(&mut new_memory(), password)
}

/// Checks a password with memory of its own (tests, command line).
pub fn verify(password: &str, phc: &str) -> bool {
    verify_with(&mut new_memory(), password, phc)
}

/// A hash to verify against when the account does not exist, so that the
/// answer takes as long as for a real account.
fn dummy_hash(memory: &mut [Block]) -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| hash_with(memory, "relais-dummy-password-for-timing").unwrap_or_default())
}

/// The bounded hasher every request goes through.
pub struct Hasher {
    slots: Arc<Semaphore>,
    waiting: AtomicUsize,
    queue_max: usize,
    queue_wait: Duration,
    /// Memory areas not in use; at most one per slot is ever allocated.
    memory: Mutex<Vec<Box<[Block]>>>,
    /// Counts each 503 (a metric of the application's, see `metrics`).
    rejections: prometheus::IntCounter,
    size: usize,
}

/// A slot and its memory, given back when dropped.
pub struct Slot {
    hasher: Arc<Hasher>,
    memory: Option<Box<[Block]>>,
    _permit: OwnedSemaphorePermit,
}

impl Slot {
    /// Runs `f` with the slot's memory on the blocking pool (never on an
    /// async worker), holding the slot until it returns.
    async fn run<T, F>(mut self, f: F) -> Result<T, ApiError>
    where
        F: FnOnce(&mut [Block]) -> T + Send + 'static,
        T: Send + 'static,
    {
        tokio::task::spawn_blocking(move || {
            let memory = self.memory.as_deref_mut().unwrap_or_default();
            f(memory)
        })
        .await
        .map_err(ApiError::internal)
    }

    /// Hashes a new password.
    pub async fn hash(self, password: String) -> Result<String, ApiError> {
        self.run(move |memory| hash_with(memory, &password)).await?
    }

    /// Whether `password` matches `phc`; with `None` (no such account, or
    /// no password yet) it checks against a dummy hash and answers `false`,
    /// taking as long as a real check.
    pub async fn verify(self, password: String, phc: Option<String>) -> Result<bool, ApiError> {
        self.run(move |memory| match phc {
            Some(phc) => verify_with(memory, &password, &phc),
            None => {
                let dummy = dummy_hash(memory);
                verify_with(memory, &password, dummy);
                false
            }
        })
        .await
    }

    /// Checks `current` against `phc` and, if it matches, hashes `new`
    /// (a password change: one slot for both).
    pub async fn verify_then_hash(
        self,
        current: String,
        phc: String,
        new: String,
    ) -> Result<Option<String>, ApiError> {
        self.run(move |memory| {
            if verify_with(memory, &current, &phc) {
                hash_with(memory, &new).map(Some)
            } else {
                Ok(None)
            }
        })
        .await?
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(memory) = self.memory.take() {
            let mut free = self.hasher.memory.lock().unwrap_or_else(|e| e.into_inner());
            free.push(memory);
        }
    }
}

/// Leaves the queue count however the wait ends (also when the request's
/// future is dropped because the client went away).
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Hasher {
    /// `slots` computations at once, `queue_max` waiting at most
    /// `queue_wait`; each refusal counted in `rejections`.
    pub fn new(
        slots: usize,
        queue_max: usize,
        queue_wait: Duration,
        rejections: prometheus::IntCounter,
    ) -> Arc<Self> {
        Arc::new(Self {
            slots: Arc::new(Semaphore::new(slots.max(1))),
            waiting: AtomicUsize::new(0),
            queue_max,
            queue_wait,
            memory: Mutex::new(Vec::new()),
            rejections,
            size: slots.max(1),
        })
    }

    /// The 503 answered when no slot is free in time.
    fn busy(&self) -> ApiError {
        self.rejections.inc();
        ApiError::Busy {
            retry_after_s: self.queue_wait.as_secs().max(1),
        }
    }

    /// Waits (briefly, behind a bounded queue) for a slot and its memory;
    /// [`ApiError::Busy`] when none comes in time.
    pub async fn slot(self: &Arc<Self>) -> Result<Slot, ApiError> {
        self.slot_for(false).await
    }

    /// [`Hasher::slot`], for a sign-in that is `expected` (an account from
    /// an address it signed in from before): it is never refused for a full
    /// queue and waits twice as long, so that a flood from elsewhere cannot
    /// keep a clinician out (there are few such requests, and waiting costs
    /// no memory to speak of).
    pub async fn slot_for(self: &Arc<Self>, expected: bool) -> Result<Slot, ApiError> {
        let permit = match self.slots.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) if expected => {
                tokio::time::timeout(self.queue_wait * 2, self.slots.clone().acquire_owned())
                    .await
                    .map_err(|_| self.busy())?
                    .map_err(ApiError::internal)?
            }
            Err(_) => {
                if self.waiting.fetch_add(1, Ordering::SeqCst) >= self.queue_max {
                    self.waiting.fetch_sub(1, Ordering::SeqCst);
                    return Err(self.busy());
                }
                let _queued = Waiting(&self.waiting);
                tokio::time::timeout(self.queue_wait, self.slots.clone().acquire_owned())
                    .await
                    .map_err(|_| self.busy())?
                    .map_err(ApiError::internal)?
            }
        };
        let memory = {
            let mut free = self.memory.lock().unwrap_or_else(|e| e.into_inner());
            free.pop()
        };
        Ok(Slot {
            hasher: self.clone(),
            // Allocated outside the lock, once per slot over the process's life.
            memory: Some(memory.unwrap_or_else(new_memory)),
            _permit: permit,
        })
    }

    /// Hashes a new password (waits for a slot).
    pub async fn hash(self: &Arc<Self>, password: String) -> Result<String, ApiError> {
        self.slot().await?.hash(password).await
    }

    /// Checks a password (waits for a slot); see [`Slot::verify`].
    pub async fn verify(
        self: &Arc<Self>,
        password: String,
        phc: Option<String>,
    ) -> Result<bool, ApiError> {
        self.slot().await?.verify(password, phc).await
    }

    /// Slots free right now (tests).
    pub fn free_slots(&self) -> usize {
        self.slots.available_permits()
    }

    /// Slots in all.
    pub fn slots(&self) -> usize {
        self.size
    }

    /// Requests waiting for a slot now (counted for the queue limit).
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_and_verify() {
        let phc = hash("correct horse battery").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(verify("correct horse battery", &phc));
        assert!(!verify("wrong horse battery", &phc));
        assert!(!verify("anything", "not a phc string"));
    }

    #[test]
    fn hashes_made_by_the_argon2_crate_still_verify() {
        use argon2::password_hash::PasswordHasher;
        let phc = Argon2::default()
            .hash_password(b"correct horse battery")
            .unwrap()
            .to_string();
        assert!(verify("correct horse battery", &phc));
        assert!(!verify("wrong horse battery", &phc));
        // Other parameters (a smaller cost) verify too.
        let small = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(64, 1, 1, None).unwrap(),
        )
        .hash_password(b"pw")
        .unwrap()
        .to_string();
        assert!(verify("pw", &small));
    }

    #[test]
    fn length_rules() {
        assert!(check_new("short", "password").is_err());
        assert!(check_new("twelve chars", "password").is_ok());
    }

    #[tokio::test]
    async fn a_full_queue_answers_busy_and_memory_is_reused() {
        let hasher = Hasher::new(
            1,
            1,
            Duration::from_millis(50),
            prometheus::IntCounter::new("t", "t").unwrap(),
        );
        let phc = hash("correct horse battery").unwrap();
        let calls: Vec<_> = (0..6)
            .map(|_| {
                let (hasher, phc) = (hasher.clone(), phc.clone());
                tokio::spawn(async move {
                    hasher
                        .verify("correct horse battery".into(), Some(phc))
                        .await
                })
            })
            .collect();
        let mut busy = 0;
        for call in calls {
            match call.await.unwrap() {
                Ok(matched) => assert!(matched),
                Err(ApiError::Busy { retry_after_s }) => {
                    assert!(retry_after_s >= 1);
                    busy += 1;
                }
                Err(other) => panic!("{other}"),
            }
        }
        assert!(
            busy >= 1,
            "one slot and a queue of one cannot take six at once"
        );
        assert_eq!(hasher.free_slots(), 1);
        assert_eq!(hasher.waiting.load(Ordering::SeqCst), 0);
        // One slot: one memory area, made once and kept.
        assert_eq!(hasher.memory.lock().unwrap().len(), 1);
        // An expected sign-in is not refused for the full queue: it waits.
        let held = hasher.slot().await.unwrap();
        let queued = tokio::spawn({
            let hasher = hasher.clone();
            async move { hasher.slot().await.map(drop) }
        });
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(matches!(hasher.slot().await, Err(ApiError::Busy { .. })));
        let expected = tokio::spawn({
            let hasher = hasher.clone();
            async move { hasher.slot_for(true).await.map(drop) }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(held);
        assert!(expected.await.unwrap().is_ok());
        let _ = queued.await;
        assert!(!hasher.verify("x".into(), None).await.unwrap());
    }
}
