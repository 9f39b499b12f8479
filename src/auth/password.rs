//! Argon2id password hashing.

use std::sync::OnceLock;

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};

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

/// Hashes a password to a PHC string (Argon2id, OWASP parameters). Slow: call off the async workers.
pub fn hash(password: &str) -> Result<String, ApiError> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| ApiError::internal(anyhow::anyhow!("hashing a password: {e}")))
}

/// Whether `password` matches the PHC string. Slow: call off the async workers.
pub fn verify(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

/// A hash to verify against when the account does not exist, so that the
/// answer takes as long as for a real account.
pub fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| hash("relais-dummy-password-for-timing").unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_and_verify() {
        let phc = hash("correct horse battery").unwrap();
        assert!(phc.starts_with("$argon2id$"));
        assert!(verify("correct horse battery", &phc));
        assert!(!verify("wrong horse battery", &phc));
        assert!(!verify("anything", "not a phc string"));
    }

    #[test]
    fn length_rules() {
        assert!(check_new("short", "password").is_err());
        assert!(check_new("twelve chars", "password").is_ok());
    }
}
