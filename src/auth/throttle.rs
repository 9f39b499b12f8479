//! A per-IP request limit for the authentication routes.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::error::ApiError;

const WINDOW: Duration = Duration::from_secs(60);
/// Above this many tracked addresses, expired windows are swept.
const SWEEP_AT: usize = 10_000;

/// Fixed one-minute windows per client address.
pub struct IpLimiter {
    per_minute: u32,
    windows: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl IpLimiter {
    /// A limiter allowing `per_minute` requests a minute from one address.
    pub fn new(per_minute: u32) -> Self {
        Self {
            per_minute,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one request from `ip`; 429 with the wait when over the limit.
    pub fn check(&self, ip: Option<IpAddr>) -> Result<(), ApiError> {
        let Some(ip) = ip else { return Ok(()) };
        let now = Instant::now();
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        if windows.len() > SWEEP_AT {
            windows.retain(|_, (start, _)| now.duration_since(*start) < WINDOW);
        }
        let (start, count) = windows.entry(ip).or_insert((now, 0));
        if now.duration_since(*start) >= WINDOW {
            *start = now;
            *count = 0;
        }
        *count += 1;
        if *count > self.per_minute {
            let wait = WINDOW.saturating_sub(now.duration_since(*start));
            return Err(ApiError::TooManyRequests {
                retry_after_s: wait.as_secs().max(1),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_address() {
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
    }
}
